//! OffsetCommit (key 8), versions 2 to 8 (the crate's schema starts at 2).
//!
//! Owner: runs on the connection's shard, which decodes the request and sends a `GroupCall` to
//! the coordinator shard of the group (`group::route`); `group::coordinator` does the work.
//! This file only shapes the request and the response per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::group::route::{call_coordinator_as, unexpected};
use crate::group::{GroupCall, GroupReply};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 8 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::OffsetCommit,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let mut body: OffsetCommitRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.0.to_string();
    let shape = body.topics.clone();
    // Partitions of topics the client may not READ are answered TOPIC_AUTHORIZATION_FAILED and
    // not committed; the others are.
    let (allowed, refused): (Vec<_>, Vec<_>) =
        std::mem::take(&mut body.topics).into_iter().partition(|t| {
            context.authorize(
                &request.session,
                crate::acl::operation::READ,
                crate::acl::resource_type::TOPIC,
                t.name.0.as_str(),
            )
        });
    body.topics = allowed;
    let call = GroupCall::Commit {
        version: request.version(),
        request: body,
    };
    let response = match call_coordinator_as(
        &context,
        &request.session,
        crate::acl::operation::READ,
        &group_id,
        call,
    )
    .await
    {
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
    let mut response = response;
    response.topics.extend(refused.iter().map(|t| {
        crate::msg!(OffsetCommitResponseTopic {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| crate::msg!(OffsetCommitResponsePartition {
                    partition_index: p.partition_index,
                    error_code: ResponseError::TopicAuthorizationFailed.code()
                }))
                .collect()
        })
    }));
    request.respond(&response)
}
