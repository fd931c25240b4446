//! The controller: the single writer of the topic table.
//!
//! Owner: shard 0 only (DESIGN.md §2). Other shards reach it with
//! `router.call(ShardId::CONTROLLER, ShardRequest::Controller(..))`.
//!
//! A change is validated against the authoritative image, written to the metadata log and made
//! durable, and only then installed: first on shard 0, then broadcast to every other shard as a
//! new image. Changes are serialised by a one-permit semaphore held across the disk write and
//! the broadcast, so shards receive images in the order the controller made them (the mesh
//! channel between two shards is FIFO and posts are applied inline). The `RefCell`s are never
//! borrowed across an `.await`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use glommio::sync::Semaphore;
use tracing::info;
use uuid::Uuid;

use crate::acl::{AclBinding, AclFilter};
use crate::config::{ValueKind, topic};
use crate::limits;
use crate::metadata::image::{MetadataImage, TopicImage};
use crate::metadata::store::{MetadataRecord, MetadataStore, StoreError, apply_record};
use crate::metadata::topic_name::validate_topic_name;

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Its name.
    pub name: String,
    /// Partition count; must be at least 1.
    pub partitions: i32,
    /// Config overrides; checked against the topic config table before anything is written.
    pub configs: BTreeMap<String, String>,
}

/// One change to a topic's config overrides (IncrementalAlterConfigs' operations; the legacy
/// AlterConfigs is a `replace_all` of `Set`s).
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A change requested of the controller.
#[derive(Debug)]
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
#[derive(Debug, Clone, thiserror::Error)]
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
}

/// See the module documentation.
#[derive(Debug)]
pub struct Controller {
    image: RefCell<Rc<MetadataImage>>,
    store: RefCell<Option<MetadataStore>>,
    change_permit: Semaphore,
}

impl Controller {
    /// A controller over an opened store and the image replayed from it.
    pub fn new(store: MetadataStore, image: MetadataImage) -> Controller {
        Controller {
            image: RefCell::new(Rc::new(image)),
            store: RefCell::new(Some(store)),
            change_permit: Semaphore::new(1),
        }
    }

    /// The authoritative image.
    pub fn image(&self) -> Rc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Carries out `request`. `publish` installs a committed image on every shard (shard 0's
    /// own first, then a broadcast); it is awaited while the change permit is held.
    pub async fn handle<F, Fut>(&self, request: ControllerRequest, publish: F) -> ControllerResponse
    where
        F: FnOnce(Rc<MetadataImage>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let _permit = self
            .change_permit
            .acquire_permit(1)
            .await
            .expect("the change semaphore is never closed");
        let mut plan = Plan {
            image: (*self.image()).clone(),
            records: Vec::new(),
        };
        if let ControllerRequest::AllocateProducerIds { count } = request {
            let first = plan.image.next_producer_id;
            plan.stage(MetadataRecord::ProducerIdsAllocated {
                next_producer_id: first + count.max(1),
            });
            if let Err(err) = self.persist(plan.records.clone(), plan.image.clone()).await {
                return ControllerResponse::ProducerIds(Err(MetadataError::Storage(
                    err.to_string(),
                )));
            }
            let after = Rc::new(plan.image);
            *self.image.borrow_mut() = after.clone();
            publish(after).await;
            return ControllerResponse::ProducerIds(Ok(first));
        }
        if let ControllerRequest::AlterBrokerConfigs {
            per_node,
            ops,
            replace_all,
            validate_only,
        } = request
        {
            let current = if per_node {
                &plan.image.node_configs
            } else {
                &plan.image.cluster_configs
            };
            let mut configs = if replace_all {
                BTreeMap::new()
            } else {
                current.clone()
            };
            if let Err(err) = apply_config_ops(ConfigScope::Broker, &mut configs, &ops) {
                return ControllerResponse::Altered(Err(err));
            }
            if validate_only || &configs == current {
                return ControllerResponse::Altered(Ok(()));
            }
            plan.stage(MetadataRecord::BrokerConfigsAltered { per_node, configs });
            if let Err(err) = self.persist(plan.records.clone(), plan.image.clone()).await {
                return ControllerResponse::Altered(Err(MetadataError::Storage(err.to_string())));
            }
            let after = Rc::new(plan.image);
            *self.image.borrow_mut() = after.clone();
            publish(after).await;
            return ControllerResponse::Altered(Ok(()));
        }
        if let ControllerRequest::CreateAcls { acls } = request {
            for acl in acls {
                if !plan.image.acls.contains(&acl) {
                    if plan.image.acls.len() >= limits::ACLS_MAX {
                        return ControllerResponse::Altered(Err(MetadataError::LimitExceeded(
                            format!(
                                "the cluster holds the most ACLs it may ({})",
                                limits::ACLS_MAX
                            ),
                        )));
                    }
                    plan.stage(MetadataRecord::AclCreated { acl });
                }
            }
            let result = self.commit(plan, publish).await;
            return ControllerResponse::Altered(result);
        }
        if let ControllerRequest::DeleteAcls { filters } = request {
            let mut deleted = Vec::with_capacity(filters.len());
            for filter in &filters {
                let matching = plan.image.acls.matching(filter);
                for acl in &matching {
                    plan.stage(MetadataRecord::AclDeleted { acl: acl.clone() });
                }
                deleted.push(matching);
            }
            let result = self.commit(plan, publish).await.map(|()| deleted);
            return ControllerResponse::AclsDeleted(result);
        }
        let (results, validate_only) = plan.apply(request);
        if validate_only || plan.records.is_empty() {
            return ControllerResponse::Results(results);
        }

        if let Err(err) = self.persist(plan.records.clone(), plan.image.clone()).await {
            let failure = MetadataError::Storage(err.to_string());
            let failed = results
                .into_iter()
                .map(|r| r.and(Err(failure.clone())))
                .collect();
            return ControllerResponse::Results(failed);
        }
        for (offset, record) in &plan.records {
            info!(offset, ?record, "metadata change committed");
        }
        let after = Rc::new(plan.image);
        *self.image.borrow_mut() = after.clone();
        publish(after).await;
        ControllerResponse::Results(results)
    }

    /// Persists and installs a plan's records, if any (the change permit is held).
    async fn commit<F, Fut>(&self, plan: Plan, publish: F) -> Result<(), MetadataError>
    where
        F: FnOnce(Rc<MetadataImage>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        if plan.records.is_empty() {
            return Ok(());
        }
        self.persist(plan.records.clone(), plan.image.clone())
            .await
            .map_err(|err| MetadataError::Storage(err.to_string()))?;
        for (offset, record) in &plan.records {
            info!(offset, ?record, "metadata change committed");
        }
        let after = Rc::new(plan.image);
        *self.image.borrow_mut() = after.clone();
        publish(after).await;
        Ok(())
    }

    /// Writes `records` on the blocking pool. The store is moved into the closure and back, so
    /// the controller's executor never waits on the disk and no lock is needed.
    async fn persist(
        &self,
        records: Vec<(i64, MetadataRecord)>,
        image_after: MetadataImage,
    ) -> Result<(), StoreError> {
        let mut store = self
            .store
            .borrow_mut()
            .take()
            .expect("the store is present whenever the change permit is free");
        let (store, result) = glommio::executor()
            .spawn_blocking(move || {
                let result = store.append(&records, &image_after);
                (store, result)
            })
            .await;
        *self.store.borrow_mut() = Some(store);
        result
    }
}

/// A change being planned: the image as it will be, and the records that make it so.
struct Plan {
    image: MetadataImage,
    records: Vec<(i64, MetadataRecord)>,
}

impl Plan {
    fn stage(&mut self, record: MetadataRecord) {
        let offset = self.image.offset + 1;
        apply_record(&mut self.image, offset, &record);
        self.records.push((offset, record));
    }

    fn topic(&self, name: &str) -> Result<TopicImage, MetadataError> {
        self.image
            .topic(name)
            .cloned()
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))
    }

    /// Applies `request` to the plan; returns the per-item results and whether the request
    /// only validates.
    fn apply(
        &mut self,
        request: ControllerRequest,
    ) -> (Vec<Result<TopicImage, MetadataError>>, bool) {
        match request {
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
                        let created = plan_create(&self.image, topic)?;
                        self.stage(MetadataRecord::TopicCreated {
                            name: created.name.clone(),
                            id: created.id,
                            partitions: created.partitions,
                            configs: created.configs.clone(),
                        });
                        Ok(created)
                    })
                    .collect();
                (results, validate_only)
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
                (results, false)
            }
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
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
                        self.stage(MetadataRecord::PartitionsCreated {
                            name: topic.name.clone(),
                            id: topic.id,
                            partitions: count,
                        });
                        self.topic(&name)
                    })
                    .collect();
                (results, validate_only)
            }
            ControllerRequest::AllocateProducerIds { .. }
            | ControllerRequest::AlterBrokerConfigs { .. }
            | ControllerRequest::CreateAcls { .. }
            | ControllerRequest::DeleteAcls { .. } => {
                unreachable!("handled before planning topic changes")
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
                (vec![result], validate_only)
            }
        }
    }
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

fn plan_create(image: &MetadataImage, topic: NewTopic) -> Result<TopicImage, MetadataError> {
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
    Ok(TopicImage {
        name: topic.name,
        id: Uuid::new_v4(),
        partitions: topic.partitions,
        configs: topic.configs,
    })
}
