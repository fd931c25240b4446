//! The controller: the single writer of the topic table.
//!
//! Owner: shard 0 only (DESIGN.md §2). Other shards reach it with
//! `router.call(ShardId::CONTROLLER, ShardRequest::Controller(..))`.
//!
//! Planning is a pure function (`execute`): a request and an image give the records that carry
//! it out and the answer, the same on every node (random draws are made first, by `prepare`).
//! On a lone node the change is validated against the authoritative image, written to the
//! metadata log and made durable, and only then installed: first on shard 0, then broadcast to
//! every other shard as a new image. Under a controller quorum the request goes to
//! `metadata::quorum` instead, which carries it out on every node as it commits; the replicas
//! of new partitions are then placed over the registered brokers (`cluster::placement`).
//!
//! Changes are serialised by a one-permit semaphore held across the disk write and the
//! broadcast (under a quorum, across the wait for the commit), so shards receive images in the order the controller made them (the mesh
//! channel between two shards is FIFO and posts are applied inline). The `RefCell`s are never
//! borrowed across an `.await`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use glommio::sync::Semaphore;
use tracing::{info, warn};
use uuid::Uuid;

use serde::{Deserialize, Serialize};

use crate::acl::{AclBinding, AclFilter};
use crate::cluster::placement::{self, Candidate};
use crate::config::{ValueKind, topic};
use crate::limits;
use crate::metadata::image::{BrokerImage, MetadataImage, PartitionState, TopicImage};
use crate::metadata::quorum::ReplicatedMetadata;
use crate::metadata::store::{MetadataRecord, MetadataStore, StoreError, apply_record};
use crate::metadata::topic_name::validate_topic_name;
use crate::quota::{self, QuotaAlteration};
use crate::security::sasl::scram::{ScramCredential, ScramMechanism};

/// A topic to create.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewTopic {
    /// Its name.
    pub name: String,
    /// Partition count; must be at least 1.
    pub partitions: i32,
    /// Config overrides; checked against the topic config table before anything is written.
    pub configs: BTreeMap<String, String>,
    /// Replicas per partition, placed over the registered brokers by a quorum; 0 means 1. A
    /// lone node holds one replica of everything (the protocol front refuses more).
    #[serde(default)]
    pub replication_factor: i16,
    /// A manual assignment: each partition's replicas, preferred leader first; empty means
    /// placed automatically.
    #[serde(default)]
    pub assignments: Vec<Vec<i32>>,
    /// The topic id, drawn by the controller before planning (so every node plans alike).
    #[serde(default)]
    pub id: Option<Uuid>,
    /// The placement's random start, drawn likewise.
    #[serde(default)]
    pub placement_start: Option<u32>,
}

/// One change to a topic's config overrides (IncrementalAlterConfigs' operations; the legacy
/// AlterConfigs is a `replace_all` of `Set`s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigOp {
    /// Set `key` to a value.
    Set(String, String),
    /// Remove the override of `key` (back to the broker's value).
    Delete(String),
    /// Add items to a list-valued key.
    Append(String, String),
    /// Remove items from a list-valued key.
    Subtract(String, String),
}

/// A change requested of the controller. Under a quorum, a request travels in the replicated
/// log as it is (JSON) and every node carries it out as it commits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// Create topics; each succeeds or fails on its own. With `validate_only`, nothing is
    /// written and the answers say what would have happened.
    CreateTopics {
        /// The topics.
        topics: Vec<NewTopic>,
        /// Check without creating.
        validate_only: bool,
    },
    /// Delete topics by name; each succeeds or fails on its own.
    DeleteTopics {
        /// The names.
        names: Vec<String>,
    },
    /// Grow topics to a new partition count; each succeeds or fails on its own.
    CreatePartitions {
        /// `(topic, new total partition count)`.
        topics: Vec<(String, i32)>,
        /// Check without changing.
        validate_only: bool,
        /// The placement's random start, drawn by the controller before planning.
        #[serde(default)]
        start: Option<u32>,
    },
    /// Hand out `count` producer ids (a block a shard then gives to producers one by one).
    AllocateProducerIds {
        /// How many.
        count: i64,
    },
    /// Change dynamic broker settings: this broker's (`per_node`) or the cluster-wide defaults.
    AlterBrokerConfigs {
        /// This broker's settings rather than the cluster-wide defaults.
        per_node: bool,
        /// The changes, applied in order.
        ops: Vec<ConfigOp>,
        /// Start from no dynamic settings (legacy AlterConfigs).
        replace_all: bool,
        /// Check without changing.
        validate_only: bool,
    },
    /// Add ACLs (already validated); ones that exist already are left as they are.
    CreateAcls {
        /// The ACLs.
        acls: Vec<AclBinding>,
    },
    /// Remove every ACL each filter matches (filters already validated).
    DeleteAcls {
        /// The filters.
        filters: Vec<AclFilter>,
    },
    /// Set and delete SCRAM credentials (already validated: one alteration per user at most,
    /// deletions of credentials that exist).
    AlterScramCredentials {
        /// (user, mechanism, credential) to set.
        upsertions: Vec<(String, ScramMechanism, ScramCredential)>,
        /// (user, mechanism) to delete.
        deletions: Vec<(String, ScramMechanism)>,
    },
    /// Set and remove client quotas (already checked: entities and keys valid, one operation
    /// per key of an entity).
    AlterClientQuotas {
        /// Each entity with its (key, value to set or `None` to remove).
        alterations: Vec<QuotaAlteration>,
        /// Check without changing.
        validate_only: bool,
    },
    /// A broker (re)registers with the quorum (at start): it is fenced until the controller
    /// sees it caught up with the metadata log.
    RegisterBroker {
        /// Its node id.
        id: i32,
        /// Drawn at each process start, so a restart is told from a repeated registration.
        incarnation: Uuid,
        /// The host clients are told.
        host: String,
        /// The port clients are told.
        port: u16,
        /// `broker.rack`.
        rack: Option<String>,
    },
    /// The active controller fences a broker past its session (`broker.session.timeout.ms`).
    FenceBroker {
        /// The broker.
        id: i32,
        /// The registration it fences; a later one is left alone.
        epoch: i64,
    },
    /// A broker begins a controlled shutdown (Kafka's BrokerHeartbeat with `wantShutDown`):
    /// its leaderships move to other live in-sync replicas, it leaves every ISR it is not the
    /// last member of, and it may not join one again; partitions no other in-sync replica can
    /// lead stay its own until it is fenced.
    ShutdownBroker {
        /// The broker.
        id: i32,
        /// Its registration; an earlier one is refused.
        epoch: i64,
    },
    /// A fenced broker asks to be unfenced: its process (incarnation) holds the registration
    /// and has applied the log up to it.
    UnfenceBroker {
        /// The broker.
        id: i32,
        /// Its registration.
        epoch: i64,
        /// Its process; a request from an earlier process of the broker is ignored.
        incarnation: Uuid,
    },
    /// A partition's leader changes its ISR (Kafka's AlterPartition, KIP-497, as an internal
    /// request): checked against the partition's current state, and committed with the
    /// partition epoch bumped; the leader and its epoch stay.
    AlterPartition {
        /// The topic.
        topic: String,
        /// Its id (a topic deleted and re-created under the same name is another topic).
        topic_id: Uuid,
        /// The partition.
        partition: i32,
        /// The broker asking: it must be the partition's leader.
        leader_id: i32,
        /// The leader epoch it leads in.
        leader_epoch: i32,
        /// The partition epoch its view of the ISR is from.
        partition_epoch: i32,
        /// The ISR it wants: replicas of the partition, itself included.
        new_isr: Vec<i32>,
    },
    /// Leader elections asked for (Kafka's ElectLeaders). Preferred: a partition's first
    /// replica takes over when it is live and in sync. Unclean: a partition no live in-sync
    /// replica leads gets its first live in-sync replica, else its first live replica (the
    /// ISR becomes that replica alone).
    ElectLeaders {
        /// Kafka's election type 1 (unclean) rather than 0 (preferred).
        unclean: bool,
        /// `(topic, partitions)`; `None` means every partition, and then partitions whose
        /// election was not needed are left out of the answer.
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
    /// Change one topic's config overrides.
    AlterTopicConfigs {
        /// The topic.
        name: String,
        /// The changes, applied in order.
        ops: Vec<ConfigOp>,
        /// Start from no overrides instead of the current ones (legacy AlterConfigs).
        replace_all: bool,
        /// Check without changing.
        validate_only: bool,
    },
}

/// The controller's answer: one result per item of the request, in request order, each the
/// topic as it is (or would be) after the change.
#[derive(Debug)]
pub enum ControllerResponse {
    /// The per-item results.
    Results(Vec<Result<TopicImage, MetadataError>>),
    /// Answer to `AllocateProducerIds`: the first id of the block.
    ProducerIds(Result<i64, MetadataError>),
    /// Answer to `AlterBrokerConfigs` and `CreateAcls`.
    Altered(Result<(), MetadataError>),
    /// Answer to `DeleteAcls`: the ACLs each filter removed.
    AclsDeleted(Result<Vec<Vec<AclBinding>>, MetadataError>),
    /// Answer to `AlterPartition`: the partition's state after the change.
    PartitionAltered(Result<PartitionState, MetadataError>),
    /// Answer to `ElectLeaders`: per topic, each partition's outcome.
    Elected(Result<ElectionResults, MetadataError>),
    /// The request reached a shard that is not the controller.
    NotController,
}

/// `ElectLeaders`' outcomes: per topic, `(partition, outcome)` in request order.
pub type ElectionResults = Vec<(String, Vec<(i32, Result<(), MetadataError>)>)>;

/// Why a metadata change was refused. Mapped to Kafka error codes in `broker::error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetadataError {
    /// The name breaks Kafka's rules (INVALID_TOPIC_EXCEPTION).
    #[error("{0}")]
    InvalidTopicName(String),
    /// The topic exists already (TOPIC_ALREADY_EXISTS).
    #[error("Topic '{0}' already exists.")]
    TopicExists(String),
    /// No such topic (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("This server does not host this topic-partition.")]
    UnknownTopic(String),
    /// A partition count out of range (INVALID_PARTITIONS).
    #[error("{0}")]
    InvalidPartitions(String),
    /// A config key or value refused (INVALID_CONFIG).
    #[error("{0}")]
    InvalidConfig(String),
    /// The same topic appears twice in one request (INVALID_REQUEST).
    #[error("Duplicate topic name '{0}' in the request.")]
    DuplicateTopic(String),
    /// A bound of the metadata would be exceeded (POLICY_VIOLATION).
    #[error("{0}")]
    LimitExceeded(String),
    /// The metadata log could not be written (KAFKA_STORAGE_ERROR); nothing changed.
    #[error("metadata log write failed: {0}")]
    Storage(String),
    /// More replicas than live brokers, or fewer than one (INVALID_REPLICATION_FACTOR).
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// A manual assignment that cannot be used (INVALID_REPLICA_ASSIGNMENT).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// A request the controller does not serve in this mode (INVALID_REQUEST).
    #[error("{0}")]
    InvalidRequest(String),
    /// The quorum has no leader, or lost it before the change committed (NOT_CONTROLLER: the
    /// client retries).
    #[error("{0}")]
    NoQuorum(String),
    /// The change did not commit in time (REQUEST_TIMED_OUT).
    #[error("{0}")]
    Timeout(String),
    /// No topic has this id (UNKNOWN_TOPIC_ID).
    #[error("This server does not host this topic ID.")]
    UnknownTopicId(Uuid),
    /// A request names an epoch newer than the controller's: it is likely not the active
    /// controller any more (NOT_CONTROLLER, as Kafka answers AlterPartition).
    #[error("{0}")]
    StaleController(String),
    /// A leader epoch older than the partition's (FENCED_LEADER_EPOCH).
    #[error("{0}")]
    FencedLeaderEpoch(String),
    /// A partition epoch older than the partition's (INVALID_UPDATE_VERSION).
    #[error("{0}")]
    InvalidUpdateVersion(String),
    /// A request from an earlier registration of a broker (STALE_BROKER_EPOCH).
    #[error("{0}")]
    StaleBrokerEpoch(String),
    /// A new ISR adds a broker that is not registered, fenced or shutting down
    /// (INELIGIBLE_REPLICA).
    #[error("{0}")]
    IneligibleReplica(String),
    /// The partition already has the leader the election would give it (ELECTION_NOT_NEEDED).
    #[error("Leader election not needed for topic partition.")]
    ElectionNotNeeded,
    /// A preferred election whose preferred replica is not live and in sync
    /// (PREFERRED_LEADER_NOT_AVAILABLE).
    #[error("{0}")]
    PreferredLeaderNotAvailable(String),
    /// An unclean election with no live replica (ELIGIBLE_LEADERS_NOT_AVAILABLE).
    #[error("{0}")]
    EligibleLeadersNotAvailable(String),
}

/// How this controller makes a change durable.
#[derive(Debug)]
enum Backend {
    /// A lone node: the local metadata log (`store`), written on the blocking pool.
    Local(RefCell<Option<MetadataStore>>),
    /// A controller quorum: the change is a command in the replicated log, carried out by every
    /// node as it commits (`metadata::quorum`).
    Quorum(Rc<ReplicatedMetadata>),
}

/// See the module documentation.
#[derive(Debug)]
pub struct Controller {
    image: RefCell<Rc<MetadataImage>>,
    backend: Backend,
    change_permit: Semaphore,
}

impl Controller {
    /// A lone node's controller over an opened store and the image replayed from it.
    pub fn new(store: MetadataStore, image: MetadataImage) -> Controller {
        Controller {
            image: RefCell::new(Rc::new(image)),
            backend: Backend::Local(RefCell::new(Some(store))),
            change_permit: Semaphore::new(1),
        }
    }

    /// A controller whose changes go through the quorum's replicated state machine.
    pub fn replicated(metadata: Rc<ReplicatedMetadata>) -> Controller {
        Controller {
            image: RefCell::new(metadata.image()),
            backend: Backend::Quorum(metadata),
            change_permit: Semaphore::new(1),
        }
    }

    /// The replicated state machine, if this node is part of a quorum.
    pub fn quorum(&self) -> Option<&Rc<ReplicatedMetadata>> {
        match &self.backend {
            Backend::Quorum(metadata) => Some(metadata),
            Backend::Local(_) => None,
        }
    }

    /// The authoritative image (under a quorum: this node's applied prefix of the log).
    pub fn image(&self) -> Rc<MetadataImage> {
        match &self.backend {
            Backend::Quorum(metadata) => metadata.image(),
            Backend::Local(_) => self.image.borrow().clone(),
        }
    }

    /// Carries out `request`. `publish` installs a committed image on every shard (shard 0's
    /// own first, then a broadcast); it is awaited while the change permit is held. Under a
    /// quorum, images are published by the state machine as entries commit, and `publish` is
    /// not used.
    pub async fn handle<F, Fut>(&self, request: ControllerRequest, publish: F) -> ControllerResponse
    where
        F: FnOnce(Rc<MetadataImage>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let request = prepare(request);
        let _permit = self
            .change_permit
            .acquire_permit(1)
            .await
            .expect("the change semaphore is never closed");
        let store = match &self.backend {
            Backend::Quorum(metadata) => return metadata.submit(request).await,
            Backend::Local(store) => store,
        };
        let mode = Mode::Lone;
        let outcome = execute(&self.image(), request, &mode);
        if outcome.records.is_empty() {
            return outcome.response;
        }
        if let Err(err) = persist(store, outcome.records.clone(), outcome.image.clone()).await {
            return outcome
                .response
                .refused(MetadataError::Storage(err.to_string()));
        }
        for (offset, record) in &outcome.records {
            info!(offset, ?record, "metadata change committed");
        }
        let after = Rc::new(outcome.image);
        *self.image.borrow_mut() = after.clone();
        publish(after).await;
        outcome.response
    }
}

/// Writes `records` on the blocking pool. The store is moved into the closure and back, so
/// the controller's executor never waits on the disk and no lock is needed.
async fn persist(
    store: &RefCell<Option<MetadataStore>>,
    records: Vec<(i64, MetadataRecord)>,
    image_after: MetadataImage,
) -> Result<(), StoreError> {
    let mut taken = store
        .borrow_mut()
        .take()
        .expect("the store is present whenever the change permit is free");
    let (taken, result) = glommio::executor()
        .spawn_blocking(move || {
            let result = taken.append(&records, &image_after);
            (taken, result)
        })
        .await;
    *store.borrow_mut() = Some(taken);
    result
}

/// Draws what a change needs at random before it is planned, so that planning is a pure
/// function of the image and the request and every quorum node plans it alike: topic ids and
/// the placement's random start.
fn prepare(mut request: ControllerRequest) -> ControllerRequest {
    match &mut request {
        ControllerRequest::CreateTopics { topics, .. } => {
            for topic in topics {
                topic.id.get_or_insert_with(Uuid::new_v4);
                if topic.placement_start.is_none() {
                    topic.placement_start = Some(random_u32());
                }
            }
        }
        ControllerRequest::CreatePartitions { start, .. } if start.is_none() => {
            *start = Some(random_u32());
        }
        _ => {}
    }
    request
}

fn random_u32() -> u32 {
    Uuid::new_v4().as_u128() as u32
}

/// Where planning runs: a lone node (every partition its own) or a quorum's state machine
/// (replicas placed over the registered brokers).
#[derive(Debug, Clone)]
pub enum Mode {
    /// A lone node.
    Lone,
    /// A controller quorum's state machine, applying the entry at `entry_index`.
    Quorum {
        /// The Raft index of the committed entry being applied.
        entry_index: u64,
        /// The proposing node's static settings the plan depends on.
        settings: PlanSettings,
    },
}

/// The static broker settings planning depends on. Every quorum node plans every change, and
/// nodes may be configured differently, so these travel with each command, taken from the
/// configuration of the node that proposed it; dynamic cluster-wide defaults and topic
/// overrides are in the image and need no such care.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSettings {
    /// `unclean.leader.election.enable` of the static configuration.
    #[serde(default)]
    pub unclean_leader_election_enable: bool,
    /// `min.insync.replicas` of the static configuration (0, from a command written before
    /// this field, counts as 1): where the eligible leader replicas start (KIP-966).
    #[serde(default)]
    pub min_insync_replicas: usize,
}

impl PlanSettings {
    /// The settings of `config`.
    pub fn of(config: &crate::config::Config) -> PlanSettings {
        PlanSettings {
            unclean_leader_election_enable: config
                .entries
                .get(UNCLEAN_KEY)
                .is_some_and(|e| parse_bool(&e.value)),
            min_insync_replicas: config
                .entries
                .get(MIN_ISR_KEY)
                .and_then(|e| e.value.trim().parse().ok())
                .unwrap_or(1),
        }
    }
}

/// Kafka's key for the ISR size acks=all needs, a topic config and a broker default.
pub const MIN_ISR_KEY: &str = "min.insync.replicas";

/// Kafka's key for unclean leader election, a topic config and a broker default.
pub const UNCLEAN_KEY: &str = "unclean.leader.election.enable";

fn parse_bool(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("true")
}

/// A planned change: the image as it will be, the records that make it so, and the answer to
/// give once they are durable.
#[derive(Debug)]
pub struct Outcome {
    /// The image after the records.
    pub image: MetadataImage,
    /// The records, each with its offset.
    pub records: Vec<(i64, MetadataRecord)>,
    /// The answer.
    pub response: ControllerResponse,
}

impl ControllerResponse {
    /// The same answer with every success replaced by `err` (the change did not happen).
    pub fn refused(self, err: MetadataError) -> ControllerResponse {
        match self {
            ControllerResponse::Results(results) => ControllerResponse::Results(
                results
                    .into_iter()
                    .map(|r| r.and(Err(err.clone())))
                    .collect(),
            ),
            ControllerResponse::ProducerIds(_) => ControllerResponse::ProducerIds(Err(err)),
            ControllerResponse::Altered(_) => ControllerResponse::Altered(Err(err)),
            ControllerResponse::AclsDeleted(_) => ControllerResponse::AclsDeleted(Err(err)),
            ControllerResponse::PartitionAltered(_) => {
                ControllerResponse::PartitionAltered(Err(err))
            }
            ControllerResponse::Elected(_) => ControllerResponse::Elected(Err(err)),
            ControllerResponse::NotController => ControllerResponse::NotController,
        }
    }
}

/// The answer to `request` when it could not be carried out at all.
pub fn refusal(request: &ControllerRequest, err: MetadataError) -> ControllerResponse {
    let items = match request {
        ControllerRequest::CreateTopics { topics, .. } => topics.len(),
        ControllerRequest::DeleteTopics { names } => names.len(),
        ControllerRequest::CreatePartitions { topics, .. } => topics.len(),
        ControllerRequest::AlterTopicConfigs { .. } => 1,
        ControllerRequest::AllocateProducerIds { .. } => {
            return ControllerResponse::ProducerIds(Err(err));
        }
        ControllerRequest::DeleteAcls { .. } => return ControllerResponse::AclsDeleted(Err(err)),
        ControllerRequest::AlterPartition { .. } => {
            return ControllerResponse::PartitionAltered(Err(err));
        }
        ControllerRequest::ElectLeaders { .. } => return ControllerResponse::Elected(Err(err)),
        ControllerRequest::AlterBrokerConfigs { .. }
        | ControllerRequest::CreateAcls { .. }
        | ControllerRequest::AlterScramCredentials { .. }
        | ControllerRequest::AlterClientQuotas { .. }
        | ControllerRequest::RegisterBroker { .. }
        | ControllerRequest::FenceBroker { .. }
        | ControllerRequest::UnfenceBroker { .. }
        | ControllerRequest::ShutdownBroker { .. } => {
            return ControllerResponse::Altered(Err(err));
        }
    };
    ControllerResponse::Results(vec![Err(err); items])
}

/// Plans `request` against `image`. Pure: the same image and request give the same outcome on
/// every node (randomness was drawn by `prepare`). Validate-only requests, refusals and
/// requests that change nothing come back with no records.
pub fn execute(image: &MetadataImage, request: ControllerRequest, mode: &Mode) -> Outcome {
    let mut plan = Plan {
        image: image.clone(),
        records: Vec::new(),
        mode: mode.clone(),
    };
    let response = plan.carry_out(request);
    Outcome {
        image: plan.image,
        records: plan.records,
        response,
    }
}

/// A change being planned: the image as it will be, and the records that make it so.
struct Plan {
    image: MetadataImage,
    records: Vec<(i64, MetadataRecord)>,
    mode: Mode,
}

impl Plan {
    fn stage(&mut self, record: MetadataRecord) {
        let offset = self.image.offset + 1;
        apply_record(&mut self.image, offset, &record);
        self.records.push((offset, record));
    }

    /// Drops what was staged (a validate-only request).
    fn discard(&mut self, before: &MetadataImage) {
        self.records.clear();
        self.image = before.clone();
    }

    fn topic(&self, name: &str) -> Result<TopicImage, MetadataError> {
        self.image
            .topic(name)
            .cloned()
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))
    }

    fn carry_out(&mut self, request: ControllerRequest) -> ControllerResponse {
        let before = self.image.clone();
        match request {
            ControllerRequest::AllocateProducerIds { count } => {
                let first = self.image.next_producer_id;
                self.stage(MetadataRecord::ProducerIdsAllocated {
                    next_producer_id: first + count.max(1),
                });
                ControllerResponse::ProducerIds(Ok(first))
            }
            ControllerRequest::AlterBrokerConfigs {
                per_node,
                ops,
                replace_all,
                validate_only,
            } => {
                if per_node && matches!(self.mode, Mode::Quorum { .. }) {
                    return ControllerResponse::Altered(Err(MetadataError::InvalidRequest(
                        "per-broker dynamic configs are not served in a cluster yet; set the \
                         cluster-wide default (the BROKER resource named \"\")"
                            .to_string(),
                    )));
                }
                let current = if per_node {
                    &self.image.node_configs
                } else {
                    &self.image.cluster_configs
                };
                let mut configs = if replace_all {
                    BTreeMap::new()
                } else {
                    current.clone()
                };
                if let Err(err) = apply_config_ops(ConfigScope::Broker, &mut configs, &ops) {
                    return ControllerResponse::Altered(Err(err));
                }
                if !validate_only && &configs != current {
                    self.stage(MetadataRecord::BrokerConfigsAltered { per_node, configs });
                    // A default that now allows unclean election elects where it can (KIP-704).
                    self.elect_leaders(None);
                }
                ControllerResponse::Altered(Ok(()))
            }
            ControllerRequest::CreateAcls { acls } => {
                for acl in acls {
                    if !self.image.acls.contains(&acl) {
                        if self.image.acls.len() >= limits::ACLS_MAX {
                            self.discard(&before);
                            return ControllerResponse::Altered(Err(MetadataError::LimitExceeded(
                                format!(
                                    "the cluster holds the most ACLs it may ({})",
                                    limits::ACLS_MAX
                                ),
                            )));
                        }
                        self.stage(MetadataRecord::AclCreated { acl });
                    }
                }
                ControllerResponse::Altered(Ok(()))
            }
            ControllerRequest::AlterScramCredentials {
                upsertions,
                deletions,
            } => {
                for (user, mechanism) in deletions {
                    if self
                        .image
                        .scram
                        .get(&user)
                        .is_some_and(|c| c.contains_key(&mechanism))
                    {
                        self.stage(MetadataRecord::ScramCredentialDeleted { user, mechanism });
                    }
                }
                for (user, mechanism, credential) in upsertions {
                    let users = self.image.scram.len();
                    if !self.image.scram.contains_key(&user) && users >= limits::SCRAM_USERS_MAX {
                        self.discard(&before);
                        return ControllerResponse::Altered(Err(MetadataError::LimitExceeded(
                            format!(
                                "the cluster holds SCRAM credentials of the most users it may ({})",
                                limits::SCRAM_USERS_MAX
                            ),
                        )));
                    }
                    self.stage(MetadataRecord::ScramCredentialUpserted {
                        user,
                        mechanism,
                        credential,
                    });
                }
                ControllerResponse::Altered(Ok(()))
            }
            ControllerRequest::AlterClientQuotas {
                alterations,
                validate_only,
            } => {
                for (entity, ops) in alterations {
                    for (key, value) in ops {
                        let current = self.image.quotas.get(&entity).and_then(|v| v.get(&key));
                        if current == value.as_ref() {
                            continue;
                        }
                        if self.image.quotas.get(&entity).is_none()
                            && self.image.quotas.len() >= quota::ENTITIES_MAX
                        {
                            self.discard(&before);
                            return ControllerResponse::Altered(Err(MetadataError::LimitExceeded(
                                format!(
                                    "the cluster holds quotas of the most entities it may ({})",
                                    quota::ENTITIES_MAX
                                ),
                            )));
                        }
                        self.stage(MetadataRecord::ClientQuotaAltered {
                            entity: entity.clone(),
                            key,
                            value,
                        });
                    }
                }
                if validate_only {
                    self.discard(&before);
                }
                ControllerResponse::Altered(Ok(()))
            }
            ControllerRequest::DeleteAcls { filters } => {
                let mut deleted = Vec::with_capacity(filters.len());
                for filter in &filters {
                    let matching = self.image.acls.matching(filter);
                    for acl in &matching {
                        self.stage(MetadataRecord::AclDeleted { acl: acl.clone() });
                    }
                    deleted.push(matching);
                }
                ControllerResponse::AclsDeleted(Ok(deleted))
            }
            ControllerRequest::RegisterBroker {
                id,
                incarnation,
                host,
                port,
                rack,
            } => {
                let previous = self.image.brokers.get(&id).map(|b| b.epoch);
                let epoch = previous.map_or(1, |e| e + 1);
                let registered_index = match self.mode {
                    Mode::Quorum { entry_index, .. } => entry_index,
                    Mode::Lone => 0,
                };
                self.stage(MetadataRecord::BrokerRegistered {
                    broker: BrokerImage {
                        id,
                        epoch,
                        incarnation,
                        host,
                        port,
                        rack,
                        fenced: true,
                        shutting_down: false,
                        registered_index,
                    },
                });
                // A broker registering again was restarted: if it did not shut down cleanly
                // its session may not have run out yet, and the image still has it leading and
                // in sync, though its log may have lost what it had not synced or (a replaced
                // disk) everything. As Kafka's controller handles an unclean shutdown
                // (KIP-966), it leaves the ISRs and the eligible leader replicas (but where it
                // is the only member of both) and its leaderships move to live in-sync or
                // eligible replicas now, in the same change; it rejoins the ISRs by fetching,
                // like any follower.
                if previous.is_some() {
                    self.elect_leaders(Some(Departure::UncleanRestart(id)));
                }
                ControllerResponse::Altered(Ok(()))
            }
            ControllerRequest::FenceBroker { id, epoch } => {
                if self
                    .image
                    .brokers
                    .get(&id)
                    .is_some_and(|b| b.epoch == epoch && !b.fenced)
                {
                    self.stage(MetadataRecord::BrokerFenced { id, epoch });
                    self.elect_leaders(Some(Departure::Fenced(id)));
                }
                ControllerResponse::Altered(Ok(()))
            }
            ControllerRequest::ShutdownBroker { id, epoch } => {
                let Some(broker) = self.image.brokers.get(&id) else {
                    return ControllerResponse::Altered(Err(MetadataError::InvalidRequest(
                        format!("broker {id} is not registered"),
                    )));
                };
                if broker.epoch != epoch {
                    return ControllerResponse::Altered(Err(MetadataError::StaleBrokerEpoch(
                        format!(
                            "broker {id} shuts down registration {epoch}, but its registration \
                             is {}",
                            broker.epoch
                        ),
                    )));
                }
                // A fenced broker leads nothing and is in no ISR it could leave.
                if !broker.fenced {
                    if !broker.shutting_down {
                        self.stage(MetadataRecord::BrokerShuttingDown { id, epoch });
                    }
                    self.elect_leaders(Some(Departure::ShuttingDown(id)));
                }
                ControllerResponse::Altered(Ok(()))
            }
            ControllerRequest::UnfenceBroker {
                id,
                epoch,
                incarnation,
            } => {
                if self
                    .image
                    .brokers
                    .get(&id)
                    .is_some_and(|b| b.epoch == epoch && b.incarnation == incarnation && b.fenced)
                {
                    self.stage(MetadataRecord::BrokerUnfenced { id, epoch });
                    self.elect_leaders(None);
                }
                ControllerResponse::Altered(Ok(()))
            }
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => {
                let mut seen: Vec<String> = Vec::new();
                let results = topics
                    .into_iter()
                    .map(|topic| {
                        if seen.contains(&topic.name) {
                            return Err(MetadataError::DuplicateTopic(topic.name));
                        }
                        seen.push(topic.name.clone());
                        let created = plan_create(&self.image, topic, &self.mode)?;
                        self.stage(MetadataRecord::TopicCreated {
                            name: created.name.clone(),
                            id: created.id,
                            partitions: created.partitions,
                            configs: created.configs.clone(),
                            placement: created.placement.clone(),
                        });
                        Ok(created)
                    })
                    .collect();
                if validate_only {
                    self.discard(&before);
                }
                ControllerResponse::Results(results)
            }
            ControllerRequest::DeleteTopics { names } => {
                let results = names
                    .into_iter()
                    .map(|name| {
                        let topic = self.topic(&name)?;
                        self.stage(MetadataRecord::TopicDeleted {
                            name: topic.name.clone(),
                            id: topic.id,
                        });
                        Ok(topic)
                    })
                    .collect();
                ControllerResponse::Results(results)
            }
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
                start,
            } => {
                let mut seen: Vec<String> = Vec::new();
                let results = topics
                    .into_iter()
                    .map(|(name, count)| {
                        if seen.contains(&name) {
                            return Err(MetadataError::DuplicateTopic(name));
                        }
                        seen.push(name.clone());
                        let topic = self.topic(&name)?;
                        check_partition_growth(&self.image, &topic, count)?;
                        let placement = match self.mode {
                            Mode::Lone => Vec::new(),
                            Mode::Quorum { .. } => place_partitions(
                                &self.image,
                                topic.partitions,
                                count - topic.partitions,
                                topic.replication_factor(),
                                start.unwrap_or(0),
                            )?,
                        };
                        self.stage(MetadataRecord::PartitionsCreated {
                            name: topic.name.clone(),
                            id: topic.id,
                            partitions: count,
                            placement,
                        });
                        self.topic(&name)
                    })
                    .collect();
                if validate_only {
                    self.discard(&before);
                }
                ControllerResponse::Results(results)
            }
            ControllerRequest::AlterPartition {
                topic,
                topic_id,
                partition,
                leader_id,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => ControllerResponse::PartitionAltered(self.alter_partition(
                &topic,
                topic_id,
                partition,
                leader_id,
                (leader_epoch, partition_epoch),
                new_isr,
            )),
            ControllerRequest::ElectLeaders {
                unclean,
                partitions,
            } => ControllerResponse::Elected(Ok(self.elect_requested(unclean, partitions))),
            ControllerRequest::AlterTopicConfigs {
                name,
                ops,
                replace_all,
                validate_only,
            } => {
                let result = self.topic(&name).and_then(|topic| {
                    let mut configs = if replace_all {
                        BTreeMap::new()
                    } else {
                        topic.configs.clone()
                    };
                    apply_config_ops(ConfigScope::Topic, &mut configs, &ops)?;
                    if configs != topic.configs {
                        self.stage(MetadataRecord::TopicConfigsAltered {
                            name: topic.name.clone(),
                            id: topic.id,
                            configs,
                        });
                        // Unclean election now allowed: leaderless partitions get a leader.
                        self.elect_leaders(None);
                    }
                    self.topic(&name)
                });
                if validate_only {
                    self.discard(&before);
                }
                ControllerResponse::Results(vec![result])
            }
        }
    }

    /// AlterPartition: the checks of Kafka's `validateAlterPartitionData`, in its order and
    /// with its codes, then the new ISR with the partition epoch bumped. A new ISR equal to the
    /// current one changes nothing and answers the current state.
    fn alter_partition(
        &mut self,
        name: &str,
        topic_id: Uuid,
        partition: i32,
        leader_id: i32,
        (leader_epoch, partition_epoch): (i32, i32),
        new_isr: Vec<i32>,
    ) -> Result<PartitionState, MetadataError> {
        if matches!(self.mode, Mode::Lone) {
            return Err(MetadataError::InvalidRequest(
                "a lone node's partitions have no replicas: there is no ISR to alter".to_string(),
            ));
        }
        let topic = self.topic(name)?;
        if topic.id != topic_id {
            return Err(MetadataError::UnknownTopicId(topic_id));
        }
        let state = topic
            .partition_state(partition)
            .cloned()
            .ok_or_else(|| MetadataError::UnknownTopic(format!("{name}-{partition}")))?;
        let at = format!("{name}-{partition}");
        if leader_epoch > state.leader_epoch || partition_epoch > state.partition_epoch {
            return Err(MetadataError::StaleController(format!(
                "{at}: the request's epochs ({leader_epoch}, {partition_epoch}) are newer than \
                 the controller's ({}, {})",
                state.leader_epoch, state.partition_epoch
            )));
        }
        if leader_epoch < state.leader_epoch {
            return Err(MetadataError::FencedLeaderEpoch(format!(
                "{at}: leader epoch {leader_epoch} is older than the current {}",
                state.leader_epoch
            )));
        }
        if leader_id != state.leader {
            return Err(MetadataError::InvalidRequest(format!(
                "{at}: broker {leader_id} is not the leader (the leader is {})",
                state.leader
            )));
        }
        if partition_epoch < state.partition_epoch {
            return Err(MetadataError::InvalidUpdateVersion(format!(
                "{at}: partition epoch {partition_epoch} is older than the current {}",
                state.partition_epoch
            )));
        }
        let mut unique = new_isr.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != new_isr.len() || !new_isr.iter().all(|id| state.replicas.contains(id)) {
            return Err(MetadataError::InvalidRequest(format!(
                "{at}: the new ISR {new_isr:?} is not a set of the replicas {:?}",
                state.replicas
            )));
        }
        if !new_isr.contains(&state.leader) {
            return Err(MetadataError::InvalidRequest(format!(
                "{at}: the new ISR {new_isr:?} leaves out the leader {}",
                state.leader
            )));
        }
        for added in new_isr.iter().filter(|id| !state.isr.contains(id)) {
            let why = match self.image.brokers.get(added) {
                None => Some("not registered"),
                Some(b) if b.shutting_down => Some("shutting down"),
                Some(b) if b.fenced => Some("fenced"),
                Some(_) => None,
            };
            if let Some(why) = why {
                return Err(MetadataError::IneligibleReplica(format!(
                    "{at}: replica {added} cannot join the ISR: {why}"
                )));
            }
        }
        if new_isr == state.isr {
            return Ok(state);
        }
        let mut next = state;
        let (elr, last_known_elr) =
            eligible_leaders(&next, &new_isr, None, self.min_insync(&topic));
        next.isr = new_isr;
        next.elr = elr;
        next.last_known_elr = last_known_elr;
        next.partition_epoch += 1;
        self.stage(MetadataRecord::PartitionChanged {
            name: topic.name.clone(),
            id: topic.id,
            partition,
            state: next.clone(),
        });
        Ok(next)
    }

    /// Kafka's partition change rules (its `PartitionChangeBuilder` with eligible leader
    /// replicas, KIP-966) after a broker event or a config change, for every partition.
    ///
    /// - The ISR wanted: a broker fenced or shutting down leaves every ISR it is in, the last
    ///   member's place included; a broker registering again after an unclean shutdown leaves
    ///   every ISR and ELR, unless it is the only member of both (then it keeps its place, as
    ///   Kafka's last-known-leader rule would elect it: the partition has no other replica
    ///   known to hold its records).
    /// - The ELR (`eligible_leaders`): at or above `min.insync.replicas` it is empty; below,
    ///   replicas leaving the ISR join it (but the one that restarted uncleanly).
    /// - The leader: the current one if it may still lead; else the first replica, in
    ///   replica order, that is live (not fenced, not shutting down) and in the ISR, or in the
    ///   ELR when the ISR is empty (it then becomes the ISR alone and leaves the ELR). With
    ///   none, a leader that is still live keeps the partition as it was (a broker shutting
    ///   down that is the only in-sync replica); else unclean election picks the first live
    ///   replica where the topic allows it (the ISR becomes that replica, the ELR is cleared);
    ///   else the partition has no leader.
    ///
    /// A new leader bumps the leader epoch; any change bumps the partition epoch.
    fn elect_leaders(&mut self, departure: Option<Departure>) {
        let mut changes = Vec::new();
        for topic in self.image.topics.values() {
            let unclean = self.unclean_allowed(topic);
            let min_isr = self.min_insync(topic);
            for (partition, state) in topic.placement.iter().enumerate() {
                let mut target_isr = state.isr.clone();
                let mut restarted = None;
                match departure {
                    Some(Departure::Fenced(id) | Departure::ShuttingDown(id)) => {
                        target_isr.retain(|r| *r != id);
                    }
                    Some(Departure::UncleanRestart(id)) => {
                        let only = state.isr.iter().chain(&state.elr).all(|r| *r == id);
                        if !only {
                            target_isr.retain(|r| *r != id);
                            restarted = Some(id);
                        }
                    }
                    None => {}
                }
                let (elr, last_known_elr) =
                    eligible_leaders(state, &target_isr, restarted, min_isr);
                let mut next = state.clone();
                next.isr = target_isr;
                next.elr = elr;
                next.last_known_elr = last_known_elr;
                if !self.may_lead(&next, next.leader) {
                    let clean = next
                        .replicas
                        .iter()
                        .copied()
                        .find(|id| self.may_lead(&next, *id));
                    match clean {
                        Some(leader) => {
                            if !next.isr.contains(&leader) {
                                info!(
                                    topic = %topic.name,
                                    partition,
                                    leader,
                                    elr = ?next.elr,
                                    "leader elected from the eligible leader replicas (KIP-966): \
                                     the ISR is empty"
                                );
                            }
                            take_leadership(&mut next, leader);
                        }
                        // Still live (shutting down) and no one else can lead: it keeps the
                        // partition, and its place in the ISR.
                        None if self.image.is_live(state.leader) => next = state.clone(),
                        None => {
                            let live = next.replicas.iter().copied().find(|id| {
                                self.image
                                    .brokers
                                    .get(id)
                                    .is_some_and(|b| !b.fenced && !b.shutting_down)
                            });
                            match live {
                                Some(leader) if unclean => {
                                    warn!(
                                        topic = %topic.name,
                                        partition,
                                        leader,
                                        isr = ?state.isr,
                                        elr = ?state.elr,
                                        "unclean leader election: no in-sync or eligible \
                                         replica is live; records only the old ISR held may be \
                                         lost"
                                    );
                                    elect_uncleanly(&mut next, leader);
                                }
                                _ => next.leader = -1,
                            }
                        }
                    }
                }
                if next.leader != state.leader {
                    next.leader_epoch += 1;
                }
                if next != *state {
                    next.partition_epoch += 1;
                    changes.push((topic.name.clone(), topic.id, partition as i32, next));
                }
            }
        }
        for (name, id, partition, state) in changes {
            self.stage(MetadataRecord::PartitionChanged {
                name,
                id,
                partition,
                state,
            });
        }
    }

    /// ElectLeaders: Kafka's `ReplicationControlManager.electLeaders`, partition by partition.
    fn elect_requested(
        &mut self,
        unclean: bool,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    ) -> ElectionResults {
        let Some(partitions) = partitions else {
            let every: Vec<(String, i32)> = self
                .image
                .topics
                .values()
                .flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p)))
                .collect();
            let mut results: ElectionResults = Vec::new();
            for (name, partition) in every {
                let outcome = self.elect_one(unclean, &name, partition);
                if outcome == Err(MetadataError::ElectionNotNeeded) {
                    continue;
                }
                match results.last_mut() {
                    Some((last, items)) if *last == name => items.push((partition, outcome)),
                    _ => results.push((name, vec![(partition, outcome)])),
                }
            }
            return results;
        };
        partitions
            .into_iter()
            .map(|(name, ids)| {
                let outcomes = ids
                    .into_iter()
                    .map(|p| (p, self.elect_one(unclean, &name, p)))
                    .collect();
                (name, outcomes)
            })
            .collect()
    }

    /// One partition's election (Kafka's `electLeader`). A lone node's partitions are led by
    /// their only replica, which is also the preferred one: no election is ever needed.
    fn elect_one(
        &mut self,
        unclean: bool,
        name: &str,
        partition: i32,
    ) -> Result<(), MetadataError> {
        let topic = self
            .image
            .topic(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        if partition < 0 || partition >= topic.partitions {
            return Err(MetadataError::UnknownTopic(format!("{name}-{partition}")));
        }
        let topic_id = topic.id;
        let Some(state) = topic.partition_state(partition).cloned() else {
            return Err(MetadataError::ElectionNotNeeded);
        };
        let at = format!("{name}-{partition}");
        let preferred = state.replicas.first().copied().unwrap_or(-1);
        let mut next = state.clone();
        if unclean {
            if state.leader >= 0 {
                return Err(MetadataError::ElectionNotNeeded);
            }
            let clean = state
                .replicas
                .iter()
                .copied()
                .find(|id| self.may_lead(&state, *id));
            let live = state.replicas.iter().copied().find(|id| {
                self.image
                    .brokers
                    .get(id)
                    .is_some_and(|b| !b.fenced && !b.shutting_down)
            });
            match (clean, live) {
                (Some(leader), _) => take_leadership(&mut next, leader),
                (None, Some(leader)) => {
                    warn!(
                        topic = %name,
                        partition,
                        leader,
                        isr = ?state.isr,
                        "unclean leader election asked for: no in-sync replica is live; \
                         records only the old ISR held may be lost"
                    );
                    elect_uncleanly(&mut next, leader);
                }
                (None, None) => {
                    return Err(MetadataError::EligibleLeadersNotAvailable(format!(
                        "{at}: none of the replicas {:?} is live",
                        state.replicas
                    )));
                }
            }
        } else {
            if state.leader == preferred {
                return Err(MetadataError::ElectionNotNeeded);
            }
            if !self.may_lead(&state, preferred) {
                return Err(MetadataError::PreferredLeaderNotAvailable(format!(
                    "{at}: the preferred leader {preferred} is not live and in sync (ISR {:?}, \
                     ELR {:?})",
                    state.isr, state.elr
                )));
            }
            take_leadership(&mut next, preferred);
        }
        next.leader_epoch += 1;
        next.partition_epoch += 1;
        self.stage(MetadataRecord::PartitionChanged {
            name: name.to_string(),
            id: topic_id,
            partition,
            state: next,
        });
        Ok(())
    }

    /// Whether `id` may lead a partition in `state` (Kafka's `isValidNewLeader`): registered,
    /// not fenced, not shutting down, and in the ISR, or in the ELR when the ISR is empty.
    fn may_lead(&self, state: &PartitionState, id: i32) -> bool {
        (state.isr.contains(&id) || (state.isr.is_empty() && state.elr.contains(&id)))
            && self
                .image
                .brokers
                .get(&id)
                .is_some_and(|b| !b.fenced && !b.shutting_down)
    }

    /// `min.insync.replicas` of `topic`: its override, else the dynamic cluster-wide default,
    /// else the proposing node's static setting; at least 1.
    fn min_insync(&self, topic: &TopicImage) -> usize {
        let fallback = match &self.mode {
            Mode::Quorum { settings, .. } => settings.min_insync_replicas,
            Mode::Lone => 1,
        };
        topic
            .configs
            .get(MIN_ISR_KEY)
            .or_else(|| self.image.cluster_configs.get(MIN_ISR_KEY))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(fallback)
            .max(1)
    }

    /// Whether `topic` allows unclean leader election (`unclean.leader.election.enable`): its
    /// override, else the dynamic cluster-wide default, else the proposing node's static
    /// setting. Never on a lone node (it has no other replica).
    fn unclean_allowed(&self, topic: &TopicImage) -> bool {
        let Mode::Quorum { settings, .. } = &self.mode else {
            return false;
        };
        topic
            .configs
            .get(UNCLEAN_KEY)
            .or_else(|| self.image.cluster_configs.get(UNCLEAN_KEY))
            .map_or(settings.unclean_leader_election_enable, |v| parse_bool(v))
    }
}

/// A broker event that changes ISRs and leaderships.
#[derive(Debug, Clone, Copy)]
enum Departure {
    /// Its session ran out.
    Fenced(i32),
    /// It began a controlled shutdown.
    ShuttingDown(i32),
    /// It registered again: it restarted, and (no clean-shutdown marker is kept) its log may
    /// have lost what it held, so it may not lead from the ISR or the ELR until it has caught
    /// up again (Kafka's unclean shutdown handling, KIP-966).
    UncleanRestart(i32),
}

/// The ELR and LastKnownElr of `state` once its ISR is `target_isr` (Kafka's
/// `maybePopulateTargetElr`): both empty while the ISR holds `min_isr` members; below, the
/// ELR is the old ISR and ELR less the new ISR and less `restarted` (a broker that registered
/// after an unclean shutdown), and the LastKnownElr gathers the members of either that are in
/// none of these now. In replica order.
fn eligible_leaders(
    state: &PartitionState,
    target_isr: &[i32],
    restarted: Option<i32>,
    min_isr: usize,
) -> (Vec<i32>, Vec<i32>) {
    if target_isr.len() >= min_isr {
        return (Vec::new(), Vec::new());
    }
    let candidate = |id: &i32| state.isr.contains(id) || state.elr.contains(id);
    let elr: Vec<i32> = state
        .replicas
        .iter()
        .copied()
        .filter(|id| candidate(id) && !target_isr.contains(id) && Some(*id) != restarted)
        .collect();
    let last_known_elr = state
        .replicas
        .iter()
        .copied()
        .filter(|id| candidate(id) || state.last_known_elr.contains(id))
        .filter(|id| !target_isr.contains(id) && !elr.contains(id))
        .collect();
    (elr, last_known_elr)
}

/// `leader` takes over `state` in a clean election; one elected from the ELR (the ISR is
/// empty) becomes the ISR alone and leaves the ELR.
fn take_leadership(state: &mut PartitionState, leader: i32) {
    if !state.isr.contains(&leader) {
        state.isr = vec![leader];
        state.elr.retain(|id| *id != leader);
    }
    state.leader = leader;
}

/// `leader`, in no ISR or ELR, takes over `state`: it is the ISR alone, and no other replica
/// is known to hold what it holds (the ELR fields are cleared, as Kafka's unclean election).
fn elect_uncleanly(state: &mut PartitionState, leader: i32) {
    state.leader = leader;
    state.isr = vec![leader];
    state.elr.clear();
    state.last_known_elr.clear();
}

/// Places `count` partitions from `first` over the image's live brokers.
fn place_partitions(
    image: &MetadataImage,
    first: i32,
    count: i32,
    replication_factor: i16,
    start: u32,
) -> Result<Vec<PartitionState>, MetadataError> {
    let candidates: Vec<Candidate> = image
        .live_brokers()
        .filter(|b| !b.shutting_down)
        .map(|b| Candidate {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect();
    let placed = placement::place(&candidates, first, count, replication_factor, start)
        .map_err(|err| MetadataError::InvalidReplicationFactor(err.to_string()))?;
    Ok(placed
        .into_iter()
        .map(PartitionState::led_by_first)
        .collect())
}

/// Applies config operations to a topic's overrides, checking every resulting value.
/// Which settings a set of config operations applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfigScope {
    /// A topic's overrides.
    Topic,
    /// Dynamic broker settings.
    Broker,
}

impl ConfigScope {
    /// The kind of value `key` takes, or why it cannot be set in this scope.
    fn kind(self, key: &str) -> Result<ValueKind, MetadataError> {
        match self {
            ConfigScope::Topic => topic::topic_config_def(key)
                .map(|def| def.kind())
                .ok_or_else(|| {
                    MetadataError::InvalidConfig(
                        topic::TopicConfigError::UnknownKey(key.to_string()).to_string(),
                    )
                }),
            ConfigScope::Broker => {
                let def = crate::config::config_def(key).ok_or_else(|| {
                    MetadataError::InvalidConfig(format!("Unknown broker config: {key}"))
                })?;
                if !topic::is_dynamic_broker_config(key) {
                    return Err(MetadataError::InvalidConfig(format!(
                        "Cannot update these configs dynamically: [{key}]; set it in the config \
                         file or with --set and restart the broker"
                    )));
                }
                Ok(def.kind)
            }
        }
    }

    fn check(self, key: &str, value: &str) -> Result<(), MetadataError> {
        self.kind(key)?.check(value).map_err(|reason| {
            MetadataError::InvalidConfig(format!(
                "Invalid value {value} for configuration {key}: {reason}"
            ))
        })
    }

    /// Where an append to list-valued `key` starts when it is not set here.
    fn list_default(self, key: &str) -> String {
        let broker_key = match self {
            ConfigScope::Topic => topic::topic_config_def(key).map_or(key, |d| d.broker_synonym),
            ConfigScope::Broker => key,
        };
        crate::config::config_def(broker_key)
            .map(|d| d.default.to_string())
            .unwrap_or_default()
    }
}

/// Applies config operations to a set of settings, checking every resulting value.
fn apply_config_ops(
    scope: ConfigScope,
    configs: &mut BTreeMap<String, String>,
    ops: &[ConfigOp],
) -> Result<(), MetadataError> {
    for op in ops {
        match op {
            ConfigOp::Set(key, value) => {
                scope.check(key, value)?;
                configs.insert(key.clone(), value.trim().to_string());
            }
            ConfigOp::Delete(key) => {
                scope.kind(key)?;
                configs.remove(key);
            }
            ConfigOp::Append(key, value) | ConfigOp::Subtract(key, value) => {
                if !matches!(scope.kind(key)?, ValueKind::List(_)) {
                    return Err(MetadataError::InvalidConfig(format!(
                        "Config value append/subtract is not allowed for config key {key} \
                         that is not a list"
                    )));
                }
                let current = configs
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| scope.list_default(key));
                let mut items: Vec<String> = current
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let present = items.iter().any(|i| i == item);
                    if matches!(op, ConfigOp::Append(..)) && !present {
                        items.push(item.to_string());
                    } else if matches!(op, ConfigOp::Subtract(..)) {
                        items.retain(|i| i != item);
                    }
                }
                let joined = items.join(",");
                scope.check(key, &joined)?;
                configs.insert(key.clone(), joined);
            }
        }
    }
    Ok(())
}

fn check_partition_growth(
    image: &MetadataImage,
    topic: &TopicImage,
    count: i32,
) -> Result<(), MetadataError> {
    if count < topic.partitions {
        return Err(MetadataError::InvalidPartitions(format!(
            "Topic currently has {} partitions, which is higher than the requested {count}.",
            topic.partitions
        )));
    }
    if count == topic.partitions {
        return Err(MetadataError::InvalidPartitions(format!(
            "Topic already has {} partitions.",
            topic.partitions
        )));
    }
    check_partition_count(image, count - topic.partitions, count)
}

fn check_partition_count(
    image: &MetadataImage,
    added: i32,
    total: i32,
) -> Result<(), MetadataError> {
    if total > limits::TOPIC_PARTITIONS_MAX {
        return Err(MetadataError::InvalidPartitions(format!(
            "Number of partitions {total} is larger than the maximum {}.",
            limits::TOPIC_PARTITIONS_MAX
        )));
    }
    let broker_total = image.partition_count() + added as usize;
    if broker_total > limits::BROKER_PARTITIONS_MAX {
        return Err(MetadataError::InvalidPartitions(format!(
            "The broker would hold {broker_total} partitions, more than its maximum {}.",
            limits::BROKER_PARTITIONS_MAX
        )));
    }
    Ok(())
}

fn plan_create(
    image: &MetadataImage,
    topic: NewTopic,
    mode: &Mode,
) -> Result<TopicImage, MetadataError> {
    validate_topic_name(&topic.name).map_err(MetadataError::InvalidTopicName)?;
    if image.topic(&topic.name).is_some() {
        return Err(MetadataError::TopicExists(topic.name));
    }
    if topic.partitions < 1 {
        return Err(MetadataError::InvalidPartitions(
            "Number of partitions must be larger than 0.".to_string(),
        ));
    }
    check_partition_count(image, topic.partitions, topic.partitions)?;
    topic::check_topic_configs(&topic.configs)
        .map_err(|err| MetadataError::InvalidConfig(err.to_string()))?;
    let placement = match mode {
        Mode::Lone => Vec::new(),
        Mode::Quorum { .. } if topic.assignments.is_empty() => place_partitions(
            image,
            0,
            topic.partitions,
            topic.replication_factor.max(1),
            topic.placement_start.unwrap_or(0),
        )?,
        Mode::Quorum { .. } => check_assignment(image, &topic)?,
    };
    Ok(TopicImage {
        name: topic.name,
        id: topic.id.unwrap_or_else(Uuid::new_v4),
        partitions: topic.partitions,
        configs: topic.configs,
        placement,
    })
}

/// A manual assignment under a quorum: one list per partition, each of distinct registered
/// brokers, all of one length (Kafka's rules).
fn check_assignment(
    image: &MetadataImage,
    topic: &NewTopic,
) -> Result<Vec<PartitionState>, MetadataError> {
    let bad = |reason: String| Err(MetadataError::InvalidReplicaAssignment(reason));
    if topic.assignments.len() != usize::try_from(topic.partitions).unwrap_or(0) {
        return bad(format!(
            "{} partitions with an assignment of {} partitions",
            topic.partitions,
            topic.assignments.len()
        ));
    }
    let width = topic.assignments[0].len();
    for (partition, replicas) in topic.assignments.iter().enumerate() {
        if replicas.is_empty() || replicas.len() != width {
            return bad(format!(
                "All partitions should have the same number of replicas; partition {partition} \
                 has {}",
                replicas.len()
            ));
        }
        let mut unique = replicas.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != replicas.len() {
            return bad(format!(
                "Duplicate brokers in the assignment of partition {partition}"
            ));
        }
        if let Some(unknown) = replicas.iter().find(|id| !image.brokers.contains_key(id)) {
            return bad(format!(
                "Unknown broker {unknown} in the assignment of partition {partition}"
            ));
        }
    }
    Ok(topic
        .assignments
        .iter()
        .cloned()
        .map(PartitionState::led_by_first)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC_ID: Uuid = Uuid::from_u128(42);

    fn broker(id: i32, fenced: bool) -> BrokerImage {
        BrokerImage {
            id,
            epoch: 1,
            incarnation: Uuid::from_u128(id as u128),
            registered_index: 1,
            host: "127.0.0.1".to_string(),
            port: 9000 + id as u16,
            rack: None,
            fenced,
            shutting_down: false,
        }
    }

    fn state(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 5,
            elr: Vec::new(),
            last_known_elr: Vec::new(),
        }
    }

    /// Brokers 1..=4 (4 fenced); topic "t" with the given partitions.
    fn image_with(placement: Vec<PartitionState>) -> MetadataImage {
        let mut image = MetadataImage::empty();
        for id in 1..=4 {
            image.brokers.insert(id, broker(id, id == 4));
        }
        image.topics.insert(
            "t".to_string(),
            TopicImage {
                name: "t".to_string(),
                id: TOPIC_ID,
                partitions: placement.len() as i32,
                configs: BTreeMap::new(),
                placement,
            },
        );
        image
    }

    fn quorum() -> Mode {
        Mode::Quorum {
            entry_index: 9,
            settings: PlanSettings::default(),
        }
    }

    fn alter(leader: i32, epochs: (i32, i32), isr: &[i32]) -> ControllerRequest {
        ControllerRequest::AlterPartition {
            topic: "t".to_string(),
            topic_id: TOPIC_ID,
            partition: 0,
            leader_id: leader,
            leader_epoch: epochs.0,
            partition_epoch: epochs.1,
            new_isr: isr.to_vec(),
        }
    }

    fn altered(outcome: &Outcome) -> Result<PartitionState, MetadataError> {
        match &outcome.response {
            ControllerResponse::PartitionAltered(result) => result.clone(),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    fn refused(image: &MetadataImage, request: ControllerRequest) -> MetadataError {
        let outcome = execute(image, request, &quorum());
        assert!(outcome.records.is_empty(), "a refusal writes nothing");
        altered(&outcome).expect_err("refused")
    }

    #[test]
    fn client_quotas_are_set_removed_and_validated_only() {
        use crate::quota::{QuotaEntity, QuotaKey};
        let alice = QuotaEntity::user(Some("alice"));
        let set = ControllerRequest::AlterClientQuotas {
            alterations: vec![(
                alice.clone(),
                vec![
                    (QuotaKey::ProducerByteRate, Some(1000)),
                    (QuotaKey::ConsumerByteRate, Some(2000)),
                ],
            )],
            validate_only: true,
        };
        let outcome = execute(&MetadataImage::empty(), set.clone(), &Mode::Lone);
        assert!(matches!(
            outcome.response,
            ControllerResponse::Altered(Ok(()))
        ));
        assert!(outcome.records.is_empty(), "validate_only writes nothing");
        assert!(outcome.image.quotas.is_empty());
        let ControllerRequest::AlterClientQuotas { alterations, .. } = set else {
            unreachable!()
        };
        let set = ControllerRequest::AlterClientQuotas {
            alterations,
            validate_only: false,
        };
        let outcome = execute(&MetadataImage::empty(), set.clone(), &Mode::Lone);
        assert_eq!(outcome.records.len(), 2);
        assert_eq!(
            outcome
                .image
                .quotas
                .resolve("alice", "c", QuotaKey::ConsumerByteRate),
            Some((alice.clone(), 2000))
        );
        // The same values again change nothing; a removal of one key leaves the other.
        let again = execute(&outcome.image, set, &Mode::Lone);
        assert!(again.records.is_empty());
        let remove = ControllerRequest::AlterClientQuotas {
            alterations: vec![(alice.clone(), vec![(QuotaKey::ProducerByteRate, None)])],
            validate_only: false,
        };
        let removed = execute(&outcome.image, remove, &Mode::Lone);
        assert_eq!(removed.records.len(), 1);
        let values = removed.image.quotas.get(&alice).unwrap();
        assert_eq!(values.get(&QuotaKey::ProducerByteRate), None);
        assert_eq!(values.get(&QuotaKey::ConsumerByteRate), Some(&2000));
    }

    #[test]
    fn alter_partition_shrinks_and_expands_the_isr() {
        let image = image_with(vec![state(&[1, 2, 3], &[1, 2, 3], 1)]);
        let outcome = execute(&image, alter(1, (3, 5), &[1, 3]), &quorum());
        let after = altered(&outcome).unwrap();
        assert_eq!(after.isr, vec![1, 3]);
        assert_eq!(
            (after.leader, after.leader_epoch, after.partition_epoch),
            (1, 3, 6)
        );
        assert_eq!(outcome.records.len(), 1);
        assert_eq!(
            outcome.image.topic("t").unwrap().partition_state(0),
            Some(&after)
        );
        // Broker 2 catches up and joins again, against the new partition epoch.
        let outcome = execute(&outcome.image, alter(1, (3, 6), &[1, 3, 2]), &quorum());
        let after = altered(&outcome).unwrap();
        assert_eq!(
            (after.isr.clone(), after.partition_epoch),
            (vec![1, 3, 2], 7)
        );
    }

    #[test]
    fn alter_partition_to_the_same_isr_writes_nothing() {
        let image = image_with(vec![state(&[1, 2, 3], &[1, 2], 1)]);
        let outcome = execute(&image, alter(1, (3, 5), &[1, 2]), &quorum());
        assert!(outcome.records.is_empty());
        assert_eq!(altered(&outcome).unwrap(), state(&[1, 2, 3], &[1, 2], 1));
    }

    #[test]
    fn alter_partition_checks_in_kafkas_order() {
        let image = image_with(vec![state(&[1, 2, 3, 4], &[1, 2], 1)]);
        let mut unknown = alter(1, (3, 5), &[1]);
        if let ControllerRequest::AlterPartition { topic, .. } = &mut unknown {
            *topic = "nope".to_string();
        }
        assert!(matches!(
            refused(&image, unknown),
            MetadataError::UnknownTopic(_)
        ));
        let mut wrong_id = alter(1, (3, 5), &[1]);
        if let ControllerRequest::AlterPartition { topic_id, .. } = &mut wrong_id {
            *topic_id = Uuid::from_u128(7);
        }
        assert!(matches!(
            refused(&image, wrong_id),
            MetadataError::UnknownTopicId(_)
        ));
        let mut no_partition = alter(1, (3, 5), &[1]);
        if let ControllerRequest::AlterPartition { partition, .. } = &mut no_partition {
            *partition = 1;
        }
        assert!(matches!(
            refused(&image, no_partition),
            MetadataError::UnknownTopic(_)
        ));
        // Newer epochs than the controller's come before everything else that follows.
        assert!(matches!(
            refused(&image, alter(2, (4, 5), &[9])),
            MetadataError::StaleController(_)
        ));
        assert!(matches!(
            refused(&image, alter(2, (3, 6), &[9])),
            MetadataError::StaleController(_)
        ));
        // An older leader epoch is fenced even when the broker is not the leader.
        assert!(matches!(
            refused(&image, alter(2, (2, 4), &[9])),
            MetadataError::FencedLeaderEpoch(_)
        ));
        assert!(matches!(
            refused(&image, alter(2, (3, 4), &[9])),
            MetadataError::InvalidRequest(_)
        ));
        assert!(matches!(
            refused(&image, alter(1, (3, 4), &[9])),
            MetadataError::InvalidUpdateVersion(_)
        ));
        // Not a set of the replicas, a duplicate, or without the leader.
        for isr in [&[1, 9][..], &[1, 2, 2], &[2, 3], &[]] {
            assert!(
                matches!(
                    refused(&image, alter(1, (3, 5), isr)),
                    MetadataError::InvalidRequest(_)
                ),
                "{isr:?}"
            );
        }
        // Broker 4 is fenced: it may not join.
        assert!(matches!(
            refused(&image, alter(1, (3, 5), &[1, 2, 4])),
            MetadataError::IneligibleReplica(_)
        ));
    }

    #[test]
    fn only_added_members_must_be_eligible() {
        let mut image = image_with(vec![state(&[1, 2, 3], &[1, 2], 1)]);
        image.brokers.get_mut(&3).unwrap().shutting_down = true;
        assert!(matches!(
            refused(&image, alter(1, (3, 5), &[1, 2, 3])),
            MetadataError::IneligibleReplica(_)
        ));
        // A member already in the ISR that is shutting down does not stop a shrink.
        image.brokers.get_mut(&2).unwrap().shutting_down = true;
        let outcome = execute(&image, alter(1, (3, 5), &[1, 2]), &quorum());
        assert!(altered(&outcome).is_ok());
    }

    #[test]
    fn a_lone_node_has_no_isr_to_alter() {
        let image = image_with(vec![state(&[1], &[1], 1)]);
        let outcome = execute(&image, alter(1, (3, 5), &[1]), &Mode::Lone);
        assert!(matches!(
            altered(&outcome),
            Err(MetadataError::InvalidRequest(_))
        ));
    }

    fn fence(id: i32) -> ControllerRequest {
        ControllerRequest::FenceBroker { id, epoch: 1 }
    }

    fn unfence(id: i32) -> ControllerRequest {
        ControllerRequest::UnfenceBroker {
            id,
            epoch: 1,
            incarnation: Uuid::from_u128(id as u128),
        }
    }

    fn partitions(image: &MetadataImage) -> Vec<PartitionState> {
        image.topic("t").unwrap().placement.clone()
    }

    #[test]
    fn a_fenced_broker_leaves_every_isr_and_its_leaderships_move() {
        let image = image_with(vec![
            // Led by 1: the new leader is the first live ISR member in replica order (2, though
            // 3 comes first in the ISR).
            state(&[1, 2, 3], &[1, 3, 2], 1),
            // A follower on 1: it leaves the ISR, the leader stays.
            state(&[2, 1, 3], &[2, 1, 3], 2),
            // 1 is the only ISR member: the ISR is empty, 1 is an eligible leader, no leader.
            state(&[1, 2], &[1], 1),
            // Not on 1: untouched.
            state(&[2, 3], &[2, 3], 2),
        ]);
        let outcome = execute(&image, fence(1), &quorum());
        let after = partitions(&outcome.image);
        assert_eq!(after[0].leader, 2, "replica order: 2 comes before 3");
        assert_eq!(after[0].isr, vec![3, 2]);
        assert_eq!((after[0].leader_epoch, after[0].partition_epoch), (4, 6));
        assert_eq!((after[1].leader, after[1].isr.clone()), (2, vec![2, 3]));
        assert_eq!((after[1].leader_epoch, after[1].partition_epoch), (3, 6));
        assert_eq!((after[2].leader, after[2].isr.clone()), (-1, vec![]));
        assert_eq!(after[2].elr, vec![1]);
        assert_eq!((after[2].leader_epoch, after[2].partition_epoch), (4, 6));
        assert_eq!(after[3], state(&[2, 3], &[2, 3], 2));
        // One fence record and one change per changed partition.
        assert_eq!(outcome.records.len(), 4);

        // Unfenced again: the leaderless partition whose ELR holds it is its again; the others
        // keep their leaders (1 must rejoin their ISRs through AlterPartition first).
        let outcome = execute(&outcome.image, unfence(1), &quorum());
        let again = partitions(&outcome.image);
        assert_eq!((again[2].leader, again[2].isr.clone()), (1, vec![1]));
        assert!(again[2].elr.is_empty());
        assert_eq!((again[2].leader_epoch, again[2].partition_epoch), (5, 7));
        assert_eq!(again[0], after[0]);
        assert_eq!(again[1], after[1]);
        assert_eq!(outcome.records.len(), 2);
    }

    #[test]
    fn a_broker_registering_again_leaves_the_isrs_and_leads_nothing_until_it_catches_up() {
        // Broker 1 restarted before its session ran out (SIGKILL, or a replaced disk): the
        // image still has it leading and in sync.
        let image = image_with(vec![
            state(&[1, 2, 3], &[1, 2, 3], 1),
            state(&[2, 1, 3], &[2, 1, 3], 2),
            state(&[1, 2], &[1], 1),
        ]);
        let register = ControllerRequest::RegisterBroker {
            id: 1,
            incarnation: Uuid::from_u128(77),
            host: "h".to_string(),
            port: 1,
            rack: None,
        };
        let outcome = execute(&image, register, &quorum());
        let after = partitions(&outcome.image);
        assert!(outcome.image.brokers[&1].fenced);
        assert_eq!((after[0].leader, after[0].isr.clone()), (2, vec![2, 3]));
        assert_eq!(after[0].leader_epoch, 4, "a new leader epoch");
        assert_eq!((after[1].leader, after[1].isr.clone()), (2, vec![2, 3]));
        // Its only in-sync replica: kept in the ISR, no leader until it is unfenced.
        assert_eq!((after[2].leader, after[2].isr.clone()), (-1, vec![1]));
    }

    #[test]
    fn the_new_leader_follows_replica_order_not_isr_order() {
        let image = image_with(vec![state(&[1, 3, 2], &[1, 2, 3], 1)]);
        let outcome = execute(&image, fence(1), &quorum());
        assert_eq!(partitions(&outcome.image)[0].leader, 3);
    }

    #[test]
    fn a_stale_fence_changes_nothing() {
        let image = image_with(vec![state(&[1, 2], &[1, 2], 1)]);
        let outcome = execute(
            &image,
            ControllerRequest::FenceBroker { id: 1, epoch: 7 },
            &quorum(),
        );
        assert!(outcome.records.is_empty());
    }

    fn quorum_unclean(enabled: bool) -> Mode {
        Mode::Quorum {
            entry_index: 9,
            settings: PlanSettings {
                unclean_leader_election_enable: enabled,
                min_insync_replicas: 1,
            },
        }
    }

    #[test]
    fn unclean_election_picks_the_first_live_replica_only_when_allowed() {
        // 3 is the only ISR member and is fenced; 1 and 2 are live but out of sync.
        let mut leaderless = state(&[3, 2, 1], &[3], -1);
        leaderless.leader_epoch = 3;
        let mut image = image_with(vec![leaderless]);
        image.brokers.get_mut(&3).unwrap().fenced = true;
        // Disabled (the default): broker 4 comes back, the partition stays leaderless.
        let outcome = execute(&image, unfence(4), &quorum());
        assert_eq!(outcome.records.len(), 1, "only the unfencing");
        assert_eq!(partitions(&outcome.image)[0].leader, -1);
        // Enabled by the broker default: the same event elects 2, ISR [2].
        let outcome = execute(&image, unfence(4), &quorum_unclean(true));
        let after = partitions(&outcome.image);
        assert_eq!((after[0].leader, after[0].isr.clone()), (2, vec![2]));
        assert_eq!((after[0].leader_epoch, after[0].partition_epoch), (4, 6));
        // A topic override of false wins over the broker default.
        let mut image_off = image.clone();
        image_off
            .topics
            .get_mut("t")
            .unwrap()
            .configs
            .insert(UNCLEAN_KEY.to_string(), "false".to_string());
        let outcome = execute(&image_off, unfence(4), &quorum_unclean(true));
        assert_eq!(partitions(&outcome.image)[0].leader, -1);
    }

    #[test]
    fn setting_unclean_election_on_a_topic_elects_at_once() {
        let mut image = image_with(vec![state(&[3, 1], &[3], -1)]);
        image.brokers.get_mut(&3).unwrap().fenced = true;
        let request = ControllerRequest::AlterTopicConfigs {
            name: "t".to_string(),
            ops: vec![ConfigOp::Set(UNCLEAN_KEY.to_string(), "true".to_string())],
            replace_all: false,
            validate_only: false,
        };
        let outcome = execute(&image, request.clone(), &quorum());
        let after = partitions(&outcome.image);
        assert_eq!((after[0].leader, after[0].isr.clone()), (1, vec![1]));
        // The cluster-wide dynamic default does the same.
        let request = ControllerRequest::AlterBrokerConfigs {
            per_node: false,
            ops: vec![ConfigOp::Set(UNCLEAN_KEY.to_string(), "true".to_string())],
            replace_all: false,
            validate_only: false,
        };
        let outcome = execute(&image, request, &quorum());
        assert_eq!(partitions(&outcome.image)[0].leader, 1);
        // Validate-only elects nothing.
        let request = ControllerRequest::AlterTopicConfigs {
            name: "t".to_string(),
            ops: vec![ConfigOp::Set(UNCLEAN_KEY.to_string(), "true".to_string())],
            replace_all: false,
            validate_only: true,
        };
        assert!(execute(&image, request, &quorum()).records.is_empty());
    }

    #[test]
    fn a_broker_shutting_down_hands_over_what_others_can_lead() {
        let image = image_with(vec![
            state(&[1, 2, 3], &[1, 2, 3], 1),
            // 1 is the only in-sync replica: it keeps leading, and stays in the ISR.
            state(&[1, 2], &[1], 1),
            state(&[2, 1], &[2, 1], 2),
        ]);
        let shutdown = ControllerRequest::ShutdownBroker { id: 1, epoch: 1 };
        let outcome = execute(&image, shutdown.clone(), &quorum());
        assert!(matches!(
            outcome.response,
            ControllerResponse::Altered(Ok(()))
        ));
        assert!(outcome.image.brokers[&1].shutting_down);
        let after = partitions(&outcome.image);
        assert_eq!((after[0].leader, after[0].isr.clone()), (2, vec![2, 3]));
        assert_eq!(after[0].leader_epoch, 4);
        assert_eq!(after[1], state(&[1, 2], &[1], 1));
        assert_eq!((after[2].leader, after[2].isr.clone()), (2, vec![2]));
        // Asked again: nothing more to do.
        assert!(
            execute(&outcome.image, shutdown, &quorum())
                .records
                .is_empty()
        );
        // It may not rejoin an ISR, and new partitions are not placed on it.
        assert!(matches!(
            refused(&outcome.image, alter(2, (4, 6), &[2, 3, 1])),
            MetadataError::IneligibleReplica(_)
        ));
        let placed = place_partitions(&outcome.image, 0, 4, 2, 0).unwrap();
        assert!(placed.iter().all(|p| !p.replicas.contains(&1)));
        // Then its session ends: the partition it kept has no leader.
        let fenced = execute(&outcome.image, fence(1), &quorum());
        assert_eq!(partitions(&fenced.image)[1].leader, -1);
        // A stale registration is refused.
        let stale = ControllerRequest::ShutdownBroker { id: 1, epoch: 0 };
        assert!(matches!(
            execute(&image, stale, &quorum()).response,
            ControllerResponse::Altered(Err(MetadataError::StaleBrokerEpoch(_)))
        ));
    }

    fn elect(unclean: bool, partitions: Option<Vec<(&str, Vec<i32>)>>) -> ControllerRequest {
        ControllerRequest::ElectLeaders {
            unclean,
            partitions: partitions.map(|list| {
                list.into_iter()
                    .map(|(name, ids)| (name.to_string(), ids))
                    .collect()
            }),
        }
    }

    fn elected(outcome: &Outcome) -> ElectionResults {
        match &outcome.response {
            ControllerResponse::Elected(Ok(results)) => results.clone(),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    #[test]
    fn preferred_election_moves_leadership_to_a_live_in_sync_first_replica() {
        let image = image_with(vec![
            // 1 is preferred, in sync and live: it takes over.
            state(&[1, 2, 3], &[1, 2, 3], 2),
            // Already led by its preferred replica.
            state(&[2, 1], &[2, 1], 2),
            // The preferred replica 3 is out of the ISR.
            state(&[3, 1], &[1], 1),
            // The preferred replica 4 is fenced.
            state(&[4, 1], &[4, 1], 1),
        ]);
        let outcome = execute(
            &image,
            elect(false, Some(vec![("t", vec![0, 1, 2, 3, 7])])),
            &quorum(),
        );
        let results = elected(&outcome);
        assert_eq!(results.len(), 1);
        let codes: Vec<_> = results[0].1.iter().map(|(p, r)| (*p, r.clone())).collect();
        assert_eq!(codes[0], (0, Ok(())));
        assert_eq!(codes[1], (1, Err(MetadataError::ElectionNotNeeded)));
        assert!(matches!(
            codes[2].1,
            Err(MetadataError::PreferredLeaderNotAvailable(_))
        ));
        assert!(matches!(
            codes[3].1,
            Err(MetadataError::PreferredLeaderNotAvailable(_))
        ));
        assert!(matches!(codes[4].1, Err(MetadataError::UnknownTopic(_))));
        let after = partitions(&outcome.image);
        assert_eq!((after[0].leader, after[0].isr.clone()), (1, vec![1, 2, 3]));
        assert_eq!((after[0].leader_epoch, after[0].partition_epoch), (4, 6));
        assert_eq!(after[1..], partitions(&image)[1..]);
        assert_eq!(outcome.records.len(), 1);
        // A broker in controlled shutdown is not eligible either.
        let mut closing = image.clone();
        closing.brokers.get_mut(&1).unwrap().shutting_down = true;
        let outcome = execute(
            &closing,
            elect(false, Some(vec![("t", vec![0])])),
            &quorum(),
        );
        assert!(matches!(
            elected(&outcome)[0].1[0].1,
            Err(MetadataError::PreferredLeaderNotAvailable(_))
        ));
        assert!(outcome.records.is_empty());
        // An unknown topic is UNKNOWN_TOPIC_OR_PARTITION for each of its partitions.
        let outcome = execute(
            &image,
            elect(false, Some(vec![("nope", vec![0, 1])])),
            &quorum(),
        );
        let results = elected(&outcome);
        assert_eq!(results[0].0, "nope");
        assert!(
            results[0]
                .1
                .iter()
                .all(|(_, r)| matches!(r, Err(MetadataError::UnknownTopic(_))))
        );
    }

    #[test]
    fn every_partition_answers_only_where_an_election_was_needed() {
        let image = image_with(vec![
            state(&[1, 2, 3], &[1, 2, 3], 2),
            state(&[2, 1], &[2, 1], 2),
            state(&[3, 1], &[1], 1),
        ]);
        let outcome = execute(&image, elect(false, None), &quorum());
        let results = elected(&outcome);
        assert_eq!(results.len(), 1);
        let partitions_answered: Vec<i32> = results[0].1.iter().map(|(p, _)| *p).collect();
        assert_eq!(partitions_answered, vec![0, 2]);
        assert_eq!(outcome.records.len(), 1);
        // An empty list asks for nothing.
        let outcome = execute(&outcome.image, elect(false, Some(vec![])), &quorum());
        assert!(elected(&outcome).is_empty());
    }

    #[test]
    fn unclean_election_asked_for_elects_only_leaderless_partitions() {
        let mut image = image_with(vec![
            // Led: not needed.
            state(&[1, 2], &[1, 2], 1),
            // Leaderless, its only in-sync replica 3 fenced: 2 (first live replica) leads alone.
            state(&[3, 2, 1], &[3], -1),
            // Leaderless and every replica fenced.
            state(&[3, 4], &[3], -1),
        ]);
        image.brokers.get_mut(&3).unwrap().fenced = true;
        let outcome = execute(
            &image,
            elect(true, Some(vec![("t", vec![0, 1, 2])])),
            &quorum(),
        );
        let results = &elected(&outcome)[0].1;
        assert_eq!(results[0].1, Err(MetadataError::ElectionNotNeeded));
        assert_eq!(results[1].1, Ok(()));
        assert!(matches!(
            results[2].1,
            Err(MetadataError::EligibleLeadersNotAvailable(_))
        ));
        let after = partitions(&outcome.image);
        assert_eq!((after[1].leader, after[1].isr.clone()), (2, vec![2]));
        assert_eq!((after[1].leader_epoch, after[1].partition_epoch), (4, 6));
        assert_eq!(outcome.records.len(), 1);
    }

    #[test]
    fn a_lone_node_never_needs_an_election() {
        let mut image = MetadataImage::empty();
        image.topics.insert(
            "t".to_string(),
            TopicImage {
                name: "t".to_string(),
                id: TOPIC_ID,
                partitions: 2,
                configs: BTreeMap::new(),
                placement: Vec::new(),
            },
        );
        for unclean in [false, true] {
            let outcome = execute(
                &image,
                elect(unclean, Some(vec![("t", vec![0, 1, 2])])),
                &Mode::Lone,
            );
            let results = &elected(&outcome)[0].1;
            assert_eq!(results[0].1, Err(MetadataError::ElectionNotNeeded));
            assert_eq!(results[1].1, Err(MetadataError::ElectionNotNeeded));
            assert!(matches!(results[2].1, Err(MetadataError::UnknownTopic(_))));
            assert!(outcome.records.is_empty());
            let outcome = execute(&image, elect(unclean, None), &Mode::Lone);
            assert!(elected(&outcome).is_empty());
        }
    }

    fn quorum_min_isr(min_insync_replicas: usize) -> Mode {
        Mode::Quorum {
            entry_index: 9,
            settings: PlanSettings {
                unclean_leader_election_enable: false,
                min_insync_replicas,
            },
        }
    }

    fn register(id: i32) -> ControllerRequest {
        ControllerRequest::RegisterBroker {
            id,
            incarnation: Uuid::from_u128(100 + id as u128),
            host: "h".to_string(),
            port: 1,
            rack: None,
        }
    }

    /// `(leader, isr, elr, last_known_elr)` of partition 0.
    fn elr_view(image: &MetadataImage) -> (i32, Vec<i32>, Vec<i32>, Vec<i32>) {
        let p = &partitions(image)[0];
        (
            p.leader,
            p.isr.clone(),
            p.elr.clone(),
            p.last_known_elr.clone(),
        )
    }

    #[test]
    fn an_isr_shrinking_below_min_isr_moves_its_members_to_the_elr() {
        let mode = quorum_min_isr(2);
        let image = image_with(vec![state(&[1, 2, 3], &[1, 2, 3], 1)]);
        // 3 leaves: the ISR is still at min.insync.replicas, no ELR.
        let outcome = execute(&image, alter(1, (3, 5), &[1, 2]), &mode);
        assert_eq!(elr_view(&outcome.image), (1, vec![1, 2], vec![], vec![]));
        // 2 leaves: below it, 2 held everything below the (now frozen) high watermark.
        let outcome = execute(&outcome.image, alter(1, (3, 6), &[1]), &mode);
        let after = altered(&outcome).unwrap();
        assert_eq!((after.isr.clone(), after.elr.clone()), (vec![1], vec![2]));
        assert_eq!(
            (after.leader_epoch, after.partition_epoch),
            (3, 7),
            "an ELR change bumps the partition epoch only"
        );
        // The same through fencing, with the topic's own min.insync.replicas.
        let mut image = image_with(vec![state(&[1, 2, 3], &[1, 2], 1)]);
        image
            .topics
            .get_mut("t")
            .unwrap()
            .configs
            .insert(MIN_ISR_KEY.to_string(), "2".to_string());
        let outcome = execute(&image, fence(2), &quorum());
        assert_eq!(elr_view(&outcome.image), (1, vec![1], vec![2], vec![]));
    }

    #[test]
    fn a_fenced_elr_member_stays_eligible_and_leads_when_the_isr_is_empty() {
        let mode = quorum_min_isr(2);
        // 3 is out; 2 left the ISR below min ISR and is fenced since; 1 leads alone.
        let mut one = state(&[1, 2, 3], &[1], 1);
        one.elr = vec![2];
        let mut image = image_with(vec![one]);
        image.brokers.get_mut(&2).unwrap().fenced = true;
        // 1 is fenced too: the ISR is empty, both are eligible, no one live may lead.
        let outcome = execute(&image, fence(1), &mode);
        assert_eq!(elr_view(&outcome.image), (-1, vec![], vec![1, 2], vec![]));
        // 3 coming back (live, but neither in sync nor eligible) changes nothing.
        let mut without_3 = outcome.image.clone();
        without_3.brokers.get_mut(&3).unwrap().fenced = true;
        let outcome_3 = execute(
            &without_3,
            ControllerRequest::UnfenceBroker {
                id: 3,
                epoch: 1,
                incarnation: Uuid::from_u128(3),
            },
            &mode,
        );
        assert_eq!(elr_view(&outcome_3.image), (-1, vec![], vec![1, 2], vec![]));
        // 2 is unfenced: a clean election from the ELR, 2 is the ISR alone.
        let outcome = execute(&outcome.image, unfence(2), &mode);
        let after = &partitions(&outcome.image)[0];
        assert_eq!(elr_view(&outcome.image), (2, vec![2], vec![1], vec![]));
        assert_eq!((after.leader_epoch, after.partition_epoch), (5, 7));
    }

    #[test]
    fn elr_members_are_not_elected_while_the_isr_has_members() {
        let mode = quorum_min_isr(2);
        let mut one = state(&[2, 1, 3], &[1], 1);
        one.elr = vec![2];
        let mut image = image_with(vec![one]);
        image.brokers.get_mut(&1).unwrap().fenced = true;
        image.brokers.get_mut(&1).unwrap().epoch = 2;
        // The leader's session had ended already, but its fence was stale; 2 is live and
        // eligible, yet 1 is still in the ISR: no preferred election either.
        let outcome = execute(&image, elect(false, Some(vec![("t", vec![0])])), &mode);
        assert!(matches!(
            elected(&outcome)[0].1[0].1,
            Err(MetadataError::PreferredLeaderNotAvailable(_))
        ));
        // Once the ISR is empty, the preferred election may pick 2 from the ELR.
        let mut empty = image.clone();
        let p = &mut empty.topics.get_mut("t").unwrap().placement[0];
        p.isr.clear();
        p.elr = vec![1, 2];
        p.leader = -1;
        let outcome = execute(&empty, elect(false, Some(vec![("t", vec![0])])), &mode);
        assert_eq!(elected(&outcome)[0].1[0].1, Ok(()));
        assert_eq!(elr_view(&outcome.image), (2, vec![2], vec![1], vec![]));
    }

    #[test]
    fn an_unclean_restart_leaves_the_isr_and_the_elr_unless_it_is_the_last() {
        let mode = quorum_min_isr(2);
        // 1 is fenced and eligible; 2, the only ISR member, restarts (its disk lost).
        let mut one = state(&[2, 1, 3], &[2], 2);
        one.elr = vec![1];
        let mut image = image_with(vec![one.clone()]);
        image.brokers.get_mut(&1).unwrap().fenced = true;
        let outcome = execute(&image, register(2), &mode);
        assert_eq!(elr_view(&outcome.image), (-1, vec![], vec![1], vec![2]));
        assert_eq!(partitions(&outcome.image)[0].leader_epoch, 4);
        // 2 is unfenced first: it is in neither set and unclean election is off, so the
        // partition waits for its eligible replica.
        let unfence_2 = ControllerRequest::UnfenceBroker {
            id: 2,
            epoch: 2,
            incarnation: Uuid::from_u128(102),
        };
        let outcome_2 = execute(&outcome.image, unfence_2, &mode);
        assert!(!outcome_2.image.brokers[&2].fenced);
        assert_eq!(elr_view(&outcome_2.image), (-1, vec![], vec![1], vec![2]));
        // 1 comes back: it leads from the ELR with every acknowledged record.
        let outcome = execute(&outcome.image, unfence(1), &mode);
        assert_eq!(elr_view(&outcome.image), (1, vec![1], vec![], vec![2]));

        // An ELR member restarting leaves the ELR, into LastKnownElr.
        let mut image = image_with(vec![one.clone()]);
        image.brokers.get_mut(&1).unwrap().fenced = true;
        let outcome = execute(&image, register(1), &mode);
        assert_eq!(elr_view(&outcome.image), (2, vec![2], vec![], vec![1]));

        // The only member of the ISR and the ELR keeps its place: no replica is known to
        // hold more, and it leads again once caught up with the metadata.
        let image = image_with(vec![state(&[1, 2, 3], &[1], 1)]);
        let outcome = execute(&image, register(1), &mode);
        assert_eq!(elr_view(&outcome.image), (-1, vec![1], vec![], vec![]));
        let mut only_elr = state(&[1, 2, 3], &[], -1);
        only_elr.elr = vec![1];
        let image = image_with(vec![only_elr.clone()]);
        let outcome = execute(&image, register(1), &mode);
        assert_eq!(elr_view(&outcome.image), (-1, vec![], vec![1], vec![]));
    }

    #[test]
    fn an_isr_expansion_takes_replicas_out_of_the_elr() {
        let mode = quorum_min_isr(3);
        let mut one = state(&[1, 2, 3], &[1], 1);
        one.elr = vec![2, 3];
        let image = image_with(vec![one]);
        // 2 rejoins: still below 3, 2 is in sync now and no longer merely eligible.
        let outcome = execute(&image, alter(1, (3, 5), &[1, 2]), &mode);
        assert_eq!(elr_view(&outcome.image), (1, vec![1, 2], vec![3], vec![]));
        // 3 rejoins: at min.insync.replicas, no ELR.
        let outcome = execute(&outcome.image, alter(1, (3, 6), &[1, 2, 3]), &mode);
        assert_eq!(elr_view(&outcome.image), (1, vec![1, 2, 3], vec![], vec![]));
    }

    #[test]
    fn a_min_isr_change_recomputes_the_elr() {
        let mut one = state(&[1, 2, 3, 4], &[1, 2], 1);
        one.elr = vec![3];
        one.last_known_elr = vec![4];
        let image = image_with(vec![one.clone()]);
        // min.insync.replicas 3 -> 2 on the topic: the ISR is at it, the ELR is cleared.
        let mut at_three = image.clone();
        at_three
            .topics
            .get_mut("t")
            .unwrap()
            .configs
            .insert(MIN_ISR_KEY.to_string(), "3".to_string());
        let set = |value: &str| ControllerRequest::AlterTopicConfigs {
            name: "t".to_string(),
            ops: vec![ConfigOp::Set(MIN_ISR_KEY.to_string(), value.to_string())],
            replace_all: false,
            validate_only: false,
        };
        let outcome = execute(&at_three, set("2"), &quorum());
        assert_eq!(elr_view(&outcome.image), (1, vec![1, 2], vec![], vec![]));
        assert_eq!(partitions(&outcome.image)[0].partition_epoch, 6);
        // Raised to 4: the ISR stays as it is and adds no one to the ELR.
        let outcome = execute(&at_three, set("4"), &quorum());
        assert_eq!(elr_view(&outcome.image), (1, vec![1, 2], vec![3], vec![4]));
        // The cluster-wide default does the same for topics without an override.
        let request = ControllerRequest::AlterBrokerConfigs {
            per_node: false,
            ops: vec![ConfigOp::Set(MIN_ISR_KEY.to_string(), "1".to_string())],
            replace_all: false,
            validate_only: false,
        };
        let outcome = execute(&image, request, &quorum_min_isr(3));
        assert_eq!(elr_view(&outcome.image), (1, vec![1, 2], vec![], vec![]));
    }

    #[test]
    fn an_unclean_election_clears_the_elr() {
        let mut one = state(&[3, 2, 1], &[], -1);
        one.elr = vec![3];
        one.last_known_elr = vec![1];
        let mut image = image_with(vec![one]);
        image.brokers.get_mut(&3).unwrap().fenced = true;
        let outcome = execute(&image, unfence(4), &quorum_unclean(true));
        assert_eq!(elr_view(&outcome.image), (2, vec![2], vec![], vec![]));
    }

    #[test]
    fn partition_states_written_before_the_elr_still_load() {
        let old = r#"{"replicas":[1,2],"isr":[1],"leader":1,"leader_epoch":2,"partition_epoch":3}"#;
        let state: PartitionState = serde_json::from_str(old).unwrap();
        assert!(state.elr.is_empty() && state.last_known_elr.is_empty());
        // And an empty ELR is not written, so the records keep their old shape.
        assert_eq!(serde_json::to_string(&state).unwrap(), old);
        let settings: PlanSettings =
            serde_json::from_str(r#"{"unclean_leader_election_enable":true}"#).unwrap();
        assert_eq!(settings.min_insync_replicas, 0);
    }
}
