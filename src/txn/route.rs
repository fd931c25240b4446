//! How a transaction request on the connection's shard reaches the coordinator shard.
//!
//! Owner: called by the transaction API handlers (and FindCoordinator) on the shard that holds
//! the client's connection. `__transaction_state` is created through the controller the first
//! time a transactional request needs it (`transaction.state.log.num.partitions` partitions,
//! `cleanup.policy=compact`), as Kafka creates it on first use.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::broker::{ShardContext, ShardRequest, ShardResponse};
use crate::metadata::client::call_controller;
use crate::metadata::{ControllerRequest, MetadataError, NewTopic};
use crate::runtime::ownership::{TRANSACTION_STATE_PARTITIONS_DEFAULT, java_hash_partition};
use crate::runtime::{ShardId, shard_for};
use crate::txn::{TRANSACTION_STATE_TOPIC, TxnCall, TxnError, TxnReply};

/// Whether `session` may WRITE the transactional id, which Kafka asks of every transactional
/// request (TRANSACTIONAL_ID_AUTHORIZATION_FAILED otherwise). Always true with no authorizer.
pub fn may_write_transactional_id(
    context: &ShardContext,
    session: &crate::acl::Session,
    transactional_id: &str,
) -> bool {
    use crate::acl::{operation, resource_type};
    context.authorize(
        session,
        operation::WRITE,
        resource_type::TRANSACTIONAL_ID,
        transactional_id,
    )
}

/// The partition count `__transaction_state` is created with.
pub fn configured_partitions(context: &ShardContext) -> i32 {
    let default = i64::from(TRANSACTION_STATE_PARTITIONS_DEFAULT);
    context
        .config
        .int("transaction.state.log.num.partitions", default) as i32
}

/// The partition of `__transaction_state` that holds `transactional_id`: by the topic's actual
/// partition count once it exists (a changed setting never moves existing ids), else by the
/// configured count.
pub fn txn_partition(context: &ShardContext, transactional_id: &str) -> i32 {
    let partitions = context
        .image()
        .topic(TRANSACTION_STATE_TOPIC)
        .map(|t| t.partitions)
        .filter(|&n| n > 0)
        .unwrap_or_else(|| configured_partitions(context));
    java_hash_partition(transactional_id, partitions)
}

/// The shard that coordinates `transactional_id`.
pub fn coordinator_shard(context: &ShardContext, transactional_id: &str) -> ShardId {
    shard_for(
        TRANSACTION_STATE_TOPIC,
        txn_partition(context, transactional_id),
        context.shard_count,
    )
}

/// Makes sure `__transaction_state` exists.
pub async fn ensure_txn_topic(context: &Rc<ShardContext>) -> Result<(), TxnError> {
    if context.image().topic(TRANSACTION_STATE_TOPIC).is_some() {
        return Ok(());
    }
    let mut configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
    if context.clustered() {
        let min_isr = context.config.int("transaction.state.log.min.isr", 2);
        configs.insert("min.insync.replicas".to_string(), min_isr.to_string());
    }
    let topic = NewTopic {
        name: TRANSACTION_STATE_TOPIC.to_string(),
        partitions: configured_partitions(context),
        configs,
        replication_factor: context
            .config
            .internal_replication_factor("transaction.state.log.replication.factor"),
        ..NewTopic::default()
    };
    let request = ControllerRequest::CreateTopics {
        topics: vec![topic],
        validate_only: false,
    };
    match call_controller(context.as_ref(), request).await {
        Ok(results) => match results.into_iter().next() {
            Some(Ok(_)) | Some(Err(MetadataError::TopicExists(_))) => Ok(()),
            Some(Err(err)) => {
                tracing::warn!(%err, "cannot create __transaction_state");
                Err(TxnError::NotAvailable)
            }
            None => Err(TxnError::NotAvailable),
        },
        Err(err) => {
            tracing::warn!(message = %err, "cannot reach the controller to create __transaction_state");
            Err(TxnError::NotAvailable)
        }
    }
}

/// Sends `call` to the coordinator of `transactional_id` (creating `__transaction_state` if
/// needed).
pub async fn call_coordinator(
    context: &Rc<ShardContext>,
    transactional_id: &str,
    call: TxnCall,
) -> Result<TxnReply, TxnError> {
    ensure_txn_topic(context).await?;
    // Under a quorum, the coordinator is the broker leading the id's partition.
    let me = context.identity.node_id;
    let partition = txn_partition(context, transactional_id);
    if context
        .image()
        .topic(TRANSACTION_STATE_TOPIC)
        .is_some_and(|t| t.leader_of(partition, me) != me)
    {
        return Err(TxnError::NotCoordinator);
    }
    call_shard(context, coordinator_shard(context, transactional_id), call).await
}

/// Sends `call` to shard `shard`.
pub async fn call_shard(
    context: &Rc<ShardContext>,
    shard: ShardId,
    call: TxnCall,
) -> Result<TxnReply, TxnError> {
    match context.router.call(shard, ShardRequest::Txn(call)).await {
        Ok(ShardResponse::Txn(reply)) => Ok(reply),
        Ok(other) => {
            tracing::warn!(?other, "unexpected answer to a transaction call");
            Err(TxnError::NotAvailable)
        }
        Err(_) => Err(TxnError::NotAvailable),
    }
}
