//! ListOffsets (key 2), versions 0 to 7: earliest, latest, by timestamp and (v7) the offset
//! of the largest timestamp. Version 0 answers a list of offsets instead (segment boundaries,
//! as Kafka does; `broker::owner::serve_offsets`), with its own codec (`legacy_versions`).
//!
//! Owner: the connection's shard scatters the partitions to their owners
//! (`broker::owner::serve_offsets`). "Latest" is the high watermark for read_uncommitted and the last
//! stable offset (below every open transaction) for read_committed (isolation level 1, v2+).
//! A timestamp lookup
//! answers the first offset whose record has a timestamp at or after the one asked for, with
//! that record's timestamp (records of one batch may carry different timestamps), or -1 when
//! there is none (`PartitionLog::offset_for_timestamp`); for read_committed a record at or past
//! the last stable offset does not count (-1), as in Kafka. Under a controller quorum a
//! partition this node does not lead is NOT_LEADER_OR_FOLLOWER, and a found offset carries the
//! partition's leader epoch from the image (`leader_epoch::Leadership`).

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::broker::error;
use crate::broker::owner::{OffsetItem, offset_spec};
use crate::kafka::admin::topic_name;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::kafka::legacy_versions;
use crate::kafka::scatter;

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::ListOffsets,
    versions: VersionRange { min: 0, max: 7 },
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        if request.version() == 0 {
            return serve_v0(context, request).await;
        }
        let body: ListOffsetsRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let version = request.version();
        let read_committed = body.isolation_level == 1;
        let topics = body
            .topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partitions))
            .collect();
        let answered = scatter::per_partition(
            &context,
            &request.session,
            crate::acl::operation::DESCRIBE,
            topics,
            |p| p.partition_index,
            |topic, p, leadership| {
                if let Some(code) = leadership.refusal(p.current_leader_epoch) {
                    return Err(code);
                }
                if p.timestamp < offset_spec::MAX_TIMESTAMP
                    || (p.timestamp == offset_spec::MAX_TIMESTAMP && version < 7)
                {
                    return Err(ResponseError::UnsupportedVersion.code());
                }
                Ok(Some(OffsetItem {
                    topic: topic.to_string(),
                    partition: p.partition_index,
                    timestamp: p.timestamp,
                    max_num_offsets: None,
                    read_committed,
                    epoch_lookup: None,
                }))
            },
            scatter::OFFSETS,
            |index, outcome, epoch| {
                let response = ListOffsetsPartitionResponse::default()
                    .with_partition_index(index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(-1);
                match outcome {
                    Err(code) => response.with_error_code(code),
                    Ok(None) => response,
                    Ok(Some(outcome)) => {
                        let found = outcome.error_code == error::NONE && outcome.offset >= 0;
                        response
                            .with_error_code(outcome.error_code)
                            .with_offset(outcome.offset)
                            .with_timestamp(outcome.timestamp)
                            // The field exists from v4; older versions must leave it unset.
                            .with_leader_epoch(if found && version >= 4 { epoch } else { -1 })
                    }
                }
            },
        )
        .await;
        let topics = answered
            .into_iter()
            .map(|(name, partitions)| {
                ListOffsetsTopicResponse::default()
                    .with_name(topic_name(name))
                    .with_partitions(partitions)
            })
            .collect();
        request.respond(&ListOffsetsResponse::default().with_topics(topics))
    }
    .boxed_local()
}

/// ListOffsets v0: up to `max_num_offsets` offsets per partition, newest first.
async fn serve_v0(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let topics = match legacy_versions::decode_list_offsets_v0(&request) {
        Ok(topics) => topics,
        Err(outcome) => return outcome,
    };
    let answered = scatter::per_partition(
        &context,
        &request.session,
        crate::acl::operation::DESCRIBE,
        topics,
        |p| p.partition,
        |topic, p, _| {
            Ok(Some(OffsetItem {
                topic: topic.to_string(),
                partition: p.partition,
                timestamp: p.timestamp,
                max_num_offsets: Some(p.max_num_offsets),
                read_committed: false,
                epoch_lookup: None,
            }))
        },
        scatter::OFFSETS,
        |index, outcome, _| match outcome {
            Err(code) => (index, code, Vec::new()),
            Ok(None) => (index, error::NONE, Vec::new()),
            Ok(Some(outcome)) => (index, outcome.error_code, outcome.legacy_offsets.clone()),
        },
    )
    .await;
    legacy_versions::encode_list_offsets_v0_response(request.header.correlation_id, &answered)
}
