//! Replica placement for new partitions, as Kafka's controller places them
//! (`StripedReplicaPlacer`): replicas spread round robin over the live brokers from a random
//! start, the n-th replica shifted by a further offset so that followers do not all trail the
//! same leader, and rack-aware when brokers carry `broker.rack` (the brokers are interleaved by
//! rack first, so a partition's replicas land on as many racks as there are).
//!
//! Owner: the controller quorum's state machine (`metadata::controller`), on shard 0, while it
//! applies a committed CreateTopics or CreatePartitions. Pure: the random start is chosen by the
//! proposer and travels in the committed command, so every node computes the same placement.

/// One broker as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its node id.
    pub id: i32,
    /// Its rack, if `broker.rack` is set.
    pub rack: Option<String>,
}

/// Why replicas cannot be placed. `Display` is Kafka's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// More replicas asked for than there are live brokers (INVALID_REPLICATION_FACTOR).
    #[error(
        "Unable to replicate the partition {wanted} time(s): The target replication factor of \
         {wanted} cannot be reached because only {live} broker(s) are registered."
    )]
    ReplicationFactor {
        /// The replication factor asked for.
        wanted: i16,
        /// Live (registered, unfenced) brokers.
        live: usize,
    },
}

/// Places `count` new partitions of `replication_factor` replicas each, starting at partition
/// `first` (CreatePartitions continues a topic's striping), over `brokers`. `start` is the
/// proposer's random draw. Each item lists a partition's replicas, preferred leader first.
pub fn place(
    brokers: &[Candidate],
    first: i32,
    count: i32,
    replication_factor: i16,
    start: u32,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    let wanted = usize::try_from(replication_factor).unwrap_or(0);
    if wanted == 0 || wanted > brokers.len() {
        return Err(PlacementError::ReplicationFactor {
            wanted: replication_factor,
            live: brokers.len(),
        });
    }
    let ordered = rack_interleaved(brokers);
    let n = ordered.len();
    let rack_of = |id: i32| {
        brokers
            .iter()
            .find(|b| b.id == id)
            .and_then(|b| b.rack.clone())
    };
    let rack_count = {
        let mut racks: Vec<Option<String>> = brokers.iter().map(|b| b.rack.clone()).collect();
        racks.sort();
        racks.dedup();
        racks.len()
    };
    let start_index = start as usize % n;
    let mut shift = (start as usize / n) % n;
    let mut placed = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..count.max(0) as usize {
        let partition = first.max(0) as usize + i;
        if partition > 0 && partition.is_multiple_of(n) {
            shift += 1;
        }
        let leader = (start_index + partition) % n;
        let mut replicas = vec![ordered[leader]];
        let mut racks_used = vec![rack_of(ordered[leader])];
        // Followers from a shifted distance after the leader, so that successive partitions'
        // followers differ; while some rack holds no replica yet, a broker on a used rack is
        // passed over (the second lap takes any broker not chosen).
        let first_offset = 1 + shift % (n - 1).max(1);
        let mut step = 0;
        while replicas.len() < wanted {
            let candidate = ordered[(leader + first_offset + step) % n];
            step += 1;
            if replicas.contains(&candidate) {
                continue;
            }
            let rack = rack_of(candidate);
            if step <= n && racks_used.len() < rack_count && racks_used.contains(&rack) {
                continue;
            }
            replicas.push(candidate);
            racks_used.push(rack);
        }
        placed.push(replicas);
    }
    Ok(placed)
}

/// The brokers ordered by id, interleaved by rack (rack a's first, rack b's first, ..., rack
/// a's second, ...), so consecutive brokers sit on different racks wherever racks allow.
fn rack_interleaved(brokers: &[Candidate]) -> Vec<i32> {
    let mut sorted = brokers.to_vec();
    sorted.sort_by_key(|b| b.id);
    if sorted.iter().all(|b| b.rack.is_none()) {
        return sorted.into_iter().map(|b| b.id).collect();
    }
    let mut racks: std::collections::BTreeMap<Option<String>, Vec<i32>> = Default::default();
    for broker in sorted {
        racks.entry(broker.rack).or_default().push(broker.id);
    }
    let longest = racks.values().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..longest {
        for ids in racks.values() {
            if let Some(id) = ids.get(i) {
                out.push(*id);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<Candidate> {
        racks
            .iter()
            .enumerate()
            .map(|(i, rack)| Candidate {
                id: i as i32 + 1,
                rack: rack.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn replicas_are_distinct_and_leaders_spread() {
        let live = brokers(&[None, None, None]);
        for start in 0..9 {
            let placed = place(&live, 0, 6, 3, start).unwrap();
            let mut leaders = [0; 4];
            for replicas in &placed {
                let mut unique = replicas.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), 3, "{replicas:?}");
                leaders[replicas[0] as usize] += 1;
            }
            assert_eq!(&leaders[1..], &[2, 2, 2], "start {start}: {placed:?}");
        }
    }

    #[test]
    fn the_start_moves_the_first_leader() {
        let live = brokers(&[None, None, None]);
        let firsts: Vec<i32> = (0..3)
            .map(|s| place(&live, 0, 1, 1, s).unwrap()[0][0])
            .collect();
        assert_eq!(firsts, vec![1, 2, 3]);
    }

    #[test]
    fn replicas_cover_the_racks() {
        let live = brokers(&[Some("a"), Some("a"), Some("b"), Some("b")]);
        for start in 0..8 {
            for replicas in place(&live, 0, 8, 2, start).unwrap() {
                let racks: Vec<bool> = replicas.iter().map(|id| *id <= 2).collect();
                assert_ne!(
                    racks[0], racks[1],
                    "start {start}: {replicas:?} on one rack"
                );
            }
        }
    }

    #[test]
    fn too_few_brokers_is_refused_with_kafkas_message() {
        let err = place(&brokers(&[None, None]), 0, 1, 3, 0).unwrap_err();
        assert_eq!(
            err,
            PlacementError::ReplicationFactor { wanted: 3, live: 2 }
        );
        assert!(err.to_string().contains("only 2 broker(s)"));
        assert!(place(&brokers(&[None]), 0, 1, 0, 0).is_err());
    }
}
