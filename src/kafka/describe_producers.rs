//! DescribeProducers (key 61), version 0 (KIP-664): the producers each partition's producer
//! state holds, with their epoch, last sequence, last timestamp, coordinator epoch and the
//! first offset of their open transaction.
//!
//! Owner: runs on the connection's shard, which scatters the partitions to their owner shards
//! (`broker::owner::serve_producers`, reading `storage::producer_state`). The broker is a
//! cluster of one, so the partition's leader is always here.
//!
//! As Kafka: a topic the client may not READ gets TOPIC_AUTHORIZATION_FAILED for each of its
//! partitions, checked first; a topic or partition that does not exist gets
//! UNKNOWN_TOPIC_OR_PARTITION. A producer's last timestamp is -1 when it is not known: the
//! producer wrote nothing since the partition was recovered from a producer state snapshot
//! older than the broker's format version 2.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, ProducerId,
};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::broker::owner::ProducersItem;
use crate::kafka::admin::topic_name;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::kafka::scatter;

/// The versions served (all Kafka 3.9 has).
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeProducers,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: DescribeProducersRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let topics = body
        .topics
        .into_iter()
        .map(|t| (t.name.0.to_string(), t.partition_indexes))
        .collect();
    let answered = scatter::per_partition(
        &context,
        &request.session,
        crate::acl::operation::READ,
        topics,
        |&p| p,
        |topic, &p, _| {
            Ok(Some(ProducersItem {
                topic: topic.to_string(),
                partition: p,
            }))
        },
        scatter::PRODUCERS,
        |index, outcome, _| {
            let response = PartitionResponse::default().with_partition_index(index);
            match outcome {
                Err(code) => response.with_error_code(code),
                Ok(None) => response,
                Ok(Some(outcome)) => response
                    .with_error_code(outcome.error_code)
                    .with_active_producers(
                        outcome
                            .producers
                            .iter()
                            .map(|p| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(p.producer_id))
                                    .with_producer_epoch(i32::from(p.producer_epoch))
                                    .with_last_sequence(p.last_sequence)
                                    .with_last_timestamp(p.last_timestamp)
                                    .with_coordinator_epoch(p.coordinator_epoch)
                                    .with_current_txn_start_offset(p.current_txn_start_offset)
                            })
                            .collect(),
                    ),
            }
        },
    )
    .await;
    let topics = answered
        .into_iter()
        .map(|(name, partitions)| {
            TopicResponse::default()
                .with_name(topic_name(name))
                .with_partitions(partitions)
        })
        .collect();
    request.respond(&DescribeProducersResponse::default().with_topics(topics))
}
