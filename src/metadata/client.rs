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

use crate::limits::PRODUCER_ID_BLOCK_SIZE;
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
