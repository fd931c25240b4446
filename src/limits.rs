//! Every `*_max` bound of the broker in one place, with compile-time checks where bounds relate.
//!
//! Nothing here is mutable; values that a user may tune live in `config` and are validated
//! against these ceilings at start.

// ---------------------------------------------------------------------------------------------
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

/// Step by which segment space is reserved (fallocate) ahead of the tail.
pub const STORAGE_RESERVE_STEP_BYTES: u64 = 64 * 1024 * 1024;

/// Chunk size of sequential scans (recovery, timestamp lookups) and of disk reads.
pub const STORAGE_SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Default byte bound of the per-shard cache of recent batches.
pub const STORAGE_SHARD_CACHE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Failed flush ranges remembered for append futures that have not been polled since.
pub const STORAGE_FAILED_FLUSHES_MAX: usize = 64;

const _: () =
    assert!((STORAGE_STAGING_BUFFER_BYTES as u64).is_multiple_of(STORAGE_IO_ALIGNMENT_BYTES));
const _: () = assert!(STORAGE_RESERVE_STEP_BYTES.is_multiple_of(STORAGE_IO_ALIGNMENT_BYTES));
const _: () = assert!((STORAGE_SCAN_CHUNK_BYTES as u64).is_multiple_of(STORAGE_IO_ALIGNMENT_BYTES));
const _: () = assert!((STORAGE_MESSAGE_BYTES_MAX as u64) < STORAGE_SEGMENT_BYTES_MAX);
const _: () = assert!((STORAGE_MESSAGE_BYTES_MAX as u64) < STORAGE_STAGED_BYTES_MAX);
const _: () = assert!(STORAGE_STAGING_BUFFER_BYTES as u64 <= STORAGE_STAGED_BYTES_MAX);
const _: () = assert!(STORAGE_SEGMENT_BYTES_MIN >= STORAGE_IO_ALIGNMENT_BYTES);
const _: () = assert!(STORAGE_SEGMENT_BYTES_MIN <= STORAGE_SEGMENT_BYTES_MAX);
