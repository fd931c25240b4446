//! TxnOffsetCommit (key 28), versions 0 to 3: offsets committed inside a transaction, visible
//! only once the transaction commits.
//!
//! Owner: runs on the connection's shard, which sends a `GroupCall::TxnCommit` to the group's
//! coordinator shard (`group::route`); `group::coordinator` writes the offsets as a
//! transactional batch and holds them pending until the marker.
//!
//! With an authorizer (`crate::acl`), as Kafka: WRITE on the transactional id (else every
//! partition gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED), READ on the group (else
//! GROUP_AUTHORIZATION_FAILED), and READ on each topic: partitions of topics the client may not
//! READ get TOPIC_AUTHORIZATION_FAILED and are not committed; the others are.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{operation, resource_type};
use crate::broker::ShardContext;
use crate::group::route::{call_coordinator_as, unexpected};
use crate::group::{GroupCall, GroupReply};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::txn::route::may_write_transactional_id;

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::TxnOffsetCommit,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let mut body: TxnOffsetCommitRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let group_id = body.group_id.0.to_string();
    let all = |error_code: i16| {
        crate::msg!(TxnOffsetCommitResponse {
            topics: answer_each(&body.topics, error_code)
        })
    };
    if body.transactional_id.0.is_empty() {
        return request.respond(&all(ResponseError::InvalidRequest.code()));
    }
    let session = &request.session;
    if !may_write_transactional_id(&context, session, &body.transactional_id.0) {
        return request.respond(&all(
            ResponseError::TransactionalIdAuthorizationFailed.code()
        ));
    }
    // As Kafka's KafkaApis does it, before the coordinator is asked: READ on the group, then per
    // topic READ (else TOPIC_AUTHORIZATION_FAILED) and per partition its existence in the
    // metadata (else UNKNOWN_TOPIC_OR_PARTITION). Only the rest reaches the coordinator, so a
    // partition that does not exist is answered UNKNOWN_TOPIC_OR_PARTITION however often a
    // client retries it, whatever became of the transaction meanwhile.
    if !context.authorize(session, operation::READ, resource_type::GROUP, &group_id) {
        return request.respond(&all(ResponseError::GroupAuthorizationFailed.code()));
    }
    let asked = body.topics.clone();
    let image = context.image();
    let mut refused = Vec::new();
    for topic in &mut body.topics {
        let code = if !context.authorize(
            session,
            operation::READ,
            resource_type::TOPIC,
            &topic.name.0,
        ) {
            Some(ResponseError::TopicAuthorizationFailed.code())
        } else {
            None
        };
        let partitions = image.topic(&topic.name.0).map_or(0, |m| m.partitions);
        let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut topic.partitions)
            .into_iter()
            .partition(|p| code.is_none() && (0..partitions).contains(&p.partition_index));
        topic.partitions = kept;
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        refused.extend(dropped.iter().map(|p| {
            (
                topic.name.clone(),
                p.partition_index,
                code.unwrap_or(unknown),
            )
        }));
    }
    body.topics.retain(|t| !t.partitions.is_empty());
    let mut response = if body.topics.is_empty() {
        crate::msg!(TxnOffsetCommitResponse { topics: Vec::new() })
    } else {
        let call = GroupCall::TxnCommit {
            version: request.version(),
            request: body,
        };
        match call_coordinator_as(&context, session, operation::READ, &group_id, call).await {
            Ok(GroupReply::TxnCommit(response)) => response,
            other => {
                let error_code = other.err().unwrap_or_else(unexpected);
                let topics = answer_each(&asked, error_code);
                return request.respond(&crate::msg!(TxnOffsetCommitResponse { topics }));
            }
        }
    };
    for (name, partition_index, error_code) in refused {
        let answer = crate::msg!(TxnOffsetCommitResponsePartition {
            partition_index,
            error_code
        });
        match response.topics.iter_mut().find(|t| t.name == name) {
            Some(topic) => topic.partitions.push(answer),
            None => response
                .topics
                .push(crate::msg!(TxnOffsetCommitResponseTopic {
                    name,
                    partitions: vec![answer]
                })),
        }
    }
    request.respond(&response)
}

/// Every partition of `topics` answered with `error_code`.
fn answer_each(
    topics: &[TxnOffsetCommitRequestTopic],
    error_code: i16,
) -> Vec<TxnOffsetCommitResponseTopic> {
    topics
        .iter()
        .map(|t| {
            crate::msg!(TxnOffsetCommitResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| crate::msg!(TxnOffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code
                    }))
                    .collect()
            })
        })
        .collect()
}
