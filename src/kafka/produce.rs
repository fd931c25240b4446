//! Produce (key 0), versions 0 to 10.
//!
//! Owner: the connection's shard checks the request and each partition's records field, then
//! scatters the partitions to their owner shards (`scatter::scatter`), where they are appended
//! and made durable under the topic's flush policy; the response is built once every owner has
//! answered. acks=0 appends all the same but sends no response.
//!
//! Checks here, before anything is written, as Kafka makes them: acks must be 0, 1 or -1
//! (INVALID_REQUIRED_ACKS); each partition must carry exactly one v2 record batch
//! (INVALID_RECORD); the topic and partition must exist (UNKNOWN_TOPIC_OR_PARTITION; with
//! `auto.create.topics.enable` an unknown, validly named topic is created for the retry); under
//! a controller quorum this node must lead the partition (NOT_LEADER_OR_FOLLOWER otherwise, also
//! when it has no leader, as Kafka answers; `leader_epoch::Leadership`). The owner validates
//! the batch itself (length, magic, CRC-32C, record count, max.message.bytes). From v10
//! (KIP-951) a NOT_LEADER_OR_FOLLOWER partition carries the leader and leader epoch the image
//! names at answer time (`current_leader`, -1 when it has none), and the answer lists those
//! leaders' endpoints (`node_endpoints`), so the client moves to the new leader without a
//! Metadata round trip (`leader_hints`).
//!
//! With an authorizer (`crate::acl`), a topic the client may not WRITE is answered
//! TOPIC_AUTHORIZATION_FAILED before anything else is looked at; auto-creation also needs
//! CREATE on the cluster or the topic.
//!
//! Ordering: the handler reaches each owner's append in its first poll when the partitions are
//! open and the mesh channel has room, so pipelined produces of one connection append in
//! request order in the common case. Unlike Kafka, which serves one request per connection at a
//! time, a produce that must wait (a full channel, a partition being opened) can be overtaken
//! by a later one; idempotent producers' sequence checks (a later issue) will cover that case.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::VersionRange;

use crate::acl::{self, Session};
use crate::broker::owner::{ProduceItem, ProduceOutcome};
use crate::broker::{ShardContext, ShardRequest, ShardResponse};
use crate::kafka::admin::{self, text};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::kafka::leader_epoch::Leadership;
use crate::kafka::scatter;
use crate::kafka::{legacy_format, legacy_versions};
use crate::metadata::topic_name::validate_topic_name;
use crate::metadata::{ControllerRequest, NewTopic};
use crate::quota::{self, QuotaKey};
use crate::storage::batch::BATCH_HEADER_BYTES;

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 10 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::Produce,
    versions: VERSIONS,
    handle,
};

/// `outcome` with the connection told to read nothing more for `throttle_ms`.
pub(crate) fn throttled(outcome: HandlerOutcome, throttle_ms: u64) -> HandlerOutcome {
    match outcome {
        HandlerOutcome::Respond(mut frame) => {
            frame.throttle_ms = throttle_ms;
            HandlerOutcome::Respond(frame)
        }
        other => other,
    }
}

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: ProduceRequest = match legacy_versions::decode_produce(&request) {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let acks = body.acks;
        let version = request.version();
        let mut response = produce(&context, &request.session, body, version).await;
        // Client quota (KIP-219): the request's bytes count against the producer byte rate.
        let throttle = context.quotas.record(
            &context.image().quotas,
            quota::principal_user(&request.session.principal),
            request.header.client_id.as_deref().unwrap_or(""),
            QuotaKey::ProducerByteRate,
            request.body.len() as u64,
        );
        response.throttle_time_ms = i32::try_from(throttle).unwrap_or(i32::MAX);
        let outcome = if acks == 0 {
            HandlerOutcome::NoResponse {
                throttle_ms: throttle,
            }
        } else if version < 3 {
            let correlation_id = request.header.correlation_id;
            legacy_versions::encode_produce_response(version, correlation_id, &response)
        } else {
            request.respond(&response)
        };
        throttled(outcome, throttle)
    }
    .boxed_local()
}

/// A partition's place in the response and what is known about it before the owner answers.
enum Slot {
    /// Sent to the owner as item number `usize`.
    Sent(usize),
    /// Refused here.
    Refused(i16, String),
    /// An empty legacy message set: nothing to append, no error (offset -1).
    Empty,
}

/// A partition's records as a v2 batch for the owner: checked as they are for v3+, up-converted
/// from a legacy message set for v0-2. Public for the fuzz targets (`tests/fuzz`).
pub fn batch_for_owner(
    version: i16,
    records: Option<Bytes>,
) -> Result<Option<Bytes>, (i16, String)> {
    if version >= 3 {
        check_one_batch(records.as_deref())?;
        return Ok(records);
    }
    legacy_format::up_convert(records.as_deref().unwrap_or_default()).map_err(|err| {
        (
            legacy_versions::legacy_format_error_code(&err),
            err.to_string(),
        )
    })
}

/// Whether auto-creating `name` is allowed: CREATE on the cluster or on the topic.
fn may_create(context: &ShardContext, session: &Session, name: &str) -> bool {
    use acl::{operation, resource_type};
    context.authorize(
        session,
        operation::CREATE,
        resource_type::CLUSTER,
        acl::CLUSTER_NAME,
    ) || context.authorize(session, operation::CREATE, resource_type::TOPIC, name)
}

async fn produce(
    context: &Rc<ShardContext>,
    session: &Session,
    body: ProduceRequest,
    version: i16,
) -> ProduceResponse {
    let acks = body.acks;
    let image = context.image();
    let (node_id, clustered) = (context.identity.node_id, context.clustered());
    // A transactional produce needs WRITE on its transactional id; without it every partition
    // is refused, as Kafka does.
    let transaction_refused = body.transactional_id.as_ref().is_some_and(|id| {
        !context.authorize(
            session,
            acl::operation::WRITE,
            acl::resource_type::TRANSACTIONAL_ID,
            id.0.as_str(),
        )
    });
    let mut items = Vec::new();
    let mut layout: Vec<(String, Vec<(i32, Slot)>)> = Vec::new();
    let mut to_create = Vec::new();
    for topic in body.topic_data {
        let name = topic.name.0.to_string();
        let meta = image.topic(&name);
        let may_write = context.authorize(
            session,
            acl::operation::WRITE,
            acl::resource_type::TOPIC,
            &name,
        );
        if meta.is_none()
            && may_write
            && context.config.auto_create_topics_enable
            && validate_topic_name(&name).is_ok()
            && !to_create.contains(&name)
            && may_create(context, session, &name)
        {
            to_create.push(name.clone());
        }
        let mut slots = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let slot = if !(-1..=1).contains(&acks) {
                Slot::Refused(
                    ResponseError::InvalidRequiredAcks.code(),
                    format!("acks must be 0, 1 or -1, not {acks}"),
                )
            } else if transaction_refused {
                Slot::Refused(
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    "Transactional id authorization failed.".to_string(),
                )
            } else if !may_write {
                Slot::Refused(
                    ResponseError::TopicAuthorizationFailed.code(),
                    format!("Not authorized to write to topic {name}"),
                )
            } else if !meta.is_some_and(|m| (0..m.partitions).contains(&data.index)) {
                Slot::Refused(
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("This server does not host {name}-{}", data.index),
                )
            } else if let Some((code, leader)) = meta.and_then(|m| {
                let leadership = Leadership::of(m, data.index, node_id, clustered);
                leadership.refusal(-1).map(|code| (code, leadership.leader))
            }) {
                Slot::Refused(
                    code,
                    format!(
                        "Broker {node_id} is not the leader of {name}-{} (leader: {leader})",
                        data.index
                    ),
                )
            } else {
                match batch_for_owner(version, data.records) {
                    Err((code, reason)) => Slot::Refused(code, reason),
                    Ok(None) => Slot::Empty,
                    Ok(Some(records)) => {
                        items.push(ProduceItem {
                            topic: name.clone(),
                            partition: data.index,
                            records,
                        });
                        Slot::Sent(items.len() - 1)
                    }
                }
            };
            slots.push((data.index, slot));
        }
        layout.push((name, slots));
    }
    let creation = async {
        if to_create.is_empty() {
            return;
        }
        let topics = to_create
            .into_iter()
            .map(|name| NewTopic {
                name,
                partitions: context.config.num_partitions,
                replication_factor: context.config.default_replication_factor,
                ..NewTopic::default()
            })
            .collect();
        let create = ControllerRequest::CreateTopics {
            topics,
            validate_only: false,
        };
        // The producer retries UNKNOWN_TOPIC_OR_PARTITION and finds the topic then.
        let _ = admin::call_controller(context, create).await;
    };

    let sending = async {
        if items.is_empty() {
            return Vec::new();
        }
        let count = items.len();
        // acks=all waits for the ISR at most the request's timeout (Kafka's delayed produce);
        // a request without one waits Kafka's default request timeout.
        let replication_wait_ms = if body.timeout_ms > 0 {
            body.timeout_ms as u64
        } else {
            30_000
        };
        let scattered = scatter::scatter(
            context,
            items,
            |item| (item.topic.as_str(), item.partition),
            |items| ShardRequest::Produce {
                items,
                acks,
                timeout_ms: replication_wait_ms,
            },
            |answer| match answer {
                ShardResponse::Produce(outcomes) => Some(outcomes),
                _ => None,
            },
            |code| ProduceOutcome {
                error_code: code,
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1,
                ..Default::default()
            },
        );
        if body.timeout_ms > 0 {
            let bound = Duration::from_millis(body.timeout_ms as u64);
            match glommio::timer::timeout(bound, scattered.map(Ok)).await {
                Ok(outcomes) => outcomes,
                Err(_) => (0..count)
                    .map(|_| ProduceOutcome {
                        error_code: ResponseError::RequestTimedOut.code(),
                        error_message: Some(format!(
                            "the write did not complete within timeout_ms {}",
                            body.timeout_ms
                        )),
                        base_offset: -1,
                        log_append_time_ms: -1,
                        log_start_offset: -1,
                        record_errors: Vec::new(),
                    })
                    .collect(),
            }
        } else {
            scattered.await
        }
    };
    // Records for existing topics go out first: a topic being auto-created must not let a
    // later request on this connection overtake this one's appends.
    let (outcomes, ()) = futures::join!(sending, creation);

    let responses = layout
        .into_iter()
        .map(|(name, slots)| {
            let partitions = slots
                .into_iter()
                .map(|(index, slot)| {
                    let response = PartitionProduceResponse::default().with_index(index);
                    match slot {
                        Slot::Sent(i) => {
                            let outcome = &outcomes[i];
                            // record_errors exist from v8 (KIP-467).
                            let record_errors = if version >= 8 {
                                outcome
                                    .record_errors
                                    .iter()
                                    .map(|(index, message)| {
                                        BatchIndexAndErrorMessage::default()
                                            .with_batch_index(*index)
                                            .with_batch_index_error_message(Some(text(
                                                message.clone(),
                                            )))
                                    })
                                    .collect()
                            } else {
                                Vec::new()
                            };
                            response
                                .with_record_errors(record_errors)
                                .with_error_code(outcome.error_code)
                                .with_error_message(outcome.error_message.clone().map(text))
                                .with_base_offset(outcome.base_offset)
                                .with_log_append_time_ms(outcome.log_append_time_ms)
                                .with_log_start_offset(outcome.log_start_offset)
                        }
                        Slot::Empty => response
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1),
                        Slot::Refused(code, message) => response
                            .with_error_code(code)
                            .with_error_message(Some(text(message)))
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1),
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(admin::topic_name(name))
                .with_partition_responses(partitions)
        })
        .collect();
    let response = ProduceResponse::default().with_responses(responses);
    if version >= 10 && clustered {
        leader_hints(context, response)
    } else {
        response
    }
}

/// KIP-951's hints: each NOT_LEADER_OR_FOLLOWER partition gets the leader and epoch of the
/// shard's image now (which may be newer than the one the request was checked against), and the
/// response the endpoints of every live broker so named.
fn leader_hints(context: &ShardContext, mut response: ProduceResponse) -> ProduceResponse {
    let image = context.image();
    let mut leaders = std::collections::BTreeSet::new();
    for topic in &mut response.responses {
        let meta = image.topic(topic.name.0.as_str());
        for partition in &mut topic.partition_responses {
            if partition.error_code != ResponseError::NotLeaderOrFollower.code() {
                continue;
            }
            let Some(state) = meta.and_then(|m| m.partition_state(partition.index)) else {
                continue;
            };
            let live = image.brokers.get(&state.leader).is_some_and(|b| !b.fenced);
            if state.leader >= 0 && live {
                partition.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(state.leader))
                    .with_leader_epoch(state.leader_epoch);
                leaders.insert(state.leader);
            }
        }
    }
    response.node_endpoints = leaders
        .into_iter()
        .filter_map(|id| image.brokers.get(&id))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    response
}

/// Kafka accepts exactly one record batch per partition in Produce v3 and later. Only the
/// batch framing is looked at here, with Kafka's codes: a length field too small for any batch
/// is CORRUPT_MESSAGE, a records field that is not exactly one batch INVALID_RECORD. The owner
/// validates the batch itself.
fn check_one_batch(records: Option<&[u8]>) -> Result<(), (i16, String)> {
    const ONE_BATCH: &str =
        "Produce requests with version 3 are only allowed to contain exactly one record batch";
    let invalid = |reason: String| (ResponseError::InvalidRecord.code(), reason);
    let records = records.ok_or_else(|| invalid(ONE_BATCH.to_string()))?;
    if records.len() < 12 {
        return Err(invalid(format!(
            "{ONE_BATCH}; got {} bytes, less than a batch header",
            records.len()
        )));
    }
    // baseOffset (8 bytes), then batchLength (4 bytes) counting everything after itself.
    let batch_length = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
    let total = 12 + i64::from(batch_length);
    if total < BATCH_HEADER_BYTES as i64 {
        return Err((
            ResponseError::CorruptMessage.code(),
            format!(
                "Record batch is corrupt (the size {total} is smaller than the minimum allowed \
                 overhead {BATCH_HEADER_BYTES})"
            ),
        ));
    }
    if total != records.len() as i64 {
        return Err(invalid(format!(
            "{ONE_BATCH}; the batch length says {total} bytes but the records field has {}",
            records.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_batch() {
        let mut batch = vec![0u8; 70];
        batch[8..12].copy_from_slice(&58i32.to_be_bytes());
        assert!(check_one_batch(Some(&batch)).is_ok());
        assert!(check_one_batch(None).is_err());
        assert!(check_one_batch(Some(&batch[..20])).is_err());
        let mut two = batch.clone();
        two.extend_from_slice(&batch);
        assert!(check_one_batch(Some(&two)).is_err());
        let mut negative = batch.clone();
        negative[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            check_one_batch(Some(&negative)).unwrap_err().0,
            ResponseError::CorruptMessage.code()
        );
        assert_eq!(
            check_one_batch(Some(&two)).unwrap_err().0,
            ResponseError::InvalidRecord.code()
        );
    }
}
