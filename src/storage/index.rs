//! Sparse offset index and time index of one segment, in Kafka's file formats.
//!
//! `.index`: entries of (relative offset u32, position u32), big-endian, 8 bytes. As in Kafka,
//! an entry names the *last* offset of a batch and that batch's position; one is added when
//! more than `index.interval.bytes` were appended since the previous entry.
//! `.timeindex`: entries of (timestamp i64, relative offset u32), 12 bytes, timestamps
//! non-decreasing (max timestamp so far, and the offset where it was reached).
//!
//! Held in memory by the segment (owned by the log's shard); written to files when the
//! segment is rolled or the log closed, and validated (or rebuilt from the log) on open. No
//! awaiting here.

/// In-memory sparse offset index of one segment.
#[derive(Debug, Default, Clone)]
pub(crate) struct OffsetIndex {
    pub(crate) entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub(crate) fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(o, p)) = self.entries.last() {
            assert!(
                relative_offset > o && position > p,
                "offset index must grow"
            );
        }
        self.entries.push((relative_offset, position));
    }

    /// Position from which to scan for `relative_offset`: that of the last entry whose offset
    /// is `<=` it (such an entry's batch ends at or before the target), else 0.
    pub(crate) fn lookup(&self, relative_offset: u32) -> u32 {
        let i = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if i == 0 { 0 } else { self.entries[i - 1].1 }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Parses an index file; `None` when its shape is damaged (size, ordering, positions).
    pub(crate) fn decode(bytes: &[u8], log_size_bytes: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(8) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(8) {
            let o = u32::from_be_bytes(chunk[..4].try_into().ok()?);
            let p = u32::from_be_bytes(chunk[4..].try_into().ok()?);
            if let Some(&(lo, lp)) = index.entries.last()
                && (o <= lo || p <= lp)
            {
                return None;
            }
            if p as u64 >= log_size_bytes {
                return None;
            }
            index.entries.push((o, p));
        }
        Some(index)
    }
}

/// In-memory sparse time index of one segment.
#[derive(Debug, Default, Clone)]
pub(crate) struct TimeIndex {
    pub(crate) entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Adds an entry if it raises the max timestamp.
    pub(crate) fn maybe_push(&mut self, timestamp_ms: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(&(t, o)) if timestamp_ms <= t || relative_offset <= o => {}
            _ => self.entries.push((timestamp_ms, relative_offset)),
        }
    }

    /// Offset from which no earlier batch can have a timestamp `>= timestamp_ms`: that of the
    /// last entry with a smaller timestamp (scan from the batch after it), else None (scan
    /// from the start).
    pub(crate) fn lookup(&self, timestamp_ms: i64) -> Option<u32> {
        let i = self.entries.partition_point(|&(t, _)| t < timestamp_ms);
        if i == 0 {
            None
        } else {
            Some(self.entries[i - 1].1)
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8], relative_offset_end: u32) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(12) {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(12) {
            let t = i64::from_be_bytes(chunk[..8].try_into().ok()?);
            let o = u32::from_be_bytes(chunk[8..].try_into().ok()?);
            if let Some(&(lt, lo)) = index.entries.last()
                && (t < lt || o < lo)
            {
                return None;
            }
            if o >= relative_offset_end {
                return None;
            }
            index.entries.push((t, o));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_roundtrip_and_lookup() {
        let mut ix = OffsetIndex::default();
        ix.push(9, 4100);
        ix.push(19, 8300);
        assert_eq!(ix.lookup(0), 0);
        assert_eq!(ix.lookup(9), 4100);
        assert_eq!(ix.lookup(15), 4100);
        assert_eq!(ix.lookup(25), 8300);
        let decoded = OffsetIndex::decode(&ix.encode(), 10_000).unwrap();
        assert_eq!(decoded.entries, ix.entries);
        assert!(OffsetIndex::decode(&ix.encode(), 5000).is_none());
        assert!(OffsetIndex::decode(&ix.encode()[..7], 10_000).is_none());
    }

    #[test]
    fn time_index_roundtrip_and_lookup() {
        let mut ix = TimeIndex::default();
        ix.maybe_push(100, 0);
        ix.maybe_push(90, 5);
        ix.maybe_push(200, 10);
        assert_eq!(ix.entries.len(), 2);
        assert_eq!(ix.lookup(50), None);
        assert_eq!(ix.lookup(150), Some(0));
        assert_eq!(ix.lookup(250), Some(10));
        let d = TimeIndex::decode(&ix.encode(), 11).unwrap();
        assert_eq!(d.entries, ix.entries);
        assert!(TimeIndex::decode(&ix.encode(), 10).is_none());
    }
}
