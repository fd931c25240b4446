//! Partition replication, Kafka's protocol (DESIGN.md §8): each partition's replicas are a
//! leader and followers; followers fetch from the leader (`follower`), the leader keeps each
//! follower's log end and the high watermark over the ISR (`leader`), acks=all waits for the
//! ISR (`ReplicaManager::wait_replicated`), and ISR changes go through the controller
//! (AlterPartition, committed in the metadata log).
//!
//! Owner: one `ReplicaManager` per shard, for the partitions `shard_for` gives the shard, in
//! its `ShardContext`; the role of every replica (leader or follower of whom, at which leader
//! epoch) is set from the shard's metadata image by `sync_with_image`, which runs after the
//! partition manager's own sync, in the same background task. Only under a controller quorum:
//! a lone node has no placement and this manager holds nothing (its partitions are their own
//! ISR and the log's durable end is the high watermark, as before).
//!
//! Lifecycle: a replica becomes leader by stamping its epoch into its log
//! (`PartitionLog::set_leader_epoch`, which records where the epoch starts) and starting a
//! `LeaderState` whose followers count as caught up now; its high watermark starts where it
//! was and moves when every ISR member has fetched. A replica becomes a follower by handing
//! itself to the fetcher of its leader (one per leader broker and shard), which first
//! truncates the log to the point where it diverges from the leader's (OffsetForLeaderEpoch,
//! KIP-101/279) and then fetches. A replica that is neither (the partition has no leader)
//! waits. Role changes wake acks=all waiters, which then answer NOT_LEADER_OR_FOLLOWER.
//!
//! Layering: a service; it reaches the controller through `metadata::client` and the rest of
//! its shard through the `ReplicationHost` trait the broker layer implements, and it speaks
//! to other brokers with the `kafka-protocol` crate's codec (`client`), never through the
//! protocol front. May await: log appends and truncations, the controller, sockets to
//! leaders, timers.

pub mod client;
pub mod follower;
pub mod leader;
pub mod selector;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::Config;
use crate::metadata::client::alter_partition;
use crate::metadata::quorum::process_incarnation;
use crate::metadata::{ControllerLink, MetadataImage};
use crate::storage::log::now_ms;
use crate::storage::manager::{OpenPartition, PartitionManager};
use follower::Fetcher;
use leader::LeaderState;

/// What a shard offers the replication service: its image, its partitions, its controller
/// link, and its lifetime. Implemented by the broker's `ShardContext`.
pub trait ReplicationHost: ControllerLink + 'static {
    /// The shard's replication service.
    fn replication(&self) -> &ReplicaManager;
    /// The shard's partitions.
    fn partition_manager(&self) -> &PartitionManager;
    /// The shard's current metadata image.
    fn current_image(&self) -> Rc<MetadataImage>;
    /// Sleeps for `duration` unless the shard starts draining first; false when draining.
    fn sleep_or_drain(&self, duration: Duration) -> impl std::future::Future<Output = bool>;
    /// Whether the shard drains (background loops end).
    fn is_draining(&self) -> bool;
    /// The shard's background task queue.
    fn background_queue(&self) -> glommio::TaskQueueHandle;
}

/// The settings replication runs with, Kafka's names.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationSettings {
    /// `replica.lag.time.max.ms`.
    pub lag_time_max_ms: i64,
    /// `replica.fetch.wait.max.ms`.
    pub fetch_wait_max_ms: i32,
    /// `replica.fetch.max.bytes`.
    pub fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`.
    pub fetch_response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`.
    pub fetch_backoff_ms: u64,
    /// `replica.selector.class`.
    pub selector: selector::ReplicaSelector,
}

impl ReplicationSettings {
    /// From the broker configuration.
    pub fn from_config(config: &Config) -> ReplicationSettings {
        let response_bound = crate::limits::REPLICA_RESPONSE_BYTES_MAX as i64 - 1024 * 1024;
        ReplicationSettings {
            lag_time_max_ms: config.int("replica.lag.time.max.ms", 30_000).max(1),
            fetch_wait_max_ms: config
                .int("replica.fetch.wait.max.ms", 500)
                .clamp(0, 30_000) as i32,
            fetch_max_bytes: config
                .int("replica.fetch.max.bytes", 1 << 20)
                .clamp(1, response_bound) as i32,
            fetch_response_max_bytes: config
                .int("replica.fetch.response.max.bytes", 10 << 20)
                .clamp(1, response_bound) as i32,
            fetch_backoff_ms: config.int("replica.fetch.backoff.ms", 1_000).max(0) as u64,
            selector: selector::ReplicaSelector::named(&config.text("replica.selector.class", "")),
        }
    }
}

/// What one replica of a partition is doing.
#[derive(Debug)]
pub enum Role {
    /// This broker leads the partition.
    Leader(LeaderState),
    /// This broker follows `leader` (-1: the partition has no leader now) at `leader_epoch`.
    Follower {
        /// The leader's broker id, or -1.
        leader: i32,
        /// The leader epoch the image gave.
        leader_epoch: i32,
    },
}

/// One partition this shard holds a replica of.
#[derive(Debug)]
pub struct Replica {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The topic's id.
    pub topic_id: Uuid,
    /// The log and producer state.
    pub open: Rc<OpenPartition>,
    /// Leader or follower.
    pub role: RefCell<Role>,
    /// As a follower: whether the current leader has told this replica its high watermark
    /// since it became a follower. Until then the local high watermark may be past the
    /// leader's (a restarted replica's unsynced tail), and consumers are not served here
    /// (KIP-392's reads from followers).
    pub leader_high_watermark_known: Cell<bool>,
}

impl Replica {
    /// The leader epoch this replica leads at, if it leads.
    pub fn led_epoch(&self) -> Option<i32> {
        match &*self.role.borrow() {
            Role::Leader(state) => Some(state.leader_epoch),
            Role::Follower { .. } => None,
        }
    }
}

/// Why an acks=all produce did not complete, as a Kafka error code's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    /// Leadership moved while the produce waited (NOT_LEADER_OR_FOLLOWER).
    #[error("this broker no longer leads the partition")]
    NotLeader,
    /// The ISR fell below `min.insync.replicas` after the append
    /// (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    #[error("the ISR has {insync} members, fewer than min.insync.replicas {min}")]
    NotEnoughReplicasAfterAppend {
        /// ISR members.
        insync: usize,
        /// The bound.
        min: usize,
    },
    /// The ISR did not reach the offset in time (REQUEST_TIMED_OUT).
    #[error("the ISR did not replicate the batch within {0} ms")]
    Timeout(u64),
    /// A follower's fetch named a broker that is not a replica, or reached a replica that
    /// does not lead (NOT_LEADER_OR_FOLLOWER).
    #[error("broker {0} is not a follower of this leader")]
    NotFollower(i32),
}

/// See the module documentation.
#[derive(Debug)]
pub struct ReplicaManager {
    me: i32,
    settings: ReplicationSettings,
    replicas: RefCell<HashMap<(String, i32), Rc<Replica>>>,
    fetchers: RefCell<BTreeMap<i32, Rc<Fetcher>>>,
    isr_shrinks: Cell<u64>,
    isr_expands: Cell<u64>,
    /// One sync at a time: two would both see a replica not yet leading (its epoch is being
    /// recorded, an await) and both take the role.
    sync_permit: glommio::sync::Semaphore,
}

impl ReplicaManager {
    /// An empty manager for broker `me`.
    pub fn new(me: i32, settings: ReplicationSettings) -> ReplicaManager {
        ReplicaManager {
            me,
            settings,
            replicas: RefCell::default(),
            fetchers: RefCell::default(),
            isr_shrinks: Cell::new(0),
            isr_expands: Cell::new(0),
            sync_permit: glommio::sync::Semaphore::new(1),
        }
    }

    /// The shard's replication gauges, for a metrics scrape.
    pub fn gauges(&self) -> crate::metrics::ReplicationGauges {
        let mut gauges = crate::metrics::ReplicationGauges {
            isr_shrinks: self.isr_shrinks.get(),
            isr_expands: self.isr_expands.get(),
            ..Default::default()
        };
        for replica in self.replicas.borrow().values() {
            if let Role::Leader(state) = &*replica.role.borrow() {
                gauges.leader_partitions += 1;
                if state.isr.len() < state.replicas.len() {
                    gauges.under_replicated_partitions += 1;
                }
                if state.isr.len() < state.min_insync {
                    gauges.under_min_isr_partitions += 1;
                }
            }
        }
        gauges
    }

    /// The settings.
    pub fn settings(&self) -> ReplicationSettings {
        self.settings
    }

    /// This broker's id.
    pub fn node_id(&self) -> i32 {
        self.me
    }

    /// The replica of `topic`-`partition` on this shard, if it is replicated here.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Rc<Replica>> {
        self.replicas
            .borrow()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Every replica on this shard.
    pub fn all(&self) -> Vec<Rc<Replica>> {
        self.replicas.borrow().values().cloned().collect()
    }

    /// Sets every replica's role from the host's current image: see the module documentation.
    pub async fn sync_with_image<H: ReplicationHost>(host: &Rc<H>) {
        let manager = host.replication();
        let Ok(_permit) = manager.sync_permit.acquire_permit(1).await else {
            return;
        };
        // The newest image, read once this sync has its turn.
        let image = host.current_image();
        let me = manager.me;
        // Until this process's own registration is in the image and unfenced, the image may
        // be one from before a restart: this broker neither leads nor follows on its word.
        let serving = image
            .brokers
            .get(&me)
            .is_some_and(|b| !b.fenced && b.incarnation == process_incarnation());
        let mut seen = HashSet::new();
        for meta in image.topics.values() {
            for (index, state) in meta.placement.iter().enumerate() {
                let partition = index as i32;
                if !state.replicas.contains(&me)
                    || !host.partition_manager().owns(&meta.name, partition)
                {
                    continue;
                }
                let key = (meta.name.clone(), partition);
                seen.insert(key.clone());
                let existing = manager
                    .get(&meta.name, partition)
                    .filter(|r| r.topic_id == meta.id);
                let replica = match existing {
                    Some(replica) => replica,
                    None => {
                        let open = match host
                            .partition_manager()
                            .get_replica(&image, &meta.name, partition)
                            .await
                        {
                            Ok(open) => open,
                            Err(err) => {
                                warn!(topic = %meta.name, partition, %err,
                                    "cannot open the partition's replica");
                                continue;
                            }
                        };
                        let replica = Rc::new(Replica {
                            topic: meta.name.clone(),
                            partition,
                            topic_id: meta.id,
                            open,
                            role: RefCell::new(Role::Follower {
                                leader: -1,
                                leader_epoch: -1,
                            }),
                            leader_high_watermark_known: Cell::new(false),
                        });
                        manager
                            .replicas
                            .borrow_mut()
                            .insert(key.clone(), replica.clone());
                        replica
                    }
                };
                if serving {
                    manager.apply_state(host, &replica, state).await;
                } else {
                    manager.stand_by(&replica);
                }
            }
        }
        // Replicas no longer here: their partition was deleted or moved away.
        let gone: Vec<Rc<Replica>> = manager
            .replicas
            .borrow()
            .iter()
            .filter(|(key, _)| !seen.contains(key))
            .map(|(_, r)| r.clone())
            .collect();
        for replica in gone {
            manager
                .replicas
                .borrow_mut()
                .remove(&(replica.topic.clone(), replica.partition));
            manager.stop_following(&replica);
            *replica.role.borrow_mut() = Role::Follower {
                leader: -1,
                leader_epoch: -1,
            };
            replica.open.log.notify_waiters();
        }
        // Fetchers left without partitions end.
        manager.fetchers.borrow_mut().retain(|_, fetcher| {
            let keep = !fetcher.is_empty();
            if !keep {
                fetcher.stop();
            }
            keep
        });
    }

    /// Brings one replica's role in line with its partition state in the image.
    async fn apply_state<H: ReplicationHost>(
        &self,
        host: &Rc<H>,
        replica: &Rc<Replica>,
        state: &crate::metadata::image::PartitionState,
    ) {
        let me = self.me;
        let log = &replica.open.log;
        if state.leader == me {
            let same_epoch = replica.led_epoch() == Some(state.leader_epoch);
            if same_epoch {
                if let Role::Leader(leader) = &mut *replica.role.borrow_mut() {
                    leader.committed(
                        state.partition_epoch,
                        state.replicas.clone(),
                        state.isr.clone(),
                    );
                }
                self.update_high_watermark(replica);
                return;
            }
            self.stop_following(replica);
            if let Err(err) = log.set_leader_epoch(state.leader_epoch).await {
                warn!(topic = %replica.topic, partition = replica.partition, %err,
                    "cannot record the new leader epoch; not leading");
                return;
            }
            let min_insync = replica.open.settings.borrow().min_insync_replicas.max(1) as usize;
            let leader = LeaderState::new(
                me,
                state.leader_epoch,
                state.partition_epoch,
                state.replicas.clone(),
                state.isr.clone(),
                log.log_end_offset(),
                log.high_watermark(),
                min_insync,
                now_ms(),
            );
            info!(topic = %replica.topic, partition = replica.partition,
                leader_epoch = state.leader_epoch, isr = ?state.isr,
                log_end = log.log_end_offset(), high_watermark = log.high_watermark(),
                "leading the partition");
            *replica.role.borrow_mut() = Role::Leader(leader);
            self.update_high_watermark(replica);
            log.notify_waiters();
            return;
        }
        let unchanged = matches!(&*replica.role.borrow(),
            Role::Follower { leader, leader_epoch }
                if *leader == state.leader && *leader_epoch == state.leader_epoch);
        if unchanged {
            return;
        }
        let was_leader = replica.led_epoch().is_some();
        self.stop_following(replica);
        *replica.role.borrow_mut() = Role::Follower {
            leader: state.leader,
            leader_epoch: state.leader_epoch,
        };
        replica.leader_high_watermark_known.set(false);
        // What readers may see stays where it is until the leader says more.
        log.set_replicated_high_watermark(Some(log.high_watermark()));
        log.notify_waiters();
        if was_leader {
            info!(topic = %replica.topic, partition = replica.partition,
                leader = state.leader, leader_epoch = state.leader_epoch,
                "no longer leading the partition");
        }
        if state.leader >= 0 {
            let fetcher = self
                .fetchers
                .borrow_mut()
                .entry(state.leader)
                .or_insert_with(|| Fetcher::start(host, state.leader))
                .clone();
            fetcher.add(replica.clone(), state.leader_epoch);
            debug!(topic = %replica.topic, partition = replica.partition,
                leader = state.leader, leader_epoch = state.leader_epoch, "following");
        }
    }

    /// Neither leads nor follows (this broker is not serving yet, or no longer).
    fn stand_by(&self, replica: &Replica) {
        self.stop_following(replica);
        let idle = matches!(&*replica.role.borrow(), Role::Follower { leader: -1, .. });
        if !idle {
            *replica.role.borrow_mut() = Role::Follower {
                leader: -1,
                leader_epoch: -1,
            };
            replica.leader_high_watermark_known.set(false);
            let log = &replica.open.log;
            log.set_replicated_high_watermark(Some(log.high_watermark()));
            log.notify_waiters();
        }
    }

    fn stop_following(&self, replica: &Replica) {
        for fetcher in self.fetchers.borrow().values() {
            fetcher.remove(&replica.topic, replica.partition);
        }
    }

    /// Recomputes a leader's high watermark and gives it to the log (which wakes readers and
    /// acks=all waiters when it moved).
    pub fn update_high_watermark(&self, replica: &Replica) {
        let log = &replica.open.log;
        let bound = match &mut *replica.role.borrow_mut() {
            Role::Leader(state) => state.update_high_watermark(log.durable_end()),
            Role::Follower { .. } => return,
        };
        log.set_replicated_high_watermark(bound);
    }

    /// A follower's fetch reached this leader: records its progress, moves the high watermark,
    /// and proposes an ISR expansion when the follower has caught up.
    pub fn follower_fetched<H: ReplicationHost>(
        host: &Rc<H>,
        replica: &Rc<Replica>,
        follower: i32,
        fetch_offset: i64,
    ) -> Result<(), ReplicationError> {
        let manager = host.replication();
        let now = now_ms();
        let leader_end = replica.open.log.durable_end();
        let change = match &mut *replica.role.borrow_mut() {
            Role::Leader(state) => {
                if !state.follower_fetched(follower, fetch_offset, leader_end, now) {
                    return Err(ReplicationError::NotFollower(follower));
                }
                state
                    .isr_change(now, manager.settings.lag_time_max_ms)
                    .filter(|isr| isr.len() > state.isr.len())
            }
            Role::Follower { .. } => return Err(ReplicationError::NotFollower(follower)),
        };
        manager.update_high_watermark(replica);
        if let Some(isr) = change {
            propose_isr(host, replica.clone(), isr);
        }
        Ok(())
    }

    /// Waits until the ISR holds everything below `required` (the high watermark reached it),
    /// for an acks=all produce: see `ReplicationError` for the other outcomes. A partition
    /// this manager does not replicate is done at once (its durable end is its high
    /// watermark, and the append that precedes this call waited for it).
    pub async fn wait_replicated(
        &self,
        topic: &str,
        partition: i32,
        required: i64,
        timeout: Duration,
    ) -> Result<(), ReplicationError> {
        let Some(replica) = self.get(topic, partition) else {
            return Ok(());
        };
        let Some(epoch) = replica.led_epoch() else {
            return Err(ReplicationError::NotLeader);
        };
        let log = &replica.open.log;
        let check = || -> Option<Result<(), ReplicationError>> {
            let role = replica.role.borrow();
            let Role::Leader(state) = &*role else {
                return Some(Err(ReplicationError::NotLeader));
            };
            if state.leader_epoch != epoch {
                return Some(Err(ReplicationError::NotLeader));
            }
            let insync = state.insync_count();
            if insync < state.min_insync {
                return Some(Err(ReplicationError::NotEnoughReplicasAfterAppend {
                    insync,
                    min: state.min_insync,
                }));
            }
            (log.high_watermark() >= required).then_some(Ok(()))
        };
        match glommio::timer::timeout(timeout, async {
            Ok(log.wait_until(|_, _closed| check()).await)
        })
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(ReplicationError::Timeout(timeout.as_millis() as u64)),
        }
    }

    /// The ISR check of every partition this shard leads: proposes shrinking the ISR of
    /// those with followers behind for `replica.lag.time.max.ms` (and expansions the fetches
    /// did not propose). Runs every half of it, as Kafka's does, until the shard drains.
    pub async fn run_isr_checks<H: ReplicationHost>(host: Rc<H>) {
        let lag = host.replication().settings.lag_time_max_ms;
        let interval = Duration::from_millis((lag / 2).clamp(50, 30_000) as u64);
        while host.sleep_or_drain(interval).await {
            let now = now_ms();
            for replica in host.replication().all() {
                let change = match &*replica.role.borrow() {
                    Role::Leader(state) => state.isr_change(now, lag),
                    Role::Follower { .. } => None,
                };
                if let Some(isr) = change {
                    propose_isr(&host, replica.clone(), isr);
                }
            }
        }
    }
}

/// Asks the controller for `isr` as the partition's new ISR, in the background; the answer
/// (or the image that carries the change) becomes the committed ISR.
fn propose_isr<H: ReplicationHost>(host: &Rc<H>, replica: Rc<Replica>, isr: Vec<i32>) {
    let (leader_epoch, partition_epoch, current) = {
        let mut role = replica.role.borrow_mut();
        let Role::Leader(state) = &mut *role else {
            return;
        };
        if state.pending.is_some() {
            return;
        }
        state.propose(isr.clone());
        (state.leader_epoch, state.partition_epoch, state.isr.clone())
    };
    info!(topic = %replica.topic, partition = replica.partition, from = ?current, to = ?isr,
        leader_epoch, partition_epoch, "proposing an ISR change");
    let queue = host.background_queue();
    let host = host.clone();
    let task = async move {
        let me = host.replication().me;
        let answer = alter_partition(
            &*host,
            &replica.topic,
            replica.topic_id,
            replica.partition,
            me,
            leader_epoch,
            partition_epoch,
            isr,
        )
        .await;
        let manager = host.replication();
        match answer {
            Ok(state) => {
                let counter = if state.isr.len() < current.len() {
                    &manager.isr_shrinks
                } else {
                    &manager.isr_expands
                };
                counter.set(counter.get() + 1);
                info!(topic = %replica.topic, partition = replica.partition, isr = ?state.isr,
                    partition_epoch = state.partition_epoch, "ISR changed");
                if let Role::Leader(leader) = &mut *replica.role.borrow_mut()
                    && leader.leader_epoch == leader_epoch
                {
                    leader.committed(state.partition_epoch, state.replicas, state.isr);
                }
            }
            Err(err) => {
                warn!(topic = %replica.topic, partition = replica.partition, %err,
                    "ISR change not made");
                if let Role::Leader(leader) = &mut *replica.role.borrow_mut() {
                    leader.proposal_failed(now_ms());
                }
            }
        }
        manager.update_high_watermark(&replica);
        replica.open.log.notify_waiters();
    };
    if let Ok(task) = glommio::spawn_local_into(task, queue) {
        task.detach();
    }
}
