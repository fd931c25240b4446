//! Calls to the controller from any shard: metadata changes (`call_controller`) and blocks of
//! producer ids (`next_producer_id`). The coordinators and the admin handlers reach the
//! controller through here.
//!
//! Owner: runs on the calling shard. How the request travels is the caller's `ControllerLink`
//! (the broker's per-shard context implements it with a router call to shard 0; a cluster's
//! controller quorum will implement it with a call to the quorum's leader), so this module
//! depends on no transport and no protocol. May await the controller's answer.

use std::cell::Cell;
use std::future::Future;

use tracing::warn;

use uuid::Uuid;

use crate::limits::PRODUCER_ID_BLOCK_SIZE;
use crate::metadata::controller::ElectionResults;
use crate::metadata::image::PartitionState;
use crate::metadata::{ControllerRequest, ControllerResponse, MetadataError, TopicImage};
use crate::runtime::RouterError;

/// One result per item of a controller request.
pub type ControllerResults = Vec<Result<TopicImage, MetadataError>>;

/// How a shard reaches the controller.
pub trait ControllerLink {
    /// Sends `request` to the controller and returns its answer.
    fn ask_controller(
        &self,
        request: ControllerRequest,
    ) -> impl Future<Output = Result<ControllerResponse, ControllerCallError>>;

    /// This shard's block of producer ids: `(next, end)`.
    fn producer_id_block(&self) -> &Cell<(i64, i64)>;
}

/// Why a call to the controller produced no answer to use.
#[derive(Debug, thiserror::Error)]
pub enum ControllerCallError {
    /// The controller could not be reached.
    #[error(transparent)]
    Unreachable(#[from] RouterError),
    /// The controller answered with something other than what was asked for (a bug).
    #[error("unexpected controller answer: {0}")]
    Unexpected(String),
    /// The controller refused the request as a whole.
    #[error(transparent)]
    Refused(MetadataError),
}

/// Why an ISR change (`alter_partition`) did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AlterPartitionError {
    /// The controller answered and refused it (its code says why: a stale epoch, an
    /// ineligible replica, ...); the partition is as the controller's image says.
    #[error("the controller refused the ISR change: {0}")]
    Refused(MetadataError),
    /// No answer to act on: the controller could not be reached, the quorum had no leader, or
    /// the change did not commit in time (it may still). Retry once the image moves on.
    #[error("the controller did not answer the ISR change: {0}")]
    Unreachable(String),
}

/// Asks the controller to change a partition's ISR to `new_isr` (the partition leader's
/// AlterPartition). The answer is the partition's state after the change (its partition epoch
/// bumped, unless `new_isr` was the ISR already).
#[allow(clippy::too_many_arguments)]
pub async fn alter_partition(
    link: &impl ControllerLink,
    topic: &str,
    topic_id: Uuid,
    partition: i32,
    leader_id: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    new_isr: Vec<i32>,
) -> Result<PartitionState, AlterPartitionError> {
    let request = ControllerRequest::AlterPartition {
        topic: topic.to_string(),
        topic_id,
        partition,
        leader_id,
        leader_epoch,
        partition_epoch,
        new_isr,
    };
    match link.ask_controller(request).await {
        Ok(ControllerResponse::PartitionAltered(Ok(state))) => Ok(state),
        Ok(ControllerResponse::PartitionAltered(Err(
            err @ (MetadataError::NoQuorum(_) | MetadataError::Timeout(_)),
        ))) => Err(AlterPartitionError::Unreachable(err.to_string())),
        Ok(ControllerResponse::PartitionAltered(Err(err))) => {
            Err(AlterPartitionError::Refused(err))
        }
        Ok(ControllerResponse::NotController) => Err(AlterPartitionError::Unreachable(
            "the request reached a shard that is not the controller".to_string(),
        )),
        Ok(other) => Err(AlterPartitionError::Unreachable(format!(
            "unexpected controller answer: {other:?}"
        ))),
        Err(err) => Err(AlterPartitionError::Unreachable(err.to_string())),
    }
}

/// Sends `request` to the controller. An `Err` is a failure of the whole request; per-item
/// failures are in the results.
pub async fn call_controller(
    link: &impl ControllerLink,
    request: ControllerRequest,
) -> Result<ControllerResults, ControllerCallError> {
    match link.ask_controller(request).await? {
        ControllerResponse::Results(results) => Ok(results),
        other => Err(ControllerCallError::Unexpected(format!("{other:?}"))),
    }
}

/// Asks the controller for leader elections (`ControllerRequest::ElectLeaders`): per topic,
/// each partition's outcome. An `Err` is a failure of the whole request.
pub async fn elect_leaders(
    link: &impl ControllerLink,
    unclean: bool,
    partitions: Option<Vec<(String, Vec<i32>)>>,
) -> Result<ElectionResults, ControllerCallError> {
    let request = ControllerRequest::ElectLeaders {
        unclean,
        partitions,
    };
    match link.ask_controller(request).await? {
        ControllerResponse::Elected(Ok(results)) => Ok(results),
        ControllerResponse::Elected(Err(err)) => Err(ControllerCallError::Refused(err)),
        other => Err(ControllerCallError::Unexpected(format!("{other:?}"))),
    }
}

/// The next producer id of this shard's block, fetching a new block of
/// `PRODUCER_ID_BLOCK_SIZE` from the controller when it is used up. Used by InitProducerId for
/// idempotent producers and by the transaction coordinator for transactional ids.
pub async fn next_producer_id(link: &impl ControllerLink) -> Result<i64, ControllerCallError> {
    let block = link.producer_id_block();
    let (next, end) = block.get();
    if next < end {
        block.set((next + 1, end));
        return Ok(next);
    }
    let request = ControllerRequest::AllocateProducerIds {
        count: PRODUCER_ID_BLOCK_SIZE,
    };
    match link.ask_controller(request).await? {
        ControllerResponse::ProducerIds(Ok(first)) => {
            link.producer_id_block()
                .set((first + 1, first + PRODUCER_ID_BLOCK_SIZE));
            Ok(first)
        }
        ControllerResponse::ProducerIds(Err(err)) => {
            warn!(%err, "producer id allocation failed");
            Err(ControllerCallError::Refused(err))
        }
        other => {
            warn!(?other, "unexpected answer to a producer id allocation");
            Err(ControllerCallError::Unexpected(format!("{other:?}")))
        }
    }
}
