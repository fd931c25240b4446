//! One voter of the controller quorum: raft-rs's `RawNode` over our durable `RaftLog`, with no
//! I/O of its own beyond that log, so that a test or a simulator can drive several of them
//! deterministically and the shard-0 driver can drive one with real timers and sockets.
//!
//! Owner: shard 0 of a controller node (or a test). Lifecycle: `open` reads the log (a data dir
//! whose recorded voters disagree with `controller.quorum.voters` is refused), then the owner
//! calls `tick` every `tick_ms`, `step` for each message from a peer, `propose` for each
//! metadata change, and `advance` after any of them. `advance` persists what raft-rs asks
//! (entries, hard state, snapshot; synced before it returns) and hands back the messages to send
//! and the entries that became committed, in log order. Nothing here awaits.
//!
//! Raft settings: pre-vote (a partitioned node does not disrupt the quorum when it returns) and
//! check-quorum (a leader that cannot reach a majority steps down) are on. Kafka's timers map to
//! ticks of `tick_ms`: `controller.quorum.election.timeout.ms` is the election tick (raft-rs
//! randomises it over [1, 2) times that, as Kafka does), heartbeats go every tick.

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole, Storage};

use crate::cluster::logging;
use crate::cluster::raft_log::{RaftLog, RaftLogError};
use crate::limits;

/// Why a quorum operation failed. `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The durable log failed.
    #[error("quorum log: {0}")]
    Log(#[from] RaftLogError),
    /// raft-rs refused (a bug in how we drive it, or storage it could not read).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The data dir belongs to another quorum.
    #[error(
        "the data dir's quorum has voters {recorded:?}, but controller.quorum.voters lists {configured:?}"
    )]
    VotersDisagree {
        /// Voters in the log.
        recorded: Vec<u64>,
        /// Voters configured.
        configured: Vec<u64>,
    },
    /// This node is not one of the voters.
    #[error("node {id} is not among the voters {voters:?}")]
    NotAVoter {
        /// This node.
        id: u64,
        /// The voters.
        voters: Vec<u64>,
    },
    /// A message from a node outside the quorum, or addressed to another node.
    #[error("message from {from} to {to} refused: not a voter of this quorum, or not for us")]
    Stranger {
        /// Claimed sender.
        from: u64,
        /// Addressee.
        to: u64,
    },
    /// Only the leader takes proposals.
    #[error("not the quorum leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<u64>,
    },
    /// A proposal too large for one log record.
    #[error("a metadata change of {0} bytes is over the quorum's entry bound")]
    TooLarge(usize),
}

/// Timers in ticks.
#[derive(Debug, Clone, Copy)]
pub struct QuorumTimers {
    /// Ticks without a leader before an election (`controller.quorum.election.timeout.ms`).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
}

/// What one `advance` produced.
#[derive(Debug, Default)]
pub struct Progress {
    /// Messages to send, each to `message.to`.
    pub messages: Vec<Message>,
    /// Newly committed entries with data (metadata changes), in log order.
    pub committed: Vec<Entry>,
    /// A snapshot from the leader that replaces this node's state machine, applied first.
    pub snapshot: Option<Snapshot>,
    /// Confirmed read indexes (`read_index`): each request's context and the commit index the
    /// leader held when a majority confirmed its leadership after the request was made.
    pub read_states: Vec<(Vec<u8>, u64)>,
}

/// One voter.
pub struct QuorumNode {
    id: u64,
    voters: Vec<u64>,
    node: RawNode<RaftLog>,
}

impl std::fmt::Debug for QuorumNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumNode")
            .field("id", &self.id)
            .field("voters", &self.voters)
            .field("leader", &self.leader())
            .field("term", &self.term())
            .finish()
    }
}

impl QuorumNode {
    /// Opens voter `id` of `voters` over `log`. A new log records the voters; an existing one
    /// must have the same. `applied` is the last index the caller's state machine holds (from
    /// its own snapshot), so committed entries up to it are not handed back again.
    pub fn open(
        id: u64,
        voters: &[u64],
        mut log: RaftLog,
        applied: u64,
        timers: QuorumTimers,
    ) -> Result<QuorumNode, QuorumError> {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        if !voters.contains(&id) {
            return Err(QuorumError::NotAVoter { id, voters });
        }
        if log.voters().is_empty() {
            log.set_voters(&voters)?;
            log.sync()?;
        } else {
            let mut recorded = log.voters().to_vec();
            recorded.sort_unstable();
            if recorded != voters {
                return Err(QuorumError::VotersDisagree {
                    recorded,
                    configured: voters,
                });
            }
        }
        let first = log.first_index()?;
        let applied = applied.clamp(first - 1, log.hard_state().commit);
        let config = raft::Config {
            id,
            election_tick: timers.election_ticks.max(2),
            heartbeat_tick: timers
                .heartbeat_ticks
                .clamp(1, timers.election_ticks.max(2) - 1),
            applied,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: limits::QUORUM_MESSAGE_BYTES_MAX,
            max_inflight_msgs: limits::QUORUM_INFLIGHT_APPENDS_MAX,
            max_uncommitted_size: limits::QUORUM_UNCOMMITTED_BYTES_MAX,
            ..Default::default()
        };
        config.validate()?;
        let node = RawNode::new(&config, log, &logging::logger(id))?;
        Ok(QuorumNode { id, voters, node })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The voters.
    pub fn voters(&self) -> &[u64] {
        &self.voters
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        match self.node.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The current term (Kafka's leader epoch of the quorum).
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The highest committed index (the quorum's high watermark).
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// The highest index handed to the state machine (`advance`'s committed entries).
    pub fn applied(&self) -> u64 {
        self.node.raft.raft_log.applied()
    }

    /// Asks for a read index (raft-rs's ReadIndex, the safe kind): once the leader has
    /// confirmed with a majority that it still leads, a later `advance` hands back `context`
    /// with the leader's commit index of that moment. A follower forwards the request to the
    /// leader; without a known leader nothing is asked (the caller retries).
    pub fn read_index(&mut self, context: Vec<u8>) -> bool {
        if self.leader().is_none() {
            return false;
        }
        self.node.read_index(context);
        true
    }

    /// The last index of this node's log.
    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    /// Each voter's matched index as the leader sees it (`None` unless leader).
    pub fn voter_progress(&self) -> Option<Vec<(u64, u64)>> {
        if !self.is_leader() {
            return None;
        }
        let mut out: Vec<(u64, u64)> = self
            .node
            .raft
            .prs()
            .iter()
            .map(|(id, progress)| (*id, progress.matched))
            .collect();
        out.sort_unstable();
        Some(out)
    }

    /// Tells raft-rs that a message to `peer` could not be sent, so it probes instead of
    /// streaming appends.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.node.report_unreachable(peer);
    }

    /// One tick of the quorum's clock.
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// Takes a message from a peer. Messages from outside the quorum, or for another node, are
    /// refused before raft-rs sees them.
    pub fn step(&mut self, message: Message) -> Result<(), QuorumError> {
        if message.to != self.id || !self.voters.contains(&message.from) || message.from == self.id
        {
            return Err(QuorumError::Stranger {
                from: message.from,
                to: message.to,
            });
        }
        match self.node.step(message) {
            // A late response from a peer raft-rs no longer tracks is not an error of ours.
            Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Proposes a metadata change; it is committed when a later `advance` hands it back.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), QuorumError> {
        if !self.is_leader() {
            return Err(QuorumError::NotLeader {
                leader: self.leader(),
            });
        }
        if data.len() > limits::RAFT_RECORD_BYTES_MAX - 64 {
            return Err(QuorumError::TooLarge(data.len()));
        }
        match self.node.propose(Vec::new(), data) {
            Err(raft::Error::ProposalDropped) => Err(QuorumError::NotLeader {
                leader: self.leader(),
            }),
            other => Ok(other?),
        }
    }

    /// Proposes from any voter: the leader appends, a follower forwards the proposal to the
    /// leader it knows (raft-rs's proposal forwarding); without a known leader, `NotLeader`.
    pub fn propose_anywhere(&mut self, data: Vec<u8>) -> Result<(), QuorumError> {
        if self.is_leader() {
            return self.propose(data);
        }
        if self.leader().is_none() {
            return Err(QuorumError::NotLeader { leader: None });
        }
        if data.len() > limits::RAFT_RECORD_BYTES_MAX - 64 {
            return Err(QuorumError::TooLarge(data.len()));
        }
        match self.node.propose(Vec::new(), data) {
            Err(raft::Error::ProposalDropped) => Err(QuorumError::NotLeader {
                leader: self.leader(),
            }),
            other => Ok(other?),
        }
    }

    /// Starts an election now (a one-voter quorum elects itself at once).
    pub fn campaign(&mut self) -> Result<(), QuorumError> {
        Ok(self.node.campaign()?)
    }

    /// Persists what raft-rs has ready, then returns what to send and what was committed.
    pub fn advance(&mut self) -> Result<Progress, QuorumError> {
        let mut progress = Progress::default();
        if !self.node.has_ready() {
            return Ok(progress);
        }
        let mut ready = self.node.ready();
        progress.messages.extend(ready.take_messages());
        progress.read_states = ready
            .take_read_states()
            .into_iter()
            .map(|state| (state.request_ctx, state.index))
            .collect();
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.node.mut_store().apply_snapshot(&snapshot)?;
            progress.snapshot = Some(snapshot);
        }
        let committed = ready.take_committed_entries();
        keep_data(&mut progress.committed, committed);
        if !ready.entries().is_empty() {
            self.node.mut_store().append(ready.entries())?;
        }
        if let Some(hard_state) = ready.hs() {
            self.node.mut_store().set_hard_state(hard_state.clone())?;
        }
        self.node.mut_store().sync()?;
        progress.messages.extend(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit)?;
            self.node.mut_store().sync()?;
        }
        progress.messages.extend(light.take_messages());
        keep_data(&mut progress.committed, light.take_committed_entries());
        self.node.advance_apply();
        Ok(progress)
    }

    /// Compacts the log up to `applied`, whose state machine is `image`.
    pub fn compact(&mut self, applied: u64, image: Bytes) -> Result<(), QuorumError> {
        Ok(self.node.mut_store().compact(applied, image)?)
    }

    /// Entries in the log after the last snapshot.
    pub fn log_entries(&self) -> u64 {
        let store = self.node.store();
        let first = store.first_index().unwrap_or(1);
        (store.last_index().unwrap_or(0) + 1).saturating_sub(first)
    }
}

/// Committed entries without data are the empty entries a new leader appends; only metadata
/// changes go to the state machine.
fn keep_data(out: &mut Vec<Entry>, entries: Vec<Entry>) {
    out.extend(
        entries
            .into_iter()
            .filter(|e| e.entry_type == EntryType::EntryNormal && !e.data.is_empty()),
    );
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use super::*;
    use crate::cluster::wire;

    const TIMERS: QuorumTimers = QuorumTimers {
        election_ticks: 10,
        heartbeat_ticks: 1,
    };

    /// Voters in one process, messages passed through the wire codec, some links cut.
    struct Cluster {
        dirs: BTreeMap<u64, tempfile::TempDir>,
        nodes: BTreeMap<u64, QuorumNode>,
        applied: BTreeMap<u64, Vec<Bytes>>,
        inbox: VecDeque<Message>,
        down: Vec<u64>,
    }

    impl Cluster {
        fn new(ids: &[u64]) -> Cluster {
            let mut cluster = Cluster {
                dirs: BTreeMap::new(),
                nodes: BTreeMap::new(),
                applied: BTreeMap::new(),
                inbox: VecDeque::new(),
                down: Vec::new(),
            };
            for &id in ids {
                cluster.dirs.insert(id, tempfile::tempdir().unwrap());
            }
            for &id in ids {
                cluster.start(id);
            }
            cluster
        }

        fn start(&mut self, id: u64) {
            let voters: Vec<u64> = self.dirs.keys().copied().collect();
            let log = RaftLog::open(self.dirs[&id].path()).unwrap();
            let node = QuorumNode::open(id, &voters, log, 0, TIMERS).unwrap();
            self.nodes.insert(id, node);
            self.applied.insert(id, Vec::new());
            self.down.retain(|d| *d != id);
        }

        fn kill(&mut self, id: u64) {
            self.nodes.remove(&id);
            self.down.push(id);
        }

        fn run(&mut self, ticks: usize) {
            for _ in 0..ticks {
                for node in self.nodes.values_mut() {
                    node.tick();
                }
                self.deliver();
            }
        }

        fn deliver(&mut self) {
            for _ in 0..1000 {
                for (id, node) in self.nodes.iter_mut() {
                    let progress = node.advance().unwrap();
                    self.applied
                        .get_mut(id)
                        .unwrap()
                        .extend(progress.committed.into_iter().map(|e| e.data));
                    for message in progress.messages {
                        let mut bytes = Vec::new();
                        wire::encode(&message, &mut bytes);
                        self.inbox.push_back(wire::decode(&bytes).unwrap());
                    }
                }
                if self.inbox.is_empty() {
                    return;
                }
                while let Some(message) = self.inbox.pop_front() {
                    if self.down.contains(&message.to) || self.down.contains(&message.from) {
                        continue;
                    }
                    if let Some(node) = self.nodes.get_mut(&message.to) {
                        node.step(message).unwrap();
                    }
                }
            }
            panic!("messages did not settle");
        }

        fn leader(&self) -> Option<u64> {
            let leaders: Vec<u64> = self
                .nodes
                .values()
                .filter(|n| n.is_leader())
                .map(|n| n.id())
                .collect();
            assert!(leaders.len() <= 1, "two leaders in one term: {leaders:?}");
            leaders.first().copied()
        }
    }

    #[test]
    fn three_voters_elect_a_leader_commit_and_survive_its_loss() {
        let mut cluster = Cluster::new(&[1, 2, 3]);
        cluster.run(40);
        let leader = cluster
            .leader()
            .expect("a leader within 2 election timeouts");
        for i in 0..5 {
            cluster
                .nodes
                .get_mut(&leader)
                .unwrap()
                .propose(format!("change-{i}").into_bytes())
                .unwrap();
        }
        cluster.run(3);
        let want: Vec<Bytes> = (0..5).map(|i| Bytes::from(format!("change-{i}"))).collect();
        for id in [1, 2, 3] {
            assert_eq!(cluster.applied[&id], want, "node {id} applied every change");
        }

        // The leader dies: another is elected and takes changes.
        cluster.kill(leader);
        cluster.run(40);
        let next = cluster.leader().expect("a new leader");
        assert_ne!(next, leader);
        assert!(cluster.nodes[&next].term() > 1);
        cluster
            .nodes
            .get_mut(&next)
            .unwrap()
            .propose(b"after".to_vec())
            .unwrap();
        cluster.run(3);
        // The old leader restarts from its data dir and catches up.
        cluster.start(leader);
        cluster.run(20);
        let mut all = want.clone();
        all.push(Bytes::from("after"));
        assert_eq!(
            cluster.applied[&leader], all,
            "restarted node replays and catches up"
        );
        for id in [1, 2, 3] {
            assert_eq!(
                cluster.nodes[&id].commit_index(),
                cluster.nodes[&next].commit_index()
            );
        }
    }

    #[test]
    fn a_single_voter_elects_itself_and_refuses_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open(dir.path()).unwrap();
        let mut node = QuorumNode::open(1, &[1], log, 0, TIMERS).unwrap();
        node.campaign().unwrap();
        node.advance().unwrap();
        assert!(node.is_leader());
        node.propose(b"x".to_vec()).unwrap();
        let progress = node.advance().unwrap();
        assert_eq!(progress.committed.len(), 1);
        assert!(progress.messages.is_empty());
        let stranger = Message {
            msg_type: raft::eraftpb::MessageType::MsgRequestVote,
            from: 9,
            to: 1,
            term: 100,
            ..Default::default()
        };
        assert!(matches!(
            node.step(stranger),
            Err(QuorumError::Stranger { .. })
        ));
        assert_eq!(node.term(), 1, "a stranger's term changes nothing");
        drop(node);

        // The data dir remembers its voters.
        let log = RaftLog::open(dir.path()).unwrap();
        let err = QuorumNode::open(1, &[1, 2, 3], log, 0, TIMERS).unwrap_err();
        assert!(matches!(err, QuorumError::VotersDisagree { .. }), "{err}");
        let log = RaftLog::open(dir.path()).unwrap();
        let err = QuorumNode::open(4, &[1], log, 0, TIMERS).unwrap_err();
        assert!(matches!(err, QuorumError::NotAVoter { .. }));
    }

    #[test]
    fn a_minority_leader_steps_down_and_the_majority_moves_on() {
        let mut cluster = Cluster::new(&[1, 2, 3]);
        cluster.run(40);
        let leader = cluster.leader().unwrap();
        // Cut the leader off from both others (it stays up).
        cluster.down.push(leader);
        cluster.run(60);
        assert!(
            !cluster.nodes[&leader].is_leader(),
            "check-quorum: an isolated leader steps down"
        );
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
        let new_leader = others
            .iter()
            .copied()
            .find(|i| cluster.nodes[i].is_leader())
            .expect("the majority elects a leader");
        cluster.down.retain(|d| *d != leader);
        cluster.run(20);
        assert_eq!(
            cluster.leader(),
            Some(new_leader),
            "pre-vote: the returning node does not disrupt"
        );
    }
}
