//! Which shard owns what: the one routing function of the broker.
//!
//! Pure functions, callable on any shard. Ownership is a stable hash of the topic name and the
//! partition, modulo the shard count, so every shard computes the same owner without asking.
//! Partition data directories carry no shard number, so the shard count may change between
//! restarts: a partition simply opens on its new owner.

use std::fmt;

/// A shard's index, 0..shard_count. Shard 0 is the controller shard (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

impl ShardId {
    /// The shard that owns the authoritative topic table.
    pub const CONTROLLER: ShardId = ShardId(0);
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// Kafka's default partition count of `__consumer_offsets` (`offsets.topic.num.partitions`).
pub const CONSUMER_OFFSETS_PARTITIONS_DEFAULT: i32 = 50;

/// The shard that owns partition `partition` of `topic`.
///
/// The topic's hash picks where its partition 0 lands and consecutive partitions go to
/// consecutive shards, so one topic's partitions spread evenly over the shards. CRC-32C is used
/// as the hash because it is fixed by a standard: the placement never changes with a
/// toolchain or dependency upgrade.
pub fn shard_for(topic: &str, partition: i32, shard_count: usize) -> ShardId {
    assert!(shard_count > 0, "a broker has at least one shard");
    assert!(partition >= 0, "partition indexes are never negative");
    let base = u64::from(crc32c::crc32c(topic.as_bytes()));
    ShardId(((base + partition as u64) % shard_count as u64) as usize)
}

/// The `__consumer_offsets` partition that holds group `group_id` when the topic has
/// `partitions` partitions (Kafka's `abs(groupId.hashCode) % partitions`, with Java's
/// `String.hashCode`, so tools that compute a group's partition the Kafka way agree with us).
pub fn consumer_offsets_partition(group_id: &str, partitions: i32) -> i32 {
    java_hash_partition(group_id, partitions)
}

/// The default number of partitions of `__transaction_state` (Kafka's
/// `transaction.state.log.num.partitions`).
pub const TRANSACTION_STATE_PARTITIONS_DEFAULT: i32 = 50;

/// The partition of an internal topic with `partitions` partitions that holds `key`: Kafka's
/// `Utils.abs(key.hashCode) % partitions`, with Java's `String.hashCode` (UTF-16 units).
pub fn java_hash_partition(key: &str, partitions: i32) -> i32 {
    assert!(
        partitions > 0,
        "an internal topic has at least one partition"
    );
    let mut hash: i32 = 0;
    for unit in key.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs maps i32::MIN to 0 rather than overflowing.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_in_range() {
        for shards in 1..8 {
            for p in 0..64 {
                let owner = shard_for("orders", p, shards);
                assert!(owner.0 < shards);
                assert_eq!(owner, shard_for("orders", p, shards));
            }
        }
        // Fixed values: a change here moves partitions between shards on upgrade.
        assert_eq!(shard_for("orders", 0, 4), shard_for("orders", 4, 4));
    }

    #[test]
    fn one_topic_spreads_evenly() {
        let shards = 4;
        let mut counts = [0usize; 4];
        for p in 0..12 {
            counts[shard_for("events", p, shards).0] += 1;
        }
        assert_eq!(counts, [3, 3, 3, 3]);
    }

    #[test]
    fn group_partition_matches_java_hash_code() {
        // "group".hashCode() == 98629247 in Java; 98629247 % 50 == 47.
        assert_eq!(consumer_offsets_partition("group", 50), 47);
        // 98629247 % 7 == 3.
        assert_eq!(consumer_offsets_partition("group", 7), 3);
        assert_eq!(consumer_offsets_partition("", 50), 0);
        assert_eq!(java_hash_partition("group", 50), 47);
        for id in ["a", "my-group", "ünïcode", "x".repeat(10_000).as_str()] {
            let p = consumer_offsets_partition(id, 50);
            assert!((0..50).contains(&p));
            assert_eq!(consumer_offsets_partition(id, 1), 0);
        }
    }
}
