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
use tracing::info;
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
    /// The request reached a shard that is not the controller.
    NotController,
}

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
    },
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
        ControllerRequest::AlterBrokerConfigs { .. }
        | ControllerRequest::CreateAcls { .. }
        | ControllerRequest::RegisterBroker { .. }
        | ControllerRequest::FenceBroker { .. }
        | ControllerRequest::UnfenceBroker { .. } => {
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
                let epoch = self.image.brokers.get(&id).map_or(1, |b| b.epoch + 1);
                let registered_index = match self.mode {
                    Mode::Quorum { entry_index } => entry_index,
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
                        registered_index,
                    },
                });
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
                    self.move_leadership();
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
                    self.move_leadership();
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

    /// After a broker was fenced or unfenced: every partition whose leader is fenced, or that
    /// has no leader, gets the first live member of its ISR as leader (none: no leader, as
    /// Kafka does without unclean election), staged in the same change.
    fn move_leadership(&mut self) {
        let live =
            |image: &MetadataImage, id: i32| image.brokers.get(&id).is_some_and(|b| !b.fenced);
        let mut changes = Vec::new();
        for topic in self.image.topics.values() {
            for (partition, state) in topic.placement.iter().enumerate() {
                if state.leader >= 0 && live(&self.image, state.leader) {
                    continue;
                }
                let leader = state
                    .isr
                    .iter()
                    .copied()
                    .find(|id| live(&self.image, *id))
                    .unwrap_or(-1);
                if leader == state.leader {
                    continue;
                }
                let mut next = state.clone();
                next.leader = leader;
                next.leader_epoch += 1;
                next.partition_epoch += 1;
                changes.push((topic.name.clone(), topic.id, partition as i32, next));
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
