//! Metadata (key 3), versions 0 to 12: brokers, cluster id, controller, topics and partitions.
//!
//! Owner: any shard; answers from the shard's current metadata image. A lone node is a
//! cluster of one: it is every partition's leader and only replica at leader epoch 0, and the
//! controller, and the answer needs no cross-shard call.
//!
//! Under a controller quorum (`ShardContext::clustered`) the brokers are every live
//! (registered, unfenced) broker of the image with its id, host, port and rack; the controller
//! id (v1+) is the quorum's leader as shard 0 sees it (one `quorum_status` call per request,
//! only at versions that carry it; -1 while there is none); each partition carries the image's
//! leader, leader epoch, replicas, ISR and offline replicas (v5+: replicas that are not live
//! brokers). A partition whose leader is -1 or not a live broker is LEADER_NOT_AVAILABLE with
//! leader -1, as Kafka answers it; at v0, as in Kafka, the replica and ISR lists keep only live
//! brokers and a partition missing some is REPLICA_NOT_AVAILABLE.
//!
//! Which topics: a null list (v1+) or an empty list at v0 means all topics; otherwise the
//! topics named (by name, or by id from v10), each once, in request order. A topic that does
//! not exist is answered UNKNOWN_TOPIC_OR_PARTITION (UNKNOWN_TOPIC_ID when asked by id), and
//! an illegal name INVALID_TOPIC_EXCEPTION. With `auto.create.topics.enable` (and, from v4, the
//! request's `allow_auto_topic_creation`) an unknown topic named in the request is created
//! with `num.partitions` partitions through the controller and answered LEADER_NOT_AVAILABLE,
//! as Kafka answers the request that creates a topic; the client's retry finds it.
//!
//! With an authorizer (`crate::acl`): a topic the client may not DESCRIBE is left out of an
//! all-topics answer and answered TOPIC_AUTHORIZATION_FAILED when named; auto-creation needs
//! CREATE on the cluster or on the topic (without it an unknown topic stays
//! UNKNOWN_TOPIC_OR_PARTITION); authorized-operations bit sets come from the authorizer.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tracing::debug;
use uuid::Uuid;

use crate::acl;
use crate::broker::ShardContext;
use crate::broker::error;
use crate::kafka::admin;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::metadata::topic_name::validate_topic_name;
use crate::metadata::{ControllerRequest, MetadataImage, NewTopic, TopicImage};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 12 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::Metadata,
    versions: VERSIONS,
    handle,
};

/// Kafka's `AclOperation` codes, for the authorized-operations bit sets. With no authorizer
/// configured, Kafka reports every operation that applies to the resource as allowed.
mod acl_operation {
    pub const READ: i32 = 3;
    pub const WRITE: i32 = 4;
    pub const CREATE: i32 = 5;
    pub const DELETE: i32 = 6;
    pub const ALTER: i32 = 7;
    pub const DESCRIBE: i32 = 8;
    pub const CLUSTER_ACTION: i32 = 9;
    pub const DESCRIBE_CONFIGS: i32 = 10;
    pub const ALTER_CONFIGS: i32 = 11;
    pub const IDEMPOTENT_WRITE: i32 = 12;
}

fn bits(operations: &[i32]) -> i32 {
    operations.iter().fold(0, |acc, op| acc | (1 << op))
}

fn topic_operations() -> i32 {
    use acl_operation::*;
    bits(&[
        READ,
        WRITE,
        CREATE,
        DELETE,
        ALTER,
        DESCRIBE,
        DESCRIBE_CONFIGS,
        ALTER_CONFIGS,
    ])
}

/// The cluster operations allowed with no authorizer configured.
pub fn cluster_operations() -> i32 {
    use acl_operation::*;
    bits(&[
        CREATE,
        ALTER,
        DESCRIBE,
        CLUSTER_ACTION,
        DESCRIBE_CONFIGS,
        ALTER_CONFIGS,
        IDEMPOTENT_WRITE,
    ])
}

/// Kafka's "operations not requested" marker.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: MetadataRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let created = auto_create(&context, &request, &body).await;
        let node_id = context.identity.node_id;
        let controller_id = if !context.clustered() {
            node_id
        } else if request.version() >= 1 {
            quorum_leader(&context).await
        } else {
            // v0 has no controller field: no need to ask shard 0.
            -1
        };
        answer(&context, &request, &body, &created, controller_id)
    }
    .boxed_local()
}

/// Creates the unknown, validly named topics the request asks for, when both the broker
/// (`auto.create.topics.enable`) and the request (v4+: `allow_auto_topic_creation`) allow it.
/// Returns the names whose creation was attempted: like Kafka, the response reports them as
/// LEADER_NOT_AVAILABLE, and the client's next Metadata request finds them.
async fn auto_create(
    context: &Rc<ShardContext>,
    request: &Request,
    body: &MetadataRequest,
) -> Vec<String> {
    let allowed = request.version() < 4 || body.allow_auto_topic_creation;
    if !allowed || !context.config.auto_create_topics_enable {
        return Vec::new();
    }
    let image = context.image();
    let session = &request.session;
    let may_create_any = context.authorize(
        session,
        acl::operation::CREATE,
        acl::resource_type::CLUSTER,
        acl::CLUSTER_NAME,
    );
    let mut missing: Vec<String> = Vec::new();
    for wanted in body.topics.iter().flatten() {
        if let Some(name) = &wanted.name {
            let name = name.0.as_str();
            let topic = acl::resource_type::TOPIC;
            if image.topic(name).is_none()
                && validate_topic_name(name).is_ok()
                && !missing.iter().any(|m| m == name)
                && context.authorize(session, acl::operation::DESCRIBE, topic, name)
                && (may_create_any
                    || context.authorize(session, acl::operation::CREATE, topic, name))
            {
                missing.push(name.to_string());
            }
        }
    }
    if missing.is_empty() {
        return missing;
    }
    let request = ControllerRequest::CreateTopics {
        topics: missing
            .iter()
            .map(|name| NewTopic {
                name: name.clone(),
                partitions: context.config.num_partitions,
                replication_factor: context.config.default_replication_factor,
                ..NewTopic::default()
            })
            .collect(),
        validate_only: false,
    };
    if let Err((code, message)) = admin::call_controller(context, request).await {
        debug!(code, %message, "auto-creating topics failed");
    }
    missing
}

/// The controller quorum's leader, -1 while there is none (or shard 0 cannot say).
pub async fn quorum_leader(context: &Rc<ShardContext>) -> i32 {
    context
        .quorum_status()
        .await
        .and_then(|status| status.leader)
        .and_then(|leader| i32::try_from(leader).ok())
        .unwrap_or(-1)
}

fn answer(
    context: &ShardContext,
    request: &Request,
    body: &MetadataRequest,
    created: &[String],
    controller_id: i32,
) -> HandlerOutcome {
    let version = request.version();
    let image = context.image();
    let node_id = context.identity.node_id;
    let view = ClusterView {
        image: &image,
        node_id,
        clustered: context.clustered(),
        current: image
            .brokers
            .get(&node_id)
            .is_some_and(|b| b.incarnation == crate::metadata::quorum::process_incarnation()),
        version,
    };
    let include_topic_operations = version >= 8 && body.include_topic_authorized_operations;
    let session = &request.session;
    let may_describe = |name: &str| {
        context.authorize(
            session,
            acl::operation::DESCRIBE,
            acl::resource_type::TOPIC,
            name,
        )
    };
    let describe = |topic: &TopicImage| {
        let operations = if include_topic_operations {
            authorized_operations(context, request, acl::resource_type::TOPIC, &topic.name)
        } else {
            OPERATIONS_NOT_REQUESTED
        };
        view.describe_topic(topic, operations)
    };

    let all_topics = match &body.topics {
        None => true,
        Some(list) => list.is_empty() && version == 0,
    };
    let topics: Vec<MetadataResponseTopic> = if all_topics {
        // Listing every topic leaves out the ones the client may not describe.
        image
            .topics
            .values()
            .filter(|t| may_describe(&t.name))
            .map(describe)
            .collect()
    } else {
        let mut seen_names: Vec<&str> = Vec::new();
        let mut seen_ids: Vec<Uuid> = Vec::new();
        let mut answered = Vec::new();
        for wanted in body.topics.iter().flatten() {
            match &wanted.name {
                Some(name) => {
                    let name = name.0.as_str();
                    if seen_names.contains(&name) {
                        continue;
                    }
                    seen_names.push(name);
                    answered.push(match image.topic(name) {
                        _ if !may_describe(name) => topic_error(
                            Some(name),
                            Uuid::nil(),
                            ResponseError::TopicAuthorizationFailed,
                        ),
                        _ if created.iter().any(|c| c == name) => {
                            topic_error(Some(name), Uuid::nil(), ResponseError::LeaderNotAvailable)
                        }
                        Some(topic) => describe(topic),
                        None if validate_topic_name(name).is_err() => topic_error(
                            Some(name),
                            Uuid::nil(),
                            ResponseError::InvalidTopicException,
                        ),
                        None => topic_error(
                            Some(name),
                            Uuid::nil(),
                            ResponseError::UnknownTopicOrPartition,
                        ),
                    });
                }
                None => {
                    if seen_ids.contains(&wanted.topic_id) {
                        continue;
                    }
                    seen_ids.push(wanted.topic_id);
                    answered.push(match image.topic_by_id(wanted.topic_id) {
                        Some(topic) if !wanted.topic_id.is_nil() && !may_describe(&topic.name) => {
                            topic_error(
                                None,
                                wanted.topic_id,
                                ResponseError::TopicAuthorizationFailed,
                            )
                        }
                        Some(topic) if !wanted.topic_id.is_nil() => describe(topic),
                        _ => topic_error(None, wanted.topic_id, ResponseError::UnknownTopicId),
                    });
                }
            }
        }
        answered
    };

    let mut response = MetadataResponse::default()
        .with_brokers({
            let advertised = context.advertised_for(&request.session);
            view.brokers(&advertised.host, advertised.port)
        })
        .with_cluster_id(Some(StrBytes::from_string(
            context.identity.cluster_id.clone(),
        )))
        .with_controller_id(BrokerId(controller_id))
        .with_topics(topics);
    if (8..=10).contains(&version) && body.include_cluster_authorized_operations {
        response = response.with_cluster_authorized_operations(authorized_operations(
            context,
            request,
            acl::resource_type::CLUSTER,
            acl::CLUSTER_NAME,
        ));
    }
    request.respond(&response)
}

/// The operations on a topic or the cluster the request's principal may perform, as Kafka's
/// authorized-operations bit set: every operation that applies to the resource with no
/// authorizer configured, else the ones the authorizer allows.
pub fn authorized_operations(
    context: &ShardContext,
    request: &Request,
    resource_type: i8,
    name: &str,
) -> i32 {
    let all = if resource_type == acl::resource_type::CLUSTER {
        cluster_operations()
    } else {
        topic_operations()
    };
    if context.config.authorizer.is_none() {
        return all;
    }
    (0..32)
        .filter(|bit| all & (1 << bit) != 0)
        .filter(|&bit| context.authorize(&request.session, bit as i8, resource_type, name))
        .fold(0, |acc, bit| acc | (1 << bit))
}

/// What the answer says of brokers and partitions, from one image: independent of the
/// request's topics and of the authorizer.
struct ClusterView<'a> {
    image: &'a MetadataImage,
    /// This node.
    node_id: i32,
    /// In a controller quorum (else a lone node, which leads everything).
    clustered: bool,
    /// Under a quorum: this process is registered in the image (fenced or not). Until then the
    /// image may be one from before a restart (leaders and ISRs long changed): the brokers
    /// are listed but no partition has a leader, so clients ask again (and ask others).
    /// A broker fenced while it runs (its session lapsed) answers from its image, as Kafka's
    /// metadata cache does. The broker list is never emptied: librdkafka (2.10 on) drops every
    /// broker a Metadata answer leaves out, its group coordinator with them, and a consumer
    /// that asked a just-resumed, still fenced broker stalled for minutes.
    current: bool,
    /// The request's version.
    version: i16,
}

impl ClusterView<'_> {
    /// The brokers: every live one under a quorum, else this node at its advertised address.
    fn brokers(&self, host: &str, port: u16) -> Vec<MetadataResponseBroker> {
        if !self.clustered {
            return vec![
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(self.node_id))
                    .with_host(StrBytes::from_string(host.to_string()))
                    .with_port(i32::from(port)),
            ];
        }
        self.image
            .live_brokers()
            .map(|b| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_port(i32::from(b.port))
                    .with_rack(b.rack.clone().map(StrBytes::from_string))
            })
            .collect()
    }

    fn describe_topic(&self, topic: &TopicImage, operations: i32) -> MetadataResponseTopic {
        let partitions = (0..topic.partitions)
            .map(|index| self.describe_partition(topic, index))
            .collect();
        MetadataResponseTopic::default()
            .with_error_code(error::NONE)
            .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
            .with_topic_id(topic.id)
            .with_is_internal(topic.is_internal())
            .with_partitions(partitions)
            .with_topic_authorized_operations(operations)
    }

    fn describe_partition(&self, topic: &TopicImage, index: i32) -> MetadataResponsePartition {
        let partition = MetadataResponsePartition::default().with_partition_index(index);
        let ids = |ids: &[i32]| ids.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
        let state = match topic.partition_state(index) {
            Some(state) => state,
            None if self.clustered => {
                // Not placed (yet): nothing to tell but that it has no leader.
                return partition
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1);
            }
            None => {
                let me = vec![BrokerId(self.node_id)];
                return partition
                    .with_error_code(error::NONE)
                    .with_leader_id(BrokerId(self.node_id))
                    .with_leader_epoch(crate::kafka::leader_epoch::LONE_EPOCH)
                    .with_replica_nodes(me.clone())
                    .with_isr_nodes(me);
            }
        };
        let live = |id: &&i32| self.image.is_live(**id);
        if !self.current {
            return partition
                .with_error_code(ResponseError::LeaderNotAvailable.code())
                .with_leader_id(BrokerId(-1))
                .with_leader_epoch(-1)
                .with_replica_nodes(ids(&state.replicas))
                .with_isr_nodes(ids(&state.isr));
        }
        let offline: Vec<i32> = state
            .replicas
            .iter()
            .filter(|id| !live(id))
            .copied()
            .collect();
        let (replicas, isr): (Vec<i32>, Vec<i32>) = if self.version == 0 {
            (
                state.replicas.iter().filter(live).copied().collect(),
                state.isr.iter().filter(live).copied().collect(),
            )
        } else {
            (state.replicas.clone(), state.isr.clone())
        };
        let leader_live = state.leader >= 0 && self.image.is_live(state.leader);
        let code = if !leader_live {
            ResponseError::LeaderNotAvailable.code()
        } else if replicas.len() < state.replicas.len() || isr.len() < state.isr.len() {
            ResponseError::ReplicaNotAvailable.code()
        } else {
            error::NONE
        };
        partition
            .with_error_code(code)
            .with_leader_id(BrokerId(if leader_live { state.leader } else { -1 }))
            .with_leader_epoch(state.leader_epoch)
            .with_replica_nodes(ids(&replicas))
            .with_isr_nodes(ids(&isr))
            .with_offline_replicas(ids(&offline))
    }
}

fn topic_error(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
        .with_topic_id(id)
        .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::image::{BrokerImage, PartitionState};
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn broker(id: i32, rack: Option<&str>, fenced: bool) -> BrokerImage {
        BrokerImage {
            id,
            epoch: 1,
            incarnation: Uuid::nil(),
            registered_index: 1,
            host: format!("host-{id}"),
            port: 9000 + id as u16,
            rack: rack.map(str::to_string),
            fenced,
            shutting_down: false,
        }
    }

    /// Three brokers, 3 fenced; "t" has three partitions: led by 1, led by 2 with 3 in its
    /// replicas, and led by 3 (fenced, so no leader is available).
    fn three_broker_image() -> MetadataImage {
        let mut image = MetadataImage::empty();
        image.offset = 41;
        for b in [
            broker(1, Some("a"), false),
            broker(2, None, false),
            broker(3, Some("c"), true),
        ] {
            image.brokers.insert(b.id, b);
        }
        let mut second = PartitionState::led_by_first(vec![2, 3, 1]);
        second.isr = vec![2, 1];
        second.leader_epoch = 5;
        let mut third = PartitionState::led_by_first(vec![3, 1, 2]);
        third.leader_epoch = 2;
        image.topics.insert(
            "t".to_string(),
            TopicImage {
                name: "t".to_string(),
                id: Uuid::from_u128(7),
                partitions: 3,
                configs: Default::default(),
                placement: vec![PartitionState::led_by_first(vec![1, 2, 3]), second, third],
            },
        );
        image
    }

    fn round_trip(view: &ClusterView<'_>, controller_id: i32) -> MetadataResponse {
        let topic = view.image.topic("t").unwrap();
        let response = MetadataResponse::default()
            .with_brokers(view.brokers("self-host", 9092))
            .with_controller_id(BrokerId(controller_id))
            .with_topics(vec![view.describe_topic(topic, OPERATIONS_NOT_REQUESTED)]);
        let mut buf = BytesMut::new();
        response.encode(&mut buf, view.version).unwrap();
        MetadataResponse::decode(&mut buf.freeze(), view.version).unwrap()
    }

    fn ids(list: &[BrokerId]) -> Vec<i32> {
        list.iter().map(|b| b.0).collect()
    }

    #[test]
    fn quorum_metadata_lists_live_brokers_and_placement() {
        let image = three_broker_image();
        let view = ClusterView {
            image: &image,
            node_id: 1,
            clustered: true,
            current: true,
            version: 12,
        };
        let decoded = round_trip(&view, 2);
        assert_eq!(decoded.controller_id.0, 2);
        let brokers: Vec<(i32, String, i32, Option<String>)> = decoded
            .brokers
            .iter()
            .map(|b| {
                let rack = b.rack.as_ref().map(|r| r.to_string());
                (b.node_id.0, b.host.to_string(), b.port, rack)
            })
            .collect();
        assert_eq!(
            brokers,
            vec![
                (1, "host-1".to_string(), 9001, Some("a".to_string())),
                (2, "host-2".to_string(), 9002, None),
            ]
        );
        let partitions = &decoded.topics[0].partitions;
        assert_eq!(partitions.len(), 3);
        let p0 = &partitions[0];
        assert_eq!((p0.error_code, p0.leader_id.0, p0.leader_epoch), (0, 1, 0));
        assert_eq!(ids(&p0.replica_nodes), vec![1, 2, 3]);
        assert_eq!(ids(&p0.isr_nodes), vec![1, 2, 3]);
        assert_eq!(ids(&p0.offline_replicas), vec![3]);
        let p1 = &partitions[1];
        assert_eq!((p1.error_code, p1.leader_id.0, p1.leader_epoch), (0, 2, 5));
        assert_eq!(ids(&p1.replica_nodes), vec![2, 3, 1]);
        assert_eq!(ids(&p1.isr_nodes), vec![2, 1]);
        let p2 = &partitions[2];
        assert_eq!(p2.error_code, ResponseError::LeaderNotAvailable.code());
        assert_eq!((p2.leader_id.0, p2.leader_epoch), (-1, 2));
        assert_eq!(ids(&p2.replica_nodes), vec![3, 1, 2]);
        assert_eq!(ids(&p2.offline_replicas), vec![3]);
    }

    /// A broker fenced while it runs (3 in this image) lists the live brokers and the leaders
    /// it knows; one whose process is not registered yet (a restart) lists the brokers too,
    /// but no leader from its old image. Neither answers with no brokers.
    #[test]
    fn a_fenced_or_restarting_broker_still_lists_the_live_brokers() {
        let image = three_broker_image();
        for current in [true, false] {
            let view = ClusterView {
                image: &image,
                node_id: 3,
                clustered: true,
                current,
                version: 12,
            };
            let decoded = round_trip(&view, 2);
            let brokers: Vec<i32> = decoded.brokers.iter().map(|b| b.node_id.0).collect();
            assert_eq!(brokers, vec![1, 2], "current {current}");
            let p0 = &decoded.topics[0].partitions[0];
            if current {
                assert_eq!((p0.error_code, p0.leader_id.0), (0, 1));
            } else {
                assert_eq!(p0.error_code, ResponseError::LeaderNotAvailable.code());
                assert_eq!((p0.leader_id.0, p0.leader_epoch), (-1, -1));
                assert_eq!(ids(&p0.replica_nodes), vec![1, 2, 3]);
            }
        }
    }

    #[test]
    fn quorum_metadata_v0_keeps_only_live_replicas() {
        let image = three_broker_image();
        let view = ClusterView {
            image: &image,
            node_id: 2,
            clustered: true,
            current: true,
            version: 0,
        };
        let decoded = round_trip(&view, -1);
        let p0 = &decoded.topics[0].partitions[0];
        assert_eq!(p0.error_code, ResponseError::ReplicaNotAvailable.code());
        assert_eq!(p0.leader_id.0, 1);
        assert_eq!(ids(&p0.replica_nodes), vec![1, 2]);
    }

    #[test]
    fn lone_node_is_the_whole_cluster() {
        let mut image = three_broker_image();
        image.brokers.clear();
        image.topics.get_mut("t").unwrap().placement.clear();
        let view = ClusterView {
            image: &image,
            node_id: 4,
            clustered: false,
            current: true,
            version: 12,
        };
        let decoded = round_trip(&view, 4);
        assert_eq!(decoded.brokers.len(), 1);
        assert_eq!(decoded.brokers[0].node_id.0, 4);
        assert_eq!(decoded.brokers[0].host.as_str(), "self-host");
        assert_eq!(decoded.brokers[0].port, 9092);
        for p in &decoded.topics[0].partitions {
            assert_eq!((p.error_code, p.leader_id.0, p.leader_epoch), (0, 4, 0));
            assert_eq!(ids(&p.replica_nodes), vec![4]);
            assert_eq!(ids(&p.isr_nodes), vec![4]);
            assert!(p.offline_replicas.is_empty());
        }
    }

    #[test]
    fn operation_bit_sets_match_kafka() {
        // Topics: READ..DESCRIBE (bits 3 to 8), DESCRIBE_CONFIGS and ALTER_CONFIGS (10, 11).
        // Cluster: CREATE (5), ALTER to IDEMPOTENT_WRITE (7 to 12).
        assert_eq!(topic_operations(), 3576);
        assert_eq!(cluster_operations(), 8096);
    }
}
