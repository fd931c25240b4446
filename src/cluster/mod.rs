//! The controller quorum (issue 14, DESIGN §8): the metadata log becomes the log of one Raft
//! group whose voters are `controller.quorum.voters`.
//!
//! Owner: shard 0 of every controller node. The Raft state machine, its durable log and its
//! peer connections live there; brokers' other shards see only the committed metadata image,
//! published to them in commit order as today. A lone node is a one-voter quorum.
//!
//! # Which Raft library, and why raft-rs
//!
//! Consensus comes from a well-tested library, never our own. The two candidates:
//!
//! | | tikv `raft` (raft-rs) 0.7 | `openraft` 0.9 / 0.10-alpha |
//! | --- | --- | --- |
//! | shape | a synchronous state machine (`RawNode`: `tick`, `step`, `propose`, `ready`, `advance`); the application owns timers, I/O and the network | an async framework that owns the core loop as a task, calling the application's `RaftLogStorage`, `RaftStateMachine` and `RaftNetwork` traits |
//! | beside glommio shards | driven from shard 0's own loop, no runtime of its own: the timer is a glommio timer, persistence goes where our storage already goes | needs an `AsyncRuntime`; tokio by default (a second runtime beside glommio), a custom runtime and `single-threaded` mode (no `Send` bounds) only in 0.10 alphas |
//! | our log format | `Storage` is five read methods; writes are ours, so the log keeps our checksummed record framing and recovery rules | `RaftLogStorage` likewise lets us own the format, through an async API with callbacks |
//! | snapshots | `Snapshot` bytes we produce (the metadata image) and apply | streaming snapshot API, also ours to produce |
//! | pre-vote, check-quorum | both (`Config::pre_vote`, `check_quorum`); lease-based and ReadIndex reads | no pre-vote in 0.9; leader lease |
//! | maintenance | TiKV's consensus for a decade in production; 0.7.0 (2023) is the current release, changes are rare and conservative | active development, 0.10 has been alpha for a long time with API churn |
//!
//! raft-rs fits thread-per-core directly: it performs no I/O and spawns nothing, so it runs on
//! shard 0 like any other owned state and is easy to drive deterministically in tests. It is
//! used with `default-features = false` and the `protobuf-codec` feature (the `prost-codec` one
//! needs `protoc` at build time). Its protobuf-2 message types are used as plain structs: nothing
//! from the network is ever parsed by protobuf (the crate has had decoder bugs on hostile input);
//! peers' messages travel in our own bounded encoding (`wire`).
//!
//! The quorum is static, as Kafka's `controller.quorum.voters` is: voters come from
//! configuration, never from configuration-change entries, so the log never holds raft-rs
//! `ConfChange` entries and the wire codec refuses them.
//!
//! What is here: the durable Raft log (`raft_log`), the peer message codec (`wire`) and
//! transport, one voter (`quorum`, driven without I/O so tests elect, fail over and catch up
//! in-process), its shard-0 driver with timers (`driver`), and replica placement
//! (`placement`). This service knows nothing of metadata: the state machine on top is
//! `metadata::quorum`, started by `broker::quorum`.

pub mod driver;
pub mod logging;
pub mod placement;
pub mod quorum;
pub mod raft_log;
pub mod transport;
pub mod wire;
