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
use crate::quota::ClientQuotas;
use crate::security::sasl::scram::{ScramCredential, ScramMechanism};
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
    /// Each partition's replicas and leadership, in partition order, when the topic was placed
    /// by a controller quorum; empty on a lone node, whose every partition it leads alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<PartitionState>,
}

/// One partition's replicas and leadership (Kafka's PartitionRecord / PartitionChangeRecord).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The brokers holding it, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// The leader, or -1 when none is available.
    pub leader: i32,
    /// Bumped on every leader change (KIP-320).
    pub leader_epoch: i32,
    /// Bumped on every change of this state.
    pub partition_epoch: i32,
    /// Eligible leader replicas (KIP-966): replicas out of the ISR that hold every record
    /// below the high watermark, because they left it while the ISR was below
    /// `min.insync.replicas` (the high watermark does not advance then). When the ISR is
    /// empty one of them may lead, a clean election. Absent from metadata written before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elr: Vec<i32>,
    /// KIP-966's LastKnownElr: replicas that were in the ISR or the ELR since the ISR went
    /// below `min.insync.replicas` and are in neither now (a broker that registered again
    /// after an unclean shutdown); cleared when the ISR is back at `min.insync.replicas` or
    /// after an unclean election. Kept for operators; no election reads it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_known_elr: Vec<i32>,
}

/// A broker registered with the controller quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerImage {
    /// Its node id.
    pub id: i32,
    /// Bumped on every registration (a restart), so stale heartbeats are told apart.
    pub epoch: i64,
    /// Drawn at each process start of the broker.
    pub incarnation: Uuid,
    /// The Raft index of its registration: it is unfenced once its log holds that index.
    pub registered_index: u64,
    /// The host clients are told.
    pub host: String,
    /// The port clients are told.
    pub port: u16,
    /// `broker.rack`, if set.
    pub rack: Option<String>,
    /// Fenced: past its session, or not yet caught up since it registered. A fenced broker is
    /// not offered to clients and leads nothing.
    pub fenced: bool,
    /// In controlled shutdown (`ShutdownBroker`): it leads only what no other in-sync replica
    /// can, and may not join an ISR.
    #[serde(default)]
    pub shutting_down: bool,
}

impl PartitionState {
    /// A new partition on `replicas`, led by the first, every replica in sync (all are empty),
    /// as Kafka creates one.
    pub fn led_by_first(replicas: Vec<i32>) -> PartitionState {
        let leader = replicas.first().copied().unwrap_or(-1);
        PartitionState {
            isr: replicas.clone(),
            replicas,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            elr: Vec::new(),
            last_known_elr: Vec::new(),
        }
    }
}

impl TopicImage {
    /// Replicas per partition (1 on a lone node).
    pub fn replication_factor(&self) -> i16 {
        self.placement
            .first()
            .map_or(1, |s| s.replicas.len() as i16)
    }

    /// The state of `partition` under a quorum, or `None` on a lone node.
    pub fn partition_state(&self, partition: i32) -> Option<&PartitionState> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.placement.get(p))
    }

    /// The leader of `partition`: `lone` (this node) when the topic was not placed by a quorum.
    pub fn leader_of(&self, partition: i32, lone: i32) -> i32 {
        self.partition_state(partition).map_or(lone, |s| s.leader)
    }

    /// Whether broker `id` holds a replica of `partition`: always when the topic was not
    /// placed by a quorum (a lone node holds everything).
    pub fn holds_replica(&self, partition: i32, id: i32) -> bool {
        self.partition_state(partition)
            .is_none_or(|s| s.replicas.contains(&id))
    }
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
    /// SCRAM credentials by user and mechanism (AlterUserScramCredentials), checked by SASL
    /// SCRAM authentication on every shard.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
    /// Client quotas by entity (Kafka's `producer_byte_rate` and `consumer_byte_rate`).
    #[serde(default, skip_serializing_if = "ClientQuotas::is_empty")]
    pub quotas: ClientQuotas,
    /// Brokers registered with the controller quorum, by id; empty on a lone node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub brokers: BTreeMap<i32, BrokerImage>,
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
            scram: BTreeMap::new(),
            quotas: ClientQuotas::default(),
            brokers: BTreeMap::new(),
        }
    }

    /// The brokers clients may use: registered and not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Whether broker `id` is registered and not fenced.
    pub fn is_live(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
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
