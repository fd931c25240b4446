//! The typed messages between shards: what one shard asks of another (`ShardRequest`), the
//! answers (`ShardResponse`) and one-way posts (`ShardPost`). The runtime's router carries
//! them (`runtime::router::Serve`); `broker::ShardContext` serves them.
//!
//! Owner: plain `Send` data, built on the calling shard and consumed on the owner. Adding a
//! service call between shards means a variant here and its arm in `ShardContext::serve`.

use bytes::Bytes;

use crate::broker::owner::{
    DeleteItem, DeleteOutcome, LogDirItem, LogDirOutcome, OffsetItem, OffsetOutcome, ProduceItem,
    ProduceOutcome, ProducersItem, ProducersOutcome, ReadItem, ReadOutcome, TxnMarkerItem,
};
use crate::metadata::{ControllerRequest, ControllerResponse, MetadataImage};
use crate::metrics::MetricsSnapshot;
use crate::runtime::ShardId;

/// Work one shard asks of another. Payloads are `Bytes` or owned data: they cross threads
/// without being copied.
#[derive(Debug)]
pub enum ShardRequest {
    /// Echo: answers with the shard's id and the same payload. Used by health checks and tests.
    Ping {
        /// Returned unchanged.
        payload: Bytes,
    },
    /// A metadata change for the controller (shard 0 only).
    Controller(ControllerRequest),
    /// Append records to partitions this shard owns.
    Produce {
        /// The partitions and their records.
        items: Vec<ProduceItem>,
        /// The request's acks (0, 1 or -1).
        acks: i16,
        /// The request's timeout: how long acks=-1 waits for the ISR.
        timeout_ms: u64,
    },
    /// Read from partitions this shard owns.
    Read(Vec<ReadItem>),
    /// Wait until any of these partitions has data beyond its offset, or the timeout.
    WaitForData {
        /// The partitions and offsets.
        items: Vec<ReadItem>,
        /// The bound.
        timeout_ms: u64,
    },
    /// Look up offsets (ListOffsets).
    Offsets(Vec<OffsetItem>),
    /// Move log start offsets (DeleteRecords).
    DeleteRecords(Vec<DeleteItem>),
    /// Describe partitions' logs (DescribeLogDirs).
    LogDirs(Vec<LogDirItem>),
    /// List partitions' producers (DescribeProducers).
    Producers(Vec<ProducersItem>),
    /// Write transaction markers on partitions this shard owns (for a transaction
    /// coordinator).
    WriteTxnMarkers(Vec<TxnMarkerItem>),
    /// This shard's metrics, for a scrape.
    Metrics,
    /// The controller quorum as shard 0 sees it (DescribeQuorum).
    QuorumStatus,
    /// Work for the group coordinator of this shard (consumer groups and committed offsets).
    Group(crate::group::GroupCall),
    /// Work for the transaction coordinator of this shard.
    Txn(crate::txn::TxnCall),
    /// Stop accepting connections and let in-flight requests finish; answered when drained.
    Drain,
    /// Close files and stop the executor; answered just before the shard stops.
    Stop,
}

/// The answer to a `ShardRequest`.
#[derive(Debug)]
pub enum ShardResponse {
    /// Answer to `Ping`.
    Pong {
        /// The shard that answered.
        shard: ShardId,
        /// The payload of the ping.
        payload: Bytes,
    },
    /// Answer to `Controller`.
    Controller(ControllerResponse),
    /// Answer to `Produce`, one outcome per item.
    Produce(Vec<ProduceOutcome>),
    /// Answer to `Read`, one outcome per item.
    Read(Vec<ReadOutcome>),
    /// Answer to `Offsets`, one outcome per item.
    Offsets(Vec<OffsetOutcome>),
    /// Answer to `DeleteRecords`, one outcome per item.
    DeleteRecords(Vec<DeleteOutcome>),
    /// Answer to `LogDirs`, one outcome per item.
    LogDirs(Vec<LogDirOutcome>),
    /// Answer to `Producers`, one outcome per item.
    Producers(Vec<ProducersOutcome>),
    /// Answer to `WriteTxnMarkers`: one Kafka error code per item (0: the marker is written).
    WriteTxnMarkers(Vec<i16>),
    /// Answer to `Metrics`.
    Metrics(Box<MetricsSnapshot>),
    /// Answer to `QuorumStatus`: `None` on a lone node, or while the quorum starts.
    QuorumStatus(Option<Box<crate::cluster::driver::QuorumStatus>>),
    /// Answer to `Group`.
    Group(crate::group::GroupReply),
    /// Answer to `Txn`.
    Txn(crate::txn::TxnReply),
    /// The request was carried out and has nothing to report.
    Done,
}

/// One-way messages, applied inline by the receiving shard in send order.
#[derive(Debug)]
pub enum ShardPost {
    /// A new metadata image from the controller, replacing the shard's current one.
    InstallImage(Box<MetadataImage>),
}
