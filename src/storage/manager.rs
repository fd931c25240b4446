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
//! serialised by a one-permit semaphore so a partition is never opened twice. `close_all`
//! flushes and closes every log at shutdown.
//!
//! Deletion renames `<topic>-<p>` to `<topic>-<p>.<topic id>-delete` at once (so a topic of
//! the same name created right after starts empty) and removes it on the blocking pool;
//! leftovers of a crash are removed at start. Each partition directory holds Kafka's
//! `partition.metadata` with its topic id, so a directory left from a deleted topic is never
//! mistaken for a new topic of the same name.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::sync::Semaphore;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::Config;
use crate::config::topic::{self, TopicSettings};
use crate::metadata::MetadataImage;
use crate::metadata::store::base64_url;
use crate::shard::{ShardId, shard_for};
use crate::storage::batch::{BATCH_HEADER_BYTES, BatchHeader};
use crate::storage::producer_state::ProducerStateTable;
use crate::storage::{FlushPolicy, LogConfig, LogEnv, PartitionLog, StorageError, TimestampType};

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
    /// Idempotent producers' sequence state.
    pub producers: RefCell<ProducerStateTable>,
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
    open_permit: Semaphore,
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
            open_permit: Semaphore::new(1),
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

    /// The open partition `partition` of `topic` as `image` describes it, opening it if needed.
    pub async fn get(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
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
        if let Some(open) = self
            .lookup(topic, partition)
            .filter(|p| p.topic_id == meta.id)
        {
            return Ok(open);
        }
        let _permit = self
            .open_permit
            .acquire_permit(1)
            .await
            .expect("the open semaphore is never closed");
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
        let log = PartitionLog::open_with(&dir, log_config(&settings), self.env.clone()).await?;
        let producers = rebuild_producer_state(&log).await?;
        info!(
            shard = %self.shard,
            topic,
            partition,
            high_watermark = log.high_watermark(),
            producers = producers.len(),
            "partition opened"
        );
        let open = Rc::new(OpenPartition {
            topic_id: meta.id,
            settings: RefCell::new(settings),
            log,
            producers: RefCell::new(producers),
        });
        self.logs
            .borrow_mut()
            .entry(topic.to_string())
            .or_default()
            .insert(partition, open.clone());
        Ok(open)
    }

    /// Brings the open partitions in line with `image`. See the module documentation.
    pub async fn sync_with_image(&self, image: Rc<MetadataImage>) {
        let _permit = self
            .sync_permit
            .acquire_permit(1)
            .await
            .expect("the sync semaphore is never closed");
        // Deleted or recreated topics, and partitions no longer in the image.
        let image_ref: &MetadataImage = &image;
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
        for (topic, partition, open) in stale {
            self.remove(&topic, partition, &open).await;
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
                    && let Err(err) = self.get(&image, &meta.name, partition).await
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
        if let Err(err) = open.log.close().await {
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
                Ok(deleted) => info!(
                    topic,
                    partition,
                    deleted,
                    log_start_offset = open.log.log_start_offset(),
                    "retention deleted segments"
                ),
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
            }
        }
    }
}

/// Replays the batch headers of the active segment into a producer state table (see
/// `producer_state` for why only the active segment).
async fn rebuild_producer_state(log: &PartitionLog) -> Result<ProducerStateTable, StorageError> {
    const READ_BYTES: u32 = 1024 * 1024;
    let mut table = ProducerStateTable::new();
    let start = log
        .segment_bases()
        .last()
        .copied()
        .unwrap_or(0)
        .max(log.log_start_offset());
    let end = log.high_watermark();
    let mut offset = start;
    while offset < end {
        let bytes = log.read(offset, READ_BYTES).await?.to_vec();
        let mut position = 0;
        let mut advanced = false;
        while let Some(header) = BatchHeader::view(&bytes[position..]) {
            let size = header.size_bytes() as usize;
            if size < BATCH_HEADER_BYTES || position + size > bytes.len() {
                break;
            }
            if header.last_offset() >= offset {
                table.replay(header);
                offset = header.last_offset() + 1;
                advanced = true;
            }
            position += size;
        }
        if !advanced {
            break;
        }
    }
    Ok(table)
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
