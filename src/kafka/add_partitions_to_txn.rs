//! AddPartitionsToTxn (key 24), versions 0 to 3: the client form, one transaction per request.
//! Version 4 and later are KIP-890's broker-to-broker batched verification, not served.
//!
//! Owner: runs on the connection's shard. Partitions of unknown topics (or beyond the topic's
//! partition count) are answered UNKNOWN_TOPIC_OR_PARTITION and every other partition
//! OPERATION_NOT_ATTEMPTED, without asking the coordinator, as Kafka does. Otherwise the
//! partitions go to the coordinator shard of the transactional id (`txn::route`) and each gets
//! its answer.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::kafka::error;
use crate::shard::ShardContext;
use crate::txn::route::call_coordinator;
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
    let image = context.image();
    let mut unknown = false;
    let mut partitions = Vec::new();
    for topic in &body.v3_and_below_topics {
        let meta = image.topic(&topic.name.0);
        for &p in &topic.partitions {
            if meta.is_some_and(|m| (0..m.partitions).contains(&p)) {
                partitions.push((topic.name.0.to_string(), p));
            } else {
                unknown = true;
            }
        }
    }
    let result: Result<(), i16> = if transactional_id.is_empty() {
        Err(ResponseError::InvalidRequest.code())
    } else if unknown {
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
    let results_by_topic_v3_and_below = body
        .v3_and_below_topics
        .iter()
        .map(|topic| {
            let meta = image.topic(&topic.name.0);
            crate::msg!(AddPartitionsToTxnTopicResult {
                name: topic.name.clone(),
                results_by_partition: topic
                    .partitions
                    .iter()
                    .map(|&p| {
                        let exists = meta.is_some_and(|m| (0..m.partitions).contains(&p));
                        let partition_error_code = if unknown && !exists {
                            ResponseError::UnknownTopicOrPartition.code()
                        } else {
                            result.err().unwrap_or(error::NONE)
                        };
                        crate::msg!(AddPartitionsToTxnPartitionResult {
                            partition_index: p,
                            partition_error_code
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
