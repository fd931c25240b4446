//! The wire schemas of Produce v0-2, Fetch v0-3 and ListOffsets v0, which the `kafka-protocol`
//! crate no longer has (it is generated from Kafka 4's message specs, which dropped them; Kafka 3.7 still
//! serves them).
//!
//! Owner: pure functions, called by the Produce and Fetch handlers on the connection's shard,
//! only for these old versions.
//!
//! The old requests differ from the oldest version the crate knows only by fields missing at
//! the front of the body, so they are decoded by writing the missing fields with the values
//! Kafka assumes for the old versions and decoding the result at that newer version:
//! - Produce v0-2 is Produce v3 without `transactional_id` (null);
//! - Fetch v0-2 is Fetch v3 without `max_bytes` (no limit), and Fetch v3 is Fetch v4 without
//!   `isolation_level` (read uncommitted).
//!
//! ListOffsets v0 has a field of its own (`max_num_offsets`) and answers a list of offsets, so
//! its request and response are read and written here by hand.
//!
//! Produce v0-2 responses are encoded here; Fetch responses of every version are encoded by the
//! Fetch handler itself.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, FetchRequest, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::Decodable;

use crate::kafka::dispatch::{HandlerOutcome, Request, ResponseFrame};
use crate::kafka::legacy_format::LegacyFormatError;

/// The oldest version of `key` served through this module, for APIs that have one.
pub fn oldest_version(key: ApiKey) -> Option<i16> {
    match key {
        ApiKey::Produce | ApiKey::Fetch | ApiKey::ListOffsets => Some(0),
        _ => None,
    }
}

fn malformed(request: &Request, reason: impl std::fmt::Display) -> HandlerOutcome {
    HandlerOutcome::Close(format!(
        "malformed {:?} v{} request: {reason}",
        request.api_key,
        request.version()
    ))
}

/// Decodes a Produce request of any served version.
pub fn decode_produce(request: &Request) -> Result<ProduceRequest, HandlerOutcome> {
    if request.version() >= 3 {
        return request.decode();
    }
    let mut body = BytesMut::with_capacity(2 + request.body.len());
    body.put_i16(-1); // transactional_id: null
    body.put_slice(&request.body);
    ProduceRequest::decode(&mut body.freeze(), 3).map_err(|err| malformed(request, err))
}

/// Decodes a Fetch request of any served version.
pub fn decode_fetch(request: &Request) -> Result<FetchRequest, HandlerOutcome> {
    let version = request.version();
    if version >= 4 {
        return request.decode();
    }
    // replica_id, max_wait_ms and min_bytes, then (v3) max_bytes.
    let fixed = if version == 3 { 16 } else { 12 };
    if request.body.len() < fixed {
        return Err(malformed(request, "body shorter than its fixed fields"));
    }
    let mut body = BytesMut::with_capacity(request.body.len() + 5);
    body.put_slice(&request.body[..fixed]);
    if version < 3 {
        body.put_i32(i32::MAX); // max_bytes: no response limit before v3
    }
    body.put_i8(0); // isolation_level: read uncommitted
    body.put_slice(&request.body[fixed..]);
    FetchRequest::decode(&mut body.freeze(), 4).map_err(|err| malformed(request, err))
}

/// Encodes a Produce v0-2 response: v1 adds `throttle_time_ms` at the end, v2 each
/// partition's `log_append_time_ms`.
pub fn encode_produce_response(
    version: i16,
    correlation_id: i32,
    response: &ProduceResponse,
) -> HandlerOutcome {
    debug_assert!(version < 3);
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(response.responses.len() as i32);
    for topic in &response.responses {
        let name = topic.name.0.as_bytes();
        out.put_i16(name.len() as i16);
        out.put_slice(name);
        out.put_i32(topic.partition_responses.len() as i32);
        for partition in &topic.partition_responses {
            out.put_i32(partition.index);
            out.put_i16(partition.error_code);
            out.put_i64(partition.base_offset);
            if version >= 2 {
                out.put_i64(partition.log_append_time_ms);
            }
        }
    }
    if version >= 1 {
        out.put_i32(response.throttle_time_ms);
    }
    HandlerOutcome::Respond(ResponseFrame {
        correlation_id,
        throttle_ms: 0,
        flexible_header: false,
        headerless: false,
        body: vec![Bytes::from(out)],
    })
}

/// One partition of a ListOffsets v0 request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsV0Partition {
    /// The partition.
    pub partition: i32,
    /// -2 earliest, -1 latest, else a time in ms.
    pub timestamp: i64,
    /// How many offsets to list at most.
    pub max_num_offsets: i32,
}

/// Decodes a ListOffsets v0 request body: `replica_id`, then per topic its name and partitions.
pub fn decode_list_offsets_v0(
    request: &Request,
) -> Result<Vec<(String, Vec<ListOffsetsV0Partition>)>, HandlerOutcome> {
    let mut body = request.body.clone();
    let short = || malformed(request, "body ends early");
    let count = |body: &mut Bytes, element_bytes: usize| -> Result<usize, HandlerOutcome> {
        let n = body.try_get_i32().map_err(|_| short())?;
        // Every element takes at least `element_bytes`: a count the body cannot hold is refused
        // before anything is allocated for it.
        if n < 0 || n as usize > body.len() / element_bytes {
            return Err(malformed(request, format!("array length {n} out of range")));
        }
        Ok(n as usize)
    };
    body.try_get_i32().map_err(|_| short())?; // replica_id
    let topics = count(&mut body, 2 + 4)?;
    let mut out = Vec::with_capacity(topics);
    for _ in 0..topics {
        let len = body.try_get_i16().map_err(|_| short())?;
        if len < 0 || len as usize > body.len() {
            return Err(malformed(request, "bad topic name length"));
        }
        let name = String::from_utf8(body.split_to(len as usize).to_vec())
            .map_err(|_| malformed(request, "topic name is not UTF-8"))?;
        let partitions = count(&mut body, 4 + 8 + 4)?;
        let mut list = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            list.push(ListOffsetsV0Partition {
                partition: body.try_get_i32().map_err(|_| short())?,
                timestamp: body.try_get_i64().map_err(|_| short())?,
                max_num_offsets: body.try_get_i32().map_err(|_| short())?,
            });
        }
        out.push((name, list));
    }
    if !body.is_empty() {
        return Err(malformed(request, "bytes after the request body"));
    }
    Ok(out)
}

/// One partition of a ListOffsets v0 response: partition, error code, offsets.
pub type ListOffsetsV0Answer = (i32, i16, Vec<i64>);

/// Encodes a ListOffsets v0 response.
pub fn encode_list_offsets_v0_response(
    correlation_id: i32,
    topics: &[(String, Vec<ListOffsetsV0Answer>)],
) -> HandlerOutcome {
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(topics.len() as i32);
    for (name, partitions) in topics {
        out.put_i16(name.len() as i16);
        out.put_slice(name.as_bytes());
        out.put_i32(partitions.len() as i32);
        for (partition, error_code, offsets) in partitions {
            out.put_i32(*partition);
            out.put_i16(*error_code);
            out.put_i32(offsets.len() as i32);
            for offset in offsets {
                out.put_i64(*offset);
            }
        }
    }
    HandlerOutcome::Respond(ResponseFrame {
        correlation_id,
        throttle_ms: 0,
        flexible_header: false,
        headerless: false,
        body: vec![Bytes::from(out)],
    })
}

/// The Kafka error code of a legacy message set that cannot be converted (Produce v0-2,
/// Fetch v0-3).
pub fn legacy_format_error_code(err: &LegacyFormatError) -> i16 {
    let kind = match err {
        LegacyFormatError::Corrupt(_) => ResponseError::CorruptMessage,
        LegacyFormatError::Invalid(_) => ResponseError::InvalidRecord,
        LegacyFormatError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        LegacyFormatError::UnsupportedCompression(_) => ResponseError::UnsupportedCompressionType,
        LegacyFormatError::TooLarge(_) => ResponseError::MessageTooLarge,
    };
    kind.code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::protocol::StrBytes;

    fn request(key: ApiKey, version: i16, body: Vec<u8>) -> Request {
        Request {
            api_key: key,
            header: RequestHeader::default().with_request_api_version(version),
            body: Bytes::from(body),
            session: std::rc::Rc::new(crate::acl::Session::anonymous(None)),
        }
    }

    #[test]
    fn produce_v0_to_2_decode() {
        let mut body = Vec::new();
        body.put_i16(1); // acks
        body.put_i32(1500); // timeout
        body.put_i32(1); // topics
        body.put_i16(3);
        body.put_slice(b"abc");
        body.put_i32(1); // partitions
        body.put_i32(7);
        body.put_i32(4);
        body.put_slice(b"wxyz");
        for version in 0..3 {
            let decoded = decode_produce(&request(ApiKey::Produce, version, body.clone()))
                .unwrap_or_else(|_| panic!("v{version}"));
            assert_eq!(decoded.acks, 1);
            assert_eq!(decoded.timeout_ms, 1500);
            assert!(decoded.transactional_id.is_none());
            let topic = &decoded.topic_data[0];
            assert_eq!(topic.name.0.as_str(), "abc");
            assert_eq!(topic.partition_data[0].index, 7);
            assert_eq!(
                topic.partition_data[0].records.as_deref(),
                Some(&b"wxyz"[..])
            );
        }
        assert!(decode_produce(&request(ApiKey::Produce, 1, body[..9].to_vec())).is_err());
    }

    #[test]
    fn fetch_v0_to_3_decode() {
        for version in 0..4 {
            let mut body = Vec::new();
            body.put_i32(-1);
            body.put_i32(500);
            body.put_i32(1);
            if version == 3 {
                body.put_i32(1000);
            }
            body.put_i32(1);
            body.put_i16(1);
            body.put_slice(b"t");
            body.put_i32(1);
            body.put_i32(2); // partition
            body.put_i64(42); // fetch offset
            body.put_i32(4096); // partition max bytes
            let decoded = decode_fetch(&request(ApiKey::Fetch, version, body)).unwrap();
            assert_eq!(decoded.max_wait_ms, 500);
            assert_eq!(decoded.min_bytes, 1);
            assert_eq!(
                decoded.max_bytes,
                if version == 3 { 1000 } else { i32::MAX }
            );
            assert_eq!(decoded.isolation_level, 0);
            let p = &decoded.topics[0].partitions[0];
            assert_eq!(
                (p.partition, p.fetch_offset, p.partition_max_bytes),
                (2, 42, 4096)
            );
        }
        assert!(decode_fetch(&request(ApiKey::Fetch, 0, vec![0; 8])).is_err());
    }

    #[test]
    fn list_offsets_v0_decodes_and_refuses_bad_counts() {
        let mut body = Vec::new();
        body.put_i32(-1);
        body.put_i32(1);
        body.put_i16(1);
        body.put_slice(b"t");
        body.put_i32(1);
        body.put_i32(3);
        body.put_i64(-1);
        body.put_i32(5);
        let decoded =
            decode_list_offsets_v0(&request(ApiKey::ListOffsets, 0, body.clone())).unwrap();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].0, "t");
        assert_eq!(
            decoded[0].1,
            vec![ListOffsetsV0Partition {
                partition: 3,
                timestamp: -1,
                max_num_offsets: 5
            }]
        );
        let mut huge = body.clone();
        huge[4..8].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_list_offsets_v0(&request(ApiKey::ListOffsets, 0, huge)).is_err());
        assert!(
            decode_list_offsets_v0(&request(ApiKey::ListOffsets, 0, body[..20].to_vec())).is_err()
        );
        match encode_list_offsets_v0_response(1, &[("t".to_string(), vec![(3, 0, vec![9, 4])])]) {
            HandlerOutcome::Respond(frame) => {
                // topics(4) name(2+1) partitions(4) partition(4) error(2) offsets(4 + 16)
                assert_eq!(frame.body.concat().len(), 37);
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn produce_responses_by_version() {
        let response = ProduceResponse::default()
            .with_throttle_time_ms(0)
            .with_responses(vec![
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_responses(vec![
                        PartitionProduceResponse::default()
                            .with_index(0)
                            .with_base_offset(5)
                            .with_log_append_time_ms(9),
                    ]),
            ]);
        let len = |version| match encode_produce_response(version, 1, &response) {
            HandlerOutcome::Respond(frame) => frame.body.concat().len(),
            _ => unreachable!(),
        };
        // topics(4) name(2+1) partitions(4) index(4) error(2) base_offset(8)
        assert_eq!(len(0), 25);
        assert_eq!(len(1), 29);
        assert_eq!(len(2), 37);
    }
}
