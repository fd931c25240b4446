//! OffsetFetch (key 9), versions 1 to 8; v8 asks for several groups at once, each routed to its own
//! coordinator shard; a null topic list asks for every committed offset of the group.
//!
//! Owner: runs on the connection's shard, which decodes the request and sends a `GroupCall` to
//! the coordinator shard of the group (`group::route`); `group::coordinator` does the work.
//! This file only shapes the request and the response per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::acl::{self, Session};
use crate::broker::ShardContext;
use crate::group::route::{call_coordinator_as, unexpected};
use crate::group::{FetchedOffset, GroupCall, GroupReply, TopicPartitions};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 8 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::OffsetFetch,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// One group's committed offsets, per topic, each with its error code (UNSTABLE_OFFSET_COMMIT
/// for an offset pending in a transaction when `require_stable`). With an
/// authorizer, the group needs DESCRIBE (else the whole answer is GROUP_AUTHORIZATION_FAILED)
/// and each topic DESCRIBE: a named topic the client may not describe is answered
/// TOPIC_AUTHORIZATION_FAILED with no offsets, and asking for every topic leaves it out.
async fn fetch_one(
    context: &Rc<ShardContext>,
    session: &Session,
    group_id: &str,
    topics: Option<TopicPartitions>,
    require_stable: bool,
) -> Result<Vec<(String, Vec<FetchedOffset>)>, i16> {
    let all_topics = topics.is_none();
    let call = GroupCall::FetchOffsets {
        group_id: group_id.to_string(),
        topics,
        require_stable,
    };
    let found =
        match call_coordinator_as(context, session, acl::operation::DESCRIBE, group_id, call).await
        {
            Ok(GroupReply::FetchOffsets(result)) => result?,
            Ok(_) => return Err(unexpected()),
            Err(code) => return Err(code),
        };
    let may_describe = |name: &str| {
        context.authorize(
            session,
            acl::operation::DESCRIBE,
            acl::resource_type::TOPIC,
            name,
        )
    };
    Ok(found
        .into_iter()
        .filter_map(|(name, offsets)| {
            if may_describe(&name) {
                return Some((name, offsets));
            }
            if all_topics {
                return None;
            }
            let hidden = offsets
                .into_iter()
                .map(|o| FetchedOffset {
                    partition: o.partition,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: String::new(),
                    error_code: ResponseError::TopicAuthorizationFailed.code(),
                })
                .collect();
            Some((name, hidden))
        })
        .collect())
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: OffsetFetchRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let version = request.version();
    // v7+: KIP-447's require_stable.
    let require_stable = version >= 7 && body.require_stable;
    if version >= 8 {
        let mut groups = Vec::with_capacity(body.groups.len());
        for g in &body.groups {
            let group_id = g.group_id.0.to_string();
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let (error_code, topics) = match fetch_one(
                &context,
                &request.session,
                &group_id,
                topics,
                require_stable,
            )
            .await
            {
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
                                error_code: o.error_code
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
    let response = match fetch_one(
        &context,
        &request.session,
        &group_id,
        asked.clone(),
        require_stable,
    )
    .await
    {
        Ok(found) => crate::msg!(OffsetFetchResponse {
            topics: found
                .into_iter()
                .map(|(name, offsets)| crate::msg!(OffsetFetchResponseTopic {
                    name: TopicName(text(&name)),
                    partitions: offsets.iter().map(|o| partition(o, o.error_code)).collect()
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
                                    error_code: code,
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
