//! What the admin handlers (CreateTopics, DeleteTopics, CreatePartitions, the config APIs)
//! share: the call to the controller and small conversions.
//!
//! Owner: runs on the shard that holds the client's connection; the change itself happens on
//! shard 0, reached through the router.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

use crate::acl::{self, Session};
use crate::broker::error;
use crate::broker::{ShardContext, ShardRequest, ShardResponse};
use crate::metadata::{
    ControllerRequest, ControllerResponse, ControllerResults, MetadataError, client,
};
use crate::runtime::ShardId;

/// Sends `request` to the controller (`metadata::client::call_controller`). An `Err` is a
/// failure of the whole request (the controller could not be reached), as a Kafka error code
/// and message.
pub async fn call_controller(
    context: &Rc<ShardContext>,
    request: ControllerRequest,
) -> Result<ControllerResults, (i16, String)> {
    client::call_controller(context.as_ref(), request)
        .await
        .map_err(|err| (error::controller_call_error_code(&err), err.to_string()))
}

/// Sends a change that has one outcome for the whole request (client quotas, SCRAM
/// credentials, ACL creations) to the controller on shard 0: `Ok` once committed, else the
/// Kafka code and message to answer every item of it with.
pub async fn alter_through_controller(
    context: &ShardContext,
    request: ControllerRequest,
) -> Result<(), (i16, String)> {
    let request = ShardRequest::Controller(request);
    match context.router.call(ShardId::CONTROLLER, request).await {
        Ok(ShardResponse::Controller(ControllerResponse::Altered(result))) => {
            result.map_err(|err| (error::metadata_error_code(&err), err.to_string()))
        }
        Ok(other) => Err((
            ResponseError::UnknownServerError.code(),
            format!("unexpected controller answer: {other:?}"),
        )),
        Err(err) => Err((error::router_error_code(&err), err.to_string())),
    }
}

/// The Kafka code and message of a per-item metadata failure.
pub fn metadata_failure(err: &MetadataError) -> (i16, Option<StrBytes>) {
    (error::metadata_error_code(err), Some(text(err.to_string())))
}

/// A protocol string from owned text.
pub fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// A protocol topic name from owned text.
pub fn topic_name(value: impl Into<String>) -> TopicName {
    TopicName(text(value))
}

/// Kafka's `ConfigResource.Type` codes.
pub mod resource_type {
    /// A topic.
    pub const TOPIC: i8 = 2;
    /// A broker (name: the node id, or empty for the cluster-wide default).
    pub const BROKER: i8 = 4;
    /// A broker's loggers.
    pub const BROKER_LOGGER: i8 = 8;
}

/// Checks that a BROKER resource names this broker: its node id, or empty (the cluster-wide
/// default, which on a one-broker cluster is this broker).
pub fn check_broker_resource(context: &ShardContext, name: &str) -> Result<(), String> {
    if name.is_empty() || name.parse::<i32>() == Ok(context.identity.node_id) {
        Ok(())
    } else {
        Err(format!(
            "Unexpected broker id, expected {} or empty string, but received {name}",
            context.identity.node_id
        ))
    }
}

/// Kafka's answer when `session` may not perform `operation` (DESCRIBE_CONFIGS or
/// ALTER_CONFIGS) on a config resource: TOPIC_AUTHORIZATION_FAILED for a topic,
/// CLUSTER_AUTHORIZATION_FAILED for a broker (brokers are authorized as the cluster). `None`
/// when allowed, and for resource types the handlers refuse anyway.
pub fn config_resource_refused(
    context: &ShardContext,
    session: &Session,
    operation: i8,
    config_resource: i8,
    name: &str,
) -> Option<(i16, String)> {
    let (acl_resource, acl_name, code) = match config_resource {
        resource_type::TOPIC => (
            acl::resource_type::TOPIC,
            name,
            ResponseError::TopicAuthorizationFailed,
        ),
        resource_type::BROKER => (
            acl::resource_type::CLUSTER,
            acl::CLUSTER_NAME,
            ResponseError::ClusterAuthorizationFailed,
        ),
        _ => return None,
    };
    if context.authorize(session, operation, acl_resource, acl_name) {
        None
    } else {
        Some((code.code(), "Authorization failed.".to_string()))
    }
}

/// Kafka's answer when `session` may not perform `operation` on topic `name`.
pub fn topic_refused(
    context: &ShardContext,
    session: &Session,
    operation: i8,
    name: &str,
) -> Option<(i16, String)> {
    if context.authorize(session, operation, acl::resource_type::TOPIC, name) {
        None
    } else {
        Some((
            ResponseError::TopicAuthorizationFailed.code(),
            "Authorization failed.".to_string(),
        ))
    }
}
