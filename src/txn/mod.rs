//! Transactions (KIP-98): the transaction coordinator, its log, and how requests reach it.
//!
//! Owner: the coordinator of transactional id `t` is the shard that owns partition
//! `abs(java_hash(t)) % n` of `__transaction_state` (n = its partition count, 50 by default,
//! `transaction.state.log.num.partitions`), found with the same `shard_for` as every partition
//! (DESIGN.md §2). Every shard holds one `TxnCoordinator` (in its `ShardContext`) for the ids it
//! coordinates. A handler on the connection's shard decodes the request, makes sure
//! `__transaction_state` exists (creating it through the controller on first use, as Kafka
//! does), and sends a `TxnCall` to the coordinator shard with `router.call`; the answer comes
//! back as a `TxnReply`.
//!
//! The partition side of a transaction (transactional batches, the last stable offset, the
//! aborted-transaction index, read_committed fetches) lives with the partitions
//! (`storage::producer_state`, `broker::owner`); the coordinator reaches it with
//! `ShardRequest::WriteTxnMarkers`, which appends the commit or abort control batch, and the
//! partitions led by other brokers with WriteTxnMarkers (API 27) to those brokers.
//!
//! Lifecycle: see `coordinator`.
//!
//! Layering (`../shared/DESIGN.md` §7): a service; imports no protocol front (`kafka`). The
//! controller (topic creation, producer id blocks) is reached through `metadata::client`.
//! Departure: `coordinator` and `route` take the broker's `ShardContext` and send
//! `ShardRequest`s (`Txn`, `WriteTxnMarkers`) themselves, and map a failed producer id
//! allocation with `broker::error`, so this module and `broker` import each other; as for
//! `group`, a narrow handle instead of the context would cut the edge (see `broker`'s header).

pub mod coordinator;
pub mod records;
pub mod route;

pub use coordinator::TxnCoordinator;

/// Kafka's internal topic of transaction states.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Kafka's transaction states (`TransactionState`), with the status byte Kafka stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    /// No transaction open (a fresh or re-initialised producer).
    Empty,
    /// A transaction is open: partitions have been added.
    Ongoing,
    /// EndTxn(commit) is durable; markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a timeout or a fence is durable; markers are being written.
    PrepareAbort,
    /// Every partition has its commit marker.
    CompleteCommit,
    /// Every partition has its abort marker.
    CompleteAbort,
    /// The id expired and is being removed.
    Dead,
    /// The producer is being fenced (its epoch bumped) before its transaction aborts.
    PrepareEpochFence,
}

impl TxnState {
    /// Every state, in status order.
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// The status byte of the transaction log.
    pub fn status(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    /// The state of a status byte.
    pub fn from_status(status: i8) -> Option<TxnState> {
        usize::try_from(status)
            .ok()
            .and_then(|i| TxnState::ALL.get(i).copied())
    }

    /// The name DescribeTransactions and ListTransactions use (Kafka's `stateName`).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Why the coordinator refused a request; mapped to Kafka codes in `broker::error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// This shard does not coordinate the id (NOT_COORDINATOR).
    #[error("not the coordinator of this transactional id")]
    NotCoordinator,
    /// The id's partition is being replayed (COORDINATOR_LOAD_IN_PROGRESS).
    #[error("the transaction log partition is loading")]
    LoadInProgress,
    /// The log cannot be read or written (COORDINATOR_NOT_AVAILABLE).
    #[error("the transaction coordinator is not available")]
    NotAvailable,
    /// A state change or marker write is in progress (CONCURRENT_TRANSACTIONS).
    #[error("a transaction state change is in progress")]
    Concurrent,
    /// The request does not fit the state (INVALID_TXN_STATE).
    #[error("the request does not fit the transaction's state")]
    InvalidState,
    /// A newer producer epoch exists (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH for old versions).
    #[error("the producer has been fenced by a newer epoch")]
    ProducerFenced,
    /// The producer id is not the one of the transactional id (INVALID_PRODUCER_ID_MAPPING).
    #[error("the producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    /// The timeout is above `transaction.max.timeout.ms` or not positive
    /// (INVALID_TRANSACTION_TIMEOUT).
    #[error("the transaction timeout is out of range")]
    InvalidTimeout,
    /// DescribeTransactions of an unknown id (TRANSACTIONAL_ID_NOT_FOUND).
    #[error("unknown transactional id")]
    NotFound,
    /// A producer id could not be allocated; carries the Kafka code of the failure.
    #[error("producer id allocation failed (code {0})")]
    Allocation(i16),
}

/// One transactional id as DescribeTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    /// State.
    pub state: TxnState,
    /// Timeout.
    pub timeout_ms: i32,
    /// Start of the open transaction, -1 if none.
    pub start_ms: i64,
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// The partitions of the transaction, by topic.
    pub partitions: Vec<(String, Vec<i32>)>,
}

/// One transactional id as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTxn {
    /// The transactional id.
    pub transactional_id: String,
    /// Producer id.
    pub producer_id: i64,
    /// State.
    pub state: TxnState,
}

/// Work for a transaction coordinator. Carried by `ShardRequest::Txn`.
#[derive(Debug)]
pub enum TxnCall {
    /// InitProducerId with a transactional id.
    InitProducerId {
        /// The transactional id.
        transactional_id: String,
        /// The producer's `transaction.timeout.ms`.
        timeout_ms: i32,
        /// KIP-360: the producer id and epoch the producer had (v3+), if any.
        expected: Option<(i64, i16)>,
    },
    /// AddPartitionsToTxn, or AddOffsetsToTxn (the group's `__consumer_offsets` partition).
    AddPartitions {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// The partitions, all of existing topics.
        partitions: Vec<(String, i32)>,
    },
    /// EndTxn.
    End {
        /// The transactional id.
        transactional_id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Commit (true) or abort.
        commit: bool,
    },
    /// DescribeTransactions of ids this shard coordinates.
    Describe {
        /// The ids.
        transactional_ids: Vec<String>,
    },
    /// ListTransactions: this shard's ids that pass every filter.
    List {
        /// States to keep; empty keeps all.
        states: Vec<TxnState>,
        /// Producer ids to keep; empty keeps all.
        producer_ids: Vec<i64>,
        /// Keep transactions open at least this long; negative keeps all.
        duration_ms: i64,
    },
}

/// The answer to a `TxnCall`. Carried by `ShardResponse::Txn`.
#[derive(Debug)]
pub enum TxnReply {
    /// Answer to `InitProducerId`: producer id and epoch.
    InitProducerId(Result<(i64, i16), TxnError>),
    /// Answer to `AddPartitions`.
    AddPartitions(Result<(), TxnError>),
    /// Answer to `End`.
    End(Result<(), TxnError>),
    /// Answer to `Describe`, one per id in request order.
    Describe(Vec<Result<TxnDescription, TxnError>>),
    /// Answer to `List`.
    List(Vec<ListedTxn>),
}
