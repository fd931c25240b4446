//! Criterion micro-benchmarks (`cargo bench --bench micro`): the protocol codec and batch
//! validation on the produce path. Single-threaded, no I/O; they measure CPU per request or
//! per batch, which bounds what one shard can do. The router hop (a cross-shard call over
//! the glommio channel mesh) is not covered yet.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use ringbroker::kafka::dispatch::encode_response;
use ringbroker::storage::batch::{build_test_batch, validate_all};

/// `batches` record batches of `records` records with `value_bytes` each, back to back, as a
/// Produce partition's `records` field carries them.
fn records(batches: usize, records: i32, value_bytes: usize) -> Bytes {
    let mut out = Vec::new();
    for b in 0..batches {
        out.extend(build_test_batch(
            records,
            value_bytes,
            1_700_000_000_000,
            b as u8,
        ));
    }
    Bytes::from(out)
}

fn produce_request(partitions: i32, records: &Bytes) -> ProduceRequest {
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 30_000;
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str("bench"));
    for p in 0..partitions {
        let mut data = PartitionProduceData::default();
        data.index = p;
        data.records = Some(records.clone());
        topic.partition_data.push(data);
    }
    request.topic_data.push(topic);
    request
}

fn produce_response(partitions: i32) -> ProduceResponse {
    let mut topic = TopicProduceResponse::default();
    topic.name = TopicName(StrBytes::from_static_str("bench"));
    for p in 0..partitions {
        let mut data = PartitionProduceResponse::default();
        data.index = p;
        data.base_offset = 1_000_000 + i64::from(p);
        data.log_append_time_ms = -1;
        topic.partition_responses.push(data);
    }
    let mut response = ProduceResponse::default();
    response.responses.push(topic);
    response
}

fn batch_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_all");
    // (label, batches, records per batch, value bytes)
    for (label, batches, recs, value) in [
        ("1x1rec-1KiB", 1, 1, 1024),
        ("1x100rec-100B", 1, 100, 100),
        ("1x1rec-16KiB", 1, 1, 16 * 1024),
        ("16x1rec-1KiB", 16, 1, 1024),
        ("1x1rec-1MiB", 1, 1, 1 << 20),
    ] {
        let bytes = records(batches, recs, value);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &bytes, |b, bytes| {
            b.iter(|| {
                let mut n = 0usize;
                validate_all(black_box(bytes), 2 << 20, |meta| n += meta.size_bytes).unwrap();
                n
            })
        });
    }
    group.finish();
}

fn protocol_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for partitions in [1, 12] {
        let request = produce_request(partitions, &records(1, 1, 1024));
        let mut encoded = BytesMut::new();
        request.encode(&mut encoded, 9).unwrap();
        let encoded = encoded.freeze();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("produce_v9_decode", partitions),
            &encoded,
            |b, encoded| {
                b.iter(|| {
                    let mut buf = black_box(encoded.clone());
                    ProduceRequest::decode(&mut buf, 9).unwrap()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("produce_v9_encode", partitions),
            &request,
            |b, request| {
                b.iter(|| {
                    let mut buf = BytesMut::with_capacity(2048);
                    black_box(request).encode(&mut buf, 9).unwrap();
                    buf
                })
            },
        );
        let response = produce_response(partitions);
        group.bench_function(BenchmarkId::new("produce_v9_response", partitions), |b| {
            b.iter(|| encode_response(ApiKey::Produce, 9, 7, black_box(&response)))
        });
    }
    group.finish();
}

criterion_group!(benches, batch_validation, protocol_codec);
criterion_main!(benches);
