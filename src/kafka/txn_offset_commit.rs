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
    let asked = body.topics.clone();
    let (allowed, refused): (Vec<_>, Vec<_>) =
        std::mem::take(&mut body.topics).into_iter().partition(|t| {
            context.authorize(session, operation::READ, resource_type::TOPIC, &t.name.0)
        });
    body.topics = allowed;
    let call = GroupCall::TxnCommit {
        version: request.version(),
        request: body,
    };
    let answer = call_coordinator_as(&context, session, operation::READ, &group_id, call).await;
    let mut response = match answer {
        Ok(GroupReply::TxnCommit(response)) => response,
        other => {
            let error_code = other.err().unwrap_or_else(unexpected);
            let topics = answer_each(&asked, error_code);
            return request.respond(&crate::msg!(TxnOffsetCommitResponse { topics }));
        }
    };
    let refused_code = ResponseError::TopicAuthorizationFailed.code();
    response.topics.extend(answer_each(&refused, refused_code));
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
