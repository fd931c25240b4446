//! Kafka v2 record batch header: a `zerocopy` view, validation and in-place patching.
//!
//! Pure functions, no I/O and no awaiting; used by the owning shard's append path, by the
//! recovery scan and by readers. The broker never decodes individual records.
//!
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32        | 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64
//! 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32
//! 57 recordsCount i32 | 61 records...
//! ```
//! The CRC-32C covers `attributes` to the end, so patching `baseOffset` keeps it valid.
//! `LogAppendTime` additionally sets the timestamp-type attribute bit, which *is* covered, so
//! for those topics the CRC is recomputed (as Kafka does); `CreateTime` batches are never
//! re-checksummed.

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::error::{StorageError, StorageResult};

/// Size of the v2 batch header.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength themselves.
pub const BATCH_LOG_OVERHEAD_BYTES: usize = 12;
const LEADER_EPOCH_OFFSET: usize = 12;
const CRC_FIELD_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const TIMESTAMP_TYPE_ATTRIBUTE_BIT: i16 = 1 << 3;
/// `attributes` bit of a batch written inside a transaction.
pub const TRANSACTIONAL_ATTRIBUTE_BIT: i16 = 1 << 4;
/// `attributes` bit of a control batch (a transaction's commit or abort marker).
pub const CONTROL_ATTRIBUTE_BIT: i16 = 1 << 5;

/// The v2 batch header, big-endian, read in place.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    pub base_offset: I64,
    pub batch_length: I32,
    pub partition_leader_epoch: I32,
    pub magic: i8,
    pub crc: U32,
    pub attributes: I16,
    pub last_offset_delta: I32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub records_count: I32,
}

const _: () = assert!(std::mem::size_of::<BatchHeader>() == BATCH_HEADER_BYTES);

impl BatchHeader {
    /// The header at the start of `bytes`, if there are enough bytes.
    pub fn view(bytes: &[u8]) -> Option<&BatchHeader> {
        BatchHeader::ref_from_prefix(bytes).ok().map(|(h, _)| h)
    }

    /// Whole size of the batch on disk (header included), from `batchLength`.
    pub fn size_bytes(&self) -> i64 {
        self.batch_length.get() as i64 + BATCH_LOG_OVERHEAD_BYTES as i64
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset.get() + self.last_offset_delta.get() as i64
    }

    /// The last offset, if the header's offsets are well formed: a non-negative
    /// `lastOffsetDelta` (as `validate_one` requires of every appended batch) and a last offset
    /// below `i64::MAX`, so the next offset exists. Recovery reads headers from files, where
    /// `baseOffset` is not covered by the CRC, so it checks this before using `last_offset`.
    pub fn checked_last_offset(&self) -> Option<i64> {
        let delta = self.last_offset_delta.get();
        if delta < 0 {
            return None;
        }
        self.base_offset
            .get()
            .checked_add(i64::from(delta))
            .filter(|&last| last < i64::MAX)
    }

    /// Written inside a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes.get() & TRANSACTIONAL_ATTRIBUTE_BIT != 0
    }

    /// Its timestamps are the broker's append time (every record's timestamp is then the
    /// batch's `maxTimestamp`), not the producer's create time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes.get() & TIMESTAMP_TYPE_ATTRIBUTE_BIT != 0
    }

    /// A control batch (commit or abort marker).
    pub fn is_control(&self) -> bool {
        self.attributes.get() & CONTROL_ATTRIBUTE_BIT != 0
    }
}

/// What a transaction marker (the one record of a control batch) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMarker {
    /// Commit (true) or abort (false).
    pub commit: bool,
    /// The epoch of the transaction coordinator that wrote it.
    pub coordinator_epoch: i32,
}

/// Control record types (the `type` field of a control record's key).
const CONTROL_TYPE_ABORT: i16 = 0;
const CONTROL_TYPE_COMMIT: i16 = 1;

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

pub(crate) fn get_varint(bytes: &[u8], position: &mut usize) -> Option<i64> {
    let mut zigzag = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*position)?;
        *position += 1;
        zigzag |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64));
        }
    }
    None
}

/// A control batch holding one commit or abort marker of `producer_id`'s transaction, as
/// Kafka's transaction coordinator has partitions write it: transactional and control bits
/// set, base sequence -1, one record whose key is (version 0, type) and whose value is
/// (version 0, coordinator epoch).
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlMarker,
    timestamp_ms: i64,
) -> Vec<u8> {
    let kind = if marker.commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut record = vec![0u8]; // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, 4);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&kind.to_be_bytes());
    put_varint(&mut record, 6);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    put_varint(&mut record, 0); // headers
    let mut body = Vec::with_capacity(record.len() + 2);
    put_varint(&mut body, record.len() as i64);
    body.extend_from_slice(&record);
    seal_batch(
        &body,
        1,
        TRANSACTIONAL_ATTRIBUTE_BIT | CONTROL_ATTRIBUTE_BIT,
        (producer_id, producer_epoch, -1),
        timestamp_ms,
    )
}

/// A whole v2 batch around `records` (the encoded records, each with its length varint):
/// header with base offset 0, `record_count` records, `attributes`, `producer` as (id, epoch,
/// base sequence), both timestamps `timestamp_ms`, and the CRC-32C.
pub fn seal_batch(
    records: &[u8],
    record_count: i32,
    attributes: i16,
    producer: (i64, i16, i32),
    timestamp_ms: i64,
) -> Vec<u8> {
    let (producer_id, producer_epoch, base_sequence) = producer;
    let header = BatchHeader {
        base_offset: 0.into(),
        batch_length: ((BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES + records.len()) as i32)
            .into(),
        partition_leader_epoch: 0.into(),
        magic: 2,
        crc: 0.into(),
        attributes: attributes.into(),
        last_offset_delta: (record_count - 1).into(),
        base_timestamp: timestamp_ms.into(),
        max_timestamp: timestamp_ms.into(),
        producer_id: producer_id.into(),
        producer_epoch: producer_epoch.into(),
        base_sequence: base_sequence.into(),
        records_count: record_count.into(),
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(records);
    let crc = compute_crc(&out);
    out[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The marker in a whole control batch (`batch` starts at its header), or `None` if it is not
/// a control batch or its first record is not a marker this broker understands. Control
/// batches are never compressed, so the record is read in place.
pub fn control_marker(batch: &[u8]) -> Option<ControlMarker> {
    let header = BatchHeader::view(batch)?;
    if !header.is_control() || header.records_count.get() < 1 {
        return None;
    }
    let mut at = BATCH_HEADER_BYTES;
    let _length = get_varint(batch, &mut at)?;
    at += 1; // attributes
    let _timestamp_delta = get_varint(batch, &mut at)?;
    let _offset_delta = get_varint(batch, &mut at)?;
    if get_varint(batch, &mut at)? < 4 {
        return None;
    }
    let key = batch.get(at..at + 4)?;
    at += 4;
    let kind = i16::from_be_bytes([key[2], key[3]]);
    let value_len = get_varint(batch, &mut at)?;
    let coordinator_epoch = if value_len >= 6 {
        let value = batch.get(at..at + 6)?;
        i32::from_be_bytes([value[2], value[3], value[4], value[5]])
    } else {
        0
    };
    match kind {
        CONTROL_TYPE_COMMIT | CONTROL_TYPE_ABORT => Some(ControlMarker {
            commit: kind == CONTROL_TYPE_COMMIT,
            coordinator_epoch,
        }),
        _ => None,
    }
}

/// What validation learned about one batch of an append.
#[derive(Debug, Clone, Copy)]
pub struct BatchMeta {
    /// Byte position of the batch inside the appended buffer.
    pub position: usize,
    pub size_bytes: usize,
    /// Number of offsets the batch takes (`lastOffsetDelta + 1`).
    pub offset_count: i64,
    pub max_timestamp: i64,
}

/// CRC-32C of a complete batch as stored in its header field.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Validates one complete batch at the start of `bytes` and returns its size. Checks, in
/// order: truncation and length (CorruptMessage), magic (InvalidRecord), size against
/// `max_message_bytes` (MessageTooLarge), CRC-32C (CorruptMessage), record count
/// (InvalidRecord).
pub fn validate_one(bytes: &[u8], max_message_bytes: u32) -> StorageResult<(usize, &BatchHeader)> {
    let header =
        BatchHeader::view(bytes).ok_or(StorageError::CorruptMessage("truncated batch header"))?;
    let length = header.batch_length.get();
    if (length as i64) < (BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES) as i64 {
        return Err(StorageError::CorruptMessage(
            "batch length below header size",
        ));
    }
    let size = header.size_bytes() as u64;
    if size > bytes.len() as u64 {
        return Err(StorageError::CorruptMessage("batch truncated"));
    }
    if header.magic != 2 {
        return Err(StorageError::InvalidRecord("magic is not 2"));
    }
    if size > max_message_bytes as u64 {
        return Err(StorageError::MessageTooLarge {
            size_bytes: size,
            max_bytes: max_message_bytes,
        });
    }
    let size = size as usize;
    if compute_crc(&bytes[..size]) != header.crc.get() {
        return Err(StorageError::CorruptMessage("CRC-32C mismatch"));
    }
    let delta = header.last_offset_delta.get();
    if delta < 0 || header.records_count.get() as i64 != delta as i64 + 1 {
        return Err(StorageError::InvalidRecord(
            "record count does not match lastOffsetDelta",
        ));
    }
    Ok((size, header))
}

/// Validates every batch of a Produce partition's `records` field before anything is written,
/// so an append is all or nothing. Calls `each` for every batch in order.
pub fn validate_all(
    bytes: &[u8],
    max_message_bytes: u32,
    mut each: impl FnMut(BatchMeta),
) -> StorageResult<usize> {
    if bytes.is_empty() {
        return Err(StorageError::CorruptMessage("empty records"));
    }
    let mut position = 0;
    let mut count = 0;
    while position < bytes.len() {
        let (size, header) = validate_one(&bytes[position..], max_message_bytes)?;
        each(BatchMeta {
            position,
            size_bytes: size,
            offset_count: header.last_offset_delta.get() as i64 + 1,
            max_timestamp: header.max_timestamp.get(),
        });
        position += size;
        count += 1;
    }
    Ok(count)
}

/// Writes the broker-assigned base offset; the CRC does not cover it.
pub fn patch_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch (header bytes 12..16), as a Kafka leader stamps every
/// batch it appends; the CRC does not cover it.
pub fn patch_leader_epoch(batch: &mut [u8], leader_epoch: i32) {
    batch[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Turns a batch into a LogAppendTime batch: timestamp-type bit, maxTimestamp, and the CRC
/// (the attributes are covered by it). Returns the new CRC.
pub fn patch_log_append_time(batch: &mut [u8], append_time_ms: i64) -> u32 {
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_OFFSET], batch[ATTRIBUTES_OFFSET + 1]])
        | TIMESTAMP_TYPE_ATTRIBUTE_BIT;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&append_time_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    crc
}

/// Patches a copy of a header prefix (`BATCH_HEADER_BYTES` bytes) the same way the stored batch
/// was patched, used when the cache serves the client's original bytes.
pub fn patch_header_copy(
    header: &mut [u8],
    base_offset: i64,
    leader_epoch: Option<i32>,
    log_append: Option<(i64, u32)>,
) {
    patch_base_offset(header, base_offset);
    if let Some(epoch) = leader_epoch {
        patch_leader_epoch(header, epoch);
    }
    if let Some((time_ms, crc)) = log_append {
        let attributes =
            i16::from_be_bytes([header[ATTRIBUTES_OFFSET], header[ATTRIBUTES_OFFSET + 1]])
                | TIMESTAMP_TYPE_ATTRIBUTE_BIT;
        header[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
        header[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&time_ms.to_be_bytes());
        header[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Builds a valid v2 batch with `records` dummy records of `value_bytes` each (test and bench
/// helper; records are encoded minimally: attributes, deltas, null key, value, no headers).
pub fn build_test_batch(records: i32, value_bytes: usize, timestamp_ms: i64, fill: u8) -> Vec<u8> {
    let varint = put_varint;
    assert!(records > 0);
    let mut body = Vec::with_capacity(records as usize * (value_bytes + 8));
    for i in 0..records {
        let mut rec = vec![0u8]; // attributes
        varint(&mut rec, 0); // timestamp delta
        varint(&mut rec, i as i64); // offset delta
        varint(&mut rec, -1); // null key
        varint(&mut rec, value_bytes as i64);
        rec.extend(std::iter::repeat_n(fill, value_bytes));
        varint(&mut rec, 0); // headers
        varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    seal_batch(&body, records, 0, (-1, -1, -1), timestamp_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_batch_passes_and_patching_keeps_crc() {
        let mut b = build_test_batch(3, 10, 1000, 7);
        let (size, h) = validate_one(&b, 1 << 20).unwrap();
        assert_eq!(size, b.len());
        assert_eq!(h.records_count.get(), 3);
        patch_base_offset(&mut b, 12345);
        let (_, h) = validate_one(&b, 1 << 20).unwrap();
        assert_eq!(h.base_offset.get(), 12345);
        assert_eq!(h.last_offset(), 12347);
        let crc = patch_log_append_time(&mut b, 99);
        let (_, h) = validate_one(&b, 1 << 20).unwrap();
        assert_eq!(h.crc.get(), crc);
        assert_eq!(h.max_timestamp.get(), 99);
    }

    #[test]
    fn control_batches_round_trip() {
        for commit in [true, false] {
            let marker = ControlMarker {
                commit,
                coordinator_epoch: 7,
            };
            let batch = build_control_batch(42, 3, marker, 1234);
            let (size, header) = validate_one(&batch, 1 << 20).unwrap();
            assert_eq!(size, batch.len());
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(header.producer_id.get(), 42);
            assert_eq!(header.producer_epoch.get(), 3);
            assert_eq!(control_marker(&batch), Some(marker));
        }
        assert_eq!(control_marker(&build_test_batch(1, 4, 0, 0)), None);
        for v in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut at = 0;
            assert_eq!(get_varint(&out, &mut at), Some(v));
            assert_eq!(at, out.len());
        }
    }

    #[test]
    fn errors_are_distinct() {
        let b = build_test_batch(2, 10, 0, 1);
        let mut flipped = b.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            validate_one(&flipped, 1 << 20),
            Err(StorageError::CorruptMessage(_))
        ));
        assert!(matches!(
            validate_one(&b[..b.len() - 1], 1 << 20),
            Err(StorageError::CorruptMessage(_))
        ));
        let mut magic = b.clone();
        magic[16] = 1;
        assert!(matches!(
            validate_one(&magic, 1 << 20),
            Err(StorageError::InvalidRecord(_))
        ));
        assert!(matches!(
            validate_one(&b, 10),
            Err(StorageError::MessageTooLarge { .. })
        ));
        let mut count = b.clone();
        count[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&count);
        count[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_one(&count, 1 << 20),
            Err(StorageError::InvalidRecord(_))
        ));
        let mut two = b.clone();
        two.extend_from_slice(&b[..30]);
        assert!(validate_all(&two, 1 << 20, |_| {}).is_err());
        let mut two = b.clone();
        two.extend_from_slice(&b);
        assert_eq!(validate_all(&two, 1 << 20, |_| {}).unwrap(), 2);
    }
}
