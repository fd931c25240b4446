//! Per-log configuration (the storage half of a topic's configs).
//!
//! A plain value owned by the `PartitionLog`; replaced at runtime with `set_config` when a
//! topic config is altered. New values apply to the next append, roll or retention pass.

use crate::limits::{
    STORAGE_MESSAGE_BYTES_MAX, STORAGE_SEGMENT_BYTES_MAX, STORAGE_SEGMENT_BYTES_MIN,
};

/// When an append is considered durable (`flush.messages` / `flush.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fdatasync before acknowledging (group-committed). Kafka `flush.messages=1`.
    EveryAppend,
    /// Acknowledge once written; fdatasync at most this many ms later.
    IntervalMs(u64),
    /// Acknowledge once written; leave syncing to the OS (and to roll/close).
    Os,
}

/// `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Storage configuration of one partition log. `Default` is Kafka's defaults except that
/// flushing every append is our default (`flush.messages=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    /// -1 = infinite.
    pub retention_ms: i64,
    /// -1 = infinite.
    pub retention_bytes: i64,
    pub index_interval_bytes: u32,
    pub flush: FlushPolicy,
    pub timestamp_type: TimestampType,
    pub max_message_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            flush: FlushPolicy::EveryAppend,
            timestamp_type: TimestampType::CreateTime,
            max_message_bytes: 1_048_588,
        }
    }
}

impl LogConfig {
    /// Clamps values into the engine's bounds (`limits.rs`) instead of failing: the topic
    /// config layer validates and reports; the engine only protects itself.
    pub(crate) fn clamped(mut self) -> Self {
        self.segment_bytes = self
            .segment_bytes
            .clamp(STORAGE_SEGMENT_BYTES_MIN, STORAGE_SEGMENT_BYTES_MAX);
        self.max_message_bytes = self.max_message_bytes.min(STORAGE_MESSAGE_BYTES_MAX);
        self.index_interval_bytes = self.index_interval_bytes.max(1);
        self.segment_ms = self.segment_ms.max(1);
        self
    }
}
