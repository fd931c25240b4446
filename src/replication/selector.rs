//! Which replica a consumer should read from (KIP-392, `replica.selector.class`): the leader
//! answers a consumer's Fetch (v11+, which carries the client's `rack_id`) with a preferred
//! read replica, and the consumer then fetches from that follower.
//!
//! Owner: pure functions, called by the owner shard of a partition this broker leads
//! (`broker::owner::serve_read`). Nothing here awaits.
//!
//! Kafka's two selectors, by their class names: `LeaderSelector` (the default: always the
//! leader, i.e. no preferred replica is named) and `RackAwareReplicaSelector`: with a client
//! rack, the replicas in that rack; the leader if it is one of them, else the one whose log
//! reaches furthest (ties: the one caught up most recently); with no replica in the client's
//! rack, or no client rack, the leader. As in Kafka, only replicas whose log already reaches
//! the fetch offset, on live brokers, are candidates.

use crate::config::RACK_AWARE_SELECTOR;

/// `replica.selector.class`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaSelector {
    /// Consumers read from the leader.
    #[default]
    Leader,
    /// Consumers read from a replica in their rack when there is one.
    RackAware,
}

impl ReplicaSelector {
    /// The selector a (validated) `replica.selector.class` value names; empty is the leader.
    pub fn named(class: &str) -> ReplicaSelector {
        if class == RACK_AWARE_SELECTOR {
            ReplicaSelector::RackAware
        } else {
            ReplicaSelector::Leader
        }
    }
}

/// One replica as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Its broker.
    pub id: i32,
    /// That broker's `broker.rack`.
    pub rack: Option<&'a str>,
    /// Its log end (the leader's own for the leader).
    pub log_end: i64,
    /// When it was last caught up (ms; now for the leader).
    pub caught_up_ms: i64,
}

/// The replica `selector` prefers for a consumer in `client_rack`, among `candidates` (the
/// leader first). `None` when it is the leader (nothing to tell the consumer).
pub fn preferred_read_replica(
    selector: ReplicaSelector,
    client_rack: &str,
    candidates: &[Candidate<'_>],
) -> Option<i32> {
    let leader = candidates.first()?;
    if selector == ReplicaSelector::Leader || client_rack.is_empty() {
        return None;
    }
    let same_rack: Vec<&Candidate<'_>> = candidates
        .iter()
        .filter(|c| c.rack == Some(client_rack))
        .collect();
    if same_rack.is_empty() || same_rack.iter().any(|c| c.id == leader.id) {
        return None;
    }
    same_rack
        .into_iter()
        .max_by_key(|c| (c.log_end, c.caught_up_ms))
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LEADER_SELECTOR;

    fn candidate(id: i32, rack: &str, log_end: i64, caught_up_ms: i64) -> Candidate<'_> {
        Candidate {
            id,
            rack: (!rack.is_empty()).then_some(rack),
            log_end,
            caught_up_ms,
        }
    }

    #[test]
    fn the_rack_aware_selector_prefers_the_client_s_rack_and_else_the_leader() {
        let replicas = [
            candidate(1, "a", 100, 50),
            candidate(2, "b", 90, 40),
            candidate(3, "b", 100, 30),
            candidate(4, "c", 100, 60),
        ];
        let rack_aware = ReplicaSelector::RackAware;
        assert_eq!(
            preferred_read_replica(rack_aware, "a", &replicas),
            None,
            "leader's rack"
        );
        assert_eq!(
            preferred_read_replica(rack_aware, "b", &replicas),
            Some(3),
            "the furthest log in the rack"
        );
        assert_eq!(preferred_read_replica(rack_aware, "c", &replicas), Some(4));
        assert_eq!(
            preferred_read_replica(rack_aware, "d", &replicas),
            None,
            "no replica there"
        );
        assert_eq!(
            preferred_read_replica(rack_aware, "", &replicas),
            None,
            "no client rack"
        );
        assert_eq!(
            preferred_read_replica(ReplicaSelector::Leader, "b", &replicas),
            None,
            "the default selector names the leader"
        );
        let ties = [
            candidate(1, "a", 100, 50),
            candidate(2, "b", 100, 40),
            candidate(3, "b", 100, 45),
        ];
        assert_eq!(
            preferred_read_replica(rack_aware, "b", &ties),
            Some(3),
            "ties: caught up most recently"
        );
    }

    #[test]
    fn selector_names_are_kafka_s_class_names() {
        assert_eq!(ReplicaSelector::named(""), ReplicaSelector::Leader);
        assert_eq!(
            ReplicaSelector::named(LEADER_SELECTOR),
            ReplicaSelector::Leader
        );
        assert_eq!(
            ReplicaSelector::named(RACK_AWARE_SELECTOR),
            ReplicaSelector::RackAware
        );
    }
}
