//! Leader epochs as a one-broker cluster has them: every partition's leader epoch is 0 until
//! replication exists (DESIGN.md §7), and requests that carry the client's view of the epoch
//! are checked against it the way Kafka checks them.

use kafka_protocol::ResponseError;

/// The leader epoch of every partition.
pub const CURRENT: i32 = 0;

/// Checks a request's `current_leader_epoch`: -1 (or any negative) skips the check; a newer
/// epoch than ours is UNKNOWN_LEADER_EPOCH, an older one FENCED_LEADER_EPOCH.
pub fn check(current_leader_epoch: i32) -> Option<i16> {
    if current_leader_epoch < 0 || current_leader_epoch == CURRENT {
        None
    } else if current_leader_epoch > CURRENT {
        Some(ResponseError::UnknownLeaderEpoch.code())
    } else {
        Some(ResponseError::FencedLeaderEpoch.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs() {
        assert_eq!(check(-1), None);
        assert_eq!(check(0), None);
        assert_eq!(check(1), Some(ResponseError::UnknownLeaderEpoch.code()));
    }
}
