//! The runtime: what a thread-per-core broker runs on, with no knowledge of what it serves.
//!
//! Executors pinned one per core and their task queues (`executor`), the channel mesh and a
//! router generic over the message it carries (`router`), shutdown signals (`shutdown`), the
//! watchdog that wakes a stalled executor (`watchdog`), which shard owns a partition
//! (`ownership`), and two single-shard primitives: a notify-all event (`event`) and a FIFO
//! turnstile (`turnstile`).
//!
//! Layering (`../shared/DESIGN.md` §7): the runtime imports no service (storage, metadata, acl,
//! group, txn, metrics), not the composition root (`broker`) and not the protocol front
//! (`kafka`). Services and the broker build on it; the message types the router carries and the
//! code that serves them belong to `broker`.
//!
//! Owner: everything here lives on one shard (!Send) except the watchdog's heartbeats, which
//! are atomics read by the watchdog thread.

pub mod event;
pub mod executor;
pub mod ownership;
pub mod router;
pub mod shutdown;
pub mod turnstile;
pub mod watchdog;

pub use executor::TaskQueues;
pub use ownership::{ShardId, shard_for};
pub use router::{Router, RouterError};
