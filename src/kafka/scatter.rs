//! The front half of the data plane: scattering a request's partitions to their owner shards
//! and putting the answers back in request order. The owner half is `broker::owner`.
//!
//! Owner: runs on the shard holding the client's connection. `scatter` groups a request's items
//! by owner (`shard_for`), sends one `ShardRequest` per owner (all owners at once), and puts
//! the outcomes back in request order. A shard that cannot be reached answers every one of its
//! items with the router's error code.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures::future::join_all;
use kafka_protocol::ResponseError;

use crate::acl::Session;
use crate::broker::owner::{
    DeleteItem, DeleteOutcome, LogDirItem, LogDirOutcome, OffsetItem, OffsetOutcome, ProducersItem,
    ProducersOutcome,
};
use crate::broker::{ShardContext, ShardRequest, ShardResponse, error};
use crate::kafka::leader_epoch::Leadership;
use crate::runtime::{ShardId, shard_for};

/// A request's partitions in request order, by topic, each with what the handler knows of it
/// (`S`): usually the index of its item in the scatter, or the error that refused it.
pub type Layout<S> = Vec<(String, Vec<(i32, S)>)>;

/// Sends each item to its owner and returns the outcomes in item order. See the module
/// documentation.
pub async fn scatter<I, O>(
    context: &Rc<ShardContext>,
    items: Vec<I>,
    locate: impl Fn(&I) -> (&str, i32),
    request: impl Fn(Vec<I>) -> ShardRequest,
    response: impl Fn(ShardResponse) -> Option<Vec<O>>,
    failed: impl Fn(i16) -> O,
) -> Vec<O> {
    let count = items.len();
    let mut groups: BTreeMap<ShardId, (Vec<usize>, Vec<I>)> = BTreeMap::new();
    for (index, item) in items.into_iter().enumerate() {
        let (topic, partition) = locate(&item);
        let owner = shard_for(topic, partition, context.shard_count);
        let group = groups.entry(owner).or_default();
        group.0.push(index);
        group.1.push(item);
    }
    let (response, failed) = (&response, &failed);
    let calls = groups.into_iter().map(|(owner, (indexes, items))| {
        let request = request(items);
        async move {
            let outcomes = match context.router.call(owner, request).await {
                Ok(answer) => response(answer).filter(|o| o.len() == indexes.len()),
                Err(err) => {
                    let code = error::router_error_code(&err);
                    Some(indexes.iter().map(|_| failed(code)).collect())
                }
            };
            let outcomes = outcomes.unwrap_or_else(|| {
                indexes
                    .iter()
                    .map(|_| failed(ResponseError::UnknownServerError.code()))
                    .collect()
            });
            (indexes, outcomes)
        }
    });
    let mut slots: Vec<Option<O>> = (0..count).map(|_| None).collect();
    for (indexes, outcomes) in join_all(calls).await {
        for (index, outcome) in indexes.into_iter().zip(outcomes) {
            slots[index] = Some(outcome);
        }
    }
    slots
        .into_iter()
        .map(|o| o.expect("every item gets an outcome"))
        .collect()
}

/// How to ask owners about items of type `I` and read their answers of type `O`.
#[derive(Debug, Clone, Copy)]
pub struct OwnerCall<I, O> {
    /// The request carrying one owner's items.
    pub request: fn(Vec<I>) -> ShardRequest,
    /// The outcomes in an owner's answer.
    pub response: fn(ShardResponse) -> Option<Vec<O>>,
    /// The outcome of an item whose owner could not be reached.
    pub failed: fn(i16) -> O,
}

/// Asks for offsets (ListOffsets, OffsetForLeaderEpoch).
pub const OFFSETS: OwnerCall<OffsetItem, OffsetOutcome> = OwnerCall {
    request: ShardRequest::Offsets,
    response: |answer| match answer {
        ShardResponse::Offsets(outcomes) => Some(outcomes),
        _ => None,
    },
    failed: |code| OffsetOutcome {
        error_code: code,
        offset: -1,
        timestamp: -1,
        legacy_offsets: Vec::new(),
        leader_epoch: -1,
    },
};

/// Moves log start offsets (DeleteRecords).
pub const DELETE_RECORDS: OwnerCall<DeleteItem, DeleteOutcome> = OwnerCall {
    request: ShardRequest::DeleteRecords,
    response: |answer| match answer {
        ShardResponse::DeleteRecords(outcomes) => Some(outcomes),
        _ => None,
    },
    failed: |code| DeleteOutcome {
        error_code: code,
        low_watermark: -1,
    },
};

/// Describes partitions' logs (DescribeLogDirs).
pub const LOG_DIRS: OwnerCall<LogDirItem, LogDirOutcome> = OwnerCall {
    request: ShardRequest::LogDirs,
    response: |answer| match answer {
        ShardResponse::LogDirs(outcomes) => Some(outcomes),
        _ => None,
    },
    failed: |code| LogDirOutcome {
        error_code: code,
        size_bytes: -1,
        offset_lag: -1,
    },
};

/// Lists partitions' producers (DescribeProducers).
pub const PRODUCERS: OwnerCall<ProducersItem, ProducersOutcome> = OwnerCall {
    request: ShardRequest::Producers,
    response: |answer| match answer {
        ShardResponse::Producers(outcomes) => Some(outcomes),
        _ => None,
    },
    failed: |code| ProducersOutcome {
        error_code: code,
        producers: Vec::new(),
    },
};

/// An item addressed to one partition.
pub trait PartitionItem {
    /// Its topic and partition.
    fn locate(&self) -> (&str, i32);
}

impl PartitionItem for OffsetItem {
    fn locate(&self) -> (&str, i32) {
        (&self.topic, self.partition)
    }
}

impl PartitionItem for ProducersItem {
    fn locate(&self) -> (&str, i32) {
        (&self.topic, self.partition)
    }
}

impl PartitionItem for DeleteItem {
    fn locate(&self) -> (&str, i32) {
        (&self.topic, self.partition)
    }
}

/// The common shape of the per-partition APIs (ListOffsets, DeleteRecords,
/// OffsetForLeaderEpoch): for each requested partition, refuse it if the session may not
/// perform `operation` on the topic (TOPIC_AUTHORIZATION_FAILED, checked first, as Kafka does)
/// or the topic or partition does not exist, let `plan` check it against this node's
/// `Leadership` (the client's leader epoch) and build the item to ask its owner (or `None` to
/// answer without asking), refuse it if this node does not lead it (NOT_LEADER_OR_FOLLOWER,
/// whatever `plan` said), scatter the items, and build each partition's answer in request
/// order. `answer` also gets the partition's leader epoch (-1 for a refused partition).
#[allow(clippy::too_many_arguments)]
pub async fn per_partition<P, I, O, R>(
    context: &Rc<ShardContext>,
    session: &Session,
    operation: i8,
    topics: Vec<(String, Vec<P>)>,
    partition_of: impl Fn(&P) -> i32,
    plan: impl Fn(&str, &P, &Leadership) -> Result<Option<I>, i16>,
    call: OwnerCall<I, O>,
    answer: impl Fn(i32, Result<Option<&O>, i16>, i32) -> R,
) -> Vec<(String, Vec<R>)>
where
    I: PartitionItem,
{
    let image = context.image();
    let (node_id, clustered) = (context.identity.node_id, context.clustered());
    let mut items = Vec::new();
    let mut layout: Layout<(Result<Option<usize>, i16>, i32)> = Vec::with_capacity(topics.len());
    for (name, partitions) in topics {
        let meta = image.topic(&name);
        let authorized =
            context.authorize(session, operation, crate::acl::resource_type::TOPIC, &name);
        let slots = partitions
            .iter()
            .map(|p| {
                let index = partition_of(p);
                let refused = |code: i16| (Err(code), -1);
                let slot = match meta {
                    _ if !authorized => refused(ResponseError::TopicAuthorizationFailed.code()),
                    Some(m) if (0..m.partitions).contains(&index) => {
                        let leadership = Leadership::of(m, index, node_id, clustered);
                        match plan(&name, p, &leadership) {
                            Err(code) => refused(code),
                            Ok(_) if !leadership.led => {
                                refused(ResponseError::NotLeaderOrFollower.code())
                            }
                            Ok(item) => (
                                Ok(item.map(|item| {
                                    items.push(item);
                                    items.len() - 1
                                })),
                                leadership.epoch,
                            ),
                        }
                    }
                    _ => refused(ResponseError::UnknownTopicOrPartition.code()),
                };
                (index, slot)
            })
            .collect();
        layout.push((name, slots));
    }
    let outcomes = if items.is_empty() {
        Vec::new()
    } else {
        scatter(
            context,
            items,
            |item| item.locate(),
            call.request,
            call.response,
            call.failed,
        )
        .await
    };
    layout
        .into_iter()
        .map(|(name, slots)| {
            let answers = slots
                .into_iter()
                .map(|(index, (slot, epoch))| {
                    answer(index, slot.map(|i| i.map(|i| &outcomes[i])), epoch)
                })
                .collect();
            (name, answers)
        })
        .collect()
}
