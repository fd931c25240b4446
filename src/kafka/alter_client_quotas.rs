//! AlterClientQuotas (key 49), versions 0-1: set and remove client quotas (KIP-546).
//!
//! Owner: the connection's shard checks the request; shard 0's controller writes the changes
//! to the metadata log and broadcasts the image, so every shard measures against them from
//! then on, connections already open included.
//!
//! As Kafka: the caller needs ALTER_CONFIGS on the cluster (else CLUSTER_AUTHORIZATION_FAILED
//! for every entry); one result per entry; an entry with a bad entity (none, a type twice, an
//! unknown type) or a bad operation (unknown key, a key twice, a value that is not a whole
//! positive number) gets INVALID_REQUEST and changes nothing; the others are committed
//! together (`validate_only`: checked, not committed). A removal is an operation with
//! `remove` set. Keys and entities Kafka has but this broker does not enforce
//! (`request_percentage`, `controller_mutation_rate`, `connection_creation_rate`, `ip`) are
//! refused with INVALID_REQUEST and a message that says so (`crate::quota`).

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse, ApiKey};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{CLUSTER_NAME, operation, resource_type};
use crate::broker::ShardContext;
use crate::broker::error;
use crate::kafka::admin::{self, text};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::ControllerRequest;
use crate::quota::{self, QuotaAlteration, QuotaError};

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::AlterClientQuotas,
    versions: VersionRange { min: 0, max: 1 },
    handle,
};

type Refusal = (i16, String);

fn refusal(err: QuotaError) -> Refusal {
    (error::quota_error_code(&err), err.to_string())
}

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: AlterClientQuotasRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let mut outcomes: Vec<Result<(), Refusal>> = vec![Ok(()); body.entries.len()];
        let respond = |outcomes: &[Result<(), Refusal>]| {
            let entries = body
                .entries
                .iter()
                .zip(outcomes)
                .map(|(entry, outcome)| {
                    let entity = entry
                        .entity
                        .iter()
                        .map(|e| {
                            EntityData::default()
                                .with_entity_type(e.entity_type.clone())
                                .with_entity_name(e.entity_name.clone())
                        })
                        .collect();
                    let result = EntryData::default().with_entity(entity);
                    match outcome {
                        Err((code, message)) => result
                            .with_error_code(*code)
                            .with_error_message(Some(text(message))),
                        Ok(()) => result,
                    }
                })
                .collect();
            request.respond(&AlterClientQuotasResponse::default().with_entries(entries))
        };
        if !context.authorize(
            &request.session,
            operation::ALTER_CONFIGS,
            resource_type::CLUSTER,
            CLUSTER_NAME,
        ) {
            let refused = vec![
                Err((
                    ResponseError::ClusterAuthorizationFailed.code(),
                    "Cluster authorization failed.".to_string()
                ));
                body.entries.len()
            ];
            return respond(&refused);
        }
        let mut alterations: Vec<QuotaAlteration> = Vec::new();
        let mut valid: Vec<usize> = Vec::new();
        for (i, entry) in body.entries.iter().enumerate() {
            let components: Vec<(&str, Option<&str>)> = entry
                .entity
                .iter()
                .map(|e| (e.entity_type.as_str(), e.entity_name.as_deref()))
                .collect();
            let checked = quota::check_entity(&components).and_then(|entity| {
                let ops = entry
                    .ops
                    .iter()
                    .map(|op| (op.key.to_string(), op.value, op.remove));
                Ok((entity, quota::check_ops(ops)?))
            });
            match checked {
                Ok(alteration) => {
                    alterations.push(alteration);
                    valid.push(i);
                }
                Err(err) => outcomes[i] = Err(refusal(err)),
            }
        }
        if !alterations.is_empty() {
            let alter = ControllerRequest::AlterClientQuotas {
                alterations,
                validate_only: body.validate_only,
            };
            let result = admin::alter_through_controller(&context, alter).await;
            for i in valid {
                outcomes[i] = result.clone();
            }
        }
        respond(&outcomes)
    }
    .boxed_local()
}
