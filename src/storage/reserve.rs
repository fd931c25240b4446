//! The per-shard budget of reserved-but-unwritten segment space
//! (`log.segment.reserve.budget.bytes`).
//!
//! An active segment reserves file space ahead of its tail (fallocate) in steps that grow with
//! what it has taken (`segment::reserve_step`), so that a busy partition's appends never grow
//! the file. Each such reservation is taken from its shard's budget first: a segment holds a
//! `ReserveGrant` of the bytes it has reserved beyond what it has written, which shrinks as
//! writes fill the space, and returns to the budget when the segment is sealed or dropped.
//! When the budget cannot cover a step, the step shrinks to what is left (not below
//! `STORAGE_RESERVE_STEP_MIN_BYTES`); when nothing is left, the segment appends without
//! reserving (its file grows with each write) until space comes back. Cold segments (written
//! less than one minimum step) may fill only the first half of the budget, so that however
//! many partitions are written now and then, the half that fast writers take their larger
//! steps from stays free for them. So the disk a shard
//! holds reserved is bounded however many partitions it has, and a full budget never fails
//! an append.
//!
//! Owner: one `ReserveBudget` per shard, `Rc`-shared by that shard's logs through `LogEnv`
//! (`crate::pool` builds it from the configuration). !Send, no awaiting.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

/// Reserved-but-unwritten bytes a shard's segments may hold in all. See the module header.
#[derive(Debug)]
pub struct ReserveBudget {
    bytes_max: u64,
    held: Cell<u64>,
    /// Reservations skipped or cut short because the budget was spent.
    short: Cell<u64>,
}

impl ReserveBudget {
    /// A budget of `bytes_max` bytes.
    pub fn new(bytes_max: u64) -> Rc<ReserveBudget> {
        Rc::new(ReserveBudget {
            bytes_max,
            held: Cell::new(0),
            short: Cell::new(0),
        })
    }

    /// The bound.
    pub fn bytes_max(&self) -> u64 {
        self.bytes_max
    }

    /// Bytes reserved and not yet written, over all segments of the shard.
    pub fn held_bytes(&self) -> u64 {
        self.held.get()
    }

    /// How many reservations the budget cut short or refused.
    pub fn short_count(&self) -> u64 {
        self.short.get()
    }

    fn available(&self) -> u64 {
        self.bytes_max.saturating_sub(self.held.get())
    }
}

/// What one segment holds of its shard's budget; given back when dropped.
pub(crate) struct ReserveGrant {
    budget: Rc<ReserveBudget>,
    bytes: u64,
}

impl fmt::Debug for ReserveGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReserveGrant({} bytes)", self.bytes)
    }
}

impl ReserveGrant {
    /// A grant of nothing yet.
    pub(crate) fn new(budget: &Rc<ReserveBudget>) -> ReserveGrant {
        ReserveGrant {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The most this grant could hold: what it holds plus what the budget has left to a
    /// segment that has written `written_bytes` (a cold one, below one minimum step, only up
    /// to half the budget: see the module header).
    pub(crate) fn ceiling(&self, written_bytes: u64) -> u64 {
        let available = if written_bytes < crate::limits::STORAGE_RESERVE_STEP_MIN_BYTES {
            (self.budget.bytes_max / 2).saturating_sub(self.budget.held.get())
        } else {
            self.budget.available()
        };
        self.bytes + available
    }

    /// Holds exactly `bytes`: gives back the difference, or takes it if the budget has it.
    /// Returns false (and holds what it held) when the budget cannot cover the growth.
    pub(crate) fn set(&mut self, bytes: u64) -> bool {
        if bytes > self.bytes {
            let more = bytes - self.bytes;
            if more > self.budget.available() {
                return false;
            }
            self.budget.held.set(self.budget.held.get() + more);
        } else {
            let less = self.bytes - bytes;
            self.budget.held.set(self.budget.held.get() - less);
        }
        self.bytes = bytes;
        true
    }

    /// Counts a reservation the budget cut short or refused.
    pub(crate) fn note_short(&self) {
        self.budget.short.set(self.budget.short.get() + 1);
    }
}

impl Drop for ReserveGrant {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// How far to reserve a segment whose tail is at `written_bytes`, which has reserved up to
/// `reserved_bytes` and wants up to `wanted_target` (a step ahead, within the segment size),
/// given that its grant may grow to `ceiling` bytes ahead of the tail. `None`: do not reserve
/// now. The target is aligned down to `align` bytes.
pub(crate) fn budgeted_target(
    written_bytes: u64,
    reserved_bytes: u64,
    wanted_target: u64,
    ceiling: u64,
    align: u64,
) -> Option<u64> {
    let allowed = written_bytes.saturating_add(ceiling);
    let target = wanted_target.min(allowed) & !(align - 1);
    let step_min = crate::limits::STORAGE_RESERVE_STEP_MIN_BYTES;
    // A step shortened below the minimum is not worth a system call (unless it was all that
    // was wanted: the end of the segment).
    let worth_it = target == wanted_target || target.saturating_sub(written_bytes) >= step_min;
    (target > reserved_bytes && worth_it).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn grants_take_from_and_give_back_to_the_budget() {
        let budget = ReserveBudget::new(3 * MIB);
        let mut a = ReserveGrant::new(&budget);
        let mut b = ReserveGrant::new(&budget);
        assert!(a.set(2 * MIB));
        assert!(!b.set(2 * MIB), "only 1 MiB is left");
        assert_eq!(b.bytes(), 0);
        assert_eq!(b.ceiling(2 * MIB), MIB);
        assert_eq!(b.ceiling(0), 0, "cold segments fill only half the budget");
        assert!(b.set(MIB));
        assert_eq!(budget.held_bytes(), 3 * MIB);
        assert!(a.set(MIB / 2), "shrinking always works");
        assert_eq!(budget.held_bytes(), MIB + MIB / 2);
        drop(a);
        assert_eq!(budget.held_bytes(), MIB);
        drop(b);
        assert_eq!(budget.held_bytes(), 0);
    }

    /// Bytes of disk a file occupies (allocated blocks).
    fn allocated(path: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn logs_of_a_shard_share_the_budget_and_append_past_it() {
        use crate::storage::batch::build_test_batch;
        use crate::storage::{LogConfig, LogEnv, PartitionLog, ShardCache};
        use bytes::Bytes;
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let dir = tempfile::tempdir().unwrap();
                let budget = ReserveBudget::new(3 * MIB);
                let env = LogEnv {
                    cache: Rc::new(ShardCache::new(1 << 20)),
                    background_queue: None,
                    reserve_space: true,
                    reserve_budget: budget.clone(),
                };
                let config = LogConfig {
                    segment_bytes: 64 << 20,
                    ..LogConfig::default()
                };
                let mut logs = Vec::new();
                for i in 0..6 {
                    let path = dir.path().join(format!("p-{i}"));
                    let log = PartitionLog::open_with(&path, config, env.clone())
                        .await
                        .unwrap();
                    log.append(Bytes::from(build_test_batch(1, 100, 0, 1)))
                        .await
                        .unwrap();
                    assert!(budget.held_bytes() <= 3 * MIB);
                    logs.push((path, log));
                }
                // Cold partitions fill only half the budget: one holds its first step, the
                // others hold nothing and occupy only what they wrote.
                let held = budget.held_bytes();
                assert!(held > MIB - 4096 && held <= 3 * MIB / 2, "{held}");
                let segment = |path: &std::path::Path| path.join(format!("{:020}.log", 0));
                assert!(allocated(&segment(&logs[0].0)) >= MIB);
                assert!(allocated(&segment(&logs[5].0)) <= 64 * 1024);
                assert!(budget.short_count() > 0);
                // A fast writer past the budget still appends (growing its file), and all of
                // it reads back.
                let (_, hot) = logs.pop().unwrap();
                for i in 0..40 {
                    hot.append(Bytes::from(build_test_batch(1, 200_000, i, 2)))
                        .await
                        .unwrap();
                    assert!(budget.held_bytes() <= 3 * MIB);
                }
                assert_eq!(hot.high_watermark(), 41);
                assert!(hot.read(40, 1 << 20).await.unwrap().to_vec().len() > 200_000);
                // Closed logs give their steps back; the fast writer then takes a larger one.
                for (_, log) in logs.drain(..) {
                    log.close().await.unwrap();
                }
                drop(logs);
                hot.append(Bytes::from(build_test_batch(1, 200_000, 41, 2)))
                    .await
                    .unwrap();
                for _ in 0..100 {
                    if budget.held_bytes() > MIB {
                        break;
                    }
                    glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                }
                assert!(budget.held_bytes() > MIB, "{}", budget.held_bytes());
                assert!(budget.held_bytes() <= 3 * MIB);
                hot.close().await.unwrap();
                drop(hot);
                assert_eq!(budget.held_bytes(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn steps_shrink_to_the_budget_and_stop_below_the_minimum() {
        let align = 4096;
        // Room for the whole step.
        assert_eq!(
            budgeted_target(100, 0, 64 * MIB, u64::MAX, align),
            Some(64 * MIB)
        );
        // Room for part of it: cut, aligned.
        assert_eq!(
            budgeted_target(5000, MIB, 64 * MIB, 8 * MIB, align),
            Some((5000 + 8 * MIB) & !(align - 1))
        );
        // Less than a minimum step left: none.
        assert_eq!(budgeted_target(5000, 0, 64 * MIB, MIB / 2, align), None);
        // Nothing beyond what is reserved already: none.
        assert_eq!(budgeted_target(0, 2 * MIB, 64 * MIB, 2 * MIB, align), None);
        // The end of a small segment may be less than a minimum step away.
        assert_eq!(
            budgeted_target(10 * align, 0, 12 * align, u64::MAX, align),
            Some(12 * align)
        );
    }
}
