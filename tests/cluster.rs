//! A three-process cluster on 127.0.0.1 (issue 14): three `ringbroker` nodes, each broker and
//! controller-quorum voter, on ephemeral ports and temporary data dirs, driven by real clients
//! (librdkafka through the `rdkafka` crate, kcat and kafka-python).
//!
//! What is checked: a quorum forms and every broker registers; a topic created with
//! replication factor 3 on one node is seen, with the same leaders and replicas, by all; the
//! active controller killed with SIGKILL is replaced within twice the election timeout and
//! topic creation goes on; the killed node restarted on its data dir catches up and is
//! unfenced; a data dir reused with another node.id or other voters fails at start with one
//! line; bytes that are not a quorum frame on the controller listener change nothing.
//!
//! Each node's process is killed when its `Node` drops, so a failing test leaves none behind;
//! every wait is bounded.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use support::{Broker, run_bounded};

/// Short timers, so that failover is quick; the defaults are Kafka's.
const ELECTION_TIMEOUT_MS: u64 = 500;
const SESSION_TIMEOUT_MS: u64 = 3_000;
const HEARTBEAT_MS: u64 = 300;
/// A follower behind this long leaves the ISR (Kafka's default is 30 s).
const REPLICA_LAG_MS: u64 = 2_000;

struct Ports {
    client: u16,
    controller: u16,
}

/// Ports free now (bound and released; the nodes bind them a moment later).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

struct Cluster {
    ports: BTreeMap<i32, Ports>,
    dirs: BTreeMap<i32, tempfile::TempDir>,
    nodes: BTreeMap<i32, Broker>,
}

impl Cluster {
    fn voters(&self) -> String {
        self.ports
            .iter()
            .map(|(id, p)| format!("{id}@127.0.0.1:{}", p.controller))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn args(&self, id: i32) -> Vec<String> {
        let p = &self.ports[&id];
        [
            format!("node.id={id}"),
            "process.roles=broker,controller".to_string(),
            format!("controller.quorum.voters={}", self.voters()),
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                p.client, p.controller
            ),
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_string(),
            format!("controller.quorum.election.timeout.ms={ELECTION_TIMEOUT_MS}"),
            format!("broker.session.timeout.ms={SESSION_TIMEOUT_MS}"),
            format!("broker.heartbeat.interval.ms={HEARTBEAT_MS}"),
            format!("broker.rack=rack-{}", id % 2),
            format!("replica.lag.time.max.ms={REPLICA_LAG_MS}"),
        ]
        .into_iter()
        .flat_map(|kv| ["--set".to_string(), kv])
        .chain(["--cores".to_string(), (id as usize % cores()).to_string()])
        .collect()
    }

    fn start(ids: &[i32]) -> Cluster {
        let ports = free_ports(ids.len() * 2);
        let mut cluster = Cluster {
            ports: ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    (
                        *id,
                        Ports {
                            client: ports[2 * i],
                            controller: ports[2 * i + 1],
                        },
                    )
                })
                .collect(),
            dirs: ids
                .iter()
                .map(|id| (*id, tempfile::tempdir().unwrap()))
                .collect(),
            nodes: BTreeMap::new(),
        };
        for id in ids {
            cluster.start_node(*id);
        }
        cluster
    }

    fn start_node(&mut self, id: i32) {
        let args = self.args(id);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let listen = format!("127.0.0.1:{}", self.ports[&id].client);
        let node = Broker::start_at(self.dirs[&id].path(), &listen, &args);
        self.nodes.insert(id, node);
    }

    fn bootstrap(&self) -> String {
        self.nodes
            .values()
            .map(Broker::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn dir(&self, id: i32) -> PathBuf {
        self.dirs[&id].path().to_path_buf()
    }
}

/// Online cores: nodes take one each, round robin (a shared core on a small host).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn block<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// A partition as a client sees it: (leader, replicas, isr).
type PartitionView = (i32, Vec<i32>, Vec<i32>);

/// Broker ids and each topic's partitions.
type ClusterView = (Vec<i32>, BTreeMap<String, Vec<PartitionView>>);

/// What librdkafka reads from `bootstrap`.
fn metadata(bootstrap: &str) -> Option<ClusterView> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .ok()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).ok()?;
    let mut brokers: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    brokers.sort_unstable();
    let topics = metadata
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__"))
        .map(|t| {
            let mut partitions: Vec<_> = t.partitions().iter().collect();
            partitions.sort_by_key(|p| p.id());
            let views = partitions
                .iter()
                .map(|p| (p.leader(), p.replicas().to_vec(), p.isr().to_vec()))
                .collect();
            (t.name().to_string(), views)
        })
        .collect();
    Some((brokers, topics))
}

fn eventually<T>(bound: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if start.elapsed() > bound {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_topic(bootstrap: &str, name: &str, partitions: i32, replicas: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results = block(admin.create_topics(&[topic], &options)).map_err(|e| e.to_string())?;
    match &results[0] {
        Ok(_) => Ok(()),
        Err((_, code)) => Err(format!("{code:?}")),
    }
}

/// The quorum leader, read from the nodes' logs: the last "quorum leader changed" line of
/// each node that names a leader, when all running nodes agree.
fn agreed_leader(cluster: &Cluster) -> Option<i32> {
    let mut seen = Vec::new();
    for node in cluster.nodes.values() {
        let line = node
            .log()
            .into_iter()
            .rev()
            .find(|l| l.contains("quorum leader changed"))?;
        let leader = line.split("leader=Some(").nth(1)?.split(')').next()?;
        seen.push(leader.parse::<i32>().ok()?);
    }
    seen.dedup();
    (seen.len() == 1).then(|| seen[0])
}

#[test]
fn three_nodes_share_topics_fail_over_and_catch_up() {
    let mut cluster = Cluster::start(&[1, 2, 3]);
    let bootstrap = cluster.bootstrap();

    // Every broker registers and is unfenced; each node tells the same three brokers.
    for (id, node) in &cluster.nodes {
        let brokers = eventually(Duration::from_secs(20), || {
            metadata(&node.bootstrap()).filter(|(b, _)| b.len() == 3)
        });
        assert_eq!(
            brokers.map(|(b, _)| b),
            Some(vec![1, 2, 3]),
            "node {id} does not list three brokers; log:\n{}",
            node.log().join("\n")
        );
    }

    // A topic created on node 2 with three replicas is seen alike by all.
    let node2 = cluster.nodes[&2].bootstrap();
    create_topic(&node2, "replicated", 6, 3).expect("created through node 2");
    let views: Vec<_> = cluster
        .nodes
        .values()
        .map(|node| {
            eventually(Duration::from_secs(10), || {
                metadata(&node.bootstrap())
                    .and_then(|(_, topics)| topics.get("replicated").cloned())
            })
            .expect("the topic reaches every node")
        })
        .collect();
    assert!(views.windows(2).all(|w| w[0] == w[1]), "{views:?}");
    let partitions = &views[0];
    assert_eq!(partitions.len(), 6);
    let mut leaders = BTreeMap::new();
    for (leader, replicas, isr) in partitions {
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            vec![1, 2, 3],
            "three distinct replicas: {replicas:?}"
        );
        assert_eq!(*leader, replicas[0], "the preferred replica leads");
        let mut in_sync = isr.clone();
        in_sync.sort_unstable();
        assert_eq!(
            in_sync,
            vec![1, 2, 3],
            "a new partition's replicas are all in sync"
        );
        *leaders.entry(*leader).or_insert(0) += 1;
    }
    assert_eq!(
        leaders.values().collect::<Vec<_>>(),
        vec![&2, &2, &2],
        "{leaders:?}"
    );
    // Too many replicas for the registered brokers: Kafka's error.
    let refused = create_topic(&bootstrap, "too-wide", 1, 4).unwrap_err();
    assert!(refused.contains("InvalidReplicationFactor"), "{refused}");

    // kcat and kafka-python read three-broker metadata unchanged.
    let (status, out, err) = run_bounded(
        "kcat",
        &["-b", &bootstrap, "-L", "-t", "replicated"],
        Duration::from_secs(20),
    );
    assert!(status.success(), "kcat: {err}");
    assert!(out.contains(" 3 brokers:"), "{out}");
    assert!(out.contains("replicas: "), "{out}");
    let script = r#"
import sys
from kafka import KafkaConsumer
c = KafkaConsumer(bootstrap_servers=sys.argv[1].split(','))
parts = c.partitions_for_topic('replicated')
print(len(parts), len(c._client.cluster.brokers()))
"#;
    let (status, out, err) = run_bounded(
        "python3",
        &["-c", script, &bootstrap],
        Duration::from_secs(30),
    );
    assert!(status.success(), "kafka-python: {err}");
    assert_eq!(
        out.trim(),
        "6 3",
        "kafka-python sees 6 partitions on 3 brokers"
    );

    // Producers and consumers find each partition's leader: 300 messages produced with
    // acks=all through kcat reach the three leaders and come back whole, and a kafka-python
    // consumer group (its coordinator on the leader of its __consumer_offsets partition)
    // consumes them and commits.
    let input: String = (1..=300).map(|i| format!("m{i}\n")).collect();
    let (status, _, err) = support::run_bounded_with_input(
        "kcat",
        &["-b", &bootstrap, "-P", "-t", "replicated", "-X", "acks=all"],
        &input,
        Duration::from_secs(30),
    );
    assert!(status.success(), "kcat produce: {err}");
    let (status, out, err) = run_bounded(
        "kcat",
        &["-b", &bootstrap, "-C", "-t", "replicated", "-e", "-q"],
        Duration::from_secs(30),
    );
    assert!(status.success(), "kcat consume: {err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = (1..=300).map(|i| format!("m{i}")).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    let script = r#"
import sys
from kafka import KafkaConsumer
c = KafkaConsumer('replicated', bootstrap_servers=sys.argv[1].split(','), group_id='g1',
                  auto_offset_reset='earliest', consumer_timeout_ms=8000)
n = sum(1 for _ in c)
c.commit()
print(n)
"#;
    let (status, out, err) = run_bounded(
        "python3",
        &["-c", script, &bootstrap],
        Duration::from_secs(60),
    );
    assert!(status.success(), "kafka-python group: {err}");
    assert_eq!(out.trim(), "300");

    // A transaction over partitions led by three brokers commits: the coordinator writes the
    // markers of the partitions led elsewhere with WriteTxnMarkers, and a read_committed
    // consumer sees every partition's record.
    let script = r#"
import sys
from confluent_kafka import Producer, KafkaException
p = Producer({'bootstrap.servers': sys.argv[1], 'transactional.id': 'spanning'})
p.init_transactions(20)
p.begin_transaction()
for i in range(6):
    p.produce('replicated', ('span-%d' % i).encode(), partition=i)
try:
    p.commit_transaction(20)
    print('committed')
except KafkaException as e:
    print(e.args[0].name())
"#;
    let (status, out, err) = run_bounded(
        "python3",
        &["-c", script, &bootstrap],
        Duration::from_secs(60),
    );
    assert!(status.success(), "confluent-kafka transaction: {err}");
    assert_eq!(out.trim(), "committed", "{out}");
    let (status, out, err) = run_bounded(
        "kcat",
        &[
            "-b",
            &bootstrap,
            "-C",
            "-t",
            "replicated",
            "-e",
            "-q",
            "-X",
            "isolation.level=read_committed",
            "-f",
            "%p %s\\n",
        ],
        Duration::from_secs(30),
    );
    assert!(status.success(), "kcat read_committed: {err}");
    let mut spanning: Vec<&str> = out.lines().filter(|l| l.contains("span-")).collect();
    spanning.sort_unstable();
    let want: Vec<String> = (0..6).map(|i| format!("{i} span-{i}")).collect();
    assert_eq!(spanning, want, "{out}");

    // Kill the active controller: another is elected within twice the election timeout
    // (measured from when the survivors notice: the kill itself is instantaneous) and topic
    // creation goes on.
    let leader = eventually(Duration::from_secs(10), || agreed_leader(&cluster))
        .expect("the nodes agree on a quorum leader");
    let marks: BTreeMap<i32, usize> = cluster
        .nodes
        .iter()
        .map(|(id, n)| (*id, n.log().len()))
        .collect();
    let killed_at = Instant::now();
    let killed = cluster.nodes.remove(&leader).unwrap();
    killed.stop_with("KILL");
    let next = eventually(Duration::from_secs(20), || {
        let views: Vec<Option<i32>> = cluster
            .nodes
            .iter()
            .map(|(id, n)| {
                n.log_from(marks[id])
                    .iter()
                    .rev()
                    .find(|l| l.contains("quorum leader changed") && l.contains("leader=Some("))
                    .and_then(|l| {
                        l.split("leader=Some(")
                            .nth(1)?
                            .split(')')
                            .next()?
                            .parse()
                            .ok()
                    })
            })
            .collect();
        match views.as_slice() {
            [Some(a), Some(b)] if a == b => Some(*a),
            _ => None,
        }
    })
    .expect("the survivors elect a new leader");
    let elected_after = killed_at.elapsed();
    assert_ne!(next, leader);
    eprintln!("new quorum leader {next} after {elected_after:?}");
    // Check-quorum and the randomised timeout: at most 2 x timeout after the last heartbeat
    // the survivors saw, plus a pre-vote round.
    assert!(
        elected_after < Duration::from_millis(2 * ELECTION_TIMEOUT_MS + 1_500),
        "{elected_after:?}"
    );
    let survivors = cluster.bootstrap();
    let created = eventually(Duration::from_secs(20), || {
        create_topic(&survivors, "after-failover", 2, 2).ok()
    });
    assert!(
        created.is_some(),
        "topic creation goes on after the failover"
    );
    // Past its session the killed broker is fenced: it leads nothing and is not offered.
    let fenced = eventually(Duration::from_secs(15), || {
        metadata(&survivors).filter(|(brokers, topics)| {
            !brokers.contains(&leader) && topics["replicated"].iter().all(|(l, _, _)| *l != leader)
        })
    });
    assert!(
        fenced.is_some(),
        "broker {leader} is fenced and leads nothing"
    );

    // The killed node restarts on its data dir, catches up, and is unfenced: all three nodes
    // again agree on every topic.
    cluster.start_node(leader);
    let agreed = eventually(Duration::from_secs(30), || {
        let views: Vec<_> = cluster
            .nodes
            .values()
            .map(|n| metadata(&n.bootstrap()))
            .collect::<Option<Vec<_>>>()?;
        let first = &views[0];
        (first.0 == vec![1, 2, 3]
            && first.1.contains_key("after-failover")
            && views.iter().all(|v| v == first))
        .then_some(())
    });
    assert!(
        agreed.is_some(),
        "the restarted node caught up; its log:\n{}",
        cluster.nodes[&leader].log().join("\n")
    );
}

#[test]
fn hostile_bytes_on_the_controller_listener_change_nothing() {
    let cluster = Cluster::start(&[1, 2, 3]);
    let leader = eventually(Duration::from_secs(20), || agreed_leader(&cluster))
        .expect("a leader is elected");
    let target = cluster.ports[&(leader % 3 + 1)].controller;
    for bytes in [
        vec![0xde; 512],
        u32::MAX.to_be_bytes().to_vec(),
        [&40u32.to_be_bytes()[..], &[7; 40]].concat(),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", target)).unwrap();
        let _ = stream.write_all(&bytes);
    }
    std::thread::sleep(Duration::from_millis(4 * ELECTION_TIMEOUT_MS));
    assert_eq!(
        agreed_leader(&cluster),
        Some(leader),
        "no election followed"
    );
    let refused = cluster
        .nodes
        .values()
        .flat_map(|n| n.log())
        .filter(|l| l.contains("frame refused"))
        .count();
    assert!(refused >= 1, "the refusal is logged");
    create_topic(&cluster.bootstrap(), "still-serving", 1, 3).expect("the cluster still serves");
}

/// Starts the binary with `args` and expects it to stop at once with one line naming `part`.
fn fails_at_start(dir: &Path, args: &[String], part: &str) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringbroker"));
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let status = support::wait_bounded(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "it must not start");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(part),
        "expected '{part}' in the last line: {err}"
    );
}

#[test]
fn a_data_dir_of_another_node_or_quorum_is_refused_at_start() {
    let mut cluster = Cluster::start(&[1, 2, 3]);
    eventually(Duration::from_secs(20), || agreed_leader(&cluster)).expect("a leader");
    let dir = cluster.dir(1);
    cluster.nodes.remove(&1).unwrap().stop_with("KILL");
    // Node 1's data dir started as node 2.
    let mut args = cluster.args(2);
    args.iter_mut()
        .for_each(|a| *a = a.replace(&cluster.ports[&2].client.to_string(), "0"));
    fails_at_start(&dir, &args, "node.id");
    // Node 1's data dir with another voter list (another cluster).
    let mut args = cluster.args(1);
    let voters = cluster.voters();
    for a in args.iter_mut() {
        if a.starts_with("controller.quorum.voters=") {
            *a = format!("controller.quorum.voters={voters},4@127.0.0.1:1");
        }
    }
    fails_at_start(&dir, &args, "cluster");
}

/// A client process killed when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates `name` with `configs` through librdkafka's admin client.
fn create_topic_with(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results = block(admin.create_topics(&[topic], &options)).map_err(|e| e.to_string())?;
    match &results[0] {
        Ok(_) => Ok(()),
        Err((_, code)) => Err(format!("{code:?}")),
    }
}

/// Waits until every partition of `topic` has its whole replica set in the ISR, as `bootstrap`
/// tells it; returns the partitions' views.
fn fully_replicated(bootstrap: &str, topic: &str, bound: Duration) -> Option<Vec<PartitionView>> {
    eventually(bound, || {
        let (_, topics) = metadata(bootstrap)?;
        let partitions = topics.get(topic)?.clone();
        partitions
            .iter()
            .all(|(leader, replicas, isr)| {
                let mut a = replicas.clone();
                let mut b = isr.clone();
                a.sort_unstable();
                b.sort_unstable();
                *leader >= 0 && a == b
            })
            .then_some(partitions)
    })
}

/// The record batches of a partition directory's segment files with base offsets below
/// `high_watermark`, concatenated in offset order: what must be identical on every replica.
fn batches_below(dir: &Path, high_watermark: i64) -> Vec<u8> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect()
        })
        .unwrap_or_default();
    segments.sort();
    let mut out = Vec::new();
    for segment in segments {
        let bytes = std::fs::read(&segment).unwrap_or_default();
        let mut at = 0usize;
        while at + 12 <= bytes.len() {
            let base = i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
            let length = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            if length <= 0 || at + 12 + length as usize > bytes.len() {
                break;
            }
            if base >= high_watermark {
                break;
            }
            out.extend_from_slice(&bytes[at..at + 12 + length as usize]);
            at += 12 + length as usize;
        }
    }
    out
}

/// The high watermark of `topic`-`partition`, as librdkafka reads it from `bootstrap`.
fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .ok()?;
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(5))
        .ok()
        .map(|(_, high)| high)
}

/// Issue 15's acceptance: an idempotent acks=all producer (confluent-kafka) writes to a topic
/// of 6 partitions, replication factor 3 and min.insync.replicas=2, while the broker leading
/// most partitions gets SIGKILL mid-stream. Every acknowledged message is read back exactly once
/// and in order from the survivors; the killed node, restarted, catches up and rejoins every
/// ISR; all replicas hold byte-identical batches below the high watermark.
///
/// Short by default (one round of 40,000 messages). The long mode (`make test-sigkill-long`)
/// sets `SIGKILL_ROUNDS` (20), `SIGKILL_MESSAGES` (200,000) and optionally `SIGKILL_SEED`. Each
/// round writes a new topic and kills at a point drawn from the seed (between 10% and 60% of
/// the messages acknowledged); the seed is printed first, and replays the same kill points.
#[test]
fn acknowledged_messages_survive_the_leader_s_sigkill() {
    let env_number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
            .unwrap_or(default)
    };
    let rounds = env_number("SIGKILL_ROUNDS", 1);
    let messages = env_number("SIGKILL_MESSAGES", 40_000);
    let seed = env_number(
        "SIGKILL_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 | 1),
    );
    eprintln!(
        "sigkill: seed {seed} ({rounds} rounds of {messages} messages; replay with SIGKILL_SEED={seed})"
    );
    let mut draw = Draw(seed);
    let mut cluster = Cluster::start(&[1, 2, 3]);
    let bootstrap = cluster.bootstrap();
    eventually(Duration::from_secs(20), || {
        metadata(&bootstrap).filter(|(b, _)| b.len() == 3)
    })
    .expect("three brokers register");
    for round in 0..rounds {
        let kill_at = messages / 10 + draw.below(messages / 2);
        let topic = format!("durable-{round}");
        let started = Instant::now();
        sigkill_round(&mut cluster, &topic, messages, kill_at);
        eprintln!(
            "sigkill: round {round} of {rounds} ok (killed at {kill_at} acknowledgements, {:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
}

/// A small seeded generator (xorshift64*) for the rounds' kill points.
struct Draw(u64);

impl Draw {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}

/// One round of the SIGKILL acceptance test on `topic` (see the test).
fn sigkill_round(cluster: &mut Cluster, topic: &str, messages: u64, kill_at: u64) {
    let bootstrap = cluster.bootstrap();
    create_topic_with(&bootstrap, topic, 6, 3, &[("min.insync.replicas", "2")]).expect("created");
    let views = fully_replicated(&bootstrap, topic, Duration::from_secs(20))
        .expect("every follower joins the ISR");

    let acked_file = tempfile::NamedTempFile::new().unwrap();
    let acked_path = acked_file.path().to_str().unwrap().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/failover.py");
    let mut producer = KillOnDrop(
        Command::new("python3")
            .args([
                script,
                "produce",
                &bootstrap,
                topic,
                &messages.to_string(),
                &acked_path,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs"),
    );
    let stdout = producer.0.stdout.take().unwrap();
    let (progress_tx, progress_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = progress_tx.send(line);
        }
    });
    // Mid-stream: once `kill_at` messages are acknowledged, kill the broker leading most
    // partitions.
    let mut leads: BTreeMap<i32, usize> = BTreeMap::new();
    for (leader, _, _) in &views {
        *leads.entry(*leader).or_default() += 1;
    }
    let victim = *leads.iter().max_by_key(|(_, n)| **n).unwrap().0;
    let started = Instant::now();
    // 240 s for the short mode's 40,000 messages, in proportion for more.
    let bound = Duration::from_secs(240 * messages.div_ceil(40_000).max(1));
    let mut summary = None;
    loop {
        match progress_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with("progress ") => {
                let acked: u64 = line[9..].trim().parse().unwrap_or(0);
                if acked >= kill_at && cluster.nodes.contains_key(&victim) {
                    eprintln!("SIGKILL broker {victim} after {acked} acknowledgements");
                    cluster.nodes.remove(&victim).unwrap().stop_with("KILL");
                }
            }
            Ok(line) => {
                summary = Some(line);
                break;
            }
            Err(_) => break,
        }
        assert!(started.elapsed() < bound, "the producer is stuck");
    }
    let status = support::wait_bounded(&mut producer.0, Duration::from_secs(30));
    let mut err = String::new();
    use std::io::Read;
    let _ = producer.0.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "producer: {err}");
    assert!(
        !cluster.nodes.contains_key(&victim),
        "the kill happened mid-stream"
    );
    let summary = summary.expect("the producer reports");
    eprintln!("producer: {summary}");

    let survivors = cluster.bootstrap();
    let (status, out, err) = run_bounded(
        "python3",
        &[script, "check", &survivors, topic, "6", &acked_path],
        Duration::from_secs(180),
    );
    assert!(status.success(), "check: {out} {err}");
    eprintln!("check: {out}");

    // The killed node comes back, catches up and rejoins every ISR, as the survivors tell it
    // (the restarted node itself answers from its own image, which is behind until it has
    // caught up with the quorum).
    cluster.start_node(victim);
    let bootstrap = survivors;
    fully_replicated(&bootstrap, topic, Duration::from_secs(60)).unwrap_or_else(|| {
        panic!(
            "broker {victim} rejoins every ISR; its log:\n{}",
            cluster.nodes[&victim].log().join("\n")
        )
    });
    for partition in 0..6 {
        let hw = high_watermark(&bootstrap, topic, partition).expect("high watermark");
        let copies: Vec<Vec<u8>> = [1, 2, 3]
            .iter()
            .map(|id| batches_below(&cluster.dir(*id).join(format!("{topic}-{partition}")), hw))
            .collect();
        assert!(!copies[0].is_empty(), "partition {partition} holds data");
        assert!(
            copies.windows(2).all(|w| w[0] == w[1]),
            "partition {partition}: replicas differ below the high watermark {hw} ({} / {} / {} bytes)",
            copies[0].len(),
            copies[1].len(),
            copies[2].len()
        );
    }
}

/// The ISR below min.insync.replicas while the quorum keeps its majority: a topic with
/// replication factor 2 and min.insync.replicas=2 whose follower is killed refuses acks=all
/// with NOT_ENOUGH_REPLICAS once the follower is out of the ISR, while acks=1 still works; with
/// the follower back in the ISR, acks=all works again.
#[test]
fn acks_all_needs_min_insync_replicas() {
    let mut cluster = Cluster::start(&[1, 2, 3]);
    let bootstrap = cluster.bootstrap();
    eventually(Duration::from_secs(20), || {
        metadata(&bootstrap).filter(|(b, _)| b.len() == 3)
    })
    .expect("three brokers register");
    create_topic_with(&bootstrap, "strict", 1, 2, &[("min.insync.replicas", "2")])
        .expect("created");
    let views = fully_replicated(&bootstrap, "strict", Duration::from_secs(20))
        .expect("the follower joins the ISR");
    let (leader, replicas, _) = views[0].clone();
    let follower = *replicas.iter().find(|id| **id != leader).unwrap();
    let produce = |acks: &str, bootstrap: &str| -> String {
        let script = r#"
import sys
from confluent_kafka import Producer
p = Producer({'bootstrap.servers': sys.argv[1], 'acks': sys.argv[2], 'retries': 0,
              'message.timeout.ms': 8000, 'request.timeout.ms': 5000})
out = []
p.produce('strict', b'v', on_delivery=lambda e, m: out.append(e.name() if e else 'OK'))
p.flush(15)
print(out[0] if out else 'NONE')
"#;
        let (_, out, _) = run_bounded(
            "python3",
            &["-c", script, bootstrap, acks],
            Duration::from_secs(30),
        );
        out.trim().to_string()
    };
    assert_eq!(produce("all", &bootstrap), "OK");
    cluster.nodes.remove(&follower).unwrap().stop_with("KILL");
    let survivors = cluster.bootstrap();
    // Out of the ISR (fenced past its session, or behind past replica.lag.time.max.ms).
    eventually(Duration::from_secs(30), || {
        let (_, topics) = metadata(&survivors)?;
        let (_, _, isr) = topics.get("strict")?[0].clone();
        (isr == vec![leader]).then_some(())
    })
    .expect("the follower leaves the ISR");
    assert_eq!(produce("all", &survivors), "NOT_ENOUGH_REPLICAS");
    assert_eq!(produce("1", &survivors), "OK");
    cluster.start_node(follower);
    fully_replicated(&survivors, "strict", Duration::from_secs(30)).expect("back in the ISR");
    // The leader's own view of the ISR may lag the node that answered the metadata by a
    // moment: NOT_ENOUGH_REPLICAS is retriable, and a produce soon succeeds.
    let accepted = eventually(Duration::from_secs(15), || {
        (produce("all", &survivors) == "OK").then_some(())
    });
    assert!(
        accepted.is_some(),
        "acks=all works again once the follower is back"
    );
}

/// Controlled shutdown (Kafka's BrokerHeartbeat `wantShutDown`): a broker given SIGTERM first
/// asks the controller to move its leaderships to other in-sync replicas and take it out of
/// the ISRs, then stops. Checked on a topic with replication factor 3 (every partition moves
/// and the broker leaves every ISR, well before its session would have expired) and one with a
/// single replica on that broker (kept: no one else can lead it); the broker's log says so.
#[test]
fn sigterm_moves_leaderships_away_before_the_broker_stops() {
    let mut cluster = Cluster::start(&[1, 2, 3]);
    let bootstrap = cluster.bootstrap();
    eventually(Duration::from_secs(20), || {
        metadata(&bootstrap).filter(|(b, _)| b.len() == 3)
    })
    .expect("three brokers register");
    create_topic(&bootstrap, "handover", 6, 3).expect("created");
    let views = eventually(Duration::from_secs(20), || {
        let (_, topics) = metadata(&bootstrap)?;
        let partitions = topics.get("handover")?.clone();
        partitions
            .iter()
            .all(|(leader, _, isr)| *leader >= 0 && isr.len() == 3)
            .then_some(partitions)
    })
    .expect("every replica is in sync");
    let victim = views[0].0;
    // A partition only the victim holds: it keeps it through the controlled shutdown.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let assignment: &[&[i32]] = &[&[victim]];
    let solo = NewTopic::new("solo", 1, TopicReplication::Variable(assignment));
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let created = block(admin.create_topics(&[solo], &options)).expect("answered");
    assert!(created[0].is_ok(), "{created:?}");

    let mut node = cluster.nodes.remove(&victim).unwrap();
    let survivors = cluster.bootstrap();
    let signalled = Instant::now();
    node.signal("TERM");
    let moved = eventually(Duration::from_secs(10), || {
        let (_, topics) = metadata(&survivors)?;
        let partitions = topics.get("handover")?.clone();
        partitions
            .iter()
            .all(|(leader, _, isr)| *leader >= 0 && *leader != victim && !isr.contains(&victim))
            .then_some(partitions)
    });
    let moved_after = signalled.elapsed();
    eprintln!("leaderships moved away {moved_after:?} after SIGTERM (as clients see it)");
    assert!(
        moved.is_some(),
        "broker {victim}'s leaderships move away; its log:\n{}",
        node.log().join("\n")
    );
    // Before the victim's session ends: the controlled shutdown moved them, not fencing.
    assert!(
        moved_after < Duration::from_millis(SESSION_TIMEOUT_MS),
        "moved only after {moved_after:?}"
    );
    eventually(Duration::from_secs(20), || {
        (!node.is_running()).then_some(())
    })
    .expect("the broker exits after its controlled shutdown");
    let log = node.log();
    let done = log
        .iter()
        .find(|l| l.contains("controlled shutdown done"))
        .unwrap_or_else(|| panic!("no controlled shutdown line:\n{}", log.join("\n")));
    assert!(done.contains("kept_leaderships=1"), "{done}");
    let moving = log
        .iter()
        .position(|l| l.contains("controlled shutdown: moving leaderships away"));
    let draining = log.iter().position(|l| l.contains("draining connections"));
    assert!(
        moving.is_some() && moving < draining,
        "the controlled shutdown comes before the drain:\n{}",
        log.join("\n")
    );

    // ElectLeaders through confluent-kafka's AdminClient, with the broker gone. Once its
    // session ends, "solo" (its only replica is that broker) has no leader.
    eventually(Duration::from_secs(15), || {
        let (_, topics) = metadata(&survivors)?;
        (topics.get("solo")?[0].0 == -1).then_some(())
    })
    .expect("solo loses its leader when the broker is fenced");
    let answers = elect_leaders(
        &survivors,
        &[
            ("PREFERRED", None),
            (
                "PREFERRED",
                Some(
                    "handover:0,handover:1,handover:2,handover:3,handover:4,handover:5,handover:99",
                ),
            ),
            ("UNCLEAN", Some("solo:0,handover:0")),
        ],
    );
    // Every partition: only those whose election was needed are answered; the ones the
    // stopped broker prefers cannot get it back.
    let mut every: Vec<String> = views
        .iter()
        .enumerate()
        .filter(|(_, (_, replicas, _))| replicas[0] == victim)
        .map(|(p, _)| format!("handover:{p}=PREFERRED_LEADER_NOT_AVAILABLE"))
        .collect();
    every.push("solo:0=PREFERRED_LEADER_NOT_AVAILABLE".to_string());
    assert_eq!(answers[0], every, "{answers:?}");
    let named: Vec<String> = views
        .iter()
        .enumerate()
        .map(|(p, (_, replicas, _))| {
            let code = if replicas[0] == victim {
                "PREFERRED_LEADER_NOT_AVAILABLE"
            } else {
                "ELECTION_NOT_NEEDED"
            };
            format!("handover:{p}={code}")
        })
        .chain(["handover:99=UNKNOWN_TOPIC_OR_PART".to_string()])
        .collect();
    assert_eq!(answers[1], named, "{answers:?}");
    assert_eq!(
        answers[2],
        vec![
            "handover:0=ELECTION_NOT_NEEDED".to_string(),
            "solo:0=ELIGIBLE_LEADERS_NOT_AVAILABLE".to_string()
        ],
        "{answers:?}"
    );

    // Internal topics want offsets.topic.replication.factor and
    // transaction.state.log.replication.factor (3) live brokers: with two, FindCoordinator is
    // COORDINATOR_NOT_AVAILABLE, as in Kafka, and nothing is created.
    let survivor = cluster.nodes.values().next().unwrap().addr;
    let find = |addr| {
        let mut client = support::RawClient::connect(addr);
        [(0i8, "g-internal"), (1i8, "tx-internal")].map(|(key_type, key)| {
            let request = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_static_str(key))
                .with_key_type(key_type);
            let response: FindCoordinatorResponse =
                client.call(ApiKey::FindCoordinator, 3, &request);
            response.error_code
        })
    };
    assert_eq!(find(survivor), [15, 15], "COORDINATOR_NOT_AVAILABLE");
    let internal = |bootstrap: &str| -> Option<BTreeMap<String, Vec<usize>>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .ok()?;
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).ok()?;
        Some(
            metadata
                .topics()
                .iter()
                .filter(|t| t.name().starts_with("__"))
                .map(|t| {
                    let replicas = t.partitions().iter().map(|p| p.replicas().len()).collect();
                    (t.name().to_string(), replicas)
                })
                .collect(),
        )
    };
    assert_eq!(internal(&survivors), Some(BTreeMap::new()));
    // The third broker back: both are created with three replicas each.
    drop(node);
    cluster.start_node(victim);
    let bootstrap = cluster.bootstrap();
    eventually(Duration::from_secs(20), || {
        metadata(&bootstrap).filter(|(b, _)| b.len() == 3)
    })
    .expect("the broker comes back");
    eventually(Duration::from_secs(10), || {
        (find(cluster.nodes[&victim].addr) == [0, 0]).then_some(())
    })
    .expect("the coordinators are found once three brokers are live");
    let topics = internal(&bootstrap).unwrap();
    assert_eq!(topics.len(), 2, "{topics:?}");
    for (name, replicas) in &topics {
        assert!(
            !replicas.is_empty() && replicas.iter().all(|n| *n == 3),
            "{name}: {replicas:?}"
        );
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let described = block(admin.describe_configs(
        &[ResourceSpecifier::Topic("__transaction_state")],
        &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
    ))
    .unwrap();
    let config = described[0].as_ref().expect("described");
    let min_isr = config
        .get("min.insync.replicas")
        .and_then(|e| e.value.clone());
    assert_eq!(
        min_isr.as_deref(),
        Some("2"),
        "transaction.state.log.min.isr"
    );
}

/// Runs confluent-kafka's `AdminClient.elect_leaders` once per `(election type, partitions)`
/// (`None`: every partition; else `topic:partition,...`); each answer is its
/// `topic:partition=ERROR` lines, sorted.
fn elect_leaders(bootstrap: &str, calls: &[(&str, Option<&str>)]) -> Vec<Vec<String>> {
    let script = r#"
import sys
from confluent_kafka import TopicPartition, ElectionType, KafkaException
from confluent_kafka.admin import AdminClient
a = AdminClient({'bootstrap.servers': sys.argv[1]})
kind = ElectionType[sys.argv[2]]
parts = None
if sys.argv[3] != '-':
    parts = [TopicPartition(t, int(p)) for t, p in (x.split(':') for x in sys.argv[3].split(','))]
try:
    # (confluent-kafka 2.16 fails on any keyword argument here: its binding mis-parses them.)
    result = a.elect_leaders(kind, parts).result(timeout=30)
except KafkaException as e:
    print('request=' + e.args[0].name())
    sys.exit(0)
for tp, err in result.items():
    print('%s:%d=%s' % (tp.topic, tp.partition, err.name() if err else 'NONE'))
"#;
    calls
        .iter()
        .map(|(kind, partitions)| {
            let (status, out, err) = run_bounded(
                "python3",
                &["-c", script, bootstrap, kind, partitions.unwrap_or("-")],
                Duration::from_secs(40),
            );
            assert!(status.success(), "elect_leaders: {err}");
            let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
            lines.sort_unstable_by_key(|l| {
                let (tp, _) = l.split_once('=').unwrap_or((l, ""));
                let (t, p) = tp.split_once(':').unwrap_or((tp, "0"));
                (t.to_string(), p.parse::<i32>().unwrap_or(0))
            });
            lines
        })
        .collect()
}

/// A rolling restart under load (issue 15): each of the three nodes in turn gets SIGTERM
/// (controlled shutdown: its leaderships move first), is restarted on its data dir and rejoins
/// every ISR before the next one goes, while an idempotent acks=all producer writes. Nothing
/// acknowledged is lost or duplicated and the producer sees no error it would not retry.
#[test]
fn a_rolling_restart_under_load_loses_nothing() {
    let mut cluster = Cluster::start(&[1, 2, 3]);
    let bootstrap = cluster.bootstrap();
    eventually(Duration::from_secs(20), || {
        metadata(&bootstrap).filter(|(b, _)| b.len() == 3)
    })
    .expect("three brokers register");
    create_topic_with(&bootstrap, "rolling", 6, 3, &[("min.insync.replicas", "2")])
        .expect("created");
    fully_replicated(&bootstrap, "rolling", Duration::from_secs(20))
        .expect("every follower joins the ISR");
    let acked_file = tempfile::NamedTempFile::new().unwrap();
    let acked_path = acked_file.path().to_str().unwrap().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/failover.py");
    let mut producer = KillOnDrop(
        Command::new("python3")
            .args([
                script,
                "produce",
                &bootstrap,
                "rolling",
                "60000",
                &acked_path,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs"),
    );
    let stdout = producer.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = lines_tx.send(line);
        }
    });
    let wait_acked = |at_least: usize| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            match lines_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.starts_with("progress ") => {
                    if line[9..].trim().parse::<usize>().unwrap_or(0) >= at_least {
                        return None;
                    }
                }
                Ok(line) => return Some(line),
                Err(_) => break,
            }
        }
        panic!("the producer makes no progress");
    };
    let mut summary = None;
    for (round, id) in [1, 2, 3].into_iter().enumerate() {
        if let Some(line) = wait_acked(5_000 + round * 10_000) {
            summary = Some(line);
            break;
        }
        let node = cluster.nodes.remove(&id).unwrap();
        let status = node.stop_with("TERM");
        assert!(status.success(), "node {id} stops cleanly: {status:?}");
        cluster.start_node(id);
        let others: String = cluster
            .nodes
            .iter()
            .filter(|(other, _)| **other != id)
            .map(|(_, n)| n.bootstrap())
            .collect::<Vec<_>>()
            .join(",");
        fully_replicated(&others, "rolling", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("node {id} rejoins every ISR after its restart"));
        eprintln!("node {id} restarted and back in every ISR");
    }
    let summary = match summary {
        Some(line) => line,
        None => loop {
            match lines_rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) if line.starts_with("progress ") => continue,
                Ok(line) => break line,
                Err(_) => panic!("the producer does not finish"),
            }
        },
    };
    let status = support::wait_bounded(&mut producer.0, Duration::from_secs(30));
    assert!(status.success(), "producer exit: {status:?}");
    eprintln!("producer: {summary}");
    let counts: serde_json::Value = serde_json::from_str(&summary).expect("one JSON line");
    assert_eq!(
        counts["acked"], 60000,
        "every message acknowledged: {summary}"
    );
    assert_eq!(counts["failed"], 0, "no delivery failed: {summary}");
    let bootstrap = cluster.bootstrap();
    let (status, out, err) = run_bounded(
        "python3",
        &[script, "check", &bootstrap, "rolling", "6", &acked_path],
        Duration::from_secs(180),
    );
    assert!(status.success(), "check: {out} {err}");
    eprintln!("check: {out}");
}

// ---- Coordinators follow leadership (issue 15): groups and transactions across brokers ----

/// A cluster like `Cluster::start`, each node started with `extra` settings on top.
fn start_cluster_with(ids: &[i32], extra: &[&str]) -> Cluster {
    let ports = free_ports(ids.len() * 2);
    let mut cluster = Cluster {
        ports: ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                (
                    *id,
                    Ports {
                        client: ports[2 * i],
                        controller: ports[2 * i + 1],
                    },
                )
            })
            .collect(),
        dirs: ids
            .iter()
            .map(|id| (*id, tempfile::tempdir().unwrap()))
            .collect(),
        nodes: BTreeMap::new(),
    };
    for id in ids {
        let mut args = cluster.args(*id);
        for kv in extra {
            args.push("--set".to_string());
            args.push(kv.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let listen = format!("127.0.0.1:{}", cluster.ports[id].client);
        let node = Broker::start_at(cluster.dirs[id].path(), &listen, &args);
        cluster.nodes.insert(*id, node);
    }
    cluster
}

/// FindCoordinator v4 through `addr` for `key` (key type 0: a group, 1: a transactional id):
/// the coordinator's node id, once one is named without error.
fn find_coordinator(addr: &str, key_type: i8, key: &str) -> Option<i32> {
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    use kafka_protocol::protocol::StrBytes;
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut client = support::RawClient::connect(addr);
    let mut request = FindCoordinatorRequest::default();
    request.key_type = key_type;
    request.coordinator_keys = vec![StrBytes::from_string(key.to_string())];
    let response: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 4, &request);
    let found = response.coordinators.first()?;
    (found.error_code == 0 && found.node_id.0 >= 0).then_some(found.node_id.0)
}

/// The consume-transform-produce loop and the plain group of the acceptance test: see the
/// test. Prints progress lines, and at the end the checks' outcome ("OK ..." or what failed).
const EOS_SCRIPT: &str = r#"
import faulthandler, sys, threading, time
from confluent_kafka import Consumer, Producer, KafkaException, TopicPartition
boot, src, dst, n, eos_id, plain_id, txn_id = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
deadline = time.time() + 100
# Where the script is if it outlives its own deadlines (the test kills it at 150 s).
faulthandler.dump_traceback_later(135, exit=True)
def consumer(group, extra={}):
    conf = {'bootstrap.servers': boot, 'group.id': group, 'auto.offset.reset': 'earliest',
            'enable.auto.commit': False, 'session.timeout.ms': 10000}
    conf.update(extra)
    c = Consumer(conf)
    c.subscribe([src])
    return c
def producer():
    p = Producer({'bootstrap.servers': boot, 'transactional.id': txn_id, 'transaction.timeout.ms': 30000})
    while True:
        try:
            p.init_transactions(30)
            return p
        except KafkaException as e:
            if not e.args[0].retriable() or time.time() >= deadline:
                raise
class Hung(Exception):
    pass
def bounded(call, seconds):
    # librdkafka 2.10 on drops a broker that a Metadata answer leaves out (a fenced one, as
    # Kafka leaves it out too); when that broker was the group coordinator,
    # send_offsets_to_transaction can block for good, past its own timeout (librdkafka issues
    # 5511 and 5456, open). The application's way out is Kafka's: a new producer with the same
    # transactional id fences the stuck one and aborts its transaction.
    box = {}
    def run():
        try:
            call()
        except BaseException as e:
            box['err'] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise Hung()
    if 'err' in box:
        raise box['err']
plain = consumer(plain_id)
eos = consumer(eos_id, {'isolation.level': 'read_committed'})
p = producer()
# What each group committed successfully, per partition: never to be seen going back.
done = {plain_id: {}, eos_id: {}}
problems = []
def check_committed(c, group):
    parts = [TopicPartition(src, i) for i in range(6)]
    try:
        got = c.committed(parts, timeout=10)
    except KafkaException:
        return None
    total = 0
    for tp in got:
        seen = done[group].get(tp.partition, -1001)
        if tp.offset >= 0:
            total += tp.offset
        if tp.offset < seen and not (tp.offset < 0 and seen < 0):
            problems.append('%s partition %d committed %d, was %d' % (group, tp.partition, tp.offset, seen))
    return total
def rewind(c):
    # Back to the committed offsets after an abort; False (retried next round) if they
    # cannot be read now, e.g. while the coordinator moves.
    try:
        parts = c.assignment()
        if parts:
            for tp in c.committed(parts, timeout=10):
                c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
        return True
    except KafkaException as e:
        print('rewind failed:', e.args[0].name(), flush=True)
        return False
eos_rewind = False
plain_total = eos_total = 0
rounds = 0
while time.time() < deadline and (plain_total < n or eos_total < n):
    rounds += 1
    if plain_total < n:
        msgs = [m for m in plain.consume(num_messages=25, timeout=0.3) if not m.error()]
        if msgs:
            try:
                parts = plain.commit(asynchronous=False)
                for tp in parts:
                    if tp.error is None:
                        done[plain_id][tp.partition] = max(done[plain_id].get(tp.partition, -1), tp.offset)
            except KafkaException as e:
                # The next commit covers these records too.
                print('plain commit failed:', e.args[0].name(), flush=True)
    if eos_rewind:
        eos_rewind = not rewind(eos)
    if eos_total < n and not eos_rewind:
        msgs = [m for m in eos.consume(num_messages=25, timeout=0.3) if not m.error()]
        if msgs:
            try:
                p.begin_transaction()
                for m in msgs:
                    p.produce(dst, m.value(), partition=m.partition())
                positions = [tp for tp in eos.position(eos.assignment()) if tp.offset >= 0]
                bounded(lambda: p.send_offsets_to_transaction(positions, eos.consumer_group_metadata(), 30), 40)
                while True:
                    try:
                        p.commit_transaction(30)
                        break
                    except KafkaException as e:
                        if e.args[0].retriable() and time.time() < deadline:
                            continue
                        raise
                for tp in positions:
                    done[eos_id][tp.partition] = max(done[eos_id].get(tp.partition, -1), tp.offset)
            except Hung:
                print('transaction failed: send_offsets_to_transaction hung (librdkafka 5511); a new producer takes over', flush=True)
                p = producer()
                eos_rewind = not rewind(eos)
            except KafkaException as e:
                err = e.args[0]
                print('transaction failed:', err.name(), 'abortable', err.txn_requires_abort(), flush=True)
                if err.fatal():
                    print('FATAL', err.name(), flush=True)
                    sys.exit(3)
                while True:
                    try:
                        p.abort_transaction(30)
                        break
                    except KafkaException as e:
                        if e.args[0].retriable() and time.time() < deadline:
                            continue
                        print('FATAL abort', e.args[0].name(), flush=True)
                        sys.exit(3)
                eos_rewind = not rewind(eos)
    t = check_committed(plain, plain_id)
    plain_total = t if t is not None else plain_total
    t = check_committed(eos, eos_id)
    eos_total = t if t is not None else eos_total
    print('progress', plain_total, eos_total, flush=True)
    time.sleep(0.05)
plain.close()
eos.close()
# Topic B read with read_committed: every input value exactly once.
reader = Consumer({'bootstrap.servers': boot, 'group.id': 'reader-' + eos_id, 'auto.offset.reset': 'earliest',
                   'enable.auto.commit': False, 'isolation.level': 'read_committed'})
parts = [TopicPartition(dst, i, 0) for i in range(6)]
reader.assign(parts)
ends = {i: reader.get_watermark_offsets(TopicPartition(dst, i), timeout=10)[1] for i in range(6)}
values = []
quiet = time.time() + 15
while time.time() < quiet:
    m = reader.poll(0.5)
    if m is None or m.error():
        pos = {tp.partition: tp.offset for tp in reader.position(parts)}
        if all(pos[i] >= ends[i] for i in range(6)):
            break
        continue
    values.append(m.value().decode())
reader.close()
want = sorted('v%d' % i for i in range(n))
dupes = len(values) - len(set(values))
missing = len(set(want) - set(values))
print('RESULT plain=%d eos=%d output=%d dupes=%d missing=%d problems=%s' % (plain_total, eos_total, len(values), dupes, missing, problems), flush=True)
if plain_total == n and eos_total == n and sorted(values) == want and not problems:
    print('OK', flush=True)
"#;

/// Issue 15's acceptance for the coordinators: a plain consumer group (commits after every
/// batch) and a confluent-kafka consume-transform-produce loop (read_committed consumer,
/// transactional producer, offsets sent to the transaction) over topics of 6 partitions with
/// replication factor 3, while the broker coordinating both groups and the transactional id
/// gets SIGKILL a third of the way through. Committed offsets never go back past what was
/// committed, both groups end at the topic's end, and the output topic read with
/// read_committed holds every input record exactly once.
#[test]
fn a_group_and_a_transactional_loop_survive_their_coordinator_s_sigkill() {
    coordinators_lost_mid_stream(CoordinatorLoss::Kill);
}

/// The same with the coordinators' broker frozen (SIGSTOP) until the cluster has fenced it and
/// moved its leaderships, then resumed (SIGCONT): a zombie coordinator, whose writes in flight
/// when it froze must not be acknowledged unless its ISR holds them, and which must give up
/// its partitions once it sees it no longer leads them.
#[test]
fn a_group_and_a_transactional_loop_survive_a_frozen_coordinator() {
    coordinators_lost_mid_stream(CoordinatorLoss::Freeze);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CoordinatorLoss {
    Kill,
    Freeze,
}

fn coordinators_lost_mid_stream(loss: CoordinatorLoss) {
    // The internal topics with three replicas (default.replication.factor: the broker creates
    // them with it).
    let mut cluster = start_cluster_with(&[1, 2, 3], &["default.replication.factor=3"]);
    let bootstrap = cluster.bootstrap();
    let ready = eventually(Duration::from_secs(20), || {
        metadata(&bootstrap).filter(|(b, _)| b.len() == 3)
    });
    assert!(ready.is_some(), "three brokers register");
    for topic in ["eos-in", "eos-out"] {
        create_topic_with(&bootstrap, topic, 6, 3, &[("min.insync.replicas", "2")])
            .expect("topic created");
    }
    let n = 600;
    let input: String = (0..n).map(|i| format!("v{i}\n")).collect();
    let (status, _, err) = support::run_bounded_with_input(
        "kcat",
        &["-b", &bootstrap, "-P", "-t", "eos-in", "-X", "acks=all"],
        &input,
        Duration::from_secs(30),
    );
    assert!(status.success(), "kcat produce: {err}");

    // A group for the loop, a transactional id and a plain group whose coordinators are all
    // on one broker (FindCoordinator creates the internal topics on first use; the two topics'
    // placements start at random brokers, so the ids differ).
    let node1 = cluster.nodes[&1].bootstrap();
    let coordinator_of = |key_type: i8, key: &str| {
        eventually(Duration::from_secs(20), || {
            find_coordinator(&node1, key_type, key)
        })
        .unwrap_or_else(|| panic!("a coordinator for {key}"))
    };
    let eos_id = "eos-group".to_string();
    let target = coordinator_of(0, &eos_id);
    let txn_id = (0..40)
        .map(|i| format!("eos-txn-{i}"))
        .find(|id| coordinator_of(1, id) == target)
        .expect("a transactional id coordinated there");
    let plain_id = (0..40)
        .map(|i| format!("plain-{i}"))
        .find(|id| coordinator_of(0, id) == target)
        .expect("a group coordinated there");
    eprintln!("coordinators of {eos_id}, {txn_id} and {plain_id} on broker {target}");
    // The internal partitions are fully replicated before the kill (else their leadership
    // could not move to an in-sync replica).
    for internal in ["__consumer_offsets", "__transaction_state"] {
        let replicated = eventually(Duration::from_secs(20), || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .ok()?;
            let md = consumer
                .fetch_metadata(Some(internal), Duration::from_secs(5))
                .ok()?;
            let topic = md.topics().first()?;
            (!topic.partitions().is_empty()
                && topic
                    .partitions()
                    .iter()
                    .all(|p| p.replicas().len() == 3 && p.isr().len() == 3))
            .then_some(())
        });
        assert!(
            replicated.is_some(),
            "{internal} has three in-sync replicas"
        );
    }

    let mut child = Command::new("python3")
        .args([
            "-c",
            EOS_SCRIPT,
            &bootstrap,
            "eos-in",
            "eos-out",
            &n.to_string(),
            &eos_id,
            &plain_id,
            &txn_id,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = KillOnDrop(child);
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let errors = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut all);
        all
    });
    // Mid-stream (a third of the input through both loops), SIGKILL the coordinators' broker.
    let mut seen = Vec::new();
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(40) {
        let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let progress: Vec<i64> = line
            .strip_prefix("progress ")
            .map(|rest| rest.split(' ').filter_map(|v| v.parse().ok()).collect())
            .unwrap_or_default();
        seen.push(line);
        if let [plain, eos] = progress[..]
            && plain >= n / 3
            && eos >= n / 3
        {
            match loss {
                CoordinatorLoss::Kill => {
                    cluster.nodes.remove(&target).unwrap().stop_with("KILL");
                }
                CoordinatorLoss::Freeze => {
                    let node = &cluster.nodes[&target];
                    node.signal("STOP");
                    // Fenced past its session, its partitions led by the others meanwhile.
                    std::thread::sleep(Duration::from_millis(2 * SESSION_TIMEOUT_MS + 1_000));
                    node.signal("CONT");
                }
            }
            eprintln!("{loss:?} broker {target} at {plain} / {eos} of {n}");
            killed = true;
            break;
        }
    }
    assert!(killed, "the loops did not get a third through: {seen:#?}");
    let status = support::wait_bounded(&mut child.0, Duration::from_secs(150));
    let _ = reader.join();
    seen.extend(lines_rx.try_iter());
    let errors = errors.join().unwrap_or_default();
    let tail: Vec<&String> = seen.iter().rev().take(15).collect();
    if let Some(result) = seen.iter().find(|l| l.starts_with("RESULT")) {
        eprintln!("{result}");
    }
    let retried = seen.iter().filter(|l| l.contains("failed")).count();
    eprintln!("{retried} commits or transactions failed and were retried across the failover");
    assert!(
        status.success(),
        "the loops failed ({status:?}): {tail:#?}\n{errors}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("OK"),
        "offsets or exactly-once output not intact: {tail:#?}\n{errors}"
    );
    // A resumed coordinator gave its partitions up when it saw it no longer led them.
    if loss == CoordinatorLoss::Freeze {
        let node = &cluster.nodes[&target];
        for topic in ["__consumer_offsets", "__transaction_state"] {
            let line = format!("unloaded {topic} partition");
            let unloaded = eventually(Duration::from_secs(10), || {
                node.log().iter().any(|l| l.contains(&line)).then_some(())
            });
            assert!(unloaded.is_some(), "broker {target} never logged {line:?}");
        }
    }
    // The survivors coordinate both now.
    let survivor = cluster
        .nodes
        .iter()
        .find(|(id, _)| **id != target)
        .unwrap()
        .1
        .bootstrap();
    let moved = find_coordinator(&survivor, 1, &txn_id);
    assert!(
        moved.is_some_and(|id| id != target),
        "the transaction coordinator moved: {moved:?}"
    );
}

/// One WriteTxnMarkers v1 through `addr`: an abort (or commit) marker of `producer_id` on
/// `topic`-`partition`; the partition's error code.
fn write_txn_marker(
    addr: &str,
    topic: &str,
    partition: i32,
    producer_id: i64,
    commit: bool,
) -> i16 {
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    let mut marker_topic = WritableTxnMarkerTopic::default();
    marker_topic.name = TopicName(StrBytes::from_string(topic.to_string()));
    marker_topic.partition_indexes = vec![partition];
    let mut marker = WritableTxnMarker::default();
    marker.producer_id = ProducerId(producer_id);
    marker.producer_epoch = 0;
    marker.transaction_result = commit;
    marker.coordinator_epoch = 0;
    marker.topics = vec![marker_topic];
    let mut request = WriteTxnMarkersRequest::default();
    request.markers = vec![marker];
    let mut client = support::RawClient::connect(addr.parse().unwrap());
    let response: WriteTxnMarkersResponse = client.call(ApiKey::WriteTxnMarkers, 1, &request);
    assert_eq!(response.markers.len(), 1);
    let result = &response.markers[0];
    assert_eq!(result.producer_id.0, producer_id);
    assert_eq!(result.topics[0].name.0.as_str(), topic);
    assert_eq!(result.topics[0].partitions[0].partition_index, partition);
    result.topics[0].partitions[0].error_code
}

#[test]
fn write_txn_markers_checks_its_caller_the_partition_and_its_leader() {
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    // A lone node with an authorizer and no ACLs: ANONYMOUS may not CLUSTER_ACTION.
    let dir = tempfile::tempdir().unwrap();
    let secured = Broker::start_in(
        dir.path(),
        &[
            "--set",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        ],
    );
    assert_eq!(
        write_txn_marker(&secured.bootstrap(), "any", 0, 1, false),
        CLUSTER_AUTHORIZATION_FAILED
    );
    drop(secured);

    let cluster = Cluster::start(&[1, 2, 3]);
    let bootstrap = cluster.bootstrap();
    let ready = eventually(Duration::from_secs(20), || {
        metadata(&bootstrap).filter(|(b, _)| b.len() == 3)
    });
    assert!(ready.is_some(), "three brokers register");
    create_topic(&bootstrap, "marked", 3, 3).expect("created");
    let partitions = fully_replicated(&bootstrap, "marked", Duration::from_secs(20))
        .expect("the topic is replicated");
    let (leader, _, _) = partitions[0];
    let on_leader = cluster.nodes[&leader].bootstrap();
    let (other, _) = cluster.nodes.iter().find(|(id, _)| **id != leader).unwrap();
    let on_follower = cluster.nodes[other].bootstrap();
    assert_eq!(
        write_txn_marker(&on_leader, "no-such-topic", 0, 1, false),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        write_txn_marker(&on_leader, "marked", 7, 1, false),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        write_txn_marker(&on_follower, "marked", 0, 1, false),
        NOT_LEADER_OR_FOLLOWER
    );
    // On the leader an abort marker of a producer is written (as Kafka writes one with no
    // open transaction) once the ISR holds it: the high watermark passes it on every replica.
    assert_eq!(write_txn_marker(&on_leader, "marked", 0, 77, false), 0);
    let moved = eventually(Duration::from_secs(10), || {
        (high_watermark(&on_leader, "marked", 0)? == 1).then_some(())
    });
    assert!(moved.is_some(), "the marker is below the high watermark");
}

/// KIP-966's eligible leader replicas, the "last replica standing" loss: a topic with
/// replication factor 2 and min.insync.replicas=2. An idempotent acks=all producer writes; the
/// follower F is frozen (SIGSTOP) until the ISR is the leader L alone (F is then an eligible
/// leader replica: it left while the ISR was below min.insync.replicas, so it holds every
/// acknowledged record); L loses its disk (SIGKILL, its partition directory deleted) and
/// restarts. Without the ELR, L stayed the ISR's last member and led again with an empty log;
/// now its registration takes it out of the ISR, the partition has no leader while only L is
/// live, and F leads once it is back. Every acknowledged message is read back, and L catches up
/// from F. (Replication factor 2: with three voters, two replicas out at once would also take
/// the metadata quorum's majority.)
#[test]
fn an_eligible_leader_replica_leads_when_the_last_in_sync_replica_loses_its_disk() {
    let mut cluster = Cluster::start(&[1, 2, 3]);
    let bootstrap = cluster.bootstrap();
    eventually(Duration::from_secs(20), || {
        metadata(&bootstrap).filter(|(b, _)| b.len() == 3)
    })
    .expect("three brokers register");
    create_topic_with(&bootstrap, "elr", 1, 2, &[("min.insync.replicas", "2")]).expect("created");
    let views = fully_replicated(&bootstrap, "elr", Duration::from_secs(20))
        .expect("the follower joins the ISR");
    let (leader, replicas, _) = views[0].clone();
    let follower = *replicas.iter().find(|id| **id != leader).unwrap();
    let produce = r#"
import sys
from confluent_kafka import Producer
p = Producer({'bootstrap.servers': sys.argv[1], 'acks': 'all', 'enable.idempotence': True,
              'message.timeout.ms': 20000, 'linger.ms': 5})
ok, failed = [], []
def done(err, msg):
    (failed if err else ok).append(err.name() if err else msg.value().decode())
for i in range(int(sys.argv[2])):
    p.produce('elr', ('m-%d' % i).encode(), on_delivery=done)
    if i % 50 == 49:
        p.flush(20)
p.flush(30)
print(len(ok), len(failed), ' '.join(sorted(set(failed))))
"#;
    const SENT: usize = 400;
    let (status, out, err) = run_bounded(
        "python3",
        &["-c", produce, &bootstrap, &SENT.to_string()],
        Duration::from_secs(90),
    );
    assert!(status.success(), "producer: {err}");
    assert_eq!(
        out.trim(),
        format!("{SENT} 0"),
        "every message acknowledged"
    );

    // Freeze the follower until the ISR is the leader alone and the follower is fenced.
    cluster.nodes[&follower].signal("STOP");
    let others = |cluster: &Cluster, skip: &[i32]| -> String {
        cluster
            .nodes
            .iter()
            .filter(|(id, _)| !skip.contains(id))
            .map(|(_, n)| n.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    };
    let live = others(&cluster, &[follower]);
    eventually(Duration::from_secs(30), || {
        let (brokers, topics) = metadata(&live)?;
        let (_, _, isr) = topics.get("elr")?[0].clone();
        (isr == vec![leader] && !brokers.contains(&follower)).then_some(())
    })
    .expect("the frozen follower leaves the ISR and is fenced");

    // The leader, the only in-sync replica, loses its disk and comes back.
    cluster.nodes.remove(&leader).unwrap().stop_with("KILL");
    let wiped = cluster.dir(leader).join("elr-0");
    std::fs::remove_dir_all(&wiped).expect("the leader's partition directory exists");
    cluster.start_node(leader);
    let live = others(&cluster, &[follower]);
    eventually(Duration::from_secs(30), || {
        let (brokers, topics) = metadata(&live)?;
        let (elected, _, isr) = topics.get("elr")?[0].clone();
        (brokers.contains(&leader) && elected == -1 && isr.is_empty()).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the restarted leader is unfenced but neither in sync nor leading: {:?}; its log:\n{}",
            metadata(&live),
            cluster.nodes[&leader].log().join("\n")
        )
    });
    // And it stays so: the eligible replica is waited for.
    std::thread::sleep(Duration::from_secs(2));
    let (_, topics) = metadata(&live).expect("metadata");
    assert_eq!(
        topics["elr"][0].0, -1,
        "no leader without the eligible replica"
    );

    // The follower is back: it leads, with every acknowledged record.
    cluster.nodes[&follower].signal("CONT");
    let bootstrap = cluster.bootstrap();
    eventually(Duration::from_secs(30), || {
        let (_, topics) = metadata(&live)?;
        (topics.get("elr")?[0].0 == follower).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the eligible replica leads once back: {:?}; its log:\n{}",
            metadata(&live),
            cluster.nodes[&follower].log().join("\n")
        )
    });
    // The wiped replica catches up and rejoins the ISR, so the high watermark moves again.
    fully_replicated(&live, "elr", Duration::from_secs(60)).expect("the wiped replica rejoins");
    let read = eventually(Duration::from_secs(30), || {
        let (_, out, _) = run_bounded(
            "kcat",
            &[
                "-C",
                "-b",
                &bootstrap,
                "-t",
                "elr",
                "-p",
                "0",
                "-o",
                "beginning",
                "-e",
                "-q",
            ],
            Duration::from_secs(20),
        );
        let values: std::collections::BTreeSet<String> = out.lines().map(str::to_string).collect();
        (values.len() >= SENT).then_some(values)
    })
    .unwrap_or_else(|| panic!("every acknowledged message is read back from {follower}"));
    for i in 0..SENT {
        assert!(read.contains(&format!("m-{i}")), "m-{i} lost");
    }
}

/// A three-node cluster (`start_cluster_with` and `extra`) once all three brokers registered.
fn registered_cluster(extra: &[&str]) -> Cluster {
    let cluster = start_cluster_with(&[1, 2, 3], extra);
    let bootstrap = cluster.bootstrap();
    let ready = eventually(Duration::from_secs(20), || {
        metadata(&bootstrap).filter(|(b, _)| b.len() == 3)
    });
    assert!(ready.is_some(), "three brokers register");
    cluster
}

/// Creates `topic` (one partition, three replicas, min.insync.replicas 2), writes "v0" to
/// "v99" with kcat at acks=all, and waits until every replica is in sync: the partition's view.
fn hundred_replicated_messages(bootstrap: &str, topic: &str) -> Vec<PartitionView> {
    create_topic_with(bootstrap, topic, 1, 3, &[("min.insync.replicas", "2")])
        .expect("topic created");
    let input: String = (0..100).map(|i| format!("v{i}\n")).collect();
    let (status, _, err) = support::run_bounded_with_input(
        "kcat",
        &["-b", bootstrap, "-P", "-t", topic, "-X", "acks=all"],
        &input,
        Duration::from_secs(30),
    );
    assert!(status.success(), "kcat produce: {err}");
    fully_replicated(bootstrap, topic, Duration::from_secs(20)).expect("every replica in sync")
}

/// FindCoordinator v4 through `addr` for group `key`: the error code and the node named.
fn find_group_coordinator_answer(addr: &str, key: &str) -> Option<(i16, i32)> {
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut client = support::RawClient::connect(addr);
    let mut request = FindCoordinatorRequest::default();
    request.key_type = 0;
    request.coordinator_keys = vec![StrBytes::from_string(key.to_string())];
    let response: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 4, &request);
    let found = response.coordinators.first()?;
    Some((found.error_code, found.node_id.0))
}

/// OffsetFetch v8 for every partition of group `group`, sent to `addr`: the group's error code.
fn offset_fetch_error(addr: &str, group: &str) -> Option<i16> {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
    use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut client = support::RawClient::connect(addr);
    let mut group_request = OffsetFetchRequestGroup::default();
    group_request.group_id = GroupId(StrBytes::from_string(group.to_string()));
    group_request.topics = None;
    let mut request = OffsetFetchRequest::default();
    request.groups = vec![group_request];
    let response: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 8, &request);
    response.groups.first().map(|g| g.error_code)
}

/// A broker cut off from the controller quorum (here: the other two nodes frozen) stops
/// acting as a group coordinator within its metadata lease (`metadata::lease`, a share of
/// `broker.session.timeout.ms`): FindCoordinator through it answers COORDINATOR_NOT_AVAILABLE
/// and OffsetFetch NOT_COORDINATOR, instead of answering from a cache a new coordinator may
/// have moved past. Once the quorum is back it coordinates again.
#[test]
fn a_broker_cut_off_from_the_quorum_stops_answering_as_group_coordinator() {
    const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    const NOT_COORDINATOR: i16 = 16;
    let cluster = registered_cluster(&[]);
    let group = "lease-group";
    // The coordinator, named through itself (FindCoordinator creates __consumer_offsets).
    let node1 = cluster.nodes[&1].bootstrap();
    let target = eventually(Duration::from_secs(20), || {
        find_coordinator(&node1, 0, group)
    })
    .expect("a coordinator for the group");
    let target_addr = cluster.nodes[&target].bootstrap();
    let answered = eventually(Duration::from_secs(20), || {
        (offset_fetch_error(&target_addr, group) == Some(0)).then_some(())
    });
    assert!(answered.is_some(), "the coordinator answers OffsetFetch");

    let others: Vec<i32> = [1, 2, 3].into_iter().filter(|id| *id != target).collect();
    for id in &others {
        cluster.nodes[id].signal("STOP");
    }
    let frozen_at = Instant::now();
    let refused = eventually(Duration::from_millis(3 * SESSION_TIMEOUT_MS), || {
        let found = find_group_coordinator_answer(&target_addr, group)?;
        let fetched = offset_fetch_error(&target_addr, group)?;
        (found.0 == COORDINATOR_NOT_AVAILABLE && fetched == NOT_COORDINATOR).then_some(())
    });
    let waited = frozen_at.elapsed();
    for id in &others {
        cluster.nodes[id].signal("CONT");
    }
    assert!(
        refused.is_some(),
        "broker {target}, alone, still named itself coordinator {waited:?} after the quorum went"
    );
    eprintln!("broker {target} stopped coordinating {waited:?} after the others froze");
    let back = eventually(Duration::from_secs(30), || {
        let coordinator = find_coordinator(&target_addr, 0, group)?;
        let addr = cluster.nodes[&coordinator].bootstrap();
        (offset_fetch_error(&addr, group) == Some(0)).then_some(())
    });
    assert!(
        back.is_some(),
        "the group has a coordinator again once the quorum is back"
    );
}

/// Produce `version` of one (valid) record batch to `topic`-`partition`, sent to `addr`.
fn produce_to(
    addr: &str,
    version: i16,
    topic: &str,
    partition: i32,
) -> kafka_protocol::messages::ProduceResponse {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    let batch = ringbroker::storage::cleaner::records::build_keyed_batch(
        &[(Some(b"k".as_slice()), Some(b"v".as_slice()))],
        1_700_000_000_000,
        ringbroker::storage::compression::Codec::None,
        0,
        (-1, -1, -1),
    );
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(bytes::Bytes::from(batch))),
                ]),
        ]);
    let mut client = support::RawClient::connect(addr.parse().unwrap());
    let response: ProduceResponse = client.call(ApiKey::Produce, version, &request);
    response
}

/// KIP-951: Produce v10 sent to a broker that does not lead the partition answers
/// NOT_LEADER_OR_FOLLOWER with the leader and its epoch, and the leader's endpoint; v9 has
/// no room for them. The leader itself takes the write.
#[test]
fn produce_v10_off_the_leader_names_the_leader_and_its_endpoint() {
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let cluster = registered_cluster(&[]);
    let bootstrap = cluster.bootstrap();
    create_topic_with(&bootstrap, "hints", 3, 1, &[]).expect("topic created");
    let partitions = eventually(Duration::from_secs(20), || {
        let (_, topics) = metadata(&bootstrap)?;
        let views = topics.get("hints")?.clone();
        (views.len() == 3 && views.iter().all(|(leader, _, _)| *leader > 0)).then_some(views)
    })
    .expect("every partition led");
    let (leader, _, _) = partitions[0];
    let other = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let other_addr = cluster.nodes[&other].bootstrap();
    let leader_port = i32::from(cluster.ports[&leader].client);

    let answer = eventually(Duration::from_secs(10), || {
        let response = produce_to(&other_addr, 10, "hints", 0);
        let partition = response
            .responses
            .first()?
            .partition_responses
            .first()?
            .clone();
        (partition.error_code == NOT_LEADER_OR_FOLLOWER
            && partition.current_leader.leader_id.0 >= 0)
            .then_some((partition, response.node_endpoints))
    });
    let (partition, endpoints) = answer.expect("a NOT_LEADER_OR_FOLLOWER answer with a leader");
    assert_eq!(
        partition.current_leader.leader_id.0, leader,
        "{partition:?}"
    );
    assert_eq!(
        partition.current_leader.leader_epoch, 0,
        "a new partition's first leader"
    );
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    assert_eq!(endpoints[0].node_id.0, leader);
    assert_eq!(endpoints[0].host.as_str(), "127.0.0.1");
    assert_eq!(endpoints[0].port, leader_port);

    let old = produce_to(&other_addr, 9, "hints", 0);
    let partition = &old.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(
        partition.current_leader.leader_id.0, -1,
        "no hint before v10"
    );
    assert!(old.node_endpoints.is_empty());

    let leader_addr = cluster.nodes[&leader].bootstrap();
    let written = produce_to(&leader_addr, 10, "hints", 0);
    let partition = &written.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 0, "{partition:?}");
    assert_eq!(
        partition.current_leader.leader_id.0, -1,
        "no hint without an error"
    );
    assert!(written.node_endpoints.is_empty());
}

/// Fetch `version` of `topic`-0 from offset 0 as a consumer in `rack`, sent to `addr`: the
/// partition's answer.
fn consumer_fetch(
    addr: &str,
    version: i16,
    topic: &str,
    rack: &str,
) -> kafka_protocol::messages::fetch_response::PartitionData {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_rack_id(StrBytes::from_string(rack.to_string()))
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let mut client = support::RawClient::connect(addr.parse().unwrap());
    let response: FetchResponse = client.call(ApiKey::Fetch, version, &request);
    response.responses[0].partitions[0].clone()
}

/// KIP-392 with `replica.selector.class` = Kafka's RackAwareReplicaSelector (the test cluster's
/// racks: node 2 in rack-0, nodes 1 and 3 in rack-1): the leader answers a v11 consumer fetch
/// from another rack with a follower of that rack as preferred read replica and no records; the
/// follower serves the records up to the high watermark; a v10 fetch (no rack, no follower
/// reads) is refused by the follower; a consumer in the leader's rack reads from the leader;
/// and kcat with `client.rack` reads everything.
#[test]
fn consumers_read_from_a_replica_in_their_rack() {
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let rack_aware =
        "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector";
    let cluster = registered_cluster(&[rack_aware]);
    let bootstrap = cluster.bootstrap();
    let views = hundred_replicated_messages(&bootstrap, "near");
    let leader = views[0].0;
    let rack = |id: i32| format!("rack-{}", id % 2);
    let client_rack = if rack(leader) == "rack-1" {
        "rack-0"
    } else {
        "rack-1"
    };
    let in_rack: Vec<i32> = [1, 2, 3]
        .into_iter()
        .filter(|id| *id != leader && rack(*id) == client_rack)
        .collect();
    let leader_addr = cluster.nodes[&leader].bootstrap();

    let preferred = eventually(Duration::from_secs(10), || {
        let answer = consumer_fetch(&leader_addr, 11, "near", client_rack);
        (answer.error_code == 0 && answer.preferred_read_replica.0 >= 0).then_some(answer)
    })
    .expect("the leader names a preferred read replica");
    assert!(
        in_rack.contains(&preferred.preferred_read_replica.0),
        "preferred {} is not a follower in {client_rack} ({in_rack:?})",
        preferred.preferred_read_replica.0
    );
    assert!(
        preferred.records.as_ref().is_none_or(|r| r.is_empty()),
        "no records with a preferred read replica"
    );
    assert_eq!(preferred.high_watermark, 100);

    let follower = preferred.preferred_read_replica.0;
    let follower_addr = cluster.nodes[&follower].bootstrap();
    let mut last = None;
    let served = eventually(Duration::from_secs(10), || {
        let answer = consumer_fetch(&follower_addr, 11, "near", client_rack);
        last = Some(answer.clone());
        (answer.error_code == 0 && answer.high_watermark == 100).then_some(answer)
    })
    .unwrap_or_else(|| {
        panic!("the follower serves the partition up to the high watermark; last answer {last:?}")
    });
    assert!(served.records.as_ref().is_some_and(|r| !r.is_empty()));
    assert_eq!(
        served.preferred_read_replica.0, -1,
        "only a leader names one"
    );

    let old = consumer_fetch(&follower_addr, 10, "near", "");
    assert_eq!(
        old.error_code, NOT_LEADER_OR_FOLLOWER,
        "v10 reads need the leader"
    );

    let local = consumer_fetch(&leader_addr, 11, "near", &rack(leader));
    assert_eq!(local.error_code, 0);
    assert_eq!(
        local.preferred_read_replica.0, -1,
        "the leader is in the client's rack"
    );
    assert!(local.records.as_ref().is_some_and(|r| !r.is_empty()));

    let (status, out, err) = run_bounded(
        "kcat",
        &[
            "-b",
            &bootstrap,
            "-C",
            "-t",
            "near",
            "-o",
            "beginning",
            "-c",
            "100",
            "-e",
            "-X",
            &format!("client.rack={client_rack}"),
        ],
        Duration::from_secs(60),
    );
    assert!(status.success(), "kcat consume: {err}");
    let read: Vec<&str> = out.lines().collect();
    let expected: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
    assert_eq!(
        read, expected,
        "kcat in {client_rack} reads every message in order"
    );
}

/// DeleteRecords on a leader moves its followers' log start too (they learn it from their
/// fetches, as Kafka's do): every replica, asked as a consumer's v11 fetch, reports the new
/// log start, and after the leader's SIGKILL the new leader's earliest offset is still it.
#[test]
fn delete_records_reaches_the_followers_and_survives_a_failover() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, TopicName};
    let mut cluster = registered_cluster(&[]);
    let bootstrap = cluster.bootstrap();
    let views = hundred_replicated_messages(&bootstrap, "trimmed");
    let leader = views[0].0;

    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("trimmed")))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(60),
                ]),
        ]);
    let mut client = support::RawClient::connect(cluster.nodes[&leader].addr);
    let response: DeleteRecordsResponse = client.call(ApiKey::DeleteRecords, 2, &request);
    let answer = &response.topics[0].partitions[0];
    assert_eq!((answer.error_code, answer.low_watermark), (0, 60));

    for id in [1, 2, 3] {
        let addr = cluster.nodes[&id].bootstrap();
        let moved = eventually(Duration::from_secs(10), || {
            // Offset 0 is below the log start now: OFFSET_OUT_OF_RANGE, with the log start.
            let answer = consumer_fetch(&addr, 11, "trimmed", "");
            (answer.error_code == 1 && answer.log_start_offset == 60).then_some(())
        });
        assert!(moved.is_some(), "broker {id}'s replica starts at 60");
    }

    cluster.nodes.remove(&leader).unwrap().stop_with("KILL");
    let survivors = cluster.bootstrap();
    let earliest = eventually(Duration::from_secs(30), || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &survivors)
            .create()
            .ok()?;
        let (low, high) = consumer
            .fetch_watermarks("trimmed", 0, Duration::from_secs(5))
            .ok()?;
        (high == 100).then_some(low)
    });
    assert_eq!(
        earliest,
        Some(60),
        "the new leader starts where the old one did"
    );
}
