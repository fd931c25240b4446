//! ListTransactions (key 66), versions 0 and 1 (KIP-664; v1 adds the duration filter of
//! KIP-994): the transactional ids of the broker, filtered by state, producer id and how long
//! their transaction has been open.
//!
//! Owner: runs on the connection's shard, which asks every shard's coordinator for its ids
//! (`txn::route`, all shards at once) and concatenates the answers. State filters that name no
//! state are echoed back in `unknown_state_filters`, and then nothing matches them, as in Kafka.
//! With an authorizer (`crate::acl`), only the ids the client may DESCRIBE are listed.

use std::rc::Rc;

use futures::FutureExt;
use futures::future::join_all;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ApiKey, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::acl::{operation, resource_type};
use crate::broker::ShardContext;
use crate::broker::error;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::runtime::ShardId;
use crate::txn::route::call_shard;
use crate::txn::{TxnCall, TxnReply, TxnState};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::ListTransactions,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: ListTransactionsRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut states = Vec::new();
    let mut unknown_state_filters = Vec::new();
    for name in &body.state_filters {
        match TxnState::from_name(name) {
            Some(state) => states.push(state),
            None => unknown_state_filters.push(name.clone()),
        }
    }
    let duration_ms = if request.version() >= 1 {
        body.duration_filter
    } else {
        -1
    };
    let producer_ids: Vec<i64> = body.producer_id_filters.iter().map(|p| p.0).collect();
    let mut transaction_states = Vec::new();
    let mut error_code = error::NONE;
    // Only unknown filters: nothing can match. No `__transaction_state` yet: no transactions.
    let nothing_matches = states.is_empty() && !unknown_state_filters.is_empty();
    if !nothing_matches
        && context
            .image()
            .topic(crate::txn::TRANSACTION_STATE_TOPIC)
            .is_some()
    {
        let calls = (0..context.shard_count).map(|shard| {
            let call = TxnCall::List {
                states: states.clone(),
                producer_ids: producer_ids.clone(),
                duration_ms,
            };
            call_shard(&context, ShardId(shard), call)
        });
        for answer in join_all(calls).await {
            match answer {
                Ok(TxnReply::List(listed)) => {
                    let may_describe = |id: &str| {
                        context.authorize(
                            &request.session,
                            operation::DESCRIBE,
                            resource_type::TRANSACTIONAL_ID,
                            id,
                        )
                    };
                    let visible = listed
                        .into_iter()
                        .filter(|t| may_describe(&t.transactional_id));
                    transaction_states.extend(visible.map(|t| {
                        crate::msg!(TransactionState {
                            transactional_id: TransactionalId(StrBytes::from_string(
                                t.transactional_id
                            )),
                            producer_id: ProducerId(t.producer_id),
                            transaction_state: StrBytes::from_static_str(t.state.name()),
                        })
                    }))
                }
                Ok(_) => {
                    error_code = error::txn_error_code(&crate::txn::TxnError::NotAvailable, true)
                }
                Err(e) => error_code = error::txn_error_code(&e, true),
            }
        }
    }
    request.respond(&crate::msg!(ListTransactionsResponse {
        error_code,
        unknown_state_filters,
        transaction_states
    }))
}
