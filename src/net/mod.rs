//! The network front: listeners, framing and the per-connection loop (DESIGN.md §1, §4).
//!
//! Owner: every shard runs its own listener on the shared port (SO_REUSEPORT) and serves the
//! connections the kernel hands it; a connection never moves to another shard. A broker may
//! have several client listeners (PLAINTEXT, SSL); `tls` is the TLS side of SSL ones.

pub mod admission;
pub mod connection;
pub mod frame;
pub mod listener;
pub mod tls;
