//! AddOffsetsToTxn (key 25), versions 0 to 3: adds the group's `__consumer_offsets` partition
//! to the transaction, so that the offsets the producer then commits with TxnOffsetCommit get
//! the transaction's marker.
//!
//! Owner: runs on the connection's shard; makes sure `__consumer_offsets` exists and sends the
//! partition to the coordinator shard of the transactional id (`txn::route`).
//!
//! With an authorizer (`crate::acl`), as Kafka: WRITE on the transactional id
//! (TRANSACTIONAL_ID_AUTHORIZATION_FAILED), then READ on the group (GROUP_AUTHORIZATION_FAILED).

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{operation, resource_type};
use crate::broker::ShardContext;
use crate::broker::error;
use crate::group::OFFSETS_TOPIC;
use crate::group::route::ensure_offsets_topic;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::txn::route::{call_coordinator, may_write_transactional_id};
use crate::txn::{TxnCall, TxnError, TxnReply};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::AddOffsetsToTxn,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: AddOffsetsToTxnRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let fenced_known = request.version() >= 2;
    let transactional_id = body.transactional_id.0.to_string();
    let group_id = body.group_id.0.to_string();
    let error_code = if transactional_id.is_empty() {
        ResponseError::InvalidRequest.code()
    } else if !may_write_transactional_id(&context, &request.session, &transactional_id) {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else if !context.authorize(
        &request.session,
        operation::READ,
        resource_type::GROUP,
        &group_id,
    ) {
        ResponseError::GroupAuthorizationFailed.code()
    } else if group_id.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else if let Err(code) = ensure_offsets_topic(&context).await {
        code
    } else {
        let call = TxnCall::AddPartitions {
            transactional_id: transactional_id.clone(),
            producer_id: body.producer_id.0,
            producer_epoch: body.producer_epoch,
            partitions: vec![(
                OFFSETS_TOPIC.to_string(),
                crate::group::coordinator::group_partition(&context, &group_id),
            )],
        };
        match call_coordinator(&context, &transactional_id, call).await {
            Ok(TxnReply::AddPartitions(Ok(()))) => error::NONE,
            Ok(TxnReply::AddPartitions(Err(e))) | Err(e) => error::txn_error_code(&e, fenced_known),
            Ok(_) => error::txn_error_code(&TxnError::NotAvailable, fenced_known),
        }
    };
    request.respond(&crate::msg!(AddOffsetsToTxnResponse { error_code }))
}
