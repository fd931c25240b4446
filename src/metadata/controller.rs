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
    /// Config overrides, already validated by the caller against the topic config table.
    pub configs: BTreeMap<String, String>,
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
}

/// The controller's answer, one result per topic in request order.
#[derive(Debug)]
pub enum ControllerResponse {
    /// Answer to `CreateTopics`.
    CreateTopics(Vec<Result<TopicImage, MetadataError>>),
    /// Answer to `DeleteTopics`.
    DeleteTopics(Vec<Result<TopicImage, MetadataError>>),
    /// The request reached a shard that is not the controller.
    NotController,
}

/// Why a metadata change was refused. Mapped to Kafka error codes in `kafka::error`.
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
    /// The same topic appears twice in one request (INVALID_REQUEST).
    #[error("Duplicate topic name '{0}' in the request.")]
    DuplicateTopic(String),
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
        let before = self.image();
        let mut after = (*before).clone();
        let mut records = Vec::new();
        let is_create = matches!(request, ControllerRequest::CreateTopics { .. });
        let (results, validate_only) = match request {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => {
                let mut seen = Vec::new();
                let results = topics
                    .into_iter()
                    .map(|topic| {
                        if seen.contains(&topic.name) {
                            return Err(MetadataError::DuplicateTopic(topic.name));
                        }
                        seen.push(topic.name.clone());
                        plan_create(&after, topic).inspect(|created| {
                            let record = MetadataRecord::TopicCreated {
                                name: created.name.clone(),
                                id: created.id,
                                partitions: created.partitions,
                                configs: created.configs.clone(),
                            };
                            let offset = after.offset + 1;
                            apply_record(&mut after, offset, &record);
                            records.push((offset, record));
                        })
                    })
                    .collect::<Vec<_>>();
                (results, validate_only)
            }
            ControllerRequest::DeleteTopics { names } => {
                let results = names
                    .into_iter()
                    .map(|name| {
                        let topic = after
                            .topic(&name)
                            .cloned()
                            .ok_or(MetadataError::UnknownTopic(name))?;
                        let record = MetadataRecord::TopicDeleted {
                            name: topic.name.clone(),
                            id: topic.id,
                        };
                        let offset = after.offset + 1;
                        apply_record(&mut after, offset, &record);
                        records.push((offset, record));
                        Ok(topic)
                    })
                    .collect::<Vec<_>>();
                (results, false)
            }
        };
        let wrap = |results| {
            if is_create {
                ControllerResponse::CreateTopics(results)
            } else {
                ControllerResponse::DeleteTopics(results)
            }
        };
        if validate_only || records.is_empty() {
            return wrap(results);
        }

        if let Err(err) = self.persist(records.clone(), after.clone()).await {
            let reason = err.to_string();
            let failed = results
                .into_iter()
                .map(|r| r.and(Err(MetadataError::Storage(reason.clone()))))
                .collect();
            return wrap(failed);
        }
        for (offset, record) in &records {
            info!(offset, ?record, "metadata change committed");
        }
        let after = Rc::new(after);
        *self.image.borrow_mut() = after.clone();
        publish(after).await;
        wrap(results)
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
    if topic.partitions > limits::TOPIC_PARTITIONS_MAX {
        return Err(MetadataError::InvalidPartitions(format!(
            "Number of partitions {} is larger than the maximum {}.",
            topic.partitions,
            limits::TOPIC_PARTITIONS_MAX
        )));
    }
    let total = image.partition_count() + topic.partitions as usize;
    if total > limits::BROKER_PARTITIONS_MAX {
        return Err(MetadataError::InvalidPartitions(format!(
            "The broker would hold {total} partitions, more than its maximum {}.",
            limits::BROKER_PARTITIONS_MAX
        )));
    }
    Ok(TopicImage {
        name: topic.name,
        id: Uuid::new_v4(),
        partitions: topic.partitions,
        configs: topic.configs,
    })
}
