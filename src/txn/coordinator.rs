//! The transaction coordinator: the state machine of the transactional ids whose
//! `__transaction_state` partition this shard owns.
//!
//! Owner: one `TxnCoordinator` per shard, in its `ShardContext`; it only serves ids that hash to
//! a `__transaction_state` partition this shard owns and, under a quorum, this broker leads
//! (others get NOT_COORDINATOR). All state is in `RefCell`s, borrowed only between `.await`s.
//!
//! Leadership (Kafka's onElection/onResignation): a partition is loaded at the leader epoch this
//! broker leads it at, which is also the coordinator epoch its markers carry; it is unloaded
//! when the broker stops leading it at that epoch (`follow_leadership`, after every image's
//! replica roles, and on any request), and loaded again at a new epoch. Its state writes go
//! through `broker::coordinator_log` (only at the loaded epoch, acks=all within
//! `request.timeout.ms`). Markers of partitions this broker leads go to their owner shards;
//! those led by other brokers go in one WriteTxnMarkers per broker (`replication::client`),
//! retried against the leader the current image names; completion tasks stop when the
//! partition is no longer loaded at their epoch (the next coordinator resends).
//!
//! States and transitions are Kafka's (KIP-98): InitProducerId moves an id to Empty with a
//! bumped epoch (a new producer id when the epoch is exhausted); AddPartitionsToTxn and
//! AddOffsetsToTxn move it to Ongoing; EndTxn to PrepareCommit or PrepareAbort; once every
//! partition of the transaction has its marker, to CompleteCommit or CompleteAbort. A
//! transaction still Ongoing when a new incarnation of the producer calls InitProducerId, or
//! when it outlives its timeout, is aborted with a bumped epoch (PrepareEpochFence, then
//! PrepareAbort), so the old incarnation is fenced on every partition by the abort markers.
//!
//! Every state change is written to the id's partition (`records`, Kafka's TransactionLog
//! format) and takes effect only once durable; while a change is being written the id answers
//! CONCURRENT_TRANSACTIONS. EndTxn is answered once PrepareCommit/PrepareAbort is durable;
//! the markers (`ShardRequest::WriteTxnMarkers`, grouped per owner shard) and the Complete
//! record follow in a task of their own, retried with backoff until they succeed or the shard
//! drains or the coordinator loses the partition (a restart or the next coordinator resends
//! them).
//!
//! Lifecycle: a partition is loaded (replayed from its log start to its high watermark) by the
//! first request for one of its ids, or by the maintenance task that every shard runs
//! (`run_maintenance`), which also loads every owned partition shortly after start. While a
//! partition loads, its ids answer COORDINATOR_LOAD_IN_PROGRESS. After a load, transactions
//! found in PrepareCommit or PrepareAbort get their markers resent; Ongoing ones continue and
//! abort on timeout. The maintenance task aborts transactions past their timeout every
//! `transaction.abort.timed.out.transaction.cleanup.interval.ms` and removes ids idle longer
//! than `transactional.id.expiration.ms` every
//! `transaction.remove.expired.transaction.cleanup.interval.ms` (a tombstone in the log).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;

use crate::broker::owner::TxnMarkerItem;
use crate::broker::{ShardContext, ShardRequest, ShardResponse, coordinator_log};
use crate::group::records::{build_batch, walk_batches};
use crate::limits;
use crate::replication::client::BrokerClient;
use crate::runtime::{ShardId, shard_for};
use crate::txn::records::{self, TxnValue};
use crate::txn::route::txn_partition;
use crate::txn::{
    ListedTxn, TRANSACTION_STATE_TOPIC, TxnCall, TxnDescription, TxnError, TxnReply, TxnState,
};

type Ctx = Rc<ShardContext>;

/// Producer epochs at or above this are exhausted: the next bump takes a new producer id
/// (Kafka's `isProducerEpochExhausted`, which keeps one epoch for the fencing bump).
const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

/// How long a connection to another broker may take to open, for its markers.
const MARKER_CONNECT_TIMEOUT_MS: u64 = 3_000;

/// The WriteTxnMarkers version sent to other brokers (the one every Kafka since 2.x serves).
const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// First and longest wait between retries of markers or of a Complete record.
const RETRY_BACKOFF_MS: (u64, u64) = (50, 2_000);

/// How long after start the maintenance task first loads the owned partitions.
const FIRST_MAINTENANCE_DELAY_MS: u64 = 200;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The settings of the coordinator, read from the broker config.
#[derive(Debug, Clone, Copy)]
pub struct TxnSettings {
    /// `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_interval_ms: u64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub expiry_interval_ms: u64,
    /// `request.timeout.ms`: how long a state write or a marker waits for its ISR, and the
    /// deadline of a WriteTxnMarkers sent to another broker.
    pub request_timeout_ms: u64,
}

impl TxnSettings {
    fn from_config(config: &crate::config::Config) -> TxnSettings {
        TxnSettings {
            max_timeout_ms: config.int("transaction.max.timeout.ms", 900_000) as i32,
            id_expiration_ms: config.int("transactional.id.expiration.ms", 604_800_000),
            abort_interval_ms: config
                .int(
                    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                    10_000,
                )
                .max(1) as u64,
            expiry_interval_ms: config
                .int(
                    "transaction.remove.expired.transaction.cleanup.interval.ms",
                    3_600_000,
                )
                .max(1) as u64,
            request_timeout_ms: config.int("request.timeout.ms", 30_000).max(1) as u64,
        }
    }
}

/// One transactional id's state in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TxnMetadata {
    producer_id: i64,
    /// The producer id before the last rotation (KIP-360), -1 if none.
    last_producer_id: i64,
    producer_epoch: i16,
    /// The epoch before the last bump requested with the old epoch (KIP-360), -1 if none.
    last_producer_epoch: i16,
    timeout_ms: i32,
    state: TxnState,
    partitions: BTreeSet<(String, i32)>,
    start_ms: i64,
    last_update_ms: i64,
    /// A state change of this id is being written: other changes wait (CONCURRENT_TRANSACTIONS).
    pending: bool,
}

impl TxnMetadata {
    fn fresh(producer_id: i64, timeout_ms: i32) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            last_producer_id: -1,
            producer_epoch: -1,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms(),
            pending: false,
        }
    }

    fn from_value(value: TxnValue) -> TxnMetadata {
        TxnMetadata {
            producer_id: value.producer_id,
            last_producer_id: -1,
            producer_epoch: value.producer_epoch,
            last_producer_epoch: -1,
            timeout_ms: value.timeout_ms,
            state: value.state,
            partitions: value
                .partitions
                .into_iter()
                .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                .collect(),
            start_ms: value.start_ms,
            last_update_ms: value.last_update_ms,
            pending: false,
        }
    }

    fn partitions_by_topic(&self) -> Vec<(String, Vec<i32>)> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &self.partitions {
            by_topic.entry(t).or_default().push(*p);
        }
        by_topic
            .into_iter()
            .map(|(t, ps)| (t.to_string(), ps))
            .collect()
    }

    fn value(&self) -> TxnValue {
        TxnValue {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: self.partitions_by_topic(),
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
        }
    }
}

/// A `__transaction_state` partition's standing on this shard, with the leader epoch this
/// broker leads it at (0 on a lone node): also the coordinator epoch its markers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoadState {
    Loading(i32),
    Loaded(i32),
}

/// See the module documentation.
#[derive(Debug)]
pub struct TxnCoordinator {
    settings: TxnSettings,
    txns: RefCell<HashMap<String, TxnMetadata>>,
    partitions: RefCell<HashMap<i32, LoadState>>,
    /// Connections to other brokers for their markers, by broker id (taken out while in use).
    clients: RefCell<HashMap<i32, BrokerClient>>,
}

impl TxnCoordinator {
    /// A coordinator with nothing loaded.
    pub fn new(config: &crate::config::Config) -> TxnCoordinator {
        TxnCoordinator {
            settings: TxnSettings::from_config(config),
            txns: RefCell::new(HashMap::new()),
            partitions: RefCell::new(HashMap::new()),
            clients: RefCell::new(HashMap::new()),
        }
    }

    /// Number of transactional ids held in memory.
    pub fn txn_count(&self) -> usize {
        self.txns.borrow().len()
    }
}

/// Serves one call on the coordinator shard.
pub async fn serve(context: &Ctx, call: TxnCall) -> TxnReply {
    match call {
        TxnCall::InitProducerId {
            transactional_id,
            timeout_ms,
            expected,
        } => TxnReply::InitProducerId(
            init_producer_id(context, &transactional_id, timeout_ms, expected).await,
        ),
        TxnCall::AddPartitions {
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
        } => TxnReply::AddPartitions(
            add_partitions(
                context,
                &transactional_id,
                producer_id,
                producer_epoch,
                partitions,
            )
            .await,
        ),
        TxnCall::End {
            transactional_id,
            producer_id,
            producer_epoch,
            commit,
        } => TxnReply::End(
            end_txn(
                context,
                &transactional_id,
                producer_id,
                producer_epoch,
                commit,
            )
            .await,
        ),
        TxnCall::Describe { transactional_ids } => {
            let mut out = Vec::with_capacity(transactional_ids.len());
            for id in transactional_ids {
                out.push(describe(context, &id).await);
            }
            TxnReply::Describe(out)
        }
        TxnCall::List {
            states,
            producer_ids,
            duration_ms,
        } => TxnReply::List(list(context, &states, &producer_ids, duration_ms).await),
    }
}

/// Checks that this shard coordinates `transactional_id` and that its partition is loaded.
async fn prepare(context: &Ctx, transactional_id: &str) -> Result<i32, TxnError> {
    if context.image().topic(TRANSACTION_STATE_TOPIC).is_none() {
        return Err(TxnError::NotAvailable);
    }
    let partition = txn_partition(context, transactional_id);
    if shard_for(TRANSACTION_STATE_TOPIC, partition, context.shard_count) != context.id {
        return Err(TxnError::NotCoordinator);
    }
    ensure_loaded(context, partition).await?;
    Ok(partition)
}

/// The leader epoch this broker leads `partition` of `__transaction_state` at, if it does.
fn leading(context: &Ctx, partition: i32) -> Option<i32> {
    coordinator_log::led_epoch(context, TRANSACTION_STATE_TOPIC, partition)
}

/// The epoch `partition` is loaded at, if it is loaded.
fn loaded_epoch(context: &Ctx, partition: i32) -> Option<i32> {
    match context.txns.partitions.borrow().get(&partition) {
        Some(LoadState::Loaded(epoch)) => Some(*epoch),
        _ => None,
    }
}

/// Loads `partition` unless it is loaded at the leader epoch this broker leads it at (Kafka's
/// onElection; a partition led at another epoch than it was loaded at is unloaded and
/// replayed); LOAD_IN_PROGRESS while another task loads it; NOT_COORDINATOR, and unloaded,
/// when this broker does not lead it.
async fn ensure_loaded(context: &Ctx, partition: i32) -> Result<(), TxnError> {
    let Some(epoch) = leading(context, partition) else {
        unload_partition(context, partition);
        return Err(TxnError::NotCoordinator);
    };
    let state = context.txns.partitions.borrow().get(&partition).copied();
    match state {
        Some(LoadState::Loaded(loaded)) if loaded == epoch => return Ok(()),
        Some(LoadState::Loading(_)) => return Err(TxnError::LoadInProgress),
        Some(LoadState::Loaded(_)) => unload_partition(context, partition),
        None => {}
    }
    context
        .txns
        .partitions
        .borrow_mut()
        .insert(partition, LoadState::Loading(epoch));
    let result = load_partition(context, partition).await;
    let still_leading = leading(context, partition) == Some(epoch);
    match result {
        Ok(loaded) if still_leading => {
            let mut to_complete = Vec::new();
            {
                let mut txns = context.txns.txns.borrow_mut();
                txns.retain(|id, _| txn_partition(context, id) != partition);
                for (id, metadata) in loaded {
                    if matches!(
                        metadata.state,
                        TxnState::PrepareCommit | TxnState::PrepareAbort
                    ) {
                        to_complete.push(id.clone());
                    }
                    if txns.len() < limits::TRANSACTIONAL_IDS_PER_SHARD_MAX {
                        txns.insert(id, metadata);
                    }
                }
            }
            context
                .txns
                .partitions
                .borrow_mut()
                .insert(partition, LoadState::Loaded(epoch));
            info!(
                partition,
                coordinator_epoch = epoch,
                resend = to_complete.len(),
                "coordinating the transactional ids of __transaction_state partition"
            );
            for id in to_complete {
                spawn_completion(context, partition, id);
            }
            Ok(())
        }
        Ok(_) => {
            context.txns.partitions.borrow_mut().remove(&partition);
            Err(TxnError::NotCoordinator)
        }
        Err(err) => {
            context.txns.partitions.borrow_mut().remove(&partition);
            Err(err)
        }
    }
}

/// Drops `partition`'s transactional ids from memory (Kafka's onResignation); their
/// completion tasks see it and stop.
fn unload_partition(context: &Ctx, partition: i32) {
    let was = context.txns.partitions.borrow_mut().remove(&partition);
    if !matches!(was, Some(LoadState::Loaded(_))) {
        if let Some(loading) = was {
            // A load in progress finishes on its own; keep its marker in place.
            context
                .txns
                .partitions
                .borrow_mut()
                .insert(partition, loading);
        }
        return;
    }
    let mut txns = context.txns.txns.borrow_mut();
    let before = txns.len();
    txns.retain(|id, _| txn_partition(context, id) != partition);
    info!(
        partition,
        ids = before - txns.len(),
        "unloaded __transaction_state partition"
    );
}

/// Called after the shard's replicas took the roles of a new metadata image: unloads the
/// partitions this broker no longer leads at the epoch they were loaded at, and loads (in a
/// task) those it leads now, resending the markers of their prepared transactions.
pub fn follow_leadership(context: &Ctx) {
    let stale: Vec<i32> = context
        .txns
        .partitions
        .borrow()
        .iter()
        .filter_map(|(&p, state)| match state {
            LoadState::Loaded(epoch) if leading(context, p) != Some(*epoch) => Some(p),
            _ => None,
        })
        .collect();
    for partition in stale {
        unload_partition(context, partition);
    }
    let newly_led = owned_partitions(context).into_iter().any(|p| {
        leading(context, p).is_some() && !context.txns.partitions.borrow().contains_key(&p)
    });
    if newly_led {
        let ctx = context.clone();
        if let Ok(task) =
            glommio::spawn_local_into(async move { load_all(&ctx).await }, context.queues.requests)
        {
            task.detach();
        }
    }
}

/// Opens this shard's `partition` of `__transaction_state` (NOT_AVAILABLE if it cannot).
async fn open_state_partition(
    context: &Ctx,
    partition: i32,
) -> Result<Rc<crate::storage::manager::OpenPartition>, TxnError> {
    context
        .partitions
        .get(&context.image(), TRANSACTION_STATE_TOPIC, partition)
        .await
        .map_err(|err| {
            warn!(partition, %err, "cannot open __transaction_state partition");
            TxnError::NotAvailable
        })
}

/// Replays `partition`: the state of each of its transactional ids.
async fn load_partition(
    context: &Ctx,
    partition: i32,
) -> Result<Vec<(String, TxnMetadata)>, TxnError> {
    let open = open_state_partition(context, partition).await?;
    let log = &open.log;
    // Up to the durable end, as Kafka loads to the log end: a new leader's whole log is
    // committed (followers truncate to it), even before its high watermark has caught up.
    let end = log.durable_end();
    let mut offset = log.log_start_offset();
    let mut skipped = 0usize;
    let mut undecodable = 0usize;
    let mut loaded: HashMap<String, Option<TxnValue>> = HashMap::new();
    let mut count = 0usize;
    while offset < end {
        let slice = log.read_replica(offset, 1 << 20).await.map_err(|err| {
            warn!(partition, offset, %err, "cannot read __transaction_state");
            TxnError::LoadInProgress
        })?;
        if slice.is_empty() {
            break;
        }
        let bytes = slice.to_vec();
        let next = walk_batches(&bytes, &mut skipped, |header, key, value| {
            // Control batches cannot be in this topic unless a client produced into it.
            if header.attributes.get() & 0x20 != 0 {
                return;
            }
            match records::decode_record(key, value) {
                Ok(record) => {
                    count += 1;
                    loaded.insert(record.transactional_id, record.value);
                }
                Err(err) => {
                    debug!(partition, %err, "skipping a __transaction_state record");
                    undecodable += 1;
                }
            }
        });
        match next {
            Some(next) if next > offset => offset = next,
            _ => break,
        }
    }
    let mut out = Vec::new();
    for (id, value) in loaded {
        let Some(value) = value else { continue };
        let metadata = TxnMetadata::from_value(value);
        match metadata.state {
            // Never written by this broker; a fence that did not reach PrepareAbort left the
            // transaction Ongoing, which the timeout aborts.
            TxnState::PrepareEpochFence | TxnState::Dead => continue,
            _ => out.push((id, metadata)),
        }
    }
    info!(
        partition,
        records = count,
        skipped = skipped + undecodable,
        "loaded __transaction_state partition"
    );
    Ok(out)
}

/// Appends one state record (`None`: a tombstone) of `transactional_id` to `partition` and
/// waits until it is durable.
async fn write_state(
    context: &Ctx,
    partition: i32,
    transactional_id: &str,
    value: Option<TxnValue>,
) -> Result<(), TxnError> {
    let Some(epoch) = loaded_epoch(context, partition) else {
        return Err(TxnError::NotCoordinator);
    };
    let record: (Bytes, Option<Bytes>) = (
        records::txn_key(transactional_id),
        value.as_ref().map(records::txn_value),
    );
    let batch = build_batch(&[record], now_ms());
    let timeout = Duration::from_millis(context.txns.settings.request_timeout_ms);
    match coordinator_log::append(
        context,
        TRANSACTION_STATE_TOPIC,
        partition,
        epoch,
        batch,
        timeout,
    )
    .await
    {
        Ok(_) => Ok(()),
        // Kafka's mapping (TransactionStateManager): a lost leadership is NOT_COORDINATOR, too
        // few replicas or no acknowledgement in time COORDINATOR_NOT_AVAILABLE.
        Err(err) if err.lost_leadership() => {
            debug!(partition, %err, "__transaction_state write refused");
            Err(TxnError::NotCoordinator)
        }
        Err(err) => {
            warn!(partition, %err, "__transaction_state write not acknowledged");
            Err(TxnError::NotAvailable)
        }
    }
}

/// Writes `next` as the new state of `transactional_id` (whose entry is marked pending by the
/// caller) and installs it once durable; on failure the old state stays and the error returns.
async fn transition(
    context: &Ctx,
    partition: i32,
    transactional_id: &str,
    mut next: TxnMetadata,
) -> Result<(), TxnError> {
    let result = write_state(context, partition, transactional_id, Some(next.value())).await;
    let mut txns = context.txns.txns.borrow_mut();
    let Some(entry) = txns.get_mut(transactional_id) else {
        return Err(TxnError::NotAvailable);
    };
    entry.pending = false;
    result?;
    next.pending = false;
    *entry = next;
    Ok(())
}

/// A producer id from this shard's block.
async fn allocate_producer_id(context: &Ctx) -> Result<i64, TxnError> {
    crate::metadata::client::next_producer_id(context.as_ref())
        .await
        .map_err(|err| TxnError::Allocation(crate::broker::error::controller_call_error_code(&err)))
}

async fn init_producer_id(
    context: &Ctx,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), TxnError> {
    if timeout_ms <= 0 || timeout_ms > context.txns.settings.max_timeout_ms {
        return Err(TxnError::InvalidTimeout);
    }
    let partition = prepare(context, transactional_id).await?;
    if !context.txns.txns.borrow().contains_key(transactional_id) {
        if context.txns.txns.borrow().len() >= limits::TRANSACTIONAL_IDS_PER_SHARD_MAX {
            return Err(TxnError::NotAvailable);
        }
        let producer_id = allocate_producer_id(context).await?;
        // Another call for the same id may have created it meanwhile: that one wins.
        context
            .txns
            .txns
            .borrow_mut()
            .entry(transactional_id.to_string())
            .or_insert_with(|| TxnMetadata::fresh(producer_id, timeout_ms));
    }
    enum Plan {
        Bump(TxnMetadata),
        Rotate(TxnMetadata),
        Current(i64, i16),
        Fence,
    }
    let plan = {
        let mut txns = context.txns.txns.borrow_mut();
        let Some(m) = txns.get_mut(transactional_id) else {
            return Err(TxnError::NotAvailable);
        };
        if m.pending {
            return Err(TxnError::Concurrent);
        }
        if let Some((producer_id, _)) = expected
            && producer_id != m.producer_id
            && producer_id != m.last_producer_id
        {
            return Err(TxnError::ProducerFenced);
        }
        match m.state {
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::PrepareEpochFence
            | TxnState::Dead => return Err(TxnError::Concurrent),
            TxnState::Ongoing => Plan::Fence,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let mut next = m.clone();
                next.state = TxnState::Empty;
                next.partitions.clear();
                next.timeout_ms = timeout_ms;
                next.start_ms = -1;
                next.last_update_ms = now_ms();
                // Kafka's epoch rules (KIP-360): without an expected epoch, bump; with the
                // current epoch (or none yet), bump and remember it; with the epoch remembered
                // from the last bump, this is a retry of that bump; anything else is a zombie.
                let last_epoch = match expected {
                    None => Some(-1),
                    Some((_, epoch)) if m.producer_epoch < 0 || epoch == m.producer_epoch => {
                        Some(m.producer_epoch)
                    }
                    Some((_, epoch)) if epoch == m.last_producer_epoch => None,
                    Some(_) => return Err(TxnError::ProducerFenced),
                };
                match last_epoch {
                    None => Plan::Current(m.producer_id, m.producer_epoch),
                    Some(_) if m.producer_epoch >= EPOCH_EXHAUSTED => Plan::Rotate(next),
                    Some(last_epoch) => {
                        next.last_producer_epoch = last_epoch;
                        next.producer_epoch = m.producer_epoch + 1;
                        m.pending = true;
                        Plan::Bump(next)
                    }
                }
            }
        }
    };
    match plan {
        Plan::Current(producer_id, epoch) => Ok((producer_id, epoch)),
        Plan::Fence => {
            // Kafka: the open transaction of the old incarnation is aborted with a bumped epoch,
            // and the new incarnation retries until the abort is complete.
            fence_and_abort(context, partition, transactional_id, None).await?;
            Err(TxnError::Concurrent)
        }
        Plan::Bump(next) => {
            let (producer_id, epoch) = (next.producer_id, next.producer_epoch);
            transition(context, partition, transactional_id, next).await?;
            info!(
                transactional_id,
                producer_id, epoch, "transactional producer initialised"
            );
            Ok((producer_id, epoch))
        }
        Plan::Rotate(mut next) => {
            {
                let mut txns = context.txns.txns.borrow_mut();
                match txns.get_mut(transactional_id) {
                    Some(m) if !m.pending => m.pending = true,
                    _ => return Err(TxnError::Concurrent),
                }
            }
            let producer_id = match allocate_producer_id(context).await {
                Ok(id) => id,
                Err(err) => {
                    if let Some(m) = context.txns.txns.borrow_mut().get_mut(transactional_id) {
                        m.pending = false;
                    }
                    return Err(err);
                }
            };
            next.last_producer_id = next.producer_id;
            next.last_producer_epoch = if expected.is_some() {
                next.producer_epoch
            } else {
                -1
            };
            next.producer_id = producer_id;
            next.producer_epoch = 0;
            transition(context, partition, transactional_id, next).await?;
            info!(
                transactional_id,
                producer_id, "producer epoch exhausted: new producer id"
            );
            Ok((producer_id, 0))
        }
    }
}

/// Checks the producer of a transaction request against the id's state.
fn check_producer(m: &TxnMetadata, producer_id: i64, producer_epoch: i16) -> Result<(), TxnError> {
    if m.producer_id != producer_id {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    if m.producer_epoch != producer_epoch {
        return Err(TxnError::ProducerFenced);
    }
    if m.pending {
        return Err(TxnError::Concurrent);
    }
    Ok(())
}

async fn add_partitions(
    context: &Ctx,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<(String, i32)>,
) -> Result<(), TxnError> {
    let partition = prepare(context, transactional_id).await?;
    let next = {
        let mut txns = context.txns.txns.borrow_mut();
        let Some(m) = txns.get_mut(transactional_id) else {
            return Err(TxnError::InvalidProducerIdMapping);
        };
        check_producer(m, producer_id, producer_epoch)?;
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(TxnError::Concurrent);
            }
            TxnState::Dead => return Err(TxnError::InvalidProducerIdMapping),
            TxnState::Ongoing if partitions.iter().all(|p| m.partitions.contains(p)) => {
                return Ok(());
            }
            _ => {}
        }
        let now = now_ms();
        let mut next = m.clone();
        if m.state != TxnState::Ongoing {
            next.start_ms = now;
            next.partitions.clear();
        }
        next.state = TxnState::Ongoing;
        next.partitions.extend(partitions);
        next.last_update_ms = now;
        m.pending = true;
        next
    };
    transition(context, partition, transactional_id, next).await
}

async fn end_txn(
    context: &Ctx,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Result<(), TxnError> {
    let partition = prepare(context, transactional_id).await?;
    let next = {
        let mut txns = context.txns.txns.borrow_mut();
        let Some(m) = txns.get_mut(transactional_id) else {
            return Err(TxnError::InvalidProducerIdMapping);
        };
        check_producer(m, producer_id, producer_epoch)?;
        match (m.state, commit) {
            (TxnState::Ongoing, _) => {}
            // A retry of an EndTxn that already completed.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => return Ok(()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return Err(TxnError::Concurrent);
            }
            _ => return Err(TxnError::InvalidState),
        }
        let mut next = m.clone();
        next.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        next.last_update_ms = now_ms();
        m.pending = true;
        next
    };
    transition(context, partition, transactional_id, next).await?;
    debug!(transactional_id, commit, "transaction prepared");
    spawn_completion(context, partition, transactional_id.to_string());
    Ok(())
}

/// Aborts the Ongoing transaction of `transactional_id` with a bumped epoch, fencing the
/// producer that opened it. `expired_before_ms`: only if it started before this time (the
/// timeout check; re-checked here because the state may have moved since).
async fn fence_and_abort(
    context: &Ctx,
    partition: i32,
    transactional_id: &str,
    expired_before_ms: Option<i64>,
) -> Result<(), TxnError> {
    let next = {
        let mut txns = context.txns.txns.borrow_mut();
        let Some(m) = txns.get_mut(transactional_id) else {
            return Ok(());
        };
        if m.pending {
            return Err(TxnError::Concurrent);
        }
        if m.state != TxnState::Ongoing
            || expired_before_ms.is_some_and(|t| m.start_ms + i64::from(m.timeout_ms) > t)
        {
            return Ok(());
        }
        let mut next = m.clone();
        // PrepareEpochFence is in memory only: the record written is PrepareAbort with the
        // bumped epoch, as in Kafka.
        m.state = TxnState::PrepareEpochFence;
        m.pending = true;
        next.producer_epoch = next.producer_epoch.saturating_add(1);
        next.last_producer_epoch = -1;
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now_ms();
        next
    };
    let epoch = next.producer_epoch;
    let result = transition(context, partition, transactional_id, next).await;
    if result.is_err()
        && let Some(m) = context.txns.txns.borrow_mut().get_mut(transactional_id)
        && m.state == TxnState::PrepareEpochFence
    {
        m.state = TxnState::Ongoing;
    }
    result?;
    info!(
        transactional_id,
        epoch,
        timed_out = expired_before_ms.is_some(),
        "aborting the open transaction of a fenced producer"
    );
    spawn_completion(context, partition, transactional_id.to_string());
    Ok(())
}

/// Sends the markers of a prepared transaction and writes its Complete state, in a task, at
/// the coordinator epoch `partition` is loaded at (none: the next coordinator does it).
fn spawn_completion(context: &Ctx, partition: i32, transactional_id: String) {
    let Some(epoch) = loaded_epoch(context, partition) else {
        return;
    };
    let ctx = context.clone();
    let spawned = glommio::spawn_local_into(
        async move { complete(&ctx, partition, epoch, &transactional_id).await },
        context.queues.requests,
    );
    match spawned {
        Ok(task) => {
            task.detach();
        }
        Err(err) => warn!(%err, "cannot start a transaction completion task"),
    }
}

/// Waits `backoff` (doubling it up to the cap) unless the shard drains; false when draining.
async fn back_off(context: &Ctx, backoff: &mut u64) -> bool {
    let wait = Duration::from_millis(*backoff);
    *backoff = (*backoff * 2).min(RETRY_BACKOFF_MS.1);
    context.sleep_unless_draining(wait).await
}

async fn complete(context: &Ctx, partition: i32, coordinator_epoch: i32, transactional_id: &str) {
    // Kafka's TransactionMarkerChannelManager: markers are retried until written, or until
    // this broker no longer coordinates the id at this epoch (the next coordinator resends).
    let coordinating = || loaded_epoch(context, partition) == Some(coordinator_epoch);
    let Some((producer_id, epoch, commit, partitions)) = ({
        let txns = context.txns.txns.borrow();
        txns.get(transactional_id).and_then(|m| {
            let commit = match m.state {
                TxnState::PrepareCommit => true,
                TxnState::PrepareAbort => false,
                _ => return None,
            };
            Some((
                m.producer_id,
                m.producer_epoch,
                commit,
                m.partitions.iter().cloned().collect::<Vec<_>>(),
            ))
        })
    }) else {
        return;
    };
    let mut remaining = partitions;
    let mut backoff = RETRY_BACKOFF_MS.0;
    while !remaining.is_empty() && coordinating() {
        let marker = Marker {
            producer_id,
            producer_epoch: epoch,
            coordinator_epoch,
            commit,
        };
        remaining = send_markers(context, marker, remaining).await;
        if remaining.is_empty() || !back_off(context, &mut backoff).await {
            break;
        }
    }
    if !remaining.is_empty() {
        warn!(
            transactional_id,
            partitions = remaining.len(),
            "markers not all written before shutdown or a coordinator move; the next \
             coordinator of the id resends them"
        );
        return;
    }
    let mut backoff = RETRY_BACKOFF_MS.0;
    loop {
        if !coordinating() {
            return;
        }
        let next = {
            let mut txns = context.txns.txns.borrow_mut();
            let Some(m) = txns.get_mut(transactional_id) else {
                return;
            };
            if m.producer_id != producer_id
                || m.producer_epoch != epoch
                || !matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
            {
                return;
            }
            if m.pending {
                None
            } else {
                let mut next = m.clone();
                next.state = if commit {
                    TxnState::CompleteCommit
                } else {
                    TxnState::CompleteAbort
                };
                next.partitions.clear();
                next.last_update_ms = now_ms();
                m.pending = true;
                Some(next)
            }
        };
        if let Some(next) = next {
            match transition(context, partition, transactional_id, next).await {
                Ok(()) => {
                    debug!(transactional_id, commit, "transaction complete");
                    return;
                }
                Err(err) => warn!(transactional_id, %err, "cannot write the Complete state"),
            }
        }
        if !back_off(context, &mut backoff).await {
            return;
        }
    }
}

/// The marker of one transaction completion.
#[derive(Debug, Clone, Copy)]
struct Marker {
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
}

/// Sends one round of markers: those of partitions this broker leads to their owner shards,
/// the others with one WriteTxnMarkers per leading broker (leaders as the current image names
/// them, so a retry goes to the new leader). Returns the partitions that must be retried.
async fn send_markers(
    context: &Ctx,
    marker: Marker,
    partitions: Vec<(String, i32)>,
) -> Vec<(String, i32)> {
    let image = context.image();
    let me = context.identity.node_id;
    let mut by_owner: BTreeMap<ShardId, Vec<TxnMarkerItem>> = BTreeMap::new();
    let mut by_broker: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    let mut retry = Vec::new();
    for (topic, partition) in partitions {
        let Some(meta) = image
            .topic(&topic)
            .filter(|t| (0..t.partitions).contains(&partition))
        else {
            // The topic was deleted: nothing is left to mark (Kafka drops it too).
            debug!(topic = %topic, partition, "marker for a deleted partition dropped");
            continue;
        };
        let leader = meta.leader_of(partition, me);
        if leader == me {
            let owner = shard_for(&topic, partition, context.shard_count);
            by_owner.entry(owner).or_default().push(TxnMarkerItem {
                topic,
                partition,
                producer_id: marker.producer_id,
                producer_epoch: marker.producer_epoch,
                coordinator_epoch: marker.coordinator_epoch,
                commit: marker.commit,
            });
        } else if leader >= 0 {
            by_broker
                .entry(leader)
                .or_default()
                .push((topic, partition));
        } else {
            // No leader now: retried once the image names one.
            retry.push((topic, partition));
        }
    }
    let local = by_owner.into_iter().map(|(owner, items)| async move {
        let answer = context
            .router
            .call(owner, ShardRequest::WriteTxnMarkers(items.clone()))
            .await;
        let codes = match answer {
            Ok(ShardResponse::WriteTxnMarkers(codes)) if codes.len() == items.len() => codes,
            Ok(other) => {
                warn!(?other, "unexpected answer to WriteTxnMarkers");
                vec![ResponseError::UnknownServerError.code(); items.len()]
            }
            Err(err) => {
                debug!(%err, "WriteTxnMarkers did not reach its shard");
                vec![ResponseError::NotLeaderOrFollower.code(); items.len()]
            }
        };
        items
            .into_iter()
            .map(|i| (i.topic, i.partition))
            .zip(codes)
            .collect::<Vec<_>>()
    });
    let remote = by_broker
        .into_iter()
        .map(|(broker, items)| send_to_broker(context, broker, marker, items));
    let (local, remote) = futures::join!(join_all(local), join_all(remote));
    for ((topic, partition), code) in local.into_iter().chain(remote).flatten() {
        if code == 0 {
            continue;
        }
        if code == ResponseError::InvalidProducerEpoch.code()
            || code == ResponseError::ProducerFenced.code()
            || code == ResponseError::TransactionCoordinatorFenced.code()
        {
            // A newer epoch of the producer (or a newer coordinator) has already ended the
            // transaction there.
            warn!(topic = %topic, partition, producer_id = marker.producer_id, code,
                "marker refused as stale");
        } else if code == ResponseError::UnknownTopicOrPartition.code()
            && !image
                .topic(&topic)
                .is_some_and(|t| (0..t.partitions).contains(&partition))
        {
            debug!(topic = %topic, partition, "marker for a deleted partition dropped");
        } else {
            debug!(topic = %topic, partition, code, "marker will be retried");
            retry.push((topic, partition));
        }
    }
    retry
}

/// One WriteTxnMarkers to broker `broker` for `partitions` (the leader there): each
/// partition's error code, connection failures counting as NOT_LEADER_OR_FOLLOWER (retried
/// after the leader is looked up again).
async fn send_to_broker(
    context: &Ctx,
    broker: i32,
    marker: Marker,
    partitions: Vec<(String, i32)>,
) -> Vec<((String, i32), i16)> {
    let failed = |partitions: Vec<(String, i32)>| {
        partitions
            .into_iter()
            .map(|p| (p, ResponseError::NotLeaderOrFollower.code()))
            .collect::<Vec<_>>()
    };
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in &partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let request = crate::msg!(WriteTxnMarkersRequest {
        markers: vec![crate::msg!(WritableTxnMarker {
            producer_id: ProducerId(marker.producer_id),
            producer_epoch: marker.producer_epoch,
            transaction_result: marker.commit,
            coordinator_epoch: marker.coordinator_epoch,
            topics: by_topic
                .into_iter()
                .map(
                    |(name, partition_indexes)| crate::msg!(WritableTxnMarkerTopic {
                        name: TopicName(StrBytes::from_string(name.to_string())),
                        partition_indexes
                    })
                )
                .collect()
        })]
    });
    let taken = context.txns.clients.borrow_mut().remove(&broker);
    let mut client = match taken {
        Some(client) => client,
        None => {
            let Some(addr) = broker_addr(context, broker) else {
                debug!(
                    broker,
                    "no address for the broker leading marker partitions"
                );
                return failed(partitions);
            };
            let name = format!("ringbroker-txn-coordinator-{}", context.identity.node_id);
            let bound = Duration::from_millis(MARKER_CONNECT_TIMEOUT_MS);
            match BrokerClient::connect(addr, name, bound).await {
                Ok(client) => client,
                Err(err) => {
                    debug!(broker, %err, "cannot reach the broker for its markers");
                    return failed(partitions);
                }
            }
        }
    };
    // The other broker waits up to its request.timeout.ms for its ISR; a margin on top.
    let deadline = Duration::from_millis(context.txns.settings.request_timeout_ms + 5_000);
    let response = match client
        .call(&request, WRITE_TXN_MARKERS_VERSION, deadline)
        .await
    {
        Ok(response) => response,
        Err(err) => {
            debug!(broker, %err, "WriteTxnMarkers to another broker failed");
            return failed(partitions);
        }
    };
    context.txns.clients.borrow_mut().insert(broker, client);
    let mut codes: HashMap<(String, i32), i16> = HashMap::new();
    for result in response
        .markers
        .iter()
        .filter(|m| m.producer_id.0 == marker.producer_id)
    {
        for topic in &result.topics {
            for p in &topic.partitions {
                codes.insert((topic.name.0.to_string(), p.partition_index), p.error_code);
            }
        }
    }
    partitions
        .into_iter()
        .map(|p| {
            // A partition the answer leaves out is retried.
            let code = codes
                .get(&p)
                .copied()
                .unwrap_or(ResponseError::UnknownServerError.code());
            (p, code)
        })
        .collect()
}

/// The client address of broker `id` in the current image.
fn broker_addr(context: &Ctx, id: i32) -> Option<SocketAddr> {
    let image = context.image();
    let broker = image.brokers.get(&id)?;
    (broker.host.as_str(), broker.port)
        .to_socket_addrs()
        .ok()?
        .next()
}

async fn describe(context: &Ctx, transactional_id: &str) -> Result<TxnDescription, TxnError> {
    prepare(context, transactional_id).await?;
    let txns = context.txns.txns.borrow();
    let m = txns.get(transactional_id).ok_or(TxnError::NotFound)?;
    Ok(TxnDescription {
        state: m.state,
        timeout_ms: m.timeout_ms,
        start_ms: m.start_ms,
        producer_id: m.producer_id,
        producer_epoch: m.producer_epoch,
        partitions: m.partitions_by_topic(),
    })
}

/// The `__transaction_state` partitions this shard owns.
fn owned_partitions(context: &Ctx) -> Vec<i32> {
    let Some(topic) = context.image().topic(TRANSACTION_STATE_TOPIC).cloned() else {
        return Vec::new();
    };
    (0..topic.partitions)
        .filter(|&p| shard_for(TRANSACTION_STATE_TOPIC, p, context.shard_count) == context.id)
        .collect()
}

/// Loads every owned partition not loaded yet (failures are logged and retried later).
async fn load_all(context: &Ctx) {
    for partition in owned_partitions(context) {
        if let Err(err) = ensure_loaded(context, partition).await
            && err != TxnError::LoadInProgress
            && err != TxnError::NotCoordinator
        {
            warn!(partition, %err, "cannot load __transaction_state partition");
        }
    }
}

async fn list(
    context: &Ctx,
    states: &[TxnState],
    producer_ids: &[i64],
    duration_ms: i64,
) -> Vec<ListedTxn> {
    load_all(context).await;
    let now = now_ms();
    let txns = context.txns.txns.borrow();
    let mut out: Vec<ListedTxn> = txns
        .iter()
        .filter(|(_, m)| m.state != TxnState::Dead)
        .filter(|(_, m)| states.is_empty() || states.contains(&m.state))
        .filter(|(_, m)| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
        .filter(|(_, m)| duration_ms < 0 || (m.start_ms >= 0 && now - m.start_ms >= duration_ms))
        .map(|(id, m)| ListedTxn {
            transactional_id: id.clone(),
            producer_id: m.producer_id,
            state: m.state,
        })
        .collect();
    out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    out
}

/// Aborts every Ongoing transaction past its timeout.
async fn abort_timed_out(context: &Ctx) {
    let now = now_ms();
    let expired: Vec<String> = context
        .txns
        .txns
        .borrow()
        .iter()
        .filter(|(_, m)| {
            m.state == TxnState::Ongoing
                && !m.pending
                && m.start_ms + i64::from(m.timeout_ms) <= now
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        let partition = txn_partition(context, &id);
        if let Err(err) = fence_and_abort(context, partition, &id, Some(now)).await {
            debug!(transactional_id = %id, %err, "timed-out transaction not aborted yet");
        }
    }
}

/// Removes ids with no open transaction that have been idle past `transactional.id.expiration.ms`.
async fn expire_ids(context: &Ctx) {
    let now = now_ms();
    let expiration = context.txns.settings.id_expiration_ms;
    let expired: Vec<(String, TxnState)> = {
        let mut txns = context.txns.txns.borrow_mut();
        txns.iter_mut()
            .filter(|(_, m)| {
                !m.pending
                    && matches!(
                        m.state,
                        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    )
                    && m.last_update_ms + expiration <= now
            })
            .map(|(id, m)| {
                let before = m.state;
                m.state = TxnState::Dead;
                m.pending = true;
                (id.clone(), before)
            })
            .collect()
    };
    for (id, before) in expired {
        let partition = txn_partition(context, &id);
        let result = write_state(context, partition, &id, None).await;
        let mut txns = context.txns.txns.borrow_mut();
        match result {
            Ok(()) => {
                txns.remove(&id);
                info!(transactional_id = %id, "transactional id expired");
            }
            Err(err) => {
                warn!(transactional_id = %id, %err, "cannot expire transactional id");
                // Back to where it was; retried next round.
                if let Some(m) = txns.get_mut(&id) {
                    m.state = before;
                    m.pending = false;
                }
            }
        }
    }
}

/// The coordinator's background work on every shard, until the shard drains: loads the owned
/// partitions soon after start, then aborts timed-out transactions and expires idle ids.
pub async fn run_maintenance(context: Ctx) {
    let settings = context.txns.settings;
    let mut wait = Duration::from_millis(FIRST_MAINTENANCE_DELAY_MS);
    let mut last_expiry = std::time::Instant::now();
    loop {
        if !context.sleep_unless_draining(wait).await {
            break;
        }
        wait = Duration::from_millis(settings.abort_interval_ms);
        load_all(&context).await;
        abort_timed_out(&context).await;
        if last_expiry.elapsed() >= Duration::from_millis(settings.expiry_interval_ms) {
            last_expiry = std::time::Instant::now();
            expire_ids(&context).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_its_value() {
        let mut m = TxnMetadata::fresh(42, 60_000);
        m.producer_epoch = 3;
        m.state = TxnState::Ongoing;
        m.partitions.insert(("b".into(), 1));
        m.partitions.insert(("a".into(), 2));
        m.partitions.insert(("a".into(), 0));
        m.start_ms = 10;
        let value = m.value();
        assert_eq!(
            value.partitions,
            vec![("a".into(), vec![0, 2]), ("b".into(), vec![1])]
        );
        assert_eq!(TxnMetadata::from_value(value), m);
    }

    #[test]
    fn producer_checks_follow_kafka() {
        let mut m = TxnMetadata::fresh(42, 60_000);
        m.producer_epoch = 3;
        assert_eq!(check_producer(&m, 42, 3), Ok(()));
        assert_eq!(
            check_producer(&m, 41, 3),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(check_producer(&m, 42, 2), Err(TxnError::ProducerFenced));
        assert_eq!(check_producer(&m, 42, 4), Err(TxnError::ProducerFenced));
        m.pending = true;
        assert_eq!(check_producer(&m, 42, 3), Err(TxnError::Concurrent));
    }
}
