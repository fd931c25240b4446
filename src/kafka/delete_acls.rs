//! DeleteAcls (key 31), versions 1 to 3: remove the ACLs each filter matches.
//!
//! Owner: the connection's shard checks the request; shard 0's controller removes the matching
//! ACLs through the metadata log and broadcasts the image.
//!
//! As Kafka: SECURITY_DISABLED without an authorizer; the caller needs ALTER on the cluster
//! (CLUSTER_AUTHORIZATION_FAILED); a filter with unknown codes is INVALID_REQUEST on its own;
//! each filter's result lists the ACLs it removed. Version 0 is not served (see
//! `create_acls`).

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{ApiKey, DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{AclFilter, CLUSTER_NAME, operation, resource_type};
use crate::broker::error;
use crate::broker::{ShardContext, ShardRequest, ShardResponse};
use crate::kafka::admin::text;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::{ControllerRequest, ControllerResponse};
use crate::runtime::ShardId;

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DeleteAcls,
    versions: VersionRange { min: 1, max: 3 },
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: DeleteAclsRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let failure = |code: i16, message: String| {
            DeleteAclsFilterResult::default()
                .with_error_code(code)
                .with_error_message(Some(text(message)))
        };
        let global = if context.config.authorizer.is_none() {
            Some((
                ResponseError::SecurityDisabled.code(),
                "No Authorizer is configured on the broker",
            ))
        } else if !context.authorize(
            &request.session,
            operation::ALTER,
            resource_type::CLUSTER,
            CLUSTER_NAME,
        ) {
            Some((
                ResponseError::ClusterAuthorizationFailed.code(),
                "Cluster authorization failed.",
            ))
        } else {
            None
        };
        if let Some((code, message)) = global {
            let results = body
                .filters
                .iter()
                .map(|_| failure(code, message.to_string()))
                .collect();
            return request.respond(&DeleteAclsResponse::default().with_filter_results(results));
        }
        let mut slots: Vec<Result<usize, (i16, String)>> = Vec::new();
        let mut filters = Vec::new();
        for f in body.filters {
            let filter = AclFilter {
                resource_type: f.resource_type_filter,
                resource_name: f.resource_name_filter.map(|s| s.to_string()),
                pattern_type: f.pattern_type_filter,
                principal: f.principal_filter.map(|s| s.to_string()),
                host: f.host_filter.map(|s| s.to_string()),
                operation: f.operation,
                permission: f.permission_type,
            };
            match filter.validate() {
                Ok(()) => {
                    filters.push(filter);
                    slots.push(Ok(filters.len() - 1));
                }
                Err(err) => slots.push(Err((ResponseError::InvalidRequest.code(), err.0))),
            }
        }
        let deleted = if filters.is_empty() {
            Ok(Vec::new())
        } else {
            let delete = ShardRequest::Controller(ControllerRequest::DeleteAcls { filters });
            match context.router.call(ShardId::CONTROLLER, delete).await {
                Ok(ShardResponse::Controller(ControllerResponse::AclsDeleted(result))) => {
                    result.map_err(|err| (error::metadata_error_code(&err), err.to_string()))
                }
                Ok(other) => Err((
                    ResponseError::UnknownServerError.code(),
                    format!("unexpected controller answer: {other:?}"),
                )),
                Err(err) => Err((error::router_error_code(&err), err.to_string())),
            }
        };
        let results = slots
            .into_iter()
            .map(|slot| match (slot, &deleted) {
                (Err((code, message)), _) => failure(code, message),
                (Ok(_), Err((code, message))) => failure(*code, message.clone()),
                (Ok(index), Ok(deleted)) => {
                    let matching = deleted[index]
                        .iter()
                        .map(|acl| {
                            DeleteAclsMatchingAcl::default()
                                .with_error_message(None)
                                .with_resource_type(acl.resource_type)
                                .with_resource_name(text(acl.resource_name.clone()))
                                .with_pattern_type(acl.pattern_type)
                                .with_principal(text(acl.principal.clone()))
                                .with_host(text(acl.host.clone()))
                                .with_operation(acl.operation)
                                .with_permission_type(acl.permission)
                        })
                        .collect();
                    DeleteAclsFilterResult::default()
                        .with_error_message(None)
                        .with_matching_acls(matching)
                }
            })
            .collect();
        request.respond(&DeleteAclsResponse::default().with_filter_results(results))
    }
    .boxed_local()
}
