//! Bad input on the wire: none of it crashes the broker or disturbs other connections.
//!
//! Each case opens its own connection next to a healthy one that stays open for the whole
//! test; after every case the healthy connection and a fresh one must still be answered.

mod support;

use std::io::Write;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest,
    MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use support::{Broker, RawClient, encode_request};

fn api_versions_ok(client: &mut RawClient) {
    let response: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 3, &api_versions_request());
    assert_eq!(response.error_code, 0);
    assert!(!response.api_keys.is_empty());
}

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("ringbroker-test"))
        .with_client_software_version(StrBytes::from_static_str("1.0"))
}

fn assert_closed(client: &mut RawClient, case: &str) {
    assert!(
        client.is_closed_by_peer(),
        "{case}: connection should be closed"
    );
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_in(dir.path(), &["--set", "socket.request.max.bytes=1048576"]);
    let mut healthy = RawClient::connect(broker.addr);
    api_versions_ok(&mut healthy);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", {
            let mut seed = 0x2545_f491_4f6c_dd1d_u64;
            (0..4096)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        }),
        ("frame claiming 2 GiB", i32::MAX.to_be_bytes().to_vec()),
        ("frame over socket.request.max.bytes", {
            let mut v = (2 * 1024 * 1024i32).to_be_bytes().to_vec();
            v.extend_from_slice(&[0; 64]);
            v
        }),
        ("negative size", (-1i32).to_be_bytes().to_vec()),
        ("zero size", 0i32.to_be_bytes().to_vec()),
        ("header too short", {
            let mut v = 3i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 18, 0]);
            v
        }),
        ("unknown API key", {
            let mut v = 8i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1]);
            v
        }),
        (
            "API not served (AlterReplicaLogDirs)",
            encode_request(
                ApiKey::AlterReplicaLogDirs,
                1,
                1,
                &AlterReplicaLogDirsRequest::default(),
            ),
        ),
        (
            "unsupported Metadata version",
            encode_request(ApiKey::Metadata, 12, 1, &MetadataRequest::default())
                .into_iter()
                .enumerate()
                .map(|(i, b)| if i == 7 { 99 } else { b })
                .collect(),
        ),
        ("Fetch v0 body shorter than its fixed fields", {
            // Header v1: key 1, version 0, correlation id, empty client id; then 8 body bytes.
            let mut v = 18i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1, 0, 0]);
            v.extend_from_slice(&[0xff; 8]);
            v
        }),
        ("ListOffsets v0 claiming 2^31 topics", {
            let mut v = 18i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 2, 0, 0, 0, 0, 0, 1, 0, 0]);
            v.extend_from_slice(&(-1i32).to_be_bytes());
            v.extend_from_slice(&i32::MAX.to_be_bytes());
            v
        }),
        ("truncated Metadata body", {
            let mut frame = encode_request(ApiKey::Metadata, 12, 1, &MetadataRequest::default());
            // Keep the header, cut the body, and fix the size field to match.
            frame.truncate(frame.len() - 2);
            let size = (frame.len() - 4) as i32;
            frame[..4].copy_from_slice(&size.to_be_bytes());
            frame
        }),
    ];

    for (case, bytes) in cases {
        let mut client = RawClient::connect(broker.addr);
        client.send_raw(&bytes);
        assert_closed(&mut client, case);
        assert!(broker.is_running(), "{case}: broker died");
        api_versions_ok(&mut healthy);
        api_versions_ok(&mut RawClient::connect(broker.addr));
    }

    let log = broker.log().join("\n");
    assert!(
        log.contains("exceeds") && log.contains("socket.request.max.bytes"),
        "{log}"
    );
    assert!(log.contains("is not supported"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A frame of `key` at `version` whose body is `body`, with an empty client id (header v1, or v2
/// with an empty tagged-field section when `flexible`).
fn raw_frame(key: ApiKey, version: i16, flexible: bool, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&(key as i16).to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&1i32.to_be_bytes());
    frame.extend_from_slice(&0i16.to_be_bytes());
    if flexible {
        frame.push(0);
    }
    frame.extend_from_slice(body);
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend(frame);
    out
}

/// An unsigned varint as the flexible versions encode compact lengths.
fn uvarint(mut value: u32) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

/// Element counts and lengths far beyond the bytes that follow them (the mutations that killed
/// the broker through kafka-protocol 0.18's decoders): each is refused on its own connection,
/// with one log line, and nothing is allocated for the claimed size.
#[test]
fn counts_larger_than_their_bytes_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_in(dir.path(), &[]);
    let mut healthy = RawClient::connect(broker.addr);
    api_versions_ok(&mut healthy);

    let mut list_offsets = Vec::new();
    list_offsets.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    list_offsets.push(0); // isolation level
    list_offsets.extend_from_slice(&i32::MAX.to_be_bytes()); // topics

    let mut fetch = Vec::new();
    for field in [-1i32, 500, 1, 1 << 20] {
        fetch.extend_from_slice(&field.to_be_bytes()); // replica, max wait, min, max bytes
    }
    fetch.push(0); // isolation level
    fetch.extend_from_slice(&0i32.to_be_bytes()); // session id
    fetch.extend_from_slice(&(-1i32).to_be_bytes()); // session epoch
    fetch.extend(uvarint(u32::MAX)); // topics

    let mut fetch_partitions = fetch[..fetch.len() - 5].to_vec();
    fetch_partitions.extend(uvarint(2)); // one topic
    fetch_partitions.extend(uvarint(2)); // name "a"
    fetch_partitions.push(b'a');
    fetch_partitions.extend(uvarint(u32::MAX)); // its partitions

    let mut create_topics = uvarint(u32::MAX); // topics
    create_topics.extend_from_slice(&[0; 8]);

    let mut metadata_name = uvarint(2); // one topic
    metadata_name.extend_from_slice(&[0; 16]); // topic id
    metadata_name.extend(uvarint(u32::MAX)); // its name's length

    let mut legacy_fetch = Vec::new();
    for field in [-1i32, 500, 1] {
        legacy_fetch.extend_from_slice(&field.to_be_bytes());
    }
    legacy_fetch.extend_from_slice(&i32::MAX.to_be_bytes()); // topics

    let mut elect_leaders = vec![0u8]; // election type
    elect_leaders.extend(uvarint(u32::MAX)); // topic partitions

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "ElectLeaders v2 claiming 2^32 topics",
            raw_frame(ApiKey::ElectLeaders, 2, true, &elect_leaders),
        ),
        (
            "ListOffsets v5 claiming 2^31 topics",
            raw_frame(ApiKey::ListOffsets, 5, false, &list_offsets),
        ),
        (
            "Fetch v12 claiming 2^32 topics",
            raw_frame(ApiKey::Fetch, 12, true, &fetch),
        ),
        (
            "Fetch v12 topic claiming 2^32 partitions",
            raw_frame(ApiKey::Fetch, 12, true, &fetch_partitions),
        ),
        (
            "Fetch v0 claiming 2^31 topics",
            raw_frame(ApiKey::Fetch, 0, false, &legacy_fetch),
        ),
        (
            "CreateTopics v5 claiming 2^32 topics",
            raw_frame(ApiKey::CreateTopics, 5, true, &create_topics),
        ),
        (
            "Metadata v12 topic name claiming 4 GiB",
            raw_frame(ApiKey::Metadata, 12, true, &metadata_name),
        ),
    ];
    for (case, bytes) in cases {
        let mut client = RawClient::connect(broker.addr);
        client.send_raw(&bytes);
        assert_closed(&mut client, case);
        assert!(broker.is_running(), "{case}: broker died");
        api_versions_ok(&mut healthy);
    }
    let log = broker.log().join("\n");
    assert!(log.contains("malformed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn disconnect_mid_request_leaves_the_broker_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_in(dir.path(), &[]);
    for cut in [2usize, 6, 12] {
        let frame = encode_request(ApiKey::Metadata, 12, 1, &MetadataRequest::default());
        let mut client = RawClient::connect(broker.addr);
        client.stream.write_all(&frame[..cut]).unwrap();
        drop(client);
    }
    // A frame that promises more than it sends, then goes away.
    let mut client = RawClient::connect(broker.addr);
    client.send_raw(&100i32.to_be_bytes());
    client.send_raw(&[0, 3, 0, 12]);
    drop(client);
    std::thread::sleep(Duration::from_millis(200));
    assert!(broker.is_running());
    api_versions_ok(&mut RawClient::connect(broker.addr));
}

#[test]
fn unsupported_api_versions_version_gets_kip511_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    // ApiVersions v99 from a future client: header v2, unknown body.
    let mut frame = encode_request(ApiKey::ApiVersions, 3, 41, &api_versions_request());
    frame[6..8].copy_from_slice(&99i16.to_be_bytes());
    client.send_raw(&frame);
    let (correlation_id, mut body) = client.recv(ApiKey::ApiVersions, 0);
    assert_eq!(correlation_id, 41);
    let response =
        <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 0).unwrap();
    assert_eq!(
        response.error_code,
        ResponseError::UnsupportedVersion.code()
    );
    let versions = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .expect("ApiVersions is listed");
    assert_eq!((versions.min_version, versions.max_version), (0, 3));
    // The connection stays usable: the client retries at a version we share.
    api_versions_ok(&mut client);
}

#[test]
fn invalid_client_software_name_gets_invalid_request() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("bad name!"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    let response: ApiVersionsResponse = client.call(ApiKey::ApiVersions, 3, &request);
    assert_eq!(response.error_code, ResponseError::InvalidRequest.code());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    // More than the in-flight bound, alternating APIs, written in one go.
    let count = 200;
    let mut bytes = Vec::new();
    for id in 0..count {
        if id % 2 == 0 {
            bytes.extend(encode_request(
                ApiKey::ApiVersions,
                3,
                id,
                &api_versions_request(),
            ));
        } else {
            bytes.extend(encode_request(
                ApiKey::Metadata,
                12,
                id,
                &MetadataRequest::default(),
            ));
        }
    }
    let writer = {
        let mut stream = client.stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&bytes).unwrap())
    };
    for id in 0..count {
        let (key, version) = if id % 2 == 0 {
            (ApiKey::ApiVersions, 3)
        } else {
            (ApiKey::Metadata, 12)
        };
        let (correlation_id, mut body) = client.recv(key, version);
        assert_eq!(correlation_id, id);
        if id % 2 == 1 {
            let response =
                <MetadataResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 12)
                    .unwrap();
            assert_eq!(response.brokers.len(), 1);
        }
    }
    writer.join().unwrap();
}
