//! Consumer groups as real clients see them: a mixed group (three confluent-kafka members and
//! one kafka-python member) shares a 12-partition topic with every message consumed exactly
//! once; a member killed without leaving loses its partitions to the others after the session
//! timeout and a member that leaves cleanly hands them back at once; committed offsets survive a
//! graceful restart and a SIGKILL; the protocol-level flow and its error codes with raw frames.
//! The tests run one at a time (see `SERIAL`). Every wait is bounded.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Broker, run_bounded};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/group_member.py");
const PARTITIONS: i32 = 12;

/// The tests run one at a time: each runs a broker and several client processes, and timing
/// assertions (session timeouts, clean-leave rebalances) do not hold when three such runs share
/// two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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

/// Stops the broker gracefully; on a hang, shows its log before failing.
fn stop(mut broker: Broker) {
    broker.signal("TERM");
    if !wait_until(Duration::from_secs(20), || !broker.is_running()) {
        let log = broker.log();
        let tail = &log[log.len().saturating_sub(40)..];
        panic!(
            "broker did not stop in 20 s; log tail:\n{}",
            tail.join("\n")
        );
    }
}

fn assert_exactly_once(got: &[(i32, i64)], expected: usize) {
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in got {
        per_partition.entry(*p).or_default().push(*o);
    }
    let summary: Vec<String> = per_partition
        .iter()
        .map(|(p, offsets)| {
            let distinct: BTreeSet<_> = offsets.iter().collect();
            format!(
                "p{p}: {} messages, {} distinct, max offset {:?}",
                offsets.len(),
                distinct.len(),
                distinct.last()
            )
        })
        .collect();
    let distinct: BTreeSet<_> = got.iter().collect();
    assert_eq!(
        distinct.len(),
        got.len(),
        "duplicates delivered: {summary:?}"
    );
    assert_eq!(got.len(), expected, "messages missing: {summary:?}");
}

#[test]
fn mixed_group_shares_partitions_exactly_once_and_survives_restarts() {
    let _serial = serial();
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
    stop(broker);
    let broker = Broker::start_in(dir.path(), &[]);
    assert!(
        drain(&broker, topic, "mixed", 8).is_empty(),
        "re-delivered after restart"
    );
    produce(&broker, topic, 120);
    assert_exactly_once(&drain(&broker, topic, "mixed", 15), 120);
    broker.signal("KILL");
    let broker = Broker::start_in(dir.path(), &[]);
    assert!(
        drain(&broker, topic, "mixed", 8).is_empty(),
        "re-delivered after SIGKILL"
    );
    stop(broker);
}

#[test]
fn killed_member_loses_its_partitions_after_the_session_timeout() {
    let _serial = serial();
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

    // A member that leaves cleanly hands its partitions back at once, not after a timeout.
    let c = Member::start("kafka-python", &broker, topic, "fo", 15);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (x, y) = (b.assignment(), c.assignment());
            matches!((x, y), (Some(x), Some(y)) if x.len() + y.len() == PARTITIONS as usize && !x.is_empty() && !y.is_empty())
        }),
        "no split with the new member: {:?} {:?}",
        b.lines(),
        c.lines()
    );
    assert!(
        wait_until(Duration::from_secs(40), || c
            .lines()
            .iter()
            .any(|l| l == "CLOSED")),
        "member did not close: {:?}",
        c.lines()
    );
    let left = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || {
            b.assignment()
                .is_some_and(|x| x.len() == PARTITIONS as usize)
        }),
        "partitions did not return: {:?}",
        b.lines()
    );
    let back = left.elapsed();
    assert!(back < Duration::from_secs(5), "clean leave took {back:?}");
    eprintln!("partitions back {back:?} after a clean leave");
    let mut b = b;
    b.kill();
    broker.stop();
}

mod protocol {
    //! The group APIs at the protocol level, with raw frames: the membership flow and its error
    //! codes, simple-consumer commits, the batched and multi-group forms, and bad input.

    use std::time::Duration;

    use bytes::Bytes;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;

    use super::create_topic;
    use super::support::{Broker, RawClient};

    const UNKNOWN_MEMBER_ID: i16 = 25;
    const ILLEGAL_GENERATION: i16 = 22;
    const INVALID_SESSION_TIMEOUT: i16 = 26;
    const MEMBER_ID_REQUIRED: i16 = 79;
    const GROUP_ID_NOT_FOUND: i16 = 69;
    const NON_EMPTY_GROUP: i16 = 68;
    const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    const FENCED_INSTANCE_ID: i16 = 82;

    fn s(text: &str) -> StrBytes {
        StrBytes::from_string(text.to_string())
    }

    fn join(
        client: &mut RawClient,
        group: &str,
        member: &str,
        instance: Option<&str>,
        protocol: &str,
    ) -> JoinGroupResponse {
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(6000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(member))
            .with_group_instance_id(instance.map(s))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s(protocol))
                    .with_metadata(Bytes::from_static(b"sub")),
            ]);
        client.call(ApiKey::JoinGroup, 7, &request)
    }

    fn heartbeat(client: &mut RawClient, group: &str, generation: i32, member: &str) -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(generation)
            .with_member_id(s(member));
        let response: HeartbeatResponse = client.call(ApiKey::Heartbeat, 4, &request);
        response.error_code
    }

    fn commit(
        client: &mut RawClient,
        group: &str,
        generation: i32,
        member: &str,
        topic: &str,
        offset: i64,
    ) -> Vec<i16> {
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(member))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(
                        (0..3)
                            .map(|p| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset + i64::from(p))
                                    .with_committed_metadata(Some(s("meta")))
                            })
                            .collect(),
                    ),
            ]);
        let response: OffsetCommitResponse = client.call(ApiKey::OffsetCommit, 8, &request);
        response.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect()
    }

    #[test]
    fn membership_flow_offsets_and_bad_input() {
        let _serial = super::serial();
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start_in(dir.path(), &["--set", "group.initial.rebalance.delay.ms=0"]);
        create_topic(&broker, "pt");
        let mut c = RawClient::connect(broker.addr);

        // FindCoordinator v4, batched; transactions are not coordinated yet.
        let request = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![s("g1"), s(&"x".repeat(10_000))]);
        let found: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 4, &request);
        assert_eq!(found.coordinators.len(), 2);
        for co in &found.coordinators {
            assert_eq!(co.error_code, 0);
            assert_eq!(co.port, i32::from(broker.addr.port()));
        }
        // Transaction coordinators (key type 1) are this broker too (tests/transactions.rs);
        // an unknown key type is INVALID_REQUEST.
        let request = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_key(s("txn"));
        let found: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 3, &request);
        assert_eq!(found.error_code, 0);
        assert_eq!(found.port, i32::from(broker.addr.port()));
        let request = FindCoordinatorRequest::default()
            .with_key_type(2)
            .with_key(s("txn"));
        let found: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 3, &request);
        assert_eq!(found.error_code, 42);

        // Session timeout bounds.
        let bad = JoinGroupRequest::default()
            .with_group_id(GroupId(s("g1")))
            .with_session_timeout_ms(1000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default().with_name(s("range")),
            ]);
        let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 7, &bad);
        assert_eq!(r.error_code, INVALID_SESSION_TIMEOUT);

        // MEMBER_ID_REQUIRED, then the join completes with us as leader of generation 1.
        let first = join(&mut c, "g1", "", None, "range");
        assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
        let me = first.member_id.to_string();
        let joined = join(&mut c, "g1", &me, None, "range");
        assert_eq!(joined.error_code, 0);
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.leader.as_str(), me);
        assert_eq!(joined.members.len(), 1);
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s("g1")))
            .with_generation_id(1)
            .with_member_id(s(&me))
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(&me))
                    .with_assignment(Bytes::from_static(b"all")),
            ]);
        let synced: SyncGroupResponse = c.call(ApiKey::SyncGroup, 3, &sync);
        assert_eq!(synced.error_code, 0);
        assert_eq!(&synced.assignment[..], b"all");

        // A second client with an incompatible protocol is refused.
        let mut other = RawClient::connect(broker.addr);
        let r = join(&mut other, "g1", "", Some("static-1"), "roundrobin-only");
        assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);

        // Heartbeats: unknown member, stale generation, storm.
        assert_eq!(heartbeat(&mut c, "g1", 1, "nobody"), UNKNOWN_MEMBER_ID);
        assert_eq!(heartbeat(&mut c, "g1", 0, &me), ILLEGAL_GENERATION);
        assert_eq!(
            heartbeat(&mut c, "no-such-group", 1, &me),
            UNKNOWN_MEMBER_ID
        );
        for _ in 0..3000 {
            assert_eq!(heartbeat(&mut c, "g1", 1, &me), 0);
        }

        // Commits: stale generation, unknown member, then a good one.
        assert_eq!(
            commit(&mut c, "g1", 0, &me, "pt", 5),
            vec![ILLEGAL_GENERATION; 3]
        );
        assert_eq!(
            commit(&mut c, "g1", 1, "nobody", "pt", 5),
            vec![UNKNOWN_MEMBER_ID; 3]
        );
        assert_eq!(commit(&mut c, "g1", 1, &me, "pt", 5), vec![0; 3]);
        // A simple consumer (no membership) cannot commit into a live group...
        assert_eq!(
            commit(&mut c, "g1", -1, "", "pt", 9),
            vec![UNKNOWN_MEMBER_ID; 3]
        );
        // ...but can into its own, including with a 10 KB group id.
        let long = "y".repeat(10_000);
        assert_eq!(commit(&mut c, "simple", -1, "", "pt", 100), vec![0; 3]);
        assert_eq!(commit(&mut c, &long, -1, "", "pt", 7), vec![0; 3]);

        // OffsetFetch v8 with several groups, and v5 with one.
        let request = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("g1")))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("pt")))
                        .with_partition_indexes(vec![0, 1, 2, 3]),
                ])),
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("simple")))
                .with_topics(None),
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("never-seen")))
                .with_topics(None),
        ]);
        let fetched: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 8, &request);
        assert_eq!(fetched.groups.len(), 3);
        let g1: Vec<i64> = fetched.groups[0].topics[0]
            .partitions
            .iter()
            .map(|p| p.committed_offset)
            .collect();
        assert_eq!(g1, vec![5, 6, 7, -1]);
        assert_eq!(
            fetched.groups[0].topics[0].partitions[0]
                .metadata
                .as_ref()
                .map(|m| m.as_str()),
            Some("meta")
        );
        let simple: Vec<i64> = fetched.groups[1].topics[0]
            .partitions
            .iter()
            .map(|p| p.committed_offset)
            .collect();
        assert_eq!(simple, vec![100, 101, 102]);
        assert!(fetched.groups[2].topics.is_empty());
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(&long)))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("pt")))
                    .with_partition_indexes(vec![2]),
            ]));
        let fetched: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 5, &request);
        assert_eq!(fetched.error_code, 0);
        assert_eq!(fetched.topics[0].partitions[0].committed_offset, 9);

        // Describe, list, delete (refused while members remain).
        let described: DescribeGroupsResponse = c.call(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g1"))]),
        );
        assert_eq!(described.groups[0].group_state.as_str(), "Stable");
        assert_eq!(described.groups[0].members.len(), 1);
        let listed: ListGroupsResponse =
            c.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
        let names: Vec<&str> = listed
            .groups
            .iter()
            .map(|g| g.group_id.0.as_str())
            .collect();
        assert!(
            names.contains(&"g1") && names.contains(&"simple"),
            "{names:?}"
        );
        let deleted: DeleteGroupsResponse = c.call(
            ApiKey::DeleteGroups,
            2,
            &DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(s("g1")), GroupId(s("never-seen"))]),
        );
        let codes: Vec<i16> = deleted.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND]);

        // Static membership: a second static member joins, rejoins under a new id, and the old
        // id is fenced.
        let mut second = RawClient::connect(broker.addr);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| join(&mut second, "g1", "", Some("static-1"), "range"));
            // The leader rejoins so the rebalance completes.
            std::thread::sleep(Duration::from_millis(500));
            let again = join(&mut c, "g1", &me, None, "range");
            assert_eq!(again.error_code, 0);
            assert_eq!(again.generation_id, 2);
            let theirs = waiter.join().unwrap();
            assert_eq!(theirs.error_code, 0);
            assert_eq!(theirs.generation_id, 2);
        });
        let described: DescribeGroupsResponse = c.call(
            ApiKey::DescribeGroups,
            5,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g1"))]),
        );
        let static_old = described.groups[0]
            .members
            .iter()
            .find(|m| m.group_instance_id.as_ref().map(|i| i.as_str()) == Some("static-1"))
            .expect("static member listed")
            .member_id
            .to_string();
        // The instance comes back under a new id (the group is not Stable, so this is a
        // rebalance, which the leader's rejoin completes).
        let mut third = RawClient::connect(broker.addr);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| join(&mut third, "g1", "", Some("static-1"), "range"));
            std::thread::sleep(Duration::from_millis(500));
            let again = join(&mut c, "g1", &me, None, "range");
            assert_eq!(again.error_code, 0);
            assert_eq!(again.generation_id, 3);
            let replaced = waiter.join().unwrap();
            assert_eq!(replaced.error_code, 0);
            assert_ne!(replaced.member_id.as_str(), static_old);
        });
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(s("g1")))
            .with_generation_id(2)
            .with_member_id(s(&static_old))
            .with_group_instance_id(Some(s("static-1")));
        let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 4, &request);
        assert_eq!(r.error_code, FENCED_INSTANCE_ID);

        // LeaveGroup v3 with several members, one unknown.
        let request = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g1")))
            .with_members(vec![
                MemberIdentity::default().with_member_id(s(&me)),
                MemberIdentity::default().with_member_id(s("nobody")),
                MemberIdentity::default().with_group_instance_id(Some(s("static-1"))),
            ]);
        let left: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, 3, &request);
        let codes: Vec<i16> = left.members.iter().map(|m| m.error_code).collect();
        assert_eq!(codes, vec![0, UNKNOWN_MEMBER_ID, 0]);

        // OffsetDelete, then DeleteGroups of the now empty group.
        let request = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("simple")))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("pt")))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                    ]),
            ]);
        let r: OffsetDeleteResponse = c.call(ApiKey::OffsetDelete, 0, &request);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        let deleted: DeleteGroupsResponse = c.call(
            ApiKey::DeleteGroups,
            2,
            &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("simple"))]),
        );
        assert_eq!(deleted.results[0].error_code, 0);

        // All of it survives a SIGKILL: g1's offsets stay, simple's are gone.
        broker.signal("KILL");
        let broker = Broker::start_in(dir.path(), &[]);
        let mut c = RawClient::connect(broker.addr);
        let request = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("g1")))
                .with_topics(None),
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("simple")))
                .with_topics(None),
        ]);
        let fetched: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 8, &request);
        let g1: Vec<i64> = fetched.groups[0].topics[0]
            .partitions
            .iter()
            .map(|p| p.committed_offset)
            .collect();
        assert_eq!(g1, vec![5, 6, 7]);
        assert!(fetched.groups[1].topics.is_empty());
        assert!(broker.log().iter().all(|l| !l.contains("panicked")));
        broker.stop();
    }
}

/// Offset expiry as in Kafka (KIP-211), with `offsets.retention.minutes=1` and a half-second
/// check: a simple consumer's offsets expire a minute after their commit and its group goes; a
/// group that emptied keeps its offsets a minute after it emptied (not after the commit); a Stable
/// group loses only the offsets of topics no member subscribes to. The tombstones survive a
/// restart. Also: `__consumer_offsets` gets `offsets.topic.num.partitions` partitions and keeps
/// them when the setting changes, and DescribeGroups reports the member's host as Kafka does.
///
/// No assertion depends on how fast the machine is: "not expired yet" is only asserted while
/// less than the retention has passed since a time no later than the commit or the leave, and
/// "expired" is waited for with a bound.
mod expiry {
    use std::time::{Duration, Instant};

    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    use super::support::Broker;
    use super::{stop, wait_until};

    const RETENTION: Duration = Duration::from_secs(60);
    const BOUND: Duration = Duration::from_secs(30);

    fn consumer(broker: &Broker, group: &str) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "10000")
            .create()
            .expect("consumer")
    }

    fn tpl(entries: &[(&str, i64)]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, offset) in entries {
            list.add_partition_offset(topic, 0, Offset::Offset(*offset))
                .unwrap();
        }
        list
    }

    /// The committed offset of `topic` partition 0 for `group` (OffsetFetch, no membership).
    fn committed(broker: &Broker, group: &str, topic: &str) -> Option<i64> {
        let c = consumer(broker, group);
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, 0);
        let got = c
            .committed_offsets(list, Duration::from_secs(10))
            .expect("OffsetFetch answers");
        match got.elements()[0].offset() {
            Offset::Offset(n) => Some(n),
            _ => None,
        }
    }

    /// Whether ListGroups shows `group`.
    fn listed(broker: &Broker, group: &str) -> bool {
        let c = consumer(broker, "expiry-observer");
        let groups = c
            .fetch_group_list(Some(group), Duration::from_secs(10))
            .expect("ListGroups answers");
        groups.groups().iter().any(|g| g.name() == group)
    }

    /// Subscribes to `topic` and polls until the consumer has an assignment.
    fn join(broker: &Broker, group: &str, topic: &str) -> BaseConsumer {
        let c = consumer(broker, group);
        c.subscribe(&[topic]).unwrap();
        let start = Instant::now();
        while c.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
            assert!(
                start.elapsed() < BOUND,
                "{group}: no assignment in {BOUND:?}"
            );
            let _ = c.poll(Duration::from_millis(100));
        }
        c
    }

    fn topic_partitions(broker: &Broker, topic: &str) -> usize {
        let c = consumer(broker, "expiry-observer");
        let metadata = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("Metadata answers");
        metadata.topics()[0].partitions().len()
    }

    #[test]
    fn offsets_expire_as_in_kafka_and_stay_expired_after_a_restart() {
        let _serial = super::serial();
        let dir = tempfile::tempdir().unwrap();
        let settings = [
            "--set",
            "offsets.retention.minutes=1",
            "--set",
            "offsets.retention.check.interval.ms=500",
            "--set",
            "group.initial.rebalance.delay.ms=0",
            "--set",
            "offsets.topic.num.partitions=3",
        ];
        let broker = Broker::start_in(dir.path(), &settings);
        for topic in ["xa", "xb"] {
            super::create_topic(&broker, topic);
        }

        // A stable member subscribed to xa commits xa and xb; a second group's member commits
        // xa and leaves later; a simple consumer (assign, no membership) commits xa.
        let stable = join(&broker, "g-stable", "xa");
        let emptied = join(&broker, "g-emptied", "xa");
        assert_eq!(topic_partitions(&broker, "__consumer_offsets"), 3);
        let simple = consumer(&broker, "g-simple");
        simple.assign(&tpl(&[("xa", 0)])).unwrap();
        let committed_at = Instant::now();
        stable
            .commit(&tpl(&[("xa", 5), ("xb", 7)]), CommitMode::Sync)
            .unwrap();
        emptied
            .commit(&tpl(&[("xa", 3)]), CommitMode::Sync)
            .unwrap();
        simple
            .commit(&tpl(&[("xa", 11)]), CommitMode::Sync)
            .unwrap();
        drop(simple);
        assert_eq!(committed(&broker, "g-stable", "xb"), Some(7));
        assert_eq!(committed(&broker, "g-simple", "xa"), Some(11));
        assert!(listed(&broker, "g-simple"));

        // DescribeGroups reports the member's host as Kafka prints it.
        let c = consumer(&broker, "expiry-observer");
        let described = c
            .fetch_group_list(Some("g-stable"), Duration::from_secs(10))
            .unwrap();
        let group = described
            .groups()
            .iter()
            .find(|g| g.name() == "g-stable")
            .expect("g-stable described");
        assert_eq!(group.members()[0].client_host(), "/127.0.0.1");
        drop(c);

        // Half the retention later the second group's member leaves: its group is Empty from
        // then on.
        let keep_polling = |until: Instant| {
            while Instant::now() < until {
                let _ = stable.poll(Duration::from_millis(100));
                let _ = emptied.poll(Duration::from_millis(100));
            }
        };
        keep_polling(committed_at + RETENTION / 2);
        let left_at = Instant::now();
        emptied.unsubscribe();
        drop(emptied);

        // Once the retention has passed since the commits: the simple consumer's offset and
        // its group go, and so does the stable group's offset of xb (not subscribed), but not
        // the one of xa; the emptied group keeps its offset (a minute after it emptied, not
        // after the commit).
        let bound = |from: Instant| from + RETENTION + BOUND;
        assert!(
            wait_until(bound(committed_at) - Instant::now(), || {
                let _ = stable.poll(Duration::from_millis(50));
                committed(&broker, "g-simple", "xa").is_none()
            }),
            "the simple consumer's offset did not expire"
        );
        assert!(committed_at.elapsed() >= RETENTION, "expired too early");
        assert!(
            wait_until(BOUND, || !listed(&broker, "g-simple")),
            "the simple consumer's group was not removed"
        );
        assert!(
            wait_until(BOUND, || {
                let _ = stable.poll(Duration::from_millis(50));
                committed(&broker, "g-stable", "xb").is_none()
            }),
            "the offset of an unsubscribed topic did not expire"
        );
        let checked_at = Instant::now();
        let emptied_offset = committed(&broker, "g-emptied", "xa");
        if checked_at.duration_since(left_at) < RETENTION {
            assert_eq!(
                emptied_offset,
                Some(3),
                "an emptied group's offsets expire a retention after it emptied, not after the commit"
            );
        } else {
            eprintln!("the machine was too slow to check the emptied group before its expiry");
        }
        assert_eq!(committed(&broker, "g-stable", "xa"), Some(5));
        assert!(listed(&broker, "g-stable"));

        // A retention after the leave, the emptied group's offset and the group go.
        assert!(
            wait_until(bound(left_at) - Instant::now(), || {
                let _ = stable.poll(Duration::from_millis(50));
                committed(&broker, "g-emptied", "xa").is_none()
            }),
            "the emptied group's offset did not expire"
        );
        assert!(left_at.elapsed() >= RETENTION, "expired too early");
        assert!(wait_until(BOUND, || !listed(&broker, "g-emptied")));
        assert_eq!(committed(&broker, "g-stable", "xa"), Some(5));
        stable.unsubscribe();
        drop(stable);

        // The tombstones are in __consumer_offsets: a restart (with another partition count
        // set, which no longer applies) brings nothing back, and the kept offset is found.
        stop(broker);
        let restarted = [
            "--set",
            "offsets.retention.minutes=1",
            "--set",
            "offsets.topic.num.partitions=7",
        ];
        let broker = Broker::start_in(dir.path(), &restarted);
        assert_eq!(topic_partitions(&broker, "__consumer_offsets"), 3);
        assert_eq!(committed(&broker, "g-simple", "xa"), None);
        assert_eq!(committed(&broker, "g-stable", "xb"), None);
        assert_eq!(committed(&broker, "g-emptied", "xa"), None);
        assert_eq!(committed(&broker, "g-stable", "xa"), Some(5));
        assert!(!listed(&broker, "g-simple"));
        assert!(!listed(&broker, "g-emptied"));
        assert!(broker.log().iter().all(|l| !l.contains("panicked")));
        stop(broker);
    }
}

/// A fresh broker starts and answers its first group request within the client's timeout,
/// every time. That request creates `__consumer_offsets` on the controller shard, opens its
/// partitions on every shard and asks the coordinator shard, so it crosses shards, the blocking
/// file-I/O threads and timers: where glommio 0.9 could park an executor that still had work
/// (`src/runtime/watchdog.rs`). Before that was fixed about one fresh start in five hung here (a
/// shard that never finished starting, or a Heartbeat never answered), so twelve starts catch
/// it with a probability of about 93 %.
mod wakeups {
    use kafka_protocol::messages::{ApiKey, GroupId, HeartbeatRequest, HeartbeatResponse};
    use kafka_protocol::protocol::StrBytes;

    use super::support::{Broker, RawClient};

    const UNKNOWN_MEMBER_ID: i16 = 25;

    #[test]
    fn fresh_brokers_start_and_answer_their_first_group_request() {
        let _serial = super::serial();
        for round in 0..12 {
            let dir = tempfile::tempdir().unwrap();
            // Panics if the broker does not report ready within START_TIMEOUT.
            let broker = Broker::start_in(dir.path(), &[]);
            let mut client = RawClient::connect(broker.addr);
            eprintln!("round {round}: first Heartbeat");
            let request = HeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g1")))
                .with_generation_id(1)
                .with_member_id(StrBytes::from_static_str("nobody"));
            // The client's read timeout (10 s) bounds the wait.
            let response: HeartbeatResponse = client.call(ApiKey::Heartbeat, 4, &request);
            assert_eq!(response.error_code, UNKNOWN_MEMBER_ID, "round {round}");
            drop(client);
            assert!(broker.stop().success(), "round {round}: graceful stop");
        }
    }
}
