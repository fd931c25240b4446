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
//!   leaderships in the same committed change (`controller::Plan::elect_leaders`). The fence
//!   is bound to the Raft term it was decided in (`submit_as_leader`): a leader that was frozen
//!   or cut off, and so heard from nobody, decides to fence everyone the moment it runs again;
//!   those fences are void once a newer term exists, instead of being committed by the new
//!   leader;
//! - on the active controller, with `auto.leader.rebalance.enable`, every
//!   `leader.imbalance.check.interval.seconds`: leaderships go back to preferred replicas
//!   (`preferred_elections`, then an `ElectLeaders` of type preferred).
//!
//! The balance rule is the one `leader.imbalance.per.broker.percentage` documents (Kafka's
//! ZooKeeper controller applied it): for each broker, the partitions whose preferred replica
//! (the first) it is but which another broker leads; when they are more than that percentage
//! of its preferred partitions, those it may lead (live, not shutting down, in the ISR) are
//! elected back to it. Kafka's KRaft controller does not read the percentage and elects every
//! imbalanced partition; here a percentage of 0 does the same. At most
//! `limits::LEADER_BALANCE_ELECTIONS_MAX` elections per check, as KRaft bounds them.
//!
//! Departure from Kafka, and why: Kafka brokers heartbeat the active controller with
//! BrokerHeartbeat requests. Here every broker is also a voter (combined mode, the only one
//! served), so the Raft traffic every voter exchanges with the leader at each heartbeat tick
//! is the heartbeat: the leader's driver records when it last heard from each peer and how far
//! each peer's log reaches (`QuorumStatus`), which is exactly what fencing and unfencing
//! need. Dedicated brokers (observers) will need the BrokerHeartbeat RPC.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::limits;
use crate::metadata::MetadataImage;
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
    /// The leader balance check, unless `auto.leader.rebalance.enable` is false.
    pub leader_balance: Option<LeaderBalance>,
}

/// `leader.imbalance.check.interval.seconds` and `leader.imbalance.per.broker.percentage`.
#[derive(Debug, Clone, Copy)]
pub struct LeaderBalance {
    /// How often the active controller checks.
    pub interval: Duration,
    /// The share of a broker's preferred partitions others may lead, in percent.
    pub percentage: u32,
}

impl LeaderBalance {
    /// The settings of `config`; `None` when `auto.leader.rebalance.enable` is false.
    pub fn of(config: &crate::config::Config) -> Option<LeaderBalance> {
        let enabled = config
            .entries
            .get("auto.leader.rebalance.enable")
            .is_none_or(|e| e.value.trim().eq_ignore_ascii_case("true"));
        enabled.then(|| LeaderBalance {
            interval: Duration::from_secs(
                config
                    .int("leader.imbalance.check.interval.seconds", 300)
                    .max(1) as u64,
            ),
            percentage: config
                .int("leader.imbalance.per.broker.percentage", 10)
                .clamp(0, i64::from(u32::MAX)) as u32,
        })
    }
}

/// A broker's preferred partitions: how many, and `(topic, partition)` of those others lead.
type Preferred<'a> = (u64, Vec<(&'a str, i32)>);

/// The preferred elections a balance check asks for, per topic (see the module
/// documentation): partitions led by another broker than their preferred replica, for brokers
/// above `percentage`, where the preferred replica may lead; at most `max` partitions.
pub fn preferred_elections(
    image: &MetadataImage,
    percentage: u32,
    max: usize,
) -> Vec<(String, Vec<i32>)> {
    // Per preferred broker: how many partitions it prefers, and those others lead.
    let mut preferred: BTreeMap<i32, Preferred<'_>> = BTreeMap::new();
    for topic in image.topics.values() {
        for (partition, state) in topic.placement.iter().enumerate() {
            let Some(&first) = state.replicas.first() else {
                continue;
            };
            let entry = preferred.entry(first).or_default();
            entry.0 += 1;
            if state.leader != first {
                entry.1.push((topic.name.as_str(), partition as i32));
            }
        }
    }
    let mut chosen: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    let mut count = 0;
    for (broker, (total, others)) in preferred {
        let eligible_broker = image
            .brokers
            .get(&broker)
            .is_some_and(|b| !b.fenced && !b.shutting_down);
        // Above the percentage: others * 100 > percentage * total.
        if !eligible_broker || (others.len() as u64) * 100 <= u64::from(percentage) * total {
            continue;
        }
        for (name, partition) in others {
            let in_sync = image
                .topic(name)
                .and_then(|t| t.partition_state(partition))
                .is_some_and(|s| s.isr.contains(&broker));
            if in_sync && count < max {
                chosen.entry(name).or_default().push(partition);
                count += 1;
            }
        }
    }
    chosen
        .into_iter()
        .map(|(name, partitions)| (name.to_string(), partitions))
        .collect()
}

/// Runs the membership loop until the state machine's driver stops.
pub async fn run(metadata: Rc<ReplicatedMetadata>, settings: MembershipSettings) {
    let interval = Duration::from_millis(settings.heartbeat_interval_ms);
    let mut next_balance = settings.leader_balance.map(|b| Instant::now() + b.interval);
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
        if let (Some(balance), Some(due)) = (settings.leader_balance, next_balance)
            && Instant::now() >= due
        {
            next_balance = Some(Instant::now() + balance.interval);
            balance_leaders(&metadata, &image, balance, status.term).await;
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
            // Decided on this leader's view of its peers: void unless it still leads when
            // the fence commits (a leader frozen or cut off sees everyone as silent).
            if let ControllerResponse::Altered(Err(err)) =
                metadata.submit_as_leader(request, status.term).await
            {
                warn!(broker = broker.id, %err, "membership change not committed; retrying");
            }
        }
    }
}

/// One leader balance check on the active controller: the preferred elections it calls for,
/// asked as one `ElectLeaders`.
async fn balance_leaders(
    metadata: &ReplicatedMetadata,
    image: &MetadataImage,
    balance: LeaderBalance,
    term: u64,
) {
    let partitions = preferred_elections(
        image,
        balance.percentage,
        limits::LEADER_BALANCE_ELECTIONS_MAX,
    );
    if partitions.is_empty() {
        return;
    }
    let count: usize = partitions.iter().map(|(_, p)| p.len()).sum();
    let request = ControllerRequest::ElectLeaders {
        unclean: false,
        partitions: Some(partitions),
    };
    match metadata.submit_as_leader(request, term).await {
        ControllerResponse::Elected(Ok(results)) => {
            let elected = results
                .iter()
                .flat_map(|(_, outcomes)| outcomes.iter())
                .filter(|(_, outcome)| outcome.is_ok())
                .count();
            info!(
                asked = count,
                elected, "leader balance: leaderships moved back to preferred replicas"
            );
        }
        other => warn!(?other, "leader balance not done; the next check retries"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicImage;
    use crate::metadata::image::{BrokerImage, PartitionState};
    use uuid::Uuid;

    fn image(placement: Vec<(Vec<i32>, Vec<i32>, i32)>) -> MetadataImage {
        let mut image = MetadataImage::empty();
        for id in 1..=3 {
            image.brokers.insert(
                id,
                BrokerImage {
                    id,
                    epoch: 1,
                    incarnation: Uuid::from_u128(id as u128),
                    registered_index: 1,
                    host: "h".to_string(),
                    port: 9000,
                    rack: None,
                    fenced: false,
                    shutting_down: false,
                },
            );
        }
        let placement: Vec<PartitionState> = placement
            .into_iter()
            .map(|(replicas, isr, leader)| PartitionState {
                replicas,
                isr,
                leader,
                leader_epoch: 1,
                partition_epoch: 1,
                elr: Vec::new(),
                last_known_elr: Vec::new(),
            })
            .collect();
        image.topics.insert(
            "t".to_string(),
            TopicImage {
                name: "t".to_string(),
                id: Uuid::from_u128(1),
                partitions: placement.len() as i32,
                configs: Default::default(),
                placement,
            },
        );
        image
    }

    /// Broker 1 prefers partitions 0-3 and leads 0-1 (50% imbalanced); broker 2 prefers 4-13
    /// and leads all but 4 (10%); broker 3 prefers 14 and leads it.
    fn imbalanced() -> MetadataImage {
        let mut placement = vec![
            (vec![1, 2, 3], vec![1, 2, 3], 1),
            (vec![1, 2, 3], vec![1, 2, 3], 1),
            (vec![1, 2, 3], vec![1, 2, 3], 2),
            // Led by 3 and 1 is out of the ISR: it cannot take it back.
            (vec![1, 2, 3], vec![2, 3], 3),
            (vec![2, 1, 3], vec![2, 1, 3], 1),
        ];
        placement.extend((5..14).map(|_| (vec![2, 3, 1], vec![2, 3, 1], 2)));
        placement.push((vec![3, 1, 2], vec![3, 1, 2], 3));
        image(placement)
    }

    #[test]
    fn brokers_above_the_percentage_get_their_in_sync_partitions_back() {
        let image = imbalanced();
        // 10%: broker 1 (50%) is above, broker 2 (exactly 10%) is not.
        assert_eq!(
            preferred_elections(&image, 10, 1000),
            vec![("t".to_string(), vec![2])]
        );
        // 0% (KRaft's rule): every imbalanced partition whose preferred replica is in sync.
        assert_eq!(
            preferred_elections(&image, 0, 1000),
            vec![("t".to_string(), vec![2, 4])]
        );
        // 50%: nobody is above.
        assert!(preferred_elections(&image, 50, 1000).is_empty());
        // The bound.
        assert_eq!(
            preferred_elections(&image, 0, 1),
            vec![("t".to_string(), vec![2])]
        );
    }

    #[test]
    fn a_preferred_broker_that_may_not_lead_gets_nothing() {
        let mut image = imbalanced();
        image.brokers.get_mut(&1).unwrap().shutting_down = true;
        assert_eq!(
            preferred_elections(&image, 0, 1000),
            vec![("t".to_string(), vec![4])]
        );
        image.brokers.get_mut(&2).unwrap().fenced = true;
        assert!(preferred_elections(&image, 0, 1000).is_empty());
    }

    #[test]
    fn the_planned_elections_balance_the_image() {
        use crate::metadata::controller::{Mode, PlanSettings, execute};
        let image = imbalanced();
        let partitions = preferred_elections(&image, 0, 1000);
        let request = ControllerRequest::ElectLeaders {
            unclean: false,
            partitions: Some(partitions),
        };
        let mode = Mode::Quorum {
            entry_index: 2,
            settings: PlanSettings::default(),
        };
        let outcome = execute(&image, request, &mode);
        assert!(preferred_elections(&outcome.image, 0, 1000).is_empty());
        let after = &outcome.image.topic("t").unwrap().placement;
        assert_eq!(
            (after[2].leader, after[4].leader, after[3].leader),
            (1, 2, 3)
        );
    }
}
