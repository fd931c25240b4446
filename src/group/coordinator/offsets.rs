//! Committed offsets of classic groups: OffsetCommit and TxnOffsetCommit (checked against the
//! generation, acknowledged once durable), OffsetFetch, OffsetDelete, and the periodic expiry
//! of offsets and empty groups (KIP-211). Described in the parent module's documentation.
//!
//! Owner: the group's coordinator shard (`GroupCoordinator::serve`, and the shard's expiry
//! task for `expire_offsets`). Awaits the offset records being written.

use super::*;

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

pub(super) async fn commit(
    context: &Ctx,
    version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
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
pub(super) async fn txn_commit(
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

pub(super) async fn fetch_offsets(
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

pub(super) async fn delete_offsets(
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
