//! Client quotas (KIP-546 AlterClientQuotas / DescribeClientQuotas, KIP-219 throttling)
//! against the real binary: the admin round trip with defaults, removal, validate_only and
//! refused keys; a producer held to its `producer_byte_rate`, the quota set while its
//! connection is open; a consumer slowed by `consumer_byte_rate`; a SASL user's quota.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, ApiKey, ApiVersionsRequest,
    ApiVersionsResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use support::{Broker, RawClient};

const INVALID_REQUEST: i16 = 42;

fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// (entity type, name) pairs.
type Entity<'a> = &'a [(&'a str, Option<&'a str>)];

fn entry(entity: Entity<'_>, ops: &[(&str, f64, bool)]) -> EntryData {
    EntryData::default()
        .with_entity(
            entity
                .iter()
                .map(|(t, n)| {
                    EntityData::default()
                        .with_entity_type(s(t))
                        .with_entity_name(n.map(s))
                })
                .collect(),
        )
        .with_ops(
            ops.iter()
                .map(|(k, v, r)| {
                    OpData::default()
                        .with_key(s(k))
                        .with_value(*v)
                        .with_remove(*r)
                })
                .collect(),
        )
}

fn alter(
    client: &mut RawClient,
    entries: Vec<EntryData>,
    validate_only: bool,
) -> Vec<(i16, String)> {
    let response: AlterClientQuotasResponse = client.call(
        ApiKey::AlterClientQuotas,
        1,
        &AlterClientQuotasRequest::default()
            .with_entries(entries)
            .with_validate_only(validate_only),
    );
    response
        .entries
        .iter()
        .map(|e| {
            (
                e.error_code,
                e.error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Sets one quota on `entity` and checks it was accepted.
fn set_quota(addr: std::net::SocketAddr, entity: Entity<'_>, key: &str, value: f64) {
    let mut client = RawClient::connect(addr);
    let results = alter(
        &mut client,
        vec![entry(entity, &[(key, value, false)])],
        false,
    );
    assert_eq!(results, vec![(0, String::new())]);
}

/// A described entity: its "type=name" parts and its (key, value) pairs.
type Described = (Vec<String>, Vec<(String, f64)>);

/// Describes with (entity type, match type, match) components: error code and, per entity,
/// its "type=name" parts and its values.
fn describe(
    client: &mut RawClient,
    components: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> (i16, Vec<Described>) {
    let response: DescribeClientQuotasResponse = client.call(
        ApiKey::DescribeClientQuotas,
        1,
        &DescribeClientQuotasRequest::default()
            .with_components(
                components
                    .iter()
                    .map(|(t, m, n)| {
                        ComponentData::default()
                            .with_entity_type(s(t))
                            .with_match_type(*m)
                            .with_match(n.map(s))
                    })
                    .collect(),
            )
            .with_strict(strict),
    );
    let mut entries: Vec<_> = response
        .entries
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let entity: Vec<String> = e
                .entity
                .iter()
                .map(|p| {
                    let name = p
                        .entity_name
                        .as_ref()
                        .map_or("<default>".to_string(), |n| n.to_string());
                    format!("{}={name}", p.entity_type.as_str())
                })
                .collect();
            let values = e
                .values
                .iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect();
            (entity, values)
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    (response.error_code, entries)
}

#[test]
fn alter_and_describe_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);

    // Both APIs are advertised, v0-1.
    let versions: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 2, &ApiVersionsRequest::default());
    for key in [48, 49] {
        let api = versions.api_keys.iter().find(|a| a.api_key == key).unwrap();
        assert_eq!((api.min_version, api.max_version), (0, 1), "api {key}");
    }

    // validate_only checks and stores nothing.
    let results = alter(
        &mut client,
        vec![entry(
            &[("user", Some("alice"))],
            &[("producer_byte_rate", 1000.0, false)],
        )],
        true,
    );
    assert_eq!(results, vec![(0, String::new())]);
    assert_eq!(describe(&mut client, &[], false), (0, vec![]));

    let results = alter(
        &mut client,
        vec![
            entry(
                &[("user", Some("alice"))],
                &[
                    ("producer_byte_rate", 1000.0, false),
                    ("consumer_byte_rate", 2000.0, false),
                ],
            ),
            entry(&[("user", None)], &[("producer_byte_rate", 500.0, false)]),
            entry(
                &[("user", Some("alice")), ("client-id", Some("app"))],
                &[("consumer_byte_rate", 300.0, false)],
            ),
            entry(
                &[("client-id", None)],
                &[("consumer_byte_rate", 400.0, false)],
            ),
            // Refused, each with a message; they change nothing.
            entry(
                &[("user", Some("bob"))],
                &[("request_percentage", 50.0, false)],
            ),
            entry(
                &[("user", Some("bob"))],
                &[("controller_mutation_rate", 5.0, false)],
            ),
            entry(
                &[("ip", Some("127.0.0.1"))],
                &[("connection_creation_rate", 5.0, false)],
            ),
            entry(&[("user", Some("bob"))], &[("bogus_rate", 5.0, false)]),
            entry(
                &[("user", Some("bob"))],
                &[("producer_byte_rate", 1.5, false)],
            ),
            entry(
                &[("user", Some("bob")), ("user", Some("carol"))],
                &[("producer_byte_rate", 1.0, false)],
            ),
            entry(&[], &[("producer_byte_rate", 1.0, false)]),
        ],
        false,
    );
    for (code, message) in &results[..4] {
        assert_eq!((*code, message.as_str()), (0, ""));
    }
    for (code, message) in &results[4..] {
        assert_eq!(*code, INVALID_REQUEST, "{message}");
        assert!(!message.is_empty());
    }
    assert!(results[4].1.contains("not supported"), "{}", results[4].1);
    assert!(results[6].1.contains("not supported"), "{}", results[6].1);

    let (code, all) = describe(&mut client, &[], false);
    assert_eq!(code, 0);
    let names: Vec<Vec<String>> = all.iter().map(|e| e.0.clone()).collect();
    assert_eq!(
        names,
        vec![
            vec!["client-id=<default>".to_string()],
            vec!["user=<default>".to_string()],
            vec!["user=alice".to_string()],
            vec!["user=alice".to_string(), "client-id=app".to_string()],
        ]
    );
    let alice = &all[2].1;
    assert!(alice.contains(&("producer_byte_rate".to_string(), 1000.0)));
    assert!(alice.contains(&("consumer_byte_rate".to_string(), 2000.0)));

    // Exact, default and any matches; strict.
    assert_eq!(
        describe(&mut client, &[("user", 0, Some("alice"))], false)
            .1
            .len(),
        2
    );
    assert_eq!(
        describe(&mut client, &[("user", 0, Some("alice"))], true)
            .1
            .len(),
        1
    );
    let (_, defaults) = describe(&mut client, &[("user", 1, None)], true);
    assert_eq!(
        defaults,
        vec![(
            vec!["user=<default>".to_string()],
            vec![("producer_byte_rate".to_string(), 500.0)]
        )]
    );
    assert_eq!(describe(&mut client, &[("user", 2, None)], true).1.len(), 2);
    assert_eq!(
        describe(&mut client, &[("client-id", 2, None)], false)
            .1
            .len(),
        2
    );
    assert_eq!(
        describe(&mut client, &[("user", 2, None), ("user", 1, None)], false).0,
        INVALID_REQUEST
    );
    assert_eq!(
        describe(&mut client, &[("group", 2, None)], false).0,
        INVALID_REQUEST
    );

    // Removal of one key leaves the other; removing the last forgets the entity.
    let results = alter(
        &mut client,
        vec![
            entry(
                &[("user", Some("alice"))],
                &[("producer_byte_rate", 0.0, true)],
            ),
            entry(&[("user", None)], &[("producer_byte_rate", 0.0, true)]),
        ],
        false,
    );
    assert_eq!(results, vec![(0, String::new()), (0, String::new())]);
    let (_, alice) = describe(&mut client, &[("user", 0, Some("alice"))], true);
    assert_eq!(
        alice,
        vec![(
            vec!["user=alice".to_string()],
            vec![("consumer_byte_rate".to_string(), 2000.0)]
        )]
    );
    assert!(
        describe(&mut client, &[("user", 1, None)], true)
            .1
            .is_empty()
    );

    // Quotas are in the metadata log: a restart keeps them.
    drop(client);
    broker.stop();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(describe(&mut client, &[], false).1.len(), 3);
}

fn metrics_addr(broker: &Broker) -> String {
    broker
        .log()
        .iter()
        .find_map(|l| {
            let at = l.find("metrics_listen=")? + "metrics_listen=".len();
            Some(l[at..].split_whitespace().next()?.to_string())
        })
        .expect("the metrics address is logged")
}

/// Sum of the values of the series of `metric` whose labels contain `labels`.
fn metric(addr: &str, metric: &str, labels: &str) -> f64 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(labels))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Counts acknowledged bytes.
#[derive(Default)]
struct Acked {
    bytes: AtomicU64,
}

impl ClientContext for Acked {}

impl ProducerContext for Acked {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(message) = result {
            let len = message.payload().map_or(0, |p| p.len());
            self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        }
    }
}

/// A producer sending `VALUE_BYTES`-byte records as fast as it is let, until stopped.
struct Flood {
    producer: Arc<ThreadedProducer<Acked>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const VALUE_BYTES: usize = 1000;

impl Flood {
    fn start(config: &ClientConfig, topic: &str) -> Flood {
        let producer: Arc<ThreadedProducer<Acked>> =
            Arc::new(config.create_with_context(Acked::default()).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let producer = producer.clone();
            let stop = stop.clone();
            let topic = topic.to_string();
            std::thread::spawn(move || {
                let value = vec![b'q'; VALUE_BYTES];
                while !stop.load(Ordering::Relaxed) {
                    let record = BaseRecord::<(), [u8]>::to(&topic).payload(&value[..]);
                    if producer.send(record).is_err() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        };
        Flood {
            producer,
            stop,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> u64 {
        self.producer.context().bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = self.producer.flush(Duration::from_secs(1));
    }
}

fn producer_config(bootstrap: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("linger.ms", "5")
        .set("batch.size", "16384")
        // One request at a time: the throttle then shapes every request, not lumps of
        // pipelined ones read together once the connection is unmuted.
        .set("max.in.flight.requests.per.connection", "1")
        .set("queue.buffering.max.kbytes", "512")
        .set("message.timeout.ms", "120000");
    config
}

#[test]
fn producer_is_held_to_its_byte_rate_set_while_connected() {
    const QUOTA: f64 = 100_000.0;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "metrics-listen=127.0.0.1:0"]);
    let metrics = metrics_addr(&broker);
    let flood = Flood::start(
        &producer_config(&broker.bootstrap(), "held-producer"),
        "held",
    );
    // Unthrottled first, on connections that stay open.
    std::thread::sleep(Duration::from_secs(3));
    let free = flood.acked();
    assert!(
        free as f64 > 3.0 * QUOTA,
        "unthrottled it sends more than the quota: {free}"
    );
    set_quota(
        broker.addr,
        &[("client-id", Some("held-producer"))],
        "producer_byte_rate",
        QUOTA,
    );
    // Kafka's rate spans 11 one-second samples and at least 10 whole windows, so a fresh
    // meter lets about 10 s worth of the quota through at once, and the room comes back in
    // a lump each time that sample expires: the bytes come in 11-second cycles. Measured
    // over two whole cycles (22 s, from 5 s after the quota is set), the rate is the quota.
    let mut series = Vec::new();
    let mut last = flood.acked();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        let now = flood.acked();
        series.push(now - last);
        last = now;
    }
    let start = (flood.acked(), Instant::now());
    for _ in 0..22 {
        std::thread::sleep(Duration::from_secs(1));
        let now = flood.acked();
        series.push(now - last);
        last = now;
    }
    let end = (flood.acked(), Instant::now());
    eprintln!("acknowledged bytes, second by second: {series:?}");
    drop(flood);
    let rate = (end.0 - start.0) as f64 / (end.1 - start.1).as_secs_f64();
    eprintln!("held producer: {rate:.0} B/s of payload against a quota of {QUOTA} B/s");
    assert!(
        (rate - QUOTA).abs() <= 0.10 * QUOTA,
        "produced {rate:.0} B/s against a quota of {QUOTA} B/s"
    );
    let throttled = metric(
        &metrics,
        "ringbroker_quota_throttle_time_ms_total",
        "quota=\"producer_byte_rate\",user=\"\",client_id=\"held-producer\"",
    );
    assert!(throttled > 0.0, "throttle time is on /metrics");
}

#[test]
fn consumer_is_throttled_by_its_byte_rate() {
    const QUOTA: f64 = 100_000.0;
    const TOTAL: u64 = 2_500_000;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "metrics-listen=127.0.0.1:0"]);
    let metrics = metrics_addr(&broker);
    {
        let flood = Flood::start(&producer_config(&broker.bootstrap(), "filler"), "slow");
        let deadline = Instant::now() + Duration::from_secs(60);
        while flood.acked() < TOTAL && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(flood.acked() >= TOTAL);
    }
    set_quota(
        broker.addr,
        &[("client-id", Some("slow-consumer"))],
        "consumer_byte_rate",
        QUOTA,
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("client.id", "slow-consumer")
        .set("group.id", "slow")
        .set("fetch.max.bytes", "65536")
        .set("message.max.bytes", "65536")
        .set("max.partition.fetch.bytes", "65536")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("slow", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let started = Instant::now();
    let mut read = 0u64;
    while read < TOTAL && started.elapsed() < Duration::from_secs(90) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            read += message.payload().map_or(0, |p| p.len()) as u64;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("throttled consumer: {read} bytes in {elapsed:.1} s");
    assert!(read >= TOTAL, "read {read} bytes");
    // Kafka's rate spans at least 10 whole windows, so about 10 s worth of the quota may
    // go at once; the rest is held to the quota.
    let least = (TOTAL as f64 - 11.0 * QUOTA) / QUOTA * 0.9;
    assert!(
        elapsed >= least,
        "read {TOTAL} bytes in {elapsed:.1} s, expected >= {least:.1} s"
    );
    let throttled = metric(
        &metrics,
        "ringbroker_quota_throttled_requests_total",
        "quota=\"consumer_byte_rate\",user=\"\",client_id=\"slow-consumer\"",
    );
    assert!(throttled > 0.0, "throttled fetches are on /metrics");
}

const PLAIN_JAAS: &str = "listener.name.sasl_plaintext.plain.sasl.jaas.config=\
    org.apache.kafka.common.security.plain.PlainLoginModule required \
    user_admin=\"admin-secret\" user_alice=\"alice-secret\";";

#[test]
fn a_sasl_users_quota_beats_its_client_ids() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            "listeners=SASL_PLAINTEXT://127.0.0.1:0",
            "--set",
            "sasl.enabled.mechanisms=PLAIN",
            "--set",
            PLAIN_JAAS,
            "--set",
            "metrics-listen=127.0.0.1:0",
        ],
    );
    let metrics = metrics_addr(&broker);
    let mut config = producer_config(&broker.bootstrap(), "alice-app");
    config
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", "alice")
        .set("sasl.password", "alice-secret");
    sasl_alter(
        &broker,
        &[("client-id", Some("alice-app"))],
        "producer_byte_rate",
        1e9,
    );
    sasl_alter(
        &broker,
        &[("user", Some("alice"))],
        "producer_byte_rate",
        20_000.0,
    );
    let flood = Flood::start(&config, "alice-topic");
    std::thread::sleep(Duration::from_secs(6));
    let acked = flood.acked();
    drop(flood);
    // The user quota applies, not the client-id one (which would let it all through at
    // many MB/s): past the first requests (the producer's queue, 512 KiB, goes out before
    // the first throttle, as with Kafka) alice is held back.
    assert!(acked < 1_000_000, "alice sent {acked} bytes in 6 s");
    let user = metric(
        &metrics,
        "ringbroker_quota_throttled_requests_total",
        "quota=\"producer_byte_rate\",user=\"alice\",client_id=\"\"",
    );
    assert!(user > 0.0, "alice's user quota throttled her");
    let client = metric(
        &metrics,
        "ringbroker_quota_throttled_requests_total",
        "client_id=\"alice-app\"",
    );
    assert_eq!(client, 0.0, "the client-id quota is not the one measured");
}

/// AlterClientQuotas over SASL PLAIN as `admin` (a raw client authenticates first).
fn sasl_alter(broker: &Broker, entity: Entity<'_>, key: &str, value: f64) {
    use bytes::Bytes;
    use kafka_protocol::messages::{
        SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
        SaslHandshakeResponse,
    };
    let mut client = RawClient::connect(broker.addr);
    let handshake: SaslHandshakeResponse = client.call(
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
    );
    assert_eq!(handshake.error_code, 0);
    let auth: SaslAuthenticateResponse = client.call(
        ApiKey::SaslAuthenticate,
        2,
        &SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from_static(b"\0admin\0admin-secret")),
    );
    assert_eq!(auth.error_code, 0);
    let results = alter(
        &mut client,
        vec![entry(entity, &[(key, value, false)])],
        false,
    );
    assert_eq!(results, vec![(0, String::new())]);
}

#[test]
fn an_acks_0_producer_is_muted_too() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "metrics-listen=127.0.0.1:0"]);
    let metrics = metrics_addr(&broker);
    set_quota(
        broker.addr,
        &[("client-id", Some("fire-and-forget"))],
        "producer_byte_rate",
        20_000.0,
    );
    let mut config = producer_config(&broker.bootstrap(), "fire-and-forget");
    config.set("acks", "0");
    let flood = Flood::start(&config, "unacked");
    std::thread::sleep(Duration::from_secs(6));
    drop(flood);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks("unacked", 0, Duration::from_secs(10))
        .unwrap();
    eprintln!("acks=0 producer: {high} records in 6 s");
    // Unthrottled, acks=0 writes tens of MB in 6 s; muted, about 10 s worth of the quota
    // and the requests already in flight.
    assert!(
        high > 0 && high < 1500,
        "{high} records of {VALUE_BYTES} bytes in 6 s"
    );
    let throttled = metric(
        &metrics,
        "ringbroker_quota_throttled_requests_total",
        "client_id=\"fire-and-forget\"",
    );
    assert!(throttled > 0.0);
}

#[test]
fn a_client_ids_connections_on_both_shards_share_one_quota() {
    const QUOTA: f64 = 100_000.0;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &["--set", "cores=0-1", "--set", "metrics-listen=127.0.0.1:0"],
    );
    let metrics = metrics_addr(&broker);
    set_quota(
        broker.addr,
        &[("client-id", Some("spread"))],
        "producer_byte_rate",
        QUOTA,
    );
    // Six producers of one client id: the kernel spreads their connections over the shards.
    let floods: Vec<Flood> = (0..6)
        .map(|_| Flood::start(&producer_config(&broker.bootstrap(), "spread"), "spread"))
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    for shard in ["0", "1"] {
        let open = metric(
            &metrics,
            "ringbroker_connections",
            &format!("shard=\"{shard}\""),
        );
        assert!(open > 0.0, "no connection on shard {shard}");
    }
    let acked = |floods: &[Flood]| floods.iter().map(Flood::acked).sum::<u64>();
    let start = (acked(&floods), Instant::now());
    std::thread::sleep(Duration::from_secs(22));
    let end = (acked(&floods), Instant::now());
    drop(floods);
    let rate = (end.0 - start.0) as f64 / (end.1 - start.1).as_secs_f64();
    eprintln!("six producers on two shards: {rate:.0} B/s against a quota of {QUOTA} B/s");
    // Measured per shard alone, the two shards would let about twice the quota through.
    assert!(
        (0.6 * QUOTA..=1.25 * QUOTA).contains(&rate),
        "produced {rate:.0} B/s against one quota of {QUOTA} B/s"
    );
}
