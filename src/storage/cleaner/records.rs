//! The records inside one v2 batch, as the log cleaner and the compacted-topic key check need
//! them: each record's offset and timestamp deltas, key and whether its value is null, and the
//! rebuild of a batch from the records it keeps.
//!
//! Pure functions over bytes that passed the batch CRC (on append or in the segment scan); a
//! record section that does not parse is reported, never trusted. No I/O, no awaiting.
//!
//! ```text
//! record: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//!         keyLength varint | key | valueLength varint | value | headers count varint | headers
//! ```

use std::hash::{Hash, Hasher};

use crate::storage::batch::{BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD_BYTES, BatchHeader};
use crate::storage::compression::{self, Codec, CodecError};

/// `attributes` bit saying `baseTimestamp` holds the batch's delete horizon (KIP-534): the time
/// after which the cleaner may remove its tombstones and, for a control batch, the marker.
pub const DELETE_HORIZON_ATTRIBUTE_BIT: i16 = 1 << 6;
const CODEC_ATTRIBUTE_BITS: i16 = 0x07;
const CRC_FIELD_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const RECORDS_COUNT_OFFSET: usize = 57;

/// Why a batch's records could not be read or rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// One record, borrowed from its batch's (inflated) records section.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    /// `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// The whole record, its length varint included.
    pub bytes: &'a [u8],
    /// Where the timestamp delta varint lies within `bytes`.
    timestamp_span: (usize, usize),
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut zigzag = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        zigzag |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64));
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// A length-prefixed field: `Ok(None)` for length -1 (null).
fn get_sized<'a>(bytes: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, RecordsError> {
    let len = get_varint(bytes, at).ok_or(RecordsError::Malformed("truncated length"))?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| RecordsError::Malformed("negative length"))?;
    let end = at
        .checked_add(len)
        .filter(|&end| end <= bytes.len())
        .ok_or(RecordsError::Malformed("field runs past the record"))?;
    let field = &bytes[*at..end];
    *at = end;
    Ok(Some(field))
}

/// Parses the records of a records section that must hold exactly `count` of them. Every
/// record takes at least one byte, so a count above the section's length is malformed before
/// anything is allocated for it.
pub fn parse(section: &[u8], count: i32) -> Result<Vec<RecordView<'_>>, RecordsError> {
    let count = usize::try_from(count).map_err(|_| RecordsError::Malformed("negative count"))?;
    if count > section.len() {
        return Err(RecordsError::Malformed("more records than bytes"));
    }
    let mut out = Vec::with_capacity(count);
    let mut at = 0usize;
    for _ in 0..count {
        let start = at;
        let length = get_varint(section, &mut at).ok_or(RecordsError::Malformed("length"))?;
        let end = usize::try_from(length)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|&end| end <= section.len())
            .ok_or(RecordsError::Malformed("record length out of range"))?;
        let record = &section[..end];
        at += 1; // attributes
        let ts_start = at;
        let timestamp_delta =
            get_varint(record, &mut at).ok_or(RecordsError::Malformed("timestamp delta"))?;
        let ts_end = at;
        let offset_delta =
            get_varint(record, &mut at).ok_or(RecordsError::Malformed("offset delta"))?;
        let offset_delta =
            i32::try_from(offset_delta).map_err(|_| RecordsError::Malformed("offset delta"))?;
        let key = get_sized(record, &mut at)?;
        let value = get_sized(record, &mut at)?;
        if at > end {
            return Err(RecordsError::Malformed("record longer than its length"));
        }
        out.push(RecordView {
            offset_delta,
            timestamp_delta,
            key,
            value,
            bytes: &section[start..end],
            timestamp_span: (ts_start - start, ts_end - start),
        });
        at = end;
    }
    if at != section.len() {
        return Err(RecordsError::Malformed("bytes after the last record"));
    }
    Ok(out)
}

/// The (inflated) records section of a whole batch, at most `bound` bytes.
pub fn section(batch: &[u8], bound: usize) -> Result<std::borrow::Cow<'_, [u8]>, RecordsError> {
    let header = BatchHeader::view(batch).ok_or(RecordsError::Malformed("short batch"))?;
    let body = &batch[BATCH_HEADER_BYTES..];
    match Codec::from_attributes(header.attributes.get())? {
        Codec::None => Ok(std::borrow::Cow::Borrowed(body)),
        codec => Ok(std::borrow::Cow::Owned(compression::decompress(
            codec, body, bound,
        )?)),
    }
}

/// A 128-bit hash of a record key, the identity the cleaner's offset map keeps per key (as
/// Kafka's keeps an MD5): two SipHash-1-3 passes under different prefixes.
pub fn key_hash(key: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut hasher = std::hash::DefaultHasher::new();
        salt.hash(&mut hasher);
        key.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// Rebuilds `batch` holding only `kept` (records of its own section, in order): same base
/// offset, last offset delta, producer fields, leader epoch and codec, so offsets and
/// sequences stay as they were; the records count and CRC are recomputed. With
/// `delete_horizon_ms` the horizon bit is set and `baseTimestamp` holds the horizon, the
/// records' timestamp deltas rebased on it so every record keeps its timestamp.
pub fn rebuild(
    batch: &[u8],
    kept: &[RecordView<'_>],
    delete_horizon_ms: Option<i64>,
) -> Result<Vec<u8>, RecordsError> {
    let header = BatchHeader::view(batch).ok_or(RecordsError::Malformed("short batch"))?;
    let attributes = header.attributes.get();
    let codec = Codec::from_attributes(attributes)?;
    let xerial = codec == Codec::Snappy && compression::is_xerial(&batch[BATCH_HEADER_BYTES..]);
    let old_base_timestamp = header.base_timestamp.get();
    let base_timestamp = delete_horizon_ms.unwrap_or(old_base_timestamp);
    let mut section = Vec::with_capacity(kept.iter().map(|r| r.bytes.len() + 4).sum());
    for record in kept {
        if base_timestamp == old_base_timestamp {
            section.extend_from_slice(record.bytes);
            continue;
        }
        // Re-encode: a new timestamp delta can change the varint's width, so the record's
        // length prefix is written anew.
        let mut length_at = 0;
        get_varint(record.bytes, &mut length_at).ok_or(RecordsError::Malformed("length"))?;
        let (ts_start, ts_end) = record.timestamp_span;
        let timestamp = old_base_timestamp.wrapping_add(record.timestamp_delta);
        let mut body = Vec::with_capacity(record.bytes.len() + 8);
        body.extend_from_slice(&record.bytes[length_at..ts_start]);
        put_varint(&mut body, timestamp.wrapping_sub(base_timestamp));
        body.extend_from_slice(&record.bytes[ts_end..]);
        put_varint(&mut section, body.len() as i64);
        section.extend_from_slice(&body);
    }
    // An empty batch (a producer's last batch whose records all went) is written as Kafka
    // writes one: no records section and no codec, only the header and its offsets.
    let body = match codec {
        _ if kept.is_empty() => Vec::new(),
        Codec::None => section,
        codec => compression::compress(codec, &section, xerial)?,
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&body);
    let length = (out.len() - BATCH_LOG_OVERHEAD_BYTES) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = if kept.is_empty() {
        attributes & !CODEC_ATTRIBUTE_BITS
    } else {
        attributes
    };
    let attributes = if delete_horizon_ms.is_some() {
        attributes | DELETE_HORIZON_ATTRIBUTE_BIT
    } else {
        attributes
    };
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    out[BASE_TIMESTAMP_OFFSET..BASE_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&base_timestamp.to_be_bytes());
    out[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
        .copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crate::storage::batch::compute_crc(&out);
    out[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The delete horizon a batch carries, if its horizon bit is set.
pub fn delete_horizon_ms(header: &BatchHeader) -> Option<i64> {
    (header.attributes.get() & DELETE_HORIZON_ATTRIBUTE_BIT != 0)
        .then(|| header.base_timestamp.get())
}

/// The indexes (within the batch) of the records without a key, which a compacted topic
/// refuses (Kafka's `LogValidator`); `bound` caps the inflated records section.
pub fn keyless_records(batch: &[u8], bound: usize) -> Result<Vec<i32>, RecordsError> {
    let header = BatchHeader::view(batch).ok_or(RecordsError::Malformed("short batch"))?;
    let section = section(batch, bound)?;
    Ok(parse(&section, header.records_count.get())?
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| i as i32)
        .collect())
}

/// Encodes one record (tests and the keyed batch helper).
pub fn encode_record(
    out: &mut Vec<u8>,
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let mut record = vec![0u8];
    put_varint(&mut record, timestamp_delta);
    put_varint(&mut record, i64::from(offset_delta));
    for field in [key, value] {
        match field {
            Some(bytes) => {
                put_varint(&mut record, bytes.len() as i64);
                record.extend_from_slice(bytes);
            }
            None => put_varint(&mut record, -1),
        }
    }
    put_varint(&mut record, 0); // headers
    put_varint(out, record.len() as i64);
    out.extend_from_slice(&record);
}

/// A record to build: its key and value, each `None` for null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A whole v2 batch of keyed records `(key, value)` with consecutive offset deltas and
/// timestamp `timestamp_ms`, compressed with `codec`, for `producer` (id, epoch, base
/// sequence) and `attributes` (codec bits are set from `codec`). Test and bench helper.
pub fn build_keyed_batch(
    records: &[KeyValue<'_>],
    timestamp_ms: i64,
    codec: Codec,
    attributes: i16,
    producer: (i64, i16, i32),
) -> Vec<u8> {
    let mut section = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        encode_record(&mut section, i as i32, 0, *key, *value);
    }
    let body = compression::compress(codec, &section, false).expect("compress");
    crate::storage::batch::seal_batch(
        &body,
        records.len() as i32,
        (attributes & !0x07) | codec as i16,
        producer,
        timestamp_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_filter_and_rebuild_keep_offsets_timestamps_and_crc() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let values: Vec<Vec<u8>> = (0..5).map(|i| vec![b'v'; 10 + i]).collect();
            let records: Vec<KeyValue<'_>> = vec![
                (Some(b"a"), Some(&values[0])),
                (Some(b"b"), Some(&values[1])),
                (Some(b"a"), None),
                (None, Some(&values[3])),
                (Some(b"c"), Some(&values[4])),
            ];
            let mut batch = build_keyed_batch(&records, 1_000, codec, 0, (7, 1, 100));
            crate::storage::batch::patch_base_offset(&mut batch, 500);
            let section = section(&batch, 1 << 20).unwrap();
            let parsed = parse(&section, 5).unwrap();
            assert_eq!(parsed.len(), 5);
            assert_eq!(parsed[2].key, Some(&b"a"[..]));
            assert!(parsed[2].value.is_none());
            assert_eq!(parsed[3].key, None);
            let kept = [parsed[1], parsed[4]];
            for horizon in [None, Some(1_000_000_000_000i64)] {
                let rebuilt = rebuild(&batch, &kept, horizon).unwrap();
                let header = BatchHeader::view(&rebuilt).unwrap();
                assert_eq!(header.size_bytes() as usize, rebuilt.len());
                assert_eq!(header.magic, 2);
                assert_eq!(
                    crate::storage::batch::compute_crc(&rebuilt),
                    header.crc.get()
                );
                assert_eq!(header.base_offset.get(), 500);
                assert_eq!(header.last_offset_delta.get(), 4);
                assert_eq!(header.records_count.get(), 2);
                assert_eq!(header.producer_id.get(), 7);
                assert_eq!(header.base_sequence.get(), 100);
                assert_eq!(delete_horizon_ms(header), horizon);
                assert_eq!(Codec::from_attributes(header.attributes.get()), Ok(codec));
                let base = header.base_timestamp.get();
                let section2 = super::section(&rebuilt, 1 << 20).unwrap();
                let again = parse(&section2, 2).unwrap();
                let offsets: Vec<i32> = again.iter().map(|r| r.offset_delta).collect();
                assert_eq!(offsets, [1, 4]);
                for r in &again {
                    assert_eq!(base + r.timestamp_delta, 1_000, "timestamps kept");
                }
                assert_eq!(again[1].key, Some(&b"c"[..]));
            }
        }
        assert!(parse(&[0x02, 0x00], 5).is_err());
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
        assert_eq!(key_hash(b"a"), key_hash(b"a"));
    }
}
