//! How a group request on the connection's shard reaches the group's coordinator shard.
//!
//! Owner: called by the group API handlers on the shard that holds the client's connection.
//! `__consumer_offsets` is created through the controller the first time any group request
//! needs it (`offsets.topic.num.partitions` partitions, 50 by default, `cleanup.policy=compact`,
//! `offsets.topic.replication.factor` replicas under a quorum), as Kafka creates it on first
//! use. From then on the topic's own partition count places the groups, so changing the setting
//! later moves no group.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;

use crate::acl::{self, Session};
use crate::broker::{ShardContext, ShardRequest, ShardResponse};
use crate::group::coordinator::group_partition;
use crate::group::{GroupCall, GroupReply, OFFSETS_TOPIC};
use crate::metadata::client::call_controller;
use crate::metadata::{ControllerRequest, MetadataError, NewTopic};
use crate::runtime::{ShardId, shard_for};

/// Makes sure `__consumer_offsets` exists; an `Err` is the Kafka code to answer with.
pub async fn ensure_offsets_topic(context: &Rc<ShardContext>) -> Result<(), i16> {
    if context.image().topic(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let topic = NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: context.groups.settings().offsets_topic_num_partitions,
        configs: BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
        replication_factor: context
            .config
            .internal_replication_factor("offsets.topic.replication.factor"),
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
                tracing::warn!(%err, "cannot create __consumer_offsets");
                Err(ResponseError::CoordinatorNotAvailable.code())
            }
            None => Err(ResponseError::CoordinatorNotAvailable.code()),
        },
        Err(err) => {
            tracing::warn!(message = %err, "cannot reach the controller to create __consumer_offsets");
            Err(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}

/// The shard that coordinates `group_id`.
pub fn coordinator_shard(context: &ShardContext, group_id: &str) -> ShardId {
    shard_for(
        OFFSETS_TOPIC,
        group_partition(context, group_id),
        context.shard_count,
    )
}

/// The error code for a coordinator answer of the wrong kind (a bug, reported to the client as
/// UNKNOWN_SERVER_ERROR rather than a crash).
pub fn unexpected() -> i16 {
    kafka_protocol::ResponseError::UnknownServerError.code()
}

/// Sends `call` to the coordinator of `group_id` (creating `__consumer_offsets` if needed).
pub async fn call_coordinator(
    context: &Rc<ShardContext>,
    group_id: &str,
    call: GroupCall,
) -> Result<GroupReply, i16> {
    // The topic first: its partition count decides where the group lives.
    ensure_offsets_topic(context).await?;
    // Under a quorum, the coordinator is the broker leading the group's partition.
    let me = context.identity.node_id;
    let partition = group_partition(context, group_id);
    if context
        .image()
        .topic(OFFSETS_TOPIC)
        .is_some_and(|t| t.leader_of(partition, me) != me)
    {
        return Err(ResponseError::NotCoordinator.code());
    }
    call_shard(context, coordinator_shard(context, group_id), call).await
}

/// Like `call_coordinator`, after checking that `session` may perform `operation` on the group
/// (GROUP_AUTHORIZATION_FAILED otherwise; nothing reaches the coordinator then).
pub async fn call_coordinator_as(
    context: &Rc<ShardContext>,
    session: &Session,
    operation: i8,
    group_id: &str,
    call: GroupCall,
) -> Result<GroupReply, i16> {
    if !context.authorize(session, operation, acl::resource_type::GROUP, group_id) {
        return Err(ResponseError::GroupAuthorizationFailed.code());
    }
    call_coordinator(context, group_id, call).await
}

/// Sends `call` to shard `shard` (creating `__consumer_offsets` if needed).
pub async fn call_shard(
    context: &Rc<ShardContext>,
    shard: ShardId,
    call: GroupCall,
) -> Result<GroupReply, i16> {
    ensure_offsets_topic(context).await?;
    match context.router.call(shard, ShardRequest::Group(call)).await {
        Ok(ShardResponse::Group(reply)) => Ok(reply),
        Ok(other) => {
            tracing::warn!(?other, "unexpected answer to a group call");
            Err(ResponseError::UnknownServerError.code())
        }
        Err(_) => Err(ResponseError::CoordinatorNotAvailable.code()),
    }
}
