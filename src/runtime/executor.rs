//! Executors pinned one per core, their task queues and the reactor tick.
//!
//! Owner: `pinned_executor` runs on the main thread (the broker's `pool::start` spawns one per
//! selected core); `create_task_queues` and `reactor_tick` run inside the executor, from its
//! start-up. DESIGN.md §1 names `LocalExecutorPoolBuilder`; the broker spawns the executors one
//! by one with `LocalExecutorBuilder` instead, because the pool builder does not tell a thread
//! which core it got, and each shard logs its core and creates its own task queues. A second
//! departure from §1: the request queue is `Latency::NotImportant`, not `Latency::Matters`,
//! because a 1 ms latency target triggers a hang in glommio 0.9 (see `create_task_queues`).

use std::sync::Arc;
use std::time::Duration;

use glommio::{Latency, LocalExecutorBuilder, Placement, PoolPlacement, Shares, TaskQueueHandle};

use crate::limits;
use crate::runtime::watchdog::Heartbeats;

/// Threads in each shard's blocking pool (glommio's default is one). On shard 0 one of them
/// waits for shutdown requests for the life of the process, so a second one is needed for the
/// work that does use the pool (metadata log writes, file creation and removal).
const BLOCKING_THREADS_PER_SHARD: usize = 2;

/// The task queues of a shard: request handling runs where latency matters; background work
/// (retention, compaction, index rebuilds) gets few shares so it never sits in front of a
/// produce.
#[derive(Debug, Clone, Copy)]
pub struct TaskQueues {
    /// Connections, request handlers and cross-shard calls.
    pub requests: TaskQueueHandle,
    /// Housekeeping.
    pub background: TaskQueueHandle,
}

/// A builder for the executor of the shard on `core`, pinned to it with `Placement::Fixed`,
/// spinning `spin_before_park_us` before it parks (0: never spins).
pub fn pinned_executor(core: usize, spin_before_park_us: u64) -> LocalExecutorBuilder {
    let mut builder = LocalExecutorBuilder::new(Placement::Fixed(core))
        .name(&format!("shard-core{core}"))
        .blocking_thread_pool_placement(PoolPlacement::Unbound(BLOCKING_THREADS_PER_SHARD));
    if spin_before_park_us > 0 {
        // glommio spins only for executors bound to a CPU, which `Placement::Fixed` is.
        builder = builder.spin_before_park(Duration::from_micros(spin_before_park_us));
    }
    builder
}

/// Creates the current executor's task queues.
pub fn create_task_queues() -> TaskQueues {
    let executor = glommio::executor();
    // Both queues are `Latency::NotImportant`, so the preempt timer runs at glommio's default
    // 100 ms slice. A `Latency::Matters(1 ms)` request queue (what DESIGN.md §1 suggests) arms
    // a 1 ms preempt timer, and glommio 0.9 parks an executor that was preempted before its
    // run loop ran any task as if it had nothing to run: with the thread descheduled for a
    // millisecond at the wrong moment (any busy host) the shard slept with runnable tasks and
    // no timer, and hung until a remote wake-up. Reproduced under load (connections waiting
    // 30 s in 3 of 4 runs of 400 malformed-frame rounds); none in 1400 rounds after the change.
    // Request tasks are short (they await I/O), so the 20:1 shares alone keep background work
    // out of their way.
    TaskQueues {
        requests: executor.create_task_queue(
            Shares::Static(1000),
            Latency::NotImportant,
            "requests",
        ),
        background: executor.create_task_queue(
            Shares::Static(50),
            Latency::NotImportant,
            "background",
        ),
    }
}

/// Wakes the shard's reactor every `SHARD_TICK_MS` until `draining()` says the shard drains.
/// glommio's reactor checks every cross-shard channel for pending messages each time it runs,
/// so this bounds how long a message can wait if the eventfd notification that should wake a
/// parked executor is lost. Such stalls were seen under load (a cross-shard call waiting for
/// seconds while both shards idled); the tick makes them cost at most a tick instead of a hang,
/// for about a thousand cheap wake-ups a second per idle shard. The cause, found later: glommio
/// 0.9's run loop treats "preempted before running anything" as "nothing to run" and parks (see
/// `create_task_queues`); a fork of glommio fixed exactly that in 2026, but 0.9 is the newest
/// glommio on crates.io. With a 1 ms preempt timer it happened under any load; with the
/// default 100 ms one it needs a 100 ms deschedule at that exact point, and the tick then
/// bounds it; twice in a row, with the tick task itself left runnable, it would still hang, so
/// each tick also stamps the shard's heartbeat for the watchdog (`runtime::watchdog`), which
/// wakes a shard whose heartbeat goes stale.
pub async fn reactor_tick(heartbeats: Arc<Heartbeats>, slot: usize, draining: impl Fn() -> bool) {
    let tick = Duration::from_millis(limits::SHARD_TICK_MS);
    while !draining() {
        heartbeats.beat(slot);
        glommio::timer::sleep(tick).await;
    }
}
