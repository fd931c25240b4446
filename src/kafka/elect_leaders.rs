//! ElectLeaders (key 43), versions 0 to 2: leader elections asked for by an admin client
//! (`kafka-leader-election.sh`, `AdminClient.electLeaders`).
//!
//! Owner: the connection's shard checks ALTER on the CLUSTER resource (else every partition,
//! and from v1 the whole answer, is CLUSTER_AUTHORIZATION_FAILED, as Kafka answers) and sends
//! the request to shard 0's controller, which plans it against the authoritative image
//! (`controller::Plan::elect_requested`) and commits the new leaders. Awaits only that call.
//!
//! Election type 0 (preferred; the only one in v0): the first replica leads if it is live and
//! in the ISR; ELECTION_NOT_NEEDED if it leads already, PREFERRED_LEADER_NOT_AVAILABLE
//! otherwise. Type 1 (unclean): only a partition without a leader gets one, its first live
//! in-sync replica, else (the ISR empty) its first live eligible leader replica (KIP-966's
//! ELR, which holds every acknowledged record), else its first live replica (ELIGIBLE_LEADERS_NOT_AVAILABLE when none is
//! live; ELECTION_NOT_NEEDED when it has a leader). Null `topic_partitions` means every
//! partition, and partitions that needed no election are left out of the answer. Unknown
//! topics and partitions are UNKNOWN_TOPIC_OR_PARTITION. A lone node leads every partition it
//! holds, and each is its own preferred replica: no election is ever needed there.
//! `timeout_ms` is not used: the answer comes once the controller has committed the change
//! or given up, within the quorum's commit bound (`limits::QUORUM_COMMIT_TIMEOUT_MS`).

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{CLUSTER_NAME, operation, resource_type};
use crate::broker::{ShardContext, error};
use crate::kafka::admin::{text, topic_name};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::client;

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::ElectLeaders,
    versions: VERSIONS,
    handle,
};

/// Kafka's `ElectionType` codes.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: ElectLeadersRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let asked: Option<Vec<(String, Vec<i32>)>> = body.topic_partitions.as_ref().map(|list| {
            list.iter()
                .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
                .collect()
        });
        // Every listed partition gets `code`, and so does the whole answer.
        let failed_all = |code: i16, message: String| {
            let results = asked
                .iter()
                .flatten()
                .map(|(name, ids)| {
                    ReplicaElectionResult::default()
                        .with_topic(topic_name(name.clone()))
                        .with_partition_result(
                            ids.iter()
                                .map(|id| {
                                    PartitionResult::default()
                                        .with_partition_id(*id)
                                        .with_error_code(code)
                                        .with_error_message(Some(text(message.clone())))
                                })
                                .collect(),
                        )
                })
                .collect();
            request.respond(
                &ElectLeadersResponse::default()
                    .with_error_code(code)
                    .with_replica_election_results(results),
            )
        };
        if !context.authorize(
            &request.session,
            operation::ALTER,
            resource_type::CLUSTER,
            CLUSTER_NAME,
        ) {
            return failed_all(
                ResponseError::ClusterAuthorizationFailed.code(),
                "Cluster authorization failed.".to_string(),
            );
        }
        let unclean = match body.election_type {
            PREFERRED => false,
            UNCLEAN => true,
            other => {
                return failed_all(
                    ResponseError::InvalidRequest.code(),
                    format!("Unknown election type {other}: 0 (preferred) or 1 (unclean)"),
                );
            }
        };
        match client::elect_leaders(context.as_ref(), unclean, asked.clone()).await {
            Ok(results) => {
                let results = results
                    .into_iter()
                    .map(|(name, outcomes)| {
                        let partitions = outcomes
                            .into_iter()
                            .map(|(id, outcome)| {
                                let result = PartitionResult::default().with_partition_id(id);
                                match outcome {
                                    Ok(()) => result,
                                    Err(err) => result
                                        .with_error_code(error::metadata_error_code(&err))
                                        .with_error_message(Some(text(err.to_string()))),
                                }
                            })
                            .collect();
                        ReplicaElectionResult::default()
                            .with_topic(topic_name(name))
                            .with_partition_result(partitions)
                    })
                    .collect();
                request.respond(
                    &ElectLeadersResponse::default().with_replica_election_results(results),
                )
            }
            Err(err) => failed_all(error::controller_call_error_code(&err), err.to_string()),
        }
    }
    .boxed_local()
}
