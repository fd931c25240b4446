//! ringbroker: a Kafka-API-compatible event streaming broker, thread-per-core on glommio.
//!
//! The crate is laid out as `../shared/DESIGN.md` §8 describes: `shard` (executors, router,
//! ownership), `net` (listeners, connections, framing), `kafka` (dispatch and one handler per
//! API), `storage` (partition logs), `metadata` (topic table and images), `config` and `limits`.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations, rust_2018_idioms)]

pub mod limits;
pub mod storage;
