//! DescribeQuorum (key 55), versions 0 to 2: the controller quorum behind the metadata log, as
//! `kafka-metadata-quorum.sh describe --status / --replication` shows it (KIP-595, KIP-836,
//! KIP-853).
//!
//! Owner: any shard; the quorum's state comes from shard 0 (`ShardContext::quorum_status`, one
//! call), a lone node's from its own image. Every node is a combined broker and controller, so
//! the request is answered where it arrives rather than forwarded.
//!
//! The answer is about topic `__cluster_metadata`, partition 0; a request that names anything
//! else (or more) gets UNKNOWN_TOPIC_OR_PARTITION for each partition it names, as Kafka's
//! quorum answers it. It needs DESCRIBE on the cluster (CLUSTER_AUTHORIZATION_FAILED, top
//! level). Offsets are positions in the Raft log: a voter's log end offset is the index of its
//! last entry (the next offset), the high watermark the commit index.
//!
//! - A lone node is its own quorum of one: leader and only voter at epoch 0 (it never held an
//!   election), its log end and high watermark the offset after its image's last record, its
//!   fetch and caught-up times now. v2 lists it with no listeners: it has no controller
//!   listener.
//! - The quorum's leader answers what it knows: its term as the leader epoch, its commit index,
//!   and for every voter the log end it has matched, the time it last heard from it (any Raft
//!   message; now for itself) as the last fetch time, and that time as the last caught-up time
//!   when the voter's log end is the leader's, -1 otherwise (the leader keeps no history of
//!   when a lagging voter was last caught up).
//! - A follower knows the leader, the term, its own commit index and log end, not the other
//!   voters' progress: those are -1, as Kafka reports unknown values. With no known leader
//!   (an election in progress, or the quorum still starting) the partition is
//!   NOT_LEADER_OR_FOLLOWER, as Kafka's quorum answers when it is not the leader.
//!
//! Observers (brokers that are not voters) are always empty: every node is a voter. v2 adds
//! each voter's controller listener, named by `controller.listener.names`.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::VersionRange;

use crate::acl;
use crate::broker::ShardContext;
use crate::cluster::driver::QuorumStatus;
use crate::config::kraft::Voter;
use crate::kafka::admin::text;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeQuorum,
    versions: VersionRange { min: 0, max: 2 },
    handle,
};

/// The metadata log's topic, the only quorum partition.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// The name v2 gives a voter's listener when `controller.listener.names` names none.
const CONTROLLER_LISTENER: &str = "CONTROLLER";

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: DescribeQuorumRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let version = request.version();
        if !context.authorize(
            &request.session,
            acl::operation::DESCRIBE,
            acl::resource_type::CLUSTER,
            acl::CLUSTER_NAME,
        ) {
            let response = DescribeQuorumResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                .with_error_message(Some(text("Cluster authorization failed.")));
            return request.respond(&response);
        }
        if !asks_for_metadata_partition(&body) {
            return request.respond(&unknown_partitions(&body));
        }
        let node_id = context.identity.node_id;
        let now = now_ms();
        let (partition, nodes) = if context.clustered() {
            let status = context.quorum_status().await;
            let voters = &context.config.quorum.voters;
            let listener = context
                .config
                .quorum
                .controller_listener
                .as_ref()
                .map_or(CONTROLLER_LISTENER, |l| l.name.as_str());
            (
                quorum_partition(status.as_ref(), voters, now),
                voter_nodes(voters, listener),
            )
        } else {
            let log_end = context.image().offset + 1;
            let lone = Node::default().with_node_id(BrokerId(node_id));
            (lone_partition(node_id, log_end, now), vec![lone])
        };
        let response = DescribeQuorumResponse::default()
            .with_topics(vec![
                TopicData::default()
                    .with_topic_name(TopicName(text(METADATA_TOPIC)))
                    .with_partitions(vec![partition]),
            ])
            .with_nodes(if version >= 2 { nodes } else { Vec::new() });
        request.respond(&response)
    }
    .boxed_local()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Whether the request names exactly `__cluster_metadata` partition 0, as Kafka requires.
fn asks_for_metadata_partition(body: &DescribeQuorumRequest) -> bool {
    match body.topics.as_slice() {
        [topic] => {
            topic.topic_name.0.as_str() == METADATA_TOPIC
                && matches!(topic.partitions.as_slice(), [p] if p.partition_index == 0)
        }
        _ => false,
    }
}

/// UNKNOWN_TOPIC_OR_PARTITION for every partition the request names.
fn unknown_partitions(body: &DescribeQuorumRequest) -> DescribeQuorumResponse {
    let topics = body
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_leader_id(BrokerId(-1))
                        .with_leader_epoch(-1)
                        .with_high_watermark(-1)
                })
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}

fn replica(id: i32, log_end_offset: i64, last_fetch: i64, caught_up: i64) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(id))
        .with_log_end_offset(log_end_offset)
        .with_last_fetch_timestamp(last_fetch)
        .with_last_caught_up_timestamp(caught_up)
}

/// A lone node's quorum of one; `log_end` is the offset after its image's last record.
fn lone_partition(node_id: i32, log_end: i64, now: i64) -> PartitionData {
    PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(node_id))
        .with_leader_epoch(0)
        .with_high_watermark(log_end)
        .with_current_voters(vec![replica(node_id, log_end, now, now)])
}

/// The quorum partition as `status` (this node's view; `None` while the quorum starts) shows
/// it, over the configured `voters`. See the module documentation.
fn quorum_partition(status: Option<&QuorumStatus>, voters: &[Voter], now: i64) -> PartitionData {
    let mut ids: Vec<i32> = voters.iter().map(|v| v.id).collect();
    ids.sort_unstable();
    let Some(status) = status else {
        return PartitionData::default()
            .with_partition_index(0)
            .with_error_code(ResponseError::NotLeaderOrFollower.code())
            .with_error_message(Some(text("The controller quorum is not running yet.")))
            .with_leader_id(BrokerId(-1))
            .with_leader_epoch(-1)
            .with_high_watermark(-1);
    };
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let me = i32::try_from(status.node_id).unwrap_or(-1);
    let leader = status.leader.and_then(|l| i32::try_from(l).ok());
    let leading = leader == Some(me);
    let current_voters = ids
        .iter()
        .map(|&id| {
            if !leading {
                return if id == me {
                    replica(id, to_i64(status.last_index), -1, -1)
                } else {
                    replica(id, -1, -1, -1)
                };
            }
            if id == me {
                return replica(id, to_i64(status.last_index), now, now);
            }
            let matched = status
                .voters
                .iter()
                .find(|(v, _)| i64::from(id) == to_i64(*v))
                .map(|(_, m)| to_i64(*m));
            let heard = status
                .heard_ms_ago
                .iter()
                .find(|(v, _)| i64::from(id) == to_i64(*v))
                .map(|(_, ago)| now.saturating_sub(to_i64(*ago)));
            let caught_up = match (matched, heard) {
                (Some(m), Some(at)) if m >= to_i64(status.last_index) => at,
                _ => -1,
            };
            replica(id, matched.unwrap_or(-1), heard.unwrap_or(-1), caught_up)
        })
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(leader.unwrap_or(-1)))
        .with_leader_epoch(i32::try_from(status.term).unwrap_or(i32::MAX))
        .with_high_watermark(to_i64(status.commit_index))
        .with_current_voters(current_voters);
    if leader.is_none() {
        return partition
            .with_error_code(ResponseError::NotLeaderOrFollower.code())
            .with_error_message(Some(text("The controller quorum has no leader right now.")));
    }
    partition
}

/// v2's nodes: each voter with its controller listener.
fn voter_nodes(voters: &[Voter], listener: &str) -> Vec<Node> {
    let mut nodes: Vec<Node> = voters
        .iter()
        .map(|v| {
            Node::default()
                .with_node_id(BrokerId(v.id))
                .with_listeners(vec![
                    Listener::default()
                        .with_name(text(listener))
                        .with_host(text(v.host.clone()))
                        .with_port(v.port),
                ])
        })
        .collect();
    nodes.sort_by_key(|n| n.node_id.0);
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::describe_quorum_request;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn request(topic: &str, partitions: &[i32]) -> DescribeQuorumRequest {
        DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(text(topic)))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            describe_quorum_request::PartitionData::default()
                                .with_partition_index(p)
                        })
                        .collect(),
                ),
        ])
    }

    fn round_trip(response: &DescribeQuorumResponse, version: i16) -> DescribeQuorumResponse {
        let mut buf = BytesMut::new();
        response.encode(&mut buf, version).unwrap();
        DescribeQuorumResponse::decode(&mut buf.freeze(), version).unwrap()
    }

    fn voter(id: i32) -> Voter {
        Voter {
            id,
            host: "127.0.0.1".to_string(),
            port: 9093 + id as u16,
        }
    }

    #[test]
    fn only_the_metadata_partition_is_a_quorum() {
        assert!(asks_for_metadata_partition(&request(METADATA_TOPIC, &[0])));
        assert!(!asks_for_metadata_partition(&request(METADATA_TOPIC, &[1])));
        assert!(!asks_for_metadata_partition(&request(
            METADATA_TOPIC,
            &[0, 0]
        )));
        assert!(!asks_for_metadata_partition(&request("t", &[0])));
        let refused = unknown_partitions(&request("t", &[0, 3]));
        let codes: Vec<(i32, i16)> = refused.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.error_code))
            .collect();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(codes, vec![(0, unknown), (3, unknown)]);
    }

    #[test]
    fn lone_node_is_leader_and_only_voter() {
        let partition = lone_partition(3, 42, 1_000);
        let response = DescribeQuorumResponse::default()
            .with_topics(vec![
                TopicData::default()
                    .with_topic_name(TopicName(text(METADATA_TOPIC)))
                    .with_partitions(vec![partition]),
            ])
            .with_nodes(vec![Node::default().with_node_id(BrokerId(3))]);
        let decoded = round_trip(&response, 2);
        assert_eq!(decoded.error_code, 0);
        assert_eq!(decoded.nodes.len(), 1);
        let p = &decoded.topics[0].partitions[0];
        assert_eq!(decoded.topics[0].topic_name.0.as_str(), METADATA_TOPIC);
        assert_eq!(
            (
                p.error_code,
                p.leader_id.0,
                p.leader_epoch,
                p.high_watermark
            ),
            (0, 3, 0, 42)
        );
        assert_eq!(p.current_voters.len(), 1);
        let me = &p.current_voters[0];
        assert_eq!(
            (me.replica_id.0, me.log_end_offset, me.last_fetch_timestamp),
            (3, 42, 1_000)
        );
        assert_eq!(me.last_caught_up_timestamp, 1_000);
        assert!(p.observers.is_empty());
        // v0 carries no timestamps and no nodes: the same answer still encodes.
        let v0 = round_trip(&response.clone().with_nodes(Vec::new()), 0);
        assert_eq!(
            v0.topics[0].partitions[0].current_voters[0].log_end_offset,
            42
        );
    }

    #[test]
    fn leader_reports_every_voter() {
        let status = QuorumStatus {
            node_id: 1,
            leader: Some(1),
            term: 7,
            commit_index: 90,
            last_index: 100,
            voters: vec![(1, 100), (2, 100), (3, 60)],
            heard_ms_ago: vec![(2, 10), (3, 2_000)],
        };
        let voters = [voter(3), voter(1), voter(2)];
        let p = quorum_partition(Some(&status), &voters, 10_000);
        assert_eq!((p.error_code, p.leader_id.0, p.leader_epoch), (0, 1, 7));
        assert_eq!(p.high_watermark, 90);
        let states: Vec<(i32, i64, i64, i64)> = p
            .current_voters
            .iter()
            .map(|r| {
                (
                    r.replica_id.0,
                    r.log_end_offset,
                    r.last_fetch_timestamp,
                    r.last_caught_up_timestamp,
                )
            })
            .collect();
        assert_eq!(
            states,
            vec![
                (1, 100, 10_000, 10_000),
                (2, 100, 9_990, 9_990),
                (3, 60, 8_000, -1)
            ]
        );
        let nodes = voter_nodes(&voters, "CONTROLLER");
        assert_eq!(
            nodes.iter().map(|n| n.node_id.0).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(nodes[1].listeners[0].port, 9095);
        let response = DescribeQuorumResponse::default()
            .with_topics(vec![TopicData::default().with_partitions(vec![p])])
            .with_nodes(nodes);
        assert_eq!(round_trip(&response, 2), response);
    }

    #[test]
    fn follower_knows_only_itself() {
        let status = QuorumStatus {
            node_id: 2,
            leader: Some(1),
            term: 7,
            commit_index: 88,
            last_index: 95,
            voters: Vec::new(),
            heard_ms_ago: Vec::new(),
        };
        let voters = [voter(1), voter(2), voter(3)];
        let p = quorum_partition(Some(&status), &voters, 10_000);
        assert_eq!((p.error_code, p.leader_id.0, p.high_watermark), (0, 1, 88));
        let ends: Vec<i64> = p.current_voters.iter().map(|r| r.log_end_offset).collect();
        assert_eq!(ends, vec![-1, 95, -1]);
        // No leader: not served, as Kafka's quorum answers a non-leader.
        let electing = QuorumStatus {
            leader: None,
            ..status
        };
        let p = quorum_partition(Some(&electing), &voters, 10_000);
        assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
        assert_eq!(p.leader_id.0, -1);
        let p = quorum_partition(None, &voters, 10_000);
        assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
    }
}
