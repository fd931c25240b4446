//! Leadership and leader epochs as the front sees them in the metadata image, and the checks
//! Kafka makes with them before a partition's data is touched.
//!
//! Owner: any shard; pure functions of the shard's current image, no awaiting. On a lone node
//! the node leads every partition at leader epoch 0 (`LONE_EPOCH`). Under a controller quorum
//! each partition's leader and epoch come from the image (`TopicImage::placement`); a
//! partition this node does not lead is refused here with NOT_LEADER_OR_FOLLOWER before any
//! owner shard is asked, so a client's metadata refresh finds the leader. Requests that carry
//! the client's view of the epoch (`current_leader_epoch`) are checked against it the way
//! Kafka's replica checks it: a newer epoch than ours is UNKNOWN_LEADER_EPOCH, an older one
//! FENCED_LEADER_EPOCH.

use kafka_protocol::ResponseError;

use crate::metadata::TopicImage;

/// The leader epoch of every partition on a lone node, which never changes leader.
pub const LONE_EPOCH: i32 = 0;

/// How this node stands to one partition, from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The partition's leader, -1 when none is available.
    pub leader: i32,
    /// The partition's leader epoch.
    pub epoch: i32,
    /// Whether this node holds a replica of the partition.
    pub replica: bool,
    /// Whether this node leads the partition.
    pub led: bool,
}

impl Leadership {
    /// This node's (`node_id`) standing for `partition` of `topic`. `clustered`: whether the
    /// node is in a controller quorum; there, a partition the image has no state for (not yet
    /// placed) has no leader, while a lone node leads everything.
    pub fn of(topic: &TopicImage, partition: i32, node_id: i32, clustered: bool) -> Leadership {
        match topic.partition_state(partition) {
            Some(state) => Leadership {
                leader: state.leader,
                epoch: state.leader_epoch,
                replica: state.replicas.contains(&node_id),
                led: state.leader == node_id && state.leader >= 0,
            },
            None if clustered => Leadership {
                leader: -1,
                epoch: -1,
                replica: false,
                led: false,
            },
            None => Leadership {
                leader: node_id,
                epoch: LONE_EPOCH,
                replica: true,
                led: true,
            },
        }
    }

    /// Kafka's checks for a request that needs the leader, in Kafka's order: a broker holding no
    /// replica is NOT_LEADER_OR_FOLLOWER whatever the epoch; then the client's
    /// `current_leader_epoch` (negative: no check) against ours; then a replica that does not
    /// lead is NOT_LEADER_OR_FOLLOWER. `None`: serve it.
    pub fn refusal(&self, current_leader_epoch: i32) -> Option<i16> {
        if !self.replica {
            Some(ResponseError::NotLeaderOrFollower.code())
        } else if let Some(code) = check(current_leader_epoch, self.epoch) {
            Some(code)
        } else if !self.led {
            Some(ResponseError::NotLeaderOrFollower.code())
        } else {
            None
        }
    }
}

impl Leadership {
    /// The checks for a read any replica may serve (a consumer's fetch from a follower,
    /// KIP-392): a broker holding no replica is NOT_LEADER_OR_FOLLOWER; then the client's
    /// `current_leader_epoch` against ours, as `refusal` checks it. `None`: serve it.
    pub fn replica_refusal(&self, current_leader_epoch: i32) -> Option<i16> {
        if !self.replica {
            Some(ResponseError::NotLeaderOrFollower.code())
        } else {
            check(current_leader_epoch, self.epoch)
        }
    }
}

/// Checks a request's `current_leader_epoch` against the partition's `epoch`: -1 (or any
/// negative) skips the check; a newer epoch than ours is UNKNOWN_LEADER_EPOCH, an older one
/// FENCED_LEADER_EPOCH.
pub fn check(current_leader_epoch: i32, epoch: i32) -> Option<i16> {
    if current_leader_epoch < 0 || current_leader_epoch == epoch {
        None
    } else if current_leader_epoch > epoch {
        Some(ResponseError::UnknownLeaderEpoch.code())
    } else {
        Some(ResponseError::FencedLeaderEpoch.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::image::PartitionState;

    #[test]
    fn epochs() {
        assert_eq!(check(-1, 0), None);
        assert_eq!(check(0, 0), None);
        assert_eq!(check(1, 0), Some(ResponseError::UnknownLeaderEpoch.code()));
        assert_eq!(check(2, 3), Some(ResponseError::FencedLeaderEpoch.code()));
    }

    fn topic(placement: Vec<PartitionState>) -> TopicImage {
        TopicImage {
            name: "t".to_string(),
            id: uuid::Uuid::nil(),
            partitions: 3,
            configs: Default::default(),
            placement,
        }
    }

    #[test]
    fn lone_node_leads_everything() {
        let t = topic(Vec::new());
        let lone = Leadership::of(&t, 2, 7, false);
        assert!(lone.led && lone.replica);
        assert_eq!((lone.leader, lone.epoch), (7, LONE_EPOCH));
        assert_eq!(lone.refusal(-1), None);
        assert_eq!(lone.refusal(0), None);
        // Clustered but unplaced: nobody leads it.
        let unplaced = Leadership::of(&t, 2, 7, true);
        assert_eq!(
            unplaced.refusal(-1),
            Some(ResponseError::NotLeaderOrFollower.code())
        );
    }

    #[test]
    fn quorum_placement_decides() {
        let mut moved = PartitionState::led_by_first(vec![2, 1, 3]);
        moved.leader_epoch = 4;
        let t = topic(vec![
            PartitionState::led_by_first(vec![1, 2, 3]),
            moved,
            PartitionState::led_by_first(vec![2, 3]),
        ]);
        let not_leader = ResponseError::NotLeaderOrFollower.code();
        let leads = Leadership::of(&t, 0, 1, true);
        assert_eq!(leads.refusal(-1), None);
        assert_eq!(leads.refusal(0), None);
        assert_eq!(
            leads.refusal(1),
            Some(ResponseError::UnknownLeaderEpoch.code())
        );
        let follower = Leadership::of(&t, 1, 1, true);
        assert_eq!((follower.leader, follower.epoch), (2, 4));
        assert_eq!(follower.refusal(-1), Some(not_leader));
        // A replica checks the epoch first, as Kafka's does.
        assert_eq!(
            follower.refusal(3),
            Some(ResponseError::FencedLeaderEpoch.code())
        );
        // No replica here: not the leader, whatever the epoch.
        let stranger = Leadership::of(&t, 2, 1, true);
        assert!(!stranger.replica);
        assert_eq!(stranger.refusal(9), Some(not_leader));
        // Out of the placement's range.
        assert_eq!(Leadership::of(&t, 5, 1, true).refusal(-1), Some(not_leader));
    }
}
