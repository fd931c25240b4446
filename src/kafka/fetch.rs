//! Fetch (key 1), versions 0 to 12: consumers read record batches.
//!
//! Owner: the connection's shard plans the fetch (which partitions, which limits), scatters
//! the reads to the owner shards, and writes the response. Split as DESIGN.md §4 asks:
//! planning and assembling here, executing on the owners (`broker::owner::serve_read`).
//!
//! Long poll: the first round reads every partition at once. If it found fewer than
//! `min_bytes` (and no partition has an error, and `max_wait_ms` has time left), each owner is
//! asked to wait until any of its partitions has data beyond what was seen (`WaitForData`,
//! woken by appends, never by polling); the first owner that answers ends the wait, and the
//! fetch reads again. This repeats until `min_bytes` or the deadline.
//!
//! Limits: each partition reads at most `partition_max_bytes`, and the response at most
//! `max_bytes`, except that the first partition with data always returns at least one whole
//! batch, as Kafka does (KIP-74). Partitions after the budget is spent return no records; a
//! partition that only partly fits is cut at a batch boundary.
//!
//! Isolation: read_committed fetches (isolation level 1) get data only below the last stable
//! offset (the first offset of the oldest open transaction), and the aborted transactions
//! overlapping what they got, so the client can drop those records; every fetch is told the
//! last stable offset.
//!
//! Fetch sessions (KIP-227, v7+; the cache and its rules are `fetch_session`, one per shard):
//! before planning, the request is applied to the shard's session cache. A full fetch (epoch
//! 0) reads the partitions it names and, once answered, offers them to a new session whose id
//! the response carries (0 when the cache had no room); epoch -1 closes a session and is
//! served sessionless. An incremental fetch (epoch > 0) updates, adds and forgets partitions
//! of its session and then reads the whole session, in the session's order, with the same
//! long poll, limits and isolation as a full fetch; its response keeps only the partitions
//! with records, an error, or a high watermark, last stable offset or log start offset other
//! than the fetcher was last told. An unknown session id gets FETCH_SESSION_ID_NOT_FOUND and a
//! wrong epoch INVALID_FETCH_SESSION_EPOCH, with no partitions. The cache is never held
//! across an await: the long poll runs between applying the request and cutting the response,
//! and a request that overtook this one on the same session (its epoch moved meanwhile) makes
//! this one's answer INVALID_FETCH_SESSION_EPOCH, as in Kafka.
//!
//! Record data goes to the socket as the `Bytes` the storage returned: the response is
//! encoded here, around the record chunks, instead of being copied into one buffer.
//!
//! With an authorizer (`crate::acl`), the partitions of a topic the client may not READ are
//! answered TOPIC_AUTHORIZATION_FAILED and not read.
//!
//! Leadership: under a controller quorum a partition this node holds no replica of is answered
//! NOT_LEADER_OR_FOLLOWER and not read; from v9 the client's `current_leader_epoch` is checked
//! against the image's (`leader_epoch::Leadership`). Fetch from followers (KIP-392): a
//! consumer's fetch of v11 or later is served by a follower too, up to the follower's high
//! watermark (what it learnt from the leader), as Kafka serves it; older versions and
//! followers' own fetches need the leader. With `replica.selector.class` set to Kafka's
//! RackAwareReplicaSelector and a `rack_id` in the request, the leader may answer a partition
//! with a preferred read replica and no records (`replication::selector`); such an answer ends
//! the long poll at once, as Kafka's does. The v12 `current_leader` hint is not sent.
//!
//! Versions 0 to 3 cannot carry v2 batches: after the owners answered, each partition's batches
//! are down-converted here to message format 0 (v0-1) or 1 (v2-3) by
//! `legacy_format::down_convert`, as Kafka does, within the partition's byte limit (at least
//! one converted batch); the response budget then applies to the converted bytes. A partition
//! that cannot be converted (zstd) gets UNSUPPORTED_COMPRESSION_TYPE. v4+ never converts.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, FetchRequest};
use kafka_protocol::protocol::VersionRange;
use tracing::debug;

use crate::acl::{self, Session};
use crate::broker::error;
use crate::broker::owner::{ReadItem, ReadOutcome};
use crate::broker::{ShardContext, ShardRequest, ShardResponse};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request, ResponseFrame};
use crate::kafka::fetch_session::{
    self, Begin, FetchParams, FetchSessionCache, INVALID_SESSION_ID, PartitionAnswer, PartitionKey,
};
use crate::kafka::leader_epoch::Leadership;
use crate::kafka::scatter;
use crate::kafka::{legacy_format, legacy_versions};
use crate::quota::{self, QuotaKey};
use crate::replication::selector::ReplicaSelector;
use crate::runtime::{ShardId, shard_for};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 12 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::Fetch,
    versions: VERSIONS,
    handle,
};

/// The longest a single owner wait lasts; a longer `max_wait_ms` waits in several rounds.
const OWNER_WAIT_MS_MAX: u64 = 30_000;

/// Kafka's isolation level READ_COMMITTED.
const READ_COMMITTED: i8 = 1;

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: FetchRequest = match legacy_versions::decode_fetch(&request) {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let version = request.version();
        let correlation_id = request.header.correlation_id;
        let refused = |code| {
            frame(
                correlation_id,
                FetchResponseParts {
                    version,
                    error_code: code,
                    session_id: INVALID_SESSION_ID,
                    read_committed: false,
                    topics: Vec::new(),
                },
            )
        };
        let (wanted, session) = match open_session(&context, &body, version) {
            Ok(opened) => opened,
            Err(code) => return refused(code),
        };
        let plan = plan(&context, &request.session, &body, &wanted, version);
        let response = execute(&context, plan).await;
        match close_session(&context, session, &wanted, response) {
            Ok(response) => {
                let outcome = frame(correlation_id, response);
                if body.replica_id.0 >= 0 {
                    // Replication is not a client: no client quota applies.
                    return outcome;
                }
                let HandlerOutcome::Respond(mut response) = outcome else {
                    return outcome;
                };
                // Client quota (KIP-219): the response's bytes count against the consumer
                // byte rate; the data still goes out, with the throttle time.
                let throttle = context.quotas.record(
                    &context.image().quotas,
                    quota::principal_user(&request.session.principal),
                    request.header.client_id.as_deref().unwrap_or(""),
                    QuotaKey::ConsumerByteRate,
                    response.len_bytes() as u64,
                );
                if throttle > 0 && version >= 1 {
                    set_throttle_time(&mut response.body, throttle);
                    response.throttle_ms = throttle;
                }
                HandlerOutcome::Respond(response)
            }
            Err(code) => refused(code),
        }
    }
    .boxed_local()
}

/// How this request uses a fetch session (`fetch_session`), decided before the reads.
#[derive(Debug)]
enum SessionUse {
    /// Sessionless (Fetch v0-6, epoch -1, or a session that lost its last partition).
    None,
    /// A full fetch with epoch 0: offer the answers to a new session.
    Create { privileged: bool },
    /// An incremental fetch of session `id` with `epoch`.
    Incremental { id: i32, epoch: i32 },
}

/// One partition to fetch, in response order.
#[derive(Debug, Clone)]
struct Wanted {
    key: PartitionKey,
    params: FetchParams,
}

fn session_cache<R>(context: &ShardContext, f: impl FnOnce(&mut FetchSessionCache) -> R) -> R {
    let slots = context
        .config
        .int("max.incremental.fetch.session.cache.slots", 1000)
        .max(0) as u64;
    fetch_session::with_shard_cache(slots, context.id.0 as u32, context.shard_count as u32, f)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The partitions the request names, in its order; one topic name shared by its partitions.
fn requested(body: &FetchRequest) -> Vec<Wanted> {
    let mut wanted = Vec::new();
    for topic in &body.topics {
        let name: Rc<str> = Rc::from(topic.topic.0.as_str());
        for p in &topic.partitions {
            wanted.push(Wanted {
                key: PartitionKey {
                    topic: name.clone(),
                    partition: p.partition,
                },
                params: FetchParams {
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                },
            });
        }
    }
    wanted
}

/// Applies the request to this shard's session cache and says which partitions to read.
fn open_session(
    context: &ShardContext,
    body: &FetchRequest,
    version: i16,
) -> Result<(Vec<Wanted>, SessionUse), i16> {
    let requested = requested(body);
    if version < 7 {
        return Ok((requested, SessionUse::None));
    }
    let forgotten: Vec<PartitionKey> = body
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let name: Rc<str> = Rc::from(t.topic.0.as_str());
            t.partitions.iter().map(move |&partition| PartitionKey {
                topic: name.clone(),
                partition,
            })
        })
        .collect();
    let pairs: Vec<(PartitionKey, FetchParams)> = requested
        .iter()
        .map(|w| (w.key.clone(), w.params))
        .collect();
    let begun = session_cache(context, |cache| {
        cache.begin(
            now_ms(),
            body.session_id,
            body.session_epoch,
            &pairs,
            &forgotten,
        )
    });
    match begun {
        Begin::Full { create: false } => Ok((requested, SessionUse::None)),
        Begin::Full { create: true } => Ok((
            requested,
            SessionUse::Create {
                privileged: body.replica_id.0 >= 0,
            },
        )),
        Begin::Incremental {
            session_id,
            partitions,
        } => Ok((
            partitions
                .into_iter()
                .map(|(key, params)| Wanted { key, params })
                .collect(),
            SessionUse::Incremental {
                id: session_id,
                epoch: body.session_epoch,
            },
        )),
        Begin::Error(code) => Err(code),
    }
}

/// What one answered partition says, for the session.
fn answer_of(p: &PartitionParts) -> PartitionAnswer {
    PartitionAnswer {
        error_code: p.error_code,
        high_watermark: p.high_watermark,
        last_stable_offset: p.last_stable_offset,
        log_start_offset: p.log_start_offset,
        // A preferred read replica is news the session must pass on, as records are.
        has_records: p.records.iter().any(|c| !c.is_empty()) || p.preferred_read_replica >= 0,
    }
}

/// After the reads: creates the session a full fetch asked for, or cuts an incremental
/// response down to the partitions with something new (Kafka's rules, `fetch_session`).
fn close_session(
    context: &ShardContext,
    session: SessionUse,
    wanted: &[Wanted],
    mut response: FetchResponseParts,
) -> Result<FetchResponseParts, i16> {
    match session {
        SessionUse::None => Ok(response),
        SessionUse::Create { privileged } => {
            // The response lists the partitions in the order they were wanted.
            let partitions = response
                .topics
                .iter()
                .flat_map(|(_, partitions)| partitions.iter())
                .zip(wanted)
                .map(|(p, w)| (w.key.clone(), w.params, answer_of(p)))
                .collect();
            response.session_id = session_cache(context, |cache| {
                cache.create(now_ms(), privileged, partitions)
            });
            Ok(response)
        }
        SessionUse::Incremental { id, epoch } => {
            let answers: Vec<(PartitionKey, PartitionAnswer)> = response
                .topics
                .iter()
                .flat_map(|(topic, partitions)| {
                    partitions.iter().map(move |p| {
                        (
                            PartitionKey {
                                topic: topic.clone(),
                                partition: p.partition,
                            },
                            answer_of(p),
                        )
                    })
                })
                .collect();
            let include = session_cache(context, |cache| {
                cache.finish_incremental(id, epoch, &answers)
            })?;
            let mut include = include.into_iter();
            for (_, partitions) in response.topics.iter_mut() {
                partitions.retain(|_| include.next().unwrap_or(true));
            }
            response
                .topics
                .retain(|(_, partitions)| !partitions.is_empty());
            response.session_id = id;
            Ok(response)
        }
    }
}

/// Writes `throttle_ms` over the `throttle_time_ms` an encoded Fetch v1+ body opens with.
fn set_throttle_time(body: &mut [Bytes], throttle_ms: u64) {
    let Some(first) = body.first_mut() else {
        return;
    };
    if first.len() < 4 {
        return;
    }
    let mut head = BytesMut::from(&first[..]);
    let value = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    head[..4].copy_from_slice(&value.to_be_bytes());
    *first = head.freeze();
}

fn frame(correlation_id: i32, response: FetchResponseParts) -> HandlerOutcome {
    let flexible = response.version >= 12;
    HandlerOutcome::Respond(ResponseFrame {
        correlation_id,
        throttle_ms: 0,
        flexible_header: flexible,
        headerless: false,
        body: encode(&response),
    })
}

/// One partition of the plan.
#[derive(Debug, Clone)]
struct PlannedPartition {
    partition: i32,
    /// Set when the partition is refused before any read.
    error_code: Option<i16>,
    /// Index into `Plan::reads` when it is read.
    read: Option<usize>,
}

#[derive(Debug)]
struct Plan {
    version: i16,
    read_committed: bool,
    max_wait: Duration,
    min_bytes: usize,
    max_bytes: usize,
    /// Runs of partitions of one topic, in fetch order (a session's order may visit a topic
    /// more than once, and the response then names it more than once, as Kafka's does).
    topics: Vec<(Rc<str>, Vec<PlannedPartition>)>,
    reads: Vec<ReadItem>,
}

fn plan(
    context: &ShardContext,
    session: &Session,
    body: &FetchRequest,
    wanted: &[Wanted],
    version: i16,
) -> Plan {
    let image = context.image();
    let (node_id, clustered) = (context.identity.node_id, context.clustered());
    // A follower's fetch (`replica_id` >= 0): only under a quorum, and with CLUSTER_ACTION on
    // the cluster, as Kafka asks of followers; it reads committed or not alike (the leader's
    // durable end) and tells the leader how far the follower got.
    let replica = (body.replica_id.0 >= 0).then_some(body.replica_id.0);
    let follower_refused = replica.is_some()
        && !(clustered
            && context.authorize(
                session,
                acl::operation::CLUSTER_ACTION,
                acl::resource_type::CLUSTER,
                acl::CLUSTER_NAME,
            ));
    let read_committed = replica.is_none() && body.isolation_level == READ_COMMITTED;
    // KIP-392: consumers' fetches from v11 (which carry the client's rack) may be served by a
    // follower, and the leader may name one in the client's rack.
    let follower_reads = clustered && replica.is_none() && version >= 11;
    let client_rack = (follower_reads
        && context.replication.settings().selector == ReplicaSelector::RackAware
        && !body.rack_id.is_empty())
    .then(|| std::sync::Arc::<str>::from(body.rack_id.as_str()));
    let mut reads = Vec::new();
    let mut topics: Vec<(Rc<str>, Vec<PlannedPartition>)> = Vec::new();
    // The checks of the topic last looked at: (name, may read, partition count).
    let mut checked: Option<(Rc<str>, bool, Option<i32>)> = None;
    for w in wanted {
        let name = w.key.topic.clone();
        if checked.as_ref().is_none_or(|(n, _, _)| *n != name) {
            let may_read = context.authorize(
                session,
                acl::operation::READ,
                acl::resource_type::TOPIC,
                &name,
            );
            let count = image.topic(&name).map(|m| m.partitions);
            checked = Some((name.clone(), may_read, count));
        }
        let (_, may_read, count) = checked.as_ref().expect("checked");
        let p = w.params;
        let refused = if follower_refused || (!may_read && replica.is_none()) {
            Some(ResponseError::TopicAuthorizationFailed.code())
        } else if !count.is_some_and(|c| (0..c).contains(&w.key.partition)) {
            Some(ResponseError::UnknownTopicOrPartition.code())
        } else if let Some(topic) = image.topic(&name) {
            // The client's view of the leader epoch is sent from v9.
            let current = if version >= 9 {
                p.current_leader_epoch
            } else {
                -1
            };
            let leadership = Leadership::of(topic, w.key.partition, node_id, clustered);
            if follower_reads {
                leadership.replica_refusal(current)
            } else {
                leadership.refusal(current)
            }
        } else {
            None
        };
        let planned = match refused {
            Some(code) => PlannedPartition {
                partition: w.key.partition,
                error_code: Some(code),
                read: None,
            },
            None => {
                reads.push(ReadItem {
                    topic: name.to_string(),
                    partition: w.key.partition,
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as u32,
                    read_committed,
                    replica,
                    client_rack: client_rack.clone(),
                    any_replica: follower_reads,
                });
                PlannedPartition {
                    partition: w.key.partition,
                    error_code: None,
                    read: Some(reads.len() - 1),
                }
            }
        };
        match topics.last_mut() {
            Some((last, partitions)) if *last == name => partitions.push(planned),
            _ => topics.push((name, vec![planned])),
        }
    }
    Plan {
        version,
        read_committed,
        max_wait: Duration::from_millis(body.max_wait_ms.max(0) as u64),
        min_bytes: body.min_bytes.max(0) as usize,
        max_bytes: if body.max_bytes <= 0 {
            usize::MAX
        } else {
            body.max_bytes as usize
        },
        topics,
        reads,
    }
}

async fn read_all(context: &Rc<ShardContext>, reads: &[ReadItem]) -> Vec<ReadOutcome> {
    scatter::scatter(
        context,
        reads.to_vec(),
        |item| (item.topic.as_str(), item.partition),
        ShardRequest::Read,
        |answer| match answer {
            ShardResponse::Read(outcomes) => Some(outcomes),
            _ => None,
        },
        ReadOutcome::failed,
    )
    .await
}

/// Waits until any owner reports new data for the partitions read, or `timeout`.
async fn wait_any(
    context: &Rc<ShardContext>,
    reads: &[ReadItem],
    outcomes: &[ReadOutcome],
    timeout: Duration,
) {
    let timeout_ms = (timeout.as_millis() as u64).clamp(1, OWNER_WAIT_MS_MAX);
    let mut by_owner: std::collections::BTreeMap<ShardId, Vec<ReadItem>> = Default::default();
    for (item, outcome) in reads.iter().zip(outcomes) {
        // Wait for data beyond what this round saw: past the fetch offset, and past the high
        // watermark (read_committed: the last stable offset) it saw.
        let mut waiting = item.clone();
        let seen = if item.replica.is_some() {
            // A follower waits for data past its fetch offset, whatever the high watermark.
            item.offset
        } else if item.read_committed {
            outcome.last_stable_offset
        } else {
            outcome.high_watermark
        };
        waiting.offset = item.offset.max(seen);
        by_owner
            .entry(shard_for(&item.topic, item.partition, context.shard_count))
            .or_default()
            .push(waiting);
    }
    let waits: Vec<_> = by_owner
        .into_iter()
        .map(|(owner, items)| {
            let request = ShardRequest::WaitForData { items, timeout_ms };
            Box::pin(async move {
                let _ = context.router.call(owner, request).await;
            })
        })
        .collect();
    if waits.is_empty() {
        return;
    }
    let _ = glommio::timer::timeout(Duration::from_millis(timeout_ms), async {
        futures::future::select_all(waits).await;
        Ok(())
    })
    .await;
}

async fn execute(context: &Rc<ShardContext>, plan: Plan) -> FetchResponseParts {
    let deadline = Instant::now() + plan.max_wait;
    let mut outcomes = read_all(context, &plan.reads).await;
    loop {
        let bytes: usize = outcomes.iter().map(ReadOutcome::len_bytes).sum();
        let any_error = outcomes
            .iter()
            .any(|o| o.error_code != error::NONE || o.preferred_read_replica.is_some());
        let now = Instant::now();
        if bytes >= plan.min_bytes || any_error || now >= deadline || plan.reads.is_empty() {
            break;
        }
        wait_any(context, &plan.reads, &outcomes, deadline - now).await;
        outcomes = read_all(context, &plan.reads).await;
    }
    if let Some(magic) = legacy_format::fetch_magic(plan.version) {
        for (item, outcome) in plan.reads.iter().zip(outcomes.iter_mut()) {
            down_convert(item, outcome, magic);
        }
    }
    assemble(plan, outcomes)
}

/// Replaces a partition's v2 batches with a legacy message set of `magic` (Fetch v0-3).
fn down_convert(item: &ReadItem, outcome: &mut ReadOutcome, magic: u8) {
    if outcome.error_code != error::NONE || outcome.records.is_empty() {
        return;
    }
    let limit_bytes = item.max_bytes as usize;
    match legacy_format::down_convert(&outcome.records, magic, item.offset, limit_bytes) {
        Ok(converted) if converted.is_empty() => outcome.records.clear(),
        Ok(converted) => outcome.records = vec![converted],
        Err(err) => {
            debug!(topic = %item.topic, partition = item.partition, %err, "down-conversion failed");
            outcome.error_code = legacy_versions::legacy_format_error_code(&err);
            outcome.records.clear();
        }
    }
}

/// Applies the response byte budget and lays the partitions out in request order.
fn assemble(plan: Plan, mut outcomes: Vec<ReadOutcome>) -> FetchResponseParts {
    let mut budget = plan.max_bytes;
    let mut first_with_data = true;
    let topics = plan
        .topics
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|planned| {
                    let Some(read) = planned.read else {
                        return PartitionParts::refused(
                            planned.partition,
                            planned.error_code.unwrap_or(error::NONE),
                        );
                    };
                    let outcome = std::mem::take(&mut outcomes[read]);
                    let records = if outcome.error_code != error::NONE {
                        Vec::new()
                    } else if first_with_data && outcome.len_bytes() > 0 {
                        first_with_data = false;
                        budget = budget.saturating_sub(outcome.len_bytes());
                        outcome.records
                    } else {
                        let kept = whole_batches_within(&outcome.records, budget);
                        budget -= kept.iter().map(Bytes::len).sum::<usize>();
                        kept
                    };
                    PartitionParts {
                        partition: planned.partition,
                        error_code: outcome.error_code,
                        high_watermark: outcome.high_watermark,
                        last_stable_offset: outcome.last_stable_offset,
                        log_start_offset: outcome.log_start_offset,
                        aborted_transactions: outcome.aborted_transactions.unwrap_or_default(),
                        preferred_read_replica: outcome.preferred_read_replica.unwrap_or(-1),
                        records,
                    }
                })
                .collect();
            (name, partitions)
        })
        .collect();
    FetchResponseParts {
        version: plan.version,
        error_code: error::NONE,
        session_id: INVALID_SESSION_ID,
        read_committed: plan.read_committed,
        topics,
    }
}

/// The longest prefix of whole batches in `chunks` that fits in `limit` bytes, as slices of
/// the same buffers (no copy).
fn whole_batches_within(chunks: &[Bytes], limit: usize) -> Vec<Bytes> {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    if total <= limit {
        return chunks.to_vec();
    }
    // Walk the batch headers: each batch is 12 bytes of offset and length, then `length`.
    let mut cut = 0usize;
    while let Some(length) = read_i32_at(chunks, cut + 8) {
        let next = cut + 12 + length.max(0) as usize;
        if length < 0 || next > limit || next > total {
            break;
        }
        cut = next;
    }
    let mut kept = Vec::new();
    let mut remaining = cut;
    for chunk in chunks {
        if remaining == 0 {
            break;
        }
        let take = remaining.min(chunk.len());
        kept.push(chunk.slice(..take));
        remaining -= take;
    }
    kept
}

fn read_i32_at(chunks: &[Bytes], position: usize) -> Option<i32> {
    let mut bytes = [0u8; 4];
    let mut skipped = 0usize;
    let mut filled = 0usize;
    for chunk in chunks {
        let end = skipped + chunk.len();
        while filled < 4 && position + filled < end {
            let at = position + filled;
            if at >= skipped {
                bytes[filled] = chunk[at - skipped];
                filled += 1;
            } else {
                break;
            }
        }
        skipped = end;
        if filled == 4 {
            return Some(i32::from_be_bytes(bytes));
        }
    }
    None
}

/// A fetch response before encoding.
#[derive(Debug)]
struct FetchResponseParts {
    version: i16,
    error_code: i16,
    /// The fetch session the response belongs to, or `INVALID_SESSION_ID`.
    session_id: i32,
    read_committed: bool,
    topics: Vec<(Rc<str>, Vec<PartitionParts>)>,
}

#[derive(Debug)]
struct PartitionParts {
    partition: i32,
    error_code: i16,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// (producer id, first offset); sent only to read_committed fetches.
    aborted_transactions: Vec<(i64, i64)>,
    /// KIP-392's preferred read replica (v11+), -1 for none.
    preferred_read_replica: i32,
    records: Vec<Bytes>,
}

impl PartitionParts {
    fn refused(partition: i32, error_code: i16) -> Self {
        PartitionParts {
            partition,
            error_code,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: Vec::new(),
            preferred_read_replica: -1,
            records: Vec::new(),
        }
    }
}

/// Builds the response body as a list of chunks: small encoded pieces and the record data
/// itself, untouched.
struct ChunkWriter {
    head: BytesMut,
    out: Vec<Bytes>,
}

impl ChunkWriter {
    fn splice(&mut self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        if !self.head.is_empty() {
            self.out.push(self.head.split().freeze());
        }
        self.out.push(chunk.clone());
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.head.is_empty() {
            self.out.push(self.head.split().freeze());
        }
        self.out
    }

    fn uvarint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.head.put_u8((value as u8) | 0x80);
            value >>= 7;
        }
        self.head.put_u8(value as u8);
    }

    fn array_len(&mut self, flexible: bool, len: usize) {
        if flexible {
            self.uvarint(len as u64 + 1);
        } else {
            self.head.put_i32(len as i32);
        }
    }

    fn string(&mut self, flexible: bool, value: &str) {
        if flexible {
            self.uvarint(value.len() as u64 + 1);
        } else {
            self.head.put_i16(value.len() as i16);
        }
        self.head.put_slice(value.as_bytes());
    }

    fn no_tagged_fields(&mut self, flexible: bool) {
        if flexible {
            self.uvarint(0);
        }
    }
}

/// Encodes a Fetch response body (v0 to v12) around the record chunks.
fn encode(response: &FetchResponseParts) -> Vec<Bytes> {
    let version = response.version;
    let flexible = version >= 12;
    let mut w = ChunkWriter {
        head: BytesMut::with_capacity(256),
        out: Vec::new(),
    };
    if version >= 1 {
        w.head.put_i32(0); // throttle_time_ms
    }
    if version >= 7 {
        w.head.put_i16(response.error_code);
        w.head.put_i32(response.session_id);
    }
    w.array_len(flexible, response.topics.len());
    for (name, partitions) in &response.topics {
        w.string(flexible, name);
        w.array_len(flexible, partitions.len());
        for p in partitions {
            w.head.put_i32(p.partition);
            w.head.put_i16(p.error_code);
            w.head.put_i64(p.high_watermark);
            if version >= 4 {
                w.head.put_i64(p.last_stable_offset);
                if version >= 5 {
                    w.head.put_i64(p.log_start_offset);
                }
                // aborted_transactions: null for read_uncommitted, the list for read_committed.
                if response.read_committed {
                    w.array_len(flexible, p.aborted_transactions.len());
                    for &(producer_id, first_offset) in &p.aborted_transactions {
                        w.head.put_i64(producer_id);
                        w.head.put_i64(first_offset);
                        w.no_tagged_fields(flexible);
                    }
                } else if flexible {
                    w.uvarint(0);
                } else {
                    w.head.put_i32(-1);
                }
            }
            if version >= 11 {
                w.head.put_i32(p.preferred_read_replica);
            }
            let len: usize = p.records.iter().map(Bytes::len).sum();
            if flexible {
                w.uvarint(len as u64 + 1);
            } else {
                w.head.put_i32(len as i32);
            }
            for chunk in &p.records {
                w.splice(chunk);
            }
            w.no_tagged_fields(flexible);
        }
        w.no_tagged_fields(flexible);
    }
    w.no_tagged_fields(flexible);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    fn batch(len: usize, fill: u8) -> Vec<u8> {
        let mut b = vec![fill; len];
        b[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        b
    }

    fn parts(version: i16, read_committed: bool) -> FetchResponseParts {
        let mut data = batch(100, 1);
        data.extend(batch(80, 2));
        let records = vec![
            Bytes::from(data[..50].to_vec()),
            Bytes::from(data[50..].to_vec()),
        ];
        FetchResponseParts {
            version,
            error_code: 0,
            session_id: 77,
            read_committed,
            topics: vec![
                (
                    Rc::from("orders"),
                    vec![
                        PartitionParts {
                            partition: 3,
                            error_code: 0,
                            high_watermark: 42,
                            last_stable_offset: 40,
                            log_start_offset: 7,
                            aborted_transactions: vec![(5, 30), (6, 35)],
                            preferred_read_replica: 2,
                            records,
                        },
                        PartitionParts::refused(9, 3),
                    ],
                ),
                (Rc::from("empty"), vec![]),
            ],
        }
    }

    #[test]
    fn our_encoding_decodes_with_the_schema_crate_at_every_version() {
        for version in 4..=12 {
            for read_committed in [false, true] {
                let response = parts(version, read_committed);
                let mut bytes = Bytes::from(encode(&response).concat());
                let decoded = FetchResponse::decode(&mut bytes, version).unwrap();
                assert!(bytes.is_empty(), "v{version}: trailing bytes");
                if version >= 7 {
                    assert_eq!(decoded.session_id, 77);
                }
                assert_eq!(decoded.responses.len(), 2);
                let topic = &decoded.responses[0];
                assert_eq!(topic.topic.0.as_str(), "orders");
                let p = &topic.partitions[0];
                assert_eq!(p.partition_index, 3);
                assert_eq!(p.high_watermark, 42);
                assert_eq!(p.last_stable_offset, 40);
                if version >= 5 {
                    assert_eq!(p.log_start_offset, 7);
                }
                assert_eq!(p.aborted_transactions.is_some(), read_committed);
                if let Some(aborted) = &p.aborted_transactions {
                    let pairs: Vec<_> = aborted
                        .iter()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect();
                    assert_eq!(pairs, vec![(5, 30), (6, 35)]);
                }
                assert_eq!(p.records.as_ref().unwrap().len(), 180);
                if version >= 11 {
                    assert_eq!(p.preferred_read_replica.0, 2);
                }
                let refused = &topic.partitions[1];
                assert_eq!(refused.error_code, 3);
                if version >= 11 {
                    assert_eq!(refused.preferred_read_replica.0, -1);
                }
                assert_eq!(refused.records.as_ref().unwrap().len(), 0);
            }
        }
    }

    /// Fetch v0-3 responses, which the schema crate no longer has: read by hand.
    #[test]
    fn legacy_versions_encode_kafkas_layout() {
        use bytes::Buf;
        for version in 0..4 {
            let mut bytes = Bytes::from(encode(&parts(version, false)).concat());
            if version >= 1 {
                assert_eq!(bytes.get_i32(), 0, "throttle");
            }
            assert_eq!(bytes.get_i32(), 2);
            let name_len = bytes.get_i16() as usize;
            assert_eq!(&bytes.split_to(name_len)[..], b"orders");
            assert_eq!(bytes.get_i32(), 2);
            assert_eq!(bytes.get_i32(), 3);
            assert_eq!(bytes.get_i16(), 0);
            assert_eq!(bytes.get_i64(), 42);
            let len = bytes.get_i32() as usize;
            assert_eq!(len, 180);
            bytes.advance(len);
            assert_eq!(bytes.get_i32(), 9);
            assert_eq!(bytes.get_i16(), 3);
            assert_eq!(bytes.get_i64(), -1);
            assert_eq!(bytes.get_i32(), 0);
            let name_len = bytes.get_i16() as usize;
            assert_eq!(&bytes.split_to(name_len)[..], b"empty");
            assert_eq!(bytes.get_i32(), 0);
            assert!(bytes.is_empty(), "v{version}: trailing bytes");
        }
    }

    #[test]
    fn record_chunks_are_not_copied() {
        let response = parts(12, false);
        let first = response.topics[0].1[0].records[0].clone();
        let chunks = encode(&response);
        assert!(chunks.iter().any(|c| c.as_ptr() == first.as_ptr()));
    }

    #[test]
    fn budget_cuts_at_batch_boundaries_across_chunks() {
        let mut data = batch(100, 1);
        data.extend(batch(80, 2));
        data.extend(batch(60, 3));
        let chunks = vec![
            Bytes::from(data[..150].to_vec()),
            Bytes::from(data[150..].to_vec()),
        ];
        let len = |v: Vec<Bytes>| v.iter().map(Bytes::len).sum::<usize>();
        assert_eq!(len(whole_batches_within(&chunks, 1000)), 240);
        assert_eq!(len(whole_batches_within(&chunks, 239)), 180);
        assert_eq!(len(whole_batches_within(&chunks, 180)), 180);
        assert_eq!(len(whole_batches_within(&chunks, 179)), 100);
        assert_eq!(len(whole_batches_within(&chunks, 99)), 0);
    }
}
