//! DescribeGroups (key 15), versions 0 to 5; each group is described by its coordinator shard. An
//! unknown group is reported as `Dead` with no error, as Kafka's classic coordinator does.
//!
//! Owner: runs on the connection's shard, which decodes the request and sends a `GroupCall` to
//! the coordinator shard of the group (`group::route`); `group::coordinator` does the work.
//! This file only shapes the request and the response per version.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{ApiKey, DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::group::route::{call_coordinator_as, unexpected};
use crate::group::{GroupCall, GroupReply};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeGroups,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: DescribeGroupsRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut groups = Vec::with_capacity(body.groups.len());
    for g in &body.groups {
        let group_id = g.0.to_string();
        let call = GroupCall::Describe {
            group_ids: vec![group_id.clone()],
        };
        let described = match call_coordinator_as(
            &context,
            &request.session,
            crate::acl::operation::DESCRIBE,
            &group_id,
            call,
        )
        .await
        {
            Ok(GroupReply::Describe(mut found)) if found.len() == 1 => found.remove(0),
            other => crate::msg!(DescribedGroup {
                error_code: other.err().unwrap_or_else(unexpected),
                group_id: g.clone(),
                authorized_operations: i32::MIN,
            }),
        };
        groups.push(described);
    }
    if request.version() >= 3 && body.include_authorized_operations {
        // Kafka's group operations (READ, DELETE, DESCRIBE) the client may perform: all of
        // them with no authorizer.
        use crate::acl::{operation, resource_type};
        for g in groups.iter_mut().filter(|g| g.error_code == 0) {
            g.authorized_operations = [operation::READ, operation::DELETE, operation::DESCRIBE]
                .into_iter()
                .filter(|&op| {
                    context.authorize(
                        &request.session,
                        op,
                        resource_type::GROUP,
                        g.group_id.0.as_str(),
                    )
                })
                .fold(0, |bits, op| bits | (1 << op));
        }
    } else {
        for g in &mut groups {
            g.authorized_operations = i32::MIN;
        }
    }
    request.respond(&crate::msg!(DescribeGroupsResponse { groups }))
}
