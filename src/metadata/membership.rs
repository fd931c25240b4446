//! Broker membership under a controller quorum: each broker registers itself, and the active
//! controller fences brokers past their session and unfences brokers that have caught up.
//!
//! Owner: one task on shard 0 of every quorum node, started with the quorum driver, running
//! for the life of the process; it awaits only its timer and the state machine's `submit`.
//! Every `broker.heartbeat.interval.ms`:
//!
//! - a broker whose current process (incarnation) is not the registration in the image
//!   registers (`RegisterBroker`): fenced at first, with a new broker epoch;
//! - a broker whose registration is fenced (new, or fenced while it was cut off) and which has
//!   applied the log up to its registration asks to be unfenced (`UnfenceBroker`, naming its
//!   incarnation, so a registration of an earlier process is never unfenced);
//! - on the active controller (the quorum leader), each unfenced broker past
//!   `broker.session.timeout.ms` without a word is fenced (`FenceBroker`), which moves its
//!   leaderships in the same committed change (`controller::Plan::elect_leaders`).
//!
//! Departure from Kafka, and why: Kafka brokers heartbeat the active controller with
//! BrokerHeartbeat requests. Here every broker is also a voter (combined mode, the only one
//! served), so the Raft traffic every voter exchanges with the leader at each heartbeat tick
//! is the heartbeat: the leader's driver records when it last heard from each peer and how far
//! each peer's log reaches (`QuorumStatus`), which is exactly what fencing and unfencing
//! need. Dedicated brokers (observers) will need the BrokerHeartbeat RPC.

use std::rc::Rc;
use std::time::Duration;

use tracing::{info, warn};

use crate::metadata::controller::{ControllerRequest, ControllerResponse};
use crate::metadata::quorum::ReplicatedMetadata;

/// What this broker registers, and the timers.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    /// This node.
    pub node_id: i32,
    /// The host clients are told.
    pub host: String,
    /// The port clients are told.
    pub port: u16,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// `broker.session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
}

/// Runs the membership loop until the state machine's driver stops.
pub async fn run(metadata: Rc<ReplicatedMetadata>, settings: MembershipSettings) {
    let interval = Duration::from_millis(settings.heartbeat_interval_ms);
    loop {
        glommio::timer::sleep(interval).await;
        let image = metadata.image();
        let registered = image
            .brokers
            .get(&settings.node_id)
            .is_some_and(|b| b.incarnation == metadata.incarnation());
        if !registered {
            let request = ControllerRequest::RegisterBroker {
                id: settings.node_id,
                incarnation: metadata.incarnation(),
                host: settings.host.clone(),
                port: settings.port,
                rack: settings.rack.clone(),
            };
            match metadata.submit(request).await {
                ControllerResponse::Altered(Ok(())) => {
                    info!(
                        node = settings.node_id,
                        "registered with the controller quorum"
                    )
                }
                other => warn!(?other, "broker registration not done yet; retrying"),
            }
            continue;
        }
        if let Some(mine) = image.brokers.get(&settings.node_id)
            && mine.fenced
            && metadata.applied_index() >= mine.registered_index
        {
            // Fenced (new, or past its session while cut off) and caught up: ask to serve.
            let request = ControllerRequest::UnfenceBroker {
                id: mine.id,
                epoch: mine.epoch,
                incarnation: mine.incarnation,
            };
            match metadata.submit(request).await {
                ControllerResponse::Altered(Ok(())) => {
                    info!(
                        node = settings.node_id,
                        epoch = mine.epoch,
                        "unfenced: serving"
                    )
                }
                other => warn!(?other, "unfencing not done yet; retrying"),
            }
        }
        let Some(status) = metadata.status().await else {
            // The driver stopped (the log could not be written): nothing more to do.
            return;
        };
        if status.leader != Some(status.node_id) {
            continue;
        }
        for broker in image.brokers.values().filter(|b| !b.fenced) {
            if broker.id == settings.node_id {
                continue;
            }
            let heard = status
                .heard_ms_ago
                .iter()
                .find(|(id, _)| *id == broker.id as u64)
                .map_or(u64::MAX, |(_, ms)| *ms);
            if heard < settings.session_timeout_ms {
                continue;
            }
            info!(
                broker = broker.id,
                epoch = broker.epoch,
                heard_ms_ago = heard,
                "fencing a broker past its session"
            );
            let request = ControllerRequest::FenceBroker {
                id: broker.id,
                epoch: broker.epoch,
            };
            if let ControllerResponse::Altered(Err(err)) = metadata.submit(request).await {
                warn!(broker = broker.id, %err, "membership change not committed; retrying");
            }
        }
    }
}
