//! The classic group coordinator: membership, rebalances and committed offsets of the groups
//! whose `__consumer_offsets` partition this shard owns.
//!
//! Owner: one `GroupCoordinator` per shard, in its `ShardContext`; it only ever serves groups
//! that hash to a `__consumer_offsets` partition this shard owns and, under a quorum, this
//! broker leads (others get NOT_COORDINATOR). A partition is in memory at the leader epoch it
//! was loaded at: when this broker stops leading it there, its groups are unloaded
//! (`follow_leadership` after each image, and any request for it), and a new epoch replays
//! it. Writes go through `broker::coordinator_log`: only at the loaded epoch, acknowledged
//! once the ISR holds them (`offsets.commit.timeout.ms`).
//! All state is in `RefCell`s, borrowed only between `.await`s.
//!
//! The protocol is Kafka's classic one. States: Empty, PreparingRebalance, CompletingRebalance,
//! Stable, Dead. A join moves the group to PreparingRebalance; the join completes when every
//! member has rejoined (and no member id handed out with MEMBER_ID_REQUIRED is still
//! outstanding), or when the rebalance timer fires (the largest rebalance timeout of the
//! members; for a group that was Empty, `group.initial.rebalance.delay.ms` instead, extended by
//! the same step while new members keep arriving, up to the rebalance timeout), dropping
//! members that did not rejoin. Completion bumps the generation, selects the protocol that
//! every member supports and most members prefer, and answers every waiting JoinGroup; the
//! leader gets the member list. The leader's SyncGroup carries the assignment; the group turns
//! Stable, its metadata is written to the log, and every waiting SyncGroup is answered.
//!
//! Timers: every member has one session timer task (a glommio sleep until its deadline, which
//! heartbeats, joins, syncs and commits push forward; when it wakes early it sleeps again for the
//! remainder, so there is no polling). A member whose deadline passes is removed, which starts a
//! rebalance. Rebalance timers carry the rebalance's epoch and do nothing if the group has moved
//! on.
//!
//! Static membership (`group.instance.id`): a rejoin of a known instance with an empty member id
//! takes over the old member (new member id; the old id is fenced with FENCED_INSTANCE_ID) and,
//! when the group is Stable, gets the current generation back without a rebalance.
//!
//! Offsets: commits from members are checked against the generation; commits with generation -1
//! and no member id are accepted for Empty groups (simple consumers using `assign()`), creating
//! the group if needed. A commit is acknowledged only after its records are durable.
//!
//! Expiry (Kafka's KIP-211): every `offsets.retention.check.interval.ms` the shard's expiry
//! task (`expire_offsets`, started by `pool`) removes the offsets that have expired
//! (`expired_offsets` says which) with tombstones, and removes groups that are Empty with no
//! offsets left (Dead, with a group tombstone). When a group entered its state is kept
//! (`state_timestamp_ms`, stored in the group record) because an Empty group's offsets expire
//! that long after it emptied. Partitions with a commit being written are left alone.
//!
//! Placement: a group's partition is `abs(hashCode) % n` over the partition count of
//! `__consumer_offsets` (the topic's own once it exists, else `offsets.topic.num.partitions`).
//!
//! Files: this one holds the group model, dispatch (`serve`), loading a partition's groups and
//! writing records, and the group-wide calls (list, describe, delete); `membership` holds
//! join, sync, heartbeat, leave and the timers; `offsets` holds commits, fetches, deletes and
//! expiry.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use futures::channel::oneshot;
use glommio::sync::Semaphore;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, GroupId, JoinGroupRequest, JoinGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, SyncGroupRequest, SyncGroupResponse,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::broker::{ShardContext, coordinator_log};
use crate::group::records::{
    self, GroupValue, OffsetValue, OffsetsRecord, ScanEvent, StoredMember,
};
use crate::group::{
    FetchedOffset, GroupCall, GroupReply, ListedGroupInfo, OFFSETS_TOPIC, PartitionErrors,
    TopicPartitions,
};
use crate::limits;
use crate::runtime::ownership::consumer_offsets_partition;
use crate::runtime::shard_for;

mod membership;
mod offsets;

use membership::{heartbeat, join, leave, sync};
pub use offsets::{ExpiryOutcome, expire_offsets};
use offsets::{commit, delete_offsets, fetch_offsets, txn_commit};

const NONE: i16 = 0;

fn code(err: ResponseError) -> i16 {
    err.code()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The settings of the coordinator, read from the broker config.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i32,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when it is created.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `offsets.commit.timeout.ms`: how long a write to `__consumer_offsets` waits for its ISR.
    pub offsets_commit_timeout_ms: u64,
}

impl GroupSettings {
    fn from_config(config: &crate::config::Config) -> GroupSettings {
        GroupSettings {
            min_session_timeout_ms: config.int("group.min.session.timeout.ms", 6000) as i32,
            max_session_timeout_ms: config.int("group.max.session.timeout.ms", 1_800_000) as i32,
            initial_rebalance_delay_ms: config.int("group.initial.rebalance.delay.ms", 3000) as i32,
            offset_metadata_max_bytes: config.int("offset.metadata.max.bytes", 4096) as usize,
            offsets_topic_num_partitions: config.int(
                "offsets.topic.num.partitions",
                i64::from(crate::runtime::ownership::CONSUMER_OFFSETS_PARTITIONS_DEFAULT),
            ) as i32,
            offsets_retention_ms: config
                .int("offsets.retention.minutes", 10080)
                .saturating_mul(60_000),
            offsets_retention_check_interval_ms: config
                .int("offsets.retention.check.interval.ms", 600_000)
                .max(1) as u64,
            offsets_commit_timeout_ms: config.int("offsets.commit.timeout.ms", 5000).max(1) as u64,
        }
    }
}

/// Kafka's group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (possibly committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Members have their assignment.
    Stable,
    /// Being deleted.
    Dead,
}

impl GroupState {
    /// The name Kafka's tools print.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    /// The member's address as Kafka prints it (`/127.0.0.1`).
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: Option<oneshot::Sender<JoinGroupResponse>>,
    awaiting_sync: Option<oneshot::Sender<SyncGroupResponse>>,
    deadline: Instant,
    /// The join version, for the response fields that depend on it.
    join_version: i16,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

/// One producer's transactional offset commits of one group, not yet decided.
#[derive(Debug, Default)]
struct PendingTxnOffsets {
    /// The producer's epoch when it last committed.
    producer_epoch: i16,
    offsets: BTreeMap<(String, i32), OffsetValue>,
}

#[derive(Debug)]
struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// Members by id, in join order.
    members: BTreeMap<u64, Member>,
    next_member_seq: u64,
    /// instance id -> member id of static members.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined, with their deadline.
    pending_members: HashMap<String, Instant>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Offsets committed inside open transactions (TxnOffsetCommit), by producer id: they
    /// become committed offsets when the producer's commit marker reaches the group's
    /// partition, and are dropped on its abort marker.
    pending_txn: BTreeMap<i64, PendingTxnOffsets>,
    rebalance_epoch: u64,
    /// The initial rebalance delay of a group that was Empty is running.
    initial_delay: bool,
    /// A member joined while the initial delay ran (Kafka then extends the delay).
    new_member_added: bool,
    /// The initial delay never extends past this (the largest rebalance timeout).
    initial_deadline: Option<Instant>,
    /// When the group entered its current state (ms since the epoch; Kafka's
    /// `currentStateTimestamp`). Offsets of an Empty group expire this long after it emptied.
    state_timestamp_ms: Option<i64>,
    /// Partitions with an offset commit being written, and how many: expiry leaves them alone,
    /// and a group with commits in flight is never removed.
    pending_commits: HashMap<(String, i32), u32>,
}

impl Group {
    fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            next_member_seq: 0,
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            offsets: BTreeMap::new(),
            pending_txn: BTreeMap::new(),
            rebalance_epoch: 0,
            initial_delay: false,
            new_member_added: false,
            initial_deadline: None,
            state_timestamp_ms: Some(now_ms()),
            pending_commits: HashMap::new(),
        }
    }

    /// Moves to `state` and remembers when.
    fn transition(&mut self, state: GroupState) {
        self.state = state;
        self.state_timestamp_ms = Some(now_ms());
    }

    fn seq_of(&self, member_id: &str) -> Option<u64> {
        self.members
            .iter()
            .find(|(_, m)| m.id == member_id)
            .map(|(seq, _)| *seq)
    }

    fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.values().find(|m| m.id == member_id)
    }

    fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.values_mut().find(|m| m.id == member_id)
    }

    /// A static member whose instance is now held by a different member id.
    fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        match instance_id.and_then(|i| self.static_members.get(i)) {
            Some(current) => current != member_id,
            None => false,
        }
    }

    /// Protocols every member supports.
    fn candidates(&self) -> Option<HashSet<String>> {
        let mut iter = self.members.values();
        let first = iter.next()?;
        let mut set: HashSet<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in iter {
            set.retain(|p| m.protocols.iter().any(|(n, _)| n == p));
        }
        Some(set)
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidates().unwrap_or_default();
        protocols.iter().any(|(n, _)| candidates.contains(n))
    }

    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates()?;
        let mut votes: BTreeMap<String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(name.clone()).or_default() += 1;
            }
        }
        // Most votes; ties go to the first member's preference order.
        let first = self.members.values().next()?;
        let best = votes.values().copied().max()?;
        first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .find(|n| votes.get(*n) == Some(&best))
            .cloned()
    }

    /// Whether an open transaction holds an offset for `(topic, partition)`.
    fn has_pending_txn_offset(&self, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.pending_txn
            .values()
            .any(|p| p.offsets.contains_key(&key))
    }

    /// Ends `producer_id`'s transaction for this group: its offsets become committed offsets
    /// (`commit`) or are dropped.
    fn complete_txn(&mut self, producer_id: i64, commit: bool) -> bool {
        let Some(pending) = self.pending_txn.remove(&producer_id) else {
            return false;
        };
        if commit {
            self.offsets.extend(pending.offsets);
        }
        true
    }

    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn stored_value(&self) -> GroupValue {
        let protocol = self.protocol.clone();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp_ms.unwrap_or(-1),
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct GroupCoordinator {
    settings: GroupSettings,
    groups: RefCell<HashMap<String, Group>>,
    /// The `__consumer_offsets` partitions in memory, with the leader epoch they were loaded
    /// at (0 on a lone node).
    loaded: RefCell<HashMap<i32, i32>>,
    load_permit: Semaphore,
    member_ids: Cell<u64>,
}

type Ctx = Rc<ShardContext>;

impl GroupCoordinator {
    /// A coordinator with no groups loaded.
    pub fn new(config: &crate::config::Config) -> GroupCoordinator {
        GroupCoordinator {
            settings: GroupSettings::from_config(config),
            groups: RefCell::new(HashMap::new()),
            loaded: RefCell::new(HashMap::new()),
            load_permit: Semaphore::new(1),
            member_ids: Cell::new(0),
        }
    }

    /// Number of groups held in memory (tests and bounds).
    pub fn group_count(&self) -> usize {
        self.groups.borrow().len()
    }

    /// The settings read from the broker config.
    pub fn settings(&self) -> GroupSettings {
        self.settings
    }
}

/// The partition count of `__consumer_offsets`: the topic's own once it exists (from then on it
/// is fixed, as in Kafka, whatever `offsets.topic.num.partitions` says later), else the
/// configured count it will be created with.
pub fn offsets_partition_count(context: &ShardContext) -> i32 {
    context
        .image()
        .topic(OFFSETS_TOPIC)
        .map(|meta| meta.partitions)
        .filter(|&n| n > 0)
        .unwrap_or(context.groups.settings.offsets_topic_num_partitions)
}

/// The `__consumer_offsets` partition of `group_id`.
pub fn group_partition(context: &ShardContext, group_id: &str) -> i32 {
    consumer_offsets_partition(group_id, offsets_partition_count(context))
}

/// Serves one call on the coordinator shard.
pub async fn serve(context: &Ctx, call: GroupCall) -> GroupReply {
    match call {
        GroupCall::Join {
            version,
            client_id,
            client_host,
            request,
        } => GroupReply::Join(join(context, version, client_id, client_host, *request).await),
        GroupCall::Sync { version, request } => {
            GroupReply::Sync(sync(context, version, request).await)
        }
        GroupCall::Heartbeat {
            group_id,
            generation,
            member_id,
            instance_id,
        } => GroupReply::Heartbeat(
            heartbeat(
                context,
                &group_id,
                generation,
                &member_id,
                instance_id.as_deref(),
            )
            .await,
        ),
        GroupCall::Leave { group_id, members } => {
            let (top, each) = leave(context, &group_id, &members).await;
            GroupReply::Leave(top, each)
        }
        GroupCall::Commit { version, request } => {
            GroupReply::Commit(commit(context, version, request).await)
        }
        GroupCall::FetchOffsets {
            group_id,
            topics,
            require_stable,
        } => GroupReply::FetchOffsets(
            fetch_offsets(context, &group_id, topics, require_stable).await,
        ),
        GroupCall::TxnCommit { version, request } => {
            GroupReply::TxnCommit(txn_commit(context, version, request).await)
        }
        GroupCall::List => GroupReply::List(list(context).await),
        GroupCall::Describe { group_ids } => {
            let mut out = Vec::new();
            for id in group_ids {
                out.push(describe(context, &id).await);
            }
            GroupReply::Describe(out)
        }
        GroupCall::Delete { group_ids } => {
            let mut out = Vec::new();
            for id in group_ids {
                out.push(delete_group(context, &id).await);
            }
            GroupReply::Delete(out)
        }
        GroupCall::DeleteOffsets { group_id, topics } => {
            GroupReply::DeleteOffsets(delete_offsets(context, &group_id, topics).await)
        }
    }
}

/// Checks that this shard coordinates `group_id` and that its partition is loaded.
async fn prepare(context: &Ctx, group_id: &str) -> Result<i32, i16> {
    let partition = group_partition(context, group_id);
    if shard_for(OFFSETS_TOPIC, partition, context.shard_count) != context.id {
        return Err(code(ResponseError::NotCoordinator));
    }
    ensure_loaded(context, partition).await?;
    Ok(partition)
}

/// Applies a transaction marker just appended to partition `partition` of
/// `__consumer_offsets`: the offsets `producer_id` committed inside the transaction, for every
/// group of that partition, become committed offsets (`commit`) or are dropped. Called on the
/// partition's owner shard after the control batch is durable. A partition not loaded yet is
/// loaded first; its replay then reads the marker itself, and applying it again finds nothing
/// left to do.
pub async fn complete_transaction(context: &Ctx, partition: i32, producer_id: i64, commit: bool) {
    if let Err(code) = ensure_loaded(context, partition).await {
        warn!(
            partition,
            producer_id, code, "cannot load __consumer_offsets to apply a transaction marker"
        );
        return;
    }
    let mut groups = context.groups.groups.borrow_mut();
    for (id, group) in groups.iter_mut() {
        if group_partition(context, id) == partition && group.complete_txn(producer_id, commit) {
            debug!(group = %id, producer_id, commit, "transactional offsets completed");
        }
    }
}

/// Replays partition `partition` of `__consumer_offsets` into memory.
async fn load_partition(context: &Ctx, partition: i32) -> Result<(), i16> {
    let image = context.image();
    let open = context
        .partitions
        .get(&image, OFFSETS_TOPIC, partition)
        .await
        .map_err(|err| {
            warn!(partition, %err, "cannot open __consumer_offsets partition");
            code(ResponseError::CoordinatorNotAvailable)
        })?;
    let log = &open.log;
    // Up to the durable end, as Kafka loads to the log end: a new leader's whole log is
    // committed (followers truncate to it), even before its high watermark has caught up.
    let end = log.durable_end();
    let mut offset = log.log_start_offset();
    let mut scan = records::Scan::default();
    while offset < end {
        let slice = log.read_replica(offset, 1 << 20).await.map_err(|err| {
            warn!(partition, offset, %err, "cannot read __consumer_offsets");
            code(ResponseError::CoordinatorLoadInProgress)
        })?;
        if slice.is_empty() {
            break;
        }
        scan.next_offset = None;
        records::scan_batches(&slice.to_vec(), &mut scan);
        match scan.next_offset {
            Some(next) if next > offset => offset = next,
            _ => break,
        }
    }
    let count = scan.events.len();
    let mut groups = context.groups.groups.borrow_mut();
    for event in scan.events {
        let (record, transaction) = match event {
            ScanEvent::Record(record) => (record, None),
            ScanEvent::Transactional {
                producer_id,
                producer_epoch,
                record,
            } => (record, Some((producer_id, producer_epoch))),
            ScanEvent::Marker {
                producer_id,
                commit,
            } => {
                for (id, group) in groups.iter_mut() {
                    if group_partition(context, id) == partition {
                        group.complete_txn(producer_id, commit);
                    }
                }
                continue;
            }
        };
        match record {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => match (value, transaction) {
                (Some(v), Some((producer_id, producer_epoch))) => {
                    let pending = groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group))
                        .pending_txn
                        .entry(producer_id)
                        .or_default();
                    pending.producer_epoch = producer_epoch;
                    pending.offsets.insert((topic, partition), v);
                }
                (Some(v), None) => {
                    groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group))
                        .offsets
                        .insert((topic, partition), v);
                }
                (None, _) => {
                    if let Some(g) = groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            OffsetsRecord::Group { group, value } => match value {
                Some(v) => {
                    let g = groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group));
                    // Members are not restored: they rejoin (their ids are unknown after a
                    // restart, so their next request gets UNKNOWN_MEMBER_ID and they join again).
                    g.generation = v.generation;
                    g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
                    g.protocol = None;
                    g.leader = None;
                    g.state = GroupState::Empty;
                    // A group stored with members becomes Empty now (its members must rejoin);
                    // one stored Empty has been so since its recorded time.
                    g.state_timestamp_ms = if !v.members.is_empty() {
                        Some(now_ms())
                    } else {
                        (v.state_timestamp >= 0).then_some(v.state_timestamp)
                    };
                }
                None => {
                    groups.remove(&group);
                }
            },
        }
    }
    // Groups left with nothing to remember are dropped.
    groups.retain(|id, g| {
        group_partition(context, id) != partition
            || !g.offsets.is_empty()
            || !g.pending_txn.is_empty()
            || g.protocol_type.is_some()
            || !g.members.is_empty()
    });
    info!(
        partition,
        records = count,
        skipped = scan.skipped,
        "loaded __consumer_offsets partition"
    );
    Ok(())
}

/// Appends `records` to the group's partition and waits until they are durable.
async fn write(
    context: &Ctx,
    partition: i32,
    batch: Vec<(Bytes, Option<Bytes>)>,
) -> Result<(), i16> {
    write_as(context, partition, batch, None).await
}

/// `write`, as part of the transaction of `(producer_id, producer_epoch)` when given.
async fn write_as(
    context: &Ctx,
    partition: i32,
    batch: Vec<(Bytes, Option<Bytes>)>,
    transaction: Option<(i64, i16)>,
) -> Result<(), i16> {
    if batch.is_empty() {
        return Ok(());
    }
    // Only at the epoch the partition is in memory at: what was loaded is what is written on.
    let Some(epoch) = context.groups.loaded.borrow().get(&partition).copied() else {
        return Err(code(ResponseError::NotCoordinator));
    };
    let bytes = records::build_batch_as(&batch, now_ms(), transaction);
    let timeout = Duration::from_millis(context.groups.settings.offsets_commit_timeout_ms);
    match coordinator_log::append(context, OFFSETS_TOPIC, partition, epoch, bytes, timeout).await {
        Ok(_) => Ok(()),
        // Kafka's mapping (offsets.commit.required.acks=-1): a lost leadership is
        // NOT_COORDINATOR, too few replicas or no acknowledgement in time
        // COORDINATOR_NOT_AVAILABLE; the client retries either.
        Err(err) if err.lost_leadership() => {
            debug!(partition, %err, "__consumer_offsets write refused");
            Err(code(ResponseError::NotCoordinator))
        }
        Err(err) => {
            warn!(partition, %err, "__consumer_offsets write not acknowledged");
            Err(code(ResponseError::CoordinatorNotAvailable))
        }
    }
}

fn group_record(group: &Group) -> (Bytes, Option<Bytes>) {
    (
        records::group_key(&group.id),
        Some(records::group_value(&group.stored_value())),
    )
}

/// Writes the group's metadata in the background (state changes that need no acknowledgement).
fn persist_in_background(context: &Ctx, partition: i32, record: (Bytes, Option<Bytes>)) {
    let ctx = context.clone();
    let spawned = glommio::spawn_local_into(
        async move {
            if let Err(code) = write(&ctx, partition, vec![record]).await {
                warn!(partition, code, "group metadata not written");
            }
        },
        context.queues.requests,
    );
    if let Ok(task) = spawned {
        task.detach();
    }
}

async fn list(context: &Ctx) -> Vec<ListedGroupInfo> {
    // Load every partition this shard coordinates, so groups known only from the log show.
    for p in owned_offsets_partitions(context) {
        let _ = ensure_loaded(context, p).await;
    }
    let groups = context.groups.groups.borrow();
    groups
        .values()
        .filter(|g| g.state != GroupState::Dead)
        .map(|g| ListedGroupInfo {
            group_id: g.id.clone(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            state: g.state.name(),
        })
        .collect()
}

async fn describe(context: &Ctx, group_id: &str) -> DescribedGroup {
    let base = crate::msg!(DescribedGroup {
        group_id: GroupId(text(group_id)),
        authorized_operations: i32::MIN
    });
    if let Err(e) = prepare(context, group_id).await {
        let mut failed = base;
        failed.error_code = e;
        return failed;
    }
    let groups = context.groups.groups.borrow();
    let Some(group) = groups.get(group_id) else {
        let mut dead = base;
        dead.group_state = text("Dead");
        return dead;
    };
    let stable = group.state == GroupState::Stable;
    let protocol = group.protocol.clone().unwrap_or_default();
    let mut described = base;
    described.group_state = text(group.state.name());
    crate::msg!(DescribedGroup {
        group_id: described.group_id,
        authorized_operations: described.authorized_operations,
        group_state: described.group_state,
        protocol_type: text(group.protocol_type.as_deref().unwrap_or_default()),
        protocol_data: text(if stable { &protocol } else { "" }),
        members: group
            .members
            .values()
            .map(|m| crate::msg!(DescribedGroupMember {
                member_id: text(&m.id),
                group_instance_id: m.instance_id.as_deref().map(text),
                client_id: text(&m.client_id),
                client_host: text(&m.client_host),
                member_metadata: if stable {
                    m.metadata_for(&protocol)
                } else {
                    Bytes::new()
                },
                member_assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                }
            }))
            .collect()
    })
}

async fn delete_group(context: &Ctx, group_id: &str) -> i16 {
    let partition = match prepare(context, group_id).await {
        Ok(p) => p,
        Err(e) => return e,
    };
    let batch = {
        let mut groups = context.groups.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return code(ResponseError::GroupIdNotFound);
        };
        match group.state {
            GroupState::Empty => {}
            GroupState::Dead => return code(ResponseError::GroupIdNotFound),
            _ => return code(ResponseError::NonEmptyGroup),
        }
        let emptied_at = group.state_timestamp_ms;
        group.transition(GroupState::Dead);
        let mut batch: Vec<(Bytes, Option<Bytes>)> = group
            .offsets
            .keys()
            .map(|(t, p)| (records::offset_key(group_id, t, *p), None))
            .collect();
        batch.push((records::group_key(group_id), None));
        (batch, emptied_at)
    };
    let (batch, emptied_at) = batch;
    let result = write(context, partition, batch).await;
    let mut groups = context.groups.groups.borrow_mut();
    match result {
        Ok(()) => {
            groups.remove(group_id);
            info!(group = %group_id, "group deleted");
            NONE
        }
        Err(e) => {
            if let Some(g) = groups.get_mut(group_id) {
                g.state = GroupState::Empty;
                g.state_timestamp_ms = emptied_at;
            }
            e
        }
    }
}

/// The `__consumer_offsets` partitions this shard owns (none before the topic exists).
fn owned_offsets_partitions(context: &Ctx) -> Vec<i32> {
    if context.image().topic(OFFSETS_TOPIC).is_none() {
        return Vec::new();
    }
    (0..offsets_partition_count(context))
        .filter(|&p| shard_for(OFFSETS_TOPIC, p, context.shard_count) == context.id)
        .collect()
}

/// Replays partition `partition` of `__consumer_offsets` unless it is already in memory at
/// the leader epoch this broker leads it at. Kafka's onElection and onResignation, done when
/// the partition is needed (and, for resignations, by `follow_leadership` when the image
/// changes): a partition this broker does not lead is unloaded and answers NOT_COORDINATOR; one
/// led at another epoch than it was loaded at is unloaded and replayed (as a follower meanwhile
/// this broker appended records it has not seen).
async fn ensure_loaded(context: &Ctx, partition: i32) -> Result<(), i16> {
    let leading = || coordinator_log::led_epoch(context, OFFSETS_TOPIC, partition);
    let Some(epoch) = leading() else {
        unload_partition(context, partition);
        return Err(code(ResponseError::NotCoordinator));
    };
    if context.groups.loaded.borrow().get(&partition) == Some(&epoch) {
        return Ok(());
    }
    let _permit = context
        .groups
        .load_permit
        .acquire_permit(1)
        .await
        .map_err(|_| code(ResponseError::CoordinatorNotAvailable))?;
    let Some(epoch) = leading() else {
        unload_partition(context, partition);
        return Err(code(ResponseError::NotCoordinator));
    };
    match context.groups.loaded.borrow().get(&partition) {
        Some(&loaded) if loaded == epoch => return Ok(()),
        _ => {}
    }
    unload_partition(context, partition);
    let loaded = load_partition(context, partition).await;
    if let Err(e) = loaded {
        unload_partition(context, partition);
        return Err(e);
    }
    // Leadership may have moved while the log was read.
    if leading() != Some(epoch) {
        unload_partition(context, partition);
        return Err(code(ResponseError::NotCoordinator));
    }
    context.groups.loaded.borrow_mut().insert(partition, epoch);
    Ok(())
}

/// Drops partition `partition`'s groups from memory (Kafka's onResignation): members waiting
/// for a join or sync answer get NOT_COORDINATOR and find the new coordinator.
fn unload_partition(context: &Ctx, partition: i32) {
    let was_loaded = context
        .groups
        .loaded
        .borrow_mut()
        .remove(&partition)
        .is_some();
    let mut groups = context.groups.groups.borrow_mut();
    let ids: Vec<String> = groups
        .keys()
        .filter(|id| group_partition(context, id) == partition)
        .cloned()
        .collect();
    if !was_loaded && ids.is_empty() {
        return;
    }
    for id in &ids {
        if let Some(mut group) = groups.remove(id) {
            for member in group.members.values_mut() {
                if let Some(tx) = member.awaiting_join.take() {
                    let _ = tx.send(membership::join_error(
                        &member.id,
                        code(ResponseError::NotCoordinator),
                    ));
                }
                if let Some(tx) = member.awaiting_sync.take() {
                    let _ = tx.send(membership::sync_error(code(ResponseError::NotCoordinator)));
                }
            }
        }
    }
    info!(
        partition,
        groups = ids.len(),
        "unloaded __consumer_offsets partition"
    );
}

/// Unloads, on this shard, every `__consumer_offsets` partition in memory that this broker no
/// longer leads at the epoch it was loaded at. Called after the shard's replicas took the
/// roles of a new metadata image; loading again is left to the next request.
pub fn follow_leadership(context: &Ctx) {
    let stale: Vec<i32> = context
        .groups
        .loaded
        .borrow()
        .iter()
        .filter(|&(&p, &epoch)| {
            coordinator_log::led_epoch(context, OFFSETS_TOPIC, p) != Some(epoch)
        })
        .map(|(&p, _)| p)
        .collect();
    for partition in stale {
        unload_partition(context, partition);
    }
}
