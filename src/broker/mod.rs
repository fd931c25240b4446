//! The composition root: the per-shard context that owns the services, the typed messages
//! between shards (`request`) and their dispatch to the services that serve them.
//!
//! Owner: each `ShardContext` lives inside one executor for the life of the process; it is
//! `Rc`-shared by that shard's tasks and never crosses threads (it is not `Send`). What crosses
//! between shards is a `ShardRequest`, `ShardResponse` or `ShardPost` in a
//! `runtime::router::Envelope` over the channel mesh.
//!
//! Lifecycle (`crate::pool` builds the context): join the mesh, build the context, start the
//! mesh receivers, bind the listener, report ready to `main`; run until a `Stop` request; on
//! shutdown the controller shard sends `Drain` to all (stop accepting, finish in-flight
//! requests) and then `Stop`.
//!
//! Layering (`../shared/DESIGN.md` §7): the broker imports the runtime and the services, never
//! the protocol front (`kafka`); `net` and `kafka` sit on top of it. One departure: the group
//! and transaction coordinators (`group::coordinator`, `txn::coordinator`, their `route`s)
//! take `&ShardContext` and send `ShardRequest`s themselves, because they run across shards
//! (a coordinator writes markers on partition owners, a handler reaches the coordinator's
//! shard) and reach most of what the context owns (partitions, image, router, config). Cutting
//! that edge means giving each coordinator a narrow handle of its own instead of the context.

pub mod coordinator_log;
pub mod error;
pub mod metrics_http;
pub mod owner;
pub mod quorum;
pub mod request;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use glommio::TaskQueueHandle;
use glommio::sync::Gate;
use tracing::{info, warn};

use crate::config::{AdvertisedListener, Config};
use crate::metadata::{
    Controller, ControllerCallError, ControllerLink, ControllerRequest, ControllerResponse,
    MetadataImage, NodeIdentity,
};
use crate::metrics::{MetricsSnapshot, ShardMetrics, SnapshotGauges};
use crate::runtime::router::{Router, Serve};
use crate::runtime::shutdown::ShutdownSignal;
use crate::runtime::{ShardId, TaskQueues};
use crate::storage::ShardCache;
use crate::storage::manager::PartitionManager;
pub use request::{ShardPost, ShardRequest, ShardResponse};

/// Everything one shard owns. See the module documentation.
#[derive(Debug)]
pub struct ShardContext {
    /// This shard.
    pub id: ShardId,
    /// The CPU core the executor is pinned to, if it is pinned.
    pub core: Option<usize>,
    /// Number of shards in the broker.
    pub shard_count: usize,
    /// The broker configuration (read-only).
    pub config: Config,
    /// Node id and cluster id.
    pub identity: NodeIdentity,
    /// The address the listener is bound to (the real port when `listen` asked for port 0).
    pub listen_addr: SocketAddr,
    /// What Metadata advertises (for the first client listener).
    pub advertised: AdvertisedListener,
    /// What each client listener advertises, by its index in `Config::listeners`.
    pub advertised_listeners: Vec<AdvertisedListener>,
    /// Cross-shard calls.
    pub router: Router<ShardContext>,
    /// The task queues.
    pub queues: TaskQueues,
    /// The controller, on shard 0 only.
    pub controller: Option<Controller>,
    /// Raised when the shard starts draining: stop accepting, stop reading new requests.
    pub draining: ShutdownSignal,
    /// Raised when the shard is to stop.
    pub stopping: ShutdownSignal,
    /// Every open connection holds a pass; draining waits for the gate to close.
    pub connections: Gate,
    /// The partition logs this shard owns.
    pub partitions: PartitionManager,
    /// This shard's metrics.
    pub metrics: ShardMetrics,
    /// Client quota meters (this shard's view of the process's).
    pub quotas: crate::quota::meter::ShardQuotas,
    /// Whether this process's image is known to be current (`metadata::lease`).
    pub lease: std::sync::Arc<crate::metadata::lease::MetadataLease>,
    /// Producer ids this shard may hand out: `(next, end)`.
    pub producer_id_block: Cell<(i64, i64)>,
    /// The consumer groups this shard coordinates.
    pub groups: crate::group::GroupCoordinator,
    /// The transactional ids this shard coordinates.
    pub txns: crate::txn::TxnCoordinator,
    /// The replicas of this shard's partitions under a controller quorum: leader and
    /// follower state, the fetchers.
    pub replication: crate::replication::ReplicaManager,
    /// The current metadata image: set by `pool` when the shard starts, replaced only
    /// through `install_image`.
    pub(crate) image: RefCell<Rc<MetadataImage>>,
}

impl ShardContext {
    /// What a client of `session`'s listener is told this broker's address is.
    pub fn advertised_for(&self, session: &crate::acl::Session) -> &AdvertisedListener {
        self.advertised_listeners
            .get(session.listener)
            .unwrap_or(&self.advertised)
    }

    /// Whether `session` may perform `operation` on resource `name` of `resource_type` (codes
    /// of `crate::acl`). Always true when no authorizer is configured: one `None` test, no
    /// image access.
    pub fn authorize(
        &self,
        session: &crate::acl::Session,
        operation: i8,
        resource_type: i8,
        name: &str,
    ) -> bool {
        match &self.config.authorizer {
            None => true,
            Some(authorizer) => {
                authorizer.authorize(&self.image().acls, session, operation, resource_type, name)
            }
        }
    }

    /// Whether `session` may perform `operation` on some resource of `resource_type`
    /// (`Authorizer::authorize_any`). Always true when no authorizer is configured.
    pub fn authorize_any(
        &self,
        session: &crate::acl::Session,
        operation: i8,
        resource_type: i8,
    ) -> bool {
        match &self.config.authorizer {
            None => true,
            Some(authorizer) => {
                authorizer.authorize_any(&self.image().acls, session, operation, resource_type)
            }
        }
    }

    /// Sleeps for `duration` unless the shard starts draining first; true if it slept, false if
    /// the shard is draining (periodic background loops end then).
    pub async fn sleep_unless_draining(&self, duration: Duration) -> bool {
        futures_lite::future::or(
            async {
                glommio::timer::sleep(duration).await;
                true
            },
            async {
                self.draining.raised().await;
                false
            },
        )
        .await
    }

    /// The current metadata image. Cheap: an `Rc` clone.
    pub fn image(&self) -> Rc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Whether this node is part of a controller quorum (`controller.quorum.voters` set)
    /// rather than a lone node.
    pub fn clustered(&self) -> bool {
        !self.config.quorum.voters.is_empty()
    }

    /// Whether this shard's image is known to be current: always on a lone node; under a
    /// quorum while the metadata lease holds for the installed image (`metadata::lease`).
    pub fn metadata_current(&self) -> bool {
        !self.clustered() || self.lease.holds(self.image().offset)
    }

    /// The controller quorum as shard 0 sees it; `None` on a lone node or while it starts.
    pub async fn quorum_status(self: &Rc<Self>) -> Option<crate::cluster::driver::QuorumStatus> {
        match self
            .router
            .call(ShardId::CONTROLLER, ShardRequest::QuorumStatus)
            .await
        {
            Ok(ShardResponse::QuorumStatus(status)) => status.map(|s| *s),
            _ => None,
        }
    }

    /// Installs `image` if it is newer than the current one, then brings this shard's
    /// partitions in line with it in the background. Images from the controller arrive in
    /// order; the check makes a stale or repeated image harmless anyway.
    pub fn install_image(self: &Rc<Self>, image: Rc<MetadataImage>) {
        {
            let mut current = self.image.borrow_mut();
            if image.offset <= current.offset {
                return;
            }
            *current = image.clone();
        }
        self.sync_partitions();
    }

    /// Starts a background task that opens, reconfigures and deletes this shard's partitions
    /// to match the shard's newest image (read when the task's turn comes, see
    /// `PartitionManager::sync_with_image`).
    pub fn sync_partitions(self: &Rc<Self>) {
        let context = self.clone();
        glommio::spawn_local_into(
            async move {
                let latest = || context.image();
                context.partitions.sync_with_image(latest).await;
                if context.clustered() {
                    crate::replication::ReplicaManager::sync_with_image(&context).await;
                    // The coordinators follow their internal partitions' leadership.
                    crate::group::coordinator::follow_leadership(&context);
                    crate::txn::coordinator::follow_leadership(&context);
                }
            },
            self.queues.background,
        )
        .expect("the background queue exists for the life of the shard")
        .detach();
    }

    /// This shard's metrics with the gauges read now.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        let cache = ShardCache::for_current_shard();
        let (cache_hits, cache_misses) = cache.stats();
        let mut snapshot = self.metrics.snapshot(SnapshotGauges {
            partitions: self.partitions.open_partitions().len() as u64,
            cache_hits,
            cache_misses,
            cache_bytes: cache.bytes() as u64,
            groups: self.groups.group_count() as u64,
            segment_reserved_bytes: self.partitions.reserved_bytes(),
            replication: self.replication.gauges(),
        });
        snapshot.cross_shard_calls = self.router.remote_calls();
        snapshot
    }

    /// Stops accepting, lets open connections finish their in-flight requests, and waits for
    /// them to close, up to `shutdown-drain-ms`.
    async fn drain(&self) {
        self.draining.raise();
        let bound = Duration::from_millis(self.config.shutdown_drain_ms);
        let closed = glommio::timer::timeout(bound, self.connections.close()).await;
        match closed {
            Ok(()) => info!(shard = %self.id, "drained"),
            Err(_) => warn!(
                shard = %self.id,
                drain_ms = self.config.shutdown_drain_ms,
                "connections still busy after the drain bound; closing them"
            ),
        }
    }
}

/// The dispatch of `ShardRequest`s to the services that serve them.
impl Serve for ShardContext {
    type Request = ShardRequest;
    type Response = ShardResponse;
    type Post = ShardPost;

    fn apply_post(self: &Rc<Self>, post: ShardPost) {
        match post {
            ShardPost::InstallImage(image) => self.install_image(Rc::new(*image)),
        }
    }

    async fn serve(self: &Rc<Self>, from: ShardId, request: ShardRequest) -> ShardResponse {
        match request {
            ShardRequest::Ping { payload } => ShardResponse::Pong {
                shard: self.id,
                payload,
            },
            ShardRequest::Controller(request) => {
                let Some(controller) = &self.controller else {
                    warn!(%from, "controller request sent to a shard that is not the controller");
                    return ShardResponse::Controller(ControllerResponse::NotController);
                };
                let publish = |image: Rc<MetadataImage>| {
                    let context = self.clone();
                    async move {
                        context.install_image(image.clone());
                        context
                            .router
                            .broadcast(|| ShardPost::InstallImage(Box::new((*image).clone())))
                            .await;
                    }
                };
                ShardResponse::Controller(controller.handle(request, publish).await)
            }
            ShardRequest::Produce {
                items,
                acks,
                timeout_ms,
            } => ShardResponse::Produce(owner::serve_produce(self, items, acks, timeout_ms).await),
            ShardRequest::Read(items) => ShardResponse::Read(owner::serve_read(self, items).await),
            ShardRequest::WaitForData { items, timeout_ms } => {
                owner::serve_wait(self, items, Duration::from_millis(timeout_ms)).await;
                ShardResponse::Done
            }
            ShardRequest::Offsets(items) => {
                ShardResponse::Offsets(owner::serve_offsets(self, items).await)
            }
            ShardRequest::DeleteRecords(items) => {
                ShardResponse::DeleteRecords(owner::serve_delete(self, items).await)
            }
            ShardRequest::LogDirs(items) => {
                ShardResponse::LogDirs(owner::serve_log_dirs(self, items).await)
            }
            ShardRequest::Producers(items) => {
                ShardResponse::Producers(owner::serve_producers(self, items).await)
            }
            ShardRequest::WriteTxnMarkers(items) => {
                ShardResponse::WriteTxnMarkers(owner::serve_txn_markers(self, items).await)
            }
            ShardRequest::Metrics => ShardResponse::Metrics(Box::new(self.metrics_snapshot())),
            ShardRequest::QuorumStatus => {
                let quorum = self.controller.as_ref().and_then(|c| c.quorum().cloned());
                let status = match quorum {
                    Some(quorum) => quorum.status().await.map(Box::new),
                    None => None,
                };
                ShardResponse::QuorumStatus(status)
            }
            ShardRequest::Group(call) => {
                ShardResponse::Group(crate::group::coordinator::serve(self, call).await)
            }
            ShardRequest::Txn(call) => {
                // Boxed: the coordinator calls the router (producer ids, markers), which may
                // call back into this function on the same shard.
                let serving: futures::future::LocalBoxFuture<'_, _> =
                    Box::pin(crate::txn::coordinator::serve(self, call));
                ShardResponse::Txn(serving.await)
            }
            ShardRequest::Drain => {
                self.drain().await;
                ShardResponse::Done
            }
            ShardRequest::Stop => {
                self.partitions.close_all().await;
                self.stopping.raise();
                ShardResponse::Done
            }
        }
    }

    fn router(&self) -> &Router<Self> {
        &self.router
    }

    fn request_queue(&self) -> TaskQueueHandle {
        self.queues.requests
    }
}

/// What the replication service uses of its shard.
impl crate::replication::ReplicationHost for ShardContext {
    fn replication(&self) -> &crate::replication::ReplicaManager {
        &self.replication
    }

    fn partition_manager(&self) -> &PartitionManager {
        &self.partitions
    }

    fn current_image(&self) -> Rc<MetadataImage> {
        self.image()
    }

    async fn sleep_or_drain(&self, duration: Duration) -> bool {
        self.sleep_unless_draining(duration).await
    }

    fn is_draining(&self) -> bool {
        self.draining.is_raised()
    }

    fn background_queue(&self) -> TaskQueueHandle {
        self.queues.background
    }
}

/// The controller is shard 0 of this broker, reached through the router.
impl ControllerLink for ShardContext {
    async fn ask_controller(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, ControllerCallError> {
        match self
            .router
            .call(ShardId::CONTROLLER, ShardRequest::Controller(request))
            .await?
        {
            ShardResponse::Controller(response) => Ok(response),
            other => Err(ControllerCallError::Unexpected(format!("{other:?}"))),
        }
    }

    fn producer_id_block(&self) -> &Cell<(i64, i64)> {
        &self.producer_id_block
    }
}
