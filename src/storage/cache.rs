//! Per-shard cache of recent batches, bounded in bytes, serving the head of every log of the
//! shard from memory.
//!
//! One `ShardCache` per shard, shared by that shard's logs through `Rc` (`for_current_shard`
//! hands out the thread's instance; executors are one per thread). !Send, no awaiting.
//!
//! An entry holds the client's original batch bytes (a `Bytes` slice of the Produce request,
//! reference counted, not copied) plus the few fields the broker patched (base offset, the
//! leader epoch once the log has one, and for LogAppendTime the time and new CRC). A read hands out, per batch, a 61-byte patched header
//! (all headers of one read share one allocation) and the original bytes after the header, so
//! an append costs no allocation or copy for the cache. Eviction is FIFO by insertion, which
//! for a log's head is the same as oldest-first. The byte bound counts batch bytes; the
//! request buffer a batch was sliced from stays alive while any of its batches is cached.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::batch::{BATCH_HEADER_BYTES, patch_header_copy};
use crate::limits::STORAGE_SHARD_CACHE_BYTES_MAX;

#[derive(Debug)]
struct Entry {
    last_offset: i64,
    data: Bytes,
    leader_epoch: Option<i32>,
    log_append: Option<(i64, u32)>,
}

#[derive(Debug, Default)]
struct Inner {
    map: BTreeMap<(u64, i64), Entry>,
    fifo: VecDeque<(u64, i64)>,
    bytes: usize,
}

/// Byte-bounded cache of recent batches shared by the logs of one shard.
#[derive(Debug)]
pub struct ShardCache {
    bytes_max: usize,
    inner: RefCell<Inner>,
    next_log_id: Cell<u64>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

thread_local! {
    static SHARD_CACHE: Rc<ShardCache> = Rc::new(ShardCache::new(STORAGE_SHARD_CACHE_BYTES_MAX));
}

impl ShardCache {
    pub fn new(bytes_max: usize) -> ShardCache {
        ShardCache {
            bytes_max,
            inner: RefCell::default(),
            next_log_id: Cell::new(1),
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    /// The cache of the shard running on this thread (bounded by
    /// `STORAGE_SHARD_CACHE_BYTES_MAX`).
    pub fn for_current_shard() -> Rc<ShardCache> {
        SHARD_CACHE.with(Rc::clone)
    }

    pub(crate) fn register_log(&self) -> u64 {
        let id = self.next_log_id.get();
        self.next_log_id.set(id + 1);
        id
    }

    pub fn bytes(&self) -> usize {
        self.inner.borrow().bytes
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// (hits, misses) of `read` so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    pub(crate) fn insert(
        &self,
        log: u64,
        base_offset: i64,
        last_offset: i64,
        data: Bytes,
        leader_epoch: Option<i32>,
        log_append: Option<(i64, u32)>,
    ) {
        if data.len() > self.bytes_max {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        inner.bytes += data.len();
        let old = inner.map.insert(
            (log, base_offset),
            Entry {
                last_offset,
                data,
                leader_epoch,
                log_append,
            },
        );
        if let Some(old) = old {
            inner.bytes -= old.data.len();
        }
        inner.fifo.push_back((log, base_offset));
        while inner.bytes > self.bytes_max {
            let Some(key) = inner.fifo.pop_front() else {
                break;
            };
            if let Some(e) = inner.map.remove(&key) {
                inner.bytes -= e.data.len();
            }
        }
        // Keys removed out of FIFO order (rollback, close) leave stale FIFO slots; compact
        // them so the queue stays bounded by the live entries.
        if inner.fifo.len() > 2 * inner.map.len() + 1024 {
            let Inner { map, fifo, .. } = &mut *inner;
            fifo.retain(|k| map.contains_key(k));
        }
    }

    /// Removes the log's entries with base offset `>= from_offset`.
    pub(crate) fn remove_from(&self, log: u64, from_offset: i64) {
        self.remove_range(log, from_offset, i64::MAX);
    }

    /// Removes the log's entries with base offset in `[from_offset, to_offset]` (the log
    /// cleaner, after it replaced the segments holding them).
    pub(crate) fn remove_range(&self, log: u64, from_offset: i64, to_offset: i64) {
        let mut inner = self.inner.borrow_mut();
        let keys: Vec<_> = inner
            .map
            .range((log, from_offset)..=(log, to_offset))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(e) = inner.map.remove(&k) {
                inner.bytes -= e.data.len();
            }
        }
    }

    /// Whole cached batches from the one containing `offset`, contiguous, below `end_offset`,
    /// until `max_bytes` (at least one batch). `None` if the batch is not cached.
    pub(crate) fn read(
        &self,
        log: u64,
        offset: i64,
        max_bytes: u32,
        end_offset: i64,
    ) -> Option<Vec<Bytes>> {
        let inner = self.inner.borrow();
        let (&(_, first_base), first) = inner
            .map
            .range((log, i64::MIN)..=(log, offset))
            .next_back()?;
        if first.last_offset < offset || first_base >= end_offset {
            self.misses.set(self.misses.get() + 1);
            return None;
        }
        let mut picked: Vec<(i64, &Entry)> = Vec::new();
        let mut total = 0usize;
        let mut expect = first_base;
        for (&(_, base), e) in inner.map.range((log, first_base)..=(log, i64::MAX)) {
            if base != expect || base >= end_offset {
                break;
            }
            if !picked.is_empty() && total + e.data.len() > max_bytes as usize {
                break;
            }
            total += e.data.len();
            expect = e.last_offset + 1;
            picked.push((base, e));
        }
        self.hits.set(self.hits.get() + 1);
        let mut headers = BytesMut::with_capacity(picked.len() * BATCH_HEADER_BYTES);
        for (base, e) in &picked {
            let start = headers.len();
            headers.extend_from_slice(&e.data[..BATCH_HEADER_BYTES]);
            patch_header_copy(&mut headers[start..], *base, e.leader_epoch, e.log_append);
        }
        let headers = headers.freeze();
        let mut chunks = Vec::with_capacity(picked.len() * 2);
        for (i, (_, e)) in picked.iter().enumerate() {
            chunks.push(headers.slice(i * BATCH_HEADER_BYTES..(i + 1) * BATCH_HEADER_BYTES));
            chunks.push(e.data.slice(BATCH_HEADER_BYTES..));
        }
        Some(chunks)
    }
}
