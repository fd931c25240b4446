//! Errors of the storage engine.
//!
//! Owned by nobody in particular: values, created on the shard that owns the log and
//! `Send + Clone` so they can cross the channel mesh and be handed to every append future of
//! a failed group commit. The mapping to Kafka error codes lives in `broker/error.rs`; the
//! intended code is written on each variant.

use std::sync::Arc;

/// Everything a partition log operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// Batch length, truncation or CRC-32C is wrong. Kafka: `CORRUPT_MESSAGE` (2).
    #[error("corrupt record batch: {0}")]
    CorruptMessage(&'static str),
    /// Magic is not 2, or the record count does not match `lastOffsetDelta`.
    /// Kafka: `INVALID_RECORD` (87) (`UNSUPPORTED_FOR_MESSAGE_FORMAT` (43) is also acceptable
    /// for an old magic).
    #[error("invalid record batch: {0}")]
    InvalidRecord(&'static str),
    /// A batch is larger than `max.message.bytes`. Kafka: `MESSAGE_TOO_LARGE` (10).
    #[error("record batch of {size_bytes} bytes exceeds max.message.bytes {max_bytes}")]
    MessageTooLarge { size_bytes: u64, max_bytes: u32 },
    /// Read at an offset outside `[log_start_offset, durable end]` (then `high_watermark`
    /// holds the durable end), or delete outside `[log_start_offset, high_watermark]`.
    /// Kafka: `OFFSET_OUT_OF_RANGE` (1).
    #[error("offset {offset} out of range [{log_start_offset}, {high_watermark}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    /// A replica append whose batches do not continue the log: a batch starting below
    /// `expected` (the log end offset, or the offset after the previous batch of the same
    /// append). Nothing was staged. Kafka's follower raises UnexpectedAppendOffsetException
    /// here; the replica fetcher handles it (`UNKNOWN_SERVER_ERROR` (-1) if it ever
    /// reached a client).
    #[error("replica batch at offset {got} does not continue the log at {expected}")]
    NonContiguous { expected: i64, got: i64 },
    /// Too many bytes staged and not yet written on this log; retry later.
    /// Kafka: `REQUEST_TIMED_OUT` (7), retriable.
    #[error("log overloaded: {staged_bytes} bytes staged")]
    Overloaded { staged_bytes: u64 },
    /// The log was closed. Kafka: `NOT_LEADER_OR_FOLLOWER` (6) (the partition moved or is
    /// shutting down).
    #[error("log closed")]
    Closed,
    /// Disk full, EIO or any other I/O failure. The log stays consistent (nothing after the
    /// last durable batch is visible) and later appends retry. Kafka: `KAFKA_STORAGE_ERROR` (56).
    #[error("storage I/O error during {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl StorageError {
    pub(crate) fn io(context: &'static str, e: impl Into<std::io::Error>) -> Self {
        StorageError::Io {
            context,
            source: Arc::new(e.into()),
        }
    }
}

/// Shorthand for storage results.
pub type StorageResult<T> = Result<T, StorageError>;
