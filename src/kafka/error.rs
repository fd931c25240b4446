//! The one place where broker errors become Kafka error codes.
//!
//! Every failure a client can cause is mapped here, so a handler never chooses a code by hand
//! and two APIs never disagree about the same failure.

use kafka_protocol::ResponseError;

use crate::kafka::legacy_format::LegacyFormatError;
use crate::metadata::MetadataError;
use crate::shard::RouterError;
use crate::storage::StorageError;
use crate::storage::manager::{AppendError, PartitionError};
use crate::storage::producer_state::ProducerError;

/// Kafka's "no error".
pub const NONE: i16 = 0;

/// The Kafka error code for a refused metadata change or lookup.
pub fn metadata_error_code(err: &MetadataError) -> i16 {
    let kind = match err {
        MetadataError::InvalidTopicName(_) => ResponseError::InvalidTopicException,
        MetadataError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        MetadataError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        MetadataError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        MetadataError::InvalidConfig(_) => ResponseError::InvalidConfig,
        MetadataError::DuplicateTopic(_) => ResponseError::InvalidRequest,
        MetadataError::LimitExceeded(_) => ResponseError::PolicyViolation,
        MetadataError::Storage(_) => ResponseError::KafkaStorageError,
    };
    kind.code()
}

/// The Kafka error code when a request could not reach the shard that owns its data.
pub fn router_error_code(err: &RouterError) -> i16 {
    match err {
        // The owner is stopping (shutdown): the client should retry elsewhere or later.
        RouterError::ShardGone(_) => ResponseError::NotLeaderOrFollower.code(),
        RouterError::NoSuchShard { .. } => ResponseError::UnknownServerError.code(),
        RouterError::Overloaded(_) => ResponseError::RequestTimedOut.code(),
    }
}

/// The Kafka error code of a failed partition log operation.
pub fn storage_error_code(err: &StorageError) -> i16 {
    let kind = match err {
        StorageError::CorruptMessage(_) => ResponseError::CorruptMessage,
        StorageError::InvalidRecord(_) => ResponseError::InvalidRecord,
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // Retriable: the client backs off and sends again.
        StorageError::Overloaded { .. } => ResponseError::RequestTimedOut,
        StorageError::Closed => ResponseError::NotLeaderOrFollower,
        StorageError::Io { .. } => ResponseError::KafkaStorageError,
    };
    kind.code()
}

/// The Kafka error code of a refused producer batch or transaction marker.
pub fn producer_error_code(err: &ProducerError) -> i16 {
    let kind = match err {
        ProducerError::StaleEpoch { .. } => ResponseError::InvalidProducerEpoch,
        ProducerError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber,
        ProducerError::UnknownProducer { .. } => ResponseError::UnknownProducerId,
        ProducerError::ControlBatchFromClient | ProducerError::TransactionalWithoutProducer => {
            ResponseError::InvalidRecord
        }
        ProducerError::OpenTransaction { .. } => ResponseError::InvalidTxnState,
        ProducerError::MarkerInFlight { .. } => ResponseError::ConcurrentTransactions,
        ProducerError::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
    };
    kind.code()
}

/// The Kafka error code of a checked append or transaction marker that was not written.
pub fn append_error_code(err: &AppendError) -> i16 {
    match err {
        AppendError::Producer(err) => producer_error_code(err),
        AppendError::RetryInFlight => ResponseError::RequestTimedOut.code(),
        AppendError::Storage(err) => storage_error_code(err),
    }
}

/// The Kafka error code when a partition cannot be had on its owner shard.
pub fn partition_error_code(err: &PartitionError) -> i16 {
    match err {
        PartitionError::Unknown { .. } => ResponseError::UnknownTopicOrPartition.code(),
        PartitionError::NotOwner { .. } => ResponseError::NotLeaderOrFollower.code(),
        PartitionError::Storage(err) => storage_error_code(err),
    }
}

/// The Kafka error code of a legacy message set that cannot be converted (Produce v0-2,
/// Fetch v0-3).
pub fn legacy_format_error_code(err: &LegacyFormatError) -> i16 {
    let kind = match err {
        LegacyFormatError::Corrupt(_) => ResponseError::CorruptMessage,
        LegacyFormatError::Invalid(_) => ResponseError::InvalidRecord,
        LegacyFormatError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        LegacyFormatError::UnsupportedCompression(_) => ResponseError::UnsupportedCompressionType,
        LegacyFormatError::TooLarge(_) => ResponseError::MessageTooLarge,
    };
    kind.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kafkas() {
        assert_eq!(
            metadata_error_code(&MetadataError::InvalidTopicName(String::new())),
            17
        );
        assert_eq!(
            metadata_error_code(&MetadataError::TopicExists(String::new())),
            36
        );
        assert_eq!(
            metadata_error_code(&MetadataError::UnknownTopic(String::new())),
            3
        );
        assert_eq!(
            metadata_error_code(&MetadataError::InvalidPartitions(String::new())),
            37
        );
        assert_eq!(
            metadata_error_code(&MetadataError::Storage(String::new())),
            56
        );
    }
}
