//! FindCoordinator (key 10), versions 0 to 4, including v4's batched `coordinator_keys`.
//!
//! Owner: answered on the connection's shard. There is one broker, so the coordinator of every
//! group is this broker (inside it, the coordinator shard is reached over the router, see
//! `group::route`, `txn::route`). The first lookup of a group creates `__consumer_offsets`, and
//! the first lookup of a transactional id (key type 1) creates `__transaction_state`, as in
//! Kafka. An empty transactional id is INVALID_REQUEST; so is any other key type.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::broker::ShardContext;
use crate::group::route::ensure_offsets_topic;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::txn::route::ensure_txn_topic;

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::FindCoordinator,
    versions: VERSIONS,
    handle,
};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: FindCoordinatorRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let version = request.version();
        let keys: Vec<StrBytes> = if version >= 4 {
            body.coordinator_keys.clone()
        } else {
            vec![body.key.clone()]
        };
        let mut coordinators = Vec::with_capacity(keys.len());
        for key in keys {
            coordinators.push(lookup(&context, &request.session, key, body.key_type).await);
        }
        let response = if version >= 4 {
            crate::msg!(FindCoordinatorResponse { coordinators })
        } else {
            let one = coordinators.pop().unwrap_or_default();
            crate::msg!(FindCoordinatorResponse {
                error_code: one.error_code,
                error_message: if version >= 1 {
                    one.error_message
                } else {
                    None
                },
                node_id: one.node_id,
                host: one.host,
                port: one.port,
            })
        };
        request.respond(&response)
    }
    .boxed_local()
}

async fn lookup(
    context: &Rc<ShardContext>,
    session: &crate::acl::Session,
    key: StrBytes,
    key_type: i8,
) -> Coordinator {
    let failed = |code: ResponseError, message: &str| {
        crate::msg!(Coordinator {
            key: key.clone(),
            node_id: BrokerId(-1),
            host: StrBytes::default(),
            port: -1,
            error_code: code.code(),
            error_message: Some(StrBytes::from_string(message.to_string()))
        })
    };
    use crate::acl::{operation, resource_type};
    match key_type {
        KEY_TYPE_GROUP
            if !context.authorize(session, operation::DESCRIBE, resource_type::GROUP, &key) =>
        {
            return failed(
                ResponseError::GroupAuthorizationFailed,
                "Not authorized to access group",
            );
        }
        KEY_TYPE_TRANSACTION
            if !context.authorize(
                session,
                operation::DESCRIBE,
                resource_type::TRANSACTIONAL_ID,
                &key,
            ) =>
        {
            return failed(
                ResponseError::TransactionalIdAuthorizationFailed,
                "Not authorized to access the transactional id",
            );
        }
        _ => {}
    }
    let available = match key_type {
        KEY_TYPE_GROUP => ensure_offsets_topic(context).await.is_ok(),
        KEY_TYPE_TRANSACTION => {
            if key.is_empty() {
                return failed(
                    ResponseError::InvalidRequest,
                    "The transactional id is empty.",
                );
            }
            ensure_txn_topic(context).await.is_ok()
        }
        _ => {
            return failed(
                ResponseError::InvalidRequest,
                "Unknown coordinator key type.",
            );
        }
    };
    if !available {
        return failed(
            ResponseError::CoordinatorNotAvailable,
            "The coordinator is not available.",
        );
    }
    crate::msg!(Coordinator {
        key: key,
        node_id: BrokerId(context.identity.node_id),
        host: StrBytes::from_string(context.advertised.host.clone()),
        port: i32::from(context.advertised.port),
        error_code: 0,
        error_message: None
    })
}
