//! JoinGroup (key 11), versions 0 to 9.
//!
//! Owner: runs on the connection's shard, which decodes the request and sends a `GroupCall` to
//! the coordinator shard of the group (`group::route`); `group::coordinator` does the work.
//! This file only shapes the request and the response per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::broker::ShardContext;
use crate::group::route::{call_coordinator_as, unexpected};
use crate::group::{GroupCall, GroupReply};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 9 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::JoinGroup,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
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
    // Kafka reports a member's host as Java prints an InetAddress without a name: "/127.0.0.1".
    let client_host = match request.session.host.as_str() {
        crate::acl::WILDCARD => String::new(),
        host => format!("/{host}"),
    };
    let call = GroupCall::Join {
        version: request.version(),
        client_id,
        client_host,
        request: Box::new(body),
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
