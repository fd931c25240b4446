//! CreateTopics (key 19), versions 2 to 7.
//!
//! Owner: the connection's shard checks the request (partition counts, replication factors,
//! replica assignments, duplicates), then shard 0's controller validates names and configs
//! against the authoritative table and commits the topics that pass. Each topic succeeds or
//! fails on its own, as in Kafka.
//!
//! One broker: a replication factor above 1 cannot be met (INVALID_REPLICATION_FACTOR); -1 means
//! `default.replication.factor`, and -1 partitions means `num.partitions`. A manual assignment
//! must place every partition on this broker alone. From v5 a successful answer carries the
//! partition count, replication factor and every effective config with its source.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::acl::Session;
use crate::broker::ShardContext;
use crate::config::topic;
use crate::kafka::admin::{self, text, topic_name};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::{ControllerRequest, NewTopic, TopicImage};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 7 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::CreateTopics,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: CreateTopicsRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let response = create_topics(&context, &request.session, body).await;
        request.respond(&response)
    }
    .boxed_local()
}

/// Carries out a CreateTopics request; also used to auto-create topics.
pub async fn create_topics(
    context: &Rc<ShardContext>,
    session: &Session,
    body: CreateTopicsRequest,
) -> CreateTopicsResponse {
    use crate::acl::{CLUSTER_NAME, operation, resource_type};
    let may_create_any = context.authorize(
        session,
        operation::CREATE,
        resource_type::CLUSTER,
        CLUSTER_NAME,
    );
    // Kafka refuses every entry of a name that appears more than once.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for topic in &body.topics {
        *counts.entry(topic.name.0.to_string()).or_default() += 1;
    }
    let mut results: Vec<Option<CreatableTopicResult>> = Vec::new();
    let mut planned: Vec<(usize, NewTopic, i16)> = Vec::new();
    let mut answered: Vec<String> = Vec::new();
    for topic in body.topics {
        let name = topic.name.0.to_string();
        if answered.contains(&name) {
            continue;
        }
        answered.push(name.clone());
        if counts[&name] > 1 {
            results.push(Some(failure(
                &name,
                ResponseError::InvalidRequest.code(),
                format!(
                    "Create topics request from client contains multiple entries for the \
                     following topics: {name}"
                ),
            )));
            continue;
        }
        if !may_create_any
            && !context.authorize(session, operation::CREATE, resource_type::TOPIC, &name)
        {
            results.push(Some(failure(
                &name,
                ResponseError::TopicAuthorizationFailed.code(),
                "Authorization failed.".to_string(),
            )));
            continue;
        }
        match check_request_topic(context, &topic) {
            Ok((new_topic, replication_factor)) => {
                planned.push((results.len(), new_topic, replication_factor));
                results.push(None);
            }
            Err((code, message)) => results.push(Some(failure(&name, code, message))),
        }
    }

    if !planned.is_empty() {
        let request = ControllerRequest::CreateTopics {
            topics: planned.iter().map(|(_, t, _)| t.clone()).collect(),
            validate_only: body.validate_only,
        };
        match admin::call_controller(context, request).await {
            Ok(outcomes) => {
                for ((slot, new_topic, replication_factor), outcome) in planned.iter().zip(outcomes)
                {
                    results[*slot] = Some(match outcome {
                        Ok(created) => success(context, &created, *replication_factor),
                        Err(err) => {
                            let (code, message) = admin::metadata_failure(&err);
                            let mut result = failure(&new_topic.name, code, String::new());
                            result.error_message = message;
                            result
                        }
                    });
                }
            }
            Err((code, message)) => {
                for (slot, new_topic, _) in &planned {
                    results[*slot] = Some(failure(&new_topic.name, code, message.clone()));
                }
            }
        }
    }
    CreateTopicsResponse::default().with_topics(results.into_iter().flatten().collect())
}

/// Request-level checks; returns the topic to create and its replication factor.
fn check_request_topic(
    context: &ShardContext,
    topic: &CreatableTopic,
) -> Result<(NewTopic, i16), (i16, String)> {
    let config = &context.config;
    let node_id = context.identity.node_id;
    // Under a controller quorum the controller places replicas over the registered brokers
    // and checks assignments against them; a lone node holds one replica of everything.
    let clustered = !config.quorum.voters.is_empty();
    let mut assignments = Vec::new();
    let mut partitions = topic.num_partitions;
    let mut replication_factor = topic.replication_factor;
    if !topic.assignments.is_empty() {
        if partitions != -1 || replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest.code(),
                "Both numPartitions or replicationFactor and replicasAssignments were set. \
                 Both cannot be used at the same time."
                    .to_string(),
            ));
        }
        let mut indexes: Vec<i32> = topic
            .assignments
            .iter()
            .map(|a| a.partition_index)
            .collect();
        indexes.sort_unstable();
        if indexes.iter().enumerate().any(|(i, &p)| p != i as i32) {
            return Err((
                ResponseError::InvalidReplicaAssignment.code(),
                "Partitions should be a consecutive 0-based integer sequence".to_string(),
            ));
        }
        let mut sorted: Vec<_> = topic.assignments.iter().collect();
        sorted.sort_by_key(|a| a.partition_index);
        assignments = sorted
            .iter()
            .map(|a| a.broker_ids.iter().map(|b| b.0).collect::<Vec<i32>>())
            .collect();
        for assignment in topic.assignments.iter().filter(|_| !clustered) {
            if assignment.broker_ids.iter().any(|b| b.0 != node_id) {
                return Err((
                    ResponseError::InvalidReplicaAssignment.code(),
                    format!(
                        "Replica assignment {:?} names a broker other than {node_id}, the only \
                         broker in this cluster",
                        assignment
                            .broker_ids
                            .iter()
                            .map(|b| b.0)
                            .collect::<Vec<_>>()
                    ),
                ));
            }
            if assignment.broker_ids.len() != 1 {
                return Err((
                    ResponseError::InvalidReplicationFactor.code(),
                    "All partitions must have exactly one replica in a one-broker cluster"
                        .to_string(),
                ));
            }
        }
        partitions = topic.assignments.len() as i32;
        replication_factor = assignments.first().map_or(1, |a| a.len() as i16);
    }
    if partitions == -1 {
        partitions = config.num_partitions;
    }
    if partitions < 1 {
        return Err((
            ResponseError::InvalidPartitions.code(),
            "Number of partitions must be larger than 0, or -1 to use the default value."
                .to_string(),
        ));
    }
    if replication_factor == -1 {
        replication_factor = config.default_replication_factor;
    }
    if replication_factor < 1 {
        return Err((
            ResponseError::InvalidReplicationFactor.code(),
            "Replication factor must be larger than 0, or -1 to use the default value.".to_string(),
        ));
    }
    if replication_factor > 1 && !clustered {
        return Err((
            ResponseError::InvalidReplicationFactor.code(),
            format!(
                "Unable to replicate the partition {replication_factor} time(s): The target \
                 replication factor of {replication_factor} cannot be reached because only 1 \
                 broker(s) are registered."
            ),
        ));
    }
    let mut configs = BTreeMap::new();
    for entry in &topic.configs {
        let key = entry.name.to_string();
        let Some(value) = &entry.value else {
            return Err((
                ResponseError::InvalidConfig.code(),
                topic::TopicConfigError::NullValue(key).to_string(),
            ));
        };
        configs.insert(key, value.to_string());
    }
    Ok((
        NewTopic {
            name: topic.name.0.to_string(),
            partitions,
            configs,
            replication_factor,
            assignments,
            ..NewTopic::default()
        },
        replication_factor,
    ))
}

fn failure(name: &str, code: i16, message: String) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(topic_name(name))
        .with_error_code(code)
        .with_error_message((!message.is_empty()).then(|| text(message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

fn success(
    context: &ShardContext,
    topic: &TopicImage,
    replication_factor: i16,
) -> CreatableTopicResult {
    let image = context.image();
    let configs = topic::resolve_all(&topic.configs, &image.broker_values(&context.config))
        .into_iter()
        .map(|resolved| {
            CreatableTopicConfigs::default()
                .with_name(text(resolved.def.name))
                .with_value(Some(text(resolved.value)))
                .with_read_only(false)
                .with_config_source(resolved.source.kafka_code())
                .with_is_sensitive(false)
        })
        .collect();
    CreatableTopicResult::default()
        .with_name(topic_name(topic.name.clone()))
        .with_topic_id(topic.id)
        .with_num_partitions(topic.partitions)
        .with_replication_factor(replication_factor)
        .with_configs(Some(configs))
}
