//! LeaveGroup (key 13), versions 0 to 5; from v3 several members (by member id or
//! `group.instance.id`) leave in one request, each with its own error; before v3 the one member's
//! error is the top-level error.
//!
//! Owner: runs on the connection's shard, which decodes the request and sends a `GroupCall` to
//! the coordinator shard of the group (`group::route`); `group::coordinator` does the work.
//! This file only shapes the request and the response per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{ApiKey, LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::group::route::{call_coordinator_as, unexpected};
use crate::group::{GroupCall, GroupReply};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::LeaveGroup,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
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
    let (top, each) = match call_coordinator_as(
        &context,
        &request.session,
        crate::acl::operation::READ,
        &group_id,
        call,
    )
    .await
    {
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
