//! CreatePartitions (key 37), versions 0 to 3: grow topics to a larger partition count.
//!
//! Owner: the connection's shard checks manual assignments; shard 0's controller checks the
//! counts against the current table and commits. The owning shards open the new partitions
//! when the new image reaches them. Each topic succeeds or fails on its own.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::kafka::admin::{self, text, topic_name};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::ControllerRequest;

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::CreatePartitions,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: CreatePartitionsRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let node_id = context.identity.node_id;
        let mut results = Vec::with_capacity(body.topics.len());
        let mut planned = Vec::new();
        for topic in &body.topics {
            let name = topic.name.0.to_string();
            let result = CreatePartitionsTopicResult::default().with_name(topic_name(name.clone()));
            if let Some((code, message)) = admin::topic_refused(
                &context,
                &request.session,
                crate::acl::operation::ALTER,
                &name,
            ) {
                results.push(
                    result
                        .with_error_code(code)
                        .with_error_message(Some(text(message))),
                );
                continue;
            }
            if topic.assignments.is_some() && context.clustered() {
                results.push(
                    result
                        .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                        .with_error_message(Some(text(
                            "Manual assignments of new partitions are not served in a cluster \
                             yet; leave them out and the controller places the partitions"
                                .to_string(),
                        ))),
                );
                continue;
            }
            if let Some(assignments) = &topic.assignments {
                let image = context.image();
                let current = image.topic(&name).map_or(0, |t| t.partitions);
                let added = (topic.count - current).max(0) as usize;
                let bad = assignments.len() != added
                    || assignments
                        .iter()
                        .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node_id);
                if bad {
                    results.push(
                        result
                            .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                            .with_error_message(Some(text(format!(
                                "Each of the {added} new partitions must be assigned to broker \
                                 {node_id} alone"
                            )))),
                    );
                    continue;
                }
            }
            planned.push((results.len(), name.clone(), topic.count));
            results.push(result);
        }
        if !planned.is_empty() {
            let outcome = admin::call_controller(
                &context,
                ControllerRequest::CreatePartitions {
                    topics: planned.iter().map(|(_, n, c)| (n.clone(), *c)).collect(),
                    validate_only: body.validate_only,
                    start: None,
                },
            )
            .await;
            for (i, (slot, _, _)) in planned.iter().enumerate() {
                let result = &mut results[*slot];
                let failure = match &outcome {
                    Ok(outcomes) => outcomes[i].as_ref().err().map(admin::metadata_failure),
                    Err((code, message)) => Some((*code, Some(text(message.clone())))),
                };
                if let Some((code, message)) = failure {
                    result.error_code = code;
                    result.error_message = message;
                }
            }
        }
        request.respond(&CreatePartitionsResponse::default().with_results(results))
    }
    .boxed_local()
}
