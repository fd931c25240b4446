//! Starting and stopping the broker: one shard per selected core, each built here.
//!
//! Owner: `start` runs on the main thread; it spawns one glommio executor per selected core
//! (`runtime::executor::pinned_executor`), and returns once every shard listens (or one of
//! them failed). Inside each executor `run_shard` joins the mesh, builds the `ShardContext`
//! with its services, starts the background loops, the mesh receivers and the listener.
//!
//! Layering: the top of the stack, beside `main`. It is the one module that knows every layer:
//! it builds the broker's `ShardContext` and starts the protocol front's listener (`net`) on
//! it, so it sits above both rather than inside `broker`, which `net` and `kafka` import.
//!
//! Shard ids are the executors' indexes in the channel mesh (glommio numbers mesh peers as they
//! register), so they run 0..N-1 whatever cores were chosen. Whichever executor becomes shard 0
//! takes the metadata store and the signal listener and acts as controller.
//!
//! Shutdown: a thread waits for SIGINT or SIGTERM and forwards it to shard 0 over a channel
//! (so does `RunningBroker::shutdown`); shard 0 waits on that channel from glommio's blocking
//! pool, then (in a cluster) makes a controlled shutdown (`broker::quorum::controlled_shutdown`:
//! its leaderships move away, bounded to a few seconds), sends `Drain` to every shard (itself
//! included) and, once all are drained, `Stop`. A second signal during these exits at once.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use glommio::ExecutorJoinHandle;
use glommio::channels::channel_mesh::MeshBuilder;
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use crate::broker::quorum::{self, QuorumParts};
use crate::broker::{ShardContext, ShardRequest};
use crate::config::{AdvertisedListener, Config};
use crate::limits;
use crate::metadata::{Controller, MetadataImage, MetadataStore, NodeIdentity};
use crate::net;
use crate::net::admission::Admission;
use crate::runtime::ShardId;
use crate::runtime::executor;
use crate::runtime::router::{self, Router};
use crate::runtime::shutdown::ShutdownSignal;
use crate::runtime::watchdog::{self, ShardWatch, Watchdog};
use crate::storage::manager::PartitionManager;
use crate::storage::{LogEnv, ShardCache};

/// What travels on this broker's channel mesh.
type Envelope = router::Envelope<ShardContext>;

/// Why the broker could not start. `Display` is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A selected core is not online.
    #[error("invalid value for 'cores': core {core} is not online (online cores: {online:?})")]
    CoreNotOnline {
        /// The core asked for.
        core: usize,
        /// The cores that are.
        online: Vec<usize>,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An executor could not be created (most often: locked memory).
    #[error(
        "cannot start the executor for core {core}: {reason}. glommio needs locked memory for \
         io_uring: run `ulimit -l unlimited` (or set LimitMEMLOCK=infinity in the systemd unit) \
         and start again"
    )]
    Executor {
        /// The core.
        core: usize,
        /// glommio's error.
        reason: String,
    },
    /// A shard failed while starting.
    #[error("shard on core {core} failed to start: {reason}")]
    Shard {
        /// The core.
        core: usize,
        /// What went wrong.
        reason: String,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// An SSL listener's `ssl.*` settings are refused (the line names the key).
    #[error("listener {listener}: {source}")]
    Tls {
        /// The listener.
        listener: String,
        /// The refused setting.
        #[source]
        source: net::tls::TlsError,
    },
}

/// What each executor needs to build its shard. Cloned into every executor thread.
#[derive(Clone)]
pub struct BrokerSpec {
    /// The configuration.
    pub config: Config,
    /// Node and cluster ids.
    pub identity: NodeIdentity,
    /// The image replayed from the metadata store.
    pub image: MetadataImage,
    /// Run inside every shard once it listens (tests use it to reach into shards).
    pub on_shard_ready: Option<ShardHook>,
}

/// A function run inside a shard's executor, with its context.
pub type ShardHook = Arc<dyn Fn(Rc<ShardContext>) + Send + Sync>;

impl std::fmt::Debug for BrokerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSpec")
            .field("config", &self.config)
            .field("identity", &self.identity)
            .field("topics", &self.image.topics.len())
            .finish_non_exhaustive()
    }
}

/// How shard 0's controller keeps the metadata: a lone node's local log, or this node's
/// voter of a controller quorum (`broker::quorum::open`).
#[derive(Debug)]
pub enum MetadataParts {
    /// A lone node's metadata log.
    Local(MetadataStore),
    /// A quorum voter, and the image of its last snapshot.
    Quorum(Box<QuorumParts>),
}

impl From<MetadataStore> for MetadataParts {
    fn from(store: MetadataStore) -> MetadataParts {
        MetadataParts::Local(store)
    }
}

/// Things exactly one shard (the one that becomes shard 0) takes.
struct ControllerParts {
    metadata: MetadataParts,
    stop_requests: mpsc::Receiver<()>,
}

struct ShardReady {
    shard: ShardId,
    core: usize,
}

/// A started broker: every shard listens.
#[derive(Debug)]
pub struct RunningBroker {
    /// The bound listen address (with the real port).
    pub listen_addr: SocketAddr,
    /// What Metadata advertises.
    pub advertised: AdvertisedListener,
    /// Every client listener: `NAME://host:port` bound, in `listeners` order (the first is
    /// `listen_addr`).
    pub listeners: Vec<(String, SocketAddr)>,
    handles: Vec<(usize, ExecutorJoinHandle<Result<(), String>>)>,
    stop_tx: mpsc::Sender<()>,
    watchdog: Watchdog,
}

impl RunningBroker {
    /// Asks the broker to shut down gracefully (as SIGTERM does) and waits for it.
    pub fn shutdown(self) -> bool {
        let _ = self.stop_tx.send(());
        self.wait()
    }

    /// Waits until every shard has stopped. Returns false if any shard failed.
    pub fn wait(self) -> bool {
        let mut clean = true;
        for (core, handle) in self.handles {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    error!(core, %reason, "shard stopped with an error");
                    clean = false;
                }
                Err(err) => {
                    error!(core, %err, "shard executor failed");
                    clean = false;
                }
            }
        }
        self.watchdog.stop();
        clean
    }
}

/// The cores the broker runs on: the configured list (each must be online) or every online
/// core.
pub fn select_cores(config: &Config) -> Result<Vec<usize>, StartError> {
    let mut online: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    online.sort_unstable();
    if online.is_empty() {
        online = (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    match &config.cores {
        None => Ok(online),
        Some(cores) => {
            if let Some(&core) = cores.iter().find(|c| !online.contains(c)) {
                return Err(StartError::CoreNotOnline { core, online });
            }
            Ok(cores.clone())
        }
    }
}

/// Starts one shard per core in `cores` and returns once all listen.
///
/// `install_signals`: whether shard 0 handles SIGINT/SIGTERM (the `serve` command) or the
/// caller stops the broker itself (in-process tests).
pub fn start(
    spec: BrokerSpec,
    metadata: impl Into<MetadataParts>,
    cores: &[usize],
    install_signals: bool,
) -> Result<RunningBroker, StartError> {
    let metadata = metadata.into();
    assert!(!cores.is_empty(), "at least one core is selected");
    // One port per client listener, reserved before any shard binds; the TLS side of each
    // SSL listener built (and its key material checked) before any shard starts.
    let mut port_holders = Vec::new();
    let mut bound = Vec::with_capacity(spec.config.listeners.len());
    let mut advertised_listeners = Vec::with_capacity(spec.config.listeners.len());
    for (index, listener) in spec.config.listeners.iter().enumerate() {
        let (addr, holder) =
            net::listener::reserve_port(listener.addr).map_err(|source| StartError::Bind {
                addr: listener.addr,
                source,
            })?;
        port_holders.extend(holder);
        let tls = match &listener.ssl {
            Some(ssl) if listener.protocol.uses_tls() => Some(Arc::new(
                net::tls::TlsListener::build(ssl, spec.config.ssl_handshake_timeout_ms).map_err(
                    |source| StartError::Tls {
                        listener: listener.name.clone(),
                        source,
                    },
                )?,
            )),
            _ => None,
        };
        advertised_listeners.push(listener.advertised.clone().unwrap_or_else(|| {
            AdvertisedListener {
                host: addr.ip().to_string(),
                port: addr.port(),
            }
        }));
        bound.push((
            addr,
            net::listener::ListenerPlace {
                index,
                name: listener.name.clone(),
                protocol: listener.protocol,
                tls,
                sasl: listener.sasl.clone(),
            },
        ));
    }
    let listen_addr = bound[0].0;
    let advertised = advertised_listeners[0].clone();
    // Shutdown requests (a signal, or `RunningBroker::shutdown`) reach shard 0 through this
    // channel; shard 0 waits on it from glommio's blocking pool.
    let (stop_tx, stop_requests) = mpsc::channel::<()>();
    if install_signals {
        let mut signals = Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
            .map_err(StartError::Signals)?;
        let stop_tx = stop_tx.clone();
        std::thread::Builder::new()
            .name("signals".to_string())
            .spawn(move || {
                let mut forever = signals.forever();
                if let Some(signal) = forever.next() {
                    info!(signal, "shutdown requested");
                    let _ = stop_tx.send(());
                }
                // A second signal while draining means "now".
                if let Some(signal) = forever.next() {
                    error!(signal, "second signal during shutdown: exiting now");
                    std::process::exit(1);
                }
            })
            .map_err(StartError::Signals)?;
    }
    let controller_parts = Arc::new(Mutex::new(Some(ControllerParts {
        metadata,
        stop_requests,
    })));
    let mesh = MeshBuilder::<Envelope, _>::full(cores.len(), limits::MESH_CHANNEL_CAPACITY_MAX);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<ShardReady, String>>();

    let open_files = rlimit::Resource::NOFILE
        .get()
        .ok()
        .map(|(soft, _)| soft)
        .filter(|&soft| soft != rlimit::INFINITY);
    let admission = Admission::new(&spec.config, open_files);
    if admission.max_connections() < spec.config.max_connections {
        info!(
            max_connections = admission.max_connections(),
            open_files_limit = open_files,
            "max.connections capped below the open-file limit, keeping descriptors for the logs"
        );
    }
    let quotas = crate::quota::meter::QuotaMeters::new(
        cores.len(),
        crate::quota::meter::QuotaWindows {
            samples: spec.config.int("quota.window.num", 11).max(1) as usize,
            window_ms: spec.config.int("quota.window.size.seconds", 1).max(1) as u64 * 1000,
        },
    );
    let lease = Arc::new(crate::metadata::lease::MetadataLease::new());
    let (watches, heartbeats, nudge_senders) = watchdog::channels(cores.len());
    let watchdog = Watchdog::start(heartbeats, nudge_senders);
    let mut handles = Vec::with_capacity(cores.len());
    for (&core, watch) in cores.iter().zip(watches) {
        let spec = spec.clone();
        let mesh = mesh.clone();
        let ready_tx = ready_tx.clone();
        let controller_parts = controller_parts.clone();
        let advertised = advertised.clone();
        let advertised_listeners = advertised_listeners.clone();
        let listeners = bound.clone();
        let admission = admission.clone();
        let quotas = quotas.clone();
        let lease = lease.clone();
        let handle = executor::pinned_executor(core, spec.config.shard_spin_before_park_us)
            .spawn(move || async move {
                let place = ShardPlace {
                    core,
                    admission,
                    quotas,
                    lease,
                    listen_addr,
                    advertised,
                    advertised_listeners,
                    listeners,
                    watch,
                };
                let result = run_shard(spec, place, mesh, controller_parts, ready_tx.clone()).await;
                if let Err(reason) = &result {
                    let _ = ready_tx.send(Err(reason.clone()));
                }
                result
            })
            .map_err(|err| StartError::Executor {
                core,
                reason: err.to_string(),
            })?;
        handles.push((core, handle));
    }
    drop(ready_tx);

    for _ in cores {
        match ready_rx.recv() {
            Ok(Ok(ready)) => info!(shard = %ready.shard, core = ready.core, "shard ready"),
            Ok(Err(reason)) => {
                return Err(StartError::Shard {
                    core: cores[0],
                    reason,
                });
            }
            Err(_) => {
                // Every sender is gone without a report: an executor thread died early.
                let reason = handles
                    .into_iter()
                    .filter_map(|(core, h)| match h.join() {
                        Err(err) => Some(StartError::Executor {
                            core,
                            reason: err.to_string(),
                        }),
                        Ok(Err(reason)) => Some(StartError::Shard { core, reason }),
                        Ok(Ok(())) => None,
                    })
                    .next();
                return Err(reason.unwrap_or(StartError::Shard {
                    core: cores[0],
                    reason: "executor exited before listening".to_string(),
                }));
            }
        }
    }
    // Every shard has bound the ports itself now; the placeholder sockets can go.
    drop(port_holders);
    Ok(RunningBroker {
        listen_addr,
        advertised,
        listeners: bound
            .iter()
            .map(|(addr, place)| (place.name.clone(), *addr))
            .collect(),
        handles,
        stop_tx,
        watchdog,
    })
}

/// Where a shard runs: its core, the address it listens on and advertises, and its end of the
/// watchdog.
struct ShardPlace {
    core: usize,
    admission: Arc<Admission>,
    quotas: Arc<crate::quota::meter::QuotaMeters>,
    lease: Arc<crate::metadata::lease::MetadataLease>,
    listen_addr: SocketAddr,
    advertised: AdvertisedListener,
    advertised_listeners: Vec<AdvertisedListener>,
    listeners: Vec<(SocketAddr, net::listener::ListenerPlace)>,
    watch: ShardWatch,
}

async fn run_shard(
    spec: BrokerSpec,
    place: ShardPlace,
    mesh: MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>,
    controller_parts: Arc<Mutex<Option<ControllerParts>>>,
    ready_tx: mpsc::Sender<Result<ShardReady, String>>,
) -> Result<(), String> {
    let ShardPlace {
        core,
        admission,
        quotas,
        lease,
        listen_addr,
        advertised,
        advertised_listeners,
        listeners,
        mut watch,
    } = place;
    // First, from the root future (which glommio always polls): the watchdog's channel, so it
    // can wake this shard even during the rest of start-up.
    let nudges = match watch.nudges.take() {
        Some(nudges) => Some(watchdog::connect(nudges).await),
        None => None,
    };
    let shard_count = mesh.nr_peers();
    let (senders, receivers) = mesh
        .join()
        .await
        .map_err(|err| format!("joining the shard mesh: {err}"))?;
    let id = ShardId(senders.peer_id());
    let queues = executor::create_task_queues();
    let parts = if id == ShardId::CONTROLLER {
        controller_parts
            .lock()
            .expect("startup lock is never poisoned")
            .take()
    } else {
        None
    };
    let (controller, stop_requests, quorum) = match parts {
        Some(ControllerParts {
            metadata: MetadataParts::Local(store),
            stop_requests,
        }) => (
            Some(Controller::new(store, spec.image.clone())),
            Some(stop_requests),
            None,
        ),
        Some(ControllerParts {
            metadata: MetadataParts::Quorum(parts),
            stop_requests,
        }) => {
            let machine = quorum::state_machine(&spec.config, &parts, spec.image.clone());
            (
                Some(Controller::replicated(machine.clone())),
                Some(stop_requests),
                Some((machine, parts)),
            )
        }
        None => (None, None, None),
    };
    let on_ready = spec.on_shard_ready.clone();
    let image = Rc::new(spec.image);
    let context = Rc::new_cyclic(|weak| ShardContext {
        id,
        core: Some(core),
        shard_count,
        config: spec.config.clone(),
        identity: spec.identity,
        listen_addr,
        advertised,
        advertised_listeners,
        router: Router::new(id, shard_count, senders, weak.clone()),
        queues,
        controller,
        draining: ShutdownSignal::new(),
        stopping: ShutdownSignal::new(),
        connections: glommio::sync::Gate::new(),
        partitions: PartitionManager::new(
            spec.config.clone(),
            id,
            shard_count,
            LogEnv {
                cache: ShardCache::for_current_shard(),
                background_queue: Some(queues.background),
                reserve_space: true,
                reserve_budget: crate::storage::ReserveBudget::new(
                    spec.config
                        .int("log.segment.reserve.budget.bytes", 1 << 30)
                        .max(0) as u64,
                ),
            },
        ),
        metrics: crate::metrics::ShardMetrics::default(),
        quotas: crate::quota::meter::ShardQuotas::new(id.0, quotas),
        lease,
        producer_id_block: std::cell::Cell::new((0, 0)),
        groups: crate::group::GroupCoordinator::new(&spec.config),
        txns: crate::txn::TxnCoordinator::new(&spec.config),
        replication: crate::replication::ReplicaManager::new(
            spec.config.node_id,
            crate::replication::ReplicationSettings::from_config(&spec.config),
        ),
        image: std::cell::RefCell::new(image.clone()),
    });
    context.sync_partitions();
    let ticking = context.clone();
    glommio::spawn_local_into(
        executor::reactor_tick(watch.heartbeats.clone(), watch.slot, move || {
            ticking.draining.is_raised()
        }),
        queues.background,
    )
    .map_err(|err| err.to_string())?
    .detach();
    if let Some(nudges) = nudges {
        glommio::spawn_local_into(watchdog::drain_nudges(nudges), queues.background)
            .map_err(|err| err.to_string())?
            .detach();
    }
    glommio::spawn_local_into(retention_loop(context.clone()), queues.background)
        .map_err(|err| err.to_string())?
        .detach();
    glommio::spawn_local_into(offsets_expiry_loop(context.clone()), queues.background)
        .map_err(|err| err.to_string())?
        .detach();
    glommio::spawn_local_into(cleaner_loop(context.clone()), queues.background)
        .map_err(|err| err.to_string())?
        .detach();
    if context.clustered() {
        glommio::spawn_local_into(
            crate::replication::ReplicaManager::run_isr_checks(context.clone()),
            queues.background,
        )
        .map_err(|err| err.to_string())?
        .detach();
    }
    glommio::spawn_local_into(
        crate::txn::coordinator::run_maintenance(context.clone()),
        queues.requests,
    )
    .map_err(|err| err.to_string())?
    .detach();

    glommio::spawn_local_into(
        router::run_mesh_receivers(context.clone(), receivers),
        queues.requests,
    )
    .map_err(|err| err.to_string())?
    .detach();

    if let Some((machine, parts)) = quorum {
        quorum::start(&context, machine, *parts)?;
    }
    for (addr, listener_place) in listeners {
        let listener = net::listener::bind(addr).map_err(|err| format!("binding {addr}: {err}"))?;
        info!(shard = %id, core, shards = shard_count, addr = %addr, listener = %listener_place.name, "shard started");
        glommio::spawn_local_into(
            net::listener::accept_loop(
                context.clone(),
                listener,
                admission.clone(),
                Rc::new(listener_place),
            ),
            queues.requests,
        )
        .map_err(|err| err.to_string())?
        .detach();
    }
    // The metrics endpoint is bound before the shard reports ready, so "ready" means every
    // listener the operator asked for is up.
    if id == ShardId::CONTROLLER
        && let Some(addr) = context.config.metrics_listen
    {
        let listener = crate::broker::metrics_http::bind(addr)
            .map_err(|err| format!("binding the metrics listener {addr}: {err}"))?;
        let bound = listener.local_addr().map_err(|err| err.to_string())?;
        info!(metrics_listen = %bound, "metrics endpoint listening");
        glommio::spawn_local_into(
            crate::broker::metrics_http::serve(context.clone(), listener),
            queues.background,
        )
        .map_err(|err| err.to_string())?
        .detach();
    }
    let _ = ready_tx.send(Ok(ShardReady { shard: id, core }));
    drop(ready_tx);

    if let Some(stop_requests) = stop_requests {
        glommio::spawn_local_into(
            shutdown_on_request(context.clone(), stop_requests),
            queues.background,
        )
        .map_err(|err| err.to_string())?
        .detach();
    }
    if let Some(hook) = on_ready {
        hook(context.clone());
    }

    context.stopping.raised().await;
    info!(shard = %id, "shard stopped");
    Ok(())
}

/// Applies retention to this shard's partitions every `log.retention.check.interval.ms`,
/// until the shard drains.
async fn retention_loop(context: Rc<ShardContext>) {
    let interval = Duration::from_millis(context.config.log_retention_check_interval_ms);
    loop {
        if !context.sleep_unless_draining(interval).await {
            break;
        }
        context.partitions.apply_retention(now_ms()).await;
    }
}

/// Compacts this shard's partitions whose cleanup policy includes `compact`: a round over them
/// every `log.cleaner.backoff.ms` (`storage::cleaner`), until the shard drains. Off with
/// `log.cleaner.enable=false`.
async fn cleaner_loop(context: Rc<ShardContext>) {
    let config =
        crate::storage::cleaner::CleanerConfig::for_shard(&context.config, context.shard_count);
    if !config.enabled {
        return;
    }
    let cleaner = crate::storage::cleaner::Cleaner::new(config);
    let backoff = Duration::from_millis(config.backoff_ms.max(1));
    loop {
        if !context.sleep_unless_draining(backoff).await {
            break;
        }
        let reports = cleaner
            .clean_due_partitions(&context.partitions, now_ms())
            .await;
        let mut ratios = Vec::with_capacity(reports.len());
        for report in reports {
            if let Some((stats, elapsed)) = report.cleaned {
                context
                    .metrics
                    .record_cleaning(stats.bytes_read, stats.bytes_written, elapsed);
            }
            ratios.push((report.topic, report.partition, report.dirty_ratio));
        }
        context.metrics.set_dirty_ratios(ratios);
    }
}

/// Expires committed offsets of the groups this shard coordinates every
/// `offsets.retention.check.interval.ms` (`group::coordinator::expire_offsets`), until the shard
/// drains.
async fn offsets_expiry_loop(context: Rc<ShardContext>) {
    let interval = Duration::from_millis(
        context
            .groups
            .settings()
            .offsets_retention_check_interval_ms,
    );
    loop {
        if !context.sleep_unless_draining(interval).await {
            break;
        }
        crate::group::coordinator::expire_offsets(&context).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Shard 0: waits for a shutdown request, then drains and stops every shard.
async fn shutdown_on_request(context: Rc<ShardContext>, stop_requests: mpsc::Receiver<()>) {
    // The receiver is moved to the blocking pool and back: `recv` blocks a pool thread, never
    // the executor. A closed channel (every sender gone) also means stop.
    let _ = glommio::executor()
        .spawn_blocking(move || stop_requests.recv())
        .await;
    crate::broker::quorum::controlled_shutdown(&context).await;
    info!("draining connections");
    shutdown_all(&context).await;
}

/// Drains every shard (concurrently), then stops every other shard and finally this one.
pub async fn shutdown_all(context: &Rc<ShardContext>) {
    let drains = (0..context.shard_count).map(|shard| {
        context
            .router
            .call(ShardId(shard), ShardRequest::Drain)
            .map(move |r| (shard, r))
    });
    for (shard, result) in futures::future::join_all(drains).await {
        if let Err(err) = result {
            warn!(shard, %err, "drain failed");
        }
    }
    for shard in (0..context.shard_count).filter(|&s| s != context.id.0) {
        // A shard that stops before its reply is sent shows up as ShardGone: that is success.
        let _ = context
            .router
            .call(ShardId(shard), ShardRequest::Stop)
            .await;
    }
    context.stopping.raise();
}
