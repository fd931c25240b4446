//! The classic group coordinator: membership, rebalances and committed offsets of the groups
//! whose `__consumer_offsets` partition this shard owns.
//!
//! Owner: one `GroupCoordinator` per shard, in its `ShardContext`; it only ever serves groups
//! that hash to a `__consumer_offsets` partition this shard owns (others get NOT_COORDINATOR).
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

use crate::broker::ShardContext;
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
    loaded: RefCell<HashSet<i32>>,
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
            loaded: RefCell::new(HashSet::new()),
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
    let end = log.high_watermark();
    let mut offset = log.log_start_offset();
    let mut scan = records::Scan::default();
    while offset < end {
        let slice = log.read(offset, 1 << 20).await.map_err(|err| {
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
    let image = context.image();
    let open = context
        .partitions
        .get(&image, OFFSETS_TOPIC, partition)
        .await
        .map_err(|err| {
            warn!(partition, %err, "cannot open __consumer_offsets partition");
            code(ResponseError::CoordinatorNotAvailable)
        })?;
    let bytes = records::build_batch_as(&batch, now_ms(), transaction);
    open.log.append(bytes).await.map(|_| ()).map_err(|err| {
        warn!(partition, %err, "__consumer_offsets append failed");
        code(ResponseError::CoordinatorNotAvailable)
    })
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

fn join_error(member_id: &str, error: i16) -> JoinGroupResponse {
    crate::msg!(JoinGroupResponse {
        error_code: error,
        generation_id: -1,
        member_id: text(member_id),
        protocol_name: Some(StrBytes::default())
    })
}

fn join_answer(group: &Group, member: &Member, with_members: bool) -> JoinGroupResponse {
    let protocol = group.protocol.clone().unwrap_or_default();
    let members = if with_members {
        group
            .members
            .values()
            .map(|m| {
                crate::msg!(JoinGroupResponseMember {
                    member_id: text(&m.id),
                    group_instance_id: m.instance_id.as_deref().map(text),
                    metadata: m.metadata_for(&protocol)
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    crate::msg!(JoinGroupResponse {
        error_code: NONE,
        generation_id: group.generation,
        protocol_type: group.protocol_type.as_deref().map(text),
        protocol_name: Some(text(&protocol)),
        leader: text(group.leader.as_deref().unwrap_or_default()),
        member_id: text(&member.id),
        members
    })
}

fn sync_error(error: i16) -> SyncGroupResponse {
    crate::msg!(SyncGroupResponse { error_code: error })
}

async fn join(
    context: &Ctx,
    version: i16,
    client_id: String,
    client_host: String,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    if group_id.is_empty() {
        return join_error(&member_id, code(ResponseError::InvalidGroupId));
    }
    let settings = context.groups.settings;
    if request.session_timeout_ms < settings.min_session_timeout_ms
        || request.session_timeout_ms > settings.max_session_timeout_ms
    {
        return join_error(&member_id, code(ResponseError::InvalidSessionTimeout));
    }
    let partition = match prepare(context, &group_id).await {
        Ok(p) => p,
        Err(e) => return join_error(&member_id, e),
    };
    let rebalance_timeout_ms = if request.rebalance_timeout_ms > 0 {
        request.rebalance_timeout_ms
    } else {
        request.session_timeout_ms
    };
    let protocol_type = request.protocol_type.to_string();
    let protocols: Vec<(String, Bytes)> = request
        .protocols
        .iter()
        .map(|p| (p.name.to_string(), p.metadata.clone()))
        .collect();
    let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());

    let receiver = {
        let mut groups = context.groups.groups.borrow_mut();
        if !groups.contains_key(&group_id) {
            if !member_id.is_empty() {
                return join_error(&member_id, code(ResponseError::UnknownMemberId));
            }
            if groups.len() >= limits::GROUPS_PER_SHARD_MAX {
                return join_error(&member_id, code(ResponseError::CoordinatorNotAvailable));
            }
            groups.insert(group_id.clone(), Group::new(&group_id));
        }
        let group = groups.get_mut(&group_id).expect("inserted above");
        if group.state == GroupState::Dead {
            return join_error(&member_id, code(ResponseError::CoordinatorNotAvailable));
        }
        if !group.supports(&protocol_type, &protocols) {
            return join_error(&member_id, code(ResponseError::InconsistentGroupProtocol));
        }
        let deadline = Instant::now() + Duration::from_millis(request.session_timeout_ms as u64);
        let (tx, rx) = oneshot::channel();
        if member_id.is_empty() {
            let new_id = new_member_id(context, &client_id, instance_id.as_deref());
            let static_old = instance_id
                .as_ref()
                .and_then(|i| group.static_members.get(i).cloned());
            if let Some(old_id) = static_old {
                // A static member comes back: it takes over its old membership.
                let Some(member) = group.member_mut(&old_id) else {
                    return join_error(&member_id, code(ResponseError::UnknownMemberId));
                };
                if let Some(waiting) = member.awaiting_join.take() {
                    let _ =
                        waiting.send(join_error(&old_id, code(ResponseError::FencedInstanceId)));
                }
                if let Some(waiting) = member.awaiting_sync.take() {
                    let _ = waiting.send(sync_error(code(ResponseError::FencedInstanceId)));
                }
                let unchanged = member.same_protocols(&protocols);
                member.id = new_id.clone();
                member.client_id = client_id.clone();
                member.client_host = client_host.clone();
                member.session_timeout_ms = request.session_timeout_ms;
                member.rebalance_timeout_ms = rebalance_timeout_ms;
                member.protocols = protocols.clone();
                member.deadline = deadline;
                member.join_version = version;
                if group.leader.as_deref() == Some(old_id.as_str()) {
                    group.leader = Some(new_id.clone());
                }
                group
                    .static_members
                    .insert(instance_id.clone().unwrap_or_default(), new_id.clone());
                start_session_timer(context, &group_id, &new_id);
                if group.state == GroupState::Stable && unchanged {
                    let member = group.member(&new_id).expect("just renamed");
                    let is_leader = group.leader.as_deref() == Some(new_id.as_str());
                    let mut answer = join_answer(group, member, is_leader);
                    answer.skip_assignment = is_leader && version >= 9;
                    persist_in_background(context, partition, group_record(group));
                    return answer;
                }
                let member = group.member_mut(&new_id).expect("just renamed");
                member.awaiting_join = Some(tx);
                if group.state != GroupState::PreparingRebalance {
                    prepare_rebalance(context, group);
                }
                maybe_complete_join(context, group, partition);
                rx
            } else if version >= 4 && instance_id.is_none() {
                if group.pending_members.len() + group.members.len() >= limits::GROUP_MEMBERS_MAX {
                    return join_error(&member_id, code(ResponseError::GroupMaxSizeReached));
                }
                group.pending_members.insert(new_id.clone(), deadline);
                start_pending_timer(context, &group_id, &new_id, request.session_timeout_ms);
                return join_error(&new_id, code(ResponseError::MemberIdRequired));
            } else {
                if group.members.len() >= limits::GROUP_MEMBERS_MAX {
                    return join_error(&member_id, code(ResponseError::GroupMaxSizeReached));
                }
                add_member(
                    context,
                    group,
                    Member {
                        id: new_id,
                        instance_id: instance_id.clone(),
                        client_id,
                        client_host,
                        session_timeout_ms: request.session_timeout_ms,
                        rebalance_timeout_ms,
                        protocol_type,
                        protocols,
                        assignment: Bytes::new(),
                        awaiting_join: Some(tx),
                        awaiting_sync: None,
                        deadline,
                        join_version: version,
                    },
                );
                maybe_complete_join(context, group, partition);
                rx
            }
        } else if group.pending_members.remove(&member_id).is_some() {
            if group.members.len() >= limits::GROUP_MEMBERS_MAX {
                return join_error(&member_id, code(ResponseError::GroupMaxSizeReached));
            }
            add_member(
                context,
                group,
                Member {
                    id: member_id.clone(),
                    instance_id: instance_id.clone(),
                    client_id,
                    client_host,
                    session_timeout_ms: request.session_timeout_ms,
                    rebalance_timeout_ms,
                    protocol_type,
                    protocols,
                    assignment: Bytes::new(),
                    awaiting_join: Some(tx),
                    awaiting_sync: None,
                    deadline,
                    join_version: version,
                },
            );
            maybe_complete_join(context, group, partition);
            rx
        } else {
            if group.is_fenced(&member_id, instance_id.as_deref()) {
                return join_error(&member_id, code(ResponseError::FencedInstanceId));
            }
            let state = group.state;
            let is_leader = group.leader.as_deref() == Some(member_id.as_str());
            let Some(member) = group.member_mut(&member_id) else {
                return join_error(&member_id, code(ResponseError::UnknownMemberId));
            };
            let unchanged = member.same_protocols(&protocols);
            member.session_timeout_ms = request.session_timeout_ms;
            member.rebalance_timeout_ms = rebalance_timeout_ms;
            member.protocols = protocols;
            member.deadline = deadline;
            member.join_version = version;
            match state {
                GroupState::CompletingRebalance | GroupState::Stable
                    if unchanged && !(state == GroupState::Stable && is_leader) =>
                {
                    // The member did not see its join answer: give it again.
                    let member = group.member(&member_id).expect("present");
                    let with_members = is_leader;
                    return join_answer(group, member, with_members);
                }
                _ => {}
            }
            let member = group.member_mut(&member_id).expect("present");
            if let Some(old) = member.awaiting_join.replace(tx) {
                let _ = old.send(join_error(
                    &member_id,
                    code(ResponseError::RebalanceInProgress),
                ));
            }
            if group.state != GroupState::PreparingRebalance {
                prepare_rebalance(context, group);
            }
            maybe_complete_join(context, group, partition);
            rx
        }
    };
    match receiver.await {
        Ok(answer) => answer,
        Err(_) => join_error(&member_id, code(ResponseError::UnknownMemberId)),
    }
}

fn new_member_id(context: &Ctx, client_id: &str, instance_id: Option<&str>) -> String {
    let n = context.groups.member_ids.get();
    context.groups.member_ids.set(n + 1);
    let prefix = instance_id.unwrap_or(client_id);
    // Bounded: a 10 KB client id must not make 10 KB member ids.
    let prefix: String = prefix.chars().take(64).collect();
    format!("{prefix}-{}", Uuid::new_v4())
}

fn add_member(context: &Ctx, group: &mut Group, member: Member) {
    if group.members.is_empty() {
        group.protocol_type = Some(member.protocol_type.clone());
    }
    if let Some(instance) = &member.instance_id {
        group
            .static_members
            .insert(instance.clone(), member.id.clone());
    }
    let id = member.id.clone();
    let seq = group.next_member_seq;
    group.next_member_seq += 1;
    group.members.insert(seq, member);
    group.new_member_added = true;
    start_session_timer(context, &group.id, &id);
    if group.state != GroupState::PreparingRebalance {
        prepare_rebalance(context, group);
    }
}

fn prepare_rebalance(context: &Ctx, group: &mut Group) {
    if group.state == GroupState::CompletingRebalance {
        for m in group.members.values_mut() {
            if let Some(waiting) = m.awaiting_sync.take() {
                let _ = waiting.send(sync_error(code(ResponseError::RebalanceInProgress)));
            }
        }
    }
    let initial = group.state == GroupState::Empty;
    group.transition(GroupState::PreparingRebalance);
    group.rebalance_epoch += 1;
    let delay_ms = if initial {
        group.initial_delay = true;
        group.new_member_added = false;
        let max = group
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        group.initial_deadline = Some(Instant::now() + Duration::from_millis(max.max(0) as u64));
        context.groups.settings.initial_rebalance_delay_ms.min(max)
    } else {
        group.initial_delay = false;
        group
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    };
    debug!(group = %group.id, delay_ms, initial, "preparing rebalance");
    schedule_rebalance_timer(
        context,
        &group.id,
        group.rebalance_epoch,
        Duration::from_millis(delay_ms.max(0) as u64),
    );
}

fn schedule_rebalance_timer(context: &Ctx, group_id: &str, epoch: u64, delay: Duration) {
    let weak = Rc::downgrade(context);
    let group_id = group_id.to_string();
    let spawned = glommio::spawn_local_into(
        async move {
            glommio::timer::sleep(delay).await;
            rebalance_timer_fired(weak, group_id, epoch);
        },
        context.queues.requests,
    );
    if let Ok(task) = spawned {
        task.detach();
    }
}

fn rebalance_timer_fired(weak: Weak<ShardContext>, group_id: String, epoch: u64) {
    let Some(context) = weak.upgrade() else {
        return;
    };
    let partition = group_partition(&context, &group_id);
    let mut groups = context.groups.groups.borrow_mut();
    let Some(group) = groups.get_mut(&group_id) else {
        return;
    };
    if group.state != GroupState::PreparingRebalance || group.rebalance_epoch != epoch {
        return;
    }
    if group.initial_delay && group.new_member_added {
        // As Kafka: members still arriving extend the initial delay, up to the largest
        // rebalance timeout.
        let remaining = group
            .initial_deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        if !remaining.is_zero() {
            group.new_member_added = false;
            let step = Duration::from_millis(
                context.groups.settings.initial_rebalance_delay_ms.max(0) as u64,
            );
            schedule_rebalance_timer(&context, &group_id, epoch, step.min(remaining));
            return;
        }
    }
    group.initial_delay = false;
    complete_join(&context, group, partition);
}

fn maybe_complete_join(context: &Ctx, group: &mut Group, partition: i32) {
    if group.state == GroupState::PreparingRebalance && !group.initial_delay && group.all_joined() {
        complete_join(context, group, partition);
    }
}

fn complete_join(context: &Ctx, group: &mut Group, partition: i32) {
    // Members that did not rejoin in time are dropped.
    let gone: Vec<String> = group
        .members
        .values()
        .filter(|m| m.awaiting_join.is_none())
        .map(|m| m.id.clone())
        .collect();
    for id in gone {
        debug!(group = %group.id, member = %id, "member did not rejoin");
        drop_member(group, &id);
    }
    group.generation += 1;
    if group.members.is_empty() {
        group.transition(GroupState::Empty);
        group.protocol = None;
        group.leader = None;
        info!(group = %group.id, generation = group.generation, "group is empty");
        persist_in_background(context, partition, group_record(group));
        return;
    }
    group.protocol = group.select_protocol();
    if group
        .leader
        .as_ref()
        .is_none_or(|l| group.member(l).is_none())
    {
        group.leader = group.members.values().next().map(|m| m.id.clone());
    }
    group.transition(GroupState::CompletingRebalance);
    info!(
        group = %group.id,
        generation = group.generation,
        members = group.members.len(),
        protocol = ?group.protocol,
        "rebalance: join complete"
    );
    let now = Instant::now();
    let answers: Vec<(oneshot::Sender<JoinGroupResponse>, JoinGroupResponse)> = {
        let leader = group.leader.clone();
        let mut out = Vec::new();
        let ids: Vec<u64> = group.members.keys().copied().collect();
        for seq in ids {
            let member = &group.members[&seq];
            let is_leader = leader.as_deref() == Some(member.id.as_str());
            let answer = join_answer(group, member, is_leader);
            let member = group.members.get_mut(&seq).expect("listed");
            member.deadline = now + Duration::from_millis(member.session_timeout_ms as u64);
            if let Some(tx) = member.awaiting_join.take() {
                out.push((tx, answer));
            }
        }
        out
    };
    for (tx, answer) in answers {
        let _ = tx.send(answer);
    }
}

/// Removes a member without starting a rebalance; answers its waiting requests.
fn drop_member(group: &mut Group, member_id: &str) {
    let Some(seq) = group.seq_of(member_id) else {
        return;
    };
    let member = group.members.remove(&seq).expect("found");
    if let Some(instance) = &member.instance_id
        && group.static_members.get(instance).map(String::as_str) == Some(member_id)
    {
        group.static_members.remove(instance);
    }
    if let Some(tx) = member.awaiting_join {
        let _ = tx.send(join_error(member_id, code(ResponseError::UnknownMemberId)));
    }
    if let Some(tx) = member.awaiting_sync {
        let _ = tx.send(sync_error(code(ResponseError::UnknownMemberId)));
    }
}

/// Removes a member and moves the group on (rebalance, or complete a pending join).
fn remove_member(context: &Ctx, group: &mut Group, member_id: &str, partition: i32) {
    drop_member(group, member_id);
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(context, group);
            maybe_complete_join(context, group, partition);
        }
        GroupState::PreparingRebalance => {
            if group.members.is_empty() {
                group.initial_delay = false;
            }
            maybe_complete_join(context, group, partition);
        }
        GroupState::Empty | GroupState::Dead => {}
    }
}

fn start_session_timer(context: &Ctx, group_id: &str, member_id: &str) {
    let weak = Rc::downgrade(context);
    let group_id = group_id.to_string();
    let member_id = member_id.to_string();
    let spawned = glommio::spawn_local_into(
        async move {
            loop {
                let wait = {
                    let Some(context) = weak.upgrade() else {
                        return;
                    };
                    let mut groups = context.groups.groups.borrow_mut();
                    let Some(group) = groups.get_mut(&group_id) else {
                        return;
                    };
                    let Some(member) = group.member_mut(&member_id) else {
                        return;
                    };
                    let now = Instant::now();
                    if member.awaiting_join.is_some() {
                        // A member waiting for its join answer is bounded by the rebalance
                        // timer, not the session timer.
                        member.deadline =
                            now + Duration::from_millis(member.session_timeout_ms as u64);
                    }
                    if member.deadline > now {
                        member.deadline - now
                    } else {
                        info!(group = %group_id, member = %member_id, "session timeout: member removed");
                        let partition = group_partition(&context, &group_id);
                        remove_member(&context, group, &member_id, partition);
                        return;
                    }
                };
                glommio::timer::sleep(wait).await;
            }
        },
        context.queues.requests,
    );
    if let Ok(task) = spawned {
        task.detach();
    }
}

fn start_pending_timer(context: &Ctx, group_id: &str, member_id: &str, session_ms: i32) {
    let weak = Rc::downgrade(context);
    let group_id = group_id.to_string();
    let member_id = member_id.to_string();
    let spawned = glommio::spawn_local_into(
        async move {
            glommio::timer::sleep(Duration::from_millis(session_ms.max(0) as u64)).await;
            let Some(context) = weak.upgrade() else {
                return;
            };
            let mut groups = context.groups.groups.borrow_mut();
            let Some(group) = groups.get_mut(&group_id) else {
                return;
            };
            if group.pending_members.remove(&member_id).is_some() {
                debug!(group = %group_id, member = %member_id, "pending member expired");
                let partition = group_partition(&context, &group_id);
                maybe_complete_join(&context, group, partition);
            }
        },
        context.queues.requests,
    );
    if let Ok(task) = spawned {
        task.detach();
    }
}

async fn sync(context: &Ctx, version: i16, request: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
    let partition = match prepare(context, &group_id).await {
        Ok(p) => p,
        Err(e) => return sync_error(e),
    };
    let (receiver, to_write) = {
        let mut groups = context.groups.groups.borrow_mut();
        let Some(group) = groups.get_mut(&group_id) else {
            return sync_error(code(ResponseError::UnknownMemberId));
        };
        if group.state == GroupState::Dead {
            return sync_error(code(ResponseError::CoordinatorNotAvailable));
        }
        if group.is_fenced(&member_id, instance_id.as_deref()) {
            return sync_error(code(ResponseError::FencedInstanceId));
        }
        if group.member(&member_id).is_none() {
            return sync_error(code(ResponseError::UnknownMemberId));
        }
        if request.generation_id != group.generation {
            return sync_error(code(ResponseError::IllegalGeneration));
        }
        if let Some(pt) = &request.protocol_type
            && group.protocol_type.as_deref() != Some(pt.as_str())
        {
            return sync_error(code(ResponseError::InconsistentGroupProtocol));
        }
        if let Some(pn) = &request.protocol_name
            && group.protocol.as_deref() != Some(pn.as_str())
        {
            return sync_error(code(ResponseError::InconsistentGroupProtocol));
        }
        let timeout = {
            let member = group.member_mut(&member_id).expect("checked");
            member.session_timeout_ms
        };
        group.member_mut(&member_id).expect("checked").deadline =
            Instant::now() + Duration::from_millis(timeout as u64);
        match group.state {
            GroupState::Empty => return sync_error(code(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => {
                return sync_error(code(ResponseError::RebalanceInProgress));
            }
            GroupState::Stable => {
                let member = group.member(&member_id).expect("checked");
                return sync_answer(group, member, version);
            }
            GroupState::Dead => return sync_error(code(ResponseError::CoordinatorNotAvailable)),
            GroupState::CompletingRebalance => {}
        }
        let (tx, rx) = oneshot::channel();
        group.member_mut(&member_id).expect("checked").awaiting_sync = Some(tx);
        let mut to_write = None;
        if group.leader.as_deref() == Some(member_id.as_str()) {
            let assignments: HashMap<String, Bytes> = request
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect();
            for m in group.members.values_mut() {
                m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
            }
            group.transition(GroupState::Stable);
            info!(group = %group_id, generation = group.generation, "rebalance: group stable");
            to_write = Some((group.generation, group_record(group)));
        }
        (rx, to_write)
    };
    if let Some((generation, record)) = to_write {
        let result = write(context, partition, vec![record]).await;
        let mut groups = context.groups.groups.borrow_mut();
        if let Some(group) = groups.get_mut(&group_id)
            && group.generation == generation
            && group.state == GroupState::Stable
        {
            let answers: Vec<_> = group
                .members
                .values_mut()
                .filter_map(|m| m.awaiting_sync.take().map(|tx| (tx, m.id.clone())))
                .collect();
            for (tx, id) in answers {
                let answer = match result {
                    Ok(()) => {
                        let member = group.member(&id).expect("listed");
                        sync_answer(group, member, version)
                    }
                    Err(e) => sync_error(e),
                };
                let _ = tx.send(answer);
            }
            if result.is_err() {
                prepare_rebalance(context, group);
            }
        }
    }
    match receiver.await {
        Ok(answer) => answer,
        Err(_) => sync_error(code(ResponseError::RebalanceInProgress)),
    }
}

fn sync_answer(group: &Group, member: &Member, _version: i16) -> SyncGroupResponse {
    crate::msg!(SyncGroupResponse {
        error_code: NONE,
        protocol_type: group.protocol_type.as_deref().map(text),
        protocol_name: group.protocol.as_deref().map(text),
        assignment: member.assignment.clone()
    })
}

async fn heartbeat(
    context: &Ctx,
    group_id: &str,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
) -> i16 {
    if let Err(e) = prepare(context, group_id).await {
        return e;
    }
    let mut groups = context.groups.groups.borrow_mut();
    let Some(group) = groups.get_mut(group_id) else {
        return code(ResponseError::UnknownMemberId);
    };
    if group.state == GroupState::Dead {
        return code(ResponseError::CoordinatorNotAvailable);
    }
    if group.is_fenced(member_id, instance_id) {
        return code(ResponseError::FencedInstanceId);
    }
    let state = group.state;
    let current = group.generation;
    let Some(member) = group.member_mut(member_id) else {
        return code(ResponseError::UnknownMemberId);
    };
    if generation != current {
        return code(ResponseError::IllegalGeneration);
    }
    member.deadline = Instant::now() + Duration::from_millis(member.session_timeout_ms as u64);
    match state {
        GroupState::Empty => code(ResponseError::UnknownMemberId),
        GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
        GroupState::CompletingRebalance | GroupState::Stable => NONE,
        GroupState::Dead => code(ResponseError::CoordinatorNotAvailable),
    }
}

async fn leave(context: &Ctx, group_id: &str, members: &[MemberIdentity]) -> (i16, Vec<i16>) {
    let partition = match prepare(context, group_id).await {
        Ok(p) => p,
        Err(e) => return (e, vec![e; members.len()]),
    };
    let mut groups = context.groups.groups.borrow_mut();
    let Some(group) = groups.get_mut(group_id) else {
        return (
            NONE,
            vec![code(ResponseError::UnknownMemberId); members.len()],
        );
    };
    if group.state == GroupState::Dead {
        let e = code(ResponseError::CoordinatorNotAvailable);
        return (e, vec![e; members.len()]);
    }
    let mut out = Vec::with_capacity(members.len());
    for identity in members {
        let member_id = identity.member_id.to_string();
        let instance = identity.group_instance_id.as_ref().map(|s| s.to_string());
        let error = if let Some(instance) = instance {
            match group.static_members.get(&instance).cloned() {
                None => code(ResponseError::UnknownMemberId),
                Some(current) if !member_id.is_empty() && current != member_id => {
                    code(ResponseError::FencedInstanceId)
                }
                Some(current) => {
                    info!(group = %group_id, member = %current, "static member left");
                    remove_member(context, group, &current, partition);
                    NONE
                }
            }
        } else if group.pending_members.remove(&member_id).is_some() {
            maybe_complete_join(context, group, partition);
            NONE
        } else if group.member(&member_id).is_some() {
            info!(group = %group_id, member = %member_id, "member left");
            remove_member(context, group, &member_id, partition);
            NONE
        } else {
            code(ResponseError::UnknownMemberId)
        };
        out.push(error);
    }
    (NONE, out)
}

/// The per-partition outcome of a commit before it is written.
fn commit_check(
    context: &Ctx,
    group: Option<&Group>,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<(), i16> {
    let _ = context;
    let Some(group) = group else {
        return if generation < 0 {
            Ok(())
        } else {
            Err(code(ResponseError::IllegalGeneration))
        };
    };
    if group.state == GroupState::Dead {
        return Err(code(ResponseError::CoordinatorNotAvailable));
    }
    if group.is_fenced(member_id, instance_id) {
        return Err(code(ResponseError::FencedInstanceId));
    }
    if generation < 0 && member_id.is_empty() && group.state == GroupState::Empty {
        return Ok(());
    }
    if group.state == GroupState::CompletingRebalance {
        return Err(code(ResponseError::RebalanceInProgress));
    }
    if group.member(member_id).is_none() {
        return Err(code(ResponseError::UnknownMemberId));
    }
    if generation != group.generation {
        return Err(code(ResponseError::IllegalGeneration));
    }
    Ok(())
}

async fn commit(context: &Ctx, version: i16, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
    let all = |error: i16| {
        crate::msg!(OffsetCommitResponse {
            topics: request
                .topics
                .iter()
                .map(|t| crate::msg!(OffsetCommitResponseTopic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| crate::msg!(OffsetCommitResponsePartition {
                            partition_index: p.partition_index,
                            error_code: error
                        }))
                        .collect()
                }))
                .collect()
        })
    };
    if group_id.is_empty() {
        return all(code(ResponseError::InvalidGroupId));
    }
    let partition = match prepare(context, &group_id).await {
        Ok(p) => p,
        Err(e) => return all(e),
    };
    let in_flight: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let pending = {
        let mut groups = context.groups.groups.borrow_mut();
        if let Err(e) = commit_check(
            context,
            groups.get(&group_id),
            request.generation_id_or_member_epoch,
            &member_id,
            instance_id.as_deref(),
        ) {
            return all(e);
        }
        // As Kafka, a commit to an unknown group creates it (Empty, no protocol: a simple
        // consumer's group) before the write, so its partitions can be marked in flight.
        if !groups.contains_key(&group_id) && groups.len() < limits::GROUPS_PER_SHARD_MAX {
            groups.insert(group_id.clone(), Group::new(&group_id));
        }
        if let Some(member) = groups
            .get_mut(&group_id)
            .and_then(|g| g.member_mut(&member_id))
        {
            member.deadline =
                Instant::now() + Duration::from_millis(member.session_timeout_ms as u64);
        }
        groups.get_mut(&group_id).map(|group| {
            for tp in &in_flight {
                *group.pending_commits.entry(tp.clone()).or_default() += 1;
            }
            PendingCommits {
                context,
                group_id: group_id.clone(),
                partitions: in_flight,
            }
        })
    };
    // OffsetCommit v2 to v4 may carry their own retention time (-1: the broker's).
    let expire_after_ms = (2..=4)
        .contains(&version)
        .then_some(request.retention_time_ms)
        .filter(|&ms| ms >= 0);
    let image = context.image();
    let now = now_ms();
    let mut batch = Vec::new();
    let mut accepted: Vec<(String, i32, OffsetValue)> = Vec::new();
    let mut response = all(NONE);
    for (t, rt) in request.topics.iter().zip(response.topics.iter_mut()) {
        let topic = t.name.0.to_string();
        let partitions = image.topic(&topic).map(|m| m.partitions);
        for (p, rp) in t.partitions.iter().zip(rt.partitions.iter_mut()) {
            let committed = (
                p.committed_offset,
                p.committed_leader_epoch,
                p.committed_metadata.as_deref(),
            );
            let expire_timestamp = expire_after_ms.map(|ms| now.saturating_add(ms));
            let index = p.partition_index;
            match offset_to_store(context, partitions, index, committed, now, expire_timestamp) {
                Err(error_code) => rp.error_code = error_code,
                Ok(value) => {
                    batch.push((
                        records::offset_key(&group_id, &topic, index),
                        Some(records::offset_value(&value)),
                    ));
                    accepted.push((topic.clone(), index, value));
                }
            }
        }
    }
    let written = write(context, partition, batch).await;
    drop(pending);
    if let Err(e) = written {
        for rt in &mut response.topics {
            for rp in &mut rt.partitions {
                if rp.error_code == NONE {
                    rp.error_code = e;
                }
            }
        }
        return response;
    }
    let mut groups = context.groups.groups.borrow_mut();
    if !groups.contains_key(&group_id) && groups.len() < limits::GROUPS_PER_SHARD_MAX {
        groups.insert(group_id.clone(), Group::new(&group_id));
    }
    if let Some(group) = groups.get_mut(&group_id) {
        for (topic, p, value) in accepted {
            group.offsets.insert((topic, p), value);
        }
    }
    response
}

/// The value one partition of a commit stores, or the error code it is answered with: the
/// partition must exist and its metadata fit `offset.metadata.max.bytes`. `committed` is the
/// request's (offset, leader epoch, metadata).
fn offset_to_store(
    context: &Ctx,
    partitions: Option<i32>,
    partition_index: i32,
    committed: (i64, i32, Option<&str>),
    now: i64,
    expire_timestamp: Option<i64>,
) -> Result<OffsetValue, i16> {
    let (offset, leader_epoch, metadata) = committed;
    let metadata = metadata.unwrap_or_default();
    if partitions.is_none_or(|n| partition_index < 0 || partition_index >= n) {
        Err(code(ResponseError::UnknownTopicOrPartition))
    } else if metadata.len() > context.groups.settings.offset_metadata_max_bytes {
        Err(code(ResponseError::OffsetMetadataTooLarge))
    } else {
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata: metadata.to_string(),
            commit_timestamp: now,
            expire_timestamp,
        })
    }
}

/// The partitions of one offset commit, marked in flight in their group until dropped (the write
/// finished, failed, or the commit was abandoned).
struct PendingCommits<'a> {
    context: &'a Ctx,
    group_id: String,
    partitions: Vec<(String, i32)>,
}

impl Drop for PendingCommits<'_> {
    fn drop(&mut self) {
        let mut groups = self.context.groups.groups.borrow_mut();
        let Some(group) = groups.get_mut(&self.group_id) else {
            return;
        };
        for tp in self.partitions.drain(..) {
            if let Some(count) = group.pending_commits.get_mut(&tp) {
                *count -= 1;
                if *count == 0 {
                    group.pending_commits.remove(&tp);
                }
            }
        }
    }
}

/// TxnOffsetCommit: offsets committed inside the producer's transaction. They are written to the
/// group's partition as a transactional batch of the producer (so a replay sees them only if
/// the commit marker follows) and held pending until the marker arrives
/// (`complete_transaction`).
async fn txn_commit(
    context: &Ctx,
    version: i16,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let producer_id = request.producer_id.0;
    let producer_epoch = request.producer_epoch;
    let (generation, member_id, instance_id) = if version >= 3 {
        (
            request.generation_id,
            request.member_id.to_string(),
            request.group_instance_id.as_ref().map(|s| s.to_string()),
        )
    } else {
        (-1, String::new(), None)
    };
    let all = |error: i16| {
        crate::msg!(TxnOffsetCommitResponse {
            topics: request
                .topics
                .iter()
                .map(|t| crate::msg!(TxnOffsetCommitResponseTopic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| crate::msg!(TxnOffsetCommitResponsePartition {
                            partition_index: p.partition_index,
                            error_code: error
                        }))
                        .collect()
                }))
                .collect()
        })
    };
    if group_id.is_empty() {
        return all(code(ResponseError::InvalidGroupId));
    }
    if producer_id < 0 {
        return all(code(ResponseError::InvalidProducerIdMapping));
    }
    let partition = match prepare(context, &group_id).await {
        Ok(p) => p,
        Err(e) => return all(e),
    };
    {
        let groups = context.groups.groups.borrow();
        if let Some(group) = groups.get(&group_id) {
            let refused = if group.state == GroupState::Dead {
                Some(code(ResponseError::CoordinatorNotAvailable))
            } else if group.is_fenced(&member_id, instance_id.as_deref()) {
                Some(code(ResponseError::FencedInstanceId))
            } else if !member_id.is_empty() && group.member(&member_id).is_none() {
                Some(code(ResponseError::UnknownMemberId))
            } else if generation >= 0 && generation != group.generation {
                Some(code(ResponseError::IllegalGeneration))
            } else if group
                .pending_txn
                .get(&producer_id)
                .is_some_and(|p| p.producer_epoch > producer_epoch)
            {
                // A newer incarnation of the producer has committed here: this one is a zombie.
                Some(if version >= 3 {
                    code(ResponseError::ProducerFenced)
                } else {
                    code(ResponseError::InvalidProducerEpoch)
                })
            } else {
                None
            };
            if let Some(e) = refused {
                return all(e);
            }
        }
    }
    let image = context.image();
    // A marker with a newer epoch of this producer has reached the group's partition: this
    // incarnation is a zombie.
    if let Ok(open) = context
        .partitions
        .get(&image, OFFSETS_TOPIC, partition)
        .await
        && open
            .producers
            .borrow()
            .producer_epoch(producer_id)
            .is_some_and(|epoch| epoch > producer_epoch)
    {
        return all(if version >= 3 {
            code(ResponseError::ProducerFenced)
        } else {
            code(ResponseError::InvalidProducerEpoch)
        });
    }
    let now = now_ms();
    let mut batch = Vec::new();
    let mut accepted: Vec<(String, i32, OffsetValue)> = Vec::new();
    let mut response = all(NONE);
    for (t, rt) in request.topics.iter().zip(response.topics.iter_mut()) {
        let topic = t.name.0.to_string();
        let partitions = image.topic(&topic).map(|m| m.partitions);
        for (p, rp) in t.partitions.iter().zip(rt.partitions.iter_mut()) {
            let committed = (
                p.committed_offset,
                p.committed_leader_epoch,
                p.committed_metadata.as_deref(),
            );
            let expire_timestamp = None;
            let index = p.partition_index;
            match offset_to_store(context, partitions, index, committed, now, expire_timestamp) {
                Err(error_code) => rp.error_code = error_code,
                Ok(value) => {
                    batch.push((
                        records::offset_key(&group_id, &topic, index),
                        Some(records::offset_value(&value)),
                    ));
                    accepted.push((topic.clone(), index, value));
                }
            }
        }
    }
    if let Err(e) = write_as(
        context,
        partition,
        batch,
        Some((producer_id, producer_epoch)),
    )
    .await
    {
        for rt in &mut response.topics {
            for rp in &mut rt.partitions {
                if rp.error_code == NONE {
                    rp.error_code = e;
                }
            }
        }
        return response;
    }
    let mut groups = context.groups.groups.borrow_mut();
    if !groups.contains_key(&group_id) && groups.len() < limits::GROUPS_PER_SHARD_MAX {
        groups.insert(group_id.clone(), Group::new(&group_id));
    }
    if let Some(group) = groups.get_mut(&group_id) {
        let pending = group.pending_txn.entry(producer_id).or_default();
        pending.producer_epoch = producer_epoch;
        for (topic, p, value) in accepted {
            pending.offsets.insert((topic, p), value);
        }
    }
    response
}

async fn fetch_offsets(
    context: &Ctx,
    group_id: &str,
    topics: Option<TopicPartitions>,
    require_stable: bool,
) -> Result<Vec<(String, Vec<FetchedOffset>)>, i16> {
    prepare(context, group_id).await?;
    let groups = context.groups.groups.borrow();
    let group = groups.get(group_id);
    let lookup = |topic: &str, partition: i32| -> FetchedOffset {
        // KIP-447: a consumer that asks for stable offsets must not start from an offset an
        // open transaction is about to replace.
        if require_stable && group.is_some_and(|g| g.has_pending_txn_offset(topic, partition)) {
            return FetchedOffset {
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error_code: code(ResponseError::UnstableOffsetCommit),
            };
        }
        match group.and_then(|g| g.offsets.get(&(topic.to_string(), partition))) {
            Some(v) => FetchedOffset {
                partition,
                offset: v.offset,
                leader_epoch: v.leader_epoch,
                metadata: v.metadata.clone(),
                error_code: NONE,
            },
            None => FetchedOffset {
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error_code: NONE,
            },
        }
    };
    Ok(match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, parts)| {
                let offsets = parts.iter().map(|&p| lookup(&topic, p)).collect();
                (topic, offsets)
            })
            .collect(),
        None => {
            let mut out: BTreeMap<String, Vec<FetchedOffset>> = BTreeMap::new();
            if let Some(g) = group {
                for (topic, p) in g.offsets.keys() {
                    out.entry(topic.clone())
                        .or_default()
                        .push(lookup(topic, *p));
                }
            }
            out.into_iter().collect()
        }
    })
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

/// The topics a consumer group's members subscribe to, from their subscription metadata of the
/// selected protocol (Kafka's `subscribedTopics`); `None` when that is not known: not a
/// `consumer` group, no protocol selected, or a member's metadata does not decode.
fn subscribed_topics(group: &Group) -> Option<HashSet<String>> {
    if group.protocol_type.as_deref() != Some("consumer") {
        return None;
    }
    let protocol = group.protocol.as_ref()?;
    let mut out = HashSet::new();
    for m in group.members.values() {
        let mut buf = m.metadata_for(protocol);
        if buf.remaining() < 2 {
            return None;
        }
        let version = buf.get_i16();
        let sub = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()?;
        out.extend(sub.topics.iter().map(|t| t.to_string()));
    }
    Some(out)
}

async fn delete_offsets(
    context: &Ctx,
    group_id: &str,
    topics: TopicPartitions,
) -> Result<PartitionErrors, i16> {
    let partition = prepare(context, group_id).await?;
    let (results, batch) = {
        let groups = context.groups.groups.borrow();
        let Some(group) = groups.get(group_id) else {
            return Err(code(ResponseError::GroupIdNotFound));
        };
        if group.state == GroupState::Dead {
            return Err(code(ResponseError::GroupIdNotFound));
        }
        if group.state != GroupState::Empty && group.protocol_type.as_deref() != Some("consumer") {
            return Err(code(ResponseError::NonEmptyGroup));
        }
        let subscribed = if group.state == GroupState::Empty {
            HashSet::new()
        } else {
            subscribed_topics(group).unwrap_or_default()
        };
        let mut batch = Vec::new();
        let results: Vec<(String, Vec<(i32, i16)>)> = topics
            .into_iter()
            .map(|(topic, parts)| {
                let errs = parts
                    .into_iter()
                    .map(|p| {
                        if subscribed.contains(&topic) {
                            (p, code(ResponseError::GroupSubscribedToTopic))
                        } else {
                            if group.offsets.contains_key(&(topic.clone(), p)) {
                                batch.push((records::offset_key(group_id, &topic, p), None));
                            }
                            (p, NONE)
                        }
                    })
                    .collect();
                (topic, errs)
            })
            .collect();
        (results, batch)
    };
    write(context, partition, batch).await?;
    let mut groups = context.groups.groups.borrow_mut();
    if let Some(group) = groups.get_mut(group_id) {
        for (topic, errs) in &results {
            for (p, e) in errs {
                if *e == NONE {
                    group.offsets.remove(&(topic.clone(), *p));
                }
            }
        }
    }
    Ok(results)
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

/// Replays partition `partition` of `__consumer_offsets` unless it is already in memory.
async fn ensure_loaded(context: &Ctx, partition: i32) -> Result<(), i16> {
    if context.groups.loaded.borrow().contains(&partition) {
        return Ok(());
    }
    let _permit = context
        .groups
        .load_permit
        .acquire_permit(1)
        .await
        .map_err(|_| code(ResponseError::CoordinatorNotAvailable))?;
    if context.groups.loaded.borrow().contains(&partition) {
        return Ok(());
    }
    load_partition(context, partition).await?;
    context.groups.loaded.borrow_mut().insert(partition);
    Ok(())
}

/// The committed offsets of `group` that have expired at `now_ms`, by Kafka's rules (KIP-211):
/// - a group with a protocol that is Empty: every offset, `retention_ms` after the group emptied
///   (or after its commit, if when it emptied is unknown);
/// - a Stable `consumer` group: offsets of topics no member subscribes to, `retention_ms` after
///   their commit;
/// - a group without a protocol (simple consumers that only commit): every offset,
///   `retention_ms` after its commit;
/// - any other group: none.
///
/// An offset committed with its own retention time (OffsetCommit v2 to v4) expires at its own
/// expire timestamp instead. Offsets with a commit in flight never expire.
fn expired_offsets(group: &Group, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
    let (since_emptied, subscribed) = match (group.protocol_type.as_deref(), group.state) {
        (Some(_), GroupState::Empty) => (true, HashSet::new()),
        (Some("consumer"), GroupState::Stable) => match subscribed_topics(group) {
            Some(topics) => (false, topics),
            None => return Vec::new(),
        },
        (None, _) => (false, HashSet::new()),
        _ => return Vec::new(),
    };
    group
        .offsets
        .iter()
        .filter(|(tp, value)| {
            if subscribed.contains(&tp.0) || group.pending_commits.contains_key(*tp) {
                return false;
            }
            match value.expire_timestamp {
                Some(expire) => now_ms >= expire,
                None => {
                    let base = if since_emptied {
                        group.state_timestamp_ms.unwrap_or(value.commit_timestamp)
                    } else {
                        value.commit_timestamp
                    };
                    now_ms.saturating_sub(base) >= retention_ms
                }
            }
        })
        .map(|(tp, _)| tp.clone())
        .collect()
}

/// What one expiry pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryOutcome {
    /// Committed offsets removed.
    pub offsets_removed: usize,
    /// Groups removed (Empty with no offsets left).
    pub groups_removed: usize,
}

/// Expires committed offsets (`expired_offsets`) in every `__consumer_offsets` partition this
/// shard owns, writing a tombstone for each, and removes groups that are Empty with no offsets
/// left (Dead, with a group tombstone), as Kafka's periodic cleanup does. Run every
/// `offsets.retention.check.interval.ms` by the shard (`pool`).
///
/// Ordering: for each partition the decision, the in-memory removal and the staging of the
/// tombstones happen in one poll (appends are ordered by their first poll), and partitions with
/// a commit in flight are skipped, so a tombstone never lands after a newer commit of the same
/// partition. If the tombstones cannot be written the offsets stay removed in memory (they come
/// back on the next load and expire again) and Dead groups go back to Empty.
pub async fn expire_offsets(context: &Ctx) -> ExpiryOutcome {
    let retention_ms = context.groups.settings.offsets_retention_ms;
    let mut outcome = ExpiryOutcome::default();
    for partition in owned_offsets_partitions(context) {
        if ensure_loaded(context, partition).await.is_err() {
            continue;
        }
        let image = context.image();
        let open = match context
            .partitions
            .get(&image, OFFSETS_TOPIC, partition)
            .await
        {
            Ok(open) => open,
            Err(err) => {
                warn!(partition, %err, "offset expiry: cannot open __consumer_offsets partition");
                continue;
            }
        };
        let now = now_ms();
        let (append, dead, offsets_removed) = {
            let mut groups = context.groups.groups.borrow_mut();
            let mut batch: Vec<(Bytes, Option<Bytes>)> = Vec::new();
            let mut dead = Vec::new();
            let mut offsets_removed = 0;
            for group in groups.values_mut() {
                if group.state == GroupState::Dead
                    || group_partition(context, &group.id) != partition
                {
                    continue;
                }
                let expired = expired_offsets(group, now, retention_ms);
                if !expired.is_empty() {
                    info!(group = %group.id, offsets = expired.len(), "committed offsets expired");
                }
                for (topic, p) in expired {
                    batch.push((records::offset_key(&group.id, &topic, p), None));
                    group.offsets.remove(&(topic, p));
                    offsets_removed += 1;
                }
                if group.state == GroupState::Empty
                    && group.offsets.is_empty()
                    && group.pending_commits.is_empty()
                {
                    group.transition(GroupState::Dead);
                    batch.push((records::group_key(&group.id), None));
                    dead.push(group.id.clone());
                }
            }
            if batch.is_empty() {
                continue;
            }
            (
                open.log.append(records::build_batch(&batch, now)),
                dead,
                offsets_removed,
            )
        };
        let result = append.await;
        let mut groups = context.groups.groups.borrow_mut();
        outcome.offsets_removed += offsets_removed;
        match result {
            Ok(_) => {
                for id in dead {
                    if groups.get(&id).is_some_and(|g| g.state == GroupState::Dead) {
                        groups.remove(&id);
                        info!(group = %id, "empty group with no offsets removed");
                        outcome.groups_removed += 1;
                    }
                }
            }
            Err(err) => {
                warn!(partition, %err, "offset expiry: tombstones not written");
                for id in dead {
                    if let Some(g) = groups.get_mut(&id)
                        && g.state == GroupState::Dead
                    {
                        g.transition(GroupState::Empty);
                    }
                }
            }
        }
    }
    outcome
}
