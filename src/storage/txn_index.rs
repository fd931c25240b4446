//! Kafka's aborted-transaction index (`<base offset>.txnindex`, one per segment): the aborted
//! transactions whose abort markers lie in that segment, so that a read_committed fetch can
//! name them without scanning the log.
//!
//! Owner: the partition's owner shard (through `manager::OpenPartition`), which rewrites a
//! segment's file whenever an abort marker in it becomes durable and loads every file when the
//! partition opens. Files of deleted segments go with them (`PartitionLog` retention).
//!
//! Format, as Kafka writes it: a sequence of 34-byte entries, each version i16 (0), producer
//! id i64, first offset i64, last offset i64 (the marker), last stable offset i64. Pure
//! functions; no I/O here.

use crate::storage::producer_state::AbortedTxn;

/// Size of one entry.
pub const ENTRY_BYTES: usize = 34;
const ENTRY_VERSION: i16 = 0;
/// File name suffix.
pub const SUFFIX: &str = ".txnindex";

/// The file name of segment `base_offset`'s index.
pub fn file_name(base_offset: i64) -> String {
    format!("{base_offset:020}{SUFFIX}")
}

/// Encodes entries in order.
pub fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for entry in entries {
        out.extend_from_slice(&ENTRY_VERSION.to_be_bytes());
        out.extend_from_slice(&entry.producer_id.to_be_bytes());
        out.extend_from_slice(&entry.first_offset.to_be_bytes());
        out.extend_from_slice(&entry.last_offset.to_be_bytes());
        out.extend_from_slice(&entry.last_stable_offset.to_be_bytes());
    }
    out
}

/// Decodes the whole entries of a file; a torn last entry or an entry of an unknown version
/// ends the list (the replay of the log rebuilds whatever is missing).
pub fn decode(bytes: &[u8]) -> Vec<AbortedTxn> {
    let field = |entry: &[u8], at: usize| {
        i64::from_be_bytes(entry[at..at + 8].try_into().expect("8 bytes"))
    };
    bytes
        .chunks_exact(ENTRY_BYTES)
        .take_while(|entry| i16::from_be_bytes([entry[0], entry[1]]) == ENTRY_VERSION)
        .map(|entry| AbortedTxn {
            producer_id: field(entry, 2),
            first_offset: field(entry, 10),
            last_offset: field(entry, 18),
            last_stable_offset: field(entry, 26),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_torn_tails_are_dropped() {
        let entries = vec![
            AbortedTxn {
                producer_id: 7,
                first_offset: 10,
                last_offset: 15,
                last_stable_offset: 16,
            },
            AbortedTxn {
                producer_id: 9,
                first_offset: 12,
                last_offset: 20,
                last_stable_offset: 21,
            },
        ];
        let bytes = encode(&entries);
        assert_eq!(bytes.len(), 2 * ENTRY_BYTES);
        assert_eq!(decode(&bytes), entries);
        assert_eq!(decode(&bytes[..ENTRY_BYTES + 5]), entries[..1]);
        assert_eq!(file_name(42), "00000000000000000042.txnindex");
    }
}
