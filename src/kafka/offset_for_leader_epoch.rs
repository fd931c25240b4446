//! OffsetForLeaderEpoch (key 23), versions 2 to 4: the end offset of a leader epoch.
//!
//! Owner: the connection's shard; end offsets come from the owners through ListOffsets'
//! "latest" lookup. Every partition has had one leader epoch, 0, since it was created, so
//! epoch 0 ends at the high watermark, and an epoch above ours is unknown: Kafka answers it
//! with the undefined epoch and offset (-1, -1). Consumers use this after a leader change to
//! detect log truncation; with one broker there is none.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::admin::topic_name;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::kafka::leader_epoch;
use crate::kafka::owner::{self, Layout, OffsetItem, OffsetOutcome, offset_spec};
use crate::shard::{ShardContext, ShardRequest, ShardResponse};

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
        let image = context.image();
        let mut items = Vec::new();
        let mut layout: Layout<Result<Option<usize>, i16>> = Vec::new();
        for topic in &body.topics {
            let name = topic.topic.0.to_string();
            let meta = image.topic(&name);
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let slot = if !meta.is_some_and(|m| (0..m.partitions).contains(&p.partition)) {
                        Err(ResponseError::UnknownTopicOrPartition.code())
                    } else if let Some(code) = leader_epoch::check(p.current_leader_epoch) {
                        Err(code)
                    } else if p.leader_epoch != leader_epoch::CURRENT {
                        Ok(None)
                    } else {
                        items.push(OffsetItem {
                            topic: name.clone(),
                            partition: p.partition,
                            timestamp: offset_spec::LATEST,
                        });
                        Ok(Some(items.len() - 1))
                    };
                    (p.partition, slot)
                })
                .collect();
            layout.push((name, partitions));
        }
        let outcomes = if items.is_empty() {
            Vec::new()
        } else {
            owner::scatter(
                &context,
                items,
                |item| (item.topic.as_str(), item.partition),
                ShardRequest::Offsets,
                |answer| match answer {
                    ShardResponse::Offsets(outcomes) => Some(outcomes),
                    _ => None,
                },
                |code| OffsetOutcome {
                    error_code: code,
                    offset: -1,
                    timestamp: -1,
                },
            )
            .await
        };
        let topics = layout
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, slot)| {
                        let (code, epoch, end_offset) = match slot {
                            Err(code) => (code, -1, -1),
                            Ok(None) => (0, -1, -1),
                            Ok(Some(i)) if outcomes[i].error_code != 0 => {
                                (outcomes[i].error_code, -1, -1)
                            }
                            Ok(Some(i)) => (0, leader_epoch::CURRENT, outcomes[i].offset),
                        };
                        EpochEndOffset::default()
                            .with_partition(index)
                            .with_error_code(code)
                            .with_leader_epoch(epoch)
                            .with_end_offset(end_offset)
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic_name(name))
                    .with_partitions(partitions)
            })
            .collect();
        request.respond(&OffsetForLeaderEpochResponse::default().with_topics(topics))
    }
    .boxed_local()
}
