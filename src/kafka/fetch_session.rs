//! Incremental fetch sessions (KIP-227): the broker remembers, per session, which partitions a
//! fetcher reads and what it last told it about each, so that an incremental Fetch (v7+) names
//! only the partitions whose fetch position changed and its response carries only the
//! partitions with something new.
//!
//! Owner: one `FetchSessionCache` per shard (`with_shard_cache`, a thread-local: executors are
//! one per thread), used only by `fetch` on the connection's shard. This is protocol state, so
//! it lives in the protocol front and no service knows of it. A connection lives on the shard
//! that accepted it (SO_REUSEPORT), so a session is only ever used on the shard that created
//! it; a client that reconnects and lands on another shard gets FETCH_SESSION_ID_NOT_FOUND and
//! starts a new session with a full fetch, which every client handles. Session ids carry the
//! shard (`id % shard_count`), so ids are unique in the broker. The configured slots
//! (`max.incremental.fetch.session.cache.slots`) are shared out over the shards, rounded up,
//! as Kafka shares its slots over its cache shards.
//!
//! Lifecycle, as in Kafka's FetchSessionCache: a full fetch with epoch 0 creates a session
//! when there is room (or when it may evict one); each incremental fetch must carry the
//! session's expected epoch (else INVALID_FETCH_SESSION_EPOCH; an unknown id gets
//! FETCH_SESSION_ID_NOT_FOUND), updates and adds the partitions it names, removes the
//! forgotten ones, and moves the epoch on; a full fetch naming a session closes it, and epoch
//! -1 closes it without creating another. A session that has lost its last partition closes.
//!
//! Eviction (Kafka's rules): a new session may take the place of one unused for longer than
//! `SESSION_EVICTION_MS`, else of the least valuable session old enough to be evicted (created
//! more than `SESSION_EVICTION_MS` ago; ordered by privileged first, then partition count):
//! only if the new one is privileged (a follower's) and the old one is not, or the new one has
//! more partitions. Kafka decides "old enough" when a session is touched; here it is decided
//! when a candidate is needed, from the same two times.
//!
//! Memory: at most `slots` sessions and `FETCH_SESSION_PARTITIONS_MAX` cached partitions per
//! shard (Kafka bounds only the sessions; one request may carry a great many partitions). A
//! session creation that would pass the partition bound evicts as above or is refused (the
//! fetch is answered sessionless); an incremental fetch that would pass it closes its session
//! and is answered FETCH_SESSION_ID_NOT_FOUND, after which the client starts over.
//!
//! Nothing here awaits: callers take the cache around their awaits, never across one (the
//! long poll happens between `begin` and `finish_incremental`/`create`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;

use crate::limits::FETCH_SESSION_PARTITIONS_MAX;

/// The session id that means "no session".
pub const INVALID_SESSION_ID: i32 = 0;
/// The epoch of a full fetch that asks for a new session.
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a full fetch that closes its session and wants none.
pub const FINAL_EPOCH: i32 = -1;
/// How long a session is safe from eviction after it was created, and how long unused makes
/// it stale (Kafka's fixed `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`).
pub const SESSION_EVICTION_MS: u64 = 120_000;

/// The epoch that follows `epoch` (Kafka's `FetchMetadata.nextEpoch`): wraps to 1, never
/// back to the initial epoch.
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// One partition, by topic name (Fetch v12 and below name topics; ids came with v13).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: Rc<str>,
    pub partition: i32,
}

/// What a fetcher asks of one partition: the request fields a session remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    pub current_leader_epoch: i32,
}

/// What a response said about one partition, as far as deciding whether the next response
/// must carry it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionAnswer {
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Whether the response carries records for it.
    pub has_records: bool,
}

/// What the fetcher was last told about a partition.
#[derive(Debug, Clone, Copy)]
struct Sent {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

impl Sent {
    /// The state of a partition just added by an incremental fetch: nothing was sent yet, so
    /// the next response carries it whatever it holds.
    const NOTHING: Sent = Sent {
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
    };

    fn of(answer: &PartitionAnswer) -> Sent {
        Sent {
            // After an error the fetcher must hear of the partition again once it is gone.
            high_watermark: if answer.error_code != 0 {
                -1
            } else {
                answer.high_watermark
            },
            last_stable_offset: answer.last_stable_offset,
            log_start_offset: answer.log_start_offset,
        }
    }
}

#[derive(Debug, Clone)]
struct CachedPartition {
    key: PartitionKey,
    params: FetchParams,
    sent: Sent,
}

#[derive(Debug)]
struct FetchSession {
    privileged: bool,
    /// The epoch the next incremental request must carry.
    epoch: i32,
    created_ms: u64,
    last_used_ms: u64,
    /// In fetch order: partitions that returned data go to the back, so that the response
    /// byte budget serves every partition in turn (as Kafka does).
    partitions: Vec<CachedPartition>,
    positions: HashMap<PartitionKey, usize>,
}

impl FetchSession {
    fn reindex(&mut self) {
        self.positions.clear();
        for (i, p) in self.partitions.iter().enumerate() {
            self.positions.insert(p.key.clone(), i);
        }
    }
}

/// How `begin` says to serve a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// Serve the request's own partitions. `create`: offer the answers to `create` afterwards
    /// (a full fetch with epoch 0); otherwise the response says session id 0.
    Full { create: bool },
    /// Serve these partitions, the whole session in fetch order, then `finish_incremental`.
    Incremental {
        session_id: i32,
        partitions: Vec<(PartitionKey, FetchParams)>,
    },
    /// Answer with this top-level error and no partitions.
    Error(i16),
}

/// The fetch sessions of one shard. See the module documentation.
#[derive(Debug)]
pub struct FetchSessionCache {
    slots: usize,
    partitions_max: usize,
    eviction_ms: u64,
    shard: u32,
    shard_count: u32,
    sessions: HashMap<i32, FetchSession>,
    partitions_cached: usize,
    evictions: u64,
}

impl FetchSessionCache {
    /// A cache of at most `slots` sessions and `partitions_max` cached partitions, for shard
    /// `shard` of `shard_count`.
    pub fn new(
        slots: usize,
        partitions_max: usize,
        eviction_ms: u64,
        shard: u32,
        shard_count: u32,
    ) -> FetchSessionCache {
        FetchSessionCache {
            slots,
            partitions_max,
            eviction_ms,
            shard,
            shard_count: shard_count.max(1),
            sessions: HashMap::new(),
            partitions_cached: 0,
            evictions: 0,
        }
    }

    /// Sessions open.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Partitions cached over all sessions.
    pub fn partitions_cached(&self) -> usize {
        self.partitions_cached
    }

    /// Sessions evicted so far to make room for others.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The epoch session `id` expects next, if it exists.
    pub fn expected_epoch(&self, id: i32) -> Option<i32> {
        self.sessions.get(&id).map(|s| s.epoch)
    }

    /// Decides how to serve a Fetch with `session_id` and `epoch` naming `requested`
    /// partitions and forgetting `forgotten`, and applies it to the session (Kafka's
    /// `FetchManager.newContext`).
    pub fn begin(
        &mut self,
        now_ms: u64,
        session_id: i32,
        epoch: i32,
        requested: &[(PartitionKey, FetchParams)],
        forgotten: &[PartitionKey],
    ) -> Begin {
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if session_id != INVALID_SESSION_ID {
                self.remove(session_id);
            }
            return Begin::Full {
                create: epoch == INITIAL_EPOCH,
            };
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Begin::Error(ResponseError::FetchSessionIdNotFound.code());
        };
        if session.epoch != epoch {
            return Begin::Error(ResponseError::InvalidFetchSessionEpoch.code());
        }
        let before = session.partitions.len();
        for (key, params) in requested {
            match session.positions.get(key) {
                Some(&i) => session.partitions[i].params = *params,
                None => {
                    session
                        .positions
                        .insert(key.clone(), session.partitions.len());
                    session.partitions.push(CachedPartition {
                        key: key.clone(),
                        params: *params,
                        sent: Sent::NOTHING,
                    });
                }
            }
        }
        if !forgotten.is_empty() {
            let gone: std::collections::HashSet<&PartitionKey> = forgotten.iter().collect();
            let had = session.partitions.len();
            session.partitions.retain(|p| !gone.contains(&p.key));
            if session.partitions.len() != had {
                session.reindex();
            }
        }
        let after = session.partitions.len();
        self.partitions_cached = self.partitions_cached - before + after;
        if after == 0 {
            self.remove(session_id);
            return Begin::Full { create: false };
        }
        if self.partitions_cached > self.partitions_max {
            self.remove(session_id);
            return Begin::Error(ResponseError::FetchSessionIdNotFound.code());
        }
        let session = self.sessions.get_mut(&session_id).expect("session");
        session.last_used_ms = now_ms;
        session.epoch = next_epoch(session.epoch);
        Begin::Incremental {
            session_id,
            partitions: session
                .partitions
                .iter()
                .map(|p| (p.key.clone(), p.params))
                .collect(),
        }
    }

    /// After a full fetch with epoch 0 was served: creates a session of `partitions` (the
    /// request's, with what the response said of each) if there is room or a session may be
    /// evicted for it, and returns its id, or `INVALID_SESSION_ID`.
    pub fn create(
        &mut self,
        now_ms: u64,
        privileged: bool,
        partitions: Vec<(PartitionKey, FetchParams, PartitionAnswer)>,
    ) -> i32 {
        let size = partitions.len();
        if self.slots == 0 || size > self.partitions_max {
            return INVALID_SESSION_ID;
        }
        while self.sessions.len() >= self.slots
            || self.partitions_cached + size > self.partitions_max
        {
            if !self.try_evict(now_ms, privileged, size) {
                return INVALID_SESSION_ID;
            }
        }
        let id = self.new_session_id();
        let mut session = FetchSession {
            privileged,
            epoch: next_epoch(INITIAL_EPOCH),
            created_ms: now_ms,
            last_used_ms: now_ms,
            partitions: partitions
                .into_iter()
                .map(|(key, params, answer)| CachedPartition {
                    key,
                    params,
                    sent: Sent::of(&answer),
                })
                .collect(),
            positions: HashMap::with_capacity(size),
        };
        session.reindex();
        // The same partition named twice in one request is one cached partition.
        if session.positions.len() != session.partitions.len() {
            let mut seen = std::collections::HashSet::new();
            session.partitions.retain(|p| seen.insert(p.key.clone()));
            session.reindex();
        }
        self.partitions_cached += session.partitions.len();
        self.sessions.insert(id, session);
        id
    }

    /// After an incremental fetch was served: compares each answer (in the order `begin`
    /// handed out) with what the fetcher was last told, remembers the new state, moves the
    /// partitions that returned data to the back, and says which answers the response must
    /// carry (Kafka's `CachedPartition.maybeUpdateResponseData`: records, a changed high
    /// watermark, last stable offset or log start offset, or an error). Errs with the
    /// top-level error if the session went or another request moved its epoch meanwhile.
    pub fn finish_incremental(
        &mut self,
        session_id: i32,
        request_epoch: i32,
        answers: &[(PartitionKey, PartitionAnswer)],
    ) -> Result<Vec<bool>, i16> {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Err(ResponseError::FetchSessionIdNotFound.code());
        };
        if session.epoch != next_epoch(request_epoch) {
            return Err(ResponseError::InvalidFetchSessionEpoch.code());
        }
        let mut include = Vec::with_capacity(answers.len());
        let mut moved = Vec::new();
        for (key, answer) in answers {
            let Some(&i) = session.positions.get(key) else {
                include.push(true);
                continue;
            };
            let cached = &mut session.partitions[i];
            let must = answer.has_records
                || answer.error_code != 0
                || cached.sent.high_watermark != answer.high_watermark
                || cached.sent.last_stable_offset != answer.last_stable_offset
                || cached.sent.log_start_offset != answer.log_start_offset;
            if must {
                cached.sent = Sent::of(answer);
            }
            if answer.has_records {
                moved.push(i);
            }
            include.push(must);
        }
        if !moved.is_empty() {
            let mut back = Vec::with_capacity(moved.len());
            let mut is_moved = vec![false; session.partitions.len()];
            for &i in &moved {
                is_moved[i] = true;
            }
            let mut front = Vec::with_capacity(session.partitions.len());
            for (i, p) in std::mem::take(&mut session.partitions)
                .into_iter()
                .enumerate()
            {
                if is_moved[i] {
                    back.push(p);
                } else {
                    front.push(p);
                }
            }
            front.extend(back);
            session.partitions = front;
            session.reindex();
        }
        Ok(include)
    }

    /// Closes session `id`, if it exists.
    pub fn remove(&mut self, id: i32) -> bool {
        match self.sessions.remove(&id) {
            Some(session) => {
                self.partitions_cached -= session.partitions.len();
                true
            }
            None => false,
        }
    }

    /// Kafka's `tryEvict`: the stalest session if unused for longer than the eviction time,
    /// else the least valuable session old enough to be evicted if the new one (`privileged`,
    /// `size` partitions) is worth more.
    fn try_evict(&mut self, now_ms: u64, privileged: bool, size: usize) -> bool {
        let stalest = self
            .sessions
            .iter()
            .min_by_key(|(id, s)| (s.last_used_ms, **id))
            .map(|(id, s)| (*id, s.last_used_ms));
        let Some((stalest_id, last_used_ms)) = stalest else {
            return false;
        };
        if now_ms.saturating_sub(last_used_ms) > self.eviction_ms {
            self.remove(stalest_id);
            self.evictions += 1;
            return true;
        }
        let eviction_ms = self.eviction_ms;
        let old_enough = |s: &FetchSession| now_ms.saturating_sub(s.created_ms) > eviction_ms;
        let candidate = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                if privileged {
                    !s.privileged || old_enough(s)
                } else {
                    old_enough(s)
                }
            })
            .min_by_key(|(id, s)| (s.privileged, s.partitions.len(), **id))
            .map(|(id, s)| (*id, s.privileged, s.partitions.len()));
        match candidate {
            Some((id, their_privileged, their_size))
                if (privileged, size) > (their_privileged, their_size) =>
            {
                self.remove(id);
                self.evictions += 1;
                true
            }
            _ => false,
        }
    }

    /// A new positive id, unused here, congruent to this shard modulo the shard count.
    fn new_session_id(&self) -> i32 {
        let stride = self.shard_count as u64;
        let classes = (i32::MAX as u64) / stride;
        loop {
            let random = (uuid::Uuid::new_v4().as_u128() as u64) % classes;
            let id = (random * stride + self.shard as u64) as i32;
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

thread_local! {
    static SHARD_CACHE: RefCell<Option<FetchSessionCache>> = const { RefCell::new(None) };
}

/// Runs `f` on this shard's cache, building it on first use with `configured_slots` (the
/// broker's `max.incremental.fetch.session.cache.slots`) shared out over `shard_count`
/// shards. `f` must not await (it cannot: it is a plain closure).
pub fn with_shard_cache<R>(
    configured_slots: u64,
    shard: u32,
    shard_count: u32,
    f: impl FnOnce(&mut FetchSessionCache) -> R,
) -> R {
    SHARD_CACHE.with(|cell| {
        let mut cache = cell.borrow_mut();
        let cache = cache.get_or_insert_with(|| {
            let slots = configured_slots.div_ceil(shard_count.max(1) as u64) as usize;
            FetchSessionCache::new(
                slots,
                FETCH_SESSION_PARTITIONS_MAX,
                SESSION_EVICTION_MS,
                shard,
                shard_count,
            )
        });
        f(cache)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, partition: i32) -> PartitionKey {
        PartitionKey {
            topic: Rc::from(topic),
            partition,
        }
    }

    fn params(fetch_offset: i64) -> FetchParams {
        FetchParams {
            fetch_offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
        }
    }

    fn answer(high_watermark: i64, has_records: bool) -> PartitionAnswer {
        PartitionAnswer {
            error_code: 0,
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset: 0,
            has_records,
        }
    }

    fn session_of(cache: &mut FetchSessionCache, now: u64, privileged: bool, n: i32) -> i32 {
        let parts = (0..n)
            .map(|p| (key("t", p), params(0), answer(0, false)))
            .collect();
        cache.create(now, privileged, parts)
    }

    const EVICT: u64 = SESSION_EVICTION_MS;

    #[test]
    fn epochs_advance_and_a_wrong_or_unknown_one_is_refused() {
        let mut cache = FetchSessionCache::new(10, 1000, EVICT, 0, 1);
        let id = session_of(&mut cache, 0, false, 3);
        assert_ne!(id, INVALID_SESSION_ID);
        assert_eq!(cache.expected_epoch(id), Some(1));
        let begun = cache.begin(1, id, 1, &[], &[]);
        assert!(
            matches!(begun, Begin::Incremental { ref partitions, .. } if partitions.len() == 3)
        );
        assert_eq!(cache.expected_epoch(id), Some(2));
        // Replaying epoch 1 (a duplicate request) is refused; the session stays.
        assert_eq!(
            cache.begin(2, id, 1, &[], &[]),
            Begin::Error(ResponseError::InvalidFetchSessionEpoch.code())
        );
        assert_eq!(
            cache.begin(2, id + 1, 2, &[], &[]),
            Begin::Error(ResponseError::FetchSessionIdNotFound.code())
        );
        assert!(matches!(
            cache.begin(3, id, 2, &[], &[]),
            Begin::Incremental { .. }
        ));
        // Epoch -1 closes the session without another; epoch 0 closes and asks for one.
        assert_eq!(
            cache.begin(4, id, FINAL_EPOCH, &[], &[]),
            Begin::Full { create: false }
        );
        assert!(cache.is_empty());
        assert_eq!(cache.partitions_cached(), 0);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(-1), -1);
    }

    #[test]
    fn incremental_requests_update_add_and_forget_partitions() {
        let mut cache = FetchSessionCache::new(10, 1000, EVICT, 0, 1);
        let id = session_of(&mut cache, 0, false, 2);
        let begun = cache.begin(
            1,
            id,
            1,
            &[(key("t", 1), params(7)), (key("u", 0), params(3))],
            &[key("t", 0)],
        );
        let Begin::Incremental { partitions, .. } = begun else {
            panic!("{begun:?}")
        };
        assert_eq!(
            partitions,
            vec![(key("t", 1), params(7)), (key("u", 0), params(3))]
        );
        assert_eq!(cache.partitions_cached(), 2);
        // Forgetting the last partitions closes the session: served sessionless.
        assert_eq!(
            cache.begin(2, id, 2, &[], &[key("t", 1), key("u", 0)]),
            Begin::Full { create: false }
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn responses_carry_only_what_changed_and_rotate_partitions_with_data() {
        let mut cache = FetchSessionCache::new(10, 1000, EVICT, 0, 1);
        let id = session_of(&mut cache, 0, false, 4);
        let Begin::Incremental { partitions, .. } = cache.begin(1, id, 1, &[], &[]) else {
            panic!()
        };
        let mut answers: Vec<_> = partitions
            .iter()
            .map(|(k, _)| (k.clone(), answer(0, false)))
            .collect();
        answers[1].1 = answer(5, true); // new data
        answers[2].1.log_start_offset = 1; // log start moved
        answers[3].1.error_code = 6; // an error
        assert_eq!(
            cache.finish_incremental(id, 1, &answers).unwrap(),
            vec![false, true, true, true]
        );
        // Same answers again: nothing changed but the error, which is always sent.
        let Begin::Incremental { partitions, .. } = cache.begin(2, id, 2, &[], &[]) else {
            panic!()
        };
        // Partition 1 returned data, so it went to the back.
        let order: Vec<i32> = partitions.iter().map(|(k, _)| k.partition).collect();
        assert_eq!(order, vec![0, 2, 3, 1]);
        let answers: Vec<_> = order
            .iter()
            .map(|&p| {
                let mut a = answer(if p == 1 { 5 } else { 0 }, false);
                if p == 2 {
                    a.log_start_offset = 1;
                }
                if p == 3 {
                    a.error_code = 6;
                }
                (key("t", p), a)
            })
            .collect();
        assert_eq!(
            cache.finish_incremental(id, 2, &answers).unwrap(),
            vec![false, false, true, false]
        );
        // The error went away: the partition is sent again (its high watermark was reset).
        cache.begin(3, id, 3, &[], &[]);
        let mut answers = answers;
        answers[2].1.error_code = 0;
        assert_eq!(
            cache.finish_incremental(id, 3, &answers).unwrap(),
            vec![false, false, true, false]
        );
        // A response prepared after another request moved the epoch is refused.
        cache.begin(4, id, 4, &[], &[]);
        assert_eq!(
            cache.finish_incremental(id, 3, &answers),
            Err(ResponseError::InvalidFetchSessionEpoch.code())
        );
    }

    #[test]
    fn a_full_cache_evicts_stale_then_smaller_old_sessions() {
        let mut cache = FetchSessionCache::new(2, 1000, EVICT, 0, 1);
        let a = session_of(&mut cache, 0, false, 5);
        let b = session_of(&mut cache, 10, false, 3);
        // Both are young: nothing may be evicted for a new session.
        assert_eq!(session_of(&mut cache, 20, false, 100), INVALID_SESSION_ID);
        // Old enough but in use: a larger session evicts the smallest (b), a smaller one nothing.
        cache.begin(EVICT + 50, a, 1, &[], &[]);
        cache.begin(EVICT + 50, b, 1, &[], &[]);
        assert_eq!(
            session_of(&mut cache, EVICT + 60, false, 2),
            INVALID_SESSION_ID
        );
        let c = session_of(&mut cache, EVICT + 60, false, 4);
        assert_ne!(c, INVALID_SESSION_ID);
        assert_eq!(cache.expected_epoch(b), None);
        assert_eq!(cache.evictions(), 1);
        // a goes unused past the eviction time: stale, evicted by any new session.
        cache.begin(2 * EVICT + 100, c, 1, &[], &[]);
        let d = session_of(&mut cache, 2 * EVICT + 100, false, 1);
        assert_ne!(d, INVALID_SESSION_ID);
        assert_eq!(cache.expected_epoch(a), None);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.partitions_cached(), 5);
    }

    #[test]
    fn privileged_sessions_evict_young_consumer_sessions_but_not_the_reverse() {
        let mut cache = FetchSessionCache::new(1, 1000, EVICT, 0, 1);
        let consumer = session_of(&mut cache, 0, false, 50);
        let follower = session_of(&mut cache, 1, true, 1);
        assert_ne!(follower, INVALID_SESSION_ID);
        assert_eq!(cache.expected_epoch(consumer), None);
        assert_eq!(session_of(&mut cache, 2, false, 500), INVALID_SESSION_ID);
        assert_eq!(cache.expected_epoch(follower), Some(1));
    }

    #[test]
    fn cached_partitions_are_bounded() {
        let mut cache = FetchSessionCache::new(10, 10, EVICT, 0, 1);
        assert_eq!(session_of(&mut cache, 0, false, 11), INVALID_SESSION_ID);
        let id = session_of(&mut cache, 0, false, 8);
        assert_eq!(session_of(&mut cache, 0, false, 3), INVALID_SESSION_ID);
        let more: Vec<_> = (0..3).map(|p| (key("more", p), params(0))).collect();
        assert_eq!(
            cache.begin(1, id, 1, &more, &[]),
            Begin::Error(ResponseError::FetchSessionIdNotFound.code())
        );
        assert!(cache.is_empty());
        assert_eq!(cache.partitions_cached(), 0);
        assert_eq!(
            FetchSessionCache::new(0, 10, EVICT, 0, 1).create(0, true, vec![]),
            INVALID_SESSION_ID
        );
    }

    #[test]
    fn session_ids_carry_the_shard() {
        let mut cache = FetchSessionCache::new(100, 1000, EVICT, 1, 3);
        for _ in 0..50 {
            let id = session_of(&mut cache, 0, false, 1);
            assert!(id > 0);
            assert_eq!(id % 3, 1);
        }
        assert_eq!(cache.len(), 50);
    }
}
