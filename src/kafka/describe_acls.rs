//! DescribeAcls (key 29), versions 1 to 3: list the ACLs a filter matches.
//!
//! Owner: any shard; answered from the shard's metadata image, without a cross-shard call.
//!
//! As Kafka: SECURITY_DISABLED without an authorizer; the caller needs DESCRIBE on the cluster
//! (CLUSTER_AUTHORIZATION_FAILED); a filter with unknown codes is INVALID_REQUEST. Matches are
//! grouped by resource pattern. Version 0 is not served (see `create_acls`).

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{ApiKey, DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{AclFilter, CLUSTER_NAME, operation, resource_type};
use crate::broker::ShardContext;
use crate::kafka::admin::text;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeAcls,
    versions: VersionRange { min: 1, max: 3 },
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    futures::future::ready(answer(&context, &request)).boxed_local()
}

fn answer(context: &ShardContext, request: &Request) -> HandlerOutcome {
    let body: DescribeAclsRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let failed = |code: i16, message: String| {
        request.respond(
            &DescribeAclsResponse::default()
                .with_error_code(code)
                .with_error_message(Some(text(message))),
        )
    };
    if context.config.authorizer.is_none() {
        return failed(
            ResponseError::SecurityDisabled.code(),
            "No Authorizer is configured on the broker".to_string(),
        );
    }
    if !context.authorize(
        &request.session,
        operation::DESCRIBE,
        resource_type::CLUSTER,
        CLUSTER_NAME,
    ) {
        return failed(
            ResponseError::ClusterAuthorizationFailed.code(),
            "Cluster authorization failed.".to_string(),
        );
    }
    let filter = AclFilter {
        resource_type: body.resource_type_filter,
        resource_name: body.resource_name_filter.map(|s| s.to_string()),
        pattern_type: body.pattern_type_filter,
        principal: body.principal_filter.map(|s| s.to_string()),
        host: body.host_filter.map(|s| s.to_string()),
        operation: body.operation,
        permission: body.permission_type,
    };
    if let Err(err) = filter.validate() {
        return failed(ResponseError::InvalidRequest.code(), err.0);
    }
    let image = context.image();
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    // The set iterates in resource-pattern order, so equal patterns are adjacent.
    for acl in image.acls.matching(&filter) {
        let same = resources.last().is_some_and(|r| {
            r.resource_type == acl.resource_type
                && r.pattern_type == acl.pattern_type
                && r.resource_name.as_str() == acl.resource_name
        });
        if !same {
            resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(acl.resource_type)
                    .with_resource_name(text(acl.resource_name.clone()))
                    .with_pattern_type(acl.pattern_type),
            );
        }
        let description = AclDescription::default()
            .with_principal(text(acl.principal))
            .with_host(text(acl.host))
            .with_operation(acl.operation)
            .with_permission_type(acl.permission);
        resources
            .last_mut()
            .expect("pushed above")
            .acls
            .push(description);
    }
    request.respond(
        &DescribeAclsResponse::default()
            .with_error_message(None)
            .with_resources(resources),
    )
}
