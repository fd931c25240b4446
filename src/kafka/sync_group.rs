//! SyncGroup (key 14), versions 0 to 5.
//!
//! Owner: runs on the connection's shard, which decodes the request and sends a `GroupCall` to
//! the coordinator shard of the group (`group::route`); `group::coordinator` does the work.
//! This file only shapes the request and the response per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::group::route::{call_coordinator_as, unexpected};
use crate::group::{GroupCall, GroupReply};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::SyncGroup,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: SyncGroupRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.0.to_string();
    let call = GroupCall::Sync {
        version: request.version(),
        request: body,
    };
    let mut response = match call_coordinator_as(
        &context,
        &request.session,
        crate::acl::operation::READ,
        &group_id,
        call,
    )
    .await
    {
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
