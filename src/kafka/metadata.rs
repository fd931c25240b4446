//! Metadata (key 3), versions 0 to 12: brokers, cluster id, controller, topics and partitions.
//!
//! Owner: any shard; answers from the shard's current metadata image, without a cross-shard
//! call. The broker is a cluster of one: it is every partition's leader and only replica, and
//! the controller. Leader epochs are 0 until replication exists.
//!
//! Which topics: a null list (v1+) or an empty list at v0 means all topics; otherwise the
//! topics named (by name, or by id from v10), each once, in request order. A topic that does
//! not exist is answered UNKNOWN_TOPIC_OR_PARTITION (UNKNOWN_TOPIC_ID when asked by id), and
//! an illegal name INVALID_TOPIC_EXCEPTION. With `auto.create.topics.enable` (and, from v4, the
//! request's `allow_auto_topic_creation`) an unknown topic named in the request is created
//! with `num.partitions` partitions through the controller and answered LEADER_NOT_AVAILABLE,
//! as Kafka answers the request that creates a topic; the client's retry finds it.
//!
//! With an authorizer (`crate::acl`): a topic the client may not DESCRIBE is left out of an
//! all-topics answer and answered TOPIC_AUTHORIZATION_FAILED when named; auto-creation needs
//! CREATE on the cluster or on the topic (without it an unknown topic stays
//! UNKNOWN_TOPIC_OR_PARTITION); authorized-operations bit sets come from the authorizer.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tracing::debug;
use uuid::Uuid;

use crate::acl;
use crate::broker::ShardContext;
use crate::broker::error;
use crate::kafka::admin;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::metadata::topic_name::validate_topic_name;
use crate::metadata::{ControllerRequest, NewTopic, TopicImage};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 12 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::Metadata,
    versions: VERSIONS,
    handle,
};

/// Kafka's `AclOperation` codes, for the authorized-operations bit sets. With no authorizer
/// configured, Kafka reports every operation that applies to the resource as allowed.
mod acl_operation {
    pub const READ: i32 = 3;
    pub const WRITE: i32 = 4;
    pub const CREATE: i32 = 5;
    pub const DELETE: i32 = 6;
    pub const ALTER: i32 = 7;
    pub const DESCRIBE: i32 = 8;
    pub const CLUSTER_ACTION: i32 = 9;
    pub const DESCRIBE_CONFIGS: i32 = 10;
    pub const ALTER_CONFIGS: i32 = 11;
    pub const IDEMPOTENT_WRITE: i32 = 12;
}

fn bits(operations: &[i32]) -> i32 {
    operations.iter().fold(0, |acc, op| acc | (1 << op))
}

fn topic_operations() -> i32 {
    use acl_operation::*;
    bits(&[
        READ,
        WRITE,
        CREATE,
        DELETE,
        ALTER,
        DESCRIBE,
        DESCRIBE_CONFIGS,
        ALTER_CONFIGS,
    ])
}

/// The cluster operations allowed with no authorizer configured.
pub fn cluster_operations() -> i32 {
    use acl_operation::*;
    bits(&[
        CREATE,
        ALTER,
        DESCRIBE,
        CLUSTER_ACTION,
        DESCRIBE_CONFIGS,
        ALTER_CONFIGS,
        IDEMPOTENT_WRITE,
    ])
}

/// Kafka's "operations not requested" marker.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: MetadataRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let created = auto_create(&context, &request, &body).await;
        answer(&context, &request, &body, &created)
    }
    .boxed_local()
}

/// Creates the unknown, validly named topics the request asks for, when both the broker
/// (`auto.create.topics.enable`) and the request (v4+: `allow_auto_topic_creation`) allow it.
/// Returns the names whose creation was attempted: like Kafka, the response reports them as
/// LEADER_NOT_AVAILABLE, and the client's next Metadata request finds them.
async fn auto_create(
    context: &Rc<ShardContext>,
    request: &Request,
    body: &MetadataRequest,
) -> Vec<String> {
    let allowed = request.version() < 4 || body.allow_auto_topic_creation;
    if !allowed || !context.config.auto_create_topics_enable {
        return Vec::new();
    }
    let image = context.image();
    let session = &request.session;
    let may_create_any = context.authorize(
        session,
        acl::operation::CREATE,
        acl::resource_type::CLUSTER,
        acl::CLUSTER_NAME,
    );
    let mut missing: Vec<String> = Vec::new();
    for wanted in body.topics.iter().flatten() {
        if let Some(name) = &wanted.name {
            let name = name.0.as_str();
            let topic = acl::resource_type::TOPIC;
            if image.topic(name).is_none()
                && validate_topic_name(name).is_ok()
                && !missing.iter().any(|m| m == name)
                && context.authorize(session, acl::operation::DESCRIBE, topic, name)
                && (may_create_any
                    || context.authorize(session, acl::operation::CREATE, topic, name))
            {
                missing.push(name.to_string());
            }
        }
    }
    if missing.is_empty() {
        return missing;
    }
    let request = ControllerRequest::CreateTopics {
        topics: missing
            .iter()
            .map(|name| NewTopic {
                name: name.clone(),
                partitions: context.config.num_partitions,
                configs: Default::default(),
            })
            .collect(),
        validate_only: false,
    };
    if let Err((code, message)) = admin::call_controller(context, request).await {
        debug!(code, %message, "auto-creating topics failed");
    }
    missing
}

fn answer(
    context: &ShardContext,
    request: &Request,
    body: &MetadataRequest,
    created: &[String],
) -> HandlerOutcome {
    let version = request.version();
    let image = context.image();
    let node_id = context.identity.node_id;
    let include_topic_operations = version >= 8 && body.include_topic_authorized_operations;
    let session = &request.session;
    let may_describe = |name: &str| {
        context.authorize(
            session,
            acl::operation::DESCRIBE,
            acl::resource_type::TOPIC,
            name,
        )
    };
    let describe = |topic: &TopicImage| {
        let operations = if include_topic_operations {
            authorized_operations(context, request, acl::resource_type::TOPIC, &topic.name)
        } else {
            OPERATIONS_NOT_REQUESTED
        };
        describe_topic(topic, node_id, operations)
    };

    let all_topics = match &body.topics {
        None => true,
        Some(list) => list.is_empty() && version == 0,
    };
    let topics: Vec<MetadataResponseTopic> = if all_topics {
        // Listing every topic leaves out the ones the client may not describe.
        image
            .topics
            .values()
            .filter(|t| may_describe(&t.name))
            .map(describe)
            .collect()
    } else {
        let mut seen_names: Vec<&str> = Vec::new();
        let mut seen_ids: Vec<Uuid> = Vec::new();
        let mut answered = Vec::new();
        for wanted in body.topics.iter().flatten() {
            match &wanted.name {
                Some(name) => {
                    let name = name.0.as_str();
                    if seen_names.contains(&name) {
                        continue;
                    }
                    seen_names.push(name);
                    answered.push(match image.topic(name) {
                        _ if !may_describe(name) => topic_error(
                            Some(name),
                            Uuid::nil(),
                            ResponseError::TopicAuthorizationFailed,
                        ),
                        _ if created.iter().any(|c| c == name) => {
                            topic_error(Some(name), Uuid::nil(), ResponseError::LeaderNotAvailable)
                        }
                        Some(topic) => describe(topic),
                        None if validate_topic_name(name).is_err() => topic_error(
                            Some(name),
                            Uuid::nil(),
                            ResponseError::InvalidTopicException,
                        ),
                        None => topic_error(
                            Some(name),
                            Uuid::nil(),
                            ResponseError::UnknownTopicOrPartition,
                        ),
                    });
                }
                None => {
                    if seen_ids.contains(&wanted.topic_id) {
                        continue;
                    }
                    seen_ids.push(wanted.topic_id);
                    answered.push(match image.topic_by_id(wanted.topic_id) {
                        Some(topic) if !wanted.topic_id.is_nil() && !may_describe(&topic.name) => {
                            topic_error(
                                None,
                                wanted.topic_id,
                                ResponseError::TopicAuthorizationFailed,
                            )
                        }
                        Some(topic) if !wanted.topic_id.is_nil() => describe(topic),
                        _ => topic_error(None, wanted.topic_id, ResponseError::UnknownTopicId),
                    });
                }
            }
        }
        answered
    };

    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(node_id))
        .with_host(StrBytes::from_string(context.advertised.host.clone()))
        .with_port(i32::from(context.advertised.port));
    let mut response = MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(StrBytes::from_string(
            context.identity.cluster_id.clone(),
        )))
        .with_controller_id(BrokerId(node_id))
        .with_topics(topics);
    if (8..=10).contains(&version) && body.include_cluster_authorized_operations {
        response = response.with_cluster_authorized_operations(authorized_operations(
            context,
            request,
            acl::resource_type::CLUSTER,
            acl::CLUSTER_NAME,
        ));
    }
    request.respond(&response)
}

/// The operations on a topic or the cluster the request's principal may perform, as Kafka's
/// authorized-operations bit set: every operation that applies to the resource with no
/// authorizer configured, else the ones the authorizer allows.
pub fn authorized_operations(
    context: &ShardContext,
    request: &Request,
    resource_type: i8,
    name: &str,
) -> i32 {
    let all = if resource_type == acl::resource_type::CLUSTER {
        cluster_operations()
    } else {
        topic_operations()
    };
    if context.config.authorizer.is_none() {
        return all;
    }
    (0..32)
        .filter(|bit| all & (1 << bit) != 0)
        .filter(|&bit| context.authorize(&request.session, bit as i8, resource_type, name))
        .fold(0, |acc, bit| acc | (1 << bit))
}

fn describe_topic(topic: &TopicImage, node_id: i32, operations: i32) -> MetadataResponseTopic {
    let partitions = (0..topic.partitions)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_error_code(error::NONE)
                .with_partition_index(index)
                .with_leader_id(BrokerId(node_id))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node_id)])
                .with_isr_nodes(vec![BrokerId(node_id)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(error::NONE)
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.is_internal())
        .with_partitions(partitions)
        .with_topic_authorized_operations(operations)
}

fn topic_error(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
        .with_topic_id(id)
        .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_bit_sets_match_kafka() {
        // Topics: READ..DESCRIBE (bits 3 to 8), DESCRIBE_CONFIGS and ALTER_CONFIGS (10, 11).
        // Cluster: CREATE (5), ALTER to IDEMPOTENT_WRITE (7 to 12).
        assert_eq!(topic_operations(), 3576);
        assert_eq!(cluster_operations(), 8096);
    }
}
