//! OffsetForLeaderEpoch (key 23), versions 2 to 4: the end offset of a leader epoch.
//!
//! Owner: the connection's shard; end offsets come from the owners through ListOffsets'
//! "latest" lookup. The partition's current leader epoch (0 on a lone node, the image's under a
//! controller quorum) ends at the high watermark; any other epoch is answered with the
//! undefined epoch and offset (-1, -1), as Kafka answers an epoch above its latest: no history
//! of earlier epochs is kept, since batches are not stamped with the epoch that wrote them
//! until replication exists (issue 15). Consumers use this after a leader change to detect log
//! truncation; on a lone node there is none. Under a quorum a partition this node does not
//! lead is NOT_LEADER_OR_FOLLOWER (`leader_epoch::Leadership`).

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
                // Only the current epoch is known: any other is undefined (-1, -1).
                Ok((p.leader_epoch == leadership.epoch).then(|| OffsetItem {
                    topic: topic.to_string(),
                    partition: p.partition,
                    timestamp: offset_spec::LATEST,
                    max_num_offsets: None,
                    read_committed: false,
                }))
            },
            scatter::OFFSETS,
            |index, outcome, current| {
                let (code, epoch, end_offset) = match outcome {
                    Err(code) => (code, -1, -1),
                    Ok(None) => (0, -1, -1),
                    Ok(Some(outcome)) if outcome.error_code != 0 => (outcome.error_code, -1, -1),
                    Ok(Some(outcome)) => (0, current, outcome.offset),
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
