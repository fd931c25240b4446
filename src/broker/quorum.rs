//! Wiring of the controller quorum into a broker: opening its durable state before any shard
//! starts, and starting the voter, the image publisher and the membership loop on shard 0.
//!
//! Owner: `open` runs on the main thread at start (a damaged log, a data dir of another
//! quorum or an unresolvable voter stops the node with one line before it listens); `start`
//! runs once on shard 0 after its `ShardContext` exists. The tasks it spawns live as long as
//! the executor: the voter (`cluster::driver`), a publisher that installs each image the state
//! machine applies on every shard in apply order (one broadcast at a time, so shards see the
//! images in log order), and `metadata::membership::run`.
//!
//! The cluster id of a quorum is derived from its voters (a 128-bit FNV-1a of the sorted
//! `id@host:port` list), so the nodes of one quorum agree on it without a formatting step;
//! Kafka's `kafka-storage format --cluster-id` has no counterpart here. A data dir formatted
//! for other voters is refused at start.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use futures::future::{self, Either};
use tracing::{info, warn};
use uuid::Uuid;

use crate::broker::{ShardContext, ShardPost};
use crate::cluster::driver::{self, DriverSettings};
use crate::cluster::quorum::{QuorumNode, QuorumTimers};
use crate::cluster::raft_log::RaftLog;
use crate::config::Config;
use crate::metadata::MetadataImage;
use crate::metadata::controller::PlanSettings;
use crate::metadata::lease;
use crate::metadata::membership::{self, MembershipSettings};
use crate::metadata::quorum::{ReplicatedMetadata, snapshot_image};
use crate::metadata::store::METADATA_DIR;

/// How long a controlled shutdown waits for the controller to move this broker's leaderships
/// before the broker stops anyway.
const CONTROLLED_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Election timeout in ticks: the tick is a tenth of `controller.quorum.election.timeout.ms`.
const ELECTION_TICKS: usize = 10;
/// The leader's heartbeat, in ticks (a fifth of the election timeout).
const HEARTBEAT_TICKS: usize = 2;

/// What shard 0 needs to run this node's voter: opened on the main thread, moved to shard 0.
pub struct QuorumParts {
    node: QuorumNode,
    applied: u64,
    cluster_id: Uuid,
    peers: BTreeMap<u64, SocketAddr>,
    listen: SocketAddr,
    tick: Duration,
}

impl std::fmt::Debug for QuorumParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumParts")
            .field("node", &self.node)
            .field("applied", &self.applied)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// The cluster id of the quorum `config` names.
pub fn cluster_id(config: &Config) -> Uuid {
    let mut voters: Vec<String> = config
        .quorum
        .voters
        .iter()
        .map(|v| format!("{}@{}:{}", v.id, v.host, v.port))
        .collect();
    voters.sort();
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in voters.join(",").bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    Uuid::from_u128(hash)
}

/// Opens this node's quorum state under `<data_dir>/__cluster_metadata/`: the Raft log, the
/// image of its last snapshot, and the voter. A data dir that holds a lone node's metadata log
/// is refused (its topics would be lost to the quorum's log).
pub fn open(config: &Config) -> Result<(QuorumParts, MetadataImage), String> {
    let dir = config.data_dir.join(METADATA_DIR);
    if dir.join("metadata.log").exists() || dir.join("snapshot.json").exists() {
        return Err(format!(
            "{} holds a lone node's metadata log; a quorum node starts from an empty data dir",
            dir.display()
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let log = RaftLog::open(&dir).map_err(|err| err.to_string())?;
    let (image, applied) = snapshot_image(&log)?;
    let election_ms = config.quorum.election_timeout_ms;
    let tick = Duration::from_millis((election_ms / ELECTION_TICKS as u64).max(10));
    let timers = QuorumTimers {
        election_ticks: ELECTION_TICKS,
        heartbeat_ticks: HEARTBEAT_TICKS,
    };
    let voters: Vec<u64> = config.quorum.voters.iter().map(|v| v.id as u64).collect();
    let node = QuorumNode::open(config.node_id as u64, &voters, log, applied, timers)
        .map_err(|err| format!("controller quorum: {err}"))?;
    let mut peers = BTreeMap::new();
    for voter in &config.quorum.voters {
        let addr = (voter.host.as_str(), voter.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                format!(
                    "invalid value for 'controller.quorum.voters': cannot resolve {}:{} (voter {})",
                    voter.host, voter.port, voter.id
                )
            })?;
        peers.insert(voter.id as u64, addr);
    }
    let listener = config
        .quorum
        .controller_listener
        .as_ref()
        .ok_or("a quorum voter needs a controller listener")?;
    let host = if listener.host.is_empty() {
        "0.0.0.0"
    } else {
        listener.host.as_str()
    };
    let listen = (host, listener.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("invalid value for 'listeners': cannot resolve {host}"))?;
    info!(
        voters = ?voters,
        applied,
        offset = image.offset,
        "controller quorum state opened"
    );
    Ok((
        QuorumParts {
            node,
            applied,
            cluster_id: cluster_id(config),
            peers,
            listen,
            tick,
        },
        image,
    ))
}

/// The state machine for shard 0's controller, before the context exists.
pub fn state_machine(
    config: &Config,
    parts: &QuorumParts,
    image: MetadataImage,
) -> Rc<ReplicatedMetadata> {
    let metadata = ReplicatedMetadata::open(config.node_id, image, parts.applied);
    metadata.set_plan_settings(PlanSettings::of(config));
    metadata
}

/// Starts the voter, the publisher and the membership loop on shard 0.
pub fn start(
    context: &Rc<ShardContext>,
    metadata: Rc<ReplicatedMetadata>,
    parts: QuorumParts,
) -> Result<(), String> {
    let listener = glommio::net::TcpListener::bind(parts.listen)
        .map_err(|err| format!("binding the controller listener {}: {err}", parts.listen))?;
    if let Some(publications) = metadata.take_publications() {
        let publisher = context.clone();
        let metadata = metadata.clone();
        glommio::spawn_local_into(
            async move {
                while let Some(image) = publications.recv().await {
                    publisher.install_image(image.clone());
                    publisher
                        .router
                        .broadcast(|| ShardPost::InstallImage(Box::new((*image).clone())))
                        .await;
                    metadata.mark_published(image.offset);
                }
            },
            context.queues.requests,
        )
        .map_err(|err| err.to_string())?
        .detach();
    }
    let applying = metadata.clone();
    let apply: driver::Apply = Box::new(move |snapshot, entries| applying.apply(snapshot, entries));
    let parts_tick = parts.tick;
    let handle = driver::spawn(
        parts.node,
        DriverSettings {
            cluster_id: parts.cluster_id,
            peers: parts.peers,
            listener,
            tick: parts.tick,
        },
        apply,
    );
    metadata.attach(handle);
    let settings = MembershipSettings {
        node_id: context.identity.node_id,
        host: context.advertised.host.clone(),
        port: context.advertised.port,
        rack: context.config.quorum.rack.clone(),
        session_timeout_ms: context.config.quorum.session_timeout_ms,
        heartbeat_interval_ms: context.config.quorum.heartbeat_interval_ms,
        leader_balance: membership::LeaderBalance::of(&context.config),
    };
    let length = lease::lease_length(settings.session_timeout_ms);
    let interval = Duration::from_millis(settings.heartbeat_interval_ms)
        .min(length / 8)
        .max(parts_tick);
    glommio::spawn_local_into(
        lease::renew_loop(metadata.clone(), context.lease.clone(), length, interval),
        context.queues.requests,
    )
    .map_err(|err| err.to_string())?
    .detach();
    glommio::spawn_local_into(membership::run(metadata, settings), context.queues.requests)
        .map_err(|err| err.to_string())?
        .detach();
    info!(addr = %parts.listen, "controller listener bound");
    Ok(())
}

/// Controlled shutdown (Kafka's BrokerHeartbeat `wantShutDown`), on shard 0 before the drain:
/// asks the controller quorum to move this broker's leaderships to other in-sync replicas and
/// take it out of the ISRs (`ShutdownBroker`), and waits, up to `CONTROLLED_SHUTDOWN_WAIT`,
/// until this node's image has the change. A lone node goes on at once; so do an unregistered
/// or fenced broker and a quorum that refuses or does not answer in time, with one line saying
/// so.
pub async fn controlled_shutdown(context: &Rc<ShardContext>) {
    let Some(metadata) = context
        .controller
        .as_ref()
        .and_then(|c| c.quorum().cloned())
    else {
        return;
    };
    let id = context.identity.node_id;
    let Some(epoch) = metadata
        .image()
        .brokers
        .get(&id)
        .filter(|b| !b.fenced && b.incarnation == metadata.incarnation())
        .map(|b| b.epoch)
    else {
        info!("controlled shutdown skipped: this broker is not serving in the cluster");
        return;
    };
    info!(
        node = id,
        epoch, "controlled shutdown: moving leaderships away"
    );
    let request = crate::metadata::ControllerRequest::ShutdownBroker { id, epoch };
    let asked = Box::pin(metadata.submit(request));
    let timer = Box::pin(glommio::timer::sleep(CONTROLLED_SHUTDOWN_WAIT));
    match future::select(asked, timer).await {
        Either::Left((crate::metadata::ControllerResponse::Altered(Ok(())), _)) => {
            let image = metadata.image();
            let kept = image
                .topics
                .values()
                .flat_map(|t| t.placement.iter())
                .filter(|p| p.leader == id)
                .count();
            info!(
                node = id,
                kept_leaderships = kept,
                "controlled shutdown done (partitions kept have no other in-sync replica)"
            );
        }
        Either::Left((answer, _)) => {
            warn!(
                ?answer,
                "controlled shutdown refused; shutting down without it"
            )
        }
        Either::Right(_) => warn!(
            wait_ms = CONTROLLED_SHUTDOWN_WAIT.as_millis() as u64,
            "controlled shutdown: the controller quorum did not answer in time; shutting down \
             without it"
        ),
    }
}
