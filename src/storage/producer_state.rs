//! Idempotent producer state of one partition: for each producer id, its epoch and the
//! sequence ranges and offsets of its last five batches, so a retried batch is answered with
//! its original offset instead of being written twice, and a gap in the sequence is refused.
//!
//! Owner: one table per open partition, on the partition's owner shard (inside
//! `OpenPartition`). Checks run synchronously right before the batch is staged (no await in
//! between), so the order of checks is the order of appends. A batch is recorded as pending
//! when it passes the check; the append's outcome then confirms it (with its base offset) or
//! reverts it (the write failed and the client will retry the same sequence).
//!
//! Rebuilt on open by replaying the batch headers of the active segment (`replay`); producers
//! that wrote nothing since the last segment roll before a restart are unknown afterwards, and
//! their next batch (sequence above 0) is answered UNKNOWN_PRODUCER_ID, which clients handle by
//! resetting their sequence. Snapshots at segment roll would lift that limit (later).

use std::collections::{HashMap, VecDeque};

use crate::limits::{PRODUCER_BATCHES_KEPT, PRODUCERS_PER_PARTITION_MAX};
use crate::storage::batch::BatchHeader;

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

/// Why an idempotent batch was refused; mapped to Kafka codes in `kafka::error`.
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
}

#[derive(Debug, Clone, Copy)]
struct BatchRecord {
    first_seq: i32,
    last_seq: i32,
    /// -1 while the write is pending.
    base_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchRecord>,
    /// Highest offset written by the producer, for eviction (oldest first).
    last_offset: i64,
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

/// See the module documentation.
#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
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

    /// Checks the batch whose header is `header`; on `Append` the batch is recorded as pending.
    pub fn check_and_reserve(&mut self, header: &BatchHeader) -> SequenceCheck {
        let producer_id = header.producer_id.get();
        if producer_id < 0 {
            return SequenceCheck::NotIdempotent;
        }
        let epoch = header.producer_epoch.get();
        let (first_seq, last_seq) = sequence_range(header);
        let pending = BatchRecord {
            first_seq,
            last_seq,
            base_offset: -1,
        };
        let Some(entry) = self.producers.get_mut(&producer_id) else {
            if first_seq != 0 {
                return SequenceCheck::Refused(ProducerError::UnknownProducer {
                    producer_id,
                    got: first_seq,
                });
            }
            self.evict_if_full();
            let mut entry = ProducerEntry {
                epoch,
                ..Default::default()
            };
            entry.push(pending);
            self.producers.insert(producer_id, entry);
            return SequenceCheck::Append;
        };
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
            entry.epoch = epoch;
            entry.batches.clear();
            entry.push(pending);
            return SequenceCheck::Append;
        }
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
        entry.push(pending);
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
            }
            entry.last_offset = entry.last_offset.max(last_offset);
        }
    }

    /// Forgets a pending batch whose write failed, so the client's retry is in sequence again.
    pub fn revert(&mut self, header: &BatchHeader) {
        let producer_id = header.producer_id.get();
        let (first_seq, _) = sequence_range(header);
        if let Some(entry) = self.producers.get_mut(&producer_id) {
            entry
                .batches
                .retain(|b| !(b.first_seq == first_seq && b.base_offset < 0));
            if entry.batches.is_empty() && entry.last_offset == 0 {
                self.producers.remove(&producer_id);
            }
        }
    }

    /// Rebuilds state from a batch read back from the log (recovery), in log order.
    pub fn replay(&mut self, header: &BatchHeader) {
        let producer_id = header.producer_id.get();
        if producer_id < 0 {
            return;
        }
        let epoch = header.producer_epoch.get();
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
            return;
        }
        entry.push(BatchRecord {
            first_seq,
            last_seq,
            base_offset: header.base_offset.get(),
        });
        entry.last_offset = entry.last_offset.max(header.last_offset());
    }

    /// Keeps the table bounded: past the limit, the producer that wrote least recently goes.
    fn evict_if_full(&mut self) {
        if self.producers.len() < PRODUCERS_PER_PARTITION_MAX {
            return;
        }
        if let Some((&oldest, _)) = self.producers.iter().min_by_key(|(_, e)| e.last_offset) {
            self.producers.remove(&oldest);
        }
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
        assert_eq!(table.check_and_reserve(view(&b0)), SequenceCheck::Append);
        // A retry while the first write is in flight.
        assert_eq!(
            table.check_and_reserve(view(&b0)),
            SequenceCheck::DuplicateInFlight
        );
        table.confirm(view(&b0), 100, 102);
        assert_eq!(
            table.check_and_reserve(view(&b0)),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        let b1 = header(7, 0, 3, 2);
        assert_eq!(table.check_and_reserve(view(&b1)), SequenceCheck::Append);
        let gap = header(7, 0, 9, 1);
        assert!(matches!(
            table.check_and_reserve(view(&gap)),
            SequenceCheck::Refused(ProducerError::OutOfOrder {
                expected: 5,
                got: 9,
                ..
            })
        ));
        // A failed write is forgotten: the retry of the same sequence is in order again.
        table.revert(view(&b1));
        assert_eq!(table.check_and_reserve(view(&b1)), SequenceCheck::Append);
    }

    #[test]
    fn epochs_and_unknown_producers() {
        let mut table = ProducerStateTable::new();
        assert!(matches!(
            table.check_and_reserve(view(&header(1, 0, 5, 1))),
            SequenceCheck::Refused(ProducerError::UnknownProducer { .. })
        ));
        assert_eq!(
            table.check_and_reserve(view(&header(1, 2, 0, 1))),
            SequenceCheck::Append
        );
        assert!(matches!(
            table.check_and_reserve(view(&header(1, 1, 1, 1))),
            SequenceCheck::Refused(ProducerError::StaleEpoch { .. })
        ));
        assert!(matches!(
            table.check_and_reserve(view(&header(1, 3, 4, 1))),
            SequenceCheck::Refused(ProducerError::OutOfOrder { .. })
        ));
        assert_eq!(
            table.check_and_reserve(view(&header(1, 3, 0, 1))),
            SequenceCheck::Append
        );
        assert_eq!(
            table.check_and_reserve(view(&header(-1, -1, -1, 1))),
            SequenceCheck::NotIdempotent
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_replay_rebuilds() {
        let mut table = ProducerStateTable::new();
        for seq in 0..8 {
            let b = header(3, 0, seq, 1);
            assert_eq!(table.check_and_reserve(view(&b)), SequenceCheck::Append);
            table.confirm(view(&b), i64::from(seq), i64::from(seq));
        }
        // Batch 2 has been forgotten, batch 3 is remembered.
        assert!(matches!(
            table.check_and_reserve(view(&header(3, 0, 2, 1))),
            SequenceCheck::Refused(_)
        ));
        assert_eq!(
            table.check_and_reserve(view(&header(3, 0, 3, 1))),
            SequenceCheck::Duplicate { base_offset: 3 }
        );

        let mut rebuilt = ProducerStateTable::new();
        for seq in 0..8 {
            let mut b = header(3, 0, seq, 1);
            b[0..8].copy_from_slice(&i64::from(seq).to_be_bytes());
            rebuilt.replay(view(&b));
        }
        assert_eq!(
            rebuilt.check_and_reserve(view(&header(3, 0, 7, 1))),
            SequenceCheck::Duplicate { base_offset: 7 }
        );
        assert_eq!(
            rebuilt.check_and_reserve(view(&header(3, 0, 8, 1))),
            SequenceCheck::Append
        );
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(next_sequence(i32::MAX), 0);
        let mut table = ProducerStateTable::new();
        let mut b = header(9, 0, 0, 1);
        table.check_and_reserve(view(&b));
        table.confirm(view(&b), 0, 0);
        b = header(9, 0, 1, 1);
        assert_eq!(table.check_and_reserve(view(&b)), SequenceCheck::Append);
    }
}
