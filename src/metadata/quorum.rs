//! The metadata state machine of a controller quorum: every change is a controller request
//! carried as a command in the replicated log, and every node carries the committed commands
//! out in log order against its own image, so that all images are the same prefix of the log.
//!
//! Owner: shard 0 of every quorum node. The quorum driver (`cluster::driver`) calls `apply`
//! with committed entries; `submit` is called by this node's controller for requests from any
//! shard. Lifecycle: `open` reads the last local snapshot (the image at some log index) from
//! the Raft log before the shard serves; the broker layer then starts the driver with `apply`
//! and a publisher task that installs each new image on every shard in order. `submit` awaits
//! the driver (handing the command to the leader) and then this node's own apply of it.
//!
//! Why commands rather than records: a follower cannot plan a change against the leader's
//! image, and Kafka forwards such requests to the active controller. Carrying the request
//! itself in the log (with its random draws made beforehand, `controller::prepare`) lets any
//! node propose (raft-rs forwards a follower's proposal to the leader), and planning is a pure
//! function of image and request (`controller::execute`), so every node derives the same
//! records; the node that proposed answers its client from its own apply. A request is
//! validated where it commits, against the committed image, so two nodes racing to create a
//! topic get one success and one TOPIC_ALREADY_EXISTS, as Kafka's single active controller
//! gives.
//!
//! Local snapshots: every `QUORUM_SNAPSHOT_ENTRIES` applied entries the image (JSON) becomes
//! the Raft log's snapshot and the entries before it are dropped; a node far behind receives
//! the leader's snapshot and replaces its image with it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{self, Either};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use raft::eraftpb::{Entry, Snapshot};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::driver::{QuorumHandle, QuorumStatus};
use crate::cluster::raft_log::RaftLog;
use crate::limits;
use crate::metadata::controller::{
    ControllerRequest, ControllerResponse, MetadataError, Mode, PlanSettings, execute, refusal,
};
use crate::metadata::image::MetadataImage;
use crate::runtime::event::Event;

/// One entry of the replicated log.
#[derive(Debug, Serialize, Deserialize)]
struct Command {
    /// The node whose controller proposed it (and answers for it).
    origin: i32,
    /// That node's process, so a restarted node does not answer for its predecessor.
    incarnation: Uuid,
    /// Matches the answer to the waiting request.
    request_id: u64,
    /// The change.
    request: ControllerRequest,
    /// The proposing node's settings the plan depends on.
    #[serde(default)]
    settings: PlanSettings,
    /// For a decision only the active controller may make (fencing a broker past its session,
    /// a leader balance), the Raft term it was made as leader in: the command is carried out
    /// only if it commits in that term, i.e. its proposer still led when it was appended. A
    /// node that stopped leading (frozen, cut off) decides on what it last saw; without this
    /// its decision, forwarded to the new leader, would be committed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leader_term: Option<u64>,
}

type Waiter = oneshot::Sender<(ControllerResponse, i64)>;

/// See the module documentation.
pub struct ReplicatedMetadata {
    node_id: i32,
    incarnation: Uuid,
    image: RefCell<Rc<MetadataImage>>,
    applied_index: Cell<u64>,
    entries_since_snapshot: Cell<u64>,
    handle: RefCell<Option<QuorumHandle>>,
    waiters: RefCell<BTreeMap<u64, Waiter>>,
    next_request: Cell<u64>,
    publications: LocalSender<Rc<MetadataImage>>,
    publications_rx: RefCell<Option<LocalReceiver<Rc<MetadataImage>>>>,
    published: Cell<i64>,
    published_event: Event,
    settings: RefCell<PlanSettings>,
}

impl std::fmt::Debug for ReplicatedMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedMetadata")
            .field("node_id", &self.node_id)
            .field("applied_index", &self.applied_index.get())
            .field("offset", &self.image.borrow().offset)
            .finish()
    }
}

/// Reads the image of the Raft log's last local snapshot: `(image, its log index)`. A log
/// without one starts from the empty image at index 0.
pub fn snapshot_image(log: &RaftLog) -> Result<(MetadataImage, u64), String> {
    use raft::Storage as _;
    let snapshot = log.snapshot(0, 0).map_err(|err| err.to_string())?;
    let index = snapshot.get_metadata().index;
    if snapshot.data.is_empty() {
        return Ok((MetadataImage::empty(), index));
    }
    let image = parse_snapshot(&snapshot.data)
        .map_err(|err| format!("the quorum's snapshot at index {index} is unreadable: {err}"))?;
    Ok((image, index))
}

fn parse_snapshot(data: &[u8]) -> Result<MetadataImage, serde_json::Error> {
    serde_json::from_slice(data)
}

/// This process's incarnation: drawn once at start, the same for every shard, so a broker's
/// registration in the image can be told apart from one of an earlier run of the same node.
pub fn process_incarnation() -> Uuid {
    static INCARNATION: std::sync::OnceLock<Uuid> = std::sync::OnceLock::new();
    *INCARNATION.get_or_init(Uuid::new_v4)
}

impl ReplicatedMetadata {
    /// A state machine starting from `image`, the state as of log index `applied`.
    pub fn open(node_id: i32, image: MetadataImage, applied: u64) -> Rc<ReplicatedMetadata> {
        let (publications, publications_rx) = local_channel::new_unbounded();
        let offset = image.offset;
        Rc::new(ReplicatedMetadata {
            node_id,
            incarnation: process_incarnation(),
            image: RefCell::new(Rc::new(image)),
            applied_index: Cell::new(applied),
            entries_since_snapshot: Cell::new(0),
            handle: RefCell::new(None),
            waiters: RefCell::new(BTreeMap::new()),
            next_request: Cell::new(1),
            publications,
            publications_rx: RefCell::new(Some(publications_rx)),
            published: Cell::new(offset),
            published_event: Event::default(),
            settings: RefCell::new(PlanSettings::default()),
        })
    }

    /// The settings this node's proposals carry (from its configuration; set before serving).
    pub fn set_plan_settings(&self, settings: PlanSettings) {
        *self.settings.borrow_mut() = settings;
    }

    /// This process's incarnation (drawn at start).
    pub fn incarnation(&self) -> Uuid {
        self.incarnation
    }

    /// The image as of the last applied entry.
    pub fn image(&self) -> Rc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// The Raft index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.get()
    }

    /// Connects the driver, once it runs.
    pub fn attach(&self, handle: QuorumHandle) {
        *self.handle.borrow_mut() = Some(handle);
    }

    /// The driver, once attached.
    pub fn handle(&self) -> Option<QuorumHandle> {
        self.handle.borrow().clone()
    }

    /// The quorum as this node sees it.
    pub async fn status(&self) -> Option<QuorumStatus> {
        self.handle()?.status().await
    }

    /// The stream of images to install on every shard, in apply order (taken once, by the
    /// broker layer's publisher).
    pub fn take_publications(&self) -> Option<LocalReceiver<Rc<MetadataImage>>> {
        self.publications_rx.borrow_mut().take()
    }

    /// The publisher installed the image up to `offset` on every shard.
    pub fn mark_published(&self, offset: i64) {
        if offset > self.published.get() {
            self.published.set(offset);
            self.published_event.notify_all();
        }
    }

    /// Proposes `request` and answers once this node applied it (and every shard has the
    /// image it made), within `QUORUM_COMMIT_TIMEOUT_MS`.
    pub async fn submit(&self, request: ControllerRequest) -> ControllerResponse {
        self.submit_in(request, None).await
    }

    /// `submit` for a decision this node made as the quorum leader of `term` (from a
    /// `QuorumStatus` that named it leader): refused with NOT_CONTROLLER, on every node alike,
    /// unless it commits in `term`.
    pub async fn submit_as_leader(
        &self,
        request: ControllerRequest,
        term: u64,
    ) -> ControllerResponse {
        self.submit_in(request, Some(term)).await
    }

    async fn submit_in(
        &self,
        request: ControllerRequest,
        leader_term: Option<u64>,
    ) -> ControllerResponse {
        if validate_only(&request) {
            let mode = Mode::Quorum {
                entry_index: self.applied_index.get() + 1,
                settings: self.settings.borrow().clone(),
            };
            return execute(&self.image(), request, &mode).response;
        }
        let Some(handle) = self.handle() else {
            return refusal(
                &request,
                MetadataError::NoQuorum("the controller quorum is starting".to_string()),
            );
        };
        let request_id = self.next_request.get();
        self.next_request.set(request_id + 1);
        let command = Command {
            origin: self.node_id,
            incarnation: self.incarnation,
            request_id,
            request: request.clone(),
            settings: self.settings.borrow().clone(),
            leader_term,
        };
        let data = match serde_json::to_vec(&command) {
            Ok(data) => data,
            Err(err) => return refusal(&request, MetadataError::InvalidRequest(err.to_string())),
        };
        let (reply, answer) = oneshot::channel();
        self.waiters.borrow_mut().insert(request_id, reply);
        if let Err(err) = handle.forward(data).await {
            self.waiters.borrow_mut().remove(&request_id);
            return refusal(&request, MetadataError::NoQuorum(err.to_string()));
        }
        let bound = Duration::from_millis(limits::QUORUM_COMMIT_TIMEOUT_MS);
        let timer = Box::pin(glommio::timer::sleep(bound));
        let (response, offset) = match future::select(answer, timer).await {
            Either::Left((Ok(answer), _)) => answer,
            _ => {
                self.waiters.borrow_mut().remove(&request_id);
                return refusal(
                    &request,
                    MetadataError::Timeout(format!(
                        "the change was not committed within {} ms (it may still be)",
                        limits::QUORUM_COMMIT_TIMEOUT_MS
                    )),
                );
            }
        };
        let published = self
            .published_event
            .wait_for(|| (self.published.get() >= offset).then_some(()));
        let timer = Box::pin(glommio::timer::sleep(bound));
        if let Either::Right(_) = future::select(Box::pin(published), timer).await {
            warn!(
                offset,
                "a committed metadata change is slow to reach every shard"
            );
        }
        response
    }

    /// Applies a leader's snapshot, then committed entries, in log order. Returns the image to
    /// compact the log with, every `QUORUM_SNAPSHOT_ENTRIES` entries.
    pub fn apply(&self, snapshot: Option<&Snapshot>, entries: &[Entry]) -> Option<(u64, Bytes)> {
        let mut image = (*self.image()).clone();
        if let Some(snapshot) = snapshot {
            let index = snapshot.get_metadata().index;
            match parse_snapshot(&snapshot.data) {
                Ok(replacement) => {
                    info!(
                        index,
                        offset = replacement.offset,
                        "metadata image replaced by the leader's snapshot"
                    );
                    image = replacement;
                    self.applied_index.set(index);
                    self.entries_since_snapshot.set(0);
                }
                Err(err) => {
                    warn!(index, %err, "the leader's metadata snapshot is unreadable; ignored")
                }
            }
        }
        for entry in entries {
            if entry.index <= self.applied_index.get() {
                continue;
            }
            match serde_json::from_slice::<Command>(&entry.data) {
                Ok(command) => {
                    let mode = Mode::Quorum {
                        entry_index: entry.index,
                        settings: command.settings,
                    };
                    if let Some(term) = command.leader_term
                        && term != entry.term
                    {
                        // Every node sees the same entry term, so every node refuses alike.
                        info!(
                            index = entry.index,
                            decided_in = term,
                            committed_in = entry.term,
                            request = ?command.request,
                            "metadata change refused: decided by the quorum leader of an earlier term"
                        );
                        if command.origin == self.node_id
                            && command.incarnation == self.incarnation
                            && let Some(waiter) =
                                self.waiters.borrow_mut().remove(&command.request_id)
                        {
                            let response = refusal(
                                &command.request,
                                MetadataError::StaleController(format!(
                                    "decided by the quorum leader of term {term}, committed in term {}",
                                    entry.term
                                )),
                            );
                            let _ = waiter.send((response, image.offset));
                        }
                        self.applied_index.set(entry.index);
                        self.entries_since_snapshot
                            .set(self.entries_since_snapshot.get() + 1);
                        continue;
                    }
                    let outcome = execute(&image, command.request, &mode);
                    for (offset, record) in &outcome.records {
                        info!(
                            index = entry.index,
                            offset,
                            ?record,
                            "metadata change committed"
                        );
                    }
                    image = outcome.image;
                    if command.origin == self.node_id
                        && command.incarnation == self.incarnation
                        && let Some(waiter) = self.waiters.borrow_mut().remove(&command.request_id)
                    {
                        let _ = waiter.send((outcome.response, image.offset));
                    }
                }
                // Every node skips the same entry, so the images stay the same.
                Err(err) => {
                    warn!(index = entry.index, %err, "metadata log entry skipped: not a command")
                }
            }
            self.applied_index.set(entry.index);
            self.entries_since_snapshot
                .set(self.entries_since_snapshot.get() + 1);
        }
        let image = Rc::new(image);
        *self.image.borrow_mut() = image.clone();
        let _ = self.publications.try_send(image.clone());
        if self.entries_since_snapshot.get() >= limits::QUORUM_SNAPSHOT_ENTRIES {
            self.entries_since_snapshot.set(0);
            match serde_json::to_vec(&*image) {
                Ok(bytes) => return Some((self.applied_index.get(), Bytes::from(bytes))),
                Err(err) => warn!(%err, "cannot encode the metadata image for a snapshot"),
            }
        }
        None
    }
}

fn validate_only(request: &ControllerRequest) -> bool {
    match request {
        ControllerRequest::CreateTopics { validate_only, .. }
        | ControllerRequest::CreatePartitions { validate_only, .. }
        | ControllerRequest::AlterBrokerConfigs { validate_only, .. }
        | ControllerRequest::AlterTopicConfigs { validate_only, .. } => *validate_only,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::controller::NewTopic;

    fn run<F: std::future::Future<Output = ()> + 'static>(
        test: impl FnOnce() -> F + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async move { test().await })
            .unwrap()
            .join()
            .unwrap();
    }

    fn entry(index: u64, origin: i32, request: ControllerRequest) -> Entry {
        let command = Command {
            origin,
            incarnation: Uuid::nil(),
            request_id: index,
            request,
            settings: PlanSettings::default(),
            leader_term: None,
        };
        Entry {
            index,
            term: 1,
            data: Bytes::from(serde_json::to_vec(&command).unwrap()),
            ..Default::default()
        }
    }

    fn register(id: i32) -> ControllerRequest {
        ControllerRequest::RegisterBroker {
            id,
            incarnation: Uuid::from_u128(id as u128),
            host: "127.0.0.1".to_string(),
            port: 9000 + id as u16,
            rack: None,
        }
    }

    fn unfence(id: i32) -> ControllerRequest {
        ControllerRequest::UnfenceBroker {
            id,
            epoch: 1,
            incarnation: Uuid::from_u128(id as u128),
        }
    }

    fn create(name: &str, replicas: i16) -> ControllerRequest {
        ControllerRequest::CreateTopics {
            topics: vec![NewTopic {
                name: name.to_string(),
                partitions: 3,
                replication_factor: replicas,
                id: Some(Uuid::from_u128(7)),
                placement_start: Some(1),
                ..NewTopic::default()
            }],
            validate_only: false,
        }
    }

    /// The entries of a short history: three brokers register and are unfenced, a topic of
    /// three replicas is created, broker 2 is fenced.
    fn history() -> Vec<Entry> {
        let mut requests = vec![register(1), register(2), register(3)];
        requests.extend([unfence(1), unfence(2), unfence(3), create("t", 3)]);
        requests.push(ControllerRequest::FenceBroker { id: 2, epoch: 1 });
        requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| entry(i as u64 + 1, 9, r))
            .collect()
    }

    #[test]
    fn every_node_applying_the_same_entries_has_the_same_image() {
        run(|| async {
            let a = ReplicatedMetadata::open(1, MetadataImage::empty(), 0);
            let b = ReplicatedMetadata::open(2, MetadataImage::empty(), 0);
            let entries = history();
            a.apply(None, &entries);
            // b applies the same entries in two batches, one of them repeated.
            b.apply(None, &entries[..4]);
            b.apply(None, &entries[2..]);
            assert_eq!(*a.image(), *b.image());
            assert_eq!(a.applied_index(), 8);
            let image = a.image();
            assert_eq!(image.live_brokers().count(), 2);
            let topic = image.topic("t").unwrap();
            assert_eq!(topic.placement.len(), 3);
            for state in &topic.placement {
                assert_eq!(state.replicas.len(), 3);
                if state.replicas[0] == 2 {
                    // Its leader was fenced: the next in-sync replica in replica order leads,
                    // at a new leader epoch, and the fenced broker leaves the ISR.
                    assert_eq!((state.leader, state.leader_epoch), (state.replicas[1], 1));
                    assert!(!state.isr.contains(&2), "{state:?}");
                } else {
                    assert_eq!((state.leader, state.leader_epoch), (state.replicas[0], 0));
                }
            }
        });
    }

    /// A fence decided by the leader of term 1 (a leader that was frozen, and so heard from
    /// nobody) is void when it commits in term 2, on every node; the same fence committed in
    /// the term it was decided in is carried out.
    #[test]
    fn a_fence_decided_in_an_earlier_term_changes_nothing() {
        run(|| async {
            let fence_in = |index: u64, decided: u64, committed: u64| {
                let mut e = entry(index, 9, ControllerRequest::FenceBroker { id: 3, epoch: 1 });
                let mut command: Command = serde_json::from_slice(&e.data).unwrap();
                command.leader_term = Some(decided);
                e.data = Bytes::from(serde_json::to_vec(&command).unwrap());
                e.term = committed;
                e
            };
            let machine = ReplicatedMetadata::open(1, MetadataImage::empty(), 0);
            machine.apply(None, &history());
            let before = machine.image();
            assert!(!before.brokers[&3].fenced);
            machine.apply(None, &[fence_in(9, 1, 2)]);
            assert_eq!(*machine.image(), *before, "a stale leader's fence is void");
            assert_eq!(machine.applied_index(), 9);
            machine.apply(None, &[fence_in(10, 2, 2)]);
            assert!(
                machine.image().brokers[&3].fenced,
                "the current leader's fence holds"
            );
        });
    }

    #[test]
    fn a_stale_unfence_and_a_bad_entry_change_nothing() {
        run(|| async {
            let machine = ReplicatedMetadata::open(1, MetadataImage::empty(), 0);
            machine.apply(None, &history());
            let before = machine.image();
            let stale = ControllerRequest::UnfenceBroker {
                id: 2,
                epoch: 1,
                incarnation: Uuid::from_u128(99),
            };
            let junk = Entry {
                index: 10,
                term: 1,
                data: Bytes::from_static(b"{not json"),
                ..Default::default()
            };
            machine.apply(None, &[entry(9, 9, stale), junk]);
            assert_eq!(machine.image().brokers, before.brokers);
            assert_eq!(machine.applied_index(), 10);
        });
    }

    #[test]
    fn snapshots_are_offered_and_replace_the_image() {
        run(|| async {
            let machine = ReplicatedMetadata::open(1, MetadataImage::empty(), 0);
            let mut offered = None;
            for i in 0..limits::QUORUM_SNAPSHOT_ENTRIES {
                let request = ControllerRequest::AllocateProducerIds { count: 10 };
                if let Some(snapshot) = machine.apply(None, &[entry(i + 1, 9, request)]) {
                    offered = Some(snapshot);
                }
            }
            let (index, bytes) = offered.expect("a snapshot after QUORUM_SNAPSHOT_ENTRIES");
            assert_eq!(index, limits::QUORUM_SNAPSHOT_ENTRIES);
            let mut snapshot = Snapshot {
                data: bytes,
                ..Default::default()
            };
            snapshot.mut_metadata().index = index;
            let other = ReplicatedMetadata::open(2, MetadataImage::empty(), 0);
            other.apply(Some(&snapshot), &[]);
            assert_eq!(*other.image(), *machine.image());
            assert_eq!(other.applied_index(), index);
            assert_eq!(other.image().next_producer_id, 10 * index as i64);
        });
    }
}
