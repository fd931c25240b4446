//! The owner half of the data plane: serving a request's partitions on the shard that owns them
//! (Produce, Fetch and its long poll, ListOffsets, DeleteRecords, transaction markers: those are
//! written by the leading replica only and acknowledged once the ISR holds them). The
//! front half, which scatters a request to the owners, is `kafka::scatter`.
//!
//! Owner: the `serve_*` functions run on the shard that owns the partitions (`shard_for`),
//! reached through the router (or called directly when that is the same shard), dispatched
//! from `ShardContext::serve`. Items and outcomes are plain `Send` data: record data crosses
//! shards as `Bytes`, never copied. Outcomes carry Kafka error codes (`broker::error`), as
//! the front answers them.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::ResponseError;

use crate::broker::{ShardContext, error};
use crate::replication::selector::{self, Candidate};
use crate::storage::batch::ControlMarker;
use crate::storage::log::last_offset_read;
use crate::storage::manager::Appended;
use crate::storage::manager::OpenPartition;
use crate::storage::producer_state::ProducerSummary;

/// A partition's records to append.
#[derive(Debug, Clone)]
pub struct ProduceItem {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The request's `records` field: one or more v2 batches, as the client sent them.
    pub records: Bytes,
}

/// The outcome of one partition's append.
#[derive(Debug, Clone, Default)]
pub struct ProduceOutcome {
    /// Kafka error code.
    pub error_code: i16,
    /// Why, for the response's `error_message`.
    pub error_message: Option<String>,
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// The broker's time for LogAppendTime topics, else -1.
    pub log_append_time_ms: i64,
    /// The partition's log start offset.
    pub log_start_offset: i64,
    /// Records refused one by one (KIP-467, Produce v8+): (index in the batch, why).
    pub record_errors: Vec<(i32, String)>,
}

/// A partition to read.
#[derive(Debug, Clone)]
pub struct ReadItem {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset wanted.
    pub offset: i64,
    /// Byte limit (at least one whole batch is returned anyway).
    pub max_bytes: u32,
    /// read_committed: only data below the last stable offset, with the aborted transactions
    /// in it.
    pub read_committed: bool,
    /// A follower's fetch: the follower's broker id (Fetch's `replica_id` >= 0). It reads up
    /// to the leader's durable end, not the high watermark, and its fetch offset tells the
    /// leader how far the follower's log reaches.
    pub replica: Option<i32>,
    /// A consumer's `rack_id` (Fetch v11+), when the rack-aware replica selector is on: the
    /// leader may answer with a preferred read replica instead of records (KIP-392). Shared
    /// by the request's partitions.
    pub client_rack: Option<std::sync::Arc<str>>,
    /// A consumer's read any replica may serve (Fetch v11+ under a quorum, KIP-392): a
    /// follower serves it up to its high watermark.
    pub any_replica: bool,
}

/// What one partition's read found.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// Kafka error code.
    pub error_code: i16,
    /// High watermark (-1 when the partition was not read).
    pub high_watermark: i64,
    /// Log start offset (-1 when the partition was not read).
    pub log_start_offset: i64,
    /// Last stable offset (-1 when the partition was not read).
    pub last_stable_offset: i64,
    /// Whole batches, as stored.
    pub records: Vec<Bytes>,
    /// read_committed: the aborted transactions overlapping `records`, as (producer id, first
    /// offset); `None` for read_uncommitted.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    /// The replica the consumer should fetch from instead (KIP-392); no records then.
    pub preferred_read_replica: Option<i32>,
}

impl ReadOutcome {
    /// The outcome of a partition that was not read.
    pub fn failed(error_code: i16) -> Self {
        ReadOutcome {
            error_code,
            high_watermark: -1,
            log_start_offset: -1,
            last_stable_offset: -1,
            records: Vec::new(),
            aborted_transactions: None,
            preferred_read_replica: None,
        }
    }
}

impl ReadOutcome {
    /// Bytes of record data.
    pub fn len_bytes(&self) -> usize {
        self.records.iter().map(Bytes::len).sum()
    }
}

/// A partition whose offsets to look up.
#[derive(Debug, Clone)]
pub struct OffsetItem {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// ListOffsets' timestamp: -2 earliest, -1 latest, -3 max timestamp, else a time in ms.
    pub timestamp: i64,
    /// ListOffsets v0: how many offsets to list (segment boundaries, see `legacy_offsets`);
    /// `None` for the single-offset answer of v1+.
    pub max_num_offsets: Option<i32>,
    /// read_committed: "latest" is the last stable offset, not the high watermark.
    pub read_committed: bool,
    /// OffsetForLeaderEpoch instead of a ListOffsets lookup: (the epoch asked about, the
    /// partition's current leader epoch in the image). `timestamp` is then ignored.
    pub epoch_lookup: Option<(i32, i32)>,
}

/// A transaction marker to write on a partition, on the transaction coordinator's behalf
/// (Kafka's WriteTxnMarkers, inside the broker).
#[derive(Debug, Clone)]
pub struct TxnMarkerItem {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The transaction's producer.
    pub producer_id: i64,
    /// The producer's epoch (bumped when the coordinator fences or times out the producer).
    pub producer_epoch: i16,
    /// The coordinator's epoch, so a marker from a deposed coordinator is refused.
    pub coordinator_epoch: i32,
    /// Commit (true) or abort (false).
    pub commit: bool,
}

/// A looked-up offset.
#[derive(Debug, Clone, Default)]
pub struct OffsetOutcome {
    /// Kafka error code.
    pub error_code: i16,
    /// The offset, -1 if none matched.
    pub offset: i64,
    /// The timestamp of that offset, -1 when it has none.
    pub timestamp: i64,
    /// ListOffsets v0's list of offsets, newest first.
    pub legacy_offsets: Vec<i64>,
    /// An epoch lookup's answer: the largest epoch at or below the one asked about (-1 when
    /// none); `offset` is where it ends.
    pub leader_epoch: i32,
}

/// A partition to trim (DeleteRecords).
#[derive(Debug, Clone)]
pub struct DeleteItem {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// New log start offset; -1 for the high watermark.
    pub offset: i64,
}

/// The outcome of a DeleteRecords item.
#[derive(Debug, Clone, Default)]
pub struct DeleteOutcome {
    /// Kafka error code.
    pub error_code: i16,
    /// The new log start offset.
    pub low_watermark: i64,
}

/// ListOffsets' special timestamps.
pub mod offset_spec {
    /// The log start offset.
    pub const EARLIEST: i64 = -2;
    /// The high watermark.
    pub const LATEST: i64 = -1;
    /// The offset with the largest timestamp (KIP-734).
    pub const MAX_TIMESTAMP: i64 = -3;
}

/// The partition for a read: any replica's log when `any_replica` (KIP-392's reads from
/// followers), else the leader's only.
async fn open_for_read(context: &ShardContext, item: &ReadItem) -> Result<Rc<OpenPartition>, i16> {
    if !item.any_replica {
        return open(context, &item.topic, item.partition).await;
    }
    let image = context.image();
    context
        .partitions
        .get_replica(&image, &item.topic, item.partition)
        .await
        .map_err(|err| error::partition_error_code(&err))
}

async fn open(
    context: &ShardContext,
    topic: &str,
    partition: i32,
) -> Result<Rc<OpenPartition>, i16> {
    let image = context.image();
    context
        .partitions
        .get(&image, topic, partition)
        .await
        .map_err(|err| error::partition_error_code(&err))
}

/// One partition whose log DescribeLogDirs describes.
#[derive(Debug, Clone)]
pub struct LogDirItem {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// What DescribeLogDirs learns of one partition's log.
#[derive(Debug, Clone, Copy)]
pub struct LogDirOutcome {
    /// Kafka error code (the partition could not be opened).
    pub error_code: i16,
    /// Bytes of the log's batches over all its segments (`PartitionLog::size_bytes`).
    pub size_bytes: i64,
    /// How far the log's end is past the high watermark (appends staged, not yet durable).
    pub offset_lag: i64,
}

/// One partition whose producers DescribeProducers lists.
#[derive(Debug, Clone)]
pub struct ProducersItem {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// The producers of one partition, or why they could not be listed.
#[derive(Debug, Clone)]
pub struct ProducersOutcome {
    /// Kafka error code.
    pub error_code: i16,
    /// Every producer in the partition's producer state, by id.
    pub producers: Vec<ProducerSummary>,
}

/// Owner side of DescribeProducers: each partition's producer state.
pub async fn serve_producers(
    context: &ShardContext,
    items: Vec<ProducersItem>,
) -> Vec<ProducersOutcome> {
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        outcomes.push(match open(context, &item.topic, item.partition).await {
            Ok(partition) => ProducersOutcome {
                error_code: error::NONE,
                producers: partition.producers.borrow().describe(),
            },
            Err(code) => ProducersOutcome {
                error_code: code,
                producers: Vec::new(),
            },
        });
    }
    outcomes
}

/// Owner side of DescribeLogDirs: each partition's log size and end-offset lag.
pub async fn serve_log_dirs(context: &ShardContext, items: Vec<LogDirItem>) -> Vec<LogDirOutcome> {
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        outcomes.push(match open(context, &item.topic, item.partition).await {
            Ok(partition) => LogDirOutcome {
                error_code: error::NONE,
                size_bytes: i64::try_from(partition.log.size_bytes()).unwrap_or(i64::MAX),
                offset_lag: (partition.log.log_end_offset() - partition.log.high_watermark())
                    .max(0),
            },
            Err(code) => LogDirOutcome {
                error_code: code,
                size_bytes: -1,
                offset_lag: -1,
            },
        });
    }
    outcomes
}

/// Owner side of Produce: appends every item (all partitions at once; each partition's
/// appends in arrival order) and waits until each is durable under its topic's policy.
pub async fn serve_produce(
    context: &ShardContext,
    items: Vec<ProduceItem>,
    acks: i16,
    timeout_ms: u64,
) -> Vec<ProduceOutcome> {
    let appends = items.into_iter().map(|item| async move {
        let partition = match open(context, &item.topic, item.partition).await {
            Ok(partition) => partition,
            Err(code) => {
                return ProduceOutcome {
                    error_code: code,
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: -1,
                    ..Default::default()
                };
            }
        };
        // Under a quorum the image may name this broker leader before its replica has taken
        // the role (or after a restart, before it is serving again): only a leading replica
        // appends.
        if context.clustered()
            && context
                .replication
                .get(&item.topic, item.partition)
                .is_none_or(|r| r.led_epoch().is_none())
        {
            return ProduceOutcome {
                error_code: ResponseError::NotLeaderOrFollower.code(),
                error_message: Some("this broker does not lead the partition now".to_string()),
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1,
                ..Default::default()
            };
        }
        let min_insync = partition.settings.borrow().min_insync_replicas;
        // The ISR as the metadata image has it: this broker alone on a lone node, and the
        // leader alone under a quorum until followers replicate (issue 15).
        let isr = || {
            context
                .image()
                .topic(&item.topic)
                .and_then(|t| t.partition_state(item.partition).map(|s| s.isr.len()))
                .unwrap_or(1)
        };
        // The ISR is looked up only when it matters: acks=all with a bound above one.
        if acks == -1 && min_insync > 1 && (min_insync as usize) > isr() {
            let isr = isr();
            return ProduceOutcome {
                error_code: ResponseError::NotEnoughReplicas.code(),
                error_message: Some(format!(
                    "The size of the current ISR {isr} is insufficient to satisfy the min.isr \
                     requirement of {min_insync} for partition {}-{}",
                    item.topic, item.partition
                )),
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: partition.log.log_start_offset(),
                record_errors: Vec::new(),
            };
        }
        if let Some(refused) = refuse_keyless(&partition, &item) {
            return refused;
        }
        let started = std::time::Instant::now();
        let result = partition.append_checked(item.records).await;
        context.metrics.record_append(started.elapsed());
        let log_start_offset = partition.log.log_start_offset();
        // acks=all under replication: the append is durable here; now the ISR must hold it.
        // A retried duplicate waits for everything written so far, which covers the original.
        let required = match &result {
            Ok(Appended::New(info)) => Some(info.last_offset + 1),
            Ok(Appended::Duplicate { .. }) => Some(partition.log.durable_end()),
            Err(_) => None,
        };
        if acks == -1
            && let Some(required) = required
            && let Err(err) = context
                .replication
                .wait_replicated(
                    &item.topic,
                    item.partition,
                    required,
                    Duration::from_millis(timeout_ms),
                )
                .await
        {
            return ProduceOutcome {
                error_code: error::replication_error_code(&err),
                error_message: Some(err.to_string()),
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset,
                record_errors: Vec::new(),
            };
        }
        match result {
            Ok(Appended::New(info)) => ProduceOutcome {
                error_code: error::NONE,
                error_message: None,
                base_offset: info.base_offset,
                log_append_time_ms: info.log_append_time_ms,
                log_start_offset: info.log_start_offset,
                record_errors: Vec::new(),
            },
            Ok(Appended::Duplicate { base_offset }) => ProduceOutcome {
                error_code: error::NONE,
                error_message: None,
                base_offset,
                log_append_time_ms: -1,
                log_start_offset,
                record_errors: Vec::new(),
            },
            Err(err) => ProduceOutcome {
                error_code: error::append_error_code(&err),
                error_message: Some(err.to_string()),
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset,
                record_errors: Vec::new(),
            },
        }
    });
    join_all(appends).await
}

/// Kafka's key check for compacted topics (its `LogValidator`): every record must have a key.
/// The records without one are named in `record_errors` (KIP-467) and the partition's batch is
/// refused with INVALID_RECORD before anything is written. A batch that fails the other checks
/// (length, CRC, ...) is left to the append, which reports those with their own codes.
fn refuse_keyless(partition: &OpenPartition, item: &ProduceItem) -> Option<ProduceOutcome> {
    use crate::storage::batch;
    use crate::storage::cleaner::records;
    let (compact, max_message_bytes) = {
        let settings = partition.settings.borrow();
        (settings.cleanup_compact, settings.max_message_bytes)
    };
    if !compact {
        return None;
    }
    let mut positions = Vec::new();
    batch::validate_all(&item.records, max_message_bytes, |m| positions.push(m)).ok()?;
    let message = format!(
        "Compacted topic cannot accept message without key in topic partition {}-{}.",
        item.topic, item.partition
    );
    let mut record_errors = Vec::new();
    let mut first_index = 0i32;
    for meta in positions {
        let bytes = &item.records[meta.position..meta.position + meta.size_bytes];
        let bound = crate::limits::STORAGE_CLEANER_INFLATED_BATCH_BYTES_MAX;
        match records::keyless_records(bytes, bound) {
            Ok(keyless) => record_errors.extend(
                keyless
                    .into_iter()
                    .map(|i| (first_index + i, message.clone())),
            ),
            Err(err) => {
                return Some(ProduceOutcome {
                    error_code: ResponseError::CorruptMessage.code(),
                    error_message: Some(format!("cannot read the records: {err}")),
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: partition.log.log_start_offset(),
                    record_errors: Vec::new(),
                });
            }
        }
        first_index = first_index.saturating_add(meta.offset_count as i32);
    }
    if record_errors.is_empty() {
        return None;
    }
    Some(ProduceOutcome {
        error_code: ResponseError::InvalidRecord.code(),
        error_message: Some(format!(
            "One or more records have been rejected due to {} record errors in total: {message}",
            record_errors.len()
        )),
        base_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: partition.log.log_start_offset(),
        record_errors,
    })
}

/// Owner side of Fetch: reads every item at once.
pub async fn serve_read(context: &Rc<ShardContext>, items: Vec<ReadItem>) -> Vec<ReadOutcome> {
    let reads = items.into_iter().map(|item| async move {
        let partition = match open_for_read(context, &item).await {
            Ok(partition) => partition,
            Err(code) => return ReadOutcome::failed(code),
        };
        let log = &partition.log;
        if let Some(follower) = item.replica {
            return read_for_follower(context, &item, &partition, follower).await;
        }
        // A read any replica may serve: this broker's replica must be its leader, or a
        // follower the leader has told its high watermark since it began to follow (a
        // follower's own high watermark may otherwise be past the leader's).
        let replica = if item.any_replica {
            match context.replication.get(&item.topic, item.partition) {
                Some(r) if r.led_epoch().is_some() || r.leader_high_watermark_known.get() => {
                    Some(r)
                }
                _ => return ReadOutcome::failed(ResponseError::NotLeaderOrFollower.code()),
            }
        } else {
            None
        };
        let last_stable_offset = partition.last_stable_offset();
        let preferred = replica
            .as_ref()
            .and_then(|r| preferred_read_replica(context, &item, r));
        if let Some(preferred) = preferred {
            return ReadOutcome {
                error_code: error::NONE,
                high_watermark: log.high_watermark(),
                log_start_offset: log.log_start_offset(),
                last_stable_offset,
                records: Vec::new(),
                aborted_transactions: item.read_committed.then(Vec::new),
                preferred_read_replica: Some(preferred),
            };
        }
        let upper_offset = if item.read_committed {
            last_stable_offset
        } else {
            i64::MAX
        };
        let (error_code, records) = match log
            .read_below(item.offset, item.max_bytes, upper_offset)
            .await
        {
            Ok(slice) => (error::NONE, slice.chunks),
            Err(err) => (error::storage_error_code(&err), Vec::new()),
        };
        let aborted_transactions = item.read_committed.then(|| {
            let end = last_offset_read(&records).map_or(item.offset, |last| last + 1);
            partition
                .producers
                .borrow()
                .aborted_between(item.offset, end)
        });
        ReadOutcome {
            error_code,
            high_watermark: log.high_watermark(),
            log_start_offset: log.log_start_offset(),
            last_stable_offset,
            records,
            aborted_transactions,
            preferred_read_replica: None,
        }
    });
    join_all(reads).await
}

/// The replica `replica.selector.class` prefers for a consumer's read of a partition this
/// broker leads, when it is not this broker (KIP-392): the candidates are this leader and the
/// followers on live brokers whose log already reaches the fetch offset.
fn preferred_read_replica(
    context: &ShardContext,
    item: &ReadItem,
    replica: &crate::replication::Replica,
) -> Option<i32> {
    let rack = item.client_rack.as_deref()?;
    let role = replica.role.borrow();
    let crate::replication::Role::Leader(state) = &*role else {
        return None;
    };
    let image = context.image();
    let rack_of = |id: i32| image.brokers.get(&id).and_then(|b| b.rack.as_deref());
    let me = context.identity.node_id;
    let mut candidates = vec![Candidate {
        id: me,
        rack: rack_of(me),
        log_end: replica.open.log.log_end_offset(),
        caught_up_ms: crate::storage::log::now_ms(),
    }];
    for &id in state.replicas.iter().filter(|&&id| id != me) {
        let live = image.brokers.get(&id).is_some_and(|b| !b.fenced);
        match state.follower(id) {
            Some(progress) if live && progress.log_end >= item.offset => {
                candidates.push(Candidate {
                    id,
                    rack: rack_of(id),
                    log_end: progress.log_end,
                    caught_up_ms: progress.caught_up_ms,
                });
            }
            _ => {}
        }
    }
    let selector = context.replication.settings().selector;
    selector::preferred_read_replica(selector, rack, &candidates)
}

/// A follower's fetch on its leader: records the follower's progress (its fetch offset is its
/// log end), which may move the high watermark, then reads what it has not got, up to the
/// leader's durable end.
async fn read_for_follower(
    context: &Rc<ShardContext>,
    item: &ReadItem,
    partition: &OpenPartition,
    follower: i32,
) -> ReadOutcome {
    let Some(replica) = context.replication.get(&item.topic, item.partition) else {
        return ReadOutcome::failed(ResponseError::NotLeaderOrFollower.code());
    };
    // The replica's partition must be the one opened for this read (a recreated topic gets a
    // new one).
    if !std::ptr::eq(&*replica.open, partition) {
        return ReadOutcome::failed(ResponseError::NotLeaderOrFollower.code());
    }
    if let Err(err) = crate::replication::ReplicaManager::follower_fetched(
        context,
        &replica,
        follower,
        item.offset,
    ) {
        return ReadOutcome::failed(error::replication_error_code(&err));
    }
    let log = &partition.log;
    let (error_code, records) = match log.read_replica(item.offset, item.max_bytes).await {
        Ok(slice) => (error::NONE, slice.chunks),
        Err(err) => (error::storage_error_code(&err), Vec::new()),
    };
    ReadOutcome {
        error_code,
        high_watermark: log.high_watermark(),
        log_start_offset: log.log_start_offset(),
        last_stable_offset: partition.last_stable_offset(),
        records,
        aborted_transactions: None,
        preferred_read_replica: None,
    }
}

/// Owner side of a fetch's long poll: resolves when any item's partition has data beyond the
/// item's offset, or after `timeout`. Woken by appends, never by polling.
pub async fn serve_wait(context: &ShardContext, items: Vec<ReadItem>, timeout: Duration) {
    let mut waits = Vec::new();
    for item in &items {
        if let Ok(partition) = open_for_read(context, item).await {
            let (offset, read_committed) = (item.offset, item.read_committed);
            let follower = item.replica.is_some();
            waits.push(Box::pin(async move {
                // read_committed data ends at the last stable offset; it moves when the high
                // watermark does or when a marker closes a transaction (which notifies). A
                // follower waits for the durable end.
                let visible = || {
                    if follower {
                        partition.log.durable_end()
                    } else if read_committed {
                        partition.last_stable_offset()
                    } else {
                        partition.log.high_watermark()
                    }
                };
                partition
                    .log
                    .wait_until(|_, closed| (visible() > offset || closed).then_some(()))
                    .await;
            }));
        }
    }
    if waits.is_empty() {
        return;
    }
    let any = futures::future::select_all(waits);
    let _ = glommio::timer::timeout(timeout, async {
        any.await;
        Ok(())
    })
    .await;
}

/// Owner side of ListOffsets (and of the end offsets OffsetForLeaderEpoch reports).
pub async fn serve_offsets(context: &ShardContext, items: Vec<OffsetItem>) -> Vec<OffsetOutcome> {
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let partition = match open(context, &item.topic, item.partition).await {
            Ok(partition) => partition,
            Err(code) => {
                outcomes.push(OffsetOutcome {
                    error_code: code,
                    offset: -1,
                    timestamp: -1,
                    legacy_offsets: Vec::new(),
                    leader_epoch: -1,
                });
                continue;
            }
        };
        let log = &partition.log;
        if let Some((requested, current)) = item.epoch_lookup {
            // The leader epoch cache answers (KIP-101/279); a log written before epochs were
            // recorded (a lone node's) knows only the current epoch, ending at the high
            // watermark.
            let (leader_epoch, offset) = if log.latest_epoch().is_some() {
                log.epoch_end_offset(requested)
            } else if requested == current {
                (current, log.high_watermark())
            } else {
                (-1, -1)
            };
            outcomes.push(OffsetOutcome {
                error_code: error::NONE,
                offset,
                timestamp: -1,
                legacy_offsets: Vec::new(),
                leader_epoch,
            });
            continue;
        }
        if let Some(max_num_offsets) = item.max_num_offsets {
            let segments = log.segment_times().await;
            outcomes.push(OffsetOutcome {
                error_code: error::NONE,
                offset: -1,
                timestamp: -1,
                legacy_offsets: legacy_offsets(
                    &segments,
                    item.timestamp,
                    max_num_offsets,
                    (
                        log.log_start_offset(),
                        log.log_end_offset(),
                        log.high_watermark(),
                    ),
                ),
                leader_epoch: -1,
            });
            continue;
        }
        let found = match item.timestamp {
            offset_spec::EARLIEST => Ok(Some((log.log_start_offset(), -1))),
            offset_spec::LATEST if item.read_committed => {
                Ok(Some((partition.last_stable_offset(), -1)))
            }
            offset_spec::LATEST => Ok(Some((log.high_watermark(), -1))),
            offset_spec::MAX_TIMESTAMP => Ok(log.max_timestamp()),
            // As Kafka: the record found counts only below what the isolation level may
            // fetch (the high watermark, or the last stable offset for read_committed).
            timestamp => log.offset_for_timestamp(timestamp).await.map(|found| {
                found.filter(|&(offset, _)| {
                    !item.read_committed || offset < partition.last_stable_offset()
                })
            }),
        };
        outcomes.push(match found {
            Ok(Some((offset, timestamp))) => OffsetOutcome {
                error_code: error::NONE,
                offset,
                timestamp,
                legacy_offsets: Vec::new(),
                leader_epoch: -1,
            },
            Ok(None) => OffsetOutcome {
                error_code: error::NONE,
                offset: -1,
                timestamp: -1,
                legacy_offsets: Vec::new(),
                leader_epoch: -1,
            },
            Err(err) => OffsetOutcome {
                error_code: error::storage_error_code(&err),
                offset: -1,
                timestamp: -1,
                legacy_offsets: Vec::new(),
                leader_epoch: -1,
            },
        });
    }
    outcomes
}

/// ListOffsets v0, as Kafka answers it (`legacyFetchOffsetsBefore`): the candidates are every
/// segment's base offset (at least the log start offset) with the segment file's modification
/// time, plus the log end offset (now) when the last segment holds data. EARLIEST starts at the
/// first candidate, LATEST at the last, a timestamp at the newest candidate modified at or
/// before it; from there up to `max_num_offsets` candidates are listed going back, newest
/// first. A consumer is not shown offsets past the high watermark: they are replaced by it.
/// `bounds` is (log start offset, log end offset, high watermark).
fn legacy_offsets(
    segments: &[(i64, u64, i64)],
    timestamp: i64,
    max_num_offsets: i32,
    bounds: (i64, i64, i64),
) -> Vec<i64> {
    let (log_start, log_end, high_watermark) = bounds;
    let mut candidates: Vec<(i64, i64)> = segments
        .iter()
        .map(|&(base, _, modified_ms)| (base.max(log_start), modified_ms))
        .collect();
    if segments.last().is_some_and(|&(_, size, _)| size > 0) {
        candidates.push((log_end, crate::storage::log::now_ms()));
    }
    let start: i64 = match timestamp {
        offset_spec::LATEST => candidates.len() as i64 - 1,
        offset_spec::EARLIEST => 0,
        time => candidates
            .iter()
            .rposition(|&(_, modified_ms)| modified_ms <= time)
            .map_or(-1, |i| i as i64),
    };
    let count = i64::from(max_num_offsets.max(0)).min(start + 1).max(0);
    let mut offsets: Vec<i64> = (0..count)
        .map(|j| candidates[(start - j) as usize].0)
        .collect();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    if offsets.iter().any(|&o| o > high_watermark) {
        let kept: Vec<i64> = offsets
            .into_iter()
            .skip_while(|&o| o > high_watermark)
            .collect();
        offsets = std::iter::once(high_watermark).chain(kept).collect();
    }
    offsets
}

/// Owner side of DeleteRecords.
pub async fn serve_delete(context: &ShardContext, items: Vec<DeleteItem>) -> Vec<DeleteOutcome> {
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let outcome = match open(context, &item.topic, item.partition).await {
            Err(code) => DeleteOutcome {
                error_code: code,
                low_watermark: -1,
            },
            Ok(partition) => match partition.log.delete_records(item.offset).await {
                Ok(low_watermark) => {
                    partition.after_log_start_moved();
                    DeleteOutcome {
                        error_code: error::NONE,
                        low_watermark,
                    }
                }
                Err(err) => DeleteOutcome {
                    error_code: error::storage_error_code(&err),
                    low_watermark: -1,
                },
            },
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// Owner side of transaction markers: for each item, checks the producer's epoch and the
/// coordinator's, appends a commit or abort control batch (durable under the topic's flush
/// policy, as an acks=all batch is), closes the producer's
/// transaction on the partition, persists an abort in the transaction index, and wakes
/// read_committed fetches. A marker on a `__consumer_offsets` partition also ends the
/// producer's transactional offset commits held by the group coordinator there (they become
/// committed offsets, or are dropped). Answers one Kafka error code per item.
pub async fn serve_txn_markers(context: &Rc<ShardContext>, items: Vec<TxnMarkerItem>) -> Vec<i16> {
    // Kafka appends markers with acks=all within `request.timeout.ms`.
    let timeout =
        Duration::from_millis(context.config.int("request.timeout.ms", 30_000).max(1) as u64);
    let writes = items.into_iter().map(|item| async move {
        let partition = match open(context, &item.topic, item.partition).await {
            Ok(partition) => partition,
            Err(code) => return code,
        };
        // Under a quorum only the leading replica appends (as for Produce).
        if context.clustered()
            && context
                .replication
                .get(&item.topic, item.partition)
                .is_none_or(|r| r.led_epoch().is_none())
        {
            return ResponseError::NotLeaderOrFollower.code();
        }
        let marker = ControlMarker {
            commit: item.commit,
            coordinator_epoch: item.coordinator_epoch,
        };
        match partition
            .write_marker(item.producer_id, item.producer_epoch, marker)
            .await
        {
            Ok(offset) => {
                // acks=all: the ISR holds the marker before it counts as written.
                if let Err(err) = context
                    .replication
                    .wait_replicated(&item.topic, item.partition, offset + 1, timeout)
                    .await
                {
                    return error::replication_error_code(&err);
                }
                if item.topic == crate::group::OFFSETS_TOPIC {
                    crate::group::coordinator::complete_transaction(
                        context,
                        item.partition,
                        item.producer_id,
                        item.commit,
                    )
                    .await;
                }
                error::NONE
            }
            Err(err) => error::append_error_code(&err),
        }
    });
    join_all(writes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_offsets_follow_kafka() {
        // Segments at 0 (modified at 100), 10 (200) and 20 (300, holding data); LEO 25.
        let segments = [(0, 10, 100), (10, 10, 200), (20, 5, 300)];
        let bounds = (0, 25, 25);
        assert_eq!(
            legacy_offsets(&segments, offset_spec::LATEST, 1, bounds),
            vec![25]
        );
        assert_eq!(
            legacy_offsets(&segments, offset_spec::LATEST, 10, bounds),
            vec![25, 20, 10, 0]
        );
        assert_eq!(
            legacy_offsets(&segments, offset_spec::EARLIEST, 5, bounds),
            vec![0]
        );
        assert_eq!(legacy_offsets(&segments, 250, 5, bounds), vec![10, 0]);
        assert_eq!(legacy_offsets(&segments, 50, 5, bounds), Vec::<i64>::new());
        assert_eq!(
            legacy_offsets(&segments, offset_spec::LATEST, 0, bounds),
            Vec::<i64>::new()
        );
        // The log start offset inside the first segment; an empty last segment adds nothing.
        assert_eq!(
            legacy_offsets(
                &[(0, 10, 100), (10, 0, 200)],
                offset_spec::LATEST,
                5,
                (4, 10, 10)
            ),
            vec![10, 4]
        );
        // Never past the high watermark.
        assert_eq!(
            legacy_offsets(&segments, offset_spec::LATEST, 2, (0, 25, 22)),
            vec![22, 20]
        );
    }
}
