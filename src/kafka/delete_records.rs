//! DeleteRecords (key 21), versions 0 to 2: move partitions' log start offsets forward.
//!
//! Owner: the connection's shard scatters the partitions to their owners
//! (`owner::serve_delete`), which persist the new log start offset and delete the segments
//! wholly below it. Offset -1 means the high watermark; an offset beyond it is
//! OFFSET_OUT_OF_RANGE.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::admin::topic_name;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::kafka::owner::{self, DeleteItem, DeleteOutcome, Layout};
use crate::shard::{ShardContext, ShardRequest, ShardResponse};

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DeleteRecords,
    versions: VersionRange { min: 0, max: 2 },
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: DeleteRecordsRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let image = context.image();
        let mut items = Vec::new();
        let mut layout: Layout<Result<usize, i16>> = Vec::new();
        for topic in &body.topics {
            let name = topic.name.0.to_string();
            let meta = image.topic(&name);
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let slot =
                        if meta.is_some_and(|m| (0..m.partitions).contains(&p.partition_index)) {
                            items.push(DeleteItem {
                                topic: name.clone(),
                                partition: p.partition_index,
                                offset: p.offset,
                            });
                            Ok(items.len() - 1)
                        } else {
                            Err(ResponseError::UnknownTopicOrPartition.code())
                        };
                    (p.partition_index, slot)
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
                ShardRequest::DeleteRecords,
                |answer| match answer {
                    ShardResponse::DeleteRecords(outcomes) => Some(outcomes),
                    _ => None,
                },
                |code| DeleteOutcome {
                    error_code: code,
                    low_watermark: -1,
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
                        let (code, low_watermark) = match slot {
                            Err(code) => (code, -1),
                            Ok(i) => (outcomes[i].error_code, outcomes[i].low_watermark),
                        };
                        DeleteRecordsPartitionResult::default()
                            .with_partition_index(index)
                            .with_error_code(code)
                            .with_low_watermark(low_watermark)
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(topic_name(name))
                    .with_partitions(partitions)
            })
            .collect();
        request.respond(&DeleteRecordsResponse::default().with_topics(topics))
    }
    .boxed_local()
}
