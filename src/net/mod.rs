//! The network front: listeners, framing and the per-connection loop (DESIGN.md §1, §4).
//!
//! Owner: every shard runs its own listener on the shared port (SO_REUSEPORT) and serves the
//! connections the kernel hands it; a connection never moves to another shard.

pub mod admission;
pub mod connection;
pub mod frame;
pub mod listener;
pub mod tls;
