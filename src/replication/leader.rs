//! A partition leader's view of its followers: their log ends, when each was last caught up,
//! the high watermark over the ISR, and which ISR change to ask the controller for.
//!
//! Owner: the shard that owns the partition, inside its `replication::Replica`. Pure state and
//! arithmetic: no I/O, no clock of its own (every call is given `now_ms`), no awaiting, so a
//! test or a simulator drives it with made-up fetches and times.
//!
//! Kafka's rules (its `Partition` and `Replica`), followed here:
//! - A follower's fetch at offset `o` says its log holds everything below `o` (durable: a
//!   follower fetches again only after its append is synced). It is *caught up* at the time
//!   of a fetch that reaches the leader's log end, or at the time of its previous fetch when
//!   this one reaches the log end the leader had then.
//! - The high watermark is the smallest log end over the ISR, the leader's own included (the
//!   log applies the leader's durable end itself: `PartitionLog::high_watermark`). While a
//!   change of the ISR is in flight the larger of the two sets counts (Kafka's "maximal ISR"),
//!   so a follower being added holds the high watermark back from the moment it is proposed.
//! - The high watermark does not advance while the ISR has fewer than `min.insync.replicas`
//!   members (KIP-966): what is visible then is what was acknowledged under the full rule.
//! - A follower leaves the ISR when it has not been caught up for `replica.lag.time.max.ms`;
//!   it joins when its log end reaches the high watermark and the start of this leader's
//!   epoch (so it holds everything this leader wrote). One change is in flight at a time.

use std::collections::BTreeMap;

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's log end, as its last fetch said; -1 before its first fetch under this
    /// leader.
    pub log_end: i64,
    /// When it was last caught up (ms).
    pub caught_up_ms: i64,
    /// The leader's log end at the follower's previous fetch.
    pub leader_end_at_fetch: i64,
    /// The time of the follower's previous fetch (ms).
    pub fetch_ms: i64,
}

/// An ISR change asked of the controller and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIsr {
    /// The ISR proposed.
    pub isr: Vec<i32>,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct LeaderState {
    /// This broker.
    pub me: i32,
    /// The leader epoch this state belongs to.
    pub leader_epoch: i32,
    /// The partition epoch of the committed state below.
    pub partition_epoch: i32,
    /// The replicas, preferred first.
    pub replicas: Vec<i32>,
    /// The committed ISR.
    pub isr: Vec<i32>,
    /// The ISR change in flight, if any.
    pub pending: Option<PendingIsr>,
    /// The first offset of this leader's epoch.
    pub epoch_start_offset: i64,
    /// `min.insync.replicas`.
    pub min_insync: usize,
    /// The high watermark last computed (what readers see, before the log's own bound).
    pub high_watermark: i64,
    /// After a refused or failed proposal, no other before this time (ms): a follower that
    /// may not join (fenced) would otherwise be proposed again at each of its fetches.
    retry_after_ms: i64,
    followers: BTreeMap<i32, FollowerProgress>,
}

/// How long a leader waits after a refused ISR change before it proposes one again.
pub const ISR_RETRY_BACKOFF_MS: i64 = 1_000;

impl LeaderState {
    /// The state of a broker that has just become leader at `leader_epoch` with its log ending
    /// at `log_end` and its high watermark at `high_watermark`. Every ISR member counts as
    /// caught up now, as Kafka does, so none drops out before it had a chance to fetch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        log_end: i64,
        high_watermark: i64,
        min_insync: usize,
        now_ms: i64,
    ) -> LeaderState {
        let followers = replicas
            .iter()
            .filter(|&&id| id != me)
            .map(|&id| {
                let in_isr = isr.contains(&id);
                (
                    id,
                    FollowerProgress {
                        log_end: -1,
                        caught_up_ms: if in_isr { now_ms } else { 0 },
                        leader_end_at_fetch: -1,
                        fetch_ms: 0,
                    },
                )
            })
            .collect();
        LeaderState {
            me,
            leader_epoch,
            partition_epoch,
            replicas,
            isr,
            pending: None,
            epoch_start_offset: log_end,
            min_insync: min_insync.max(1),
            high_watermark: high_watermark.min(log_end),
            retry_after_ms: 0,
            followers,
        }
    }

    /// The committed state moved on (a newer partition epoch with the same leader epoch, from
    /// the controller's answer or the image): the ISR the controller committed replaces ours,
    /// and a pending change is over (whether it was the one committed or not). An older or
    /// equal partition epoch changes nothing.
    pub fn committed(&mut self, partition_epoch: i32, replicas: Vec<i32>, isr: Vec<i32>) {
        if partition_epoch <= self.partition_epoch {
            return;
        }
        self.partition_epoch = partition_epoch;
        for &id in &replicas {
            if id != self.me {
                self.followers.entry(id).or_insert(FollowerProgress {
                    log_end: -1,
                    caught_up_ms: 0,
                    leader_end_at_fetch: -1,
                    fetch_ms: 0,
                });
            }
        }
        self.followers.retain(|id, _| replicas.contains(id));
        self.replicas = replicas;
        self.isr = isr;
        self.pending = None;
    }

    /// A fetch from follower `id` at `fetch_offset`, when the leader's log ended at
    /// `leader_end`. Returns false if `id` is not a replica.
    pub fn follower_fetched(
        &mut self,
        id: i32,
        fetch_offset: i64,
        leader_end: i64,
        now_ms: i64,
    ) -> bool {
        let Some(progress) = self.followers.get_mut(&id) else {
            return false;
        };
        if fetch_offset >= leader_end {
            progress.caught_up_ms = progress.caught_up_ms.max(now_ms);
        } else if fetch_offset >= progress.leader_end_at_fetch && progress.leader_end_at_fetch >= 0
        {
            progress.caught_up_ms = progress.caught_up_ms.max(progress.fetch_ms);
        }
        progress.log_end = fetch_offset;
        progress.leader_end_at_fetch = leader_end;
        progress.fetch_ms = now_ms;
        true
    }

    /// The follower's progress, if it is a replica.
    pub fn follower(&self, id: i32) -> Option<FollowerProgress> {
        self.followers.get(&id).copied()
    }

    /// The members the high watermark waits for: the committed ISR, plus those a pending
    /// change adds (Kafka's maximal ISR).
    pub fn effective_isr(&self) -> Vec<i32> {
        let mut isr = self.isr.clone();
        if let Some(pending) = &self.pending {
            for &id in &pending.isr {
                if !isr.contains(&id) {
                    isr.push(id);
                }
            }
        }
        isr
    }

    /// The ISR size that counts for `min.insync.replicas`: the committed ISR, or the pending
    /// one when it is smaller (a shrink in flight already means fewer in sync).
    pub fn insync_count(&self) -> usize {
        match &self.pending {
            Some(pending) => pending.isr.len().min(self.isr.len()),
            None => self.isr.len(),
        }
    }

    /// Recomputes the high watermark with the leader's log end `leader_end`: the minimum over
    /// the effective ISR (held where it is while the ISR is below `min.insync.replicas`), never
    /// moving back. Returns the bound to give the log: `None` when the leader is alone in the
    /// ISR and in sync with `min.insync.replicas` (the log's durable end is then the high
    /// watermark), else the value.
    pub fn update_high_watermark(&mut self, leader_end: i64) -> Option<i64> {
        let isr = self.effective_isr();
        let alone = isr.iter().all(|&id| id == self.me);
        if self.insync_count() < self.min_insync {
            return Some(self.high_watermark);
        }
        if alone {
            self.high_watermark = self.high_watermark.max(leader_end);
            return None;
        }
        let mut low = leader_end;
        for id in isr.iter().filter(|&&id| id != self.me) {
            match self.followers.get(id) {
                Some(progress) if progress.log_end >= 0 => low = low.min(progress.log_end),
                // An ISR member that has not fetched from this leader yet holds it back.
                _ => low = low.min(self.high_watermark),
            }
        }
        self.high_watermark = self.high_watermark.max(low);
        Some(self.high_watermark)
    }

    /// The ISR change to propose now, if any and none is in flight: the committed ISR without
    /// the members not caught up for `lag_ms`, or with the followers that reached the high
    /// watermark and this epoch's start. Shrinks are proposed before expansions.
    pub fn isr_change(&self, now_ms: i64, lag_ms: i64) -> Option<Vec<i32>> {
        if self.pending.is_some() || now_ms < self.retry_after_ms {
            return None;
        }
        let lagging: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|&id| id != self.me)
            .filter(|id| {
                self.followers
                    .get(id)
                    .is_none_or(|p| now_ms - p.caught_up_ms > lag_ms)
            })
            .collect();
        if !lagging.is_empty() {
            let isr: Vec<i32> = self
                .isr
                .iter()
                .copied()
                .filter(|id| !lagging.contains(id))
                .collect();
            return Some(isr);
        }
        let joining: Vec<i32> = self
            .replicas
            .iter()
            .copied()
            .filter(|&id| id != self.me && !self.isr.contains(&id))
            .filter(|id| {
                self.followers.get(id).is_some_and(|p| {
                    p.log_end >= self.high_watermark && p.log_end >= self.epoch_start_offset
                })
            })
            .collect();
        if joining.is_empty() {
            return None;
        }
        // The new ISR in replica order.
        Some(
            self.replicas
                .iter()
                .copied()
                .filter(|id| self.isr.contains(id) || joining.contains(id))
                .collect(),
        )
    }

    /// Records that `isr` was proposed.
    pub fn propose(&mut self, isr: Vec<i32>) {
        self.pending = Some(PendingIsr { isr });
    }

    /// The proposal failed or was refused at `now_ms`: a check from
    /// `ISR_RETRY_BACKOFF_MS` later may propose again.
    pub fn proposal_failed(&mut self, now_ms: i64) {
        self.pending = None;
        self.retry_after_ms = now_ms + ISR_RETRY_BACKOFF_MS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(isr: &[i32], min_insync: usize) -> LeaderState {
        LeaderState::new(
            1,
            5,
            3,
            vec![1, 2, 3],
            isr.to_vec(),
            100,
            90,
            min_insync,
            1_000,
        )
    }

    #[test]
    fn high_watermark_is_the_smallest_log_end_over_the_isr() {
        let mut state = leader(&[1, 2, 3], 1);
        // No follower fetched yet: the high watermark stays where it was.
        assert_eq!(state.update_high_watermark(100), Some(90));
        state.follower_fetched(2, 95, 100, 1_010);
        assert_eq!(state.update_high_watermark(100), Some(90));
        state.follower_fetched(3, 98, 100, 1_010);
        assert_eq!(state.update_high_watermark(100), Some(95));
        state.follower_fetched(2, 100, 100, 1_020);
        assert_eq!(state.update_high_watermark(100), Some(98));
        state.follower_fetched(3, 100, 100, 1_020);
        assert_eq!(state.update_high_watermark(100), Some(100));
        // Never backwards, even if a follower reports less (a restarted follower truncated).
        state.follower_fetched(3, 50, 100, 1_030);
        assert_eq!(state.update_high_watermark(100), Some(100));
    }

    #[test]
    fn a_lone_leader_follows_its_log() {
        let mut state = leader(&[1], 1);
        assert_eq!(state.update_high_watermark(120), None);
        assert_eq!(state.high_watermark, 120);
    }

    #[test]
    fn the_high_watermark_holds_below_min_insync() {
        let mut state = leader(&[1], 2);
        assert_eq!(state.update_high_watermark(120), Some(90));
        let mut state = leader(&[1, 2], 2);
        state.follower_fetched(2, 110, 120, 1_010);
        assert_eq!(state.update_high_watermark(120), Some(110));
        state.propose(vec![1]);
        state.follower_fetched(2, 120, 120, 1_020);
        assert_eq!(state.update_high_watermark(120), Some(110));
    }

    #[test]
    fn lagging_followers_leave_and_caught_up_ones_join() {
        let mut state = leader(&[1, 2, 3], 1);
        state.follower_fetched(2, 100, 100, 1_500);
        state.follower_fetched(3, 40, 100, 1_500);
        assert_eq!(state.isr_change(1_500, 1_000), None);
        // Follower 3 was last caught up at 1_000 (when this leader started).
        assert_eq!(state.isr_change(2_100, 1_000), Some(vec![1, 2]));
        state.propose(vec![1, 2]);
        assert_eq!(state.isr_change(2_100, 1_000), None, "one change at a time");
        state.proposal_failed(2_100);
        assert_eq!(
            state.isr_change(2_500, 1_000),
            None,
            "backing off after a refusal"
        );
        state.follower_fetched(2, 100, 100, 3_000);
        assert_eq!(state.isr_change(3_100, 1_000), Some(vec![1, 2]));
        state.propose(vec![1, 2]);
        state.committed(4, vec![1, 2, 3], vec![1, 2]);
        assert_eq!(state.update_high_watermark(100), Some(100));
        // Follower 3 catches up: one fetch at the old end, then one at the end it saw.
        state.follower_fetched(3, 90, 100, 3_700);
        assert_eq!(state.isr_change(3_700, 1_000), None);
        state.follower_fetched(3, 100, 100, 3_800);
        assert_eq!(state.isr_change(3_800, 1_000), Some(vec![1, 2, 3]));
        state.propose(vec![1, 2, 3]);
        // While the expansion is in flight the joining member holds the high watermark.
        state.follower_fetched(2, 130, 130, 3_900);
        assert_eq!(state.update_high_watermark(130), Some(100));
    }

    #[test]
    fn caught_up_at_the_previous_fetch_when_reaching_the_end_it_saw() {
        let mut state = leader(&[1, 2], 1);
        state.follower_fetched(2, 100, 150, 5_000);
        // Not at the end: caught-up time stays at the leader's start.
        assert_eq!(state.follower(2).unwrap().caught_up_ms, 1_000);
        state.follower_fetched(2, 150, 200, 5_100);
        assert_eq!(state.follower(2).unwrap().caught_up_ms, 5_000);
    }

    #[test]
    fn fetches_from_strangers_are_refused() {
        let mut state = leader(&[1, 2, 3], 1);
        assert!(!state.follower_fetched(7, 100, 100, 1_000));
        assert!(!state.follower_fetched(1, 100, 100, 1_000));
    }
}
