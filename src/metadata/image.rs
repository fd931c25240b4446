//! The metadata image: an immutable snapshot of the topic table that every shard reads.
//!
//! Owner: shard 0's controller holds the authoritative copy and produces a new image for each
//! change it commits; every shard (shard 0 included) holds its current image as an
//! `Rc<MetadataImage>` and replaces it wholesale when a newer one arrives. Readers take the
//! `Rc` and never see a half-applied change. `offset` is the metadata log offset of the last
//! record the image includes, so a shard can refuse an image older than the one it has.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::acl::AclSet;
use crate::config::Config;
use crate::config::topic::BrokerValues;
use uuid::Uuid;

/// One topic as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    /// The topic name.
    pub name: String,
    /// Kafka topic id (KIP-516), fixed at creation.
    pub id: Uuid,
    /// Number of partitions, 0..partitions.
    pub partitions: i32,
    /// Topic-level config overrides (Kafka names), as given at creation or altered since.
    pub configs: BTreeMap<String, String>,
}

impl TopicImage {
    /// Whether this is one of Kafka's internal topics.
    pub fn is_internal(&self) -> bool {
        self.name == "__consumer_offsets" || self.name == "__transaction_state"
    }
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Offset of the last metadata record applied; -1 for the empty image.
    pub offset: i64,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicImage>,
    /// The first producer id not yet handed out (idempotent producers).
    #[serde(default)]
    pub next_producer_id: i64,
    /// Dynamic cluster-wide broker defaults (AlterConfigs on BROKER "").
    #[serde(default)]
    pub cluster_configs: BTreeMap<String, String>,
    /// Dynamic settings of this broker (AlterConfigs on BROKER "<node id>").
    #[serde(default)]
    pub node_configs: BTreeMap<String, String>,
    /// Every ACL (CreateAcls, DeleteAcls), checked by the authorizer on every shard.
    #[serde(default)]
    pub acls: AclSet,
}

impl MetadataImage {
    /// The image of a broker that has no topics.
    pub fn empty() -> MetadataImage {
        MetadataImage {
            offset: -1,
            topics: BTreeMap::new(),
            next_producer_id: 0,
            cluster_configs: BTreeMap::new(),
            node_configs: BTreeMap::new(),
            acls: AclSet::default(),
        }
    }

    /// Looks a topic up by name.
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// Looks a topic up by id. A scan: topic ids are looked up only by Metadata v10+ requests
    /// that name topics by id, and the table is small next to a request's cost.
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.id == id)
    }

    /// The broker-level values topics fall back to, with the dynamic ones of this image.
    pub fn broker_values<'a>(&'a self, config: &'a Config) -> BrokerValues<'a> {
        BrokerValues {
            config,
            cluster: &self.cluster_configs,
            node: &self.node_configs,
        }
    }

    /// Total partitions over all topics.
    pub fn partition_count(&self) -> usize {
        self.topics.values().map(|t| t.partitions as usize).sum()
    }
}
