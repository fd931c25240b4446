//! Writes the generated seeds into the seeds directory (tests/fuzz/seeds):
//! - `request_frame/gen-*.bin`: request frames (without the size prefix) for every API and
//!   version the broker serves: a default message and, for the data-plane APIs, one that names
//!   a topic and a partition. The frames of real clients (`request_frame/client-*.bin` from
//!   tools/record_seeds.py, tests/data/frames/) complement them.
//! - `legacy_format/gen-up-*.bin`: magic 0 and magic 1 message sets (plain and compressed) for
//!   up-conversion, made by down-converting the recorded client batches
//!   (`legacy_format/client-down-*.bin`), since no installed client still produces magic 1.
//!
//! Usage: `cargo run --bin gen_seeds -- tests/fuzz/seeds` (the stable toolchain is enough).

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use ringbroker::kafka::dispatch::HANDLERS;

fn frame<M: Encodable>(key: ApiKey, version: i16, message: &M) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("seed")))
        .encode(&mut out, key.request_header_version(version))
        .ok()?;
    message.encode(&mut out, version).ok()?;
    Some(out.to_vec())
}

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("seed-topic"))
}

/// A v2 batch of one record, CRC included.
fn batch() -> Vec<u8> {
    let record = [
        0x14u8, 0, 0, 0, 2, b'k', 6, b'v', b'a', b'l',
        0, // len 10, attrs, ts, off, key, value, headers
    ];
    let mut out = Vec::new();
    out.put_i64(0);
    out.put_i32((49 + record.len()) as i32);
    out.put_i32(0);
    out.put_i8(2);
    out.put_u32(0);
    out.put_i16(0);
    out.put_i32(0);
    out.put_i64(1_700_000_000_000);
    out.put_i64(1_700_000_000_000);
    out.put_i64(-1);
    out.put_i16(-1);
    out.put_i32(-1);
    out.put_i32(1);
    out.extend_from_slice(&record);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

fn produce() -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(topic())
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch().into())),
                ]),
        ])
}

fn fetch() -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(topic())
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

/// Down-converts each recorded `client-down-*` seed's batches to magic 0 and 1 message sets
/// and writes them as up-conversion seeds (flag byte 0).
fn legacy_message_sets(seeds: &str) -> std::io::Result<()> {
    let dir = format!("{seeds}/legacy_format");
    let mut written = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("client-down-") || !name.ends_with("-1.bin") {
            continue;
        }
        // flag, fetch offset (8), limit (2), split (2), then the stored batches.
        let bytes = std::fs::read(&path)?;
        let stored = bytes::Bytes::copy_from_slice(&bytes[13..]);
        for magic in [0u8, 1] {
            let Ok(set) = ringbroker::kafka::legacy_format::down_convert(
                &[stored.clone()],
                magic,
                0,
                1 << 20,
            ) else {
                continue;
            };
            if set.is_empty() {
                continue;
            }
            let stem = name
                .trim_start_matches("client-down-")
                .trim_end_matches("-1.bin");
            let mut seed = vec![0u8];
            seed.extend_from_slice(&set);
            std::fs::write(format!("{dir}/gen-up-{stem}-m{magic}.bin"), seed)?;
            written += 1;
        }
    }
    println!("{written} message sets written to {dir}");
    Ok(())
}

fn main() -> std::io::Result<()> {
    let seeds = std::env::args()
        .nth(1)
        .expect("usage: gen_seeds <seeds dir>");
    legacy_message_sets(&seeds)?;
    let dir = format!("{seeds}/request_frame");
    std::fs::create_dir_all(&dir)?;
    let mut written = 0;
    let mut put = |name: String, bytes: Option<Vec<u8>>| -> std::io::Result<()> {
        if let Some(bytes) = bytes {
            std::fs::write(format!("{dir}/{name}.bin"), bytes)?;
            written += 1;
        }
        Ok(())
    };
    for handler in HANDLERS {
        let key = handler.key;
        let oldest = key.valid_versions().min.max(handler.versions.min);
        for v in oldest..=handler.versions.max {
            let n = |what: &str| format!("gen-{what}-k{}v{v}", key as i16);
            macro_rules! default {
                ($t:ty) => {
                    put(n("default"), frame(key, v, &<$t>::default()))?
                };
            }
            match key {
                ApiKey::Produce => {
                    default!(ProduceRequest);
                    put(n("one-batch"), frame(key, v, &produce()))?;
                }
                ApiKey::Fetch => {
                    default!(FetchRequest);
                    put(n("one-partition"), frame(key, v, &fetch()))?;
                }
                ApiKey::ListOffsets => default!(ListOffsetsRequest),
                ApiKey::Metadata => {
                    default!(MetadataRequest);
                    let named = MetadataRequest::default().with_topics(Some(vec![
                        metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
                    ]));
                    put(n("one-topic"), frame(key, v, &named))?;
                }
                ApiKey::OffsetForLeaderEpoch => default!(OffsetForLeaderEpochRequest),
                ApiKey::InitProducerId => default!(InitProducerIdRequest),
                ApiKey::DeleteRecords => default!(DeleteRecordsRequest),
                ApiKey::ApiVersions => default!(ApiVersionsRequest),
                ApiKey::CreateTopics => {
                    default!(CreateTopicsRequest);
                    let one = CreateTopicsRequest::default().with_topics(vec![
                        create_topics_request::CreatableTopic::default()
                            .with_name(topic())
                            .with_num_partitions(3)
                            .with_replication_factor(1)
                            .with_configs(vec![
                                create_topics_request::CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                                    .with_value(Some(StrBytes::from_static_str("delete"))),
                            ]),
                    ]);
                    put(n("one-topic"), frame(key, v, &one))?;
                }
                ApiKey::DeleteTopics => default!(DeleteTopicsRequest),
                ApiKey::CreatePartitions => default!(CreatePartitionsRequest),
                ApiKey::ElectLeaders => default!(ElectLeadersRequest),
                ApiKey::DescribeConfigs => default!(DescribeConfigsRequest),
                ApiKey::AlterConfigs => default!(AlterConfigsRequest),
                ApiKey::IncrementalAlterConfigs => default!(IncrementalAlterConfigsRequest),
                ApiKey::DescribeCluster => default!(DescribeClusterRequest),
                ApiKey::FindCoordinator => default!(FindCoordinatorRequest),
                ApiKey::JoinGroup => default!(JoinGroupRequest),
                ApiKey::SyncGroup => default!(SyncGroupRequest),
                ApiKey::Heartbeat => default!(HeartbeatRequest),
                ApiKey::LeaveGroup => default!(LeaveGroupRequest),
                ApiKey::OffsetCommit => default!(OffsetCommitRequest),
                ApiKey::OffsetFetch => default!(OffsetFetchRequest),
                ApiKey::ListGroups => default!(ListGroupsRequest),
                ApiKey::DescribeGroups => default!(DescribeGroupsRequest),
                ApiKey::DeleteGroups => default!(DeleteGroupsRequest),
                ApiKey::OffsetDelete => default!(OffsetDeleteRequest),
                ApiKey::DescribeAcls => default!(DescribeAclsRequest),
                ApiKey::CreateAcls => default!(CreateAclsRequest),
                ApiKey::DeleteAcls => default!(DeleteAclsRequest),
                ApiKey::AddPartitionsToTxn => default!(AddPartitionsToTxnRequest),
                ApiKey::AddOffsetsToTxn => default!(AddOffsetsToTxnRequest),
                ApiKey::EndTxn => default!(EndTxnRequest),
                ApiKey::TxnOffsetCommit => default!(TxnOffsetCommitRequest),
                ApiKey::DescribeTransactions => default!(DescribeTransactionsRequest),
                ApiKey::ListTransactions => default!(ListTransactionsRequest),
                other => panic!("{other:?} is served but has no seed here"),
            }
        }
    }
    // The versions older than the schema crate's, written by hand from the newer encodings:
    // Produce v0-2 is v3 without transactional_id, Fetch v0-3 is v4 without max_bytes (v0-2)
    // and isolation_level.
    let body = |key: ApiKey, v: i16, message: &dyn Fn(&mut BytesMut)| {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(v)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("seed")))
            .encode(&mut out, 1)
            .expect("header");
        message(&mut out);
        out.to_vec()
    };
    let mut v3 = BytesMut::new();
    produce().encode(&mut v3, 3).expect("produce v3");
    let mut v4 = BytesMut::new();
    fetch().encode(&mut v4, 4).expect("fetch v4");
    for v in 0..3 {
        let f = body(ApiKey::Produce, v, &|out| out.put_slice(&v3[2..]));
        put(format!("gen-one-batch-k0v{v}"), Some(f))?;
    }
    for v in 0..4 {
        let f = body(ApiKey::Fetch, v, &|out| {
            out.put_slice(&v4[..12]);
            if v == 3 {
                out.put_slice(&v4[12..16]);
            }
            out.put_slice(&v4[17..]);
        });
        put(format!("gen-one-partition-k1v{v}"), Some(f))?;
    }
    let list_v0 = body(ApiKey::ListOffsets, 0, &|out| {
        out.put_i32(-1);
        out.put_i32(1);
        out.put_i16(10);
        out.put_slice(b"seed-topic");
        out.put_i32(1);
        out.put_i32(0);
        out.put_i64(-1);
        out.put_i32(1);
    });
    put("gen-one-partition-k2v0".to_string(), Some(list_v0))?;
    println!("{written} frames written to {dir}");
    Ok(())
}
