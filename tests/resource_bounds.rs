//! What a client can hold in the broker is bounded (issue 12, docs/RELIABILITY.md), tried
//! against the real binary:
//!
//! - a connection storm: thousands of connections from one address against
//!   `max.connections.per.ip`, idle ones closed after `connections.max.idle.ms`, frames trickled
//!   a byte at a time closed after `request-read-timeout-ms`, while another address is served;
//! - a decompression bomb: a ~1 MiB gzip batch that inflates to 1 GiB, produced and then fetched
//!   by Fetch v0-3 consumers (which need it down-converted) and by a modern one;
//! - a client that pipelines fetches and never reads the answers.
//!
//! In each the broker must stay up, keep its resident memory under a stated bound and keep
//! serving other clients. Sources 127.0.0.2 and 127.0.0.3 are loopback addresses (all of
//! 127/8 is local on Linux), so per-address limits can be tried without namespaces.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringbroker::storage::batch::{build_test_batch, seal_batch};
use socket2::{Domain, Socket, Type};
use support::{Broker, RawClient, encode_request, fetch_legacy, run_bounded};

const NONE: i16 = 0;
const MESSAGE_TOO_LARGE: i16 = 10;
const MIB: u64 = 1 << 20;

/// Resident memory the broker may reach in these tests. An idle two-shard broker holds about
/// 60 MiB here; each bound below adds at most: one 64 MiB down-conversion per shard at a time,
/// 64 MiB of answered-but-unsent responses per connection, and frame buffers only as large as
/// the bytes that arrived. 512 MiB leaves room for allocator slack and is far below what any
/// of these clients would cost unbounded (a gigabyte of inflated data, 20 GB of declared frame
/// sizes, gigabytes of queued fetch responses).
const RSS_BOUND_BYTES: u64 = 512 * MIB;

/// Lets the test process hold a few thousand sockets (its soft limit may be 1024).
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit value.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A connection to `broker` from the loopback address `source`.
fn connect_from(source: Ipv4Addr, broker: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(IpAddr::V4(source), 0).into())
        .expect("bind a loopback source address");
    socket
        .connect_timeout(&broker.into(), Duration::from_secs(10))
        .expect("connect");
    socket.into()
}

/// Whether the broker has closed `stream`, without blocking (data it sent is discarded).
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(err) if err.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Polls until `done` holds, at most `bound`; returns whether it did.
fn eventually(bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// ApiVersions on a fresh connection from 127.0.0.1 answers.
fn assert_serves(broker: &Broker, when: &str) {
    let mut client = RawClient::connect(broker.addr);
    let response: ApiVersionsResponse = client.call(
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("resource-bounds"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    assert_eq!(response.error_code, NONE, "ApiVersions {when}");
}

fn assert_rss_bounded(broker: &Broker, when: &str) {
    let (rss, high_water) = broker.rss_bytes();
    eprintln!(
        "{when}: broker RSS {} MiB, high water {} MiB (bound {} MiB)",
        rss / MIB,
        high_water / MIB,
        RSS_BOUND_BYTES / MIB
    );
    assert!(
        high_water < RSS_BOUND_BYTES,
        "{when}: broker RSS high water {high_water} bytes is past the {RSS_BOUND_BYTES}-byte bound"
    );
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Produce v9, acks=1, one batch to partition 0: the partition's error code.
fn produce(client: &mut RawClient, topic: &str, batch: Vec<u8>) -> i16 {
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ]);
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    response.responses[0].partition_responses[0].error_code
}

fn fetch_request(topic: &str, offset: i64, max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_fetch_offset(offset)
                        .with_current_leader_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(max_bytes),
                ]),
        ])
}

/// Fetch of partition 0 at `version`: (error code, high watermark, record bytes).
fn fetch(client: &mut RawClient, version: i16, topic: &str, max_bytes: i32) -> (i16, i64, usize) {
    let response: FetchResponse =
        client.call(ApiKey::Fetch, version, &fetch_request(topic, 0, max_bytes));
    let partition = &response.responses[0].partitions[0];
    (
        partition.error_code,
        partition.high_watermark,
        partition.records.as_ref().map_or(0, |r| r.len()),
    )
}

fn create_topic(broker: &Broker, topic: &str) {
    let (status, _, stderr) = run_bounded(
        "python3",
        &[
            "-c",
            "import sys\nfrom kafka.admin import KafkaAdminClient, NewTopic\n\
             a = KafkaAdminClient(bootstrap_servers=sys.argv[1])\n\
             a.create_topics([NewTopic(sys.argv[2], 1, 1)])\n",
            &broker.bootstrap(),
            topic,
        ],
        Duration::from_secs(60),
    );
    assert!(status.success(), "kafka-python creates {topic}: {stderr}");
}

#[test]
fn a_connection_storm_is_held_to_its_limits_and_others_are_served() {
    raise_open_files();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            "max.connections.per.ip=300",
            "--set",
            "max.connections.per.ip.overrides=127.0.0.1:10000",
            "--set",
            "connections.max.idle.ms=3000",
            "--set",
            "request-read-timeout-ms=2000",
        ],
    );
    let storm_source = Ipv4Addr::new(127, 0, 0, 2);
    let trickle_source = Ipv4Addr::new(127, 0, 0, 3);

    // 2,000 idle connections from one address: the first 300 are kept, the rest closed.
    let opened = Instant::now();
    let mut storm: Vec<TcpStream> = (0..2000)
        .map(|_| connect_from(storm_source, broker.addr))
        .collect();
    let mut closed = vec![false; storm.len()];
    let settled = eventually(Duration::from_secs(20), || {
        for (stream, closed) in storm.iter_mut().zip(closed.iter_mut()) {
            if !*closed {
                *closed = closed_by_peer(stream);
            }
        }
        closed.iter().filter(|c| **c).count() >= 1700
    });
    let refused = closed.iter().filter(|c| **c).count();
    assert!(settled, "only {refused} of 2000 connections were refused");
    // Unless this machine was too slow to get here within the idle bound, the 300 survivors
    // are all still open.
    if opened.elapsed() < Duration::from_millis(2500) {
        assert_eq!(refused, 1700, "exactly max.connections.per.ip stay open");
    }

    // 200 connections trickling a frame that claims 100 MB, a byte every 300 ms.
    let mut trickle: Vec<TcpStream> = (0..200)
        .map(|_| connect_from(trickle_source, broker.addr))
        .collect();
    for stream in &mut trickle {
        stream
            .write_all(&(100_000_000i32).to_be_bytes())
            .expect("size prefix");
    }
    let trickle_started = Instant::now();

    // Meanwhile 127.0.0.1 is served, by a raw client and by kcat.
    assert_serves(&broker, "during the storm");
    let (status, stdout, stderr) = run_bounded(
        "kcat",
        &["-b", &broker.bootstrap(), "-L", "-m", "10"],
        Duration::from_secs(30),
    );
    assert!(
        status.success() && stdout.contains("1 brokers"),
        "kcat -L: {stdout}{stderr}"
    );

    let mut trickle_open = vec![true; trickle.len()];
    let all_trickles_closed = eventually(Duration::from_secs(20), || {
        for (stream, open) in trickle.iter_mut().zip(trickle_open.iter_mut()) {
            if *open {
                // A write after the broker closed fails (EPIPE, ECONNRESET) or the read sees EOF.
                *open = stream.write_all(&[0]).is_ok() && !closed_by_peer(stream);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        trickle_open.iter().all(|open| !open)
    });
    let trickle_closed_after = trickle_started.elapsed();
    assert!(
        all_trickles_closed,
        "{} trickling connections still open after {trickle_closed_after:?}",
        trickle_open.iter().filter(|o| **o).count()
    );
    // Each kept sending, so none was idle: the read timeout closed them, not the idle one.
    assert!(
        trickle_closed_after >= Duration::from_millis(1500),
        "trickling connections closed after only {trickle_closed_after:?}"
    );

    // The 300 idle survivors are closed after connections.max.idle.ms.
    let idle_closed = eventually(Duration::from_secs(20), || {
        for (stream, closed) in storm.iter_mut().zip(closed.iter_mut()) {
            if !*closed {
                *closed = closed_by_peer(stream);
            }
        }
        closed.iter().all(|c| *c)
    });
    assert!(
        idle_closed,
        "{} idle connections still open after {:?}",
        closed.iter().filter(|c| !**c).count(),
        opened.elapsed()
    );
    assert!(opened.elapsed() >= Duration::from_millis(2500));

    // The address can connect again once its connections are gone.
    let mut again = connect_from(storm_source, broker.addr);
    again
        .write_all(&encode_request(
            ApiKey::ApiVersions,
            0,
            1,
            &ApiVersionsRequest::default(),
        ))
        .unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut size = [0u8; 4];
    again
        .read_exact(&mut size)
        .expect("a new connection from the storm's address is served");

    assert_serves(&broker, "after the storm");
    assert_rss_bounded(&broker, "connection storm");
    let log = broker.log();
    let refusal_lines = log
        .iter()
        .filter(|l| l.contains("connection refused"))
        .count();
    eprintln!("{refusal_lines} refusal log lines for 1700 refusals");
    assert!(
        (1..=20).contains(&refusal_lines),
        "refusals are logged, rate-limited: {refusal_lines} lines"
    );
    assert!(!log.iter().any(|l| l.contains("panicked")));
}

/// A v2 batch, gzip, whose one "record" inflates to `inflated_mib` MiB of zeros: concatenated
/// gzip members of 1 MiB each (what every gzip reader must accept), so it is built in
/// milliseconds and weighs about a thousandth of what it inflates to.
fn gzip_bomb(inflated_mib: usize) -> Vec<u8> {
    let mut member = GzEncoder::new(Vec::new(), Compression::best());
    member.write_all(&vec![0u8; MIB as usize]).unwrap();
    let member = member.finish().unwrap();
    let mut compressed = Vec::with_capacity(member.len() * inflated_mib);
    for _ in 0..inflated_mib {
        compressed.extend_from_slice(&member);
    }
    const GZIP: i16 = 1;
    seal_batch(&compressed, 1, GZIP, (-1, -1, -1), 1_700_000_000_000)
}

#[test]
fn a_decompression_bomb_is_stored_but_never_inflated_past_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "message.max.bytes=8388608"]);
    create_topic(&broker, "bomb");
    let bomb = gzip_bomb(1024);
    eprintln!("bomb: {} bytes, inflating to 1 GiB", bomb.len());
    let mut client = RawClient::connect(broker.addr);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(produce(&mut client, "bomb", bomb.clone()), NONE);

    // Fetch v0-3 consumers need magic 0/1: down-conversion stops at its bound and the partition
    // answers MESSAGE_TOO_LARGE, as for any batch that cannot be converted within it.
    for version in 0..4 {
        let (error, high_watermark, records) = fetch_legacy(&mut client, version, "bomb");
        assert_eq!(
            (error, high_watermark, records.len()),
            (MESSAGE_TOO_LARGE, 1, 0),
            "Fetch v{version}"
        );
        assert_rss_bounded(&broker, &format!("after Fetch v{version} of the bomb"));
    }
    // Several consumers at once, on their own connections.
    let consumers: Vec<_> = (0..4)
        .map(|i| {
            let addr = broker.addr;
            std::thread::spawn(move || {
                let mut client = RawClient::connect(addr);
                client
                    .stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                for _ in 0..3 {
                    assert_eq!(fetch_legacy(&mut client, i, "bomb").0, MESSAGE_TOO_LARGE);
                }
            })
        })
        .collect();
    for consumer in consumers {
        consumer.join().expect("a legacy consumer gets its error");
    }
    assert_rss_bounded(&broker, "after concurrent legacy fetches of the bomb");

    // A modern consumer gets the batch as it was produced: no broker-side inflation.
    let response: FetchResponse =
        client.call(ApiKey::Fetch, 12, &fetch_request("bomb", 0, 16 << 20));
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, NONE);
    let records = partition.records.as_ref().expect("records");
    assert_eq!(records.len(), bomb.len());
    assert_eq!(
        &records[12..],
        &bomb[12..],
        "the stored batch, offsets assigned"
    );

    // A legacy librdkafka consumer (Fetch v2) gets the error too (it retries until `timeout`
    // stops it) and the broker carries on.
    let (_, _, stderr) = run_bounded(
        "timeout",
        &[
            "10",
            "kcat",
            "-b",
            &broker.bootstrap(),
            "-X",
            "api.version.request=false",
            "-X",
            "broker.version.fallback=0.10.0.0",
            "-C",
            "-t",
            "bomb",
            "-o",
            "beginning",
            "-e",
            "-q",
        ],
        Duration::from_secs(30),
    );
    eprintln!("legacy kcat: {}", stderr.lines().last().unwrap_or(""));
    assert_serves(&broker, "after the bomb");
    assert_rss_bounded(&broker, "decompression bomb");
}

#[test]
fn a_client_that_never_reads_is_bounded_and_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            "connections.max.idle.ms=3000",
            "--set",
            "message.max.bytes=2097152",
        ],
    );
    create_topic(&broker, "unread");
    let mut producer = RawClient::connect(broker.addr);
    producer
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    for i in 0..16 {
        let batch = build_test_batch(16, 64 * 1024, 1_700_000_000_000, i as u8);
        assert_eq!(produce(&mut producer, "unread", batch), NONE);
    }

    // 400 pipelined fetches of the whole 16 MiB log: 6.4 GB of answers, on a socket whose
    // receive buffer is small and never read.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&broker.addr.into(), Duration::from_secs(10))
        .unwrap();
    let mut reader_never: TcpStream = socket.into();
    reader_never
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let whole_log = fetch_request("unread", 0, 32 << 20);
    let mut sent = 0;
    for i in 0..400 {
        let frame = encode_request(ApiKey::Fetch, 12, i, &whole_log);
        // Once the broker stops reading, the send buffer fills and the write times out.
        if reader_never.write_all(&frame).is_err() {
            break;
        }
        sent += 1;
    }
    eprintln!("non-reader sent {sent} fetches");

    // Others are served meanwhile, fetches included.
    let mut other = RawClient::connect(broker.addr);
    other
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (error, high_watermark, bytes) = fetch(&mut other, 12, "unread", 32 << 20);
    assert_eq!((error, high_watermark), (NONE, 256));
    assert!(bytes > 16 << 20);
    assert_rss_bounded(&broker, "while a client does not read");

    // After connections.max.idle.ms without reading, the broker drops the connection: reading it
    // now yields what was sent before the close, then EOF, far short of 400 answers.
    std::thread::sleep(Duration::from_secs(5));
    reader_never
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut received: u64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    let eof = loop {
        match reader_never.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received += n as u64,
            Err(err)
                if err.kind() == ErrorKind::WouldBlock || err.kind() == ErrorKind::TimedOut =>
            {
                break false;
            }
            Err(_) => break true,
        }
    };
    eprintln!("non-reader got {} MiB before the close", received / MIB);
    assert!(
        eof,
        "the broker closed the connection of a client that did not read"
    );
    assert!(received < 400 * (16 * MIB));
    let log = broker.log();
    assert!(
        log.iter()
            .any(|l| l.contains("read no response") && l.contains("connections.max.idle.ms")),
        "the close is logged with its reason"
    );

    assert_serves(&broker, "after the non-reader");
    let mut other = RawClient::connect(broker.addr);
    let (error, _, _) = fetch(&mut other, 12, "unread", 1 << 20);
    assert_eq!(error, NONE);
    assert_rss_bounded(&broker, "client that never reads");
}
