//! OffsetDelete (key 47), version 0: removes committed offsets of partitions the group is not
//! subscribed to (GROUP_SUBSCRIBED_TO_TOPIC otherwise), with tombstones in `__consumer_offsets`.
//!
//! Owner: runs on the connection's shard, which decodes the request and sends a `GroupCall` to
//! the coordinator shard of the group (`group::route`); `group::coordinator` does the work.
//! This file only shapes the request and the response per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetDeleteRequest, OffsetDeleteResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::broker::ShardContext;
use crate::group::route::{call_coordinator_as, unexpected};
use crate::group::{GroupCall, GroupReply, TopicPartitions};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::OffsetDelete,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: OffsetDeleteRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.0.to_string();
    // Partitions of topics the client may not READ are answered TOPIC_AUTHORIZATION_FAILED;
    // only the others reach the coordinator.
    let may_read = |name: &str| {
        context.authorize(
            &request.session,
            crate::acl::operation::READ,
            crate::acl::resource_type::TOPIC,
            name,
        )
    };
    let refused: Vec<(String, Vec<i32>)> = body
        .topics
        .iter()
        .filter(|t| !may_read(t.name.0.as_str()))
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let topics: TopicPartitions = body
        .topics
        .iter()
        .filter(|t| may_read(t.name.0.as_str()))
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
    let response = match call_coordinator_as(
        &context,
        &request.session,
        crate::acl::operation::DELETE,
        &group_id,
        call,
    )
    .await
    {
        Ok(GroupReply::DeleteOffsets(Ok(results))) => crate::msg!(OffsetDeleteResponse {
            topics: results
                .into_iter()
                .chain(refused.into_iter().map(|(name, parts)| {
                    let code = ResponseError::TopicAuthorizationFailed.code();
                    (name, parts.into_iter().map(|p| (p, code)).collect())
                }))
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
