//! Every `*_max` bound of the broker in one place, with compile-time checks where bounds relate.
//!
//! Nothing here is mutable; values that a user may tune live in `config` and are validated
//! against these ceilings at start.

// ---------------------------------------------------------------------------------------------
// Network and protocol
// ---------------------------------------------------------------------------------------------

/// Default for Kafka's `socket.request.max.bytes`: the largest request frame a client may send.
pub const SOCKET_REQUEST_BYTES_DEFAULT: u32 = 100 * 1024 * 1024;

/// Ceiling for `socket.request.max.bytes`. The frame length is a signed 32-bit field, so no
/// frame can legally claim more than this.
pub const SOCKET_REQUEST_BYTES_MAX: u32 = i32::MAX as u32;

/// Requests one connection may have in flight (read but not yet answered). Reading from the
/// socket pauses when the bound is reached, so a pipelining client gets backpressure instead
/// of growing the broker's memory.
pub const CONNECTION_INFLIGHT_REQUESTS_MAX: usize = 64;

/// Bytes of responses one connection may have computed but not yet written before its reader
/// stops starting new requests (a client that sends fetches and never reads their answers).
/// One response may pass it; the requests already in flight may each add one more.
pub const CONNECTION_RESPONSES_QUEUED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Response pieces smaller than this are gathered into one buffer before they go to the
/// socket (one send instead of several); larger pieces (record data) are sent as they are.
pub const RESPONSE_COALESCE_BYTES_MAX: usize = 64 * 1024;

/// Capacity of each directed channel of the cross-shard mesh. A full channel makes the sender
/// wait (backpressure), it never drops or grows.
pub const MESH_CHANNEL_CAPACITY_MAX: usize = 1024;

/// Cross-shard calls one shard may have awaiting replies at once.
pub const ROUTER_PENDING_CALLS_MAX: usize = 64 * 1024;

/// Interval of the timer that wakes each shard's reactor even when idle (see
/// `runtime::executor::reactor_tick`): the longest a lost cross-shard wake-up can delay a message.
pub const SHARD_TICK_MS: u64 = 1;

/// Upper bound of `shard-spin-before-park-us`: an idle shard spins at most this long per idle
/// period. A longer spin only burns the core (with the reactor tick, an idle shard spins for
/// min(spin, tick) of every tick).
pub const SHARD_SPIN_BEFORE_PARK_US_MAX: u64 = 10_000;

/// How often the shard watchdog looks at the shards' heartbeats (`runtime::watchdog`).
pub const WATCHDOG_CHECK_MS: u64 = 5;

/// A shard whose heartbeat (stamped every tick) is older than this is nudged awake.
pub const WATCHDOG_STALE_MS: u64 = 20;

/// Nudges a shard's channel holds. A nudge is sent only while the shard looks stuck; a roomy
/// channel keeps nudges (each a wake-up) flowing for seconds even if the shard does not drain
/// them.
pub const WATCHDOG_NUDGES_MAX: usize = 4096;

const _: () = assert!(WATCHDOG_STALE_MS > 4 * SHARD_TICK_MS);

/// How long a graceful shutdown waits for in-flight requests before it closes connections.
pub const SHUTDOWN_DRAIN_MS_DEFAULT: u64 = 10_000;

/// The log cleaner (`storage::cleaner`): bytes of whole batches it reads from a segment at a
/// time, and the direct-write buffer of the cleaned segment it writes. Its key map is sized by
/// `log.cleaner.dedupe.buffer.size`, which is bounded by `STORAGE_CLEANER_DEDUPE_BYTES_MAX`.
pub const STORAGE_CLEANER_READ_BYTES: usize = 8 * 1024 * 1024;
/// See `STORAGE_CLEANER_READ_BYTES`.
pub const STORAGE_CLEANER_WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Largest key map a shard's cleaner allocates, whatever `log.cleaner.dedupe.buffer.size` says.
pub const STORAGE_CLEANER_DEDUPE_BYTES_MAX: usize = 4 * 1024 * 1024 * 1024;
/// Largest records section the cleaner inflates one compressed batch to; a batch inflating
/// past it is kept whole, its keys left out of the map (so nothing it supersedes is removed).
pub const STORAGE_CLEANER_INFLATED_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest payload a legacy (magic 0/1) message set may inflate to, and largest set of records
/// one conversion may build (`kafka::legacy_format`): a compressed wrapper that inflates past it
/// is refused with MESSAGE_TOO_LARGE instead of growing memory without bound.
pub const LEGACY_CONVERSION_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest payload one stored compressed batch may inflate to when its records are read in
/// place (`storage::records`, for ListOffsets by timestamp); a batch that inflates past it is
/// answered from its header alone.
pub const RECORD_SCAN_INFLATE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest record of the controller quorum's log (`cluster::raft_log`) and so largest entry:
/// a metadata change is a few KiB; a batch of them far below this.
pub const RAFT_RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Voters a controller quorum may have (Kafka runs 3 or 5); bounds every voter list read from
/// disk or a peer.
pub const QUORUM_VOTERS_MAX: usize = 255;

/// Bytes of entries in one append message to a quorum follower (raft-rs `max_size_per_msg`).
pub const QUORUM_MESSAGE_BYTES_MAX: u64 = 1024 * 1024;

/// Append messages in flight to one quorum follower (raft-rs `max_inflight_msgs`).
pub const QUORUM_INFLIGHT_APPENDS_MAX: usize = 256;

/// Bytes the quorum leader holds proposed but not committed; proposals past it are refused
/// (raft-rs `max_uncommitted_size`), so a leader cut off from its followers cannot grow
/// without bound.
pub const QUORUM_UNCOMMITTED_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The most preferred elections one leader balance check asks for (Kafka's KRaft controller
/// bounds them alike); the next check does the rest.
pub const LEADER_BALANCE_ELECTIONS_MAX: usize = 1_000;

/// How long a metadata change waits to commit through the quorum before its request is
/// answered REQUEST_TIMED_OUT (the change may still commit).
pub const QUORUM_COMMIT_TIMEOUT_MS: u64 = 10_000;

/// Applied quorum entries between local snapshots of the metadata image (which bound the
/// Raft log and restart time).
pub const QUORUM_SNAPSHOT_ENTRIES: u64 = 1_000;

/// Largest frame between quorum voters (an append of `QUORUM_MESSAGE_BYTES_MAX`, or a snapshot
/// of the metadata image); a larger one closes the connection.
pub const QUORUM_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A peer frame's buffer grows by at most this much per read, so it holds only what arrived.
pub const QUORUM_READ_STEP_BYTES: usize = 256 * 1024;

/// Messages queued for one quorum peer; past it new ones are dropped (Raft resends).
pub const QUORUM_PEER_QUEUE_MAX: usize = 1024;

/// Events (ticks, peer messages, proposals) queued for the voter task.
pub const QUORUM_EVENTS_QUEUED_MAX: usize = 4096;

/// Read-index requests (the metadata lease's renewals) waiting for the quorum leader's
/// confirmation; past it the oldest are dropped (a cut-off node's renewals are never answered).
pub const QUORUM_READS_PENDING_MAX: usize = 16;

/// Connections the controller listener holds at once; more are closed at accept.
pub const QUORUM_INBOUND_CONNECTIONS_MAX: usize = 64;

/// A peer connection silent for this long is closed (heartbeats flow every tick).
pub const QUORUM_PEER_IDLE_MS: u64 = 30_000;

/// Backoff between connection attempts to an unreachable quorum peer: from the first bound,
/// doubling up to the second.
pub const QUORUM_RECONNECT_MIN_MS: u64 = 50;
/// See `QUORUM_RECONNECT_MIN_MS`.
pub const QUORUM_RECONNECT_MAX_MS: u64 = 1_000;

/// ACLs the cluster may hold (they live in every shard's metadata image); CreateAcls past it is
/// refused.
pub const ACLS_MAX: usize = 100_000;

/// Users the cluster may hold SCRAM credentials of (they live in every shard's metadata
/// image); AlterUserScramCredentials adding one past it is refused.
pub const SCRAM_USERS_MAX: usize = 100_000;

/// Partitions the incremental fetch sessions of one shard may remember in all (each costs
/// about a hundred bytes). Kafka bounds only the session count
/// (`max.incremental.fetch.session.cache.slots`), but one request may name a great many
/// partitions; past this bound a new session is refused or an old one evicted
/// (`kafka::fetch_session`).
pub const FETCH_SESSION_PARTITIONS_MAX: usize = 500_000;

// ---------------------------------------------------------------------------------------------
// Idempotent producers
// ---------------------------------------------------------------------------------------------

/// Batches remembered per producer and partition for duplicate detection (Kafka keeps five,
/// the most a producer may have in flight with idempotence on).
pub const PRODUCER_BATCHES_KEPT: usize = 5;

/// Producer ids a shard takes from the controller at a time. Ids of a block not used before a
/// restart are skipped, never reused.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Producers whose state one partition keeps; past it the least recent producer is forgotten.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 65_536;

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------

/// Kafka's limit on a topic name's length (`Topic.MAX_NAME_LENGTH`).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Partitions one topic may have. Kafka has no hard limit; ours bounds a request that asks
/// for an absurd count, since every partition costs a directory and open files.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

/// Partitions the whole broker may hold.
pub const BROKER_PARTITIONS_MAX: usize = 100_000;

/// Records in the metadata log after which shard 0 writes a snapshot and starts a new log.
pub const METADATA_LOG_RECORDS_MAX: usize = 1_000;

const _: () = assert!(CONNECTION_INFLIGHT_REQUESTS_MAX >= 1);
const _: () = assert!(SOCKET_REQUEST_BYTES_DEFAULT <= SOCKET_REQUEST_BYTES_MAX);
const _: () = assert!(TOPIC_PARTITIONS_MAX as usize <= BROKER_PARTITIONS_MAX);
const _: () = assert!(ROUTER_PENDING_CALLS_MAX >= MESH_CHANNEL_CAPACITY_MAX);

// Storage (src/storage). Units last in every name.
// ---------------------------------------------------------------------------------------------

/// Direct-I/O alignment the storage engine assumes for every log write and read (4 KiB pages).
pub const STORAGE_IO_ALIGNMENT_BYTES: u64 = 4096;

/// Largest single record batch (and `max.message.bytes`) a log accepts, whatever the config says.
pub const STORAGE_MESSAGE_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// Largest `segment.bytes`: positions in the offset index are 32-bit, as in Kafka.
pub const STORAGE_SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// Smallest `segment.bytes` the engine accepts (smaller values are clamped up).
pub const STORAGE_SEGMENT_BYTES_MIN: u64 = 4096;

/// Size of one append staging buffer; appends landing while a write is in flight are gathered
/// into it and written (and synced) together.
pub const STORAGE_STAGING_BUFFER_BYTES: usize = 1024 * 1024;

/// Bytes a log may hold staged but not yet written; beyond it `append` fails fast with
/// `StorageError::Overloaded` instead of growing memory.
pub const STORAGE_STAGED_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Smallest and largest step by which an active segment's space is reserved (fallocate) ahead
/// of its tail. The step is the bytes the segment has taken so far, rounded up to a power of
/// two, within these bounds (`storage::segment::reserve_step`): a partition written now and
/// then holds at most the minimum ahead, one that writes fast reaches the maximum after as
/// many bytes, so its hot path still never grows the file.
pub const STORAGE_RESERVE_STEP_MIN_BYTES: u64 = 1024 * 1024;
/// See `STORAGE_RESERVE_STEP_MIN_BYTES`.
pub const STORAGE_RESERVE_STEP_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Deleted partitions one shard closes and removes at once (DeleteTopics of many partitions).
pub const STORAGE_PARTITION_REMOVALS_CONCURRENT_MAX: usize = 32;

/// After a reservation failed (disk full), how long a segment waits before trying again.
pub const STORAGE_RESERVE_RETRY_MS: u64 = 1000;

/// Chunk size of sequential scans (recovery, timestamp lookups) and of disk reads.
pub const STORAGE_SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Default byte bound of the per-shard cache of recent batches.
pub const STORAGE_SHARD_CACHE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Failed flush ranges remembered for append futures that have not been polled since.
pub const STORAGE_FAILED_FLUSHES_MAX: usize = 64;

const _: () =
    assert!((STORAGE_STAGING_BUFFER_BYTES as u64).is_multiple_of(STORAGE_IO_ALIGNMENT_BYTES));
const _: () = assert!(STORAGE_RESERVE_STEP_MIN_BYTES.is_multiple_of(STORAGE_IO_ALIGNMENT_BYTES));
const _: () = assert!(STORAGE_RESERVE_STEP_MAX_BYTES.is_power_of_two());
const _: () = assert!(STORAGE_RESERVE_STEP_MIN_BYTES.is_power_of_two());
const _: () = assert!((STORAGE_SCAN_CHUNK_BYTES as u64).is_multiple_of(STORAGE_IO_ALIGNMENT_BYTES));
const _: () = assert!((STORAGE_MESSAGE_BYTES_MAX as u64) < STORAGE_SEGMENT_BYTES_MAX);
const _: () = assert!((STORAGE_MESSAGE_BYTES_MAX as u64) < STORAGE_STAGED_BYTES_MAX);
const _: () = assert!(STORAGE_STAGING_BUFFER_BYTES as u64 <= STORAGE_STAGED_BYTES_MAX);
const _: () = assert!(STORAGE_SEGMENT_BYTES_MIN >= STORAGE_IO_ALIGNMENT_BYTES);
const _: () = assert!(STORAGE_SEGMENT_BYTES_MIN <= STORAGE_SEGMENT_BYTES_MAX);

// ---------------------------------------------------------------------------------------------
// Consumer groups
// ---------------------------------------------------------------------------------------------

/// Groups one shard's coordinator keeps in memory; a join or commit that would create more is
/// refused with COORDINATOR_NOT_AVAILABLE.
pub const GROUPS_PER_SHARD_MAX: usize = 100_000;

/// Transactional ids one shard's transaction coordinator keeps in memory; InitProducerId for a
/// new id beyond it is refused with COORDINATOR_NOT_AVAILABLE.
pub const TRANSACTIONAL_IDS_PER_SHARD_MAX: usize = 100_000;

/// Members (joined or holding a MEMBER_ID_REQUIRED id) of one group; more get
/// GROUP_MAX_SIZE_REACHED (Kafka's `group.max.size`, which Kafka leaves unbounded).
pub const GROUP_MEMBERS_MAX: usize = 1_000;

// ---------------------------------------------------------------------------------------------
// Partition replication
// ---------------------------------------------------------------------------------------------

/// The largest response a follower reads from its leader; past it the connection is dropped
/// with an error naming the size. `replica.fetch.response.max.bytes` is clamped below it.
pub const REPLICA_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How long a follower waits for a connection to its leader.
pub const REPLICA_CONNECT_TIMEOUT_MS: u64 = 3_000;
