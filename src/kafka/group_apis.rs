//! The consumer group APIs: JoinGroup (key 11, v0-9), SyncGroup (14, v0-5), Heartbeat (12,
//! v0-4), LeaveGroup (13, v0-5, batched members from v3), OffsetCommit (8, v2-8), OffsetFetch
//! (9, v1-8, several groups per request from v8), ListGroups (16, v0-4), DescribeGroups (15,
//! v0-5), DeleteGroups (42, v0-2) and OffsetDelete (47, v0).
//!
//! Owner: each handler runs on the connection's shard; it decodes the request and sends a
//! `GroupCall` to the coordinator shard of the group (`group::route`), where
//! `group::coordinator` does the work; requests naming several groups are split per group.
//! ListGroups asks every shard. The handlers only shape requests and responses per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::group::route::{call_coordinator, call_shard};
use crate::group::{FetchedOffset, GroupCall, GroupReply, TopicPartitions};
use crate::kafka::dispatch::{ApiHandler, HandlerOutcome, Request};
use crate::shard::{ShardContext, ShardId};

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn unexpected() -> i16 {
    ResponseError::UnknownServerError.code()
}

macro_rules! handler {
    ($name:ident, $key:expr, $min:expr, $max:expr, $serve:ident) => {
        /// The dispatch table entry.
        pub const $name: ApiHandler = ApiHandler {
            key: $key,
            versions: VersionRange {
                min: $min,
                max: $max,
            },
            handle: |context, request| async move { $serve(context, request).await }.boxed_local(),
        };
    };
}

handler!(JOIN_GROUP, ApiKey::JoinGroup, 0, 9, join_group);
handler!(SYNC_GROUP, ApiKey::SyncGroup, 0, 5, sync_group);
handler!(HEARTBEAT, ApiKey::Heartbeat, 0, 4, heartbeat);
handler!(LEAVE_GROUP, ApiKey::LeaveGroup, 0, 5, leave_group);
handler!(OFFSET_COMMIT, ApiKey::OffsetCommit, 2, 8, offset_commit);
handler!(OFFSET_FETCH, ApiKey::OffsetFetch, 1, 8, offset_fetch);
handler!(LIST_GROUPS, ApiKey::ListGroups, 0, 4, list_groups);
handler!(
    DESCRIBE_GROUPS,
    ApiKey::DescribeGroups,
    0,
    5,
    describe_groups
);
handler!(DELETE_GROUPS, ApiKey::DeleteGroups, 0, 2, delete_groups);
handler!(OFFSET_DELETE, ApiKey::OffsetDelete, 0, 0, offset_delete);

async fn join_group(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: JoinGroupRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.0.to_string();
    let member_id = body.member_id.clone();
    let client_id = request
        .header
        .client_id
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let call = GroupCall::Join {
        version: request.version(),
        client_id,
        request: body,
    };
    let mut response = match call_coordinator(&context, &group_id, call).await {
        Ok(GroupReply::Join(response)) => response,
        other => crate::msg!(JoinGroupResponse {
            error_code: other.err().unwrap_or_else(unexpected),
            generation_id: -1,
            member_id,
            protocol_name: Some(StrBytes::default()),
        }),
    };
    if request.version() < 9 {
        response.skip_assignment = false;
    }
    if request.version() < 7 && response.protocol_name.is_none() {
        response.protocol_name = Some(StrBytes::default());
    }
    request.respond(&response)
}

async fn sync_group(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: SyncGroupRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.0.to_string();
    let call = GroupCall::Sync {
        version: request.version(),
        request: body,
    };
    let mut response = match call_coordinator(&context, &group_id, call).await {
        Ok(GroupReply::Sync(response)) => response,
        other => crate::msg!(SyncGroupResponse {
            error_code: other.err().unwrap_or_else(unexpected),
        }),
    };
    if request.version() < 5 {
        response.protocol_type = None;
        response.protocol_name = None;
    }
    request.respond(&response)
}

async fn heartbeat(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: HeartbeatRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.0.to_string();
    let call = GroupCall::Heartbeat {
        group_id: group_id.clone(),
        generation: body.generation_id,
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.as_ref().map(|s| s.to_string()),
    };
    let error_code = match call_coordinator(&context, &group_id, call).await {
        Ok(GroupReply::Heartbeat(code)) => code,
        other => other.err().unwrap_or_else(unexpected),
    };
    request.respond(&crate::msg!(HeartbeatResponse { error_code }))
}

async fn leave_group(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: LeaveGroupRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let version = request.version();
    let group_id = body.group_id.0.to_string();
    let members: Vec<MemberIdentity> = if version >= 3 {
        body.members.clone()
    } else {
        vec![crate::msg!(MemberIdentity {
            member_id: body.member_id.clone(),
        })]
    };
    let call = GroupCall::Leave {
        group_id: group_id.clone(),
        members: members.clone(),
    };
    let (top, each) = match call_coordinator(&context, &group_id, call).await {
        Ok(GroupReply::Leave(top, each)) => (top, each),
        other => {
            let code = other.err().unwrap_or_else(unexpected);
            (code, vec![code; members.len()])
        }
    };
    let response = if version >= 3 {
        crate::msg!(LeaveGroupResponse {
            error_code: top,
            members: members
                .iter()
                .zip(each)
                .map(|(m, error_code)| crate::msg!(MemberResponse {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    error_code
                }))
                .collect(),
        })
    } else {
        let member_error = each.first().copied().unwrap_or(0);
        crate::msg!(LeaveGroupResponse {
            error_code: if top != 0 { top } else { member_error },
        })
    };
    request.respond(&response)
}

async fn offset_commit(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: OffsetCommitRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.0.to_string();
    let shape = body.topics.clone();
    let call = GroupCall::Commit {
        version: request.version(),
        request: body,
    };
    let response = match call_coordinator(&context, &group_id, call).await {
        Ok(GroupReply::Commit(response)) => response,
        other => {
            let error_code = other.err().unwrap_or_else(unexpected);
            crate::msg!(OffsetCommitResponse {
                topics: shape
                    .iter()
                    .map(|t| crate::msg!(OffsetCommitResponseTopic {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| crate::msg!(OffsetCommitResponsePartition {
                                partition_index: p.partition_index,
                                error_code
                            }))
                            .collect()
                    }))
                    .collect(),
            })
        }
    };
    request.respond(&response)
}

async fn fetch_one(
    context: &Rc<ShardContext>,
    group_id: &str,
    topics: Option<TopicPartitions>,
) -> Result<Vec<(String, Vec<FetchedOffset>)>, i16> {
    let call = GroupCall::FetchOffsets {
        group_id: group_id.to_string(),
        topics,
    };
    match call_coordinator(context, group_id, call).await {
        Ok(GroupReply::FetchOffsets(result)) => result,
        Ok(_) => Err(unexpected()),
        Err(code) => Err(code),
    }
}

async fn offset_fetch(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: OffsetFetchRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let version = request.version();
    if version >= 8 {
        let mut groups = Vec::with_capacity(body.groups.len());
        for g in &body.groups {
            let group_id = g.group_id.0.to_string();
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let (error_code, topics) = match fetch_one(&context, &group_id, topics).await {
                Ok(found) => (0, found),
                Err(code) => (code, Vec::new()),
            };
            groups.push(crate::msg!(OffsetFetchResponseGroup {
                group_id: g.group_id.clone(),
                error_code,
                topics: topics
                    .into_iter()
                    .map(|(name, offsets)| crate::msg!(OffsetFetchResponseTopics {
                        name: TopicName(text(&name)),
                        partitions: offsets
                            .into_iter()
                            .map(|o| crate::msg!(OffsetFetchResponsePartitions {
                                partition_index: o.partition,
                                committed_offset: o.offset,
                                committed_leader_epoch: o.leader_epoch,
                                metadata: Some(text(&o.metadata)),
                                error_code: 0
                            }))
                            .collect()
                    }))
                    .collect(),
            }));
        }
        return request.respond(&crate::msg!(OffsetFetchResponse { groups }));
    }
    let group_id = body.group_id.0.to_string();
    let asked: Option<TopicPartitions> = body.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let partition = |o: &FetchedOffset, error_code: i16| {
        crate::msg!(OffsetFetchResponsePartition {
            partition_index: o.partition,
            committed_offset: o.offset,
            committed_leader_epoch: o.leader_epoch,
            metadata: Some(text(&o.metadata)),
            error_code,
        })
    };
    let response = match fetch_one(&context, &group_id, asked.clone()).await {
        Ok(found) => crate::msg!(OffsetFetchResponse {
            topics: found
                .into_iter()
                .map(|(name, offsets)| crate::msg!(OffsetFetchResponseTopic {
                    name: TopicName(text(&name)),
                    partitions: offsets.iter().map(|o| partition(o, 0)).collect()
                }))
                .collect(),
        }),
        Err(code) => {
            // v1 has no top-level error: every partition carries it.
            let topics = asked
                .unwrap_or_default()
                .into_iter()
                .map(|(name, parts)| {
                    crate::msg!(OffsetFetchResponseTopic {
                        name: TopicName(text(&name)),
                        partitions: parts
                            .iter()
                            .map(|&p| {
                                let none = FetchedOffset {
                                    partition: p,
                                    offset: -1,
                                    leader_epoch: -1,
                                    metadata: String::new(),
                                };
                                partition(&none, code)
                            })
                            .collect(),
                    })
                })
                .collect();
            crate::msg!(OffsetFetchResponse {
                topics,
                error_code: if version >= 2 { code } else { 0 },
            })
        }
    };
    request.respond(&response)
}

async fn list_groups(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: ListGroupsRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let states: Vec<String> = body
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let mut groups = Vec::new();
    let mut error_code = 0;
    for shard in 0..context.shard_count {
        match call_shard(&context, ShardId(shard), GroupCall::List).await {
            Ok(GroupReply::List(found)) => groups.extend(found),
            Ok(_) => error_code = unexpected(),
            Err(code) => error_code = code,
        }
    }
    let groups = groups
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .map(|g| {
            crate::msg!(ListedGroup {
                group_id: GroupId(text(&g.group_id)),
                protocol_type: text(&g.protocol_type),
                group_state: if request.version() >= 4 {
                    text(g.state)
                } else {
                    StrBytes::default()
                },
            })
        })
        .collect();
    request.respond(&crate::msg!(ListGroupsResponse { error_code, groups }))
}

async fn describe_groups(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: DescribeGroupsRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut groups = Vec::with_capacity(body.groups.len());
    for g in &body.groups {
        let group_id = g.0.to_string();
        let call = GroupCall::Describe {
            group_ids: vec![group_id.clone()],
        };
        let described = match call_coordinator(&context, &group_id, call).await {
            Ok(GroupReply::Describe(mut found)) if found.len() == 1 => found.remove(0),
            other => crate::msg!(DescribedGroup {
                error_code: other.err().unwrap_or_else(unexpected),
                group_id: g.clone(),
                authorized_operations: i32::MIN,
            }),
        };
        groups.push(described);
    }
    if request.version() < 3 {
        for g in &mut groups {
            g.authorized_operations = i32::MIN;
        }
    }
    request.respond(&crate::msg!(DescribeGroupsResponse { groups }))
}

async fn delete_groups(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: DeleteGroupsRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut results = Vec::with_capacity(body.groups_names.len());
    for g in &body.groups_names {
        let group_id = g.0.to_string();
        let call = GroupCall::Delete {
            group_ids: vec![group_id.clone()],
        };
        let error_code = match call_coordinator(&context, &group_id, call).await {
            Ok(GroupReply::Delete(codes)) => codes.first().copied().unwrap_or_else(unexpected),
            other => other.err().unwrap_or_else(unexpected),
        };
        results.push(crate::msg!(DeletableGroupResult {
            group_id: g.clone(),
            error_code,
        }));
    }
    request.respond(&crate::msg!(DeleteGroupsResponse { results }))
}

async fn offset_delete(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: OffsetDeleteRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.0.to_string();
    let topics: TopicPartitions = body
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let call = GroupCall::DeleteOffsets {
        group_id: group_id.clone(),
        topics,
    };
    let response = match call_coordinator(&context, &group_id, call).await {
        Ok(GroupReply::DeleteOffsets(Ok(results))) => crate::msg!(OffsetDeleteResponse {
            topics: results
                .into_iter()
                .map(|(name, parts)| crate::msg!(OffsetDeleteResponseTopic {
                    name: TopicName(text(&name)),
                    partitions: parts
                        .into_iter()
                        .map(|(partition_index, error_code)| crate::msg!(
                            OffsetDeleteResponsePartition {
                                partition_index,
                                error_code
                            }
                        ))
                        .collect()
                }))
                .collect(),
        }),
        Ok(GroupReply::DeleteOffsets(Err(code))) | Err(code) => {
            crate::msg!(OffsetDeleteResponse { error_code: code })
        }
        Ok(_) => crate::msg!(OffsetDeleteResponse {
            error_code: unexpected(),
        }),
    };
    request.respond(&response)
}
