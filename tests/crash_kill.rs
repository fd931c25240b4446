//! Crash safety: a broker killed with SIGKILL while an acks=all producer runs loses no
//! acknowledged message.
//!
//! Each run starts a broker on a fresh data directory, runs an rdkafka producer (acks=all)
//! that records every acknowledged (partition, offset, value), kills the broker with SIGKILL
//! after a seeded random delay, restarts it on the same directory and reads every partition:
//! each acknowledged message must be at its acknowledged offset with the identical value.
//! Messages that were not acknowledged may or may not be there. Appends then continue after
//! the recovered end.
//!
//! The seeds are printed; `RINGBROKER_CRASH_SEED=<n>` repeats a run's choices (delay, linger,
//! value sizes). The kill's exact moment still depends on timing.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use support::Broker;

const RUNS: u64 = 5;
const TOPIC: &str = "crash";
const PARTITIONS: i32 = 6;

/// splitmix64: a tiny seeded generator (no extra dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One acknowledged message.
#[derive(Debug, Clone)]
struct Acked {
    partition: i32,
    offset: i64,
    value: Vec<u8>,
}

/// Records every acknowledgement.
#[derive(Default)]
struct Recorder {
    acked: Mutex<Vec<Acked>>,
    failed: Mutex<u64>,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(msg) => self.acked.lock().unwrap().push(Acked {
                partition: msg.partition(),
                offset: msg.offset(),
                value: msg.payload().unwrap_or_default().to_vec(),
            }),
            Err(_) => *self.failed.lock().unwrap() += 1,
        }
    }
}

fn block<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

fn create_topic(broker: &Broker) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = block(admin.create_topics(
        &[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))],
        &options,
    ))
    .unwrap();
    assert_eq!(results[0], Ok(TOPIC.to_string()));
}

fn new_producer(broker: &Broker, linger_ms: u64) -> ThreadedProducer<Recorder> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("message.timeout.ms", "10000")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(Recorder::default())
        .unwrap()
}

fn value(run: u64, i: u64, size: usize) -> Vec<u8> {
    let mut v = format!("run{run}-msg{i}-").into_bytes();
    v.extend((0..size).map(|k| (i as usize).wrapping_mul(7).wrapping_add(k * 13) as u8));
    v
}

/// Every record of the topic by (partition, offset).
type Records = HashMap<(i32, i64), Vec<u8>>;

/// Every record of every partition, and the (low, high) watermarks.
fn read_everything(broker: &Broker) -> (Records, Vec<(i64, i64)>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "crash-check")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let marks: Vec<(i64, i64)> = (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
                .expect("watermarks after restart")
        })
        .collect();
    let mut assignment = TopicPartitionList::new();
    for (p, (low, _)) in marks.iter().enumerate() {
        assignment
            .add_partition_offset(TOPIC, p as i32, Offset::Offset(*low))
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let wanted: i64 = marks.iter().map(|(low, high)| high - low).sum();
    let mut records = HashMap::new();
    let mut last_progress = Instant::now();
    while (records.len() as i64) < wanted {
        match consumer.poll(Duration::from_millis(500)) {
            None => assert!(
                last_progress.elapsed() < Duration::from_secs(60),
                "no progress for 60 s reading back: {} of {wanted} records, watermarks {marks:?}",
                records.len()
            ),
            Some(Err(err)) => panic!("consume error after restart: {err}"),
            Some(Ok(msg)) => {
                records.insert(
                    (msg.partition(), msg.offset()),
                    msg.payload().unwrap_or_default().to_vec(),
                );
                last_progress = Instant::now();
            }
        }
    }
    (records, marks)
}

fn crash_run(run: u64, seed: u64) {
    let mut rng = Rng(seed);
    let delay = Duration::from_millis(200 + rng.below(2300));
    let linger_ms = rng.below(10);
    let max_value = 10 + rng.below(500) as usize;
    eprintln!(
        "crash run {run}: seed {seed} kill after {delay:?} of acks, linger.ms {linger_ms}, \
         values up to {max_value} bytes"
    );
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(&broker);

    let producer = Arc::new(new_producer(&broker, linger_ms));
    let stop = Arc::new(AtomicBool::new(false));
    let sizes: Vec<usize> = (0..1024)
        .map(|_| rng.below(max_value as u64) as usize)
        .collect();
    let sender = {
        let producer = producer.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v = value(run, i, sizes[i as usize % sizes.len()]);
                let key = i.to_string();
                let record = BaseRecord::to(TOPIC)
                    .partition((i % PARTITIONS as u64) as i32)
                    .key(&key)
                    .payload(&v);
                match producer.send(record) {
                    Ok(()) => i += 1,
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            i
        })
    };
    // The delay counts from the first acknowledgement, so the kill lands mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while producer.context().acked.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no acknowledgement within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(delay);
    let status = broker.stop_with("KILL");
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    // Whatever is still in flight fails; only what was acknowledged counts.
    let _ = producer.flush(Duration::from_secs(15));
    let acked = producer.context().acked.lock().unwrap().clone();
    let failed = *producer.context().failed.lock().unwrap();
    drop(producer);
    eprintln!(
        "crash run {run}: killed ({status}); sent {sent}, acknowledged {}, failed {failed}",
        acked.len()
    );
    assert!(!acked.is_empty());

    let broker = Broker::start_in(dir.path(), &[]);
    let (records, marks) = read_everything(&broker);
    // No two acknowledgements name the same offset.
    let distinct: std::collections::HashSet<(i32, i64)> =
        acked.iter().map(|a| (a.partition, a.offset)).collect();
    assert_eq!(
        distinct.len(),
        acked.len(),
        "two acknowledgements for one offset"
    );
    let mut lost = 0usize;
    let mut examples = Vec::new();
    for ack in &acked {
        let found = records.get(&(ack.partition, ack.offset));
        if found != Some(&ack.value) {
            lost += 1;
            if examples.len() < 20 {
                examples.push(format!(
                    "p{} offset {}: acknowledged {:?}, found {:?}",
                    ack.partition,
                    ack.offset,
                    String::from_utf8_lossy(&ack.value[..ack.value.len().min(24)]),
                    found.map(|v| String::from_utf8_lossy(&v[..v.len().min(24)]).to_string())
                ));
            }
        }
    }
    assert!(
        lost == 0,
        "crash run {run} (seed {seed}): {lost} of {} acknowledged messages missing or different \
         after SIGKILL and restart (watermarks {marks:?}):\n{}\nbroker log after restart:\n{}",
        acked.len(),
        examples.join("\n"),
        broker.log().join("\n")
    );
    eprintln!(
        "crash run {run}: all {} acknowledged messages found; watermarks {marks:?}",
        acked.len()
    );

    // Appends continue after the recovered end of every partition.
    let producer = new_producer(&broker, 0);
    for p in 0..PARTITIONS {
        let v = value(run, u64::MAX - p as u64, 16);
        producer
            .send(BaseRecord::to(TOPIC).partition(p).key("after").payload(&v))
            .map_err(|(err, _)| err)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let after = producer.context().acked.lock().unwrap().clone();
    assert_eq!(
        after.len(),
        PARTITIONS as usize,
        "appends after recovery are acknowledged"
    );
    for ack in &after {
        assert_eq!(
            ack.offset, marks[ack.partition as usize].1,
            "partition {}: the first append after recovery lands at the recovered end",
            ack.partition
        );
    }
    assert!(broker.stop().success(), "graceful stop after recovery");
}

#[test]
fn sigkill_during_acks_all_produce_loses_no_acknowledged_message() {
    let base = std::env::var("RINGBROKER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000
        });
    eprintln!(
        "crash seeds: {base} .. {} (RINGBROKER_CRASH_SEED={base})",
        base + RUNS - 1
    );
    for run in 0..RUNS {
        crash_run(run, base + run);
    }
}
