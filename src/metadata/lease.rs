//! The metadata lease: whether this broker's image is known to be current, i.e. whether it
//! may act on what the image says it leads where acting on a stale image would answer with
//! state another broker has since replaced. The group and transaction coordinators read it
//! (`broker::coordinator_log::led_epoch`): a coordinator without the lease answers
//! NOT_COORDINATOR, and FindCoordinator on this broker answers COORDINATOR_NOT_AVAILABLE, so
//! clients go to a broker that knows who leads.
//!
//! Owner: one `MetadataLease` per process, shared by every shard (atomics only); renewed by
//! one task on shard 0 of a quorum node (`renew_loop`), for the life of the process. The task
//! awaits its timer and the quorum's read index (bounded); readers never await.
//!
//! Why: a broker cut off from the quorum (or frozen, or restarted with an old image) still
//! believes it leads what it led. The controller moves those leaderships only once it has
//! fenced the broker, `broker.session.timeout.ms` after it last heard from it; until the cut-off
//! broker hears of that, it would answer OffsetFetch from a cache the new coordinator has
//! moved past, and hold a group's heartbeats for members the new coordinator does not know:
//! committed offsets seen going back, a group split in two. (Found by the chaos harness: an
//! isolated controller node answered OffsetFetch with offsets six seconds old.) Kafka's
//! brokers keep serving from a stale image; this departs from Kafka for the coordinators only.
//! Partition leaders keep Kafka's behaviour (an isolated leader serves reads up to its high
//! watermark and acks=1 writes), so that with the quorum lost existing leaders still serve.
//!
//! The rule: every renewal sends a read index (raft-rs's safe ReadIndex) at `sent`. When it
//! comes back, the leader had heard from this node after `sent` and a majority had confirmed
//! its leadership; this node then has applied the log to the leader's commit index of that
//! moment, which is image offset `needed`. No controller fences this node earlier than
//! `broker.session.timeout.ms` after `sent` (the leader that answered heard from it later;
//! a newer leader counts a session from its own election, which is later still), so until
//! `sent + LEASE_SHARE of the session timeout` a shard whose installed image is at `needed` or
//! newer holds a current image, up to the changes committed since (the normal propagation
//! delay, which the coordinators' leader-epoch checks already guard for writes).

use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metadata::quorum::ReplicatedMetadata;

/// The share of `broker.session.timeout.ms` a renewal is good for, in percent: margin for a
/// controller whose clock runs a little fast and for the time between the fence and its
/// publication.
pub const LEASE_SHARE_PERCENT: u64 = 60;

/// A lease shared by the shards of one process.
#[derive(Debug)]
pub struct MetadataLease {
    /// The instant `until_ns` counts from.
    base: Instant,
    /// Nanoseconds after `base` until which the lease holds; 0 for never granted.
    until_ns: AtomicU64,
    /// The image offset a shard must have installed for the lease to hold.
    needed_offset: AtomicI64,
}

impl MetadataLease {
    /// A lease not granted yet.
    pub fn new() -> MetadataLease {
        MetadataLease {
            base: Instant::now(),
            until_ns: AtomicU64::new(0),
            needed_offset: AtomicI64::new(i64::MAX),
        }
    }

    /// Grants the lease until `until` to images at `needed_offset` or newer. A grant never
    /// shortens a later one (renewals may finish out of order).
    pub fn grant(&self, until: Instant, needed_offset: i64) {
        let until_ns = until.saturating_duration_since(self.base).as_nanos() as u64;
        if until_ns <= self.until_ns.load(Ordering::Acquire) {
            return;
        }
        // The offset first: a reader that sees the new deadline sees its offset.
        self.needed_offset.store(needed_offset, Ordering::Release);
        self.until_ns.store(until_ns, Ordering::Release);
    }

    /// Whether a shard whose installed image is at `image_offset` holds the lease now.
    pub fn holds(&self, image_offset: i64) -> bool {
        let until_ns = self.until_ns.load(Ordering::Acquire);
        let now_ns = self.base.elapsed().as_nanos() as u64;
        now_ns < until_ns && image_offset >= self.needed_offset.load(Ordering::Acquire)
    }
}

impl Default for MetadataLease {
    fn default() -> MetadataLease {
        MetadataLease::new()
    }
}

/// How long one renewal is good for, after it was sent.
pub fn lease_length(session_timeout_ms: u64) -> Duration {
    Duration::from_millis(session_timeout_ms * LEASE_SHARE_PERCENT / 100)
}

/// Renews `lease` through `metadata`'s quorum for the life of the process: a read index every
/// `interval`, each awaited at most `interval * 4`, so that a lost request does not hold up the
/// next.
pub async fn renew_loop(
    metadata: Rc<ReplicatedMetadata>,
    lease: std::sync::Arc<MetadataLease>,
    length: Duration,
    interval: Duration,
) {
    loop {
        if let Some(handle) = metadata.handle() {
            let sent = Instant::now();
            let read =
                glommio::timer::timeout(interval * 4, async { Ok(handle.read_index().await) })
                    .await;
            if let Ok(Ok(_index)) = read {
                // The driver answers once this node applied up to the index, so the image
                // now holds every change committed before `sent`.
                lease.grant(sent + length, metadata.image().offset);
            }
        }
        glommio::timer::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_only_before_its_deadline_and_for_images_at_the_offset_it_needs() {
        let lease = MetadataLease::new();
        assert!(!lease.holds(i64::MAX - 1), "never granted");
        lease.grant(Instant::now() + Duration::from_secs(60), 10);
        assert!(lease.holds(10));
        assert!(lease.holds(11));
        assert!(!lease.holds(9), "an image older than the read index");
        lease.grant(Instant::now(), 12);
        assert!(
            lease.holds(10),
            "an earlier deadline does not replace a later one"
        );
        let expired = MetadataLease::new();
        expired.grant(Instant::now(), 0);
        std::thread::sleep(Duration::from_millis(2));
        assert!(!expired.holds(5), "past its deadline");
    }

    #[test]
    fn a_lease_lasts_a_share_of_the_session_timeout() {
        assert_eq!(lease_length(9000), Duration::from_millis(5400));
    }
}
