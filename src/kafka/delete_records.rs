//! DeleteRecords (key 21), versions 0 to 2: move partitions' log start offsets forward.
//!
//! Owner: the connection's shard scatters the partitions to their owners
//! (`broker::owner::serve_delete`), which persist the new log start offset and delete the segments
//! wholly below it. Offset -1 means the high watermark; an offset beyond it is
//! OFFSET_OUT_OF_RANGE. Under a controller quorum a partition this node does not lead is
//! NOT_LEADER_OR_FOLLOWER (`scatter::per_partition`).

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::broker::owner::DeleteItem;
use crate::kafka::admin::topic_name;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::kafka::scatter;

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
        let topics = body
            .topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partitions))
            .collect();
        let answered = scatter::per_partition(
            &context,
            &request.session,
            crate::acl::operation::DELETE,
            topics,
            |p| p.partition_index,
            |topic, p, _| {
                Ok(Some(DeleteItem {
                    topic: topic.to_string(),
                    partition: p.partition_index,
                    offset: p.offset,
                }))
            },
            scatter::DELETE_RECORDS,
            |index, outcome, _| {
                let (code, low_watermark) = match outcome {
                    Err(code) => (code, -1),
                    Ok(None) => (0, -1),
                    Ok(Some(outcome)) => (outcome.error_code, outcome.low_watermark),
                };
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(index)
                    .with_error_code(code)
                    .with_low_watermark(low_watermark)
            },
        )
        .await;
        let topics = answered
            .into_iter()
            .map(|(name, partitions)| {
                DeleteRecordsTopicResult::default()
                    .with_name(topic_name(name))
                    .with_partitions(partitions)
            })
            .collect();
        request.respond(&DeleteRecordsResponse::default().with_topics(topics))
    }
    .boxed_local()
}
