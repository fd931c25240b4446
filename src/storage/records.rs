//! Record-level reading of stored v2 batches: the offsets and timestamps of the records inside
//! one batch, for the lookups the batch header cannot answer alone (ListOffsets by timestamp,
//! whose answer is the first *record* at or after the time asked for, as Kafka's
//! `FileRecords.searchForTimestamp` gives it).
//!
//! Owner: pure functions, no I/O and no awaiting; called on the shard that owns the partition,
//! on one batch the segment scan already CRC-checked. Only that candidate batch is read, never
//! a whole segment. A compressed batch (gzip, snappy raw or in the xerial framing, lz4 frame,
//! zstd) is inflated into memory, at most `limits::RECORD_SCAN_INFLATE_BYTES_MAX` bytes: the
//! batch's own size is bounded by `max.message.bytes` at append, but what it inflates to is
//! not, and the broker does not inflate batches at append time.
//!
//! ```text
//! record: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
//!         | key | value | headers        (timestamp = firstTimestamp + timestampDelta)
//! ```

use std::io::Read;

use super::batch::{BATCH_HEADER_BYTES, BatchHeader, get_varint};
use crate::limits::RECORD_SCAN_INFLATE_BYTES_MAX;

/// Why the records of a stored batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    /// The compressed payload does not decode.
    #[error("invalid {codec} data: {reason}")]
    Codec {
        /// The codec's name.
        codec: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The payload inflates past `RECORD_SCAN_INFLATE_BYTES_MAX`.
    #[error("the batch inflates past {RECORD_SCAN_INFLATE_BYTES_MAX} bytes")]
    TooLarge,
    /// The attributes name a codec that does not exist.
    #[error("unknown compression type id {0}")]
    UnknownCodec(i16),
    /// A record is truncated or its fields do not fit its length.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";

/// The first record of `batch` (a whole, CRC-checked v2 batch) whose timestamp is at or after
/// `timestamp_ms` and whose offset is at least `min_offset`, as (offset, timestamp); None when
/// no record of the batch is. The records of a LogAppendTime batch all carry the batch's
/// `maxTimestamp`.
pub fn first_at_or_after(
    batch: &[u8],
    timestamp_ms: i64,
    min_offset: i64,
) -> Result<Option<(i64, i64)>, RecordsError> {
    let header = BatchHeader::view(batch).ok_or(RecordsError::Malformed("truncated header"))?;
    let base_offset = header.base_offset.get();
    if header.is_log_append_time() {
        let max_timestamp = header.max_timestamp.get();
        if max_timestamp < timestamp_ms || header.last_offset() < min_offset {
            return Ok(None);
        }
        if base_offset >= min_offset {
            return Ok(Some((base_offset, max_timestamp)));
        }
    }
    let payload = &batch[BATCH_HEADER_BYTES.min(batch.len())..];
    let attributes = header.attributes.get();
    let inflated;
    let records = match attributes & 0x07 {
        0 => payload,
        codec => {
            inflated = inflate(codec, payload)?;
            &inflated[..]
        }
    };
    let first_timestamp = header.base_timestamp.get();
    let log_append = header
        .is_log_append_time()
        .then(|| header.max_timestamp.get());
    let mut at = 0;
    for _ in 0..header.records_count.get().max(0) {
        let length = get_varint(records, &mut at).ok_or(RecordsError::Malformed("length"))?;
        let end = usize::try_from(length)
            .ok()
            .and_then(|length| at.checked_add(length))
            .filter(|&end| end <= records.len())
            .ok_or(RecordsError::Malformed("length past the batch"))?;
        at += 1; // attributes
        let timestamp_delta =
            get_varint(records, &mut at).ok_or(RecordsError::Malformed("timestamp delta"))?;
        let offset_delta =
            get_varint(records, &mut at).ok_or(RecordsError::Malformed("offset delta"))?;
        if at > end {
            return Err(RecordsError::Malformed("fields past the record's length"));
        }
        let offset = base_offset.saturating_add(offset_delta);
        let timestamp =
            log_append.unwrap_or_else(|| first_timestamp.saturating_add(timestamp_delta));
        if timestamp >= timestamp_ms && offset >= min_offset {
            return Ok(Some((offset, timestamp)));
        }
        at = end;
    }
    Ok(None)
}

/// Inflates a batch payload compressed with `codec` (the attributes' low three bits).
fn inflate(codec: i16, payload: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let bound = RECORD_SCAN_INFLATE_BYTES_MAX;
    let failed = |codec: &'static str| {
        move |err: std::io::Error| RecordsError::Codec {
            codec,
            reason: err.to_string(),
        }
    };
    match codec {
        1 => read_bounded(flate2::read::MultiGzDecoder::new(payload), bound)
            .map_err(failed("gzip"))?,
        2 => {
            let mut out = Vec::new();
            if payload.len() >= 16 && &payload[..8] == XERIAL_MAGIC {
                // xerial framing: 16-byte header, then (length u32, raw snappy block)*.
                let mut at = 16;
                while at < payload.len() {
                    let length = payload
                        .get(at..at + 4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                        .ok_or(RecordsError::Malformed("snappy block length"))?;
                    at += 4;
                    let block = payload
                        .get(at..at.saturating_add(length))
                        .ok_or(RecordsError::Malformed("snappy block truncated"))?;
                    at += length;
                    snappy_block(block, &mut out, bound)?;
                }
            } else {
                snappy_block(payload, &mut out, bound)?;
            }
            Ok(out)
        }
        3 => read_bounded(lz4_flex::frame::FrameDecoder::new(payload), bound)
            .map_err(failed("lz4"))?,
        4 => read_bounded(
            zstd::stream::read::Decoder::new(payload).map_err(failed("zstd"))?,
            bound,
        )
        .map_err(failed("zstd"))?,
        other => Err(RecordsError::UnknownCodec(other)),
    }
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, bound: usize) -> Result<(), RecordsError> {
    let bad = |err: snap::Error| RecordsError::Codec {
        codec: "snappy",
        reason: err.to_string(),
    };
    let length = snap::raw::decompress_len(block).map_err(bad)?;
    if out.len() + length > bound {
        return Err(RecordsError::TooLarge);
    }
    let start = out.len();
    out.resize(start + length, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(bad)?;
    Ok(())
}

/// Reads `reader` to the end: `Ok(Err(TooLarge))` past `bound` bytes.
fn read_bounded(
    reader: impl Read,
    bound: usize,
) -> Result<Result<Vec<u8>, RecordsError>, std::io::Error> {
    let mut out = Vec::new();
    reader.take(bound as u64 + 1).read_to_end(&mut out)?;
    if out.len() > bound {
        return Ok(Err(RecordsError::TooLarge));
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::storage::batch::seal_batch;

    fn put_varint(out: &mut Vec<u8>, value: i64) {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        while zigzag >= 0x80 {
            out.push((zigzag as u8 & 0x7f) | 0x80);
            zigzag >>= 7;
        }
        out.push(zigzag as u8);
    }

    /// Records with the given timestamp deltas, uncompressed.
    fn records(deltas: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &delta) in deltas.iter().enumerate() {
            let mut body = vec![0u8];
            put_varint(&mut body, delta);
            put_varint(&mut body, i as i64);
            put_varint(&mut body, -1); // null key
            put_varint(&mut body, 3);
            body.extend_from_slice(b"abc");
            put_varint(&mut body, 0); // no headers
            put_varint(&mut out, body.len() as i64);
            out.extend_from_slice(&body);
        }
        out
    }

    fn batch(
        base_offset: i64,
        first_ts: i64,
        deltas: &[i64],
        codec: i16,
        payload: &[u8],
    ) -> Vec<u8> {
        let max = first_ts + deltas.iter().copied().max().unwrap_or(0);
        let mut out = seal_batch(payload, deltas.len() as i32, codec, (-1, -1, -1), first_ts);
        // Base offset (not covered by the CRC) and maxTimestamp (covered: sealed again).
        out[..8].copy_from_slice(&base_offset.to_be_bytes());
        out[35..43].copy_from_slice(&max.to_be_bytes());
        let crc = crate::storage::batch::compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn compressed(codec: i16, data: &[u8]) -> Vec<u8> {
        match codec {
            0 => data.to_vec(),
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(data).unwrap(),
            3 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            _ => zstd::stream::encode_all(data, 1).unwrap(),
        }
    }

    #[test]
    fn finds_the_first_record_at_or_after_the_time_in_every_codec() {
        // Timestamps 1000, 1010, 1005, 1020: out of order inside the batch, as producers may.
        let deltas = [0, 10, 5, 20];
        for codec in 0..=4 {
            let b = batch(
                100,
                1000,
                &deltas,
                codec,
                &compressed(codec, &records(&deltas)),
            );
            assert_eq!(
                first_at_or_after(&b, 0, 0),
                Ok(Some((100, 1000))),
                "codec {codec}"
            );
            assert_eq!(first_at_or_after(&b, 1001, 0), Ok(Some((101, 1010))));
            assert_eq!(first_at_or_after(&b, 1005, 0), Ok(Some((101, 1010))));
            assert_eq!(first_at_or_after(&b, 1011, 0), Ok(Some((103, 1020))));
            assert_eq!(first_at_or_after(&b, 1021, 0), Ok(None));
            // Records below the log start offset do not count.
            assert_eq!(first_at_or_after(&b, 1001, 102), Ok(Some((102, 1005))));
        }
    }

    #[test]
    fn log_append_time_records_carry_the_batch_time() {
        let deltas = [0, 1, 2];
        let mut b = batch(7, 50, &deltas, 0, &records(&deltas));
        crate::storage::batch::patch_log_append_time(&mut b, 9000);
        assert_eq!(first_at_or_after(&b, 8000, 0), Ok(Some((7, 9000))));
        assert_eq!(first_at_or_after(&b, 8000, 8), Ok(Some((8, 9000))));
        assert_eq!(first_at_or_after(&b, 9001, 0), Ok(None));
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let deltas = [0, 1];
        let good = records(&deltas);
        let cut = batch(0, 0, &deltas, 0, &good[..good.len() - 6]);
        assert!(matches!(
            first_at_or_after(&cut, 1, 0),
            Err(RecordsError::Malformed(_))
        ));
        let garbage = batch(0, 0, &deltas, 1, b"not gzip at all");
        assert!(matches!(
            first_at_or_after(&garbage, 1, 0),
            Err(RecordsError::Codec { .. })
        ));
        let unknown = batch(0, 0, &deltas, 6, &good);
        assert_eq!(
            first_at_or_after(&unknown, 1, 0),
            Err(RecordsError::UnknownCodec(6))
        );
    }
}
