//! Membership of a classic group: JoinGroup (with the rebalance it starts and completes),
//! SyncGroup, Heartbeat and LeaveGroup, and the session and rebalance timers. The protocol is
//! described in the parent module's documentation.
//!
//! Owner: the group's coordinator shard (`GroupCoordinator::serve`). Awaits the group's
//! record being written (`write`) and the join and sync answers; group state is borrowed only
//! between awaits.

use super::*;

pub(super) fn join_error(member_id: &str, error: i16) -> JoinGroupResponse {
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

pub(super) fn sync_error(error: i16) -> SyncGroupResponse {
    crate::msg!(SyncGroupResponse { error_code: error })
}

pub(super) async fn join(
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

pub(super) async fn sync(
    context: &Ctx,
    version: i16,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
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

pub(super) async fn heartbeat(
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

pub(super) async fn leave(
    context: &Ctx,
    group_id: &str,
    members: &[MemberIdentity],
) -> (i16, Vec<i16>) {
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
