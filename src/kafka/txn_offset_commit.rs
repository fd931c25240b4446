//! TxnOffsetCommit (key 28), versions 0 to 3: offsets committed inside a transaction, visible
//! only once the transaction commits.
//!
//! Owner: runs on the connection's shard, which sends a `GroupCall::TxnCommit` to the group's
//! coordinator shard (`group::route`); `group::coordinator` writes the offsets as a
//! transactional batch and holds them pending until the marker.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::route::{call_coordinator, unexpected};
use crate::group::{GroupCall, GroupReply};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::shard::ShardContext;

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::TxnOffsetCommit,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: TxnOffsetCommitRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.0.to_string();
    let all = |error_code: i16| {
        crate::msg!(TxnOffsetCommitResponse {
            topics: body
                .topics
                .iter()
                .map(|t| crate::msg!(TxnOffsetCommitResponseTopic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| crate::msg!(TxnOffsetCommitResponsePartition {
                            partition_index: p.partition_index,
                            error_code
                        }))
                        .collect()
                }))
                .collect()
        })
    };
    if body.transactional_id.0.is_empty() {
        return request.respond(&all(kafka_protocol::ResponseError::InvalidRequest.code()));
    }
    let call = GroupCall::TxnCommit {
        version: request.version(),
        request: body.clone(),
    };
    let response = match call_coordinator(&context, &group_id, call).await {
        Ok(GroupReply::TxnCommit(response)) => response,
        Ok(_) => all(unexpected()),
        Err(code) => all(code),
    };
    request.respond(&response)
}
