//! OffsetForLeaderEpoch (key 23), versions 2 to 4: the end offset of a leader epoch.
//!
//! Owner: the connection's shard; end offsets come from the owners (`broker::owner::
//! serve_offsets` with an epoch lookup), from each partition's leader epoch cache
//! (`storage::epoch_cache`, Kafka's `leader-epoch-checkpoint`): the largest epoch at or below
//! the one asked about and the offset where it ends, the log end for the latest epoch, and
//! (-1, -1) below the first. A log with no recorded epochs (a lone node's, which never changes
//! leader) knows only its current epoch 0, ending at the high watermark. Followers use this
//! to find where their log diverges from the leader's before they fetch (KIP-101, KIP-279);
//! consumers after a leader change, to detect truncation (KIP-320). Under a quorum a
//! partition this node does not lead is NOT_LEADER_OR_FOLLOWER (`leader_epoch::Leadership`).

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::broker::owner::{OffsetItem, offset_spec};
use crate::kafka::admin::topic_name;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::kafka::scatter;

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::OffsetForLeaderEpoch,
    versions: VersionRange { min: 2, max: 4 },
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: OffsetForLeaderEpochRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let topics = body
            .topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect();
        let answered = scatter::per_partition(
            &context,
            &request.session,
            crate::acl::operation::DESCRIBE,
            topics,
            |p| p.partition,
            |topic, p, leadership| {
                if let Some(code) = leadership.refusal(p.current_leader_epoch) {
                    return Err(code);
                }
                Ok(Some(OffsetItem {
                    topic: topic.to_string(),
                    partition: p.partition,
                    timestamp: offset_spec::LATEST,
                    max_num_offsets: None,
                    read_committed: false,
                    epoch_lookup: Some((p.leader_epoch, leadership.epoch)),
                }))
            },
            scatter::OFFSETS,
            |index, outcome, _| {
                let (code, epoch, end_offset) = match outcome {
                    Err(code) => (code, -1, -1),
                    Ok(None) => (0, -1, -1),
                    Ok(Some(outcome)) if outcome.error_code != 0 => (outcome.error_code, -1, -1),
                    Ok(Some(outcome)) => (0, outcome.leader_epoch, outcome.offset),
                };
                EpochEndOffset::default()
                    .with_partition(index)
                    .with_error_code(code)
                    .with_leader_epoch(epoch)
                    .with_end_offset(end_offset)
            },
        )
        .await;
        let topics = answered
            .into_iter()
            .map(|(name, partitions)| {
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic_name(name))
                    .with_partitions(partitions)
            })
            .collect();
        request.respond(&OffsetForLeaderEpochResponse::default().with_topics(topics))
    }
    .boxed_local()
}
