//! CreateAcls (key 30), versions 1 to 3: add ACLs.
//!
//! Owner: the connection's shard checks the request; shard 0's controller writes the new ACLs
//! to the metadata log and broadcasts the image, so every shard enforces them from then on.
//!
//! As Kafka: without an authorizer (`authorizer.class.name` empty) every creation gets
//! SECURITY_DISABLED; the caller needs ALTER on the cluster (else CLUSTER_AUTHORIZATION_FAILED
//! for every creation); each ACL is validated on its own (INVALID_REQUEST with the reason:
//! unknown or filter-only codes, empty names, a CLUSTER name other than `kafka-cluster`, a
//! principal that is not `Type:Name`), and the valid ones are committed together. Creating an
//! ACL that exists already succeeds without a change. Version 0 (no pattern type) is not
//! served: the schema crate no longer has it, and clients since Kafka 2.0 use v1.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{ApiKey, CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{AclBinding, CLUSTER_NAME, operation, resource_type};
use crate::broker::ShardContext;
use crate::kafka::admin::{self, text};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::ControllerRequest;

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::CreateAcls,
    versions: VersionRange { min: 1, max: 3 },
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: CreateAclsRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let failed_all = |code: i16, message: &str| {
            let results = body
                .creations
                .iter()
                .map(|_| {
                    AclCreationResult::default()
                        .with_error_code(code)
                        .with_error_message(Some(text(message)))
                })
                .collect();
            request.respond(&CreateAclsResponse::default().with_results(results))
        };
        if context.config.authorizer.is_none() {
            return failed_all(
                ResponseError::SecurityDisabled.code(),
                "No Authorizer is configured on the broker",
            );
        }
        if !context.authorize(
            &request.session,
            operation::ALTER,
            resource_type::CLUSTER,
            CLUSTER_NAME,
        ) {
            return failed_all(
                ResponseError::ClusterAuthorizationFailed.code(),
                "Cluster authorization failed.",
            );
        }
        let mut results: Vec<Option<(i16, String)>> = Vec::with_capacity(body.creations.len());
        let mut valid = Vec::new();
        for creation in &body.creations {
            let acl = AclBinding {
                resource_type: creation.resource_type,
                resource_name: creation.resource_name.to_string(),
                pattern_type: creation.resource_pattern_type,
                principal: creation.principal.to_string(),
                host: creation.host.to_string(),
                operation: creation.operation,
                permission: creation.permission_type,
            };
            match acl.validate() {
                Ok(()) => {
                    valid.push(acl);
                    results.push(None);
                }
                Err(err) => results.push(Some((ResponseError::InvalidRequest.code(), err.0))),
            }
        }
        let outcome = if valid.is_empty() {
            Ok(())
        } else {
            admin::alter_through_controller(&context, ControllerRequest::CreateAcls { acls: valid })
                .await
        };
        let results = results
            .into_iter()
            .map(|refused| {
                let failure = refused.or_else(|| outcome.clone().err());
                match failure {
                    None => AclCreationResult::default().with_error_message(None),
                    Some((code, message)) => AclCreationResult::default()
                        .with_error_code(code)
                        .with_error_message(Some(text(message))),
                }
            })
            .collect();
        request.respond(&CreateAclsResponse::default().with_results(results))
    }
    .boxed_local()
}
