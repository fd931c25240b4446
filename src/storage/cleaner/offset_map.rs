//! The cleaner's key-hash to latest-offset map (Kafka's `SkimpyOffsetMap`): open addressing
//! over one allocation sized from `log.cleaner.dedupe.buffer.size`, 24 bytes a slot (a 128-bit
//! key hash and an offset), filled up to `log.cleaner.io.buffer.load.factor`. When it is full
//! the cleaner stops the pass there and cleans the rest in the next pass, so memory stays at
//! the configured size whatever the number of keys.
//!
//! Owner: the shard's `Cleaner`, one map per shard, reused by every cleaning (cleared between
//! them), allocated on the first cleaning. !Send, no awaiting.

/// Bytes one slot takes.
pub const SLOT_BYTES: usize = 24;

#[derive(Debug)]
pub struct OffsetMap {
    hashes: Vec<u128>,
    /// -1 marks an empty slot.
    offsets: Vec<i64>,
    entries: usize,
    entries_max: usize,
    /// The largest offset put since the last clear, -1 when empty.
    latest_offset: i64,
}

impl OffsetMap {
    /// A map in `bytes` of memory, filled up to `load_factor`.
    pub fn new(bytes: usize, load_factor: f64) -> OffsetMap {
        let slots = (bytes / SLOT_BYTES).max(2);
        let entries_max = ((slots as f64 * load_factor) as usize).clamp(1, slots - 1);
        OffsetMap {
            hashes: vec![0; slots],
            offsets: vec![-1; slots],
            entries: 0,
            entries_max,
            latest_offset: -1,
        }
    }

    pub fn clear(&mut self) {
        self.offsets.fill(-1);
        self.entries = 0;
        self.latest_offset = -1;
    }

    pub fn is_full(&self) -> bool {
        self.entries >= self.entries_max
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Keys the map can hold.
    pub fn capacity(&self) -> usize {
        self.entries_max
    }

    pub fn latest_offset(&self) -> i64 {
        self.latest_offset
    }

    fn slot(&self, hash: u128) -> usize {
        let mut at = (hash as u64 as usize) % self.hashes.len();
        while self.offsets[at] >= 0 && self.hashes[at] != hash {
            at += 1;
            if at == self.hashes.len() {
                at = 0;
            }
        }
        at
    }

    /// Records `offset` as the latest for `hash`. Returns false, changing nothing, when the
    /// key is new and the map is full.
    pub fn put(&mut self, hash: u128, offset: i64) -> bool {
        let at = self.slot(hash);
        if self.offsets[at] < 0 {
            if self.is_full() {
                return false;
            }
            self.entries += 1;
            self.hashes[at] = hash;
        }
        self.offsets[at] = self.offsets[at].max(offset);
        self.latest_offset = self.latest_offset.max(offset);
        true
    }

    /// The latest offset recorded for `hash`.
    pub fn get(&self, hash: u128) -> Option<i64> {
        let at = self.slot(hash);
        (self.offsets[at] >= 0).then_some(self.offsets[at])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_and_stops_when_full() {
        let mut map = OffsetMap::new(SLOT_BYTES * 10, 0.5);
        assert_eq!(map.capacity(), 5);
        for key in 0..5u128 {
            assert!(map.put(key * 1_000_003, key as i64));
        }
        assert!(map.is_full());
        assert!(!map.put(99, 100), "a new key does not fit");
        assert!(map.put(0, 50), "a known key is updated");
        assert_eq!(map.get(0), Some(50));
        assert_eq!(map.get(2 * 1_000_003), Some(2));
        assert_eq!(map.get(7), None);
        assert_eq!(map.latest_offset(), 50);
        map.clear();
        assert!(map.is_empty());
        assert_eq!(map.get(0), None);
    }
}
