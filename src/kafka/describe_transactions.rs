//! DescribeTransactions (key 65), version 0 (KIP-664): the state of transactional ids.
//!
//! Owner: runs on the connection's shard; each id is asked of its coordinator shard
//! (`txn::route`). An id nobody has used is TRANSACTIONAL_ID_NOT_FOUND.
//!
//! With an authorizer (`crate::acl`), as Kafka: an id the client may not DESCRIBE is
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED (and its coordinator is not asked), and the partitions
//! listed are only those of topics the client may DESCRIBE.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::acl::{operation, resource_type};
use crate::broker::ShardContext;
use crate::broker::error;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::txn::route::call_coordinator;
use crate::txn::{TxnCall, TxnError, TxnReply};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeTransactions,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: DescribeTransactionsRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut transaction_states = Vec::with_capacity(body.transactional_ids.len());
    for id in &body.transactional_ids {
        let transactional_id = id.0.to_string();
        let base = crate::msg!(TransactionState {
            transactional_id: id.clone(),
            producer_id: ProducerId(-1),
            producer_epoch: -1,
            transaction_start_time_ms: -1,
            transaction_state: StrBytes::default(),
        });
        let call = TxnCall::Describe {
            transactional_ids: vec![transactional_id.clone()],
        };
        let may_describe = context.authorize(
            &request.session,
            operation::DESCRIBE,
            resource_type::TRANSACTIONAL_ID,
            &transactional_id,
        );
        if !may_describe {
            let mut refused = base;
            refused.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            transaction_states.push(refused);
            continue;
        }
        let answer = if transactional_id.is_empty() {
            Err(TxnError::NotFound)
        } else {
            match call_coordinator(&context, &transactional_id, call).await {
                Ok(TxnReply::Describe(mut found)) if found.len() == 1 => {
                    found.pop().unwrap_or(Err(TxnError::NotAvailable))
                }
                Ok(_) => Err(TxnError::NotAvailable),
                Err(e) => Err(e),
            }
        };
        transaction_states.push(match answer {
            Ok(d) => crate::msg!(TransactionState {
                error_code: error::NONE,
                transactional_id: id.clone(),
                transaction_state: StrBytes::from_static_str(d.state.name()),
                transaction_timeout_ms: d.timeout_ms,
                transaction_start_time_ms: d.start_ms,
                producer_id: ProducerId(d.producer_id),
                producer_epoch: d.producer_epoch,
                topics: d
                    .partitions
                    .into_iter()
                    .filter(|(topic, _)| context.authorize(
                        &request.session,
                        operation::DESCRIBE,
                        resource_type::TOPIC,
                        topic
                    ))
                    .map(|(topic, partitions)| crate::msg!(TopicData {
                        topic: TopicName(StrBytes::from_string(topic)),
                        partitions
                    }))
                    .collect()
            }),
            Err(e) => {
                let mut failed = base;
                failed.error_code = error::txn_error_code(&e, true);
                failed
            }
        });
    }
    request.respond(&crate::msg!(DescribeTransactionsResponse {
        transaction_states
    }))
}
