//! Partition log storage (see `../shared/DESIGN.md` §3): Kafka's on-disk layout, direct-I/O
//! appends with group-committed fdatasync, sparse indexes, crash recovery, retention and a
//! per-shard cache of recent batches.
//!
//! Everything here is per shard and !Send: a `PartitionLog` lives on the executor of the shard
//! that owns the partition, and the `ShardCache` is shared by that shard's logs through `Rc`.
//! Data leaves the module as `bytes::Bytes`, which may cross the channel mesh.
//!
//! Module map: `log` (PartitionLog: append pipeline, reads, lookups, retention, recovery),
//! `segment` (one segment, scanning, small-file I/O), `index` (offset and time index),
//! `batch` (v2 header view, validation, patching), `records` (the records inside one batch),
//! `cache` (ShardCache), `config`, `error`, `reserve` (the per-shard reservation budget),
//! `epoch_cache` (the leader epoch cache and its checkpoint),
//! `cleaner` (log compaction; its log side is `log::compact`), `compression` (batch codecs).
//! The waiter lists woken by appends are `runtime::event`.

pub mod batch;
pub mod cache;
pub mod cleaner;
pub mod compression;
pub mod config;
pub mod epoch_cache;
pub mod error;
mod index;
pub mod log;
pub mod manager;
pub mod producer_state;
pub mod records;
pub mod reserve;
pub(crate) mod segment;
pub mod txn_index;

pub use cache::ShardCache;
pub use config::{FlushPolicy, LogConfig, TimestampType};
pub use error::{StorageError, StorageResult};
pub use log::{AppendInfo, LogEnv, PartitionLog, ReadSlice};
pub use reserve::ReserveBudget;
