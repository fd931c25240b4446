//! Runs one quorum voter on a glommio executor: ticks its clock, feeds it peers' messages and
//! local proposals, and after each step persists, sends and applies what it produced.
//!
//! Owner: shard 0 of a controller node. `spawn` starts one task (the only owner of the
//! `QuorumNode`, so no locks), a ticker task and the transport's tasks, and returns a
//! cloneable `QuorumHandle` for proposals, status and `stop`. The tasks run until `stop`, or
//! until the log cannot be written (the voter must not answer from state it did not persist). The voter task awaits only its event channel; the durable log's
//! fdatasync runs inline (metadata changes are rare and small, and a voter must not answer
//! before its log is durable).
//!
//! A proposal resolves once its entry commits (with its log index), or with `NotLeader` when
//! this node is not the leader, loses leadership before the entry commits, or the entry at its
//! index commits with another term (a new leader replaced it). Committed entries reach `apply`
//! in log order, exactly once per process; a snapshot from the leader reaches it first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpListener;
use raft::eraftpb::{Entry, Message, Snapshot};
use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::quorum::{QuorumError, QuorumNode};
use crate::cluster::transport::Transport;
use crate::limits;

/// What a state machine is handed: a leader's snapshot (replacing its state), then committed
/// entries in log order. It may answer with its state as of the last entry it applied (index,
/// bytes), and the log is then compacted up to there (a local snapshot).
pub type Apply = Box<dyn FnMut(Option<&Snapshot>, &[Entry]) -> Option<(u64, bytes::Bytes)>>;

/// The quorum as this node sees it (DescribeQuorum's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    /// This node.
    pub node_id: u64,
    /// The leader, if known.
    pub leader: Option<u64>,
    /// The current term (the quorum's leader epoch).
    pub term: u64,
    /// Highest committed index (the high watermark).
    pub commit_index: u64,
    /// Last index of this node's log.
    pub last_index: u64,
    /// Each voter's log end as the leader sees it; empty on a follower.
    pub voters: Vec<(u64, u64)>,
    /// On the leader: how long ago each peer was last heard from (any Raft message), in
    /// milliseconds; peers not heard from since this node became leader count from then.
    pub heard_ms_ago: Vec<(u64, u64)>,
}

enum Event {
    Tick,
    Peer(Message),
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<u64, QuorumError>>,
    },
    Forward {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), QuorumError>>,
    },
    ReadIndex(oneshot::Sender<Result<u64, QuorumError>>),
    Status(oneshot::Sender<QuorumStatus>),
    Stop(oneshot::Sender<()>),
}

/// Where to reach the voters and how often to tick.
#[derive(Debug)]
pub struct DriverSettings {
    /// The quorum's cluster id (peers of another cluster are refused).
    pub cluster_id: Uuid,
    /// Voter id → its controller listener address.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// This node's bound controller listener.
    pub listener: TcpListener,
    /// The clock's period.
    pub tick: Duration,
}

/// Proposals and status queries for the voter task.
#[derive(Debug, Clone)]
pub struct QuorumHandle {
    events: Rc<LocalSender<Event>>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Event::Tick => "Tick",
            Event::Peer(_) => "Peer",
            Event::ReadIndex(_) => "ReadIndex",
            Event::Propose { .. } => "Propose",
            Event::Forward { .. } => "Forward",
            Event::Status(_) => "Status",
            Event::Stop(_) => "Stop",
        })
    }
}

impl QuorumHandle {
    /// Proposes a change; resolves with its index once committed.
    pub async fn propose(&self, data: Vec<u8>) -> Result<u64, QuorumError> {
        self.ask(|reply| Event::Propose { data, reply }).await
    }

    /// Hands a change to the leader, from any voter (raft-rs forwards a follower's proposal to
    /// the leader it knows). Resolves once raft-rs took it, not once it commits: the caller
    /// learns of the commit from its state machine, and a forwarded proposal may be lost with
    /// a leader change, so the caller bounds its wait. `NotLeader` when no leader is known.
    pub async fn forward(&self, data: Vec<u8>) -> Result<(), QuorumError> {
        self.ask(|reply| Event::Forward { data, reply }).await
    }

    /// A read index (raft-rs's safe ReadIndex): resolves with the leader's commit index once a
    /// majority has confirmed, after this call, that the leader still leads, and this node has
    /// applied the log up to that index (so its state machine holds every change committed
    /// before the call). `NotLeader` when no leader is known or leadership changes meanwhile;
    /// a request the leader never confirms (this node cut off) stays unanswered, and the
    /// caller bounds its wait.
    pub async fn read_index(&self) -> Result<u64, QuorumError> {
        self.ask(Event::ReadIndex).await
    }

    /// Sends the voter task an event carrying `reply` and awaits the answer; a stopped task
    /// answers `NotLeader`.
    async fn ask<T>(
        &self,
        event: impl FnOnce(oneshot::Sender<Result<T, QuorumError>>) -> Event,
    ) -> Result<T, QuorumError> {
        let (reply, answer) = oneshot::channel();
        if self.events.send(event(reply)).await.is_err() {
            return Err(QuorumError::NotLeader { leader: None });
        }
        answer
            .await
            .unwrap_or(Err(QuorumError::NotLeader { leader: None }))
    }

    /// Stops the voter and its transport (listener and peer connections closed); resolves once
    /// they are.
    pub async fn stop(&self) {
        let (reply, done) = oneshot::channel();
        if self.events.send(Event::Stop(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// The quorum as this node sees it, or `None` if the voter task has stopped.
    pub async fn status(&self) -> Option<QuorumStatus> {
        let (reply, answer) = oneshot::channel();
        self.events.send(Event::Status(reply)).await.ok()?;
        answer.await.ok()
    }
}

/// Starts the voter, its ticker and its transport on the current executor.
pub fn spawn(node: QuorumNode, settings: DriverSettings, apply: Apply) -> QuorumHandle {
    let (events_tx, events_rx) = local_channel::new_bounded(limits::QUORUM_EVENTS_QUEUED_MAX);
    let (peer_tx, peer_rx) = local_channel::new_bounded(limits::QUORUM_EVENTS_QUEUED_MAX);
    let transport = Transport::start(
        node.id(),
        settings.cluster_id,
        node.voters().to_vec(),
        settings.peers,
        settings.listener,
        peer_tx,
    );
    let handle = QuorumHandle {
        events: Rc::new(events_tx),
    };
    // The ticker and the peer forwarder stop once a send fails: the voter task has ended.
    let ticker = handle.events.clone();
    let tick = settings.tick;
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(tick).await;
            match ticker.try_send(Event::Tick) {
                Ok(()) => {}
                Err(glommio::GlommioError::Closed(_)) => break,
                // A full queue already holds work; the tick is skipped, not queued.
                Err(_) => {}
            }
        }
    })
    .detach();
    let forward = handle.events.clone();
    glommio::spawn_local(forward_peers(peer_rx, forward)).detach();
    glommio::spawn_local(run(node, transport, events_rx, apply)).detach();
    handle
}

async fn forward_peers(peers: LocalReceiver<Message>, events: Rc<LocalSender<Event>>) {
    while let Some(message) = peers.recv().await {
        if events.send(Event::Peer(message)).await.is_err() {
            break;
        }
    }
}

async fn run(
    mut node: QuorumNode,
    mut transport: Transport,
    events: LocalReceiver<Event>,
    mut apply: Apply,
) {
    let mut pending: BTreeMap<u64, (u64, oneshot::Sender<Result<u64, QuorumError>>)> =
        BTreeMap::new();
    let mut leader = None;
    let mut heard: BTreeMap<u64, std::time::Instant> = BTreeMap::new();
    // Read indexes asked of the leader (by request number) and those it confirmed, waiting
    // for this node to apply up to their index.
    let mut reads: BTreeMap<u64, oneshot::Sender<Result<u64, QuorumError>>> = BTreeMap::new();
    let mut confirmed: Vec<(u64, oneshot::Sender<Result<u64, QuorumError>>)> = Vec::new();
    let mut read_number: u64 = 0;
    if node.voters().len() == 1 {
        // A one-voter quorum need not wait an election timeout.
        if let Err(err) = node.campaign() {
            warn!(%err, "quorum: cannot campaign");
        }
    }
    while let Some(event) = events.recv().await {
        match event {
            Event::Tick => {
                for peer in transport.take_unreachable() {
                    node.report_unreachable(peer);
                }
                node.tick();
            }
            Event::Peer(message) => {
                heard.insert(message.from, std::time::Instant::now());
                if let Err(err) = node.step(message) {
                    warn!(%err, "quorum: peer message refused");
                }
            }
            Event::Propose { data, reply } => match node.propose(data) {
                Ok(()) => {
                    pending.insert(node.last_index(), (node.term(), reply));
                }
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            },
            Event::Forward { data, reply } => {
                let _ = reply.send(node.propose_anywhere(data));
            }
            Event::ReadIndex(reply) => {
                read_number += 1;
                if !node.read_index(read_number.to_be_bytes().to_vec()) {
                    let _ = reply.send(Err(QuorumError::NotLeader { leader: None }));
                    continue;
                }
                reads.insert(read_number, reply);
                // Requests a lost message left unanswered are dropped, oldest first.
                while reads.len() > limits::QUORUM_READS_PENDING_MAX {
                    reads.pop_first();
                }
            }
            Event::Status(reply) => {
                let now = std::time::Instant::now();
                let _ = reply.send(QuorumStatus {
                    node_id: node.id(),
                    leader: node.leader(),
                    term: node.term(),
                    commit_index: node.commit_index(),
                    last_index: node.last_index(),
                    voters: node.voter_progress().unwrap_or_default(),
                    heard_ms_ago: if node.is_leader() {
                        heard
                            .iter()
                            .map(|(id, at)| (*id, now.duration_since(*at).as_millis() as u64))
                            .collect()
                    } else {
                        Vec::new()
                    },
                });
                continue;
            }
            Event::Stop(done) => {
                transport.shut_down().await;
                let _ = done.send(());
                break;
            }
        }
        let progress = match node.advance() {
            Ok(progress) => progress,
            Err(err) => {
                // The log cannot be written: this voter must stop rather than answer peers
                // with state it has not persisted.
                tracing::error!(%err, "quorum: cannot persist the log; this voter stops");
                break;
            }
        };
        for message in progress.messages {
            transport.send(message);
        }
        if (progress.snapshot.is_some() || !progress.committed.is_empty())
            && let Some((index, state)) = apply(progress.snapshot.as_ref(), &progress.committed)
            && let Err(err) = node.compact(index, state)
        {
            warn!(%err, index, "quorum: cannot compact the log; it keeps its entries");
        }
        for (context, index) in progress.read_states {
            let number = <[u8; 8]>::try_from(context.as_slice()).map(u64::from_be_bytes);
            if let Some(reply) = number.ok().and_then(|n| reads.remove(&n)) {
                confirmed.push((index, reply));
            }
        }
        if !confirmed.is_empty() {
            let applied = node.applied();
            let (ready, waiting): (Vec<_>, Vec<_>) = confirmed
                .into_iter()
                .partition(|(index, _)| *index <= applied);
            confirmed = waiting;
            for (index, reply) in ready {
                let _ = reply.send(Ok(index));
            }
        }
        for entry in &progress.committed {
            if let Some((term, reply)) = pending.remove(&entry.index) {
                let _ = reply.send(if term == entry.term {
                    Ok(entry.index)
                } else {
                    Err(QuorumError::NotLeader {
                        leader: node.leader(),
                    })
                });
            }
        }
        // Proposals at or below the commit index that were not answered above were replaced
        // (their index committed another entry); proposals of a leader that lost its term are
        // refused now rather than left waiting.
        let commit = node.commit_index();
        let current_term = node.term();
        let still_leader = node.is_leader();
        let stale: Vec<u64> = pending
            .iter()
            .filter(|(index, (term, _))| {
                **index <= commit || !still_leader || *term != current_term
            })
            .map(|(index, _)| *index)
            .collect();
        for index in stale {
            let (_, reply) = pending.remove(&index).expect("listed");
            let _ = reply.send(Err(QuorumError::NotLeader {
                leader: node.leader(),
            }));
        }
        if node.leader() != leader {
            leader = node.leader();
            // raft-rs forgets unconfirmed read requests when the leadership changes.
            for (_, reply) in std::mem::take(&mut reads) {
                let _ = reply.send(Err(QuorumError::NotLeader { leader }));
            }
            // A new leader counts every peer as heard from now: a session starts at the
            // election, not at whenever the previous leader last saw it.
            let now = std::time::Instant::now();
            heard = node
                .voters()
                .iter()
                .filter(|id| **id != node.id())
                .map(|id| (*id, now))
                .collect();
            info!(
                node = node.id(),
                leader = ?leader,
                term = node.term(),
                "quorum leader changed"
            );
        }
    }
    transport.close();
}
