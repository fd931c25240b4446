//! InitProducerId (key 22), versions 0 to 4: a producer id and epoch for an idempotent
//! producer.
//!
//! Owner: the connection's shard hands out ids from a block it got from the controller
//! (`PRODUCER_ID_BLOCK_SIZE` at a time, persisted in the metadata log, so an id is never
//! reused across restarts); when the block is used up it asks shard 0 for the next. Every call
//! without a transactional id gets a fresh producer id with epoch 0, as Kafka does for
//! idempotent producers (also when the producer sends its old id and epoch after an error,
//! KIP-360). The sequence checks happen on the partitions' owners (`storage::producer_state`).
//!
//! With a transactional id the request goes to the id's transaction coordinator shard
//! (`txn::route`), which bumps the epoch (or hands out a new producer id when the epoch is
//! exhausted), fences the previous incarnation and aborts its open transaction. From v3 the
//! producer may send the id and epoch it had (KIP-360); both or neither must be set. An empty
//! transactional id is INVALID_REQUEST, as in Kafka. PRODUCER_FENCED exists from v4; older
//! versions get INVALID_PRODUCER_EPOCH.
//!
//! With an authorizer (`crate::acl`), as Kafka: a transactional id needs WRITE on it
//! (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); an idempotent producer needs IDEMPOTENT_WRITE on the
//! cluster or WRITE on some topic (KIP-679; CLUSTER_AUTHORIZATION_FAILED).

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::protocol::VersionRange;

use crate::acl;
use crate::broker::ShardContext;
use crate::broker::error;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::client;
use crate::txn::route::{call_coordinator, may_write_transactional_id};
use crate::txn::{TxnCall, TxnError, TxnReply};

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::InitProducerId,
    versions: VersionRange { min: 0, max: 4 },
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: InitProducerIdRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let response = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if let Some(transactional_id) = &body.transactional_id {
            let transactional_id = transactional_id.0.to_string();
            let version = request.version();
            let expected = (body.producer_id.0, body.producer_epoch);
            let invalid = transactional_id.is_empty()
                || (version >= 3 && ((expected.0 < 0) != (expected.1 < 0)));
            if invalid {
                return request
                    .respond(&response.with_error_code(ResponseError::InvalidRequest.code()));
            }
            if !may_write_transactional_id(&context, &request.session, &transactional_id) {
                return request
                    .respond(&response.with_error_code(
                        ResponseError::TransactionalIdAuthorizationFailed.code(),
                    ));
            }
            let call = TxnCall::InitProducerId {
                transactional_id: transactional_id.clone(),
                timeout_ms: body.transaction_timeout_ms,
                expected: (version >= 3 && expected.0 >= 0).then_some(expected),
            };
            let fenced_known = version >= 4;
            let answer = match call_coordinator(&context, &transactional_id, call).await {
                Ok(TxnReply::InitProducerId(result)) => result,
                Ok(_) => Err(TxnError::NotAvailable),
                Err(e) => Err(e),
            };
            return match answer {
                Ok((producer_id, epoch)) => request.respond(
                    &response
                        .with_error_code(error::NONE)
                        .with_producer_id(ProducerId(producer_id))
                        .with_producer_epoch(epoch),
                ),
                Err(e) => request
                    .respond(&response.with_error_code(error::txn_error_code(&e, fenced_known))),
            };
        }
        // KIP-679: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic.
        let session = &request.session;
        if !context.authorize(
            session,
            acl::operation::IDEMPOTENT_WRITE,
            acl::resource_type::CLUSTER,
            acl::CLUSTER_NAME,
        ) && !context.authorize_any(session, acl::operation::WRITE, acl::resource_type::TOPIC)
        {
            return request.respond(
                &response.with_error_code(ResponseError::ClusterAuthorizationFailed.code()),
            );
        }
        match client::next_producer_id(context.as_ref()).await {
            Ok(id) => request.respond(
                &response
                    .with_error_code(error::NONE)
                    .with_producer_id(ProducerId(id))
                    .with_producer_epoch(0),
            ),
            Err(err) => {
                request.respond(&response.with_error_code(error::controller_call_error_code(&err)))
            }
        }
    }
    .boxed_local()
}
