//! AlterConfigs (key 33), versions 0 to 2, and IncrementalAlterConfigs (key 44), versions 0
//! to 1: change topic config overrides.
//!
//! Owner: the connection's shard turns each resource into a list of `ConfigOp`s; shard 0's
//! controller applies them to the authoritative overrides, checks every resulting value and
//! commits. AlterConfigs replaces a topic's whole override set (a key left out goes back to the
//! broker's value); IncrementalAlterConfigs applies SET, DELETE, APPEND and SUBTRACT to it.
//!
//! A BROKER resource changes dynamic broker settings: the resource named by this broker's node
//! id sets this broker's values (DYNAMIC_BROKER_CONFIG), the one named "" the cluster-wide
//! defaults (DYNAMIC_DEFAULT_BROKER_CONFIG). Only the broker-wide defaults of topic configs
//! (`log.retention.ms`, `log.segment.bytes`, ...) may change at runtime, as in Kafka; every
//! topic without its own override follows them at once. Other keys get INVALID_CONFIG.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::acl::Session;
use crate::broker::error;
use crate::broker::{ShardContext, ShardRequest, ShardResponse};
use crate::kafka::admin::{self, resource_type, text};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::controller::ConfigOp;
use crate::metadata::{ControllerRequest, ControllerResponse};
use crate::runtime::ShardId;

/// The dispatch table entry for AlterConfigs.
pub const ALTER_CONFIGS: ApiHandler = ApiHandler {
    key: ApiKey::AlterConfigs,
    versions: VersionRange { min: 0, max: 2 },
    handle: handle_alter,
};

/// The dispatch table entry for IncrementalAlterConfigs.
pub const INCREMENTAL_ALTER_CONFIGS: ApiHandler = ApiHandler {
    key: ApiKey::IncrementalAlterConfigs,
    versions: VersionRange { min: 0, max: 1 },
    handle: handle_incremental,
};

/// One resource to change, whichever API asked.
struct Change {
    resource_type: i8,
    resource_name: StrBytes,
    ops: Result<Vec<ConfigOp>, (i16, String)>,
    replace_all: bool,
}

/// Carries out the changes; returns `(error code, message)` per resource.
async fn apply(
    context: &Rc<ShardContext>,
    session: &Session,
    changes: Vec<Change>,
    validate_only: bool,
) -> Vec<(i16, Option<String>)> {
    let mut outcomes = Vec::with_capacity(changes.len());
    for change in changes {
        let name = change.resource_name.to_string();
        let refused = admin::config_resource_refused(
            context,
            session,
            crate::acl::operation::ALTER_CONFIGS,
            change.resource_type,
            &name,
        );
        let outcome = match (change.resource_type, change.ops) {
            _ if refused.is_some() => {
                let (code, message) = refused.expect("checked");
                (code, Some(message))
            }
            (_, Err((code, message))) => (code, Some(message)),
            (resource_type::TOPIC, Ok(ops)) => {
                let request = ControllerRequest::AlterTopicConfigs {
                    name,
                    ops,
                    replace_all: change.replace_all,
                    validate_only,
                };
                match admin::call_controller(context, request).await {
                    Ok(results) => match results.into_iter().next() {
                        Some(Err(err)) => {
                            let (code, message) = admin::metadata_failure(&err);
                            (code, message.map(|m| m.to_string()))
                        }
                        _ => (0, None),
                    },
                    Err((code, message)) => (code, Some(message)),
                }
            }
            (resource_type::BROKER, Ok(ops)) => {
                match admin::check_broker_resource(context, &name) {
                    Err(message) => (ResponseError::InvalidRequest.code(), Some(message)),
                    Ok(()) => {
                        let request =
                            ShardRequest::Controller(ControllerRequest::AlterBrokerConfigs {
                                per_node: !name.is_empty(),
                                ops,
                                replace_all: change.replace_all,
                                validate_only,
                            });
                        match context.router.call(ShardId::CONTROLLER, request).await {
                            Ok(ShardResponse::Controller(ControllerResponse::Altered(Ok(())))) => {
                                (0, None)
                            }
                            Ok(ShardResponse::Controller(ControllerResponse::Altered(Err(
                                err,
                            )))) => {
                                let (code, message) = admin::metadata_failure(&err);
                                (code, message.map(|m| m.to_string()))
                            }
                            Ok(other) => (
                                ResponseError::UnknownServerError.code(),
                                Some(format!("unexpected controller answer: {other:?}")),
                            ),
                            Err(err) => (error::router_error_code(&err), Some(err.to_string())),
                        }
                    }
                }
            }
            (other, Ok(_)) => (
                ResponseError::InvalidRequest.code(),
                Some(format!("Unsupported resource type {other}")),
            ),
        };
        outcomes.push(outcome);
    }
    outcomes
}

fn handle_alter(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: AlterConfigsRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let changes = body
            .resources
            .iter()
            .map(|resource| Change {
                resource_type: resource.resource_type,
                resource_name: resource.resource_name.clone(),
                ops: resource
                    .configs
                    .iter()
                    .map(|c| match &c.value {
                        Some(value) => Ok(ConfigOp::Set(c.name.to_string(), value.to_string())),
                        None => Err((
                            ResponseError::InvalidConfig.code(),
                            format!("Null value not supported for topic configs: {}", c.name),
                        )),
                    })
                    .collect(),
                replace_all: true,
            })
            .collect::<Vec<_>>();
        let kinds: Vec<(i8, StrBytes)> = changes
            .iter()
            .map(|c| (c.resource_type, c.resource_name.clone()))
            .collect();
        let outcomes = apply(&context, &request.session, changes, body.validate_only).await;
        let responses = kinds
            .into_iter()
            .zip(outcomes)
            .map(|((kind, name), (code, message))| {
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(kind)
                    .with_resource_name(name)
                    .with_error_code(code)
                    .with_error_message(message.map(text))
            })
            .collect();
        request.respond(&AlterConfigsResponse::default().with_responses(responses))
    }
    .boxed_local()
}

fn handle_incremental(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: IncrementalAlterConfigsRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let changes = body
            .resources
            .iter()
            .map(|resource| {
                let mut seen: Vec<&str> = Vec::new();
                let ops = resource
                    .configs
                    .iter()
                    .map(|c| {
                        let key = c.name.as_str();
                        if seen.contains(&key) {
                            return Err((
                                ResponseError::InvalidRequest.code(),
                                format!("Error due to duplicate config keys: {key}"),
                            ));
                        }
                        seen.push(key);
                        let value = c.value.as_ref().map(|v| v.to_string());
                        let need_value = |v: Option<String>| {
                            v.ok_or_else(|| {
                                (
                                    ResponseError::InvalidRequest.code(),
                                    format!("Null value not supported for {key}"),
                                )
                            })
                        };
                        Ok(match c.config_operation {
                            0 => ConfigOp::Set(key.to_string(), need_value(value)?),
                            1 => ConfigOp::Delete(key.to_string()),
                            2 => ConfigOp::Append(key.to_string(), need_value(value)?),
                            3 => ConfigOp::Subtract(key.to_string(), need_value(value)?),
                            other => {
                                return Err((
                                    ResponseError::InvalidRequest.code(),
                                    format!("Unknown config operation {other} for {key}"),
                                ));
                            }
                        })
                    })
                    .collect();
                Change {
                    resource_type: resource.resource_type,
                    resource_name: resource.resource_name.clone(),
                    ops,
                    replace_all: false,
                }
            })
            .collect::<Vec<_>>();
        let kinds: Vec<(i8, StrBytes)> = changes
            .iter()
            .map(|c| (c.resource_type, c.resource_name.clone()))
            .collect();
        let outcomes = apply(&context, &request.session, changes, body.validate_only).await;
        let responses = kinds
            .into_iter()
            .zip(outcomes)
            .map(|((kind, name), (code, message))| {
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(kind)
                    .with_resource_name(name)
                    .with_error_code(code)
                    .with_error_message(message.map(text))
            })
            .collect();
        request.respond(&IncrementalAlterConfigsResponse::default().with_responses(responses))
    }
    .boxed_local()
}
