//! Watchdog: wakes a shard whose executor went to sleep with work still queued.
//!
//! Why: glommio 0.9's run loop can park an executor whose task queues are runnable when the
//! latency ring flagged preemption before any task ran (see `runtime::executor::create_task_queues`). Parked like
//! that, it sleeps until some I/O completes or another executor writes its wake-up eventfd;
//! when every task that would submit I/O is itself among the runnable ones, nothing comes and
//! the shard hangs. Each shard's reactor tick stamps a heartbeat every `SHARD_TICK_MS`; this
//! watchdog checks them every `WATCHDOG_CHECK_MS` and sends a one-byte nudge over a glommio
//! shared channel to any shard whose heartbeat is older than `WATCHDOG_STALE_MS`. Sending on a
//! shared channel to a sleeping executor writes its eventfd, which wakes it, and its run loop
//! then runs the queued tasks. A busy shard (not asleep) just finds a message to drop.
//!
//! Owner: one thread ("watchdog") with a small unpinned glommio executor, started by
//! `pool::start` before the shards (so it covers their start-up too; a shard connects its end of
//! the nudge channel first thing, from its root future), stopped by `Watchdog::stop` after the
//! shards have. Until a shard's first tick its heartbeat is stale, so it is nudged every check:
//! harmless, the nudges only wake it.
//! Its work runs in the executor's root future, which glommio polls on every loop iteration,
//! so the bug it guards against cannot strand it. Heartbeats are atomics shared across threads:
//! monitoring, not a data path (DESIGN.md §1 keeps those out of request handling).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::{self, ConnectedReceiver, SharedReceiver, SharedSender};
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use tracing::{debug, warn};

use crate::limits::{WATCHDOG_CHECK_MS, WATCHDOG_NUDGES_MAX, WATCHDOG_STALE_MS};

/// How long the watchdog waits for a shard to connect its end of the nudge channel.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One heartbeat per shard (by start order), in ms since `epoch`.
#[derive(Debug)]
pub struct Heartbeats {
    epoch: Instant,
    beats_ms: Vec<AtomicU64>,
}

impl Heartbeats {
    /// Heartbeats for `shards` shards, all fresh.
    pub fn new(shards: usize) -> Arc<Heartbeats> {
        Arc::new(Heartbeats {
            epoch: Instant::now(),
            beats_ms: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Shard `slot` is alive now.
    pub fn beat(&self, slot: usize) {
        self.beats_ms[slot].store(self.now_ms(), Ordering::Relaxed);
    }

    fn age_ms(&self, slot: usize) -> u64 {
        self.now_ms()
            .saturating_sub(self.beats_ms[slot].load(Ordering::Relaxed))
    }
}

/// A shard's end of the watchdog: its heartbeat slot and the channel nudges arrive on.
#[derive(Debug)]
pub struct ShardWatch {
    /// Everyone's heartbeats.
    pub heartbeats: Arc<Heartbeats>,
    /// This shard's slot.
    pub slot: usize,
    /// Where nudges arrive (taken by `drain_nudges`).
    pub nudges: Option<SharedReceiver<u8>>,
}

/// The channels of a watchdog for `shards` shards: the shards' ends and the watchdog's.
pub fn channels(shards: usize) -> (Vec<ShardWatch>, Arc<Heartbeats>, Vec<SharedSender<u8>>) {
    let heartbeats = Heartbeats::new(shards);
    let (senders, watches) = (0..shards)
        .map(|slot| {
            let (tx, rx) = shared_channel::new_bounded(WATCHDOG_NUDGES_MAX);
            (
                tx,
                ShardWatch {
                    heartbeats: heartbeats.clone(),
                    slot,
                    nudges: Some(rx),
                },
            )
        })
        .unzip();
    (watches, heartbeats, senders)
}

/// A shard's connected end of the nudge channel. Connect it from the shard's root future
/// before anything else (the watchdog connects its ends at the same time).
pub async fn connect(nudges: SharedReceiver<u8>) -> ConnectedReceiver<u8> {
    nudges.connect().await
}

/// Runs inside a shard: takes nudges off the channel (the wake-up is their whole point) until
/// the shard stops, so the channel has room for the next ones.
pub async fn drain_nudges(nudges: ConnectedReceiver<u8>) {
    while nudges.recv().await.is_some() {}
}

/// The running watchdog thread.
#[derive(Debug)]
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    handle: Option<ExecutorJoinHandle<()>>,
}

impl Watchdog {
    /// Starts the watchdog thread. Failing to start it is logged, not fatal: the broker runs
    /// as it did before it existed.
    pub fn start(heartbeats: Arc<Heartbeats>, senders: Vec<SharedSender<u8>>) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name("watchdog")
            .spawn(move || async move { watch(heartbeats, senders, stopping).await });
        let handle = match handle {
            Ok(handle) => Some(handle),
            Err(err) => {
                warn!(%err, "cannot start the shard watchdog; shards run without it");
                None
            }
        };
        Watchdog { stop, handle }
    }

    /// Stops the watchdog and waits for its thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Start-up failed, or `stop` already ran: either way the thread should end.
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn watch(heartbeats: Arc<Heartbeats>, senders: Vec<SharedSender<u8>>, stop: Arc<AtomicBool>) {
    let connects = senders
        .into_iter()
        .enumerate()
        .map(|(slot, sender)| async move {
            match glommio::timer::timeout(CONNECT_TIMEOUT, async { Ok(sender.connect().await) })
                .await
            {
                Ok(sender) => Some((slot, sender)),
                Err(_) => {
                    warn!(slot, "shard did not connect to the watchdog; not watched");
                    None
                }
            }
        });
    let connected: Vec<_> = futures::future::join_all(connects)
        .await
        .into_iter()
        .flatten()
        .collect();
    let check = Duration::from_millis(WATCHDOG_CHECK_MS);
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(check).await;
        for (slot, sender) in &connected {
            let age_ms = heartbeats.age_ms(*slot);
            if age_ms > WATCHDOG_STALE_MS {
                debug!(slot, age_ms, "shard heartbeat is stale: nudging it");
                // Full means a nudge is already waiting to be read: nothing more to do.
                let _ = sender.try_send(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_age_and_reset() {
        let beats = Heartbeats::new(2);
        std::thread::sleep(Duration::from_millis(20));
        beats.beat(1);
        assert!(beats.age_ms(0) >= 20);
        assert!(beats.age_ms(1) < 20);
    }
}
