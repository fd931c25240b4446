//! The leader epoch cache of one partition (Kafka's `LeaderEpochFileCache`): the entries
//! (leader epoch, start offset) of every epoch that wrote to this log, strictly increasing in
//! both, and the answers of OffsetsForLeaderEpoch (KIP-101, KIP-279) computed from them.
//!
//! Owner: the `PartitionLog` of the partition's shard, inside a `RefCell` never borrowed across
//! an await. This module is pure (no I/O, no awaiting): the log persists the cache as
//! `leader-epoch-checkpoint` in the partition directory, in Kafka's text format (`encode`,
//! `decode`), with `write_file_atomic` whenever it changes, and reads it back at open.
//!
//! Lifecycle: loaded at open (entries starting at or past the recovered log end are dropped,
//! as Kafka's `truncateFromEnd(logEndOffset)` at load); a leader's `set_leader_epoch` and a
//! follower's replica appends add entries (`assign`); truncation removes entries from the end
//! (`truncate_from_end`), log start moves (retention, DeleteRecords) from the start
//! (`truncate_from_start`, which keeps an entry at the new start), and a full truncation
//! clears it.

/// Kafka's UNDEFINED_EPOCH.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's UNDEFINED_EPOCH_OFFSET.
pub const UNDEFINED_OFFSET: i64 = -1;
/// The checkpoint's file name in the partition directory (Kafka's).
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const CHECKPOINT_VERSION: i32 = 0;

/// One epoch and the first offset it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// Leader epoch.
    pub epoch: i32,
    /// Offset of the first batch written in that epoch.
    pub start_offset: i64,
}

/// A checkpoint file that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not Kafka's text format, an unknown version, a count that does not match, or entries
    /// that do not increase.
    #[error("leader-epoch-checkpoint is malformed: {0}")]
    Malformed(&'static str),
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Whether no epoch is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Adds (epoch, start_offset) if `epoch` is newer than the latest entry (and both are not
    /// negative); an offset at or below the latest entry's start replaces entries that start
    /// there or later (they wrote nothing). Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|last| last.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// OffsetsForLeaderEpoch's answer for `requested`, as Kafka's `endOffsetFor`: for the
    /// latest epoch, (it, `log_end_offset`); for an older epoch, (the largest cached epoch at
    /// or below it, the start offset of the first entry after that); below every cached epoch,
    /// (`requested`, the first entry's start offset), since what came before is gone from the
    /// log; for an epoch above the latest, an undefined epoch, or an empty cache,
    /// (UNDEFINED_EPOCH, UNDEFINED_OFFSET).
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            Some(floor) => (floor.epoch, next.start_offset),
            None => (requested, next.start_offset),
        }
    }

    /// Removes the entries that start at or after `end_offset` (the log was truncated there).
    /// Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start_offset`: entries that start at or before it go, except
    /// the newest of them, which now starts at `start_offset` (so the epoch holding the new
    /// log start stays known). Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let at_or_before = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(last) = at_or_before.checked_sub(1) else {
            return false;
        };
        let kept = EpochEntry {
            epoch: self.entries[last].epoch,
            start_offset,
        };
        let changed = last > 0 || self.entries[0] != kept;
        self.entries.drain(..last);
        self.entries[0] = kept;
        changed
    }

    /// Forgets every entry. Returns whether the cache changed.
    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// Kafka's checkpoint text: the version (`0`), the entry count, then one `epoch offset`
    /// line per entry, each line ending in a newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out.into_bytes()
    }

    /// Reads a checkpoint written by `encode` (or by Kafka). Entries must increase strictly in
    /// epoch and start offset.
    pub fn decode(bytes: &[u8]) -> Result<EpochCache, CheckpointError> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| CheckpointError::Malformed("not text"))?;
        let mut lines = text.lines();
        let version = lines
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
            .ok_or(CheckpointError::Malformed("no version line"))?;
        if version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Malformed("unknown version"));
        }
        let count = lines
            .next()
            .and_then(|l| l.trim().parse::<usize>().ok())
            .ok_or(CheckpointError::Malformed("no count line"))?;
        let mut cache = EpochCache::new();
        for _ in 0..count {
            let line = lines
                .next()
                .ok_or(CheckpointError::Malformed("fewer entries than the count"))?;
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(CheckpointError::Malformed("entry is not `epoch offset`"));
            };
            let epoch = epoch
                .parse::<i32>()
                .map_err(|_| CheckpointError::Malformed("epoch is not a number"))?;
            let start_offset = offset
                .parse::<i64>()
                .map_err(|_| CheckpointError::Malformed("offset is not a number"))?;
            let increases = cache
                .entries
                .last()
                .is_none_or(|l| epoch > l.epoch && start_offset > l.start_offset);
            if epoch < 0 || start_offset < 0 || !increases {
                return Err(CheckpointError::Malformed("entries do not increase"));
            }
            cache.entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(CheckpointError::Malformed("more entries than the count"));
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::new();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        c
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let empty = EpochCache::new();
        assert_eq!(empty.end_offset_for(0, 10), (-1, -1));
        assert_eq!(empty.end_offset_for(-1, 10), (-1, -1));
        let c = cache(&[(2, 10), (4, 25), (7, 40)]);
        // The latest epoch: the log end.
        assert_eq!(c.end_offset_for(7, 55), (7, 55));
        // A cached older epoch: the next entry's start.
        assert_eq!(c.end_offset_for(2, 55), (2, 25));
        assert_eq!(c.end_offset_for(4, 55), (4, 40));
        // An epoch between entries: the floor epoch, ending where the next one starts.
        assert_eq!(c.end_offset_for(3, 55), (2, 25));
        assert_eq!(c.end_offset_for(6, 55), (4, 40));
        // Below every entry: the requested epoch and the first start offset.
        assert_eq!(c.end_offset_for(1, 55), (1, 10));
        // Above the latest, or undefined: undefined.
        assert_eq!(c.end_offset_for(8, 55), (-1, -1));
        assert_eq!(c.end_offset_for(-1, 55), (-1, -1));
    }

    #[test]
    fn assign_only_takes_newer_epochs() {
        let mut c = cache(&[(1, 0), (3, 5)]);
        assert!(!c.assign(3, 9), "same epoch");
        assert!(!c.assign(2, 9), "older epoch");
        assert!(!c.assign(-1, 9), "undefined epoch");
        assert!(
            c.assign(4, 5),
            "a new epoch at the same start replaces the empty one"
        );
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 4,
                    start_offset: 5
                }
            ]
        );
        assert_eq!(c.latest_epoch(), Some(4));
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(1, 0), (3, 5), (5, 20)]);
        assert!(!c.truncate_from_end(21));
        assert!(c.truncate_from_end(20));
        assert_eq!(c.latest_epoch(), Some(3));
        let mut c = cache(&[(1, 0), (3, 5), (5, 20)]);
        assert!(c.truncate_from_start(7));
        assert_eq!(
            c.entries()[0],
            EpochEntry {
                epoch: 3,
                start_offset: 7
            }
        );
        assert_eq!(c.entries().len(), 2);
        assert!(!c.truncate_from_start(7));
        assert!(!c.truncate_from_start(2), "before the first entry: nothing");
        assert!(c.truncate_from_start(20));
        assert_eq!(c.entries().len(), 1);
        assert!(c.clear());
        assert!(c.is_empty());
    }

    #[test]
    fn checkpoint_round_trip_and_refusals() {
        let c = cache(&[(0, 0), (2, 17), (9, 1_000_000_000_000)]);
        let bytes = c.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "0\n3\n0 0\n2 17\n9 1000000000000\n"
        );
        assert_eq!(EpochCache::decode(&bytes).unwrap(), c);
        assert_eq!(EpochCache::decode(b"0\n0\n").unwrap(), EpochCache::new());
        for bad in [
            &b""[..],
            b"1\n0\n",
            b"0\n2\n1 5\n",
            b"0\n1\n1 5\n2 6\n",
            b"0\n2\n2 5\n1 6\n",
            b"0\n2\n1 5\n2 5\n",
            b"0\n1\nx 5\n",
            b"0\n1\n1 5 7\n",
        ] {
            assert!(EpochCache::decode(bad).is_err(), "{bad:?}");
        }
    }
}
