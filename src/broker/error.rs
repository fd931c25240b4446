//! The one place where broker errors become Kafka error codes.
//!
//! Every failure a client can cause is mapped here, so a handler never chooses a code by hand
//! and two APIs never disagree about the same failure. It sits in the broker layer, above the
//! services whose errors it maps, because the owner side of the data plane (`broker::owner`)
//! answers with Kafka codes too; the protocol front uses it from above. The one protocol-only
//! error, a legacy message set that cannot be converted, is mapped in
//! `kafka::legacy_versions`.

use kafka_protocol::ResponseError;

use crate::metadata::{ControllerCallError, MetadataError};
use crate::replication::ReplicationError;
use crate::runtime::RouterError;
use crate::storage::StorageError;
use crate::storage::manager::{AppendError, PartitionError};
use crate::storage::producer_state::ProducerError;
use crate::txn::TxnError;

/// Kafka's "no error".
pub const NONE: i16 = 0;

/// The Kafka error code for a refused client quota alteration or filter.
pub fn quota_error_code(err: &crate::quota::QuotaError) -> i16 {
    match err {
        crate::quota::QuotaError::InvalidRequest(_) => ResponseError::InvalidRequest.code(),
    }
}

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
        MetadataError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        MetadataError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        MetadataError::InvalidRequest(_) => ResponseError::InvalidRequest,
        MetadataError::NoQuorum(_) => ResponseError::NotController,
        MetadataError::Timeout(_) => ResponseError::RequestTimedOut,
        MetadataError::UnknownTopicId(_) => ResponseError::UnknownTopicId,
        MetadataError::StaleController(_) => ResponseError::NotController,
        MetadataError::FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
        MetadataError::InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
        MetadataError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
        MetadataError::StaleBrokerEpoch(_) => ResponseError::StaleBrokerEpoch,
        MetadataError::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        MetadataError::PreferredLeaderNotAvailable(_) => ResponseError::PreferredLeaderNotAvailable,
        MetadataError::EligibleLeadersNotAvailable(_) => ResponseError::EligibleLeadersNotAvailable,
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

/// The Kafka error code of a call to the controller that failed as a whole.
pub fn controller_call_error_code(err: &ControllerCallError) -> i16 {
    match err {
        ControllerCallError::Unreachable(err) => router_error_code(err),
        ControllerCallError::Unexpected(_) => ResponseError::UnknownServerError.code(),
        ControllerCallError::Refused(err) => metadata_error_code(err),
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
        // A follower's append only; Kafka has no client-facing code for it.
        StorageError::NonContiguous { .. } => ResponseError::UnknownServerError,
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

/// The Kafka error code of a refused transaction request. `fenced_is_known`: whether the
/// request's version knows PRODUCER_FENCED (KIP-588); older versions get
/// INVALID_PRODUCER_EPOCH instead, as Kafka answers them.
pub fn txn_error_code(err: &TxnError, fenced_is_known: bool) -> i16 {
    let kind = match err {
        TxnError::NotCoordinator => ResponseError::NotCoordinator,
        TxnError::LoadInProgress => ResponseError::CoordinatorLoadInProgress,
        TxnError::NotAvailable => ResponseError::CoordinatorNotAvailable,
        TxnError::Concurrent => ResponseError::ConcurrentTransactions,
        TxnError::InvalidState => ResponseError::InvalidTxnState,
        TxnError::ProducerFenced if fenced_is_known => ResponseError::ProducerFenced,
        TxnError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        TxnError::InvalidTimeout => ResponseError::InvalidTransactionTimeout,
        TxnError::NotFound => ResponseError::TransactionalIdNotFound,
        TxnError::Allocation(code) => return *code,
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

/// The Kafka error code of an acks=all produce or a follower fetch that replication refused.
pub fn replication_error_code(err: &ReplicationError) -> i16 {
    let kind = match err {
        ReplicationError::NotLeader | ReplicationError::NotFollower(_) => {
            ResponseError::NotLeaderOrFollower
        }
        ReplicationError::NotEnoughReplicasAfterAppend { .. } => {
            ResponseError::NotEnoughReplicasAfterAppend
        }
        ReplicationError::Timeout(_) => ResponseError::RequestTimedOut,
    };
    kind.code()
}

/// The Kafka error code when a partition cannot be had on its owner shard.
pub fn partition_error_code(err: &PartitionError) -> i16 {
    match err {
        PartitionError::Unknown { .. } => ResponseError::UnknownTopicOrPartition.code(),
        PartitionError::NotOwner { .. } | PartitionError::NotLeader { .. } => {
            ResponseError::NotLeaderOrFollower.code()
        }
        PartitionError::Storage(err) => storage_error_code(err),
    }
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
        assert_eq!(txn_error_code(&TxnError::Concurrent, true), 51);
        assert_eq!(txn_error_code(&TxnError::ProducerFenced, true), 90);
        assert_eq!(txn_error_code(&TxnError::ProducerFenced, false), 47);
        assert_eq!(
            txn_error_code(&TxnError::InvalidProducerIdMapping, true),
            49
        );
        assert_eq!(txn_error_code(&TxnError::InvalidState, true), 48);
        assert_eq!(txn_error_code(&TxnError::InvalidTimeout, true), 50);
        assert_eq!(txn_error_code(&TxnError::LoadInProgress, true), 14);
        assert_eq!(txn_error_code(&TxnError::NotCoordinator, true), 16);
        assert_eq!(txn_error_code(&TxnError::NotFound, true), 105);
    }
}
