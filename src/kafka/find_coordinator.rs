//! FindCoordinator (key 10), versions 0 to 4, including v4's batched `coordinator_keys`.
//!
//! Owner: answered on the connection's shard. On a lone node the coordinator of every group
//! is this broker (inside it, the coordinator shard is reached over the router, see
//! `group::route`, `txn::route`). Under a controller quorum it is, as in Kafka, the leader of
//! the group's `__consumer_offsets` partition (`group_partition`) or the transactional id's
//! `__transaction_state` partition (`txn_partition`), with that broker's host and port from the
//! image; no leader, or a leader that is not a live broker, is COORDINATOR_NOT_AVAILABLE (the
//! client retries). The first lookup of a group creates `__consumer_offsets`, and the first
//! lookup of a transactional id (key type 1) creates `__transaction_state`, as in Kafka. An
//! empty transactional id is INVALID_REQUEST; so is any other key type.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::broker::ShardContext;
use crate::group::OFFSETS_TOPIC;
use crate::group::coordinator::group_partition;
use crate::group::route::ensure_offsets_topic;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::MetadataImage;
use crate::metadata::image::BrokerImage;
use crate::txn::TRANSACTION_STATE_TOPIC;
use crate::txn::route::{ensure_txn_topic, txn_partition};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::FindCoordinator,
    versions: VERSIONS,
    handle,
};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: FindCoordinatorRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let version = request.version();
        let keys: Vec<StrBytes> = if version >= 4 {
            body.coordinator_keys.clone()
        } else {
            vec![body.key.clone()]
        };
        let mut coordinators = Vec::with_capacity(keys.len());
        for key in keys {
            coordinators.push(lookup(&context, &request.session, key, body.key_type).await);
        }
        let response = if version >= 4 {
            crate::msg!(FindCoordinatorResponse { coordinators })
        } else {
            let one = coordinators.pop().unwrap_or_default();
            crate::msg!(FindCoordinatorResponse {
                error_code: one.error_code,
                error_message: if version >= 1 {
                    one.error_message
                } else {
                    None
                },
                node_id: one.node_id,
                host: one.host,
                port: one.port,
            })
        };
        request.respond(&response)
    }
    .boxed_local()
}

async fn lookup(
    context: &Rc<ShardContext>,
    session: &crate::acl::Session,
    key: StrBytes,
    key_type: i8,
) -> Coordinator {
    let failed = |code: ResponseError, message: &str| {
        crate::msg!(Coordinator {
            key: key.clone(),
            node_id: BrokerId(-1),
            host: StrBytes::default(),
            port: -1,
            error_code: code.code(),
            error_message: Some(StrBytes::from_string(message.to_string()))
        })
    };
    use crate::acl::{operation, resource_type};
    match key_type {
        KEY_TYPE_GROUP
            if !context.authorize(session, operation::DESCRIBE, resource_type::GROUP, &key) =>
        {
            return failed(
                ResponseError::GroupAuthorizationFailed,
                "Not authorized to access group",
            );
        }
        KEY_TYPE_TRANSACTION
            if !context.authorize(
                session,
                operation::DESCRIBE,
                resource_type::TRANSACTIONAL_ID,
                &key,
            ) =>
        {
            return failed(
                ResponseError::TransactionalIdAuthorizationFailed,
                "Not authorized to access the transactional id",
            );
        }
        _ => {}
    }
    let available = match key_type {
        KEY_TYPE_GROUP => ensure_offsets_topic(context).await.is_ok(),
        KEY_TYPE_TRANSACTION => {
            if key.is_empty() {
                return failed(
                    ResponseError::InvalidRequest,
                    "The transactional id is empty.",
                );
            }
            ensure_txn_topic(context).await.is_ok()
        }
        _ => {
            return failed(
                ResponseError::InvalidRequest,
                "Unknown coordinator key type.",
            );
        }
    };
    if !available {
        return failed(
            ResponseError::CoordinatorNotAvailable,
            "The coordinator is not available.",
        );
    }
    if !context.clustered() {
        return crate::msg!(Coordinator {
            key: key,
            node_id: BrokerId(context.identity.node_id),
            host: StrBytes::from_string(context.advertised_for(session).host.clone()),
            port: i32::from(context.advertised_for(session).port),
            error_code: 0,
            error_message: None
        });
    }
    if !context.metadata_current() {
        // Cut off from the quorum, this broker may name a coordinator that has moved.
        return failed(
            ResponseError::CoordinatorNotAvailable,
            "This broker's metadata is not known to be current; ask another broker.",
        );
    }
    let (topic, partition) = if key_type == KEY_TYPE_GROUP {
        (OFFSETS_TOPIC, group_partition(context, &key))
    } else {
        (TRANSACTION_STATE_TOPIC, txn_partition(context, &key))
    };
    match coordinator_broker(&context.image(), topic, partition) {
        Some(broker) => crate::msg!(Coordinator {
            key: key,
            node_id: BrokerId(broker.id),
            host: StrBytes::from_string(broker.host.clone()),
            port: i32::from(broker.port),
            error_code: 0,
            error_message: None
        }),
        None => failed(
            ResponseError::CoordinatorNotAvailable,
            "The coordinator is not available.",
        ),
    }
}

/// Under a controller quorum: the live broker leading `partition` of `topic`, if there is one.
fn coordinator_broker<'a>(
    image: &'a MetadataImage,
    topic: &str,
    partition: i32,
) -> Option<&'a BrokerImage> {
    let leader = image.topic(topic)?.partition_state(partition)?.leader;
    image.brokers.get(&leader).filter(|b| !b.fenced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicImage;
    use crate::metadata::image::PartitionState;

    #[test]
    fn coordinator_is_the_live_leader_of_the_partition() {
        let mut image = MetadataImage::empty();
        for (id, fenced) in [(1, false), (2, true)] {
            image.brokers.insert(
                id,
                BrokerImage {
                    id,
                    epoch: 1,
                    incarnation: uuid::Uuid::nil(),
                    registered_index: 1,
                    host: format!("h{id}"),
                    port: 9000,
                    rack: None,
                    fenced,
                    shutting_down: false,
                },
            );
        }
        let mut leaderless = PartitionState::led_by_first(vec![1, 2]);
        leaderless.leader = -1;
        image.topics.insert(
            OFFSETS_TOPIC.to_string(),
            TopicImage {
                name: OFFSETS_TOPIC.to_string(),
                id: uuid::Uuid::nil(),
                partitions: 3,
                configs: Default::default(),
                placement: vec![
                    PartitionState::led_by_first(vec![1, 2]),
                    PartitionState::led_by_first(vec![2, 1]),
                    leaderless,
                ],
            },
        );
        let found = coordinator_broker(&image, OFFSETS_TOPIC, 0).map(|b| b.host.as_str());
        assert_eq!(found, Some("h1"));
        // Led by a fenced broker, by nobody, out of range, or no topic: not available.
        assert!(coordinator_broker(&image, OFFSETS_TOPIC, 1).is_none());
        assert!(coordinator_broker(&image, OFFSETS_TOPIC, 2).is_none());
        assert!(coordinator_broker(&image, OFFSETS_TOPIC, 3).is_none());
        assert!(coordinator_broker(&image, TRANSACTION_STATE_TOPIC, 0).is_none());
    }
}
