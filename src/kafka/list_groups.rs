//! ListGroups (key 16), versions 0 to 4 (v4: states filter). Every shard is asked for the groups it
//! coordinates.
//!
//! Owner: runs on the connection's shard, which decodes the request and sends a `GroupCall` to
//! the coordinator shard of the group (`group::route`); `group::coordinator` does the work.
//! This file only shapes the request and the response per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::broker::ShardContext;
use crate::group::route::call_shard;
use crate::group::{GroupCall, GroupReply};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::runtime::ShardId;

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::ListGroups,
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
            Ok(_) => error_code = crate::group::route::unexpected(),
            Err(code) => error_code = code,
        }
    }
    // Groups the client may not DESCRIBE are left out, unless it may DESCRIBE the cluster.
    use crate::acl::{CLUSTER_NAME, operation, resource_type};
    let session = &request.session;
    let sees_all = context.authorize(
        session,
        operation::DESCRIBE,
        resource_type::CLUSTER,
        CLUSTER_NAME,
    );
    let groups = groups
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| {
            sees_all
                || context.authorize(
                    session,
                    operation::DESCRIBE,
                    resource_type::GROUP,
                    &g.group_id,
                )
        })
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
