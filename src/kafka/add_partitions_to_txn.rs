//! AddPartitionsToTxn (key 24), versions 0 to 3: the client form, one transaction per request.
//! Version 4 and later are KIP-890's broker-to-broker batched verification, not served.
//!
//! Owner: runs on the connection's shard. Partitions of unknown topics (or beyond the topic's
//! partition count) are answered UNKNOWN_TOPIC_OR_PARTITION and every other partition
//! OPERATION_NOT_ATTEMPTED, without asking the coordinator, as Kafka does. Otherwise the
//! partitions go to the coordinator shard of the transactional id (`txn::route`) and each gets
//! its answer. Under a controller quorum a transaction may span partitions led by any broker:
//! the coordinator sends the markers of those led elsewhere with WriteTxnMarkers.
//!
//! With an authorizer (`crate::acl`), as Kafka: without WRITE on the transactional id every
//! partition gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED; partitions of topics the client may not
//! WRITE get TOPIC_AUTHORIZATION_FAILED (checked before existence, so an unauthorized client
//! cannot tell which topics exist) and the rest OPERATION_NOT_ATTEMPTED.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{operation, resource_type};
use crate::broker::ShardContext;
use crate::broker::error;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::txn::route::{call_coordinator, may_write_transactional_id};
use crate::txn::{TxnCall, TxnError, TxnReply};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::AddPartitionsToTxn,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: AddPartitionsToTxnRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    // PRODUCER_FENCED exists from version 2 (KIP-588).
    let fenced_known = request.version() >= 2;
    let transactional_id = body.v3_and_below_transactional_id.0.to_string();
    let session = &request.session;
    if !transactional_id.is_empty()
        && !may_write_transactional_id(&context, session, &transactional_id)
    {
        let code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return respond_each(&request, &body, |_, _| code);
    }
    let image = context.image();
    // Per partition: `Some(code)` for one refused before the coordinator is asked.
    let refusal = |topic: &str, partition: i32| -> Option<i16> {
        if !context.authorize(session, operation::WRITE, resource_type::TOPIC, topic) {
            Some(ResponseError::TopicAuthorizationFailed.code())
        } else if !image
            .topic(topic)
            .is_some_and(|m| (0..m.partitions).contains(&partition))
        {
            Some(ResponseError::UnknownTopicOrPartition.code())
        } else {
            None
        }
    };
    let mut refused = false;
    let mut partitions = Vec::new();
    for topic in &body.v3_and_below_topics {
        for &p in &topic.partitions {
            match refusal(&topic.name.0, p) {
                Some(_) => refused = true,
                None => partitions.push((topic.name.0.to_string(), p)),
            }
        }
    }
    let result: Result<(), i16> = if transactional_id.is_empty() {
        Err(ResponseError::InvalidRequest.code())
    } else if refused {
        Err(ResponseError::OperationNotAttempted.code())
    } else if partitions.is_empty() {
        Ok(())
    } else {
        let call = TxnCall::AddPartitions {
            transactional_id: transactional_id.clone(),
            producer_id: body.v3_and_below_producer_id.0,
            producer_epoch: body.v3_and_below_producer_epoch,
            partitions,
        };
        match call_coordinator(&context, &transactional_id, call).await {
            Ok(TxnReply::AddPartitions(result)) => {
                result.map_err(|e| error::txn_error_code(&e, fenced_known))
            }
            Ok(_) => Err(error::txn_error_code(&TxnError::NotAvailable, fenced_known)),
            Err(e) => Err(error::txn_error_code(&e, fenced_known)),
        }
    };
    let common = result.err().unwrap_or(error::NONE);
    respond_each(&request, &body, |topic, p| {
        match refused.then(|| refusal(topic, p)).flatten() {
            Some(code) => code,
            None => common,
        }
    })
}

/// Answers every partition of the request with the code `code_of(topic, partition)` gives.
fn respond_each(
    request: &Request,
    body: &AddPartitionsToTxnRequest,
    code_of: impl Fn(&str, i32) -> i16,
) -> HandlerOutcome {
    let results_by_topic_v3_and_below = body
        .v3_and_below_topics
        .iter()
        .map(|topic| {
            crate::msg!(AddPartitionsToTxnTopicResult {
                name: topic.name.clone(),
                results_by_partition: topic
                    .partitions
                    .iter()
                    .map(|&p| {
                        crate::msg!(AddPartitionsToTxnPartitionResult {
                            partition_index: p,
                            partition_error_code: code_of(&topic.name.0, p)
                        })
                    })
                    .collect()
            })
        })
        .collect();
    request.respond(&crate::msg!(AddPartitionsToTxnResponse {
        results_by_topic_v3_and_below
    }))
}
