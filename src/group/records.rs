//! The records of `__consumer_offsets`, in Kafka's own formats, and the v2 batches that carry
//! them.
//!
//! Owner: pure functions, used by the group coordinator on the shard that owns the group's
//! `__consumer_offsets` partition, when it writes commits and group metadata and when it
//! replays the partition on first use.
//!
//! Formats (Kafka's `OffsetCommitKey`/`OffsetCommitValue` and `GroupMetadataKey`/
//! `GroupMetadataValue`, big-endian, non-flexible versions):
//! - offset key, version 1: `group: string, topic: string, partition: int32`;
//! - offset value, version 3: `offset: int64, leader_epoch: int32, metadata: string,
//!   commit_timestamp: int64`; version 1 (`offset, metadata, commit_timestamp,
//!   expire_timestamp: int64`, no leader epoch) when the commit carried its own retention time
//!   (OffsetCommit v2 to v4), as Kafka writes it;
//! - group key, version 2: `group: string`;
//! - group value, version 3: `protocol_type: string, generation: int32, protocol: nullable
//!   string, leader: nullable string, current_state_timestamp: int64, members: [member_id,
//!   group_instance_id (nullable), client_id, client_host, rebalance_timeout: int32,
//!   session_timeout: int32, subscription: bytes, assignment: bytes]`.
//!
//! A record with a null value is a tombstone (a deleted offset or group). Batches are written
//! uncompressed; plain commits carry no producer id, transactional offset commits
//! (TxnOffsetCommit) are transactional batches of the producer, and the partition's commit or
//! abort marker (a control batch) decides whether they count. Replay skips compressed batches,
//! which only a client producing straight into the internal topic could have written.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use zerocopy::IntoBytes;

use crate::storage::batch::{BatchHeader, compute_crc};

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;
const OFFSET_VALUE_VERSION_WITH_EXPIRY: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;
const BATCH_HEADER_BYTES: usize = 61;
const BATCH_LENGTH_OVERHEAD: usize = 12;
const CRC_FIELD_OFFSET: usize = 17;
const COMPRESSION_MASK: i16 = 0x07;
const CONTROL_BIT: i16 = 0x20;

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    /// The offset.
    pub offset: i64,
    /// The leader epoch, -1 when unknown.
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
    /// When it was committed (ms since the epoch).
    pub commit_timestamp: i64,
    /// When it expires (ms since the epoch), if the commit asked for its own retention time
    /// (OffsetCommit v2 to v4); otherwise `offsets.retention.minutes` applies.
    pub expire_timestamp: Option<i64>,
}

/// One member as stored in the group metadata value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    /// Member id.
    pub member_id: String,
    /// Static membership instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// The metadata of the selected protocol.
    pub subscription: Bytes,
    /// The assignment.
    pub assignment: Bytes,
}

/// A group's metadata as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    /// Protocol type ("consumer", "connect", ...); empty for groups that only store offsets.
    pub protocol_type: String,
    /// Generation.
    pub generation: i32,
    /// The selected protocol.
    pub protocol: Option<String>,
    /// The leader's member id.
    pub leader: Option<String>,
    /// When the state last changed.
    pub state_timestamp: i64,
    /// Members of the generation.
    pub members: Vec<StoredMember>,
}

/// A decoded record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// A committed offset, or its tombstone (`None`).
    Offset {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The value; `None` deletes the offset.
        value: Option<OffsetValue>,
    },
    /// A group's metadata, or its tombstone (`None`).
    Group {
        /// The group.
        group: String,
        /// The value; `None` deletes the group.
        value: Option<GroupValue>,
    },
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The bytes end early or hold an impossible length.
    #[error("truncated or malformed __consumer_offsets record")]
    Malformed,
    /// A key version this broker does not know.
    #[error("unknown __consumer_offsets key version {0}")]
    UnknownKeyVersion(i16),
}

fn put_string(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len().min(i16::MAX as usize) as i16);
    out.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

fn get_i16(buf: &mut &[u8]) -> Result<i16, RecordError> {
    (buf.remaining() >= 2)
        .then(|| buf.get_i16())
        .ok_or(RecordError::Malformed)
}

fn get_i32(buf: &mut &[u8]) -> Result<i32, RecordError> {
    (buf.remaining() >= 4)
        .then(|| buf.get_i32())
        .ok_or(RecordError::Malformed)
}

fn get_i64(buf: &mut &[u8]) -> Result<i64, RecordError> {
    (buf.remaining() >= 8)
        .then(|| buf.get_i64())
        .ok_or(RecordError::Malformed)
}

fn get_nullable_string(buf: &mut &[u8]) -> Result<Option<String>, RecordError> {
    let len = get_i16(buf)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(RecordError::Malformed);
    }
    let s = String::from_utf8_lossy(&buf[..len]).into_owned();
    buf.advance(len);
    Ok(Some(s))
}

fn get_string(buf: &mut &[u8]) -> Result<String, RecordError> {
    Ok(get_nullable_string(buf)?.unwrap_or_default())
}

fn get_bytes(buf: &mut &[u8]) -> Result<Bytes, RecordError> {
    let len = get_i32(buf)?;
    if len < 0 {
        return Ok(Bytes::new());
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(RecordError::Malformed);
    }
    let b = Bytes::copy_from_slice(&buf[..len]);
    buf.advance(len);
    Ok(b)
}

/// The key of a committed offset.
pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut out, group);
    put_string(&mut out, topic);
    out.put_i32(partition);
    out.freeze()
}

/// The value of a committed offset.
pub fn offset_value(value: &OffsetValue) -> Bytes {
    let mut out = BytesMut::new();
    if let Some(expire_timestamp) = value.expire_timestamp {
        // Only version 1 has an expire timestamp (and no leader epoch), as in Kafka.
        out.put_i16(OFFSET_VALUE_VERSION_WITH_EXPIRY);
        out.put_i64(value.offset);
        put_string(&mut out, &value.metadata);
        out.put_i64(value.commit_timestamp);
        out.put_i64(expire_timestamp);
        return out.freeze();
    }
    out.put_i16(OFFSET_VALUE_VERSION);
    out.put_i64(value.offset);
    out.put_i32(value.leader_epoch);
    put_string(&mut out, &value.metadata);
    out.put_i64(value.commit_timestamp);
    out.freeze()
}

/// The key of a group's metadata.
pub fn group_key(group: &str) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(GROUP_KEY_VERSION);
    put_string(&mut out, group);
    out.freeze()
}

/// The value of a group's metadata.
pub fn group_value(value: &GroupValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut out, &value.protocol_type);
    out.put_i32(value.generation);
    put_nullable_string(&mut out, value.protocol.as_deref());
    put_nullable_string(&mut out, value.leader.as_deref());
    out.put_i64(value.state_timestamp);
    out.put_i32(value.members.len() as i32);
    for m in &value.members {
        put_string(&mut out, &m.member_id);
        put_nullable_string(&mut out, m.instance_id.as_deref());
        put_string(&mut out, &m.client_id);
        put_string(&mut out, &m.client_host);
        out.put_i32(m.rebalance_timeout_ms);
        out.put_i32(m.session_timeout_ms);
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out.freeze()
}

fn decode_offset_value(mut buf: &[u8]) -> Result<OffsetValue, RecordError> {
    let version = get_i16(&mut buf)?;
    let offset = get_i64(&mut buf)?;
    let leader_epoch = if version >= 3 { get_i32(&mut buf)? } else { -1 };
    let metadata = get_string(&mut buf)?;
    let commit_timestamp = get_i64(&mut buf)?;
    let expire_timestamp = if version == OFFSET_VALUE_VERSION_WITH_EXPIRY {
        Some(get_i64(&mut buf)?)
    } else {
        None
    };
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
        expire_timestamp,
    })
}

fn decode_group_value(mut buf: &[u8]) -> Result<GroupValue, RecordError> {
    let version = get_i16(&mut buf)?;
    if version >= 4 {
        // Flexible versions (written by newer Kafka) are not produced by this broker.
        return Err(RecordError::UnknownKeyVersion(version));
    }
    let protocol_type = get_string(&mut buf)?;
    let generation = get_i32(&mut buf)?;
    let protocol = get_nullable_string(&mut buf)?;
    let leader = get_nullable_string(&mut buf)?;
    let state_timestamp = if version >= 2 { get_i64(&mut buf)? } else { -1 };
    let count = get_i32(&mut buf)?.max(0);
    let mut members = Vec::new();
    for _ in 0..count {
        let member_id = get_string(&mut buf)?;
        let instance_id = if version >= 3 {
            get_nullable_string(&mut buf)?
        } else {
            None
        };
        let client_id = get_string(&mut buf)?;
        let client_host = get_string(&mut buf)?;
        let rebalance_timeout_ms = if version >= 1 { get_i32(&mut buf)? } else { -1 };
        let session_timeout_ms = get_i32(&mut buf)?;
        let subscription = get_bytes(&mut buf)?;
        let assignment = get_bytes(&mut buf)?;
        members.push(StoredMember {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

/// Decodes one record's key and value.
pub fn decode_record(key: &[u8], value: Option<&[u8]>) -> Result<OffsetsRecord, RecordError> {
    let mut k = key;
    let version = get_i16(&mut k)?;
    match version {
        0 | 1 => {
            let group = get_string(&mut k)?;
            let topic = get_string(&mut k)?;
            let partition = get_i32(&mut k)?;
            let value = value.map(decode_offset_value).transpose()?;
            Ok(OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        2 => {
            let group = get_string(&mut k)?;
            let value = value.map(decode_group_value).transpose()?;
            Ok(OffsetsRecord::Group { group, value })
        }
        other => Err(RecordError::UnknownKeyVersion(other)),
    }
}

fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.put_u8(z as u8);
            return;
        }
        out.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn get_varint(buf: &mut &[u8]) -> Result<i64, RecordError> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return Err(RecordError::Malformed);
        }
        let b = buf.get_u8();
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err(RecordError::Malformed)
}

/// One uncompressed v2 batch holding `records` (key, value or tombstone), timestamped `now_ms`.
pub fn build_batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Bytes {
    build_batch_as(records, now_ms, None)
}

/// One uncompressed v2 batch holding `records`, written as part of the transaction of
/// `(producer_id, producer_epoch)` when `transaction` is given (the transactional attribute
/// bit set, no sequence), as Kafka writes transactional offset commits.
pub fn build_batch_as(
    records: &[(Bytes, Option<Bytes>)],
    now_ms: i64,
    transaction: Option<(i64, i16)>,
) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = BytesMut::new();
    let mut rec = BytesMut::new();
    for (i, (key, value)) in records.iter().enumerate() {
        rec.clear();
        rec.put_u8(0); // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        put_varint(&mut rec, key.len() as i64);
        rec.put_slice(key);
        match value {
            Some(v) => {
                put_varint(&mut rec, v.len() as i64);
                rec.put_slice(v);
            }
            None => put_varint(&mut rec, -1),
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.put_slice(&rec);
    }
    let count = records.len() as i32;
    let header = BatchHeader {
        base_offset: 0.into(),
        batch_length: ((BATCH_HEADER_BYTES - BATCH_LENGTH_OVERHEAD + body.len()) as i32).into(),
        partition_leader_epoch: 0.into(),
        magic: 2,
        crc: 0.into(),
        attributes: if transaction.is_some() {
            TRANSACTIONAL_BIT.into()
        } else {
            0.into()
        },
        last_offset_delta: (count - 1).into(),
        base_timestamp: now_ms.into(),
        max_timestamp: now_ms.into(),
        producer_id: transaction.map_or(-1, |t| t.0).into(),
        producer_epoch: transaction.map_or(-1, |t| t.1).into(),
        base_sequence: (-1).into(),
        records_count: count.into(),
    };
    let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.put_slice(header.as_bytes());
    out.put_slice(&body);
    let crc = compute_crc(&out);
    out[CRC_FIELD_OFFSET..CRC_FIELD_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// One decoded record of a scan, with what its batch says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEvent {
    /// A record of a plain batch: it takes effect at once.
    Record(OffsetsRecord),
    /// A record of a transactional batch of `producer_id`: it takes effect when that producer's
    /// commit marker follows, and never if an abort marker does.
    Transactional {
        /// The producer that wrote it.
        producer_id: i64,
        /// Its epoch.
        producer_epoch: i16,
        /// The record.
        record: OffsetsRecord,
    },
    /// A control batch: the end of `producer_id`'s transaction in this partition.
    Marker {
        /// The producer whose transaction ended.
        producer_id: i64,
        /// Commit (true) or abort (false).
        commit: bool,
    },
}

/// What a scan of concatenated batches found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The decodable records and markers, in log order.
    pub events: Vec<ScanEvent>,
    /// The offset after the last whole batch seen (where the next read starts), if any.
    pub next_offset: Option<i64>,
    /// Records or batches skipped (compressed, undecodable).
    pub skipped: usize,
}

/// The attribute bit of a transactional batch.
pub const TRANSACTIONAL_BIT: i16 = 0x10;

/// The type of a control record (Kafka's `ControlRecordType`): 0 abort, 1 commit; `None` for
/// anything else (unknown types are ignored, as Kafka does).
pub fn control_record_commit(key: &[u8]) -> Option<bool> {
    let mut k = key;
    let _version = get_i16(&mut k).ok()?;
    match get_i16(&mut k).ok()? {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// Walks the whole uncompressed v2 batches in `bytes`, calling `visit` with each batch header
/// and each record's key and value (`None` for a null value); compressed batches are counted
/// as skipped. Returns the offset after the last whole batch, if any. A trailing partial batch
/// is ignored.
pub fn walk_batches(
    mut bytes: &[u8],
    skipped: &mut usize,
    mut visit: impl FnMut(&BatchHeader, &[u8], Option<&[u8]>),
) -> Option<i64> {
    let mut next_offset = None;
    while bytes.len() >= BATCH_HEADER_BYTES {
        let Some(header) = BatchHeader::view(&bytes[..BATCH_HEADER_BYTES]) else {
            break;
        };
        let total = header.size_bytes();
        if total < BATCH_HEADER_BYTES as i64 || total as usize > bytes.len() {
            break;
        }
        let total = total as usize;
        next_offset = Some(header.last_offset() + 1);
        let count = header.records_count.get();
        if header.attributes.get() & COMPRESSION_MASK != 0 {
            *skipped += 1;
        } else {
            let mut body = &bytes[BATCH_HEADER_BYTES..total];
            for _ in 0..count.max(0) {
                match frame_one(&mut body) {
                    Ok(Some((key, value))) => visit(header, key, value),
                    Ok(None) => *skipped += 1,
                    Err(_) => {
                        *skipped += 1;
                        break;
                    }
                }
            }
        }
        bytes = &bytes[total..];
    }
    next_offset
}

/// Decodes the records of whole v2 batches in `bytes`, appending to `scan`. A trailing partial
/// batch is ignored.
pub fn scan_batches(bytes: &[u8], scan: &mut Scan) {
    let mut framing_skipped = 0;
    let mut skipped = 0;
    let events = &mut scan.events;
    let next = walk_batches(bytes, &mut framing_skipped, |header, key, value| {
        let attributes = header.attributes.get();
        let producer_id = header.producer_id.get();
        if attributes & CONTROL_BIT != 0 {
            if let Some(commit) = control_record_commit(key) {
                events.push(ScanEvent::Marker {
                    producer_id,
                    commit,
                });
            }
            return;
        }
        let Ok(record) = decode_record(key, value) else {
            skipped += 1;
            return;
        };
        if attributes & TRANSACTIONAL_BIT != 0 && producer_id >= 0 {
            events.push(ScanEvent::Transactional {
                producer_id,
                producer_epoch: header.producer_epoch.get(),
                record,
            });
        } else {
            events.push(ScanEvent::Record(record));
        }
    });
    scan.skipped += skipped + framing_skipped;
    if next.is_some() {
        scan.next_offset = next;
    }
}

/// Frames one record of a batch body: its key and value; `Ok(None)` when the record frames
/// but its key does not.
#[allow(clippy::type_complexity)]
fn frame_one<'a>(body: &mut &'a [u8]) -> Result<Option<(&'a [u8], Option<&'a [u8]>)>, RecordError> {
    let len = get_varint(body)?;
    if len < 0 || len as usize > body.len() {
        return Err(RecordError::Malformed);
    }
    let mut rec: &'a [u8] = &body[..len as usize];
    body.advance(len as usize);
    if !rec.has_remaining() {
        return Err(RecordError::Malformed);
    }
    rec.advance(1); // attributes
    get_varint(&mut rec)?; // timestamp delta
    get_varint(&mut rec)?; // offset delta
    let key_len = get_varint(&mut rec)?;
    if key_len < 0 || key_len as usize > rec.len() {
        return Ok(None);
    }
    let key = &rec[..key_len as usize];
    rec.advance(key_len as usize);
    let value_len = get_varint(&mut rec)?;
    let value = if value_len < 0 {
        None
    } else {
        if value_len as usize > rec.len() {
            return Err(RecordError::Malformed);
        }
        Some(&rec[..value_len as usize])
    };
    Ok(Some((key, value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::validate_one;

    #[test]
    fn offset_values_with_an_expire_timestamp_use_version_1() {
        let value = OffsetValue {
            offset: 9,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp: 1000,
            expire_timestamp: Some(61_000),
        };
        let bytes = offset_value(&value);
        assert_eq!(&bytes[..2], &1i16.to_be_bytes());
        // version, offset, metadata (2 + 1), commit and expire timestamps.
        assert_eq!(bytes.len(), 2 + 8 + 3 + 8 + 8);
        assert_eq!(decode_offset_value(&bytes).unwrap(), value);
        let plain = OffsetValue {
            leader_epoch: 4,
            expire_timestamp: None,
            ..value
        };
        let bytes = offset_value(&plain);
        assert_eq!(&bytes[..2], &3i16.to_be_bytes());
        assert_eq!(decode_offset_value(&bytes).unwrap(), plain);
    }

    #[test]
    fn records_round_trip_through_a_batch() {
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp: 1000,
            expire_timestamp: None,
        };
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp: 5,
            members: vec![StoredMember {
                member_id: "m-1".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let batch = build_batch(
            &[
                (offset_key("g", "t", 2), Some(offset_value(&offset))),
                (group_key("g"), Some(group_value(&group))),
                (offset_key("g", "t", 3), None),
            ],
            1000,
        );
        let (size, header) = validate_one(&batch, 1 << 20).unwrap();
        assert_eq!(size, batch.len());
        assert_eq!(header.records_count.get(), 3);
        let mut scan = Scan::default();
        let mut two = batch.to_vec();
        two.extend_from_slice(&batch[..10]);
        scan_batches(&two, &mut scan);
        assert_eq!(scan.next_offset, Some(3));
        assert_eq!(scan.skipped, 0);
        assert_eq!(
            scan.events,
            vec![
                ScanEvent::Record(OffsetsRecord::Offset {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 2,
                    value: Some(offset),
                }),
                ScanEvent::Record(OffsetsRecord::Group {
                    group: "g".into(),
                    value: Some(group),
                }),
                ScanEvent::Record(OffsetsRecord::Offset {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 3,
                    value: None,
                }),
            ]
        );
    }

    #[test]
    fn garbage_does_not_panic() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = decode_record(&junk, Some(&junk));
            let mut scan = Scan::default();
            scan_batches(&junk, &mut scan);
        }
    }
}
