//! WriteTxnMarkers (key 27), version 1: a transaction coordinator on another broker asks this
//! one to write the commit or abort markers of transactions on the partitions it leads
//! (Kafka's broker-to-broker request; version 0, which Kafka 4 no longer serves either, is
//! not served).
//!
//! Owner: runs on the connection's shard, which sends each partition's marker to the
//! partition's owner shard (`broker::owner::serve_txn_markers`, `ShardRequest::WriteTxnMarkers`,
//! the path the local coordinator uses too). There the marker is appended only by the leading
//! replica and acknowledged once the ISR holds it (acks=all within `request.timeout.ms`), and
//! a marker on `__consumer_offsets` completes the group's transactional offsets.
//!
//! As Kafka: without CLUSTER_ACTION on the CLUSTER resource every partition gets
//! CLUSTER_AUTHORIZATION_FAILED; a topic or partition that does not exist gets
//! UNKNOWN_TOPIC_OR_PARTITION; one this broker does not lead NOT_LEADER_OR_FOLLOWER; a marker
//! of a stale producer epoch or coordinator epoch the producer state's code
//! (INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED).

use std::collections::BTreeMap;
use std::rc::Rc;

use futures::FutureExt;
use futures::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::VersionRange;

use crate::acl;
use crate::broker::owner::TxnMarkerItem;
use crate::broker::{ShardContext, ShardRequest, ShardResponse};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::runtime::{ShardId, shard_for};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::WriteTxnMarkers,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: WriteTxnMarkersRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let authorized = context.authorize(
        &request.session,
        acl::operation::CLUSTER_ACTION,
        acl::resource_type::CLUSTER,
        acl::CLUSTER_NAME,
    );
    // One code per (marker, topic, partition), in request order; `None`: sent to the owner.
    let image = context.image();
    let me = context.identity.node_id;
    let mut codes: Vec<Vec<Vec<Option<i16>>>> = Vec::with_capacity(body.markers.len());
    let mut by_owner: BTreeMap<ShardId, Vec<(usize, usize, usize, TxnMarkerItem)>> =
        BTreeMap::new();
    for (m, marker) in body.markers.iter().enumerate() {
        let mut marker_codes = Vec::with_capacity(marker.topics.len());
        for (t, topic) in marker.topics.iter().enumerate() {
            let name = topic.name.0.to_string();
            let meta = image.topic(&name);
            let mut topic_codes = Vec::with_capacity(topic.partition_indexes.len());
            for (p, &partition) in topic.partition_indexes.iter().enumerate() {
                let code = if !authorized {
                    Some(ResponseError::ClusterAuthorizationFailed.code())
                } else if !meta.is_some_and(|m| (0..m.partitions).contains(&partition)) {
                    Some(ResponseError::UnknownTopicOrPartition.code())
                } else if meta.is_some_and(|m| m.leader_of(partition, me) != me) {
                    Some(ResponseError::NotLeaderOrFollower.code())
                } else {
                    let owner = shard_for(&name, partition, context.shard_count);
                    by_owner.entry(owner).or_default().push((
                        m,
                        t,
                        p,
                        TxnMarkerItem {
                            topic: name.clone(),
                            partition,
                            producer_id: marker.producer_id.0,
                            producer_epoch: marker.producer_epoch,
                            coordinator_epoch: marker.coordinator_epoch,
                            commit: marker.transaction_result,
                        },
                    ));
                    None
                };
                topic_codes.push(code);
            }
            marker_codes.push(topic_codes);
        }
        codes.push(marker_codes);
    }
    let calls = by_owner.into_iter().map(|(owner, entries)| {
        let context = context.clone();
        async move {
            let items: Vec<TxnMarkerItem> = entries.iter().map(|(_, _, _, i)| i.clone()).collect();
            let answer = context
                .router
                .call(owner, ShardRequest::WriteTxnMarkers(items))
                .await;
            let written = match answer {
                Ok(ShardResponse::WriteTxnMarkers(codes)) if codes.len() == entries.len() => codes,
                Ok(other) => {
                    tracing::warn!(?other, "unexpected answer to WriteTxnMarkers");
                    vec![ResponseError::UnknownServerError.code(); entries.len()]
                }
                Err(_) => vec![ResponseError::NotLeaderOrFollower.code(); entries.len()],
            };
            entries
                .into_iter()
                .map(|(m, t, p, _)| (m, t, p))
                .zip(written)
                .collect::<Vec<_>>()
        }
    });
    for ((m, t, p), code) in join_all(calls).await.into_iter().flatten() {
        codes[m][t][p] = Some(code);
    }
    let markers = body
        .markers
        .iter()
        .zip(codes)
        .map(|(marker, marker_codes)| {
            crate::msg!(WritableTxnMarkerResult {
                producer_id: marker.producer_id,
                topics: marker
                    .topics
                    .iter()
                    .zip(marker_codes)
                    .map(
                        |(topic, topic_codes)| crate::msg!(WritableTxnMarkerTopicResult {
                            name: topic.name.clone(),
                            partitions: topic
                                .partition_indexes
                                .iter()
                                .zip(topic_codes)
                                .map(|(&partition_index, code)| {
                                    crate::msg!(WritableTxnMarkerPartitionResult {
                                        partition_index,
                                        error_code: code
                                            .unwrap_or(ResponseError::UnknownServerError.code())
                                    })
                                })
                                .collect()
                        })
                    )
                    .collect()
            })
        })
        .collect();
    request.respond(&crate::msg!(WriteTxnMarkersResponse { markers }))
}
