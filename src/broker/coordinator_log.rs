//! The coordinators' writes to their internal topics (`__consumer_offsets`,
//! `__transaction_state`) with Kafka's acks=all semantics, and the leadership they write
//! under.
//!
//! Owner: called by the group and transaction coordinators on the shard that owns the
//! internal partition. A coordinator loads a partition at the leader epoch this broker leads
//! it at (`led_epoch`) and writes to it only while it still leads at that epoch: the append is
//! refused before it starts otherwise (a follower's log is the leader's to write), and also
//! when the ISR is below the topic's `min.insync.replicas`. After the append the write waits
//! until the ISR holds it (the high watermark passes it), within the bound the caller gives
//! (`offsets.commit.timeout.ms`, `request.timeout.ms`). On a lone node there is no
//! replication: every partition is led at epoch 0 and the durable append is the whole write.
//!
//! Awaits: the log append and the ISR; nothing else.

use std::time::Duration;

use bytes::Bytes;

use crate::broker::ShardContext;
use crate::replication::{ReplicationError, Role};
use crate::storage::log::AppendInfo;

/// Why an internal write was not made or not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorLogError {
    /// This broker does not lead the partition at the coordinator's epoch (Kafka's
    /// NOT_LEADER_OR_FOLLOWER, which a coordinator answers as NOT_COORDINATOR).
    #[error("this broker does not lead {topic}-{partition} at leader epoch {epoch}")]
    NotLeader {
        /// Topic.
        topic: &'static str,
        /// Partition.
        partition: i32,
        /// The epoch the coordinator loaded the partition at.
        epoch: i32,
    },
    /// The ISR is below `min.insync.replicas`: nothing was appended (NOT_ENOUGH_REPLICAS).
    #[error("the ISR has {insync} members, fewer than min.insync.replicas {min}")]
    NotEnoughReplicas {
        /// ISR members.
        insync: usize,
        /// The bound.
        min: usize,
    },
    /// The partition could not be opened.
    #[error("cannot open the partition: {0}")]
    Open(String),
    /// The append failed.
    #[error("append failed: {0}")]
    Append(String),
    /// Appended, but the ISR did not acknowledge it.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
}

impl CoordinatorLogError {
    /// Whether the coordinator lost its partition's leadership (NOT_COORDINATOR), as opposed to
    /// a write that may succeed later (COORDINATOR_NOT_AVAILABLE), following Kafka's mapping.
    pub fn lost_leadership(&self) -> bool {
        matches!(
            self,
            CoordinatorLogError::NotLeader { .. }
                | CoordinatorLogError::Replication(
                    ReplicationError::NotLeader | ReplicationError::NotFollower(_)
                )
        )
    }
}

/// The leader epoch at which this broker leads `topic`-`partition` now; `None` when it does
/// not lead it (under a quorum: its replica is a follower, or not set up yet), or when its
/// image is not known to be current (`metadata::lease`: cut off from the quorum, it may lead
/// no longer). A lone node leads everything at epoch 0.
pub fn led_epoch(context: &ShardContext, topic: &str, partition: i32) -> Option<i32> {
    if !context.clustered() {
        return Some(0);
    }
    if !context.metadata_current() {
        return None;
    }
    context
        .replication
        .get(topic, partition)
        .and_then(|replica| replica.led_epoch())
}

/// Appends `batch` to `topic`-`partition` if this broker leads it at `epoch`, and waits until
/// the ISR holds it (at most `timeout`). See the module documentation.
pub async fn append(
    context: &ShardContext,
    topic: &'static str,
    partition: i32,
    epoch: i32,
    batch: Bytes,
    timeout: Duration,
) -> Result<AppendInfo, CoordinatorLogError> {
    let not_leader = || CoordinatorLogError::NotLeader {
        topic,
        partition,
        epoch,
    };
    if led_epoch(context, topic, partition) != Some(epoch) {
        return Err(not_leader());
    }
    let open = context
        .partitions
        .get(&context.image(), topic, partition)
        .await
        .map_err(|err| CoordinatorLogError::Open(err.to_string()))?;
    // Checked again after the open (it may have waited), with the ISR, right before the
    // append starts.
    if context.clustered() {
        let replica = context
            .replication
            .get(topic, partition)
            .ok_or_else(not_leader)?;
        let role = replica.role.borrow();
        match &*role {
            Role::Leader(state) if state.leader_epoch == epoch => {
                let insync = state.insync_count();
                if insync < state.min_insync {
                    return Err(CoordinatorLogError::NotEnoughReplicas {
                        insync,
                        min: state.min_insync,
                    });
                }
            }
            _ => return Err(not_leader()),
        }
    }
    let info = open
        .log
        .append(batch)
        .await
        .map_err(|err| CoordinatorLogError::Append(err.to_string()))?;
    context
        .replication
        .wait_replicated(topic, partition, info.last_offset + 1, timeout)
        .await?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_leadership_means_not_coordinator() {
        let lost = [
            CoordinatorLogError::NotLeader {
                topic: "__consumer_offsets",
                partition: 3,
                epoch: 2,
            },
            CoordinatorLogError::Replication(ReplicationError::NotLeader),
            CoordinatorLogError::Replication(ReplicationError::NotFollower(2)),
        ];
        assert!(lost.iter().all(CoordinatorLogError::lost_leadership));
        let retriable = [
            CoordinatorLogError::NotEnoughReplicas { insync: 1, min: 2 },
            CoordinatorLogError::Replication(ReplicationError::NotEnoughReplicasAfterAppend {
                insync: 1,
                min: 2,
            }),
            CoordinatorLogError::Replication(ReplicationError::Timeout(5000)),
            CoordinatorLogError::Open("gone".to_string()),
            CoordinatorLogError::Append("disk".to_string()),
        ];
        assert!(!retriable.iter().any(CoordinatorLogError::lost_leadership));
    }
}
