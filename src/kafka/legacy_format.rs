//! Kafka's legacy message formats (magic 0 and 1) and their conversion to and from v2 record
//! batches, for Produce v0-2 and Fetch v0-3.
//!
//! Owner: pure functions, no I/O and no awaiting; called on the shard that holds the client's
//! connection (produce before the partitions are scattered, fetch after the owners answered),
//! so the owners and the storage only ever see v2 batches. Nothing here runs for clients that
//! speak Produce v3+ or Fetch v4+: the hot paths stay zero-copy.
//!
//! Up-conversion (produce), as Kafka's `LogValidator` does it: every message of the request's
//! message set is checked (size, magic 0 or 1, CRC-32 of magic to end, no nested compression,
//! inner magic equal to the wrapper's), compressed wrappers are inflated (gzip, snappy, lz4),
//! and all records become one v2 batch with the producer's timestamps (magic 0 has none: -1)
//! and no producer id. If any wrapper was compressed the batch is compressed again with that
//! codec. The owner then assigns offsets and applies LogAppendTime like for any v2 batch.
//!
//! Down-conversion (fetch): each stored v2 batch becomes a legacy message set: uncompressed
//! batches one message per record (records before the fetch offset are dropped), compressed
//! batches one wrapper message holding all records (inner offsets relative for magic 1,
//! absolute for magic 0). Headers are dropped (the old formats cannot carry them), control
//! batches are skipped, LogAppendTime batches give every message the append time, and
//! zstd-compressed batches cannot be converted (UNSUPPORTED_COMPRESSION_TYPE). Whole converted
//! batches are returned up to the byte limit, at least one.
//!
//! ```text
//! legacy message: offset i64 | size i32 | crc u32 | magic i8 | attributes i8
//!                 | timestamp i64 (magic 1 only) | key bytes (i32 length, -1 null) | value bytes
//! attributes: bits 0-2 codec (0 none, 1 gzip, 2 snappy, 3 lz4), bit 3 LogAppendTime (magic 1)
//! ```
//!
//! Every inflated payload is bounded by `limits::LEGACY_CONVERSION_BYTES_MAX`.

use std::io::{Read, Write};

use bytes::{BufMut, Bytes};
use zerocopy::IntoBytes;

use crate::limits;
use crate::storage::batch::{BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD_BYTES, BatchHeader};

/// Why a legacy message set could not be converted. Mapped to Kafka codes in `kafka::legacy_versions`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyFormatError {
    /// A message is truncated, too small, or fails its CRC-32 (CORRUPT_MESSAGE).
    #[error("{0}")]
    Corrupt(String),
    /// A message breaks a rule of the format (INVALID_RECORD).
    #[error("{0}")]
    Invalid(String),
    /// A magic 1 message claims LogAppendTime, which only the broker may set (INVALID_TIMESTAMP).
    #[error("{0}")]
    InvalidTimestamp(String),
    /// zstd cannot be carried by magic 0 or 1 (UNSUPPORTED_COMPRESSION_TYPE).
    #[error("{0}")]
    UnsupportedCompression(String),
    /// An inflated payload or a converted batch exceeds the conversion bound
    /// (MESSAGE_TOO_LARGE).
    #[error("{0}")]
    TooLarge(String),
}

type Result<T> = std::result::Result<T, LegacyFormatError>;

/// Compression codecs, by their attribute code (the same in every format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Uncompressed.
    None = 0,
    /// gzip.
    Gzip = 1,
    /// snappy (raw, or in the xerial framing Java clients write).
    Snappy = 2,
    /// lz4 frame format.
    Lz4 = 3,
    /// zstd (v2 batches only).
    Zstd = 4,
}

impl Codec {
    fn from_attributes(attributes: i16) -> Result<Codec> {
        match attributes & 0x07 {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(LegacyFormatError::Corrupt(format!(
                "unknown compression type id {other}"
            ))),
        }
    }
}

const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const CONTROL_BATCH_BIT: i16 = 1 << 5;
/// offset i64 and size i32 in front of every legacy message.
const LEGACY_LOG_OVERHEAD_BYTES: usize = 12;
/// crc, magic, attributes, key length, value length.
const MESSAGE_V0_MIN_BYTES: usize = 4 + 1 + 1 + 4 + 4;
/// The same plus the timestamp.
const MESSAGE_V1_MIN_BYTES: usize = MESSAGE_V0_MIN_BYTES + 8;

/// The magic a Fetch version can carry: v0-1 magic 0, v2-3 magic 1, v4+ v2 batches (`None`).
pub fn fetch_magic(version: i16) -> Option<u8> {
    match version {
        ..=1 => Some(0),
        2..=3 => Some(1),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Up-conversion (Produce v0-2)
// ---------------------------------------------------------------------------------------------

/// The v2 records being built from legacy messages.
struct V2Builder {
    records: Vec<u8>,
    count: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
}

impl V2Builder {
    fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<()> {
        let base = *self.base_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let mut body =
            Vec::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
        body.push(0); // attributes
        put_varlong(&mut body, timestamp.wrapping_sub(base));
        put_varlong(&mut body, i64::from(self.count));
        put_bytes_varint(&mut body, key);
        put_bytes_varint(&mut body, value);
        put_varlong(&mut body, 0); // headers
        put_varlong(&mut self.records, body.len() as i64);
        self.records.extend_from_slice(&body);
        self.count += 1;
        if self.records.len() > limits::LEGACY_CONVERSION_BYTES_MAX {
            return Err(LegacyFormatError::TooLarge(format!(
                "the converted records exceed {} bytes",
                limits::LEGACY_CONVERSION_BYTES_MAX
            )));
        }
        Ok(())
    }
}

/// One legacy message, borrowed from its message set.
struct LegacyMessage<'a> {
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

/// Reads the message set `bytes` message by message, checking each one's framing and CRC.
fn for_each_message<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(LegacyMessage<'a>) -> Result<()>,
) -> Result<()> {
    let mut at = 0usize;
    while at < bytes.len() {
        if bytes.len() - at < LEGACY_LOG_OVERHEAD_BYTES {
            return Err(corrupt(
                "message set ends inside a message's offset and size",
            ));
        }
        let size = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        if size < MESSAGE_V0_MIN_BYTES as i32 {
            return Err(corrupt(format!(
                "Message size {size} is less than the minimum message overhead {MESSAGE_V0_MIN_BYTES}"
            )));
        }
        let start = at + LEGACY_LOG_OVERHEAD_BYTES;
        let end = start
            .checked_add(size as usize)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| corrupt("message set ends inside a message"))?;
        each(parse_message(&bytes[start..end])?)?;
        at = end;
    }
    Ok(())
}

fn parse_message(message: &[u8]) -> Result<LegacyMessage<'_>> {
    let stored_crc = u32::from_be_bytes(message[..4].try_into().expect("4 bytes"));
    let magic = message[4] as i8;
    let min = match magic {
        0 => MESSAGE_V0_MIN_BYTES,
        1 => MESSAGE_V1_MIN_BYTES,
        2 => {
            return Err(LegacyFormatError::Invalid(
                "Produce requests with version 2 or lower are only allowed to contain messages \
                 with magic 0 or 1"
                    .to_string(),
            ));
        }
        other => return Err(corrupt(format!("invalid message magic {other}"))),
    };
    if message.len() < min {
        return Err(corrupt(format!(
            "message of {} bytes is shorter than the magic {magic} minimum {min}",
            message.len()
        )));
    }
    let computed = crc32fast::hash(&message[4..]);
    if computed != stored_crc {
        return Err(corrupt(format!(
            "Message is corrupt (stored crc = {stored_crc}, computed crc = {computed})"
        )));
    }
    let attributes = message[5] as i8;
    let mut at = 6;
    let timestamp = if magic == 1 {
        at += 8;
        i64::from_be_bytes(message[6..14].try_into().expect("8 bytes"))
    } else {
        -1
    };
    let key = read_sized(message, &mut at)?;
    let value = read_sized(message, &mut at)?;
    if at != message.len() {
        return Err(corrupt("message has bytes after its value"));
    }
    Ok(LegacyMessage {
        magic,
        attributes,
        timestamp,
        key,
        value,
    })
}

fn read_sized<'a>(message: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>> {
    let len_bytes = message
        .get(*at..*at + 4)
        .ok_or_else(|| corrupt("message ends inside a length"))?;
    let len = i32::from_be_bytes(len_bytes.try_into().expect("4 bytes"));
    *at += 4;
    if len < 0 {
        return Ok(None);
    }
    let data = message
        .get(*at..*at + len as usize)
        .ok_or_else(|| corrupt("message ends inside its key or value"))?;
    *at += len as usize;
    Ok(Some(data))
}

/// Converts a Produce v0-2 partition's message set into one v2 batch (base offset 0, no
/// producer id, CreateTime). `Ok(None)` for an empty message set, which Kafka accepts without
/// appending anything. See the module documentation.
pub fn up_convert(message_set: &[u8]) -> Result<Option<Bytes>> {
    let mut builder = V2Builder {
        records: Vec::with_capacity(message_set.len() + message_set.len() / 4),
        count: 0,
        base_timestamp: None,
        max_timestamp: -1,
    };
    let mut codec = Codec::None;
    for_each_message(message_set, |message| {
        check_timestamp_type(&message)?;
        let message_codec = Codec::from_attributes(i16::from(message.attributes))?;
        if message_codec == Codec::None {
            return builder.push(message.timestamp, message.key, message.value);
        }
        if message_codec == Codec::Zstd {
            return Err(LegacyFormatError::UnsupportedCompression(
                "zstd compression is not supported by message formats 0 and 1".to_string(),
            ));
        }
        codec = message_codec;
        let Some(wrapped) = message.value else {
            return Err(LegacyFormatError::Invalid(
                "Found invalid compressed record set with null value".to_string(),
            ));
        };
        let inner = decompress(message_codec, wrapped, message.magic == 0)?;
        for_each_message(&inner, |record| {
            if Codec::from_attributes(i16::from(record.attributes))? != Codec::None {
                return Err(LegacyFormatError::Invalid(
                    "Compressed outer record should not have an inner record with a \
                     compression attribute set"
                        .to_string(),
                ));
            }
            if record.magic != message.magic {
                return Err(LegacyFormatError::Invalid(
                    "Log record magic does not match outer magic".to_string(),
                ));
            }
            check_timestamp_type(&record)?;
            builder.push(record.timestamp, record.key, record.value)
        })
    })?;
    if builder.count == 0 {
        return Ok(None);
    }
    let records = match codec {
        Codec::None => builder.records,
        codec => compress(codec, &builder.records, false)?,
    };
    let header = BatchHeader {
        base_offset: 0.into(),
        batch_length: ((BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES + records.len()) as i32)
            .into(),
        partition_leader_epoch: 0.into(),
        magic: 2,
        crc: 0.into(),
        attributes: (codec as i16).into(),
        last_offset_delta: (builder.count - 1).into(),
        base_timestamp: builder.base_timestamp.unwrap_or(-1).into(),
        max_timestamp: builder.max_timestamp.into(),
        producer_id: (-1).into(),
        producer_epoch: (-1).into(),
        base_sequence: (-1).into(),
        records_count: builder.count.into(),
    };
    let mut batch = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    batch.extend_from_slice(header.as_bytes());
    batch.extend_from_slice(&records);
    let crc = crate::storage::batch::compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Some(Bytes::from(batch)))
}

fn check_timestamp_type(message: &LegacyMessage<'_>) -> Result<()> {
    if message.magic > 0 && i16::from(message.attributes) & TIMESTAMP_TYPE_BIT != 0 {
        return Err(LegacyFormatError::InvalidTimestamp(
            "Invalid timestamp type in message: producers may not set LogAppendTime".to_string(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Down-conversion (Fetch v0-3)
// ---------------------------------------------------------------------------------------------

/// Converts whole v2 batches (`chunks`, as the storage returned them) into a legacy message
/// set of `magic`, dropping records before `fetch_offset` from uncompressed batches. Converted
/// batches are kept while the total stays within `limit_bytes`; the first is always kept. See
/// the module documentation.
pub fn down_convert(
    chunks: &[Bytes],
    magic: u8,
    fetch_offset: i64,
    limit_bytes: usize,
) -> Result<Bytes> {
    let data: std::borrow::Cow<'_, [u8]> = match chunks {
        [] => return Ok(Bytes::new()),
        [one] => std::borrow::Cow::Borrowed(one.as_ref()),
        many => std::borrow::Cow::Owned(many.concat()),
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + BATCH_HEADER_BYTES <= data.len() {
        let header = BatchHeader::view(&data[at..]).expect("length checked");
        let size = header.size_bytes();
        if size < BATCH_HEADER_BYTES as i64 || at as i64 + size > data.len() as i64 {
            break;
        }
        let batch = &data[at..at + size as usize];
        at += size as usize;
        let before = out.len();
        convert_batch(batch, magic, fetch_offset, &mut out)?;
        if before > 0 && out.len() > limit_bytes {
            out.truncate(before);
            break;
        }
    }
    Ok(Bytes::from(out))
}

fn convert_batch(batch: &[u8], magic: u8, fetch_offset: i64, out: &mut Vec<u8>) -> Result<()> {
    let header = BatchHeader::view(batch).expect("whole batch");
    let attributes = header.attributes.get();
    if attributes & CONTROL_BATCH_BIT != 0 {
        return Ok(());
    }
    let codec = Codec::from_attributes(attributes)?;
    if codec == Codec::Zstd {
        return Err(LegacyFormatError::UnsupportedCompression(
            "Down-conversion of zstandard-compressed batches is not supported".to_string(),
        ));
    }
    let log_append_time =
        (attributes & TIMESTAMP_TYPE_BIT != 0).then(|| header.max_timestamp.get());
    let base_offset = header.base_offset.get();
    let base_timestamp = header.base_timestamp.get();
    let payload = &batch[BATCH_HEADER_BYTES..];
    let inflated;
    let records = if codec == Codec::None {
        payload
    } else {
        inflated = decompress(codec, payload, false)?;
        &inflated[..]
    };
    let count = header.records_count.get().max(0);
    let mut reader = RecordReader {
        bytes: records,
        at: 0,
    };
    let message_attributes: i8 = if magic > 0 && log_append_time.is_some() {
        TIMESTAMP_TYPE_BIT as i8
    } else {
        0
    };
    let timestamp_of = |delta: i64| match (magic, log_append_time) {
        (0, _) => None,
        (_, Some(time)) => Some(time),
        (_, None) => Some(base_timestamp.wrapping_add(delta)),
    };
    if codec == Codec::None {
        for _ in 0..count {
            let record = reader.next_record()?;
            let offset = record_offset(base_offset, record.offset_delta)?;
            if offset < fetch_offset {
                continue;
            }
            write_message(
                out,
                offset,
                magic,
                message_attributes,
                timestamp_of(record.timestamp_delta),
                record.key,
                record.value,
            );
        }
        return Ok(());
    }
    // The record count comes from the stored header, so it only sizes the guess, bounded.
    let estimate = records.len() + (count as usize).saturating_mul(34);
    let mut inner = Vec::with_capacity(estimate.min(limits::LEGACY_CONVERSION_BYTES_MAX));
    let mut first_offset = None;
    let mut last_offset = base_offset;
    let mut max_timestamp = -1i64;
    for _ in 0..count {
        let record = reader.next_record()?;
        let offset = record_offset(base_offset, record.offset_delta)?;
        let first = *first_offset.get_or_insert(offset);
        last_offset = offset;
        let timestamp = timestamp_of(record.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp.unwrap_or(-1));
        let inner_offset = if magic > 0 { offset - first } else { offset };
        write_message(
            &mut inner,
            inner_offset,
            magic,
            message_attributes,
            timestamp,
            record.key,
            record.value,
        );
        if inner.len() > limits::LEGACY_CONVERSION_BYTES_MAX {
            return Err(LegacyFormatError::TooLarge(format!(
                "the down-converted batch exceeds {} bytes",
                limits::LEGACY_CONVERSION_BYTES_MAX
            )));
        }
    }
    if first_offset.is_none() {
        return Ok(());
    }
    let wrapped = compress(codec, &inner, magic == 0)?;
    let wrapper_timestamp = (magic > 0).then(|| log_append_time.unwrap_or(max_timestamp));
    write_message(
        out,
        last_offset,
        magic,
        message_attributes | codec as i8,
        wrapper_timestamp,
        None,
        Some(&wrapped),
    );
    Ok(())
}

/// A record's offset: its batch's base offset plus its offset delta, which Kafka reads as a
/// 32-bit varint. The delta comes from the producing client and is not checked when the batch
/// is stored, so a delta beyond 32 bits, or one that overflows the offset, makes the batch
/// corrupt here rather than wrapping (or, with overflow checks, panicking).
fn record_offset(base_offset: i64, offset_delta: i64) -> Result<i64> {
    i32::try_from(offset_delta)
        .ok()
        .and_then(|delta| base_offset.checked_add(i64::from(delta)))
        .ok_or_else(|| corrupt(format!("record offset delta {offset_delta} out of range")))
}

/// Appends one legacy message (offset, size, CRC-32 and body).
fn write_message(
    out: &mut Vec<u8>,
    offset: i64,
    magic: u8,
    attributes: i8,
    timestamp: Option<i64>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    out.put_i64(offset);
    let size_at = out.len();
    out.put_i32(0);
    let crc_at = out.len();
    out.put_u32(0);
    out.put_u8(magic);
    out.put_i8(attributes);
    if magic > 0 {
        out.put_i64(timestamp.unwrap_or(-1));
    }
    for field in [key, value] {
        match field {
            None => out.put_i32(-1),
            Some(bytes) => {
                out.put_i32(bytes.len() as i32);
                out.put_slice(bytes);
            }
        }
    }
    let size = (out.len() - crc_at) as i32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    let crc = crc32fast::hash(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

/// One v2 record, borrowed from its batch.
struct V2Record<'a> {
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

struct RecordReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> RecordReader<'a> {
    fn varlong(&mut self) -> Result<i64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| corrupt("record ends inside a varint"))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(corrupt("varint longer than 10 bytes"))
    }

    fn sized(&mut self) -> Result<Option<&'a [u8]>> {
        let len = self.varlong()?;
        if len < 0 {
            return Ok(None);
        }
        let end = self
            .at
            .checked_add(len as usize)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| corrupt("record ends inside a key, value or header"))?;
        let data = &self.bytes[self.at..end];
        self.at = end;
        Ok(Some(data))
    }

    fn next_record(&mut self) -> Result<V2Record<'a>> {
        let length = self.varlong()?;
        let end = usize::try_from(length)
            .ok()
            .and_then(|len| self.at.checked_add(len))
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| corrupt("record length out of range"))?;
        self.at += 1; // attributes
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varlong()?;
        let key = self.sized()?;
        let value = self.sized()?;
        if self.at > end {
            return Err(corrupt("record longer than its length"));
        }
        // Headers are dropped: the legacy formats cannot carry them.
        self.at = end;
        Ok(V2Record {
            timestamp_delta,
            offset_delta,
            key,
            value,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Codecs
// ---------------------------------------------------------------------------------------------

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const LZ4_FRAME_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];

/// Inflates `data`, at most `LEGACY_CONVERSION_BYTES_MAX` bytes. `lz4_broken_checksum` is for
/// magic 0 messages, whose lz4 frame header checksum Kafka computed over the wrong bytes
/// (KAFKA-3160): the checksum is put right before the frame is read.
fn decompress(codec: Codec, data: &[u8], lz4_broken_checksum: bool) -> Result<Vec<u8>> {
    let bound = limits::LEGACY_CONVERSION_BYTES_MAX;
    let too_large =
        || LegacyFormatError::TooLarge(format!("a compressed message inflates past {bound} bytes"));
    let bad = |what: &str, err: &dyn std::fmt::Display| corrupt(format!("{what}: {err}"));
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => {
            read_bounded(flate2::read::MultiGzDecoder::new(data), bound).map_err(|err| match err {
                None => too_large(),
                Some(err) => bad("invalid gzip data", &err),
            })
        }
        Codec::Snappy => {
            let mut out = Vec::new();
            if data.len() >= 16 && &data[..8] == XERIAL_MAGIC {
                let mut at = 16;
                while at < data.len() {
                    let len = data
                        .get(at..at + 4)
                        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
                        .ok_or_else(|| corrupt("snappy block length truncated"))?;
                    at += 4;
                    let block = data
                        .get(at..at.saturating_add(len))
                        .ok_or_else(|| corrupt("snappy block truncated"))?;
                    at += len;
                    snappy_block(block, &mut out, bound)?;
                }
            } else {
                snappy_block(data, &mut out, bound)?;
            }
            Ok(out)
        }
        Codec::Lz4 => {
            let fixed;
            let data = if lz4_broken_checksum {
                fixed = fix_lz4_header_checksum(data)?;
                &fixed[..]
            } else {
                data
            };
            read_bounded(lz4_flex::frame::FrameDecoder::new(data), bound).map_err(|err| match err {
                None => too_large(),
                Some(err) => bad("invalid lz4 data", &err),
            })
        }
        Codec::Zstd => Err(LegacyFormatError::UnsupportedCompression(
            "zstd compression is not supported by message formats 0 and 1".to_string(),
        )),
    }
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, bound: usize) -> Result<()> {
    let len = snap::raw::decompress_len(block)
        .map_err(|err| corrupt(format!("invalid snappy data: {err}")))?;
    if out.len() + len > bound {
        return Err(LegacyFormatError::TooLarge(format!(
            "a compressed message inflates past {bound} bytes"
        )));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|err| corrupt(format!("invalid snappy data: {err}")))?;
    Ok(())
}

/// Reads `reader` to the end; `Err(None)` when it yields more than `bound` bytes.
fn read_bounded(
    reader: impl Read,
    bound: usize,
) -> std::result::Result<Vec<u8>, Option<std::io::Error>> {
    let mut out = Vec::new();
    reader
        .take(bound as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Some)?;
    if out.len() > bound {
        return Err(None);
    }
    Ok(out)
}

fn compress(codec: Codec, data: &[u8], lz4_broken_checksum: bool) -> Result<Vec<u8>> {
    let failed = |err: std::io::Error| corrupt(format!("compression failed: {err}"));
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2 + 64),
                flate2::Compression::default(),
            );
            encoder.write_all(data).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        Codec::Snappy => snap::raw::Encoder::new()
            .compress_vec(data)
            .map_err(|err| corrupt(format!("snappy compression failed: {err}"))),
        Codec::Lz4 => {
            // Kafka's lz4 framing: 64 KiB independent blocks, no content checksum.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(data).map_err(failed)?;
            let mut frame = encoder
                .finish()
                .map_err(|err| corrupt(format!("lz4 compression failed: {err}")))?;
            if lz4_broken_checksum {
                break_lz4_header_checksum(&mut frame)?;
            }
            Ok(frame)
        }
        Codec::Zstd => Err(LegacyFormatError::UnsupportedCompression(
            "zstd compression is not supported by message formats 0 and 1".to_string(),
        )),
    }
}

/// Length of an lz4 frame descriptor (FLG, BD and the optional content size), checked.
fn lz4_descriptor_len(frame: &[u8]) -> Result<usize> {
    if frame.len() < 7 || frame[..4] != LZ4_FRAME_MAGIC {
        return Err(corrupt("invalid lz4 frame header"));
    }
    let content_size = frame[4] & 0x08 != 0;
    let len = if content_size { 10 } else { 2 };
    if frame.len() < 4 + len + 1 {
        return Err(corrupt("invalid lz4 frame header"));
    }
    Ok(len)
}

fn lz4_header_checksum(bytes: &[u8]) -> u8 {
    (twox_hash::XxHash32::oneshot(0, bytes) >> 8) as u8
}

/// Replaces a magic 0 frame's header checksum (computed over magic and descriptor) with the
/// standard one (descriptor only).
fn fix_lz4_header_checksum(frame: &[u8]) -> Result<Vec<u8>> {
    let len = lz4_descriptor_len(frame)?;
    let mut fixed = frame.to_vec();
    fixed[4 + len] = lz4_header_checksum(&frame[4..4 + len]);
    Ok(fixed)
}

/// Writes a magic 0 frame's header checksum the way Kafka 0.8-0.9 clients expect it.
fn break_lz4_header_checksum(frame: &mut [u8]) -> Result<()> {
    let len = lz4_descriptor_len(frame)?;
    frame[4 + len] = lz4_header_checksum(&frame[..4 + len]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn corrupt(reason: impl Into<String>) -> LegacyFormatError {
    LegacyFormatError::Corrupt(reason.into())
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn put_bytes_varint(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(bytes) => {
            put_varlong(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

/// Builders of legacy message sets, for tests here and in `tests/`.
pub mod build {
    use super::*;

    /// A record to build: timestamp, key and value.
    pub type TestRecord<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

    /// A legacy message set of `magic` holding `records` (the timestamp is ignored for magic
    /// 0), compressed into one wrapper when `codec` is not `None`. Offsets are 0.. (the broker
    /// assigns its own).
    pub fn message_set(magic: u8, codec: Codec, records: &[TestRecord<'_>]) -> Vec<u8> {
        let mut plain = Vec::new();
        for (i, (timestamp, key, value)) in records.iter().enumerate() {
            write_message(
                &mut plain,
                i as i64,
                magic,
                0,
                Some(*timestamp),
                *key,
                *value,
            );
        }
        if codec == Codec::None {
            return plain;
        }
        let wrapped = compress(codec, &plain, magic == 0).expect("test data compresses");
        let max_timestamp = records.iter().map(|r| r.0).max().unwrap_or(-1);
        let mut out = Vec::new();
        write_message(
            &mut out,
            records.len() as i64 - 1,
            magic,
            codec as i8,
            Some(max_timestamp),
            None,
            Some(&wrapped),
        );
        out
    }

    /// Reads a legacy message set back: `(offset, magic, attributes, timestamp, key, value)`
    /// per message, inner messages of wrappers expanded (their offsets as stored).
    #[allow(clippy::type_complexity)]
    pub fn read(bytes: &[u8]) -> Result<Vec<(i64, i8, i8, i64, Option<Vec<u8>>, Option<Vec<u8>>)>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + LEGACY_LOG_OVERHEAD_BYTES <= bytes.len() {
            let offset = i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            let size = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
            let end = at + LEGACY_LOG_OVERHEAD_BYTES + size.max(0) as usize;
            if end > bytes.len() {
                break;
            }
            let message = parse_message(&bytes[at + LEGACY_LOG_OVERHEAD_BYTES..end])?;
            let codec = Codec::from_attributes(i16::from(message.attributes))?;
            if codec == Codec::None {
                out.push((
                    offset,
                    message.magic,
                    message.attributes,
                    message.timestamp,
                    message.key.map(<[u8]>::to_vec),
                    message.value.map(<[u8]>::to_vec),
                ));
            } else {
                let inner =
                    decompress(codec, message.value.unwrap_or_default(), message.magic == 0)?;
                out.extend(read(&inner)?);
            }
            at = end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::build::{self, message_set, read};
    use super::*;

    #[allow(clippy::type_complexity)]
    fn v2_records(batch: &[u8]) -> Vec<(i64, i64, Option<Vec<u8>>, Option<Vec<u8>>)> {
        let header = BatchHeader::view(batch).unwrap();
        let codec = Codec::from_attributes(header.attributes.get()).unwrap();
        let records = decompress(codec, &batch[BATCH_HEADER_BYTES..], false).unwrap();
        let mut reader = RecordReader {
            bytes: &records,
            at: 0,
        };
        (0..header.records_count.get())
            .map(|_| {
                let r = reader.next_record().unwrap();
                (
                    header.base_offset.get() + r.offset_delta,
                    header.base_timestamp.get() + r.timestamp_delta,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                )
            })
            .collect()
    }

    /// Found by the `legacy_format` fuzz target (tests/fuzz): a stored batch whose record
    /// carries an offset delta beyond 32 bits overflowed `base_offset + delta` (a panic with
    /// overflow checks, a wrapped offset without). It is a corrupt batch now.
    #[test]
    fn down_conversion_refuses_offset_deltas_beyond_32_bits() {
        let mut records = vec![0u8]; // attributes
        put_varlong(&mut records, 0); // timestamp delta
        put_varlong(&mut records, i64::MAX); // offset delta
        put_varlong(&mut records, -1); // null key
        put_varlong(&mut records, -1); // null value
        put_varlong(&mut records, 0); // headers
        let mut body = Vec::new();
        put_varlong(&mut body, records.len() as i64);
        body.extend_from_slice(&records);
        let mut batch = crate::storage::batch::seal_batch(&body, 1, 0, (-1, -1, -1), 1_000);
        crate::storage::batch::patch_base_offset(&mut batch, 5);
        for magic in [0, 1] {
            let result = down_convert(&[Bytes::from(batch.clone())], magic, 0, 1 << 20);
            assert!(
                matches!(result, Err(LegacyFormatError::Corrupt(_))),
                "{result:?}"
            );
        }
        assert_eq!(
            record_offset(5, i64::from(i32::MAX)),
            Ok(5 + i64::from(i32::MAX))
        );
        assert!(record_offset(i64::MAX - 1, 2).is_err());
        assert!(record_offset(0, i64::from(i32::MIN) - 1).is_err());

        // The fuzzer's input, minimised: stored bytes down-converted to magic 1.
        let stored: &[u8] = &[
            0xa6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x67, 0xff, 0xff,
            0xff, 0x00, 0x02, 0x83, 0x4e, 0x5c, 0x69, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x01, 0xa2, 0x3d, 0x5f, 0x0a, 0x03, 0x00, 0x00, 0x01, 0xa2, 0x3d, 0x5f, 0x0a,
            0x12, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0x00, 0x00, 0x00, 0x04, 0x2c, 0x80, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0x01, 0xff, 0x00, 0x00, 0xff, 0x00, 0x00,
            0x00, 0x00, 0x01, 0x00, 0x00, 0x3d, 0x5f, 0x40, 0x85, 0x00, 0x64, 0x2d, 0x74, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x35, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00,
            0x00, 0x00, 0x85,
        ];
        let result = down_convert(&[Bytes::copy_from_slice(stored)], 1, 0, 1 << 20);
        assert!(
            matches!(result, Err(LegacyFormatError::Corrupt(_))),
            "{result:?}"
        );
    }

    #[test]
    fn up_conversion_keeps_keys_values_and_timestamps_for_every_codec() {
        let records: Vec<build::TestRecord<'_>> = vec![
            (1_000, Some(b"k0"), Some(b"v0")),
            (900, None, Some(b"v1")),
            (1_200, Some(b"k2"), None),
        ];
        for magic in [0u8, 1] {
            for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4] {
                let set = message_set(magic, codec, &records);
                let batch = up_convert(&set).unwrap().unwrap();
                let (size, header) = crate::storage::batch::validate_one(&batch, 1 << 20).unwrap();
                assert_eq!(size, batch.len());
                assert_eq!(
                    header.attributes.get() & 7,
                    codec as i16,
                    "{magic} {codec:?}"
                );
                assert_eq!(header.producer_id.get(), -1);
                let got = v2_records(&batch);
                assert_eq!(got.len(), 3);
                for (i, (offset, timestamp, key, value)) in got.into_iter().enumerate() {
                    assert_eq!(offset, i as i64);
                    let want_ts = if magic == 0 { -1 } else { records[i].0 };
                    assert_eq!(timestamp, want_ts, "magic {magic} {codec:?}");
                    assert_eq!(key.as_deref(), records[i].1);
                    assert_eq!(value.as_deref(), records[i].2);
                }
                let want_max = if magic == 0 { -1 } else { 1_200 };
                assert_eq!(header.max_timestamp.get(), want_max);
            }
        }
    }

    #[test]
    fn corrupt_messages_are_refused() {
        let set = message_set(1, Codec::None, &[(5, None, Some(b"value"))]);
        let mut flipped = set.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            up_convert(&flipped),
            Err(LegacyFormatError::Corrupt(_))
        ));
        assert!(matches!(
            up_convert(&set[..set.len() - 1]),
            Err(LegacyFormatError::Corrupt(_))
        ));
        let mut small = set.clone();
        small[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert!(matches!(
            up_convert(&small),
            Err(LegacyFormatError::Corrupt(_))
        ));
        // A corrupt inner message of a compressed wrapper.
        let mut plain = Vec::new();
        write_message(&mut plain, 0, 1, 0, Some(1), None, Some(b"x"));
        let last = plain.len() - 1;
        plain[last] ^= 1;
        let mut wrapper = Vec::new();
        let gz = compress(Codec::Gzip, &plain, false).unwrap();
        write_message(
            &mut wrapper,
            0,
            1,
            Codec::Gzip as i8,
            Some(1),
            None,
            Some(&gz),
        );
        assert!(matches!(
            up_convert(&wrapper),
            Err(LegacyFormatError::Corrupt(_))
        ));
        // Nested compression.
        let inner = message_set(1, Codec::Gzip, &[(1, None, Some(b"x"))]);
        let gz = compress(Codec::Gzip, &inner, false).unwrap();
        let mut nested = Vec::new();
        write_message(
            &mut nested,
            0,
            1,
            Codec::Gzip as i8,
            Some(1),
            None,
            Some(&gz),
        );
        assert!(matches!(
            up_convert(&nested),
            Err(LegacyFormatError::Invalid(_))
        ));
        // zstd and LogAppendTime from a producer.
        let mut zstd = Vec::new();
        write_message(
            &mut zstd,
            0,
            1,
            Codec::Zstd as i8,
            Some(1),
            None,
            Some(b"x"),
        );
        assert!(matches!(
            up_convert(&zstd),
            Err(LegacyFormatError::UnsupportedCompression(_))
        ));
        let mut lat = Vec::new();
        write_message(
            &mut lat,
            0,
            1,
            TIMESTAMP_TYPE_BIT as i8,
            Some(1),
            None,
            Some(b"x"),
        );
        assert!(matches!(
            up_convert(&lat),
            Err(LegacyFormatError::InvalidTimestamp(_))
        ));
        assert_eq!(up_convert(&[]).unwrap(), None);
        // A compressed wrapper without a value.
        let mut empty_wrapper = Vec::new();
        write_message(
            &mut empty_wrapper,
            0,
            1,
            Codec::Gzip as i8,
            Some(1),
            None,
            None,
        );
        assert!(matches!(
            up_convert(&empty_wrapper),
            Err(LegacyFormatError::Invalid(_))
        ));
        // A v2 batch in a legacy produce.
        let v2 = crate::storage::batch::build_test_batch(1, 4, 0, 1);
        assert!(matches!(
            up_convert(&v2),
            Err(LegacyFormatError::Invalid(_))
        ));
    }

    #[test]
    fn decompression_is_bounded() {
        let zeros = vec![0u8; limits::LEGACY_CONVERSION_BYTES_MAX + 1];
        let gz = compress(Codec::Gzip, &zeros, false).unwrap();
        assert!(matches!(
            decompress(Codec::Gzip, &gz, false),
            Err(LegacyFormatError::TooLarge(_))
        ));
    }

    fn stored_batch(codec: Codec, log_append_time: Option<i64>) -> Bytes {
        let set = message_set(
            1,
            codec,
            &[
                (10, Some(b"a"), Some(b"1")),
                (20, Some(b"b"), Some(b"2")),
                (30, None, Some(b"3")),
            ],
        );
        let mut batch = up_convert(&set).unwrap().unwrap().to_vec();
        crate::storage::batch::patch_base_offset(&mut batch, 100);
        if let Some(time) = log_append_time {
            crate::storage::batch::patch_log_append_time(&mut batch, time);
        }
        Bytes::from(batch)
    }

    #[test]
    fn down_conversion_to_both_magics() {
        for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4] {
            for magic in [0u8, 1] {
                for lat in [None, Some(777)] {
                    let batch = stored_batch(codec, lat);
                    let converted = down_convert(&[batch], magic, 101, usize::MAX).unwrap();
                    let messages = read(&converted).unwrap();
                    // Uncompressed batches drop the record before the fetch offset.
                    let skip = usize::from(codec == Codec::None);
                    assert_eq!(messages.len(), 3 - skip, "{codec:?} {magic}");
                    for (i, m) in messages.iter().enumerate() {
                        let n = i + skip;
                        let (offset, m_magic, attributes, timestamp, _, value) = m;
                        assert_eq!(*m_magic as u8, magic);
                        let want_offset = match (codec, magic) {
                            (Codec::None, _) | (_, 0) => 100 + n as i64,
                            _ => n as i64,
                        };
                        assert_eq!(*offset, want_offset, "{codec:?} {magic}");
                        let want_ts = match (magic, lat) {
                            (0, _) => -1,
                            (_, Some(t)) => t,
                            _ => 10 * (n as i64 + 1),
                        };
                        assert_eq!(*timestamp, want_ts);
                        assert_eq!(
                            *attributes as i16 & TIMESTAMP_TYPE_BIT != 0,
                            magic == 1 && lat.is_some()
                        );
                        assert_eq!(value.as_deref(), Some(format!("{}", n + 1).as_bytes()));
                    }
                    if codec != Codec::None {
                        // The wrapper carries the last offset and the codec.
                        let wrapper_offset = i64::from_be_bytes(converted[..8].try_into().unwrap());
                        assert_eq!(wrapper_offset, 102);
                        assert_eq!(converted[17] & 7, codec as u8);
                    }
                }
            }
        }
    }

    #[test]
    fn down_conversion_limit_keeps_whole_batches_and_at_least_one() {
        let a = stored_batch(Codec::None, None);
        let one = down_convert(std::slice::from_ref(&a), 1, 0, usize::MAX).unwrap();
        let two = down_convert(&[a.clone(), a.clone()], 1, 0, usize::MAX).unwrap();
        assert_eq!(two.len(), one.len() * 2);
        let limited = down_convert(&[a.clone(), a.clone()], 1, 0, one.len() + 5).unwrap();
        assert_eq!(limited.len(), one.len());
        let tiny = down_convert(&[a.clone(), a], 1, 0, 1).unwrap();
        assert_eq!(tiny.len(), one.len());
    }

    #[test]
    fn a_lying_record_count_is_corrupt_not_a_huge_allocation() {
        for codec in [Codec::None, Codec::Gzip] {
            let mut batch = stored_batch(codec, None).to_vec();
            batch[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
            batch[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
            let crc = crate::storage::batch::compute_crc(&batch);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
            assert!(matches!(
                down_convert(&[Bytes::from(batch)], 1, 0, usize::MAX),
                Err(LegacyFormatError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn lz4_magic0_checksum_round_trips() {
        let data = b"hello hello hello hello".repeat(10);
        let frame = compress(Codec::Lz4, &data, true).unwrap();
        assert!(decompress(Codec::Lz4, &frame, false).is_err());
        assert_eq!(decompress(Codec::Lz4, &frame, true).unwrap(), data);
    }
}
