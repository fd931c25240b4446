//! Topic metadata: the authoritative table on shard 0, its persistence, and the immutable
//! images every shard reads (DESIGN.md §2).
//!
//! Lifecycle: `main` opens the store and replays it before any shard starts; every shard starts
//! with that image; shard 0's `Controller` commits changes and publishes each new image to all
//! shards in commit order. Other shards reach the controller through `client`. Under a
//! controller quorum the store is replaced by the quorum's Raft log: `quorum` is the
//! replicated state machine the controller hands changes to, and `membership` registers and
//! fences brokers.

pub mod client;
pub mod controller;
pub mod image;
pub mod lease;
pub mod membership;
pub mod quorum;
pub mod store;
pub mod topic_name;

pub use client::{AlterPartitionError, ControllerCallError, ControllerLink, ControllerResults};
pub use controller::{Controller, ControllerRequest, ControllerResponse, MetadataError, NewTopic};
pub use image::{MetadataImage, TopicImage};
pub use store::{MetadataStore, NodeIdentity, StoreError};
