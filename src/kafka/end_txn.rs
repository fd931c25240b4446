//! EndTxn (key 26), versions 0 to 3: commits or aborts the producer's transaction.
//!
//! Owner: runs on the connection's shard, which sends the request to the coordinator shard of
//! the transactional id (`txn::route`). The answer comes once the decision (PrepareCommit or
//! PrepareAbort) is durable; the markers follow on the coordinator, and the next transaction of
//! the producer waits for them (CONCURRENT_TRANSACTIONS, which clients retry).
//!
//! With an authorizer (`crate::acl`), as Kafka: WRITE on the transactional id, else
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::broker::error;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::txn::route::{call_coordinator, may_write_transactional_id};
use crate::txn::{TxnCall, TxnError, TxnReply};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::EndTxn,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: EndTxnRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let fenced_known = request.version() >= 2;
    let transactional_id = body.transactional_id.0.to_string();
    let error_code = if transactional_id.is_empty() {
        ResponseError::InvalidRequest.code()
    } else if !may_write_transactional_id(&context, &request.session, &transactional_id) {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else {
        let call = TxnCall::End {
            transactional_id: transactional_id.clone(),
            producer_id: body.producer_id.0,
            producer_epoch: body.producer_epoch,
            commit: body.committed,
        };
        match call_coordinator(&context, &transactional_id, call).await {
            Ok(TxnReply::End(Ok(()))) => error::NONE,
            Ok(TxnReply::End(Err(e))) | Err(e) => error::txn_error_code(&e, fenced_known),
            Ok(_) => error::txn_error_code(&TxnError::NotAvailable, fenced_known),
        }
    };
    request.respond(&crate::msg!(EndTxnResponse { error_code }))
}
