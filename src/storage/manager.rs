//! The partition logs one shard owns: opening, configuring, deleting and retaining them as
//! the metadata image changes.
//!
//! Owner: one `PartitionManager` per shard, inside its `ShardContext`. It holds exactly the
//! partitions that `shard_for` gives this shard; requests for other partitions are routed here
//! by the router, never opened elsewhere.
//!
//! Lifecycle: `sync_with_image` runs (as a background task, one at a time, in install order)
//! after every new metadata image and once at start: it opens newly owned partitions, applies
//! changed topic configs to open logs, and closes and deletes the partitions of deleted topics.
//! `get` opens a partition on demand if a request arrives before the sync has. Opening is
//! serialised by a FIFO turnstile so a partition is never opened twice, and requests that
//! arrive while their partition is being opened keep their arrival order. `close_all`
//! flushes and closes every log at shutdown.
//!
//! Deletion renames `<topic>-<p>` to `<topic>-<p>.<topic id>-delete` at once (so a topic of
//! the same name created right after starts empty) and removes it on the blocking pool;
//! leftovers of a crash are removed at start. Each partition directory holds Kafka's
//! `partition.metadata` with its topic id, so a directory left from a deleted topic is never
//! mistaken for a new topic of the same name.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures::StreamExt;
use glommio::sync::Semaphore;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::Config;
use crate::config::topic::{self, TopicSettings};
use crate::metadata::MetadataImage;
use crate::metadata::store::base64_url;
use crate::runtime::turnstile::Turnstile;
use crate::runtime::{ShardId, shard_for};
use crate::storage::batch::{self, BATCH_HEADER_BYTES, BatchHeader, ControlMarker};
use crate::storage::log::now_ms;
use crate::storage::producer_state::{
    AbortedTxn, ProducerError, ProducerStateTable, SequenceCheck,
};
use crate::storage::segment::{read_small_file, write_file_atomic};
use crate::storage::txn_index;
use crate::storage::{
    AppendInfo, FlushPolicy, LogConfig, LogEnv, PartitionLog, StorageError, TimestampType,
};

const PARTITION_METADATA_FILE: &str = "partition.metadata";
const DELETE_SUFFIX: &str = "-delete";

/// Why a partition could not be had on this shard.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The topic or partition does not exist (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("unknown topic or partition {topic}-{partition}")]
    Unknown {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// Another shard owns it; the caller routed wrongly or the shard count changed
    /// (NOT_LEADER_OR_FOLLOWER).
    #[error("{topic}-{partition} is owned by {owner}, not this shard")]
    NotOwner {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The owner.
        owner: ShardId,
    },
    /// Under a controller quorum, another broker leads the partition, or none does
    /// (NOT_LEADER_OR_FOLLOWER: the client refreshes its metadata).
    #[error("this broker does not lead {topic}-{partition} (leader {leader})")]
    NotLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The leader, or -1.
        leader: i32,
    },
    /// The log could not be opened or used (KAFKA_STORAGE_ERROR and friends).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// An open partition: its log and the topic it belongs to.
#[derive(Debug)]
pub struct OpenPartition {
    /// The topic's id when the log was opened.
    pub topic_id: Uuid,
    /// The settings the log runs with (from the topic's configs and the broker's).
    pub settings: RefCell<TopicSettings>,
    /// The log.
    pub log: PartitionLog,
    /// Producers' sequence and transaction state.
    pub producers: RefCell<ProducerStateTable>,
    /// The partition's directory.
    dir: PathBuf,
    /// Offset of the newest producer state snapshot on disk (-1: none).
    snapshot_offset: Cell<i64>,
    /// Held while a snapshot is written (a truncation waits for it).
    snapshot_permit: Semaphore,
    /// Serialises replica appends (log append and producer state update) and truncations.
    replica_permit: Semaphore,
    /// Serialises rewrites of `.txnindex` files; held while one is written.
    txn_index_permit: Semaphore,
    /// Where snapshot writes run (the shard's background queue; the current one if None).
    background_queue: Option<glommio::TaskQueueHandle>,
}

/// Why a checked append or a marker was not written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The producer state refused it.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// A retry of a batch whose first write is still in flight (the client should retry).
    #[error("a retry of a batch whose first write is still in flight; retry")]
    RetryInFlight,
    /// The log refused it or could not write it.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a checked append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written.
    New(AppendInfo),
    /// A retry of a batch already written at `base_offset`: nothing written.
    Duplicate {
        /// The original's base offset.
        base_offset: i64,
    },
}

impl OpenPartition {
    /// Opens (recovering) the log in `dir` and rebuilds its producer state.
    async fn open(
        dir: PathBuf,
        topic_id: Uuid,
        settings: TopicSettings,
        env: LogEnv,
    ) -> Result<OpenPartition, StorageError> {
        let background_queue = env.background_queue;
        let log = PartitionLog::open_with(&dir, log_config(&settings), env).await?;
        let (producers, snapshot_offset) = rebuild_producer_state(&dir, &log).await?;
        Ok(OpenPartition {
            topic_id,
            settings: RefCell::new(settings),
            log,
            producers: RefCell::new(producers),
            dir,
            snapshot_offset: Cell::new(snapshot_offset),
            snapshot_permit: Semaphore::new(1),
            replica_permit: Semaphore::new(1),
            txn_index_permit: Semaphore::new(1),
            background_queue,
        })
    }

    /// Appends a produced batch after the producer checks (sequence, epoch, transaction
    /// state), which run in the same poll as the staging so checks follow the order of
    /// appends; resolves when durable under the topic's flush policy.
    pub async fn append_checked(self: &Rc<Self>, records: Bytes) -> Result<Appended, AppendError> {
        let header_bytes = records.slice(..BATCH_HEADER_BYTES.min(records.len()));
        let header = BatchHeader::view(&header_bytes).ok_or(StorageError::CorruptMessage(
            "record batch shorter than its header",
        ))?;
        let next_offset = self.log.log_end_offset();
        let check = self
            .producers
            .borrow_mut()
            .check_and_reserve(header, next_offset);
        match check {
            SequenceCheck::NotIdempotent | SequenceCheck::Append => {}
            SequenceCheck::Duplicate { base_offset } => {
                return Ok(Appended::Duplicate { base_offset });
            }
            SequenceCheck::DuplicateInFlight => return Err(AppendError::RetryInFlight),
            SequenceCheck::Refused(err) => return Err(err.into()),
        }
        let result = self.log.append(records.clone()).await;
        if check == SequenceCheck::Append {
            let mut producers = self.producers.borrow_mut();
            match &result {
                Ok(info) => producers.confirm(header, info.base_offset, info.last_offset),
                Err(_) => producers.revert(header),
            }
        }
        let info = result?;
        self.spawn_snapshot_if_due();
        Ok(Appended::New(info))
    }

    /// Appends batches fetched from the partition's leader (a follower's append):
    /// `PartitionLog::append_replica` (offsets and epochs kept, contiguity checked), then the
    /// producer state updated from every batch as Kafka's follower does it: no sequence
    /// refusals, but each producer's epoch, sequences, last offsets and open transaction are
    /// tracked, a control batch closes its producer's transaction, and an abort goes into the
    /// aborted list and the segment's `.txnindex` (as `write_marker` does). Read_committed
    /// waiters are woken after a marker; a snapshot is started as after a leader's append. A
    /// follower that becomes leader so has the idempotence and transaction state a new Kafka
    /// leader has. Replica appends and truncations of the partition run one at a time.
    pub async fn append_replica(
        self: &Rc<Self>,
        records: Bytes,
    ) -> Result<AppendInfo, AppendError> {
        let permit = self
            .replica_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let info = self.log.append_replica(records.clone()).await?;
        let mut aborted = Vec::new();
        let mut markers = false;
        {
            let mut producers = self.producers.borrow_mut();
            let mut position = 0;
            while let Some(header) = records.get(position..).and_then(BatchHeader::view) {
                let size = header.size_bytes() as usize;
                markers |= header.is_control();
                if let Some(txn) = producers.replay(header, &records[position..position + size]) {
                    aborted.push(txn);
                }
                position += size;
            }
        }
        if markers {
            self.log.notify_waiters();
        }
        for txn in aborted {
            if let Err(err) = self.record_aborted(txn).await {
                // The marker is in the log; the replay at the next open rebuilds the entry.
                warn!(dir = %self.dir.display(), %err,
                    "could not persist an aborted transaction in the transaction index");
            }
        }
        drop(permit);
        self.spawn_snapshot_if_due();
        Ok(info)
    }

    /// Truncates the log at `offset` (`PartitionLog::truncate_to`: whole batches from the one
    /// holding `offset` go) and rebuilds the producer state for the new end as the open does
    /// (`rebuild_producer_state`): snapshots above the end removed, the newest one at or below
    /// it loaded, the batches after it replayed, aborted transactions past the end dropped (the
    /// log rewrites the cut segment's `.txnindex`). Waits for replica appends, a snapshot
    /// being written and `.txnindex` writes; not meant to run while the partition takes
    /// produce requests (a follower's).
    pub async fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        let _replica = self
            .replica_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let _snapshot = self
            .snapshot_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let _txn_index = self
            .txn_index_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        self.log.truncate_to(offset).await?;
        let (producers, snapshot_offset) = rebuild_producer_state(&self.dir, &self.log).await?;
        *self.producers.borrow_mut() = producers;
        self.snapshot_offset.set(snapshot_offset);
        self.log.notify_waiters();
        Ok(())
    }

    /// Restarts the partition empty at `offset` (`PartitionLog::truncate_fully_and_start_at`)
    /// with an empty producer state: every producer state snapshot is removed first (so a
    /// crash can never reopen with a snapshot of the old log), then the log is emptied.
    pub async fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), StorageError> {
        let _replica = self
            .replica_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let _snapshot = self
            .snapshot_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let _txn_index = self
            .txn_index_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        for stale in snapshot_offsets(&self.dir) {
            match std::fs::remove_file(self.dir.join(snapshot_file_name(stale))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StorageError::io("remove producer snapshot", e));
                }
                _ => {}
            }
        }
        self.log.truncate_fully_and_start_at(offset).await?;
        for stale in files_with_suffix(&self.dir, txn_index::SUFFIX) {
            let _ = std::fs::remove_file(self.dir.join(txn_index::file_name(stale)));
        }
        *self.producers.borrow_mut() = ProducerStateTable::new();
        self.snapshot_offset.set(-1);
        self.log.notify_waiters();
        Ok(())
    }

    /// Writes a transaction marker for `producer_id` (on its transaction coordinator's
    /// behalf): checks the producer's and the coordinator's epochs, appends the control batch
    /// (durable under the topic's flush policy, as an acks=all batch), closes the producer's
    /// transaction here, wakes read_committed waiters, and persists an abort in the
    /// transaction index. Returns the marker's offset.
    pub async fn write_marker(
        self: &Rc<Self>,
        producer_id: i64,
        producer_epoch: i16,
        marker: ControlMarker,
    ) -> Result<i64, AppendError> {
        self.producers.borrow_mut().check_marker(
            producer_id,
            producer_epoch,
            marker.coordinator_epoch,
        )?;
        let timestamp_ms = now_ms();
        let control = batch::build_control_batch(producer_id, producer_epoch, marker, timestamp_ms);
        let info = match self.log.append(Bytes::from(control)).await {
            Ok(info) => info,
            Err(err) => {
                self.producers.borrow_mut().cancel_marker(producer_id);
                return Err(err.into());
            }
        };
        let aborted = self.producers.borrow_mut().complete_marker(
            producer_id,
            producer_epoch,
            marker,
            info.base_offset,
            timestamp_ms,
        );
        self.log.notify_waiters();
        if let Some(txn) = aborted
            && let Err(err) = self.record_aborted(txn).await
        {
            // The marker is in the log; the replay at the next open rebuilds the entry.
            warn!(dir = %self.dir.display(), %err,
                "could not persist an aborted transaction in the transaction index");
        }
        self.spawn_snapshot_if_due();
        Ok(info.base_offset)
    }

    /// The last stable offset: the first offset of the oldest open transaction, or the high
    /// watermark.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.log.high_watermark();
        self.producers
            .borrow()
            .first_unstable_offset()
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// Starts `snapshot_if_due(false)` in the background when the log rolled since the last
    /// snapshot, so no produce waits for a snapshot write. Costs two reads when not due.
    fn spawn_snapshot_if_due(self: &Rc<Self>) {
        if self.log.active_segment_base() <= self.snapshot_offset.get().max(0) {
            return;
        }
        let partition = self.clone();
        let task = async move { partition.snapshot_if_due(false).await };
        let spawned = match self.background_queue {
            Some(queue) => glommio::spawn_local_into(task, queue),
            None => Ok(glommio::spawn_local(task)),
        };
        if let Ok(task) = spawned {
            task.detach();
        }
    }

    /// Writes a producer state snapshot if the log rolled since the last one (or, with
    /// `force`, if anything was appended since) and the partition is quiet: nothing staged and
    /// no batch or marker awaiting its outcome and no replica append or truncation running,
    /// so the table matches exactly the offsets below the durable end. Cheap when not due:
    /// called after appends.
    pub async fn snapshot_if_due(&self, force: bool) {
        let offset = self.log.durable_end();
        let last = self.snapshot_offset.get();
        let due = if force {
            offset != last
        } else {
            self.log.active_segment_base() > last.max(0)
        };
        if !due
            || self.log.log_end_offset() != offset
            || self.txn_index_permit.available() == 0
            || self.replica_permit.available() == 0
        {
            return;
        }
        let Ok(_permit) = self.snapshot_permit.try_acquire_permit(1) else {
            return;
        };
        let bytes = {
            let producers = self.producers.borrow();
            if producers.has_pending() {
                return;
            }
            producers.encode_snapshot(offset)
        };
        let written = write_file_atomic(&self.dir, &snapshot_file_name(offset), &bytes).await;
        match written {
            Ok(()) => {
                self.snapshot_offset.set(offset);
                // Keep this snapshot and the one before it.
                let mut older: Vec<i64> = snapshot_offsets(&self.dir)
                    .into_iter()
                    .filter(|&o| o < offset)
                    .collect();
                older.sort_unstable();
                older.pop();
                for stale in older {
                    let _ = std::fs::remove_file(self.dir.join(snapshot_file_name(stale)));
                }
            }
            Err(err) => warn!(dir = %self.dir.display(), %err, "producer state snapshot failed"),
        }
    }

    /// Persists an aborted transaction in the `.txnindex` of the segment holding its marker
    /// (the table already lists it). Resolves once the file is durable.
    pub async fn record_aborted(&self, txn: AbortedTxn) -> Result<(), StorageError> {
        let _permit = self
            .txn_index_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let (base, next) = self.log.segment_bounds(txn.last_offset);
        let entries = self.producers.borrow().aborted_in_segment(base, next);
        write_file_atomic(
            &self.dir,
            &txn_index::file_name(base),
            &txn_index::encode(&entries),
        )
        .await
    }

    /// Drops what lies below the log start offset after retention or DeleteRecords.
    pub fn after_log_start_moved(&self) {
        self.producers
            .borrow_mut()
            .prune_aborted_below(self.log.log_start_offset());
    }
}

const SNAPSHOT_SUFFIX: &str = ".snapshot";

fn snapshot_file_name(offset: i64) -> String {
    format!("{offset:020}{SNAPSHOT_SUFFIX}")
}

/// Offsets of the producer state snapshots in `dir`.
fn snapshot_offsets(dir: &Path) -> Vec<i64> {
    files_with_suffix(dir, SNAPSHOT_SUFFIX)
}

/// Offsets named by the files `<20 digits><suffix>` in `dir`.
fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<i64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(suffix)?;
            (stem.len() == 20)
                .then(|| stem.parse::<i64>().ok())
                .flatten()
        })
        .collect()
}

/// Counts a request in the slow path of `PartitionManager::get` for its partition, until
/// dropped (also when the request is cancelled).
struct OpeningGuard<'a> {
    opening: &'a RefCell<HashMap<(String, i32), usize>>,
    key: Option<(String, i32)>,
}

impl<'a> OpeningGuard<'a> {
    fn enter(opening: &'a RefCell<HashMap<(String, i32), usize>>, key: (String, i32)) -> Self {
        *opening.borrow_mut().entry(key.clone()).or_default() += 1;
        OpeningGuard {
            opening,
            key: Some(key),
        }
    }
}

impl Drop for OpeningGuard<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut opening = self.opening.borrow_mut();
        if let Some(count) = opening.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                opening.remove(&key);
            }
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct PartitionManager {
    data_dir: PathBuf,
    broker: Config,
    shard: ShardId,
    shard_count: usize,
    env: LogEnv,
    logs: RefCell<HashMap<String, HashMap<i32, Rc<OpenPartition>>>>,
    /// Opening is one partition at a time, in arrival order.
    open_turnstile: Turnstile,
    /// Requests in the slow path of `get`, per partition.
    opening: RefCell<HashMap<(String, i32), usize>>,
    sync_permit: Semaphore,
}

/// The storage settings of a topic.
pub fn log_config(settings: &TopicSettings) -> LogConfig {
    LogConfig {
        segment_bytes: u64::from(settings.segment_bytes),
        segment_ms: settings.segment_ms.max(1) as u64,
        retention_ms: settings.retention_ms,
        retention_bytes: settings.retention_bytes,
        index_interval_bytes: settings.index_interval_bytes,
        // flush.messages=1 is "sync every append"; otherwise a finite flush.ms is an interval,
        // and anything else is left to the OS. Kafka's "every N messages" for N > 1 has no
        // exact equivalent in the group-commit writer and is treated as not per-append.
        flush: if settings.flush_messages <= 1 {
            FlushPolicy::EveryAppend
        } else if settings.flush_ms < i64::MAX {
            FlushPolicy::IntervalMs(settings.flush_ms as u64)
        } else {
            FlushPolicy::Os
        },
        timestamp_type: if settings.log_append_time {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        max_message_bytes: settings.max_message_bytes,
    }
}

/// The directory of partition `partition` of `topic`, in Kafka's layout.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Removes directories that a crash left half-deleted. Run once at start, before any shard.
pub fn remove_deleted_leftovers(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(DELETE_SUFFIX)
            && let Err(err) = std::fs::remove_dir_all(entry.path())
        {
            warn!(path = %entry.path().display(), %err, "cannot remove deleted partition");
        }
    }
}

impl PartitionManager {
    /// A manager for `shard` with no partitions open yet.
    pub fn new(broker: Config, shard: ShardId, shard_count: usize, env: LogEnv) -> Self {
        PartitionManager {
            data_dir: broker.data_dir.clone(),
            broker,
            shard,
            shard_count,
            env,
            logs: RefCell::new(HashMap::new()),
            open_turnstile: Turnstile::default(),
            opening: RefCell::default(),
            sync_permit: Semaphore::new(1),
        }
    }

    /// Whether this shard owns `partition` of `topic`.
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        shard_for(topic, partition, self.shard_count) == self.shard
    }

    fn lookup(&self, topic: &str, partition: i32) -> Option<Rc<OpenPartition>> {
        self.logs.borrow().get(topic)?.get(&partition).cloned()
    }

    /// The open partition `partition` of `topic` as `image` describes it, opening it if
    /// needed, for a client's request: under a controller quorum only the partition's leader
    /// serves it (`PartitionError::NotLeader` elsewhere).
    pub async fn get(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
    ) -> Result<Rc<OpenPartition>, PartitionError> {
        self.open_checked(image, topic, partition, true).await
    }

    /// As `get`, for the replication service: any replica this broker holds, leader or
    /// follower.
    pub async fn get_replica(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
    ) -> Result<Rc<OpenPartition>, PartitionError> {
        self.open_checked(image, topic, partition, false).await
    }

    async fn open_checked(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
        leader_only: bool,
    ) -> Result<Rc<OpenPartition>, PartitionError> {
        let unknown = || PartitionError::Unknown {
            topic: topic.to_string(),
            partition,
        };
        let meta = image.topic(topic).ok_or_else(unknown)?;
        if partition < 0 || partition >= meta.partitions {
            return Err(unknown());
        }
        if !self.owns(topic, partition) {
            return Err(PartitionError::NotOwner {
                topic: topic.to_string(),
                partition,
                owner: shard_for(topic, partition, self.shard_count),
            });
        }
        let leader = meta.leader_of(partition, self.broker.node_id);
        let refused = if leader_only {
            leader != self.broker.node_id
        } else {
            !meta.holds_replica(partition, self.broker.node_id)
        };
        if refused {
            return Err(PartitionError::NotLeader {
                topic: topic.to_string(),
                partition,
                leader,
            });
        }
        let key = (topic.to_string(), partition);
        // The fast path only when no earlier request waits for this partition to open: a
        // request must not overtake one from the same connection that arrived first.
        if !self.opening.borrow().contains_key(&key)
            && let Some(open) = self
                .lookup(topic, partition)
                .filter(|p| p.topic_id == meta.id)
        {
            return Ok(open);
        }
        let _waiting = OpeningGuard::enter(&self.opening, key);
        let turn = self.open_turnstile.join();
        turn.wait().await;
        if let Some(open) = self.lookup(topic, partition) {
            if open.topic_id == meta.id {
                return Ok(open);
            }
            // A log of an older topic of the same name: the sync will delete it; it must not
            // serve the new topic.
            self.remove(topic, partition, &open).await;
        }
        let settings = topic::resolve(&meta.configs, &image.broker_values(&self.broker));
        let dir = partition_dir(&self.data_dir, topic, partition);
        claim_dir(&dir, meta.id).await?;
        let open = Rc::new(OpenPartition::open(dir, meta.id, settings, self.env.clone()).await?);
        info!(
            shard = %self.shard,
            topic,
            partition,
            high_watermark = open.log.high_watermark(),
            producers = open.producers.borrow().len(),
            snapshot_offset = open.snapshot_offset.get(),
            "partition opened"
        );
        self.logs
            .borrow_mut()
            .entry(topic.to_string())
            .or_default()
            .insert(partition, open.clone());
        Ok(open)
    }

    /// Brings the open partitions in line with `image`. See the module documentation.
    ///
    /// `latest` gives the shard's newest image, read once this sync has its turn: syncs queue
    /// behind each other, and an older image applied late would close and delete partitions
    /// that requests have already opened under a newer one (a topic created in between looks
    /// deleted to it), losing what was written to them since.
    pub async fn sync_with_image(&self, latest: impl Fn() -> Rc<MetadataImage>) {
        let _permit = self
            .sync_permit
            .acquire_permit(1)
            .await
            .expect("the sync semaphore is never closed");
        let image = latest();
        // Deleted or recreated topics, and partitions no longer in the image.
        let image_ref: &MetadataImage = &image;
        let me = self.broker.node_id;
        let stale: Vec<(String, i32, Rc<OpenPartition>)> = self
            .logs
            .borrow()
            .iter()
            .flat_map(|(topic, parts)| {
                parts.iter().filter_map(move |(p, open)| {
                    let current = image_ref.topic(topic);
                    let keep = current.is_some_and(|t| t.id == open.topic_id && *p < t.partitions);
                    (!keep).then(|| (topic.clone(), *p, open.clone()))
                })
            })
            .collect();
        // Deleted partitions go a few at a time, not one by one: each waits on its writer,
        // closes its files and removes its directory on a blocking thread.
        futures::stream::iter(stale)
            .for_each_concurrent(
                crate::limits::STORAGE_PARTITION_REMOVALS_CONCURRENT_MAX,
                |(topic, partition, open)| async move {
                    self.remove(&topic, partition, &open).await;
                },
            )
            .await;
        // Partitions this broker no longer holds a replica of (a controller quorum's change):
        // closed, their data kept for when it returns.
        let moved: Vec<(String, i32, Rc<OpenPartition>)> = self
            .logs
            .borrow()
            .iter()
            .flat_map(|(topic, parts)| {
                parts.iter().filter_map(move |(p, open)| {
                    let elsewhere = image_ref
                        .topic(topic)
                        .is_some_and(|t| !t.holds_replica(*p, me));
                    elsewhere.then(|| (topic.clone(), *p, open.clone()))
                })
            })
            .collect();
        for (topic, partition, open) in moved {
            if let Some(parts) = self.logs.borrow_mut().get_mut(&topic)
                && parts.get(&partition).is_some_and(|o| Rc::ptr_eq(o, &open))
            {
                parts.remove(&partition);
            }
            if let Err(err) = open.log.close().await {
                warn!(topic, partition, %err, "closing a partition held elsewhere failed");
            }
            info!(shard = %self.shard, topic, partition, "no replica here now; closed");
        }
        // Config changes of open partitions.
        let open: Vec<(String, Rc<OpenPartition>)> = self
            .logs
            .borrow()
            .iter()
            .flat_map(|(t, parts)| parts.values().map(move |o| (t.clone(), o.clone())))
            .collect();
        for (topic, partition) in open {
            if let Some(meta) = image.topic(&topic) {
                let settings = topic::resolve(&meta.configs, &image.broker_values(&self.broker));
                if *partition.settings.borrow() != settings {
                    partition.log.set_config(log_config(&settings));
                    *partition.settings.borrow_mut() = settings;
                }
            }
        }
        // Newly owned partitions.
        for meta in image.topics.values() {
            for partition in 0..meta.partitions {
                if self.owns(&meta.name, partition)
                    && meta.holds_replica(partition, me)
                    && let Err(err) = self.get_replica(&image, &meta.name, partition).await
                {
                    warn!(topic = %meta.name, partition, %err, "cannot open partition");
                }
            }
        }
    }

    /// Closes a partition and deletes its directory.
    async fn remove(&self, topic: &str, partition: i32, open: &Rc<OpenPartition>) {
        if let Some(parts) = self.logs.borrow_mut().get_mut(topic)
            && parts.get(&partition).is_some_and(|o| Rc::ptr_eq(o, open))
        {
            parts.remove(&partition);
        }
        if let Err(err) = open.log.close_for_delete().await {
            warn!(topic, partition, %err, "closing a deleted partition failed");
        }
        let dir = partition_dir(&self.data_dir, topic, partition);
        let doomed = self.data_dir.join(format!(
            "{topic}-{partition}.{}{DELETE_SUFFIX}",
            open.topic_id.simple()
        ));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => {
                let removed = glommio::executor()
                    .spawn_blocking(move || std::fs::remove_dir_all(&doomed))
                    .await;
                if let Err(err) = removed {
                    warn!(topic, partition, %err, "cannot remove deleted partition");
                }
                info!(shard = %self.shard, topic, partition, "partition deleted");
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => warn!(topic, partition, %err, "cannot rename deleted partition"),
        }
    }

    /// Bytes this shard's active segments hold reserved ahead of their tails.
    pub fn reserved_bytes(&self) -> u64 {
        self.env.reserve_budget.held_bytes()
    }

    /// Every open partition, for periodic work.
    pub fn open_partitions(&self) -> Vec<(String, i32, Rc<OpenPartition>)> {
        self.logs
            .borrow()
            .iter()
            .flat_map(|(t, parts)| parts.iter().map(move |(p, o)| (t.clone(), *p, o.clone())))
            .collect()
    }

    /// Applies retention to every open partition whose cleanup policy includes `delete`.
    pub async fn apply_retention(&self, now_ms: i64) {
        for (topic, partition, open) in self.open_partitions() {
            if !open.settings.borrow().cleanup_delete {
                continue;
            }
            match open.log.apply_retention(now_ms).await {
                Ok(0) => {}
                Ok(deleted) => {
                    open.after_log_start_moved();
                    info!(
                        topic,
                        partition,
                        deleted,
                        log_start_offset = open.log.log_start_offset(),
                        "retention deleted segments"
                    );
                }
                Err(err) => warn!(topic, partition, %err, "retention failed"),
            }
        }
    }

    /// Flushes and closes every open log (shutdown).
    pub async fn close_all(&self) {
        let open = self.open_partitions();
        self.logs.borrow_mut().clear();
        for (topic, partition, open) in open {
            if let Err(err) = open.log.close().await {
                warn!(topic, partition, %err, "closing partition failed");
                continue;
            }
            open.snapshot_if_due(true).await;
        }
    }
}

/// Rebuilds a partition's producer state on open (and after a truncation): the newest snapshot
/// at or below the durable end (snapshots above it describe data that recovery or a truncation
/// cut, and are removed), the aborted transactions of the `.txnindex` files below the end, then
/// every batch after the snapshot replayed from the log up to the durable end (the whole log
/// when there is no snapshot). Returns the table and the snapshot's offset (-1: none).
/// Public for the fuzz targets (`tests/fuzz`), which run it after recovering a segment.
pub async fn rebuild_producer_state(
    dir: &Path,
    log: &PartitionLog,
) -> Result<(ProducerStateTable, i64), StorageError> {
    const READ_BYTES: u32 = 1024 * 1024;
    let end = log.durable_end();
    let log_start = log.log_start_offset();
    let mut offsets = snapshot_offsets(dir);
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    let mut loaded = None;
    for offset in offsets {
        let path = dir.join(snapshot_file_name(offset));
        if offset > end {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Some(bytes) = read_small_file(&path).await? else {
            continue;
        };
        match ProducerStateTable::decode_snapshot(&bytes) {
            Ok((at, table)) if at == offset => {
                loaded = Some((table, offset));
                break;
            }
            Ok(_) => warn!(path = %path.display(), "snapshot offset does not match its name"),
            Err(err) => warn!(path = %path.display(), %err, "ignoring producer state snapshot"),
        }
    }
    let (mut table, snapshot_offset) = loaded.unwrap_or_else(|| (ProducerStateTable::new(), -1));
    for base in files_with_suffix(dir, txn_index::SUFFIX) {
        if let Some(bytes) = read_small_file(&dir.join(txn_index::file_name(base))).await? {
            for txn in txn_index::decode(&bytes) {
                if txn.last_offset >= log_start && txn.last_offset < end {
                    table.add_aborted(txn);
                }
            }
        }
    }
    let mut offset = snapshot_offset.max(log_start);
    while offset < end {
        let bytes = log.read_replica(offset, READ_BYTES).await?.to_vec();
        let mut position = 0;
        let mut advanced = false;
        while let Some(header) = BatchHeader::view(&bytes[position..]) {
            let size = header.size_bytes() as usize;
            if size < BATCH_HEADER_BYTES || position + size > bytes.len() {
                break;
            }
            if header.last_offset() >= offset {
                let _aborted = table.replay(header, &bytes[position..position + size]);
                offset = header.last_offset() + 1;
                advanced = true;
            }
            position += size;
        }
        if !advanced {
            break;
        }
    }
    Ok((table, snapshot_offset))
}

/// Makes `dir` the directory of topic `topic_id`: writes Kafka's `partition.metadata` in a new
/// directory, and moves aside a directory that belongs to another topic id.
async fn claim_dir(dir: &Path, topic_id: Uuid) -> Result<(), StorageError> {
    let expected = format!(
        "version: 0\ntopic_id: {}\n",
        base64_url(topic_id.as_bytes())
    );
    let file = dir.join(PARTITION_METADATA_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) if text == expected => return Ok(()),
        Ok(_) => {
            let aside = dir.with_extension(format!("{}{DELETE_SUFFIX}", Uuid::new_v4().simple()));
            warn!(
                dir = %dir.display(),
                "partition directory belongs to another topic id; moving it aside"
            );
            std::fs::rename(dir, &aside)
                .map_err(|e| StorageError::io("move stale partition", e))?;
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(StorageError::io("read partition.metadata", err)),
    }
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create partition dir", e))?;
    let tmp = dir.join("partition.metadata.tmp");
    std::fs::write(&tmp, expected.as_bytes())
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| StorageError::io("write partition.metadata", e))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::topic::BrokerValues;
    use crate::storage::ShardCache;
    use crate::storage::batch::{TRANSACTIONAL_ATTRIBUTE_BIT, build_test_batch, compute_crc};

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join");
    }

    fn settings(segment_bytes: u32) -> TopicSettings {
        let config = Config::build(&[]).unwrap();
        let none = BTreeMap::new();
        let mut settings = topic::resolve(
            &none,
            &BrokerValues {
                config: &config,
                cluster: &none,
                node: &none,
            },
        );
        settings.segment_bytes = segment_bytes;
        settings
    }

    async fn open(dir: &Path, segment_bytes: u32) -> Rc<OpenPartition> {
        let env = LogEnv {
            cache: Rc::new(ShardCache::new(1 << 20)),
            background_queue: None,
            reserve_space: false,
            reserve_budget: crate::storage::ReserveBudget::new(u64::MAX),
        };
        Rc::new(
            OpenPartition::open(dir.to_path_buf(), Uuid::nil(), settings(segment_bytes), env)
                .await
                .unwrap(),
        )
    }

    /// A batch of `count` records from `producer_id` at `sequence`, transactional or not.
    fn batch(producer_id: i64, sequence: i32, count: i32, transactional: bool) -> Bytes {
        let mut bytes = build_test_batch(count, 100, now_ms(), 1);
        bytes[21..23].copy_from_slice(
            &(if transactional {
                TRANSACTIONAL_ATTRIBUTE_BIT
            } else {
                0
            })
            .to_be_bytes(),
        );
        bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
        bytes[51..53].copy_from_slice(&0i16.to_be_bytes());
        bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
        let crc = compute_crc(&bytes);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(bytes)
    }

    async fn append(partition: &Rc<OpenPartition>, records: Bytes) -> i64 {
        match partition.append_checked(records).await.unwrap() {
            Appended::New(info) => info.base_offset,
            other => panic!("not appended: {other:?}"),
        }
    }

    const ABORT: ControlMarker = ControlMarker {
        commit: false,
        coordinator_epoch: 0,
    };
    const COMMIT: ControlMarker = ControlMarker {
        commit: true,
        coordinator_epoch: 0,
    };

    #[test]
    fn transactions_hold_the_lso_and_survive_reopening() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("t-0");
            {
                let p = open(&dir, 1 << 20).await;
                append(&p, batch(-1, -1, 2, false)).await; // 0..=1
                assert_eq!(append(&p, batch(7, 0, 3, true)).await, 2); // 2..=4, aborted later
                append(&p, batch(-1, -1, 1, false)).await; // 5
                assert_eq!(append(&p, batch(8, 0, 2, true)).await, 6); // 6..=7, committed later
                assert_eq!(p.log.high_watermark(), 8);
                assert_eq!(p.last_stable_offset(), 2);
                // read_committed sees only what is below the LSO.
                let seen = p
                    .log
                    .read_below(0, 1 << 20, p.last_stable_offset())
                    .await
                    .unwrap();
                assert_eq!(crate::storage::log::last_offset_read(&seen.chunks), Some(1));

                assert_eq!(p.write_marker(7, 0, ABORT).await.unwrap(), 8);
                assert_eq!(p.last_stable_offset(), 6);
                assert_eq!(p.producers.borrow().aborted_between(0, 9), vec![(7, 2)]);
                // A marker from an older epoch is refused and changes nothing.
                assert!(matches!(
                    p.write_marker(8, -1, COMMIT).await,
                    Err(AppendError::Producer(ProducerError::StaleEpoch { .. }))
                ));
                // Still inside its transaction: a plain batch from producer 8 is refused.
                assert!(matches!(
                    p.append_checked(batch(8, 2, 1, false)).await,
                    Err(AppendError::Producer(ProducerError::OpenTransaction { .. }))
                ));
                assert_eq!(p.write_marker(8, 0, COMMIT).await.unwrap(), 9);
                assert_eq!(p.last_stable_offset(), 10);
                // Producer 7 opens a second transaction, left open across the crash below.
                assert_eq!(append(&p, batch(7, 3, 1, true)).await, 10);
                assert_eq!(p.last_stable_offset(), 10);
                let index = std::fs::read(dir.join(txn_index::file_name(0))).unwrap();
                assert_eq!(txn_index::decode(&index).len(), 1);
                // Dropped without close: no snapshot, recovery replays the log.
            }
            {
                let p = open(&dir, 1 << 20).await;
                assert_eq!(p.snapshot_offset.get(), -1);
                assert_eq!(p.log.high_watermark(), 11);
                assert_eq!(p.last_stable_offset(), 10);
                assert_eq!(p.producers.borrow().aborted_between(0, 11), vec![(7, 2)]);
                // The retry of producer 7's last batch is recognised after the restart.
                assert_eq!(
                    p.append_checked(batch(7, 3, 1, true)).await.unwrap(),
                    Appended::Duplicate { base_offset: 10 }
                );
                p.log.close().await.unwrap();
                p.snapshot_if_due(true).await;
                assert_eq!(p.snapshot_offset.get(), 11);
            }
            {
                // From the snapshot this time, with the aborted list from the index file.
                let p = open(&dir, 1 << 20).await;
                assert_eq!(p.snapshot_offset.get(), 11);
                assert_eq!(p.last_stable_offset(), 10);
                assert_eq!(p.producers.borrow().aborted_between(0, 11), vec![(7, 2)]);
                assert_eq!(p.write_marker(7, 0, ABORT).await.unwrap(), 11);
                assert_eq!(p.last_stable_offset(), 12);
                assert_eq!(
                    p.producers.borrow().aborted_between(0, 12),
                    vec![(7, 2), (7, 10)]
                );
                p.log.close().await.unwrap();
            }
        });
    }

    /// What a new leader needs of the producer state, comparable across tables.
    #[allow(clippy::type_complexity)]
    fn producer_view(
        p: &OpenPartition,
    ) -> (
        Vec<crate::storage::producer_state::ProducerSummary>,
        i64,
        Vec<(i64, i64)>,
        Vec<(i64, i64)>,
    ) {
        let producers = p.producers.borrow();
        let mut summary = producers.describe();
        summary.sort_by_key(|s| s.producer_id);
        let mut last: Vec<_> = producers.last_batch_offsets().into_iter().collect();
        last.sort_unstable();
        (
            summary,
            p.last_stable_offset(),
            producers.aborted_between(0, i64::MAX),
            last,
        )
    }

    /// Copies what the leader has and the follower lacks, fetch by fetch.
    async fn replicate(leader: &Rc<OpenPartition>, follower: &Rc<OpenPartition>) {
        let mut offset = follower.log.log_end_offset();
        while offset < leader.log.durable_end() {
            let chunk = leader.log.read_replica(offset, 700).await.unwrap();
            let info = follower
                .append_replica(Bytes::from(chunk.to_vec()))
                .await
                .unwrap();
            offset = info.last_offset + 1;
        }
    }

    #[test]
    fn follower_producer_state_matches_the_leader() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let leader = open(&tmp.path().join("l-0"), 4096).await;
            let follower = open(&tmp.path().join("f-0"), 4096).await;
            leader.log.set_leader_epoch(2).await.unwrap();
            append(&leader, batch(5, 0, 2, false)).await; // idempotent
            append(&leader, batch(7, 0, 3, true)).await; // aborted below
            append(&leader, batch(5, 2, 1, false)).await;
            append(&leader, batch(8, 0, 2, true)).await; // committed below
            replicate(&leader, &follower).await;
            assert_eq!(producer_view(&follower), producer_view(&leader));
            assert_eq!(
                follower.last_stable_offset(),
                2,
                "producer 7's open transaction"
            );
            leader.write_marker(7, 0, ABORT).await.unwrap();
            leader.write_marker(8, 0, COMMIT).await.unwrap();
            append(&leader, batch(7, 3, 1, true)).await; // left open
            for i in 0..20 {
                append(&leader, batch(5, 3 + i, 1, false)).await;
            }
            replicate(&leader, &follower).await;
            assert!(
                follower.log.segment_count() > 1,
                "rolled on the follower too"
            );
            assert_eq!(producer_view(&follower), producer_view(&leader));
            assert_eq!(
                follower.producers.borrow().aborted_between(0, i64::MAX),
                vec![(7, 2)]
            );
            // The abort went into the follower's transaction index, as on the leader.
            assert_eq!(
                std::fs::read(follower.dir.join(txn_index::file_name(0))).unwrap(),
                std::fs::read(leader.dir.join(txn_index::file_name(0))).unwrap()
            );
            // Became leader: a retry of producer 5's last batch is a duplicate, the next
            // sequence appends, a gap is refused.
            let last_base = leader.log.log_end_offset() - 1;
            assert_eq!(
                follower
                    .append_checked(batch(5, 22, 1, false))
                    .await
                    .unwrap(),
                Appended::Duplicate {
                    base_offset: last_base
                }
            );
            assert!(matches!(
                follower.append_checked(batch(5, 30, 1, false)).await,
                Err(AppendError::Producer(ProducerError::OutOfOrder { .. }))
            ));
            follower.log.set_leader_epoch(3).await.unwrap();
            assert_eq!(
                append(&follower, batch(5, 23, 1, false)).await,
                last_base + 1
            );
            // And a reopened follower rebuilds the same state from its log.
            let before = producer_view(&follower);
            follower.log.close().await.unwrap();
            let reopened = open(&tmp.path().join("f-0"), 4096).await;
            assert_eq!(producer_view(&reopened), before);
            reopened.log.close().await.unwrap();
            leader.log.close().await.unwrap();
        });
    }

    /// As `replicate`, but only the batches that start below `end`.
    async fn replicate_until(leader: &Rc<OpenPartition>, follower: &Rc<OpenPartition>, end: i64) {
        let mut offset = follower.log.log_end_offset();
        while offset < end {
            let chunk = leader.log.read_replica(offset, 1).await.unwrap().to_vec();
            let header = BatchHeader::view(&chunk).unwrap();
            if header.base_offset.get() >= end {
                break;
            }
            let size = header.size_bytes() as usize;
            let info = follower
                .append_replica(Bytes::copy_from_slice(&chunk[..size]))
                .await
                .unwrap();
            offset = info.last_offset + 1;
        }
    }

    #[test]
    fn truncation_rebuilds_the_producer_state_for_the_new_end() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let leader = open(&tmp.path().join("l-0"), 4096).await;
            let follower = open(&tmp.path().join("f-0"), 4096).await;
            leader.log.set_leader_epoch(1).await.unwrap();
            for i in 0..30 {
                append(&leader, batch(5, i, 1, false)).await; // 0..=29
            }
            assert_eq!(append(&leader, batch(7, 0, 2, true)).await, 30); // 30..=31
            append(&leader, batch(5, 30, 1, false)).await; // 32
            assert_eq!(leader.write_marker(7, 0, ABORT).await.unwrap(), 33);
            for i in 31..40 {
                append(&leader, batch(5, i, 1, false)).await; // 34..=42
            }
            replicate(&leader, &follower).await;
            // Snapshots on the follower, one above the cut to come.
            // (A background snapshot started by a roll may hold the writer: try again.)
            for _ in 0..200 {
                follower.snapshot_if_due(true).await;
                if follower.snapshot_offset.get() == 43 {
                    break;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert_eq!(follower.snapshot_offset.get(), 43);
            assert_eq!(
                std::fs::read(
                    follower
                        .dir
                        .join(txn_index::file_name(follower.log.segment_bounds(33).0))
                )
                .map(|b| txn_index::decode(&b).len())
                .unwrap(),
                1
            );

            // Cut between the transactional batch and its abort marker.
            follower.truncate_to(33).await.unwrap();
            assert_eq!(follower.log.log_end_offset(), 33);
            assert!(snapshot_offsets(&follower.dir).iter().all(|&o| o <= 33));
            let reference = open(&tmp.path().join("r-0"), 4096).await;
            replicate_until(&leader, &reference, 33).await;
            assert_eq!(producer_view(&follower), producer_view(&reference));
            assert_eq!(
                follower.last_stable_offset(),
                30,
                "the transaction is open again"
            );
            assert!(
                follower
                    .producers
                    .borrow()
                    .aborted_between(0, i64::MAX)
                    .is_empty()
            );
            // The segment's transaction index lost the abort past the cut.
            let base = follower.log.segment_bounds(32).0;
            assert!(
                std::fs::read(follower.dir.join(txn_index::file_name(base)))
                    .map(|b| txn_index::decode(&b).is_empty())
                    .unwrap_or(true)
            );
            // Fetching again from the leader brings back the same state.
            replicate(&leader, &follower).await;
            assert_eq!(producer_view(&follower), producer_view(&leader));
            // A cut at 20: the same as a log that only ever had 0..20.
            follower.truncate_to(20).await.unwrap();
            let reference20 = open(&tmp.path().join("r20-0"), 4096).await;
            replicate_until(&leader, &reference20, 20).await;
            assert_eq!(producer_view(&follower), producer_view(&reference20));
            // The state survives a reopen.
            let before = producer_view(&follower);
            follower.log.close().await.unwrap();
            let follower = open(&tmp.path().join("f-0"), 4096).await;
            assert_eq!(producer_view(&follower), before);

            // Restarted empty at the leader's end: no producers, no snapshots.
            follower.truncate_fully_and_start_at(43).await.unwrap();
            assert!(follower.producers.borrow().is_empty());
            assert!(snapshot_offsets(&follower.dir).is_empty());
            assert_eq!(follower.log.log_start_offset(), 43);
            follower.log.close().await.unwrap();
            let follower = open(&tmp.path().join("f-0"), 4096).await;
            assert!(follower.producers.borrow().is_empty());
            assert_eq!(follower.log.log_end_offset(), 43);
            for p in [&follower, &leader, &reference, &reference20] {
                p.log.close().await.unwrap();
            }
        });
    }

    #[test]
    fn snapshots_follow_segment_rolls() {
        run(|| async {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("t-0");
            let p = open(&dir, 4096).await;
            for sequence in 0..40 {
                append(&p, batch(3, sequence, 1, false)).await;
            }
            // The snapshot is written in the background.
            glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            assert!(p.log.segment_count() > 1);
            let snapshot = p.snapshot_offset.get();
            assert!(snapshot > 0, "a snapshot after a roll");
            assert!(snapshot_offsets(&dir).len() <= 2);
            p.log.close().await.unwrap();
            drop(p);
            let p = open(&dir, 4096).await;
            assert_eq!(
                p.append_checked(batch(3, 39, 1, false)).await.unwrap(),
                Appended::Duplicate { base_offset: 39 }
            );
            append(&p, batch(3, 40, 1, false)).await;
        });
    }
}
