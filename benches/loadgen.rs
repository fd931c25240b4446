//! End-to-end load generator (`make bench`, or `cargo bench --bench loadgen -- --help`).
//!
//! Drives a Kafka-API broker through librdkafka (the `rdkafka` crate) by default, or through
//! our own lean client (`--client lean`, `loadgen/lean.rs`: fewer CPU cycles per message, so
//! the client core saturates later), with a workload in the
//! OpenMessaging Benchmark's terms: topics, partitions per topic, message size, producers,
//! consumers, target rate, duration, warm-up, acks, batch size / linger, compression and key
//! distribution. By default it starts ringbroker itself (the release binary beside this bench
//! in the target dir, a temp data dir, `--listen 127.0.0.1:0`, pinned with `--cores`);
//! `--bootstrap host:port` drives any other broker instead (Kafka, Redpanda) with the same
//! workload, so the figures compare.
//!
//! Latency is open loop: each producer sends at a constant rate, and every message carries its
//! *intended* send time (nanoseconds since the run's start, in the first 8 bytes of the value).
//! If the client or broker stalls, messages fall behind schedule and the wait counts against
//! latency (no coordinated omission). Publish latency is intended send to delivery report (ack);
//! end-to-end latency is intended send to the consumer seeing the message. Both go into
//! hdrhistograms in microseconds. The broker's CPU time comes from `/proc/<pid>/stat` before and
//! after the measured window; the generator's own from `/proc/self/stat`, to show which side is
//! saturated.
//!
//! The generator pins itself (and, by inheritance, librdkafka's threads) to the cores in
//! `--client-cores`, away from the broker's `--broker-cores`.
//!
//! Modes: a single run at `--rate`; `--max-rate` steps the rate up until the achieved rate falls
//! short of the target or p99 publish latency exceeds `--p99-limit-ms`, then bisects; `--sweep`
//! runs a list of rates (or fractions of a found max) and writes the JSON of every point plus an
//! SVG and a PNG (plotters) of latency percentiles against throughput; `--catchup` produces a backlog as fast as the
//! broker takes it and then times consumers reading it from the beginning.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::json;

#[path = "loadgen/lean.rs"]
mod lean;

/// Which client library drives the broker.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum ClientKind {
    /// librdkafka through the `rdkafka` crate (the reference).
    Librdkafka,
    /// Our own minimal client (`loadgen/lean.rs`): less CPU per message.
    Lean,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum KeyDistribution {
    /// No key: librdkafka's sticky partitioner spreads batches over partitions.
    NoKey,
    /// Key = message counter: round robin over partitions by hash.
    RoundRobin,
    /// Key = a random 8-byte value per message.
    Random,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadgen",
    about = "End-to-end Kafka-API load generator (open loop)"
)]
struct Args {
    /// Drive this broker instead of starting ringbroker.
    #[arg(long)]
    bootstrap: Option<String>,
    /// ringbroker binary (default: target/release/ringbroker beside this bench).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Cores given to the started broker (`ringbroker serve --cores`).
    #[arg(long, default_value = "0")]
    broker_cores: String,
    /// Cores the generator and librdkafka's threads are pinned to (comma list).
    #[arg(long, default_value = "1")]
    client_cores: String,
    /// Extra `--set KEY=VALUE` for the started broker (repeatable).
    #[arg(long = "broker-set")]
    broker_set: Vec<String>,
    /// `--config FILE` for the started broker.
    #[arg(long)]
    broker_config: Option<PathBuf>,
    /// Data dir of the started broker (default: a temp dir under /tmp, removed after).
    #[arg(long)]
    data_dir: Option<PathBuf>,

    #[arg(long, default_value_t = 1)]
    topics: usize,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Replicas of each topic created (needs as many brokers: a cluster, `--bootstrap`).
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
    /// `min.insync.replicas` of each topic created (default: the broker's).
    #[arg(long)]
    min_insync_replicas: Option<u32>,
    /// Message value size in bytes (at least 8: the send timestamp).
    #[arg(long, default_value_t = 1024)]
    message_size: usize,
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Target rate in messages/s over all producers (open loop).
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Warm-up seconds (sent, not measured).
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// librdkafka batch.size in bytes.
    #[arg(long, default_value_t = 131_072)]
    batch_size: usize,
    /// librdkafka linger.ms.
    #[arg(long, default_value_t = 1.0)]
    linger_ms: f64,
    /// none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    #[arg(long, value_enum, default_value = "no-key")]
    keys: KeyDistribution,
    /// Client library: librdkafka (default) or lean (ours, `loadgen/lean.rs`; no compression,
    /// no --catchup).
    #[arg(long, value_enum, default_value = "librdkafka")]
    client: ClientKind,
    /// Lean client: Produce requests in flight per connection (the broker takes 64).
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Extra librdkafka producer settings `key=value` (repeatable).
    #[arg(long = "producer-set")]
    producer_set: Vec<String>,

    /// Find the highest sustainable rate, starting at --rate.
    #[arg(long)]
    max_rate: bool,
    /// Growth factor per max-rate step.
    #[arg(long, default_value_t = 1.5)]
    step_factor: f64,
    /// A step fails when p99 publish latency exceeds this.
    #[arg(long, default_value_t = 500.0)]
    p99_limit_ms: f64,
    /// A step fails when the achieved rate is below this fraction of the target.
    #[arg(long, default_value_t = 0.95)]
    achieved_min: f64,
    /// Bisection rounds after the first failing step.
    #[arg(long, default_value_t = 2)]
    bisect: usize,
    /// Sweep: comma list of rates in msgs/s, or of fractions (<= 1.5) of the max rate found
    /// first (e.g. `0.1,0.25,0.5,0.75,0.9`).
    #[arg(long)]
    sweep: Option<String>,
    /// Catch-up: produce this many MB as fast as possible, then time consumers reading it.
    #[arg(long)]
    catchup: Option<f64>,
    /// Where JSON results go (one object per run, plus the sweep summary).
    #[arg(long, default_value = "target/loadgen")]
    out_dir: PathBuf,
    /// Label for output file names.
    #[arg(long, default_value = "run")]
    label: String,

    /// Redraw the SVG and PNG of a sweep from its JSON (`<label>.json` of an earlier `--sweep`)
    /// into --out-dir, without running anything.
    #[arg(long)]
    plot: Option<PathBuf>,

    /// `cargo bench` passes this to harness-less benches.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Time base shared by producers and consumers: payloads carry nanoseconds since it.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

fn new_hist() -> Histogram<u64> {
    // Microseconds, up to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()
}

/// CPU seconds (user + system) of a process from /proc/<pid>/stat.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// Per CPU, from `/proc/stat`: (busy seconds, of which interrupt and softirq seconds). Busy is
/// everything but idle and iowait, whoever ran: our threads, other processes, the kernel's
/// network processing for loopback traffic. The fraction of a window a CPU was busy is the
/// plain answer to "was this core saturated".
fn cpu_busy_seconds() -> std::collections::BTreeMap<usize, (f64, f64)> {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu: usize = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let v: Vec<f64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
            if v.len() < 8 {
                return None;
            }
            let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
            Some((cpu, (busy / ticks, (v[5] + v[6]) / ticks)))
        })
        .collect()
}

/// Seconds on a CPU and seconds runnable but waiting for one (`/proc/<pid>/task/*/schedstat`),
/// summed over the threads of `pid` whose name starts with `prefix` (all threads if empty).
/// The broker's shard threads are named `shard-core<N>-<id>` (glommio names executor threads
/// after the builder's name), so `shard-core` selects the executors and leaves out glommio's
/// blocking pool. On a shared machine "waiting" is time the thread wanted a core and another
/// process had it: busy + waiting near 1.0 per thread means that thread is saturated.
fn thread_times(pid: &str, prefix: &str) -> Option<(f64, f64)> {
    let mut run_s = 0.0;
    let mut wait_s = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = task.ok()?.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        let mut fields = stat
            .split_whitespace()
            .map(|f| f.parse::<f64>().unwrap_or(0.0));
        run_s += fields.next().unwrap_or(0.0) / 1e9;
        wait_s += fields.next().unwrap_or(0.0) / 1e9;
    }
    Some((run_s, wait_s))
}

/// Seconds on a CPU per thread name of `pid`, names with their trailing numbers cut off
/// (`shard-core0-1` -> `shard-core0`, `iou-wrk-1234` -> `iou-wrk`): shows where a broker's CPU
/// goes beyond its executors (io_uring's kernel workers run the fdatasyncs, for one).
fn thread_groups(pid: &str) -> std::collections::BTreeMap<String, f64> {
    let mut groups = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let name = name
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .trim_end_matches('-')
            .to_string();
        let run_s = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1e9;
        *groups.entry(name).or_insert(0.0) += run_s;
    }
    groups
}

fn parse_cores(list: &str) -> Vec<usize> {
    let mut cores = Vec::new();
    for part in list.split(',').filter(|s| !s.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            cores.extend(a..=b);
        } else {
            cores.push(part.parse().unwrap());
        }
    }
    cores
}

/// Pin the calling thread to `cores` (threads it spawns later inherit the mask, so librdkafka's
/// internal threads land there too).
fn pin_to(cores: &[usize]) {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cores {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        eprintln!("loadgen: could not pin to cores {cores:?}");
    }
    // core_affinity for the single-core case keeps the crate's view consistent.
    if cores.len() == 1 {
        core_affinity::set_for_current(core_affinity::CoreId { id: cores[0] });
    }
}

struct Broker {
    child: Child,
    bootstrap: String,
    data_dir: PathBuf,
    remove_dir: bool,
}

impl Broker {
    fn start(args: &Args) -> Broker {
        let bin = args.broker_bin.clone().unwrap_or_else(|| {
            // target/release/deps/loadgen-HASH -> target/release/ringbroker
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("ringbroker")
        });
        assert!(
            bin.exists(),
            "no broker binary at {} (cargo build --release)",
            bin.display()
        );
        let (data_dir, remove_dir) = match &args.data_dir {
            Some(d) => (d.clone(), false),
            None => {
                let d = std::env::temp_dir().join(format!("loadgen-{}", std::process::id()));
                (d, true)
            }
        };
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("serve");
        if let Some(c) = &args.broker_config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(["--listen", "127.0.0.1:0", "--cores", &args.broker_cores])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--log-level", "warn,ringbroker=info"]);
        for s in &args.broker_set {
            cmd.args(["--set", s]);
        }
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start broker");
        let stderr = child.stderr.take().unwrap();
        // The broker's whole stderr goes to a file beside the results, for post-mortems.
        std::fs::create_dir_all(&args.out_dir).unwrap();
        let log_path = args.out_dir.join(format!("{}-broker.log", args.label));
        let mut log = std::fs::File::create(&log_path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("ringbroker ready") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line);
                    }
                } else if line.contains("ERROR") || line.contains("WARN") {
                    eprintln!("broker: {line}");
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("broker did not print `ringbroker ready` within 30 s");
        let port = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen=127.0.0.1:"))
            .expect("listen=127.0.0.1:PORT in the ready line")
            .trim_matches(|c: char| !c.is_ascii_digit())
            .to_string();
        eprintln!(
            "loadgen: started {} pid {} on cores {} at 127.0.0.1:{port}, log {}",
            bin.display(),
            child.id(),
            args.broker_cores,
            log_path.display()
        );
        Broker {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            data_dir,
            remove_dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

fn block<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

fn create_topics(bootstrap: &str, names: &[String], args: &Args) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let min_insync = args.min_insync_replicas.map(|n| n.to_string());
    let new: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            let topic = NewTopic::new(
                n,
                args.partitions,
                TopicReplication::Fixed(args.replication_factor),
            );
            match &min_insync {
                Some(value) => topic.set("min.insync.replicas", value),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in block(admin.create_topics(&new, &options)).expect("CreateTopics") {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => panic!("create topic {name}: {code:?}"),
        }
    }
}

/// Deletes a finished run's topics, so that a long search or sweep (several GB per step at the
/// knee) does not fill the broker's disk. A failure is reported and otherwise ignored: the
/// figures are already taken.
fn delete_topics(bootstrap: &str, names: &[String]) {
    let admin: AdminClient<DefaultClientContext> = match ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
    {
        Ok(admin) => admin,
        Err(e) => return eprintln!("loadgen: admin client for DeleteTopics: {e}"),
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    match block(admin.delete_topics(&refs, &options)) {
        Ok(results) => {
            for (name, code) in results.into_iter().filter_map(Result::err) {
                eprintln!("loadgen: delete topic {name}: {code:?}");
            }
        }
        Err(e) => eprintln!("loadgen: DeleteTopics: {e}"),
    }
}

/// Per-run counters and histograms shared by the delivery callbacks and consumers.
struct Stats {
    /// Intended send time (ns since base) from which samples count.
    measure_from_ns: AtomicU64,
    /// Intended send time after which samples no longer count.
    measure_until_ns: AtomicU64,
    publish: Mutex<Histogram<u64>>,
    e2e: Mutex<Histogram<u64>>,
    acked: AtomicU64,
    acked_in_window: AtomicU64,
    failed: AtomicU64,
    consumed: AtomicU64,
    consumed_bytes: AtomicU64,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            measure_from_ns: AtomicU64::new(u64::MAX),
            measure_until_ns: AtomicU64::new(u64::MAX),
            publish: Mutex::new(new_hist()),
            e2e: Mutex::new(new_hist()),
            acked: AtomicU64::new(0),
            acked_in_window: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
        }
    }

    fn in_window(&self, intended_ns: u64) -> bool {
        intended_ns >= self.measure_from_ns.load(Ordering::Relaxed)
            && intended_ns < self.measure_until_ns.load(Ordering::Relaxed)
    }
}

struct Delivery(Arc<Stats>);

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, intended_ns: Box<u64>) {
        let now = now_ns();
        match result {
            Ok(_) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
                // Throughput counts acks that arrive inside the window (by ack time).
                let from = self.0.measure_from_ns.load(Ordering::Relaxed);
                let until = self.0.measure_until_ns.load(Ordering::Relaxed);
                if now >= from && now < until {
                    self.0.acked_in_window.fetch_add(1, Ordering::Relaxed);
                }
                if self.0.in_window(*intended_ns) {
                    let us = (now.saturating_sub(*intended_ns) / 1000).max(1);
                    let _ = self.0.publish.lock().unwrap().record(us);
                }
            }
            Err(_) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn producer_config(args: &Args, bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("acks", &args.acks)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        .set("compression.type", &args.compression)
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "60000")
        .set("enable.idempotence", "false");
    for kv in &args.producer_set {
        let (k, v) = kv.split_once('=').expect("--producer-set key=value");
        c.set(k, v);
    }
    c
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // Needed by BaseConsumer even for assign(); nothing commits (no groups on ringbroker yet).
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.min.bytes", "1")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "4194304")
        .set("queued.max.messages.kbytes", "262144")
        .create()
        .expect("consumer")
}

/// Every (topic, partition), split round robin over `n` consumers.
fn split_partitions(topics: &[String], partitions: i32, n: usize) -> Vec<Vec<(String, i32)>> {
    let mut out = vec![Vec::new(); n.max(1)];
    let mut i = 0;
    for t in topics {
        for p in 0..partitions {
            out[i % n.max(1)].push((t.clone(), p));
            i += 1;
        }
    }
    out
}

fn payload_template(size: usize) -> Vec<u8> {
    // Incompressible-ish bytes (xorshift), like OMB's random payload files.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..size.max(8))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    p9999: f64,
    max: f64,
    count: u64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        p9999: ms(h.value_at_quantile(0.9999)),
        max: ms(h.max()),
        count: h.len(),
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct RunResult {
    label: String,
    target_rate: f64,
    achieved_msgs_per_s: f64,
    achieved_mb_per_s: f64,
    consumed_msgs_per_s: f64,
    message_size: usize,
    partitions: i32,
    topics: usize,
    acks: String,
    publish_ms: Percentiles,
    e2e_ms: Percentiles,
    failed: u64,
    /// Broker CPU seconds per MB produced in the window (None with --bootstrap).
    broker_cpu_s_per_mb: Option<f64>,
    /// Broker CPU use in the window, in cores (1.0 = one core busy).
    broker_cpu_cores: Option<f64>,
    /// Generator (this process, librdkafka included) CPU use in the window, in cores.
    client_cpu_cores: f64,
    /// Messages that were behind schedule by more than 10 ms when sent (client saturated).
    late_sends: u64,
    /// The broker's shard (executor) threads: on-CPU time in the window, in cores.
    #[serde(default)]
    broker_shard_busy_cores: Option<f64>,
    /// The broker's shard threads: time runnable but waiting for a CPU, in cores.
    #[serde(default)]
    broker_shard_wait_cores: Option<f64>,
    /// This process's threads: time runnable but waiting for a CPU, in cores.
    #[serde(default)]
    client_wait_cores: f64,
    /// The broker's on-CPU time in the window per thread name, in cores (threads that started
    /// or ended inside the window count from their first or to their last sample).
    #[serde(default)]
    broker_threads_cores: Option<std::collections::BTreeMap<String, f64>>,
    /// Which client library ran (librdkafka in JSON written before the lean client existed).
    #[serde(default = "default_client_name")]
    client: String,
    /// Per CPU (`cpu0`, ...): the fraction of the window it was busy with anything (all
    /// processes, interrupts and softirqs), and of that the interrupt and softirq share.
    #[serde(default)]
    cpu_busy: std::collections::BTreeMap<String, (f64, f64)>,
}

fn default_client_name() -> String {
    "librdkafka".to_string()
}

fn print_result(r: &RunResult) {
    let p = &r.publish_ms;
    let e = &r.e2e_ms;
    println!(
        "[{}] target {:.0} msg/s: achieved {:.0} msg/s {:.1} MB/s (consumed {:.0} msg/s), failed {}, late sends {}",
        r.label,
        r.target_rate,
        r.achieved_msgs_per_s,
        r.achieved_mb_per_s,
        r.consumed_msgs_per_s,
        r.failed,
        r.late_sends
    );
    println!(
        "  publish ms: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} p99.99 {:.3} max {:.3} (n={})",
        p.p50, p.p90, p.p99, p.p999, p.p9999, p.max, p.count
    );
    println!(
        "  e2e     ms: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} p99.99 {:.3} max {:.3} (n={})",
        e.p50, e.p90, e.p99, e.p999, e.p9999, e.max, e.count
    );
    println!(
        "  broker cpu: {} s/MB, {} cores busy; client ({}) cpu {:.2} cores",
        r.broker_cpu_s_per_mb
            .map_or("n/a".into(), |v| format!("{v:.4}")),
        r.broker_cpu_cores
            .map_or("n/a".into(), |v| format!("{v:.2}")),
        r.client,
        r.client_cpu_cores
    );
    println!(
        "  threads: broker shards on-cpu {} + runnable-waiting {} cores; client runnable-waiting {:.2} cores",
        r.broker_shard_busy_cores
            .map_or("n/a".into(), |v| format!("{v:.2}")),
        r.broker_shard_wait_cores
            .map_or("n/a".into(), |v| format!("{v:.2}")),
        r.client_wait_cores
    );
    if let Some(groups) = &r.broker_threads_cores {
        let list: Vec<String> = groups
            .iter()
            .filter(|(_, busy)| **busy >= 0.005)
            .map(|(name, busy)| format!("{name} {busy:.2}"))
            .collect();
        println!("  broker threads on-cpu (cores): {}", list.join(", "));
    }
    if !r.cpu_busy.is_empty() {
        let list: Vec<String> = r
            .cpu_busy
            .iter()
            .map(|(cpu, (busy, irq))| format!("{cpu} {busy:.2} (irq+softirq {irq:.2})"))
            .collect();
        println!("  cpus busy (whole host): {}", list.join(", "));
    }
}

struct Target {
    bootstrap: String,
    broker_pid: Option<String>,
}

static RUN_SEQ: AtomicU64 = AtomicU64::new(0);

/// One open-loop run at `rate` msgs/s on fresh topics.
fn run_once(args: &Args, target: &Target, rate: f64, label: &str) -> RunResult {
    let seq = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
    let topics: Vec<String> = (0..args.topics)
        .map(|t| format!("loadgen-{}-{seq}-{t}", std::process::id()))
        .collect();
    create_topics(&target.bootstrap, &topics, args);
    let stats = Arc::new(Stats::new());
    let stop = Arc::new(AtomicBool::new(false));
    let produced_total = Arc::new(AtomicU64::new(0));
    let late = Arc::new(AtomicU64::new(0));
    let lean_map = match args.client {
        ClientKind::Lean => Some(Arc::new(
            lean::discover(&target.bootstrap, &topics, args.partitions)
                .expect("lean client: metadata"),
        )),
        ClientKind::Librdkafka => None,
    };

    // Consumers first, at the end of each (empty) partition.
    let mut consumer_threads = Vec::new();
    let consumers_ready = Arc::new(AtomicU64::new(0));
    for (i, parts) in split_partitions(&topics, args.partitions, args.consumers)
        .into_iter()
        .enumerate()
    {
        let bootstrap = target.bootstrap.clone();
        let stats = stats.clone();
        let stop = stop.clone();
        let produced_total = produced_total.clone();
        let ready = consumers_ready.clone();
        if let Some(map) = &lean_map {
            // One thread per leader broker of this consumer's partitions.
            let mut by_leader: std::collections::BTreeMap<i32, Vec<(String, i32)>> =
                Default::default();
            for part in parts {
                by_leader.entry(map.leaders[&part]).or_default().push(part);
            }
            for (broker, parts) in by_leader {
                consumer_threads.push(spawn_lean_consumer(
                    map.clone(),
                    broker,
                    parts,
                    stats.clone(),
                    stop.clone(),
                    produced_total.clone(),
                    ready.clone(),
                ));
            }
            continue;
        }
        consumer_threads.push(std::thread::spawn(move || {
            let c = consumer(&bootstrap, &format!("loadgen-{i}"));
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &parts {
                tpl.add_partition_offset(t, *p, Offset::Beginning).unwrap();
            }
            c.assign(&tpl).unwrap();
            ready.fetch_add(1, Ordering::Relaxed);
            let mut local = new_hist();
            let mut idle_since: Option<Instant> = None;
            loop {
                match c.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let now = now_ns();
                        idle_since = None;
                        if let Some(v) = m.payload() {
                            stats.consumed.fetch_add(1, Ordering::Relaxed);
                            stats
                                .consumed_bytes
                                .fetch_add(v.len() as u64, Ordering::Relaxed);
                            if v.len() >= 8 {
                                let sent = u64::from_le_bytes(v[..8].try_into().unwrap());
                                if stats.in_window(sent) {
                                    let _ = local.record((now.saturating_sub(sent) / 1000).max(1));
                                }
                            }
                        }
                    }
                    Some(Err(e)) => eprintln!("loadgen: consumer error {e}"),
                    None => {
                        if stop.load(Ordering::Relaxed) {
                            let done = stats.consumed.load(Ordering::Relaxed)
                                >= produced_total.load(Ordering::Relaxed);
                            let idle = *idle_since.get_or_insert_with(Instant::now);
                            if done || idle.elapsed() > Duration::from_secs(10) {
                                break;
                            }
                        }
                    }
                }
            }
            stats.e2e.lock().unwrap().add(&local).unwrap();
        }));
    }
    while consumers_ready.load(Ordering::Relaxed) < consumer_threads.len() as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the consumers' first fetches reach the broker.
    std::thread::sleep(Duration::from_millis(500));

    let start_ns = now_ns() + 100_000_000;
    let warmup_ns = (args.warmup * 1e9) as u64;
    let duration_ns = (args.duration * 1e9) as u64;
    let window_from = start_ns + warmup_ns;
    let window_until = window_from + duration_ns;
    stats.measure_from_ns.store(window_from, Ordering::Relaxed);
    stats
        .measure_until_ns
        .store(window_until, Ordering::Relaxed);

    let template = Arc::new(payload_template(args.message_size));
    let producers = args.producers.max(1);
    let per_producer = rate / producers as f64;
    let mut producer_threads = Vec::new();
    for pi in 0..producers {
        if let Some(map) = &lean_map {
            let interval_ns = 1e9 / per_producer;
            let schedule = lean::Schedule {
                start_ns,
                offset_ns: interval_ns * pi as f64 / producers as f64,
                interval_ns,
                end_ns: window_until,
            };
            producer_threads.push(spawn_lean_producer(
                args,
                map.clone(),
                topics.clone(),
                schedule,
                template.clone(),
                LeanSink {
                    stats: stats.clone(),
                    hist: new_hist(),
                    produced_total: produced_total.clone(),
                    late: late.clone(),
                },
            ));
            continue;
        }
        let producer: ThreadedProducer<Delivery> = producer_config(args, &target.bootstrap)
            .create_with_context(Delivery(stats.clone()))
            .expect("producer");
        let topics = topics.clone();
        let template = template.clone();
        let produced_total = produced_total.clone();
        let late = late.clone();
        let keys = args.keys;
        producer_threads.push(std::thread::spawn(move || {
            let interval_ns = 1e9 / per_producer;
            // Stagger producers so their schedules interleave.
            let offset_ns = interval_ns * pi as f64 / producers as f64;
            let end_ns = window_until;
            let mut value = template.to_vec();
            let mut k: u64 = 0;
            let mut rng: u64 = 0x2545_f491_4f6c_dd1d ^ pi as u64;
            loop {
                let intended = start_ns + (offset_ns + k as f64 * interval_ns) as u64;
                if intended >= end_ns {
                    break;
                }
                let now = now_ns();
                if intended > now + 20_000 {
                    // Sleep, never spin: librdkafka's threads share this core. Messages due
                    // within 20 µs go now; each keeps its intended time, so lateness counts.
                    std::thread::sleep(Duration::from_nanos(intended - now));
                    continue;
                } else if now > intended + 10_000_000 {
                    late.fetch_add(1, Ordering::Relaxed);
                }
                value[..8].copy_from_slice(&intended.to_le_bytes());
                let topic = &topics[(k as usize) % topics.len()];
                let key_bytes: [u8; 8] = match keys {
                    KeyDistribution::NoKey => [0; 8],
                    KeyDistribution::RoundRobin => k.to_le_bytes(),
                    KeyDistribution::Random => {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng.to_le_bytes()
                    }
                };
                let mut opaque = Box::new(intended);
                loop {
                    let mut record: BaseRecord<'_, [u8; 8], [u8], Box<u64>> =
                        BaseRecord::with_opaque_to(topic, opaque).payload(&value[..]);
                    if keys != KeyDistribution::NoKey {
                        record = record.key(&key_bytes);
                    }
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                            opaque = rec.delivery_opaque;
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        Err((e, _)) => panic!("produce: {e}"),
                    }
                }
                produced_total.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
            let _ = producer.flush(Duration::from_secs(30));
        }));
    }

    // Sample CPU at the window's edges.
    let sleep_until = |t: u64| {
        let now = now_ns();
        if t > now {
            std::thread::sleep(Duration::from_nanos(t - now));
        }
    };
    sleep_until(window_from);
    let broker_cpu0 = target.broker_pid.as_deref().and_then(cpu_seconds);
    let client_cpu0 = cpu_seconds("self").unwrap_or(0.0);
    let shards0 = target
        .broker_pid
        .as_deref()
        .and_then(|p| thread_times(p, "shard-core"));
    let client_threads0 = thread_times("self", "").unwrap_or_default();
    let groups0 = target.broker_pid.as_deref().map(thread_groups);
    let cpus0 = cpu_busy_seconds();
    let consumed0 = stats.consumed.load(Ordering::Relaxed);
    sleep_until(window_until);
    let broker_cpu1 = target.broker_pid.as_deref().and_then(cpu_seconds);
    let client_cpu1 = cpu_seconds("self").unwrap_or(0.0);
    let shards1 = target
        .broker_pid
        .as_deref()
        .and_then(|p| thread_times(p, "shard-core"));
    let client_threads1 = thread_times("self", "").unwrap_or_default();
    let groups1 = target.broker_pid.as_deref().map(thread_groups);
    let cpus1 = cpu_busy_seconds();
    let consumed1 = stats.consumed.load(Ordering::Relaxed);
    let shards = match (shards0, shards1) {
        (Some(a), Some(b)) => Some(((b.0 - a.0) / args.duration, (b.1 - a.1) / args.duration)),
        _ => None,
    };

    for t in producer_threads {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for t in consumer_threads {
        t.join().unwrap();
    }

    let acked = stats.acked_in_window.load(Ordering::Relaxed) as f64;
    let msgs_per_s = acked / args.duration;
    let mb = acked * args.message_size as f64 / 1e6;
    let broker_cpu = match (broker_cpu0, broker_cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    delete_topics(&target.bootstrap, &topics);
    RunResult {
        label: label.to_string(),
        target_rate: rate,
        achieved_msgs_per_s: msgs_per_s,
        achieved_mb_per_s: mb / args.duration,
        consumed_msgs_per_s: (consumed1 - consumed0) as f64 / args.duration,
        message_size: args.message_size,
        partitions: args.partitions,
        topics: args.topics,
        acks: args.acks.clone(),
        publish_ms: percentiles(&stats.publish.lock().unwrap()),
        e2e_ms: percentiles(&stats.e2e.lock().unwrap()),
        failed: stats.failed.load(Ordering::Relaxed),
        broker_cpu_s_per_mb: broker_cpu.map(|c| if mb > 0.0 { c / mb } else { 0.0 }),
        broker_cpu_cores: broker_cpu.map(|c| c / args.duration),
        client_cpu_cores: (client_cpu1 - client_cpu0) / args.duration,
        late_sends: late.load(Ordering::Relaxed),
        broker_shard_busy_cores: shards.map(|s| s.0),
        broker_shard_wait_cores: shards.map(|s| s.1),
        client_wait_cores: (client_threads1.1 - client_threads0.1) / args.duration,
        broker_threads_cores: match (groups0, groups1) {
            (Some(a), Some(b)) => Some(
                b.into_iter()
                    .map(|(name, t)| {
                        let busy = (t - a.get(&name).copied().unwrap_or(0.0)) / args.duration;
                        (name, busy)
                    })
                    .collect(),
            ),
            _ => None,
        },
        client: format!("{:?}", args.client).to_lowercase(),
        cpu_busy: cpus1
            .iter()
            .filter_map(|(cpu, b)| {
                let a = cpus0.get(cpu)?;
                let busy = (b.0 - a.0) / args.duration;
                let interrupts = (b.1 - a.1) / args.duration;
                Some((format!("cpu{cpu}"), (busy, interrupts)))
            })
            .collect(),
    }
}

/// The lean producer's reports, folded into the run's `Stats` (the histogram is merged at the
/// end, so the hot path takes no lock).
struct LeanSink {
    stats: Arc<Stats>,
    hist: Histogram<u64>,
    produced_total: Arc<AtomicU64>,
    late: Arc<AtomicU64>,
}

impl lean::ProduceSink for LeanSink {
    fn acked(&mut self, intended_ns: &[u64], now_ns: u64) {
        let n = intended_ns.len() as u64;
        self.stats.acked.fetch_add(n, Ordering::Relaxed);
        let from = self.stats.measure_from_ns.load(Ordering::Relaxed);
        let until = self.stats.measure_until_ns.load(Ordering::Relaxed);
        if now_ns >= from && now_ns < until {
            self.stats.acked_in_window.fetch_add(n, Ordering::Relaxed);
        }
        for &intended in intended_ns {
            if intended >= from && intended < until {
                let _ = self
                    .hist
                    .record((now_ns.saturating_sub(intended) / 1000).max(1));
            }
        }
    }

    fn failed(&mut self, count: u64) {
        self.stats.failed.fetch_add(count, Ordering::Relaxed);
    }

    fn sent(&mut self, count: u64, late: u64) {
        self.produced_total.fetch_add(count, Ordering::Relaxed);
        if late > 0 {
            self.late.fetch_add(late, Ordering::Relaxed);
        }
    }
}

fn acks_code(acks: &str) -> i16 {
    match acks {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => panic!("--acks {other}: expected 0, 1 or all"),
    }
}

fn spawn_lean_producer(
    args: &Args,
    map: Arc<lean::ClusterMap>,
    topics: Vec<String>,
    schedule: lean::Schedule,
    template: Arc<Vec<u8>>,
    mut sink: LeanSink,
) -> std::thread::JoinHandle<()> {
    let settings = lean::ProducerSettings {
        acks: acks_code(&args.acks),
        batch_size_bytes: args.batch_size,
        linger_ns: (args.linger_ms * 1e6) as u64,
        max_in_flight: args.max_in_flight.max(1),
        keys: match args.keys {
            KeyDistribution::NoKey => lean::KeyMode::NoKey,
            KeyDistribution::RoundRobin => lean::KeyMode::RoundRobin,
            KeyDistribution::Random => lean::KeyMode::Random,
        },
        request_timeout_ms: 30_000,
    };
    let partitions = args.partitions;
    std::thread::spawn(move || {
        if let Err(e) = lean::run_producer(
            &map,
            &topics,
            partitions,
            &settings,
            schedule,
            &template,
            now_ns,
            &mut sink,
            Duration::from_secs(30),
        ) {
            eprintln!("loadgen: lean producer: {e:#}");
        }
        sink.stats.publish.lock().unwrap().add(&sink.hist).unwrap();
    })
}

fn spawn_lean_consumer(
    map: Arc<lean::ClusterMap>,
    broker: i32,
    parts: Vec<(String, i32)>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    produced_total: Arc<AtomicU64>,
    ready: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let settings = lean::ConsumerSettings {
            max_wait_ms: 100,
            max_bytes: 52_428_800,
            partition_max_bytes: 4_194_304,
        };
        ready.fetch_add(1, Ordering::Relaxed);
        let mut local = new_hist();
        let mut idle_since: Option<Instant> = None;
        let consumed_local = std::cell::Cell::new(0u64);
        let bytes_local = std::cell::Cell::new(0u64);
        let result = lean::run_consumer(
            &map,
            broker,
            &parts,
            &settings,
            now_ns,
            &mut |got_any| {
                // Publish the counts once per fetch, not per message.
                stats
                    .consumed
                    .fetch_add(consumed_local.take(), Ordering::Relaxed);
                stats
                    .consumed_bytes
                    .fetch_add(bytes_local.take(), Ordering::Relaxed);
                if got_any {
                    idle_since = None;
                    return false;
                }
                if !stop.load(Ordering::Relaxed) {
                    return false;
                }
                let done = stats.consumed.load(Ordering::Relaxed)
                    >= produced_total.load(Ordering::Relaxed);
                let idle = *idle_since.get_or_insert_with(Instant::now);
                done || idle.elapsed() > Duration::from_secs(10)
            },
            &mut |value, now| {
                consumed_local.set(consumed_local.get() + 1);
                bytes_local.set(bytes_local.get() + value.len() as u64);
                if value.len() >= 8 {
                    let sent = u64::from_le_bytes(value[..8].try_into().unwrap());
                    if stats.in_window(sent) {
                        let _ = local.record((now.saturating_sub(sent) / 1000).max(1));
                    }
                }
            },
        );
        if let Err(e) = result {
            eprintln!("loadgen: lean consumer: {e:#}");
        }
        stats.e2e.lock().unwrap().add(&local).unwrap();
    })
}

/// The lean client's batch encoding, checked once against the broker's own batch validator
/// (length, magic, CRC-32C, record count) and its own parser, before any figure depends on it.
fn lean_self_check() {
    let values: [&[u8]; 3] = [&[1u8; 8], &[2u8; 100], &[3u8; 1024]];
    let batch = lean::encode_batch(&values);
    let mut batches = 0;
    ringbroker::storage::batch::validate_all(&batch, 1 << 20, |_| batches += 1)
        .expect("the lean client's batch passes the broker's validation");
    assert_eq!(batches, 1);
    let mut seen = Vec::new();
    let next = lean::walk_records(&batch, &mut |v| seen.push(v.to_vec())).unwrap();
    assert_eq!(next, Some(3));
    assert_eq!(seen, values.map(|v| v.to_vec()));
}

fn sustainable(args: &Args, r: &RunResult) -> bool {
    r.failed == 0
        && r.achieved_msgs_per_s >= args.achieved_min * r.target_rate
        && r.publish_ms.p99 <= args.p99_limit_ms
}

/// Step the rate up by `step_factor` until a step fails, then bisect between the last good and
/// the first bad rate. Returns the highest sustainable run.
fn find_max_rate(args: &Args, target: &Target, out: &mut Vec<RunResult>) -> Option<RunResult> {
    let mut rate = args.rate;
    let mut good: Option<RunResult> = None;
    let bad_rate;
    loop {
        let r = run_once(args, target, rate, &format!("{}-max", args.label));
        print_result(&r);
        let ok = sustainable(args, &r);
        println!(
            "  -> {}",
            if ok { "sustainable" } else { "NOT sustainable" }
        );
        out.push(r.clone());
        if ok {
            good = Some(r);
            rate *= args.step_factor;
        } else {
            bad_rate = rate;
            break;
        }
    }
    let mut lo = good.as_ref().map_or(0.0, |g| g.target_rate);
    let mut hi = bad_rate;
    for _ in 0..args.bisect {
        if lo == 0.0 {
            break;
        }
        let mid = (lo + hi) / 2.0;
        let r = run_once(args, target, mid, &format!("{}-max", args.label));
        print_result(&r);
        let ok = sustainable(args, &r);
        println!(
            "  -> {}",
            if ok { "sustainable" } else { "NOT sustainable" }
        );
        out.push(r.clone());
        if ok {
            lo = mid;
            good = Some(r);
        } else {
            hi = mid;
        }
    }
    if let Some(g) = &good {
        println!(
            "MAX sustainable rate: {:.0} msg/s ({:.1} MB/s), publish p99 {:.3} ms, e2e p99 {:.3} ms",
            g.achieved_msgs_per_s, g.achieved_mb_per_s, g.publish_ms.p99, g.e2e_ms.p99
        );
    }
    good
}

/// Produce `mb` MB as fast as the broker takes it (closed loop: bounded by the producer queue),
/// then time consumers reading it all from the beginning.
fn catchup(args: &Args, target: &Target, mb: f64) -> serde_json::Value {
    let seq = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
    let topics: Vec<String> = (0..args.topics)
        .map(|t| format!("loadgen-catchup-{}-{seq}-{t}", std::process::id()))
        .collect();
    create_topics(&target.bootstrap, &topics, args);
    let total = (mb * 1e6 / args.message_size as f64) as u64;
    let stats = Arc::new(Stats::new());
    let producer: ThreadedProducer<Delivery> = producer_config(args, &target.bootstrap)
        .create_with_context(Delivery(stats.clone()))
        .expect("producer");
    let value = payload_template(args.message_size);
    let t0 = Instant::now();
    for k in 0..total {
        let topic = &topics[(k as usize) % topics.len()];
        let mut opaque = Box::new(0u64);
        loop {
            let record: BaseRecord<'_, [u8], [u8], Box<u64>> =
                BaseRecord::with_opaque_to(topic, opaque).payload(&value[..]);
            match producer.send(record) {
                Ok(()) => break,
                Err((_, rec)) => {
                    opaque = rec.delivery_opaque;
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let produce_s = t0.elapsed().as_secs_f64();
    let produced_mb = total as f64 * args.message_size as f64 / 1e6;
    println!(
        "[catchup] produced {total} msgs ({produced_mb:.0} MB) in {produce_s:.1} s = {:.1} MB/s, failed {}",
        produced_mb / produce_s,
        stats.failed.load(Ordering::Relaxed)
    );
    let broker_cpu0 = target.broker_pid.as_deref().and_then(cpu_seconds);
    let client_cpu0 = cpu_seconds("self").unwrap_or(0.0);
    let t1 = Instant::now();
    let consumed = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for (i, parts) in split_partitions(&topics, args.partitions, args.consumers)
        .into_iter()
        .enumerate()
    {
        let bootstrap = target.bootstrap.clone();
        let consumed = consumed.clone();
        let bytes = bytes.clone();
        threads.push(std::thread::spawn(move || {
            let c = consumer(&bootstrap, &format!("loadgen-catchup-{i}"));
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &parts {
                tpl.add_partition_offset(t, *p, Offset::Beginning).unwrap();
            }
            c.assign(&tpl).unwrap();
            let mut last = Instant::now();
            while consumed.load(Ordering::Relaxed) < total {
                match c.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        consumed.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(m.payload_len() as u64, Ordering::Relaxed);
                        last = Instant::now();
                    }
                    Some(Err(e)) => eprintln!("loadgen: consumer error {e}"),
                    None if last.elapsed() > Duration::from_secs(10) => break,
                    None => {}
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let read_s = t1.elapsed().as_secs_f64();
    let broker_cpu = match (
        broker_cpu0,
        target.broker_pid.as_deref().and_then(cpu_seconds),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let client_cpu = (cpu_seconds("self").unwrap_or(0.0) - client_cpu0) / read_s;
    let read_mb = bytes.load(Ordering::Relaxed) as f64 / 1e6;
    delete_topics(&target.bootstrap, &topics);
    println!(
        "[catchup] consumed {} msgs ({read_mb:.0} MB) in {read_s:.2} s = {:.1} MB/s, {:.0} msg/s; client cpu {client_cpu:.2} cores; broker cpu {}",
        consumed.load(Ordering::Relaxed),
        read_mb / read_s,
        consumed.load(Ordering::Relaxed) as f64 / read_s,
        broker_cpu.map_or("n/a".into(), |c| format!("{:.2} cores", c / read_s)),
    );
    json!({
        "produced_mb": produced_mb, "produce_mb_per_s": produced_mb / produce_s,
        "read_mb": read_mb, "read_s": read_s, "read_mb_per_s": read_mb / read_s,
        "read_msgs_per_s": consumed.load(Ordering::Relaxed) as f64 / read_s,
        "broker_cpu_cores": broker_cpu.map(|c| c / read_s), "client_cpu_cores": client_cpu,
        "message_size": args.message_size, "partitions": args.partitions,
    })
}

/// A plotted line: its name, its colour and which percentile it draws.
type Series = (&'static str, &'static str, fn(&Percentiles) -> f64);

/// Latency percentiles (log scale, ms) against achieved throughput, one line per percentile.
/// Plain SVG, no plotting dependency.
fn write_svg(path: &std::path::Path, points: &[RunResult], title: &str) {
    let (w, h, ml, mr, mt, mb) = (800.0, 500.0, 70.0, 150.0, 40.0, 50.0);
    let xs: Vec<f64> = points.iter().map(|p| p.achieved_msgs_per_s).collect();
    let xmax = xs.iter().cloned().fold(1.0, f64::max) * 1.05;
    let series: [Series; 5] = [
        ("e2e p50", "#1b9e77", |p| p.p50),
        ("e2e p90", "#d95f02", |p| p.p90),
        ("e2e p99", "#7570b3", |p| p.p99),
        ("e2e p99.9", "#e7298a", |p| p.p999),
        ("e2e max", "#666666", |p| p.max),
    ];
    let all: Vec<f64> = points
        .iter()
        .flat_map(|p| series.iter().map(move |s| (s.2)(&p.e2e_ms)))
        .filter(|v| *v > 0.0)
        .collect();
    let ymin = all.iter().cloned().fold(f64::MAX, f64::min).max(0.01);
    let ymax = all.iter().cloned().fold(0.0, f64::max).max(ymin * 10.0);
    let (lmin, lmax) = (ymin.log10().floor(), ymax.log10().ceil());
    let px = |x: f64| ml + x / xmax * (w - ml - mr);
    let py = |y: f64| h - mb - (y.max(ymin).log10() - lmin) / (lmax - lmin) * (h - mt - mb);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n<text x='{ml}' y='20' font-size='14'>{title}</text>\n"
    );
    s += &format!(
        "<line x1='{ml}' y1='{}' x2='{}' y2='{}' stroke='black'/>\n<line x1='{ml}' y1='{mt}' x2='{ml}' y2='{}' stroke='black'/>\n",
        h - mb,
        w - mr,
        h - mb,
        h - mb
    );
    let mut d = lmin;
    while d <= lmax {
        let y = py(10f64.powf(d));
        s += &format!(
            "<line x1='{ml}' y1='{y}' x2='{}' y2='{y}' stroke='#ddd'/><text x='{}' y='{}' text-anchor='end'>{} ms</text>\n",
            w - mr,
            ml - 5.0,
            y + 4.0,
            10f64.powf(d)
        );
        d += 1.0;
    }
    for i in 0..=5 {
        let x = xmax * i as f64 / 5.0;
        s += &format!(
            "<text x='{}' y='{}' text-anchor='middle'>{:.0}</text>\n",
            px(x),
            h - mb + 18.0,
            x
        );
    }
    s += &format!(
        "<text x='{}' y='{}' text-anchor='middle'>achieved throughput (msg/s)</text>\n",
        (ml + w - mr) / 2.0,
        h - 10.0
    );
    for (i, (name, color, f)) in series.iter().enumerate() {
        let pts: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p.achieved_msgs_per_s), py(f(&p.e2e_ms))))
            .collect();
        s += &format!(
            "<polyline fill='none' stroke='{color}' stroke-width='2' points='{}'/>\n",
            pts.join(" ")
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap();
            s += &format!("<circle cx='{x}' cy='{y}' r='3' fill='{color}'/>\n");
        }
        let ly = mt + 20.0 * i as f64;
        s += &format!(
            "<rect x='{}' y='{}' width='12' height='12' fill='{color}'/><text x='{}' y='{}'>{name}</text>\n",
            w - mr + 10.0,
            ly,
            w - mr + 28.0,
            ly + 10.0
        );
    }
    s += "</svg>\n";
    std::fs::write(path, s).unwrap();
}

/// DejaVu Sans from Debian's `fonts-dejavu-core` (`tests/install-deps.sh` installs it), for the
/// PNG's text. Nothing is embedded; without the font there is no PNG (the SVG is still written).
const PNG_FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The same plot as `write_svg`, as a PNG drawn with plotters' bitmap backend.
fn write_png(path: &std::path::Path, points: &[RunResult], title: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use plotters::prelude::*;
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let bytes = std::fs::read(PNG_FONT_PATH)
            .map_err(|e| format!("{PNG_FONT_PATH}: {e} (apt-get install fonts-dejavu-core)"))?;
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes.leak())
            .map_err(|_| format!("{PNG_FONT_PATH} is not a usable font"))
    })
    .clone()
    .map_err(anyhow::Error::msg)?;
    type PngSeries = (&'static str, RGBColor, fn(&Percentiles) -> f64);
    let series: [PngSeries; 5] = [
        ("e2e p50", RGBColor(0x1b, 0x9e, 0x77), |p| p.p50),
        ("e2e p90", RGBColor(0xd9, 0x5f, 0x02), |p| p.p90),
        ("e2e p99", RGBColor(0x75, 0x70, 0xb3), |p| p.p99),
        ("e2e p99.9", RGBColor(0xe7, 0x29, 0x8a), |p| p.p999),
        ("e2e max", RGBColor(0x66, 0x66, 0x66), |p| p.max),
    ];
    let xmax = points
        .iter()
        .map(|p| p.achieved_msgs_per_s)
        .fold(1.0, f64::max)
        * 1.05;
    let values: Vec<f64> = points
        .iter()
        .flat_map(|p| series.iter().map(move |s| (s.2)(&p.e2e_ms)))
        .filter(|v| *v > 0.0)
        .collect();
    let ymin = values.iter().cloned().fold(f64::MAX, f64::min).max(0.01);
    let ymax = values.iter().cloned().fold(0.0, f64::max).max(ymin * 10.0);
    let (ymin, ymax) = (
        10f64.powf(ymin.log10().floor()),
        10f64.powf(ymax.log10().ceil()),
    );
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("achieved throughput (msg/s)")
        .y_desc("end-to-end latency (ms), log scale")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for (name, color, f) in series {
        let line: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.achieved_msgs_per_s, f(&p.e2e_ms).max(ymin)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart.draw_series(line.iter().map(|&xy| Circle::new(xy, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes the SVG and the PNG of a sweep beside each other.
fn write_plots(out_dir: &std::path::Path, label: &str, points: &[RunResult], title: &str) {
    let svg = out_dir.join(format!("{label}-sweep.svg"));
    write_svg(&svg, points, title);
    println!("sweep SVG: {}", svg.display());
    let png = out_dir.join(format!("{label}-sweep.png"));
    match write_png(&png, points, title) {
        Ok(()) => println!("sweep PNG: {}", png.display()),
        Err(e) => eprintln!("loadgen: no PNG: {e:#}"),
    }
}

fn main() {
    let args = Args::parse();
    if let Some(json_path) = &args.plot {
        let text = std::fs::read_to_string(json_path).expect("read --plot JSON");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("--plot: JSON");
        let points: Vec<RunResult> =
            serde_json::from_value(doc["summary"]["sweep"].clone()).expect("summary.sweep points");
        let label = json_path.file_stem().unwrap().to_string_lossy().to_string();
        let first = points.first().expect("at least one point");
        std::fs::create_dir_all(&args.out_dir).unwrap();
        write_plots(
            &args.out_dir,
            &label,
            &points,
            &format!(
                "{label}: {} B, {} partition(s), acks={}, client {}",
                first.message_size, first.partitions, first.acks, first.client
            ),
        );
        return;
    }
    assert!(args.message_size >= 8, "--message-size must be at least 8");
    if args.client == ClientKind::Lean {
        assert!(
            args.compression == "none",
            "--client lean does not compress (--compression none)"
        );
        assert!(
            args.catchup.is_none(),
            "--catchup runs with --client librdkafka only"
        );
        lean_self_check();
    }
    base();
    // Start the broker before pinning, so it is not started with our mask (it pins itself).
    let broker = match &args.bootstrap {
        Some(_) => None,
        None => Some(Broker::start(&args)),
    };
    pin_to(&parse_cores(&args.client_cores));
    // Precise sleeps for the open-loop schedule (the default timer slack is 50 µs).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let target = Target {
        bootstrap: args
            .bootstrap
            .clone()
            .unwrap_or_else(|| broker.as_ref().unwrap().bootstrap.clone()),
        broker_pid: broker.as_ref().map(|b| b.child.id().to_string()),
    };
    eprintln!(
        "loadgen: bootstrap {}, client {:?} pinned to cores {}, {} topic(s) x {} partition(s), {} B messages, acks={}, {} producer(s), {} consumer(s), linger {} ms, batch {} B, compression {}, keys {:?}",
        target.bootstrap,
        args.client,
        args.client_cores,
        args.topics,
        args.partitions,
        args.message_size,
        args.acks,
        args.producers,
        args.consumers,
        args.linger_ms,
        args.batch_size,
        args.compression,
        args.keys
    );
    std::fs::create_dir_all(&args.out_dir).unwrap();
    let mut all = Vec::new();
    let summary = if let Some(mb) = args.catchup {
        catchup(&args, &target, mb)
    } else if let Some(list) = &args.sweep {
        let values: Vec<f64> = list.split(',').map(|v| v.parse().unwrap()).collect();
        let rates: Vec<f64> = if values.iter().all(|v| *v <= 1.5) {
            let max = find_max_rate(&args, &target, &mut all).expect("no sustainable rate");
            values.iter().map(|f| f * max.target_rate).collect()
        } else {
            values
        };
        let mut points = Vec::new();
        for r in rates {
            let res = run_once(&args, &target, r, &format!("{}-sweep", args.label));
            print_result(&res);
            all.push(res.clone());
            points.push(res);
        }
        write_plots(
            &args.out_dir,
            &args.label,
            &points,
            &format!(
                "{}: {} B, {} partition(s), acks={}, client {}",
                args.label,
                args.message_size,
                args.partitions,
                args.acks,
                format!("{:?}", args.client).to_lowercase()
            ),
        );
        json!({ "sweep": points })
    } else if args.max_rate {
        let max = find_max_rate(&args, &target, &mut all);
        json!({ "max": max })
    } else {
        let r = run_once(&args, &target, args.rate, &args.label);
        print_result(&r);
        all.push(r.clone());
        json!({ "run": r })
    };
    let path = args.out_dir.join(format!("{}.json", args.label));
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        "{}",
        serde_json::to_string_pretty(&json!({ "summary": summary, "runs": all })).unwrap()
    )
    .unwrap();
    println!("results: {}", path.display());
}
