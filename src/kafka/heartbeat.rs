//! Heartbeat (key 12), versions 0 to 4.
//!
//! Owner: runs on the connection's shard, which decodes the request and sends a `GroupCall` to
//! the coordinator shard of the group (`group::route`); `group::coordinator` does the work.
//! This file only shapes the request and the response per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::group::route::{call_coordinator_as, unexpected};
use crate::group::{GroupCall, GroupReply};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::Heartbeat,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
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
    let error_code = match call_coordinator_as(
        &context,
        &request.session,
        crate::acl::operation::READ,
        &group_id,
        call,
    )
    .await
    {
        Ok(GroupReply::Heartbeat(code)) => code,
        other => other.err().unwrap_or_else(unexpected),
    };
    request.respond(&crate::msg!(HeartbeatResponse { error_code }))
}
