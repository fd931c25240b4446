//! DeleteGroups (key 42), versions 0 to 2: only Empty groups can go (NON_EMPTY_GROUP otherwise,
//! GROUP_ID_NOT_FOUND for unknown groups); their offsets and metadata get tombstones in
//! `__consumer_offsets`.
//!
//! Owner: runs on the connection's shard, which decodes the request and sends a `GroupCall` to
//! the coordinator shard of the group (`group::route`); `group::coordinator` does the work.
//! This file only shapes the request and the response per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{ApiKey, DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::group::route::{call_coordinator_as, unexpected};
use crate::group::{GroupCall, GroupReply};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DeleteGroups,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
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
        let error_code = match call_coordinator_as(
            &context,
            &request.session,
            crate::acl::operation::DELETE,
            &group_id,
            call,
        )
        .await
        {
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
