//! The records of `__transaction_state`, in Kafka's own formats.
//!
//! Owner: pure functions, used by the transaction coordinator on the shard that owns the
//! transactional id's `__transaction_state` partition, when it writes a state change and when
//! it replays the partition.
//!
//! Formats (Kafka's `TransactionLogKey`/`TransactionLogValue`, big-endian, version 0, the
//! non-flexible version every Kafka since 0.11 reads):
//! - key, version 0: `transactional_id: string`;
//! - value, version 0: `producer_id: int64, producer_epoch: int16, transaction_timeout_ms:
//!   int32, transaction_status: int8, transaction_partitions: nullable [topic: string,
//!   partition_ids: [int32]], transaction_last_update_timestamp_ms: int64,
//!   transaction_start_timestamp_ms: int64`.
//!
//! Version 0 has no field for the previous producer id and epoch (version 1 keeps them in tagged
//! fields); they live in memory only, as in Kafka before KIP-890. A null value (tombstone)
//! removes an expired transactional id. Records are carried in the uncompressed v2 batches of
//! `group::records::build_batch`. A value of a version this broker does not write is skipped
//! at replay (counted and logged), never guessed at.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::txn::TxnState;

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// A transactional id's state as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    /// The producer id in use.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// The transaction timeout.
    pub timeout_ms: i32,
    /// The state.
    pub state: TxnState,
    /// The partitions of the transaction, by topic.
    pub partitions: Vec<(String, Vec<i32>)>,
    /// When the state last changed (ms since the epoch).
    pub last_update_ms: i64,
    /// When the transaction started, -1 when none is open.
    pub start_ms: i64,
}

/// A decoded record of `__transaction_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    /// The transactional id.
    pub transactional_id: String,
    /// Its state; `None` is a tombstone (the id expired).
    pub value: Option<TxnValue>,
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TxnRecordError {
    /// The bytes end early or hold an impossible length or state.
    #[error("truncated or malformed __transaction_state record")]
    Malformed,
    /// A key or value version this broker does not read.
    #[error("unknown __transaction_state record version {0}")]
    UnknownVersion(i16),
}

fn put_string(out: &mut BytesMut, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    out.put_i16(len as i16);
    out.put_slice(&s.as_bytes()[..len]);
}

fn need(buf: &[u8], n: usize) -> Result<(), TxnRecordError> {
    if buf.remaining() < n {
        Err(TxnRecordError::Malformed)
    } else {
        Ok(())
    }
}

fn get_string(buf: &mut &[u8]) -> Result<String, TxnRecordError> {
    need(buf, 2)?;
    let len = buf.get_i16();
    if len < 0 {
        return Err(TxnRecordError::Malformed);
    }
    let len = len as usize;
    need(buf, len)?;
    let s = String::from_utf8_lossy(&buf[..len]).into_owned();
    buf.advance(len);
    Ok(s)
}

/// The key of transactional id `transactional_id`.
pub fn txn_key(transactional_id: &str) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(KEY_VERSION);
    put_string(&mut out, transactional_id);
    out.freeze()
}

/// The value of a transactional id's state.
pub fn txn_value(value: &TxnValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(VALUE_VERSION);
    out.put_i64(value.producer_id);
    out.put_i16(value.producer_epoch);
    out.put_i32(value.timeout_ms);
    out.put_i8(value.state.status());
    out.put_i32(value.partitions.len() as i32);
    for (topic, partitions) in &value.partitions {
        put_string(&mut out, topic);
        out.put_i32(partitions.len() as i32);
        for p in partitions {
            out.put_i32(*p);
        }
    }
    out.put_i64(value.last_update_ms);
    out.put_i64(value.start_ms);
    out.freeze()
}

fn decode_value(mut buf: &[u8]) -> Result<TxnValue, TxnRecordError> {
    need(buf, 2)?;
    let version = buf.get_i16();
    if version != VALUE_VERSION {
        return Err(TxnRecordError::UnknownVersion(version));
    }
    need(buf, 8 + 2 + 4 + 1 + 4)?;
    let producer_id = buf.get_i64();
    let producer_epoch = buf.get_i16();
    let timeout_ms = buf.get_i32();
    let state = TxnState::from_status(buf.get_i8()).ok_or(TxnRecordError::Malformed)?;
    let topics = buf.get_i32();
    let mut partitions = Vec::new();
    for _ in 0..topics.max(0) {
        let topic = get_string(&mut buf)?;
        need(buf, 4)?;
        let count = buf.get_i32();
        if count < 0 || count as usize > buf.remaining() / 4 {
            return Err(TxnRecordError::Malformed);
        }
        let ids = (0..count).map(|_| buf.get_i32()).collect();
        partitions.push((topic, ids));
    }
    need(buf, 16)?;
    let last_update_ms = buf.get_i64();
    let start_ms = buf.get_i64();
    Ok(TxnValue {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
    })
}

/// Decodes one record's key and value (`None` for a tombstone).
pub fn decode_record(key: &[u8], value: Option<&[u8]>) -> Result<TxnRecord, TxnRecordError> {
    let mut k = key;
    need(k, 2)?;
    let version = k.get_i16();
    if version != KEY_VERSION {
        return Err(TxnRecordError::UnknownVersion(version));
    }
    let transactional_id = get_string(&mut k)?;
    let value = value.map(decode_value).transpose()?;
    Ok(TxnRecord {
        transactional_id,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::records::{build_batch, walk_batches};

    fn sample() -> TxnValue {
        TxnValue {
            producer_id: 4001,
            producer_epoch: 7,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: vec![
                ("orders".into(), vec![0, 3]),
                ("__consumer_offsets".into(), vec![12]),
            ],
            last_update_ms: 1_700_000_000_123,
            start_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn value_layout_is_kafkas_version_0() {
        let bytes = txn_value(&sample());
        // version, producer id, epoch, timeout, status
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(&bytes[2..10], &4001i64.to_be_bytes());
        assert_eq!(&bytes[10..12], &7i16.to_be_bytes());
        assert_eq!(&bytes[12..16], &60_000i32.to_be_bytes());
        assert_eq!(bytes[16], 1, "Ongoing is status 1");
        assert_eq!(&bytes[17..21], &2i32.to_be_bytes());
        let key = txn_key("tx-1");
        assert_eq!(&key[..], &[0, 0, 0, 4, b't', b'x', b'-', b'1']);
    }

    #[test]
    fn records_round_trip_through_a_batch() {
        let batch = build_batch(
            &[
                (txn_key("a"), Some(txn_value(&sample()))),
                (txn_key("b"), None),
            ],
            5,
        );
        let mut skipped = 0;
        let mut records = Vec::new();
        let next = walk_batches(&batch, &mut skipped, |_, key, value| {
            records.push(decode_record(key, value).unwrap());
        });
        assert_eq!(next, Some(2));
        assert_eq!(skipped, 0);
        assert_eq!(
            records,
            vec![
                TxnRecord {
                    transactional_id: "a".into(),
                    value: Some(sample()),
                },
                TxnRecord {
                    transactional_id: "b".into(),
                    value: None,
                },
            ]
        );
    }

    #[test]
    fn every_state_round_trips_and_garbage_does_not_panic() {
        for status in 0..8 {
            let state = TxnState::from_status(status).unwrap();
            assert_eq!(state.status(), status);
        }
        assert_eq!(TxnState::from_status(8), None);
        let good = txn_value(&sample());
        for len in 0..good.len() {
            assert!(decode_record(&txn_key("a"), Some(&good[..len])).is_err());
        }
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 53 % 251) as u8).collect();
            let _ = decode_record(&junk, Some(&junk));
        }
    }
}
