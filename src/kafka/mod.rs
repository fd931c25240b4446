//! The Kafka protocol front: request dispatch, error mapping and one handler per API
//! (DESIGN.md §4).
//!
//! Owner: runs on whichever shard accepted the connection. Handlers read the shard's metadata
//! image and reach other shards through the router; they never block the executor.
//!
//! Message schemas (encode/decode of every version) come from the `kafka-protocol` crate;
//! framing, the dispatch table, version negotiation and the record-batch data plane are ours.

pub mod api_versions;
pub mod dispatch;
pub mod error;
pub mod metadata;
