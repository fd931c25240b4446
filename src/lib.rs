//! ringbroker: a Kafka-API-compatible event streaming broker, thread-per-core on glommio.
//!
//! The crate is laid out in layers (`../shared/DESIGN.md` §7, `docs/ARCHITECTURE.md`), each
//! importing only those below it:
//! - `pool`: starting and stopping the shards, wiring every layer together;
//! - `net` (listeners, connections, framing) and `kafka` (dispatch and one handler per API):
//!   the protocol front;
//! - `broker`: the composition root (per-shard context, messages between shards, dispatch);
//! - services: `group`, `txn`, `metadata` (topic table, metadata log, images, controller
//!   calls), `acl` (ACLs and the authorizer), `storage` (partition logs), `metrics`, and
//!   `cluster` (the controller quorum's Raft pieces, not yet on the metadata path);
//! - `runtime`: executors, task queues, channel mesh and router, shutdown, watchdog, ownership;
//! - `config` and `limits`, read by every layer.

#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms)]

pub mod acl;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod group;
pub mod kafka;
pub mod limits;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod quota;
pub mod replication;
pub mod runtime;
pub mod security;
pub mod storage;
pub mod txn;
