//! Producer state of one partition: for each producer id, its epoch and the sequence ranges
//! and offsets of its last five batches, so a retried batch is answered with its original
//! offset instead of being written twice and a gap in the sequence is refused; and the
//! transactions open on the partition, which bound the last stable offset (LSO), with the
//! aborted transactions that read_committed consumers are told to skip.
//!
//! Owner: one table per open partition, on the partition's owner shard (inside
//! `OpenPartition`). Checks run synchronously right before the batch is staged (no await in
//! between), so the order of checks is the order of appends. A batch is recorded as pending
//! when it passes the check; the append's outcome then confirms it (with its base offset) or
//! reverts it (the write failed and the client will retry the same sequence).
//!
//! Transactions: the first transactional batch of a producer opens its transaction on this
//! partition at the offset the batch is about to get (the log's end offset at check time, as
//! staging follows in the same poll), so the LSO stops there before the batch can become
//! visible. A commit or abort marker (control batch, written on the transaction
//! coordinator's behalf) is checked with `check_marker` before it is staged and applied with
//! `complete_marker` once durable: the transaction closes, the LSO moves on, and an abort is
//! added to the aborted list (persisted per segment in `.txnindex` files by the manager).
//!
//! Recovery: state is saved in snapshots (`encode_snapshot`, written by the manager when the
//! partition is idle after a segment roll, and at close) holding every producer as of an
//! offset; on open the latest usable snapshot is loaded and the batches after its offset are
//! replayed (`replay`), control batches included. Aborted transactions come from the
//! `.txnindex` files, completed by the replay.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::limits::{PRODUCER_BATCHES_KEPT, PRODUCERS_PER_PARTITION_MAX};
use crate::storage::batch::{BatchHeader, ControlMarker};

/// What the check says about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not an idempotent batch (producer id -1): append without checks.
    NotIdempotent,
    /// In sequence: append it (recorded as pending).
    Append,
    /// Already written: answer with the original base offset, write nothing.
    Duplicate {
        /// Base offset of the original.
        base_offset: i64,
    },
    /// A retry of a batch whose first write has not completed yet: the client should retry.
    DuplicateInFlight,
    /// Refused.
    Refused(ProducerError),
}

/// Why a batch or marker was refused; mapped to Kafka codes in `broker::error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// An older epoch than the producer's current one (INVALID_PRODUCER_EPOCH).
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    StaleEpoch {
        /// Producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The epoch on record.
        current: i16,
    },
    /// The sequence does not follow the last one (OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("out of order sequence for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrder {
        /// Producer id.
        producer_id: i64,
        /// The next sequence on record.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// The producer is not known here and the batch does not start a sequence
    /// (UNKNOWN_PRODUCER_ID).
    #[error("unknown producer {producer_id} with sequence {got}")]
    UnknownProducer {
        /// Producer id.
        producer_id: i64,
        /// The batch's first sequence.
        got: i32,
    },
    /// A client sent a control batch; only the broker writes them (INVALID_RECORD).
    #[error("control batches are written by the broker, not by producers")]
    ControlBatchFromClient,
    /// A transactional batch without a producer id (INVALID_RECORD).
    #[error("a transactional batch must carry a producer id")]
    TransactionalWithoutProducer,
    /// A non-transactional batch from a producer whose transaction is open here
    /// (INVALID_TXN_STATE).
    #[error("producer {producer_id} has an open transaction on this partition")]
    OpenTransaction {
        /// Producer id.
        producer_id: i64,
    },
    /// A marker for this producer is being written (CONCURRENT_TRANSACTIONS).
    #[error("a transaction marker of producer {producer_id} is being written")]
    MarkerInFlight {
        /// Producer id.
        producer_id: i64,
    },
    /// A marker from an older coordinator epoch (TRANSACTION_COORDINATOR_FENCED).
    #[error("coordinator epoch {got} is older than {current} for producer {producer_id}")]
    CoordinatorFenced {
        /// Producer id.
        producer_id: i64,
        /// The marker's coordinator epoch.
        got: i32,
        /// The coordinator epoch on record.
        current: i32,
    },
}

/// An aborted transaction on this partition, as Kafka's transaction index records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// Offset of its first batch in the transaction.
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
    /// The partition's last stable offset once the transaction was closed.
    pub last_stable_offset: i64,
}

#[derive(Debug, Clone, Copy)]
struct BatchRecord {
    first_seq: i32,
    last_seq: i32,
    /// -1 while the write is pending.
    base_offset: i64,
    /// This (pending) batch opened the producer's transaction here.
    opened_txn: bool,
}

#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    /// -1 until a marker of the producer is written here, as in Kafka.
    coordinator_epoch: i32,
    /// Max timestamp of the producer's last batch or marker (-1: none known, as Kafka's
    /// NO_TIMESTAMP; snapshots of version 1 did not keep it).
    last_timestamp: i64,
    batches: VecDeque<BatchRecord>,
    /// Highest offset written by the producer (batches and markers), for eviction.
    last_offset: i64,
    /// First offset of the producer's open transaction on this partition.
    txn_first_offset: Option<i64>,
    /// A marker is staged and not yet durable.
    marker_pending: bool,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            coordinator_epoch: -1,
            last_timestamp: -1,
            batches: VecDeque::new(),
            last_offset: 0,
            txn_first_offset: None,
            marker_pending: false,
        }
    }
}

/// One producer of a partition as DescribeProducers reports it (Kafka's `ProducerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    /// Producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub producer_epoch: i16,
    /// Last sequence of its last written batch (-1: none).
    pub last_sequence: i32,
    /// Max timestamp of its last batch or marker (-1: not known).
    pub last_timestamp: i64,
    /// Epoch of the coordinator that wrote its last marker (-1: none).
    pub coordinator_epoch: i32,
    /// First offset of its open transaction here (-1: none).
    pub current_txn_start_offset: i64,
}

impl ProducerEntry {
    fn next_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| next_sequence(b.last_seq))
    }

    fn push(&mut self, record: BatchRecord) {
        if self.batches.len() == PRODUCER_BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.batches.push_back(record);
    }
}

/// Sequences wrap from i32::MAX to 0, as in Kafka.
fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// The sequence range of a batch: its base sequence and that plus its last offset delta.
fn sequence_range(header: &BatchHeader) -> (i32, i32) {
    let first = header.base_sequence.get();
    let last =
        (i64::from(first) + i64::from(header.last_offset_delta.get())) % (i64::from(i32::MAX) + 1);
    (first, last as i32)
}

/// A snapshot that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Too short, a bad checksum, or an unknown version.
    #[error("producer state snapshot is damaged: {0}")]
    Damaged(&'static str),
}

/// Version 2 adds each producer's last timestamp; version 1 snapshots are still read.
const SNAPSHOT_VERSION: u16 = 2;
const SNAPSHOT_HEADER_BYTES: usize = 2 + 4 + 8 + 4;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: (first offset, producer id).
    open_txns: BTreeSet<(i64, i64)>,
    /// Aborted transactions by marker offset, oldest first.
    aborted: Vec<AbortedTxn>,
    /// Batches and markers checked but not yet confirmed or reverted.
    pending: usize,
}

impl ProducerStateTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Whether a checked batch or marker awaits its outcome (a snapshot now would not match
    /// any one offset).
    pub fn has_pending(&self) -> bool {
        self.pending > 0
    }

    /// The first offset of the oldest open transaction: the last stable offset, when it is
    /// below the high watermark.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.open_txns.first().map(|&(offset, _)| offset)
    }

    /// The epoch on record for `producer_id`, if the producer is known here (the group
    /// coordinator fences zombie transactional offset commits with it, as Kafka's append to
    /// `__consumer_offsets` does).
    pub fn producer_epoch(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    /// Every producer known here, by id (DescribeProducers). Batches still pending do not
    /// count: the last sequence is that of the last written batch.
    pub fn describe(&self) -> Vec<ProducerSummary> {
        let mut all: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(&producer_id, entry)| ProducerSummary {
                producer_id,
                producer_epoch: entry.epoch,
                last_sequence: entry
                    .batches
                    .iter()
                    .rev()
                    .find(|b| b.base_offset >= 0)
                    .map_or(-1, |b| b.last_seq),
                last_timestamp: entry.last_timestamp,
                coordinator_epoch: entry.coordinator_epoch,
                current_txn_start_offset: entry.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        all.sort_by_key(|p| p.producer_id);
        all
    }

    /// Checks the batch whose header is `header`, about to be staged at `next_offset`; on
    /// `Append` the batch is recorded as pending.
    pub fn check_and_reserve(&mut self, header: &BatchHeader, next_offset: i64) -> SequenceCheck {
        if header.is_control() {
            return SequenceCheck::Refused(ProducerError::ControlBatchFromClient);
        }
        let producer_id = header.producer_id.get();
        let transactional = header.is_transactional();
        if producer_id < 0 {
            return if transactional {
                SequenceCheck::Refused(ProducerError::TransactionalWithoutProducer)
            } else {
                SequenceCheck::NotIdempotent
            };
        }
        let epoch = header.producer_epoch.get();
        let (first_seq, last_seq) = sequence_range(header);
        let new_epoch = match self.producers.get(&producer_id) {
            None => {
                if first_seq != 0 {
                    return SequenceCheck::Refused(ProducerError::UnknownProducer {
                        producer_id,
                        got: first_seq,
                    });
                }
                true
            }
            Some(entry) => {
                if epoch < entry.epoch {
                    return SequenceCheck::Refused(ProducerError::StaleEpoch {
                        producer_id,
                        epoch,
                        current: entry.epoch,
                    });
                }
                if epoch > entry.epoch {
                    if first_seq != 0 {
                        return SequenceCheck::Refused(ProducerError::OutOfOrder {
                            producer_id,
                            expected: 0,
                            got: first_seq,
                        });
                    }
                } else {
                    if let Some(done) = entry
                        .batches
                        .iter()
                        .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
                    {
                        return if done.base_offset < 0 {
                            SequenceCheck::DuplicateInFlight
                        } else {
                            SequenceCheck::Duplicate {
                                base_offset: done.base_offset,
                            }
                        };
                    }
                    let expected = entry.next_seq().unwrap_or(0);
                    if first_seq != expected {
                        return SequenceCheck::Refused(ProducerError::OutOfOrder {
                            producer_id,
                            expected,
                            got: first_seq,
                        });
                    }
                }
                if entry.marker_pending {
                    return SequenceCheck::Refused(ProducerError::MarkerInFlight { producer_id });
                }
                if !transactional && entry.txn_first_offset.is_some() {
                    return SequenceCheck::Refused(ProducerError::OpenTransaction { producer_id });
                }
                epoch > entry.epoch
            }
        };
        if !self.producers.contains_key(&producer_id) {
            self.evict_if_full();
        }
        let entry = self.producers.entry(producer_id).or_default();
        if new_epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        let opened_txn = transactional && entry.txn_first_offset.is_none();
        if opened_txn {
            entry.txn_first_offset = Some(next_offset);
            self.open_txns.insert((next_offset, producer_id));
        }
        entry.push(BatchRecord {
            first_seq,
            last_seq,
            base_offset: -1,
            opened_txn,
        });
        self.pending += 1;
        SequenceCheck::Append
    }

    /// Records the base offset of a pending batch whose write succeeded.
    pub fn confirm(&mut self, header: &BatchHeader, base_offset: i64, last_offset: i64) {
        let (first_seq, _) = sequence_range(header);
        if let Some(entry) = self.producers.get_mut(&header.producer_id.get()) {
            if let Some(batch) = entry
                .batches
                .iter_mut()
                .find(|b| b.first_seq == first_seq && b.base_offset < 0)
            {
                batch.base_offset = base_offset;
                self.pending = self.pending.saturating_sub(1);
            }
            entry.last_offset = entry.last_offset.max(last_offset);
            entry.last_timestamp = header.max_timestamp.get();
        }
    }

    /// Forgets a pending batch whose write failed, so the client's retry is in sequence again
    /// (and the transaction it opened is not open after all).
    pub fn revert(&mut self, header: &BatchHeader) {
        let producer_id = header.producer_id.get();
        let (first_seq, _) = sequence_range(header);
        let Some(entry) = self.producers.get_mut(&producer_id) else {
            return;
        };
        let Some(at) = entry
            .batches
            .iter()
            .position(|b| b.first_seq == first_seq && b.base_offset < 0)
        else {
            return;
        };
        let batch = entry.batches.remove(at).expect("position is in range");
        self.pending = self.pending.saturating_sub(1);
        if batch.opened_txn
            && let Some(first) = entry.txn_first_offset.take()
        {
            self.open_txns.remove(&(first, producer_id));
        }
        if entry.batches.is_empty() && entry.last_offset == 0 && entry.txn_first_offset.is_none() {
            self.producers.remove(&producer_id);
        }
    }

    /// Checks a commit or abort marker for `producer_id` before it is staged; on success the
    /// marker is pending until `complete_marker` or `cancel_marker`.
    pub fn check_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), ProducerError> {
        if let Some(entry) = self.producers.get(&producer_id) {
            if epoch < entry.epoch {
                return Err(ProducerError::StaleEpoch {
                    producer_id,
                    epoch,
                    current: entry.epoch,
                });
            }
            if coordinator_epoch < entry.coordinator_epoch {
                return Err(ProducerError::CoordinatorFenced {
                    producer_id,
                    got: coordinator_epoch,
                    current: entry.coordinator_epoch,
                });
            }
            if entry.marker_pending {
                return Err(ProducerError::MarkerInFlight { producer_id });
            }
        } else {
            self.evict_if_full();
        }
        let entry = self.producers.entry(producer_id).or_insert(ProducerEntry {
            epoch,
            ..Default::default()
        });
        entry.marker_pending = true;
        self.pending += 1;
        Ok(())
    }

    /// A checked marker was not written (the append failed).
    pub fn cancel_marker(&mut self, producer_id: i64) {
        if let Some(entry) = self.producers.get_mut(&producer_id)
            && entry.marker_pending
        {
            entry.marker_pending = false;
            self.pending = self.pending.saturating_sub(1);
        }
    }

    /// Applies a durable marker at `marker_offset`: closes the producer's transaction here and
    /// returns it if it was aborted (for the transaction index).
    pub fn complete_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: ControlMarker,
        marker_offset: i64,
        timestamp_ms: i64,
    ) -> Option<AbortedTxn> {
        if let Some(entry) = self.producers.get_mut(&producer_id)
            && entry.marker_pending
        {
            entry.marker_pending = false;
            self.pending = self.pending.saturating_sub(1);
        }
        self.apply_marker(producer_id, epoch, marker, marker_offset, timestamp_ms)
    }

    fn apply_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: ControlMarker,
        marker_offset: i64,
        timestamp_ms: i64,
    ) -> Option<AbortedTxn> {
        if !self.producers.contains_key(&producer_id) {
            self.evict_if_full();
        }
        let entry = self.producers.entry(producer_id).or_default();
        if epoch > entry.epoch {
            // A marker with a bumped epoch fences the older incarnation: its sequences end.
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(marker.coordinator_epoch);
        entry.last_offset = entry.last_offset.max(marker_offset);
        entry.last_timestamp = timestamp_ms;
        let first_offset = entry.txn_first_offset.take()?;
        self.open_txns.remove(&(first_offset, producer_id));
        if marker.commit {
            return None;
        }
        let aborted = AbortedTxn {
            producer_id,
            first_offset,
            last_offset: marker_offset,
            last_stable_offset: self.first_unstable_offset().unwrap_or(marker_offset + 1),
        };
        self.add_aborted(aborted);
        Some(aborted)
    }

    /// Adds an aborted transaction (from a `.txnindex` file or a marker), keeping the list in
    /// marker order and free of duplicates.
    pub fn add_aborted(&mut self, txn: AbortedTxn) {
        let at = self.aborted.partition_point(|a| {
            (a.last_offset, a.producer_id) < (txn.last_offset, txn.producer_id)
        });
        let known = self
            .aborted
            .get(at)
            .is_some_and(|a| a.last_offset == txn.last_offset && a.producer_id == txn.producer_id);
        if !known {
            self.aborted.insert(at, txn);
        }
    }

    /// The aborted transactions a read_committed fetch of `[from, to)` must be told about:
    /// those that end at or after `from` and began before `to`, as (producer id, first
    /// offset).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        let mut found = Vec::new();
        for txn in &self.aborted[start..] {
            if txn.first_offset < to {
                found.push((txn.producer_id, txn.first_offset));
            }
            // Every transaction still open when this one closed began at or after its LSO.
            if txn.last_stable_offset > to {
                break;
            }
        }
        found
    }

    /// The aborted transactions whose markers lie in `[from, to)` (one segment's index).
    pub fn aborted_in_segment(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .take_while(|a| a.last_offset < to)
            .copied()
            .collect()
    }

    /// The base offset of each known producer's last written batch: the batch the log cleaner
    /// keeps (if only as an empty batch) so the producer's sequence survives compaction.
    pub fn last_batch_offsets(&self) -> HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(&id, entry)| {
                let last = entry.batches.back()?;
                (last.base_offset >= 0).then_some((id, last.base_offset))
            })
            .collect()
    }

    /// Forgets aborted transactions whose markers are below the log start offset.
    pub fn prune_aborted_below(&mut self, log_start_offset: i64) {
        let keep_from = self
            .aborted
            .partition_point(|a| a.last_offset < log_start_offset);
        self.aborted.drain(..keep_from);
    }

    /// Applies a batch that is in the log, in log order, without checks: recovery replaying
    /// the log, and a follower appending what its leader wrote (Kafka's follower path: no
    /// sequence refusals, but each producer's epoch, sequences, offsets and open transaction
    /// are tracked from the batches). `batch` holds the whole batch (needed for control
    /// batches' markers). Returns the transaction an abort marker closed, for `.txnindex`.
    pub fn replay(&mut self, header: &BatchHeader, batch: &[u8]) -> Option<AbortedTxn> {
        let producer_id = header.producer_id.get();
        if producer_id < 0 {
            return None;
        }
        let epoch = header.producer_epoch.get();
        if header.is_control() {
            let marker = crate::storage::batch::control_marker(batch)?;
            let timestamp = header.max_timestamp.get();
            return self.apply_marker(
                producer_id,
                epoch,
                marker,
                header.base_offset.get(),
                timestamp,
            );
        }
        let (first_seq, last_seq) = sequence_range(header);
        if !self.producers.contains_key(&producer_id) {
            self.evict_if_full();
        }
        let entry = self.producers.entry(producer_id).or_default();
        if epoch > entry.epoch || entry.batches.is_empty() {
            if epoch != entry.epoch {
                entry.batches.clear();
            }
            entry.epoch = epoch;
        } else if epoch < entry.epoch {
            return None;
        }
        entry.push(BatchRecord {
            first_seq,
            last_seq,
            base_offset: header.base_offset.get(),
            opened_txn: false,
        });
        entry.last_offset = entry.last_offset.max(header.last_offset());
        entry.last_timestamp = header.max_timestamp.get();
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            let first = header.base_offset.get();
            entry.txn_first_offset = Some(first);
            self.open_txns.insert((first, producer_id));
        }
        None
    }

    /// Keeps the table bounded: past the limit, the producer that wrote least recently goes
    /// (never one with an open transaction: it holds the LSO).
    fn evict_if_full(&mut self) {
        if self.producers.len() < PRODUCERS_PER_PARTITION_MAX {
            return;
        }
        if let Some((&oldest, _)) = self
            .producers
            .iter()
            .filter(|(_, e)| e.txn_first_offset.is_none() && !e.marker_pending)
            .min_by_key(|(_, e)| e.last_offset)
        {
            self.producers.remove(&oldest);
        }
    }

    /// The table as of `offset` (every batch below it applied, none pending), as bytes:
    /// version u16, CRC-32C u32 of what follows, offset i64, producer count u32, then per
    /// producer: id i64, epoch i16, coordinator epoch i32, last offset i64, open transaction's
    /// first offset i64 (-1: none), last timestamp i64 (version 2 on), batch count u8, and per
    /// batch first sequence i32, last
    /// sequence i32, base offset i64. Aborted transactions are not included (they live in the
    /// `.txnindex` files).
    pub fn encode_snapshot(&self, offset: i64) -> Vec<u8> {
        let mut body = Vec::with_capacity(12 + self.producers.len() * 64);
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (&producer_id, entry) in &self.producers {
            body.extend_from_slice(&producer_id.to_be_bytes());
            body.extend_from_slice(&entry.epoch.to_be_bytes());
            body.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            body.extend_from_slice(&entry.last_offset.to_be_bytes());
            body.extend_from_slice(&entry.txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.extend_from_slice(&entry.last_timestamp.to_be_bytes());
            let done: Vec<&BatchRecord> = entry
                .batches
                .iter()
                .filter(|b| b.base_offset >= 0)
                .collect();
            body.push(done.len() as u8);
            for batch in done {
                body.extend_from_slice(&batch.first_seq.to_be_bytes());
                body.extend_from_slice(&batch.last_seq.to_be_bytes());
                body.extend_from_slice(&batch.base_offset.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a snapshot written by `encode_snapshot`: its offset and the table.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(i64, ProducerStateTable), SnapshotError> {
        let damaged = SnapshotError::Damaged;
        if bytes.len() < SNAPSHOT_HEADER_BYTES {
            return Err(damaged("too short"));
        }
        let version = u16::from_be_bytes([bytes[0], bytes[1]]);
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return Err(damaged("unknown version"));
        }
        let crc = u32::from_be_bytes(bytes[2..6].try_into().expect("4 bytes"));
        let body = &bytes[6..];
        if crc32c::crc32c(body) != crc {
            return Err(damaged("checksum mismatch"));
        }
        let mut reader = SnapshotReader { bytes: body, at: 0 };
        let offset = reader.i64()?;
        let count = reader.u32()? as usize;
        if count > PRODUCERS_PER_PARTITION_MAX {
            return Err(damaged("too many producers"));
        }
        let mut table = ProducerStateTable::new();
        for _ in 0..count {
            let producer_id = reader.i64()?;
            let mut entry = ProducerEntry {
                epoch: reader.i16()?,
                coordinator_epoch: reader.i32()?,
                last_offset: reader.i64()?,
                ..Default::default()
            };
            let txn_first_offset = reader.i64()?;
            if version >= 2 {
                entry.last_timestamp = reader.i64()?;
            }
            if txn_first_offset >= 0 {
                entry.txn_first_offset = Some(txn_first_offset);
                table.open_txns.insert((txn_first_offset, producer_id));
            }
            let batches = reader.u8()? as usize;
            if batches > PRODUCER_BATCHES_KEPT {
                return Err(damaged("too many batches for a producer"));
            }
            for _ in 0..batches {
                entry.push(BatchRecord {
                    first_seq: reader.i32()?,
                    last_seq: reader.i32()?,
                    base_offset: reader.i64()?,
                    opened_txn: false,
                });
            }
            table.producers.insert(producer_id, entry);
        }
        if reader.at != body.len() {
            return Err(damaged("trailing bytes"));
        }
        Ok((offset, table))
    }
}

struct SnapshotReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl SnapshotReader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let slice = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or(SnapshotError::Damaged("truncated"))?;
        self.at += N;
        Ok(slice.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, SnapshotError> {
        Ok(i16::from_be_bytes(self.take()?))
    }

    fn i32(&mut self) -> Result<i32, SnapshotError> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_seq: i32, count: i32) -> Vec<u8> {
        let mut bytes = vec![0u8; 61];
        bytes[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        bytes[43..51].copy_from_slice(&producer_id.to_be_bytes());
        bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
        bytes[53..57].copy_from_slice(&base_seq.to_be_bytes());
        bytes
    }

    fn view(bytes: &[u8]) -> &BatchHeader {
        BatchHeader::view(bytes).unwrap()
    }

    #[test]
    fn in_sequence_duplicates_and_gaps() {
        let mut table = ProducerStateTable::new();
        let b0 = header(7, 0, 0, 3);
        assert_eq!(table.check_and_reserve(view(&b0), 0), SequenceCheck::Append);
        // A retry while the first write is in flight.
        assert_eq!(
            table.check_and_reserve(view(&b0), 0),
            SequenceCheck::DuplicateInFlight
        );
        table.confirm(view(&b0), 100, 102);
        assert_eq!(
            table.check_and_reserve(view(&b0), 0),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        let b1 = header(7, 0, 3, 2);
        assert_eq!(table.check_and_reserve(view(&b1), 0), SequenceCheck::Append);
        let gap = header(7, 0, 9, 1);
        assert!(matches!(
            table.check_and_reserve(view(&gap), 0),
            SequenceCheck::Refused(ProducerError::OutOfOrder {
                expected: 5,
                got: 9,
                ..
            })
        ));
        // A failed write is forgotten: the retry of the same sequence is in order again.
        table.revert(view(&b1));
        assert_eq!(table.check_and_reserve(view(&b1), 0), SequenceCheck::Append);
    }

    #[test]
    fn epochs_and_unknown_producers() {
        let mut table = ProducerStateTable::new();
        assert!(matches!(
            table.check_and_reserve(view(&header(1, 0, 5, 1)), 0),
            SequenceCheck::Refused(ProducerError::UnknownProducer { .. })
        ));
        assert_eq!(
            table.check_and_reserve(view(&header(1, 2, 0, 1)), 0),
            SequenceCheck::Append
        );
        assert!(matches!(
            table.check_and_reserve(view(&header(1, 1, 1, 1)), 0),
            SequenceCheck::Refused(ProducerError::StaleEpoch { .. })
        ));
        assert!(matches!(
            table.check_and_reserve(view(&header(1, 3, 4, 1)), 0),
            SequenceCheck::Refused(ProducerError::OutOfOrder { .. })
        ));
        assert_eq!(
            table.check_and_reserve(view(&header(1, 3, 0, 1)), 0),
            SequenceCheck::Append
        );
        assert_eq!(
            table.check_and_reserve(view(&header(-1, -1, -1, 1)), 0),
            SequenceCheck::NotIdempotent
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_replay_rebuilds() {
        let mut table = ProducerStateTable::new();
        for seq in 0..8 {
            let b = header(3, 0, seq, 1);
            assert_eq!(table.check_and_reserve(view(&b), 0), SequenceCheck::Append);
            table.confirm(view(&b), i64::from(seq), i64::from(seq));
        }
        // Batch 2 has been forgotten, batch 3 is remembered.
        assert!(matches!(
            table.check_and_reserve(view(&header(3, 0, 2, 1)), 0),
            SequenceCheck::Refused(_)
        ));
        assert_eq!(
            table.check_and_reserve(view(&header(3, 0, 3, 1)), 0),
            SequenceCheck::Duplicate { base_offset: 3 }
        );

        let mut rebuilt = ProducerStateTable::new();
        for seq in 0..8 {
            let mut b = header(3, 0, seq, 1);
            b[0..8].copy_from_slice(&i64::from(seq).to_be_bytes());
            rebuilt.replay(view(&b), &b);
        }
        assert_eq!(
            rebuilt.check_and_reserve(view(&header(3, 0, 7, 1)), 0),
            SequenceCheck::Duplicate { base_offset: 7 }
        );
        assert_eq!(
            rebuilt.check_and_reserve(view(&header(3, 0, 8, 1)), 0),
            SequenceCheck::Append
        );
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(next_sequence(i32::MAX), 0);
        let mut table = ProducerStateTable::new();
        let mut b = header(9, 0, 0, 1);
        table.check_and_reserve(view(&b), 0);
        table.confirm(view(&b), 0, 0);
        b = header(9, 0, 1, 1);
        assert_eq!(table.check_and_reserve(view(&b), 0), SequenceCheck::Append);
    }

    fn txn_header(producer_id: i64, epoch: i16, base_seq: i32, count: i32) -> Vec<u8> {
        let mut bytes = header(producer_id, epoch, base_seq, count);
        bytes[21..23]
            .copy_from_slice(&crate::storage::batch::TRANSACTIONAL_ATTRIBUTE_BIT.to_be_bytes());
        bytes
    }

    const ABORT: ControlMarker = ControlMarker {
        commit: false,
        coordinator_epoch: 0,
    };
    const COMMIT: ControlMarker = ControlMarker {
        commit: true,
        coordinator_epoch: 0,
    };

    #[test]
    fn transactions_bound_the_lso_and_aborts_are_listed() {
        let mut table = ProducerStateTable::new();
        let a = txn_header(1, 0, 0, 2);
        assert_eq!(table.check_and_reserve(view(&a), 10), SequenceCheck::Append);
        // Open from the moment it is checked, before the write completes.
        assert_eq!(table.first_unstable_offset(), Some(10));
        table.confirm(view(&a), 10, 11);
        let b = txn_header(2, 0, 0, 1);
        assert_eq!(table.check_and_reserve(view(&b), 12), SequenceCheck::Append);
        table.confirm(view(&b), 12, 12);
        // A plain batch from a producer inside a transaction is refused.
        assert!(matches!(
            table.check_and_reserve(view(&header(1, 0, 2, 1)), 13),
            SequenceCheck::Refused(ProducerError::OpenTransaction { .. })
        ));
        assert!(!table.has_pending());

        table.check_marker(1, 0, 0).unwrap();
        assert!(matches!(
            table.check_and_reserve(view(&txn_header(1, 0, 2, 1)), 13),
            SequenceCheck::Refused(ProducerError::MarkerInFlight { .. })
        ));
        assert!(table.has_pending());
        let aborted = table.complete_marker(1, 0, ABORT, 13, 5000).unwrap();
        assert_eq!(aborted.first_offset, 10);
        assert_eq!(aborted.last_stable_offset, 12);
        assert_eq!(table.first_unstable_offset(), Some(12));
        table.check_marker(2, 0, 0).unwrap();
        assert_eq!(table.complete_marker(2, 0, COMMIT, 14, 5000), None);
        assert_eq!(table.first_unstable_offset(), None);

        assert_eq!(table.aborted_between(0, 100), vec![(1, 10)]);
        assert_eq!(table.aborted_between(14, 100), vec![]);
        assert_eq!(table.aborted_between(0, 10), vec![]);
        assert_eq!(table.aborted_in_segment(13, 14).len(), 1);
        table.prune_aborted_below(14);
        assert_eq!(table.aborted_between(0, 100), vec![]);
    }

    #[test]
    fn markers_are_fenced_and_failed_writes_reopen_nothing() {
        let mut table = ProducerStateTable::new();
        let a = txn_header(5, 3, 0, 1);
        assert_eq!(table.check_and_reserve(view(&a), 0), SequenceCheck::Append);
        table.revert(view(&a));
        assert_eq!(table.first_unstable_offset(), None);
        assert!(!table.has_pending());
        assert_eq!(table.check_and_reserve(view(&a), 0), SequenceCheck::Append);
        table.confirm(view(&a), 0, 0);
        assert!(matches!(
            table.check_marker(5, 2, 0),
            Err(ProducerError::StaleEpoch { .. })
        ));
        // A marker with a bumped epoch (the coordinator fencing a zombie) aborts and fences.
        table.check_marker(5, 4, 1).unwrap();
        table.cancel_marker(5);
        assert!(!table.has_pending());
        table.check_marker(5, 4, 1).unwrap();
        let aborted = table.complete_marker(
            5,
            4,
            ControlMarker {
                commit: false,
                coordinator_epoch: 1,
            },
            1,
            5000,
        );
        assert!(aborted.is_some());
        assert!(matches!(
            table.check_marker(5, 4, 0),
            Err(ProducerError::CoordinatorFenced { .. })
        ));
        assert!(matches!(
            table.check_and_reserve(view(&txn_header(5, 3, 1, 1)), 2),
            SequenceCheck::Refused(ProducerError::StaleEpoch { .. })
        ));
        assert_eq!(
            table.check_and_reserve(view(&txn_header(5, 4, 0, 1)), 2),
            SequenceCheck::Append
        );
        let mut control = header(5, 4, -1, 1);
        control[21..23]
            .copy_from_slice(&crate::storage::batch::CONTROL_ATTRIBUTE_BIT.to_be_bytes());
        assert!(matches!(
            table.check_and_reserve(view(&control), 3),
            SequenceCheck::Refused(ProducerError::ControlBatchFromClient)
        ));
    }

    #[test]
    fn snapshots_round_trip_and_replay_rebuilds_transactions() {
        let mut table = ProducerStateTable::new();
        for (pid, seq, offset) in [(1, 0, 0), (1, 1, 1), (2, 0, 2)] {
            let mut b = txn_header(pid, 0, seq, 1);
            b[35..43].copy_from_slice(&7000i64.to_be_bytes());
            table.check_and_reserve(view(&b), offset);
            table.confirm(view(&b), offset, offset);
        }
        let bytes = table.encode_snapshot(3);
        let (offset, restored) = ProducerStateTable::decode_snapshot(&bytes).unwrap();
        assert_eq!(offset, 3);
        assert_eq!(restored.first_unstable_offset(), Some(0));
        assert_eq!(restored.len(), 2);
        let mut restored = restored;
        assert_eq!(
            restored.check_and_reserve(view(&txn_header(1, 0, 1, 1)), 3),
            SequenceCheck::Duplicate { base_offset: 1 }
        );
        // DescribeProducers' view survives the snapshot, last timestamps included.
        assert_eq!(restored.describe(), table.describe());
        let described = table.describe();
        assert_eq!(described.len(), 2);
        assert_eq!(
            described[0],
            ProducerSummary {
                producer_id: 1,
                producer_epoch: 0,
                last_sequence: 1,
                last_timestamp: 7000,
                coordinator_epoch: -1,
                current_txn_start_offset: 0,
            }
        );
        // A version 1 snapshot (no timestamps) is still read; the timestamps are unknown.
        let mut v1 = Vec::new();
        let body = {
            let mut body = Vec::new();
            body.extend_from_slice(&3i64.to_be_bytes());
            body.extend_from_slice(&1u32.to_be_bytes());
            body.extend_from_slice(&9i64.to_be_bytes());
            body.extend_from_slice(&2i16.to_be_bytes());
            body.extend_from_slice(&4i32.to_be_bytes());
            body.extend_from_slice(&2i64.to_be_bytes());
            body.extend_from_slice(&(-1i64).to_be_bytes());
            body.push(1);
            body.extend_from_slice(&0i32.to_be_bytes());
            body.extend_from_slice(&2i32.to_be_bytes());
            body.extend_from_slice(&0i64.to_be_bytes());
            body
        };
        v1.extend_from_slice(&1u16.to_be_bytes());
        v1.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        v1.extend_from_slice(&body);
        let (_, old) = ProducerStateTable::decode_snapshot(&v1).unwrap();
        assert_eq!(
            old.describe(),
            vec![ProducerSummary {
                producer_id: 9,
                producer_epoch: 2,
                last_sequence: 2,
                last_timestamp: -1,
                coordinator_epoch: 4,
                current_txn_start_offset: -1,
            }]
        );
        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(ProducerStateTable::decode_snapshot(&damaged).is_err());
        assert!(ProducerStateTable::decode_snapshot(&bytes[..10]).is_err());

        // Replaying the same history from the log gives the same open transactions, and a
        // replayed abort marker lists the transaction.
        let mut replayed = ProducerStateTable::new();
        for (pid, seq, offset) in [(1, 0, 0), (1, 1, 1), (2, 0, 2)] {
            let mut b = txn_header(pid, 0, seq, 1);
            b[0..8].copy_from_slice(&(offset as i64).to_be_bytes());
            replayed.replay(view(&b), &b);
        }
        assert_eq!(replayed.first_unstable_offset(), Some(0));
        let mut marker = crate::storage::batch::build_control_batch(1, 0, ABORT, 0);
        marker[0..8].copy_from_slice(&3i64.to_be_bytes());
        replayed.replay(view(&marker), &marker);
        assert_eq!(replayed.first_unstable_offset(), Some(2));
        assert_eq!(replayed.aborted_between(0, 10), vec![(1, 0)]);
    }
}
