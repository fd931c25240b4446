//! ringbroker: a Kafka-API-compatible event streaming broker, thread-per-core on glommio.
//!
//! The crate is laid out as `../shared/DESIGN.md` §8 describes: `shard` (executors, router,
//! ownership), `net` (listeners, connections, framing), `kafka` (dispatch and one handler per
//! API), `acl` (ACLs and the authorizer), `metadata` (topic table, metadata log, images), `storage` (partition logs), `config`
//! and `limits`.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]

pub mod acl;
pub mod cluster;
pub mod config;
pub mod group;
pub mod kafka;
pub mod limits;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod shard;
pub mod storage;
pub mod turnstile;
pub mod txn;
