//! Consumer groups as real clients see them: a mixed group (three confluent-kafka members and
//! one kafka-python member) shares a 12-partition topic with every message consumed exactly
//! once; a member killed without leaving loses its partitions to the others after the session
//! timeout; committed offsets survive a graceful restart and a SIGKILL. Every wait is bounded.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Broker, run_bounded};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/group_member.py");
const PARTITIONS: i32 = 12;

fn create_topic(broker: &Broker, topic: &str) {
    let code = format!(
        "from confluent_kafka.admin import AdminClient, NewTopic\n\
         a = AdminClient({{'bootstrap.servers': '{}'}})\n\
         [f.result(30) for f in a.create_topics([NewTopic('{topic}', {PARTITIONS}, 1)]).values()]\n",
        broker.bootstrap()
    );
    let (status, _, err) = run_bounded("python3", &["-c", &code], Duration::from_secs(60));
    assert!(status.success(), "create topic: {err}");
}

fn produce(broker: &Broker, topic: &str, count: usize) {
    let (status, _, err) = run_bounded(
        "python3",
        &[
            SCRIPT,
            "produce",
            &broker.bootstrap(),
            topic,
            &count.to_string(),
        ],
        Duration::from_secs(120),
    );
    assert!(status.success(), "produce: {err}");
}

/// A running member whose output lines are collected.
struct Member {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(client: &str, broker: &Broker, topic: &str, group: &str, seconds: u64) -> Member {
        let mut child = Command::new("python3")
            .args([
                SCRIPT,
                "member",
                client,
                &broker.bootstrap(),
                topic,
                group,
                &seconds.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Member { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The partitions of the latest assignment.
    fn assignment(&self) -> Option<BTreeSet<i32>> {
        let lines = self.lines();
        let last = lines.iter().rev().find_map(|l| l.strip_prefix("A "))?;
        Some(last.split(',').filter_map(|p| p.parse().ok()).collect())
    }

    fn wait(mut self, bound: Duration) -> Vec<String> {
        support::wait_bounded(&mut self.child, bound);
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(200));
        self.lines()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < bound {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Runs one confluent member for `seconds` and returns the messages it got.
fn drain(broker: &Broker, topic: &str, group: &str, seconds: u64) -> Vec<(i32, i64)> {
    let member = Member::start("confluent", broker, topic, group, seconds);
    let lines = member.wait(Duration::from_secs(seconds + 60));
    assert!(
        lines.iter().any(|l| l == "CLOSED"),
        "member did not finish: {lines:?}"
    );
    messages(&lines)
}

/// The `(partition, offset)` of every message line.
fn messages(lines: &[String]) -> Vec<(i32, i64)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut it = l.strip_prefix("M ")?.split(' ');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

fn assert_exactly_once(got: &[(i32, i64)], expected: usize) {
    let distinct: BTreeSet<_> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "duplicates delivered");
    assert_eq!(got.len(), expected, "messages missing");
}

#[test]
fn mixed_group_shares_partitions_exactly_once_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let topic = "grouped";
    create_topic(&broker, topic);
    produce(&broker, topic, 2400);

    let started = Instant::now();
    let members: Vec<Member> = ["confluent", "confluent", "confluent", "kafka-python"]
        .iter()
        .map(|c| Member::start(c, &broker, topic, "mixed", 20))
        .collect();
    let mut all = Vec::new();
    let mut assigned = BTreeMap::new();
    for (i, m) in members.into_iter().enumerate() {
        let lines = m.wait(Duration::from_secs(90));
        assert!(lines.iter().any(|l| l == "CLOSED"), "member {i}: {lines:?}");
        let got = messages(&lines);
        assert!(!got.is_empty(), "member {i} consumed nothing: {lines:?}");
        assigned.insert(i, got.len());
        all.extend(got);
    }
    assert_exactly_once(&all, 2400);
    eprintln!("mixed group: {assigned:?} in {:?}", started.elapsed());

    // Everything is committed: a new member of the group gets nothing, before and after a
    // graceful restart and a SIGKILL; new messages come exactly once.
    assert!(drain(&broker, topic, "mixed", 8).is_empty());
    broker.stop();
    let broker = Broker::start_in(dir.path(), &[]);
    assert!(
        drain(&broker, topic, "mixed", 8).is_empty(),
        "re-delivered after restart"
    );
    produce(&broker, topic, 120);
    assert_exactly_once(&drain(&broker, topic, "mixed", 10), 120);
    broker.signal("KILL");
    let broker = Broker::start_in(dir.path(), &[]);
    assert!(
        drain(&broker, topic, "mixed", 8).is_empty(),
        "re-delivered after SIGKILL"
    );
    broker.stop();
}

#[test]
fn killed_member_loses_its_partitions_after_the_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let topic = "failover";
    create_topic(&broker, topic);
    let mut a = Member::start("confluent", &broker, topic, "fo", 60);
    let b = Member::start("confluent", &broker, topic, "fo", 60);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (x, y) = (a.assignment(), b.assignment());
            matches!((x, y), (Some(x), Some(y)) if x.len() + y.len() == PARTITIONS as usize && !x.is_empty() && !y.is_empty())
        }),
        "no split: {:?} {:?}",
        a.lines(),
        b.lines()
    );
    let killed = Instant::now();
    a.kill();
    assert!(
        wait_until(Duration::from_secs(30), || {
            b.assignment()
                .is_some_and(|x| x.len() == PARTITIONS as usize)
        }),
        "partitions did not move: {:?}",
        b.lines()
    );
    let moved = killed.elapsed();
    assert!(
        moved >= Duration::from_secs(5),
        "moved before the session timeout: {moved:?}"
    );
    eprintln!("partitions moved {moved:?} after the kill");
    let mut b = b;
    b.kill();
    broker.stop();
}
