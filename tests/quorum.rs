//! The controller quorum in process: three voters, each on its own glommio executor and thread,
//! talking over real TCP on 127.0.0.1 through `cluster::transport`, with durable logs in temp
//! dirs. A leader is elected, changes commit on every voter in order, the leader is stopped and
//! another takes over, the stopped voter restarts from its data dir and catches up, and hostile
//! bytes on a controller listener change nothing.
//!
//! Every wait is bounded; every executor is stopped when its `Voter` drops.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::LocalExecutorBuilder;
use glommio::net::TcpListener;
use ringbroker::cluster::driver::{self, DriverSettings, QuorumStatus};
use ringbroker::cluster::quorum::{QuorumNode, QuorumTimers};
use ringbroker::cluster::raft_log::RaftLog;
use uuid::Uuid;

const TICK: Duration = Duration::from_millis(50);
const ELECTION_TICKS: usize = 10;
const CLUSTER: Uuid = Uuid::from_u128(0x5eed);

enum Command {
    Propose(Vec<u8>, mpsc::Sender<Result<u64, String>>),
    Status(mpsc::Sender<Option<QuorumStatus>>),
    Stop,
}

struct Voter {
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
    applied: Arc<Mutex<Vec<Bytes>>>,
}

impl Voter {
    fn start(
        id: u64,
        dir: &Path,
        peers: &BTreeMap<u64, SocketAddr>,
        listener: StdListener,
    ) -> Voter {
        let (commands, inbox) = mpsc::channel();
        let applied = Arc::new(Mutex::new(Vec::new()));
        let dir: PathBuf = dir.to_path_buf();
        let peers = peers.clone();
        let sink = applied.clone();
        let fd = listener.into_raw_fd();
        let thread = std::thread::spawn(move || {
            let executor = LocalExecutorBuilder::default()
                .name(&format!("voter-{id}"))
                .make()
                .expect("an executor starts");
            executor.run(async move {
                // SAFETY: the fd is a listening TCP socket this thread now owns.
                let listener = unsafe { TcpListener::from_raw_fd(fd) };
                let voters: Vec<u64> = peers.keys().copied().collect();
                let log = RaftLog::open(&dir).expect("the log opens");
                let timers = QuorumTimers {
                    election_ticks: ELECTION_TICKS,
                    heartbeat_ticks: 1,
                };
                let node = QuorumNode::open(id, &voters, log, 0, timers).expect("voter opens");
                let settings = DriverSettings {
                    cluster_id: CLUSTER,
                    peers,
                    listener,
                    tick: TICK,
                };
                let apply = Box::new(move |_: Option<&_>, entries: &[raft::eraftpb::Entry]| {
                    sink.lock()
                        .unwrap()
                        .extend(entries.iter().map(|e| e.data.clone()));
                    None
                });
                let handle = driver::spawn(node, settings, apply);
                loop {
                    match inbox.try_recv() {
                        Ok(Command::Propose(data, reply)) => {
                            let handle = handle.clone();
                            glommio::spawn_local(async move {
                                let result = handle.propose(data).await.map_err(|e| e.to_string());
                                let _ = reply.send(result);
                            })
                            .detach();
                        }
                        Ok(Command::Status(reply)) => {
                            let _ = reply.send(handle.status().await);
                        }
                        Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                            handle.stop().await;
                            break;
                        }
                        Err(mpsc::TryRecvError::Empty) => {
                            glommio::timer::sleep(Duration::from_millis(5)).await
                        }
                    }
                }
            });
        });
        Voter {
            commands,
            thread: Some(thread),
            applied,
        }
    }

    fn status(&self) -> Option<QuorumStatus> {
        let (tx, rx) = mpsc::channel();
        self.commands.send(Command::Status(tx)).ok()?;
        rx.recv_timeout(Duration::from_secs(5)).ok().flatten()
    }

    fn propose(&self, data: &str) -> Result<u64, String> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::Propose(data.as_bytes().to_vec(), tx))
            .unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| Err("no answer in 10 s".to_string()))
    }

    fn applied(&self) -> Vec<Bytes> {
        self.applied.lock().unwrap().clone()
    }
}

impl Drop for Voter {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn eventually<T>(bound: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The leader every running voter agrees on.
fn agreed_leader(voters: &BTreeMap<u64, Voter>) -> Option<u64> {
    let leaders: Vec<Option<u64>> = voters.values().map(|v| v.status()?.leader).collect();
    let first = leaders.first().copied().flatten()?;
    leaders
        .iter()
        .all(|l| *l == Some(first))
        .then_some(first)
        .filter(|l| voters.contains_key(l))
}

fn listeners(n: u64) -> (BTreeMap<u64, SocketAddr>, BTreeMap<u64, StdListener>) {
    let mut addrs = BTreeMap::new();
    let mut socks = BTreeMap::new();
    for id in 1..=n {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        addrs.insert(id, listener.local_addr().unwrap());
        socks.insert(id, listener);
    }
    (addrs, socks)
}

#[test]
fn three_voters_elect_commit_fail_over_and_catch_up() {
    let dirs: BTreeMap<u64, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().unwrap()))
        .collect();
    let (addrs, mut socks) = listeners(3);
    let mut voters: BTreeMap<u64, Voter> = (1..=3)
        .map(|id| {
            let voter = Voter::start(id, dirs[&id].path(), &addrs, socks.remove(&id).unwrap());
            (id, voter)
        })
        .collect();

    let started = Instant::now();
    let leader = eventually(Duration::from_secs(20), || agreed_leader(&voters))
        .expect("the voters agree on a leader");
    eprintln!("leader {leader} elected after {:?}", started.elapsed());
    let want: Vec<Bytes> = (0..10)
        .map(|i| Bytes::from(format!("change-{i}")))
        .collect();
    for i in 0..10 {
        voters[&leader].propose(&format!("change-{i}")).unwrap();
    }
    // A follower refuses proposals, naming the leader.
    let follower = *voters.keys().find(|id| **id != leader).unwrap();
    let refused = voters[&follower].propose("from a follower").unwrap_err();
    assert!(refused.contains("not the quorum leader"), "{refused}");
    for (id, voter) in &voters {
        assert!(
            eventually(Duration::from_secs(10), || (voter.applied() == want)
                .then_some(()))
            .is_some(),
            "voter {id} applied {:?}",
            voter.applied()
        );
    }

    // Hostile bytes on a follower's controller listener: random bytes, a frame of another
    // cluster, a vote from a node outside the quorum with a huge term, an oversized frame.
    let term_before = voters[&follower].status().unwrap().term;
    let target = addrs[&follower];
    let mut other_cluster = Vec::new();
    let stranger_vote = raft::eraftpb::Message {
        msg_type: raft::eraftpb::MessageType::MsgRequestVote,
        from: 9,
        to: follower,
        term: 1_000_000,
        ..Default::default()
    };
    ringbroker::cluster::transport::encode_frame(
        Uuid::from_u128(1),
        &stranger_vote,
        &mut other_cluster,
    );
    let mut stranger = Vec::new();
    ringbroker::cluster::transport::encode_frame(CLUSTER, &stranger_vote, &mut stranger);
    for bytes in [
        vec![0xde; 512],
        other_cluster,
        stranger,
        u32::MAX.to_be_bytes().to_vec(),
    ] {
        let mut stream = TcpStream::connect(target).unwrap();
        let _ = stream.write_all(&bytes);
    }
    std::thread::sleep(TICK * 4);
    let after = voters[&follower].status().unwrap();
    assert_eq!(after.term, term_before, "hostile frames change no term");
    assert_eq!(agreed_leader(&voters), Some(leader));

    // Stop the leader: the other two elect a new one and go on.
    let stopped_at = Instant::now();
    drop(voters.remove(&leader));
    let next = eventually(Duration::from_secs(20), || agreed_leader(&voters))
        .expect("the survivors elect a leader");
    assert_ne!(next, leader);
    eprintln!(
        "new leader {next} after {:?} (election timeout {:?})",
        stopped_at.elapsed(),
        TICK * ELECTION_TICKS as u32
    );
    voters[&next].propose("after the failover").unwrap();

    // The old leader restarts from its data dir, replays its log and catches up.
    let listener = StdListener::bind(addrs[&leader]).expect("the old port is free again");
    voters.insert(
        leader,
        Voter::start(leader, dirs[&leader].path(), &addrs, listener),
    );
    let mut all = want.clone();
    all.push(Bytes::from("after the failover"));
    for (id, voter) in &voters {
        assert!(
            eventually(Duration::from_secs(20), || (voter.applied() == all)
                .then_some(()))
            .is_some(),
            "voter {id} applied {:?}; statuses {:?}",
            voter.applied(),
            voters.values().map(|v| v.status()).collect::<Vec<_>>()
        );
    }
    let commits: Vec<u64> = voters
        .values()
        .map(|v| v.status().unwrap().commit_index)
        .collect();
    assert!(
        commits.windows(2).all(|w| w[0] == w[1]),
        "same commit index: {commits:?}"
    );
}
