//! The follower side: one fetcher per leader broker and shard, fetching every partition this
//! shard follows from that leader, in one long-polled Fetch at a time, and appending what it
//! gets through the storage engine.
//!
//! Owner: the shard owning the partitions; `Fetcher::start` spawns the fetcher's task on the
//! shard's background queue, `stop` ends it (after the fetch in flight, at most
//! `replica.fetch.wait.max.ms` plus the connect bound). Awaits: the socket to the leader,
//! follower appends (each durable under the topic's flush policy before the next fetch
//! reports its end, so the leader counts only durable data), truncations, and timers.
//!
//! Each round:
//! 1. Partitions that just started following (or whose log did not line up with the leader's)
//!    are truncated first, to where their log diverges from the leader's: OffsetForLeaderEpoch
//!    with the latest epoch of the local log answers the leader's end of that epoch (or of the
//!    largest epoch below it it knows), and the log is cut at the smaller of that end and the
//!    local end of the same epoch (KIP-101, KIP-279), asking again with an older epoch while
//!    the epochs disagree. A log without epochs is cut at its high watermark, as Kafka did
//!    before KIP-101.
//! 2. One Fetch (`replica_id` = this broker) asks for every partition at its log end; the
//!    leader holds it up to `replica.fetch.wait.max.ms` when it has nothing new. It runs in an
//!    incremental fetch session (KIP-227), one per fetcher and connection: the first fetch is
//!    full and opens the session; later ones name only the partitions whose fetch offset,
//!    epoch or bounds changed (and forget those no longer fetched), and the leader answers only
//!    the partitions with news, while it keeps counting every partition of the session as
//!    fetched at its last offset. A session the leader no longer knows
//!    (FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, or a new connection) starts
//!    over with a full fetch; a leader with no room for a session answers every fetch in full.
//! 3. Each partition's answer: records are appended as the leader wrote them
//!    (`OpenPartition::append_replica`: offsets, epochs and producer state kept) and the
//!    leader's high watermark becomes this replica's bound, and its log start this replica's
//!    (within that bound: DeleteRecords and retention on the leader reach every follower, as
//!    in Kafka); OFFSET_OUT_OF_RANGE below the
//!    leader's log start restarts the log there, above it truncates again; a leadership error
//!    (NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, unknown partition)
//!    parks the partition for `replica.fetch.backoff.ms`: the image will move it. A broken
//!    connection or a timeout drops the connection and waits the backoff.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, info, warn};

use crate::limits::REPLICA_CONNECT_TIMEOUT_MS;
use crate::replication::client::{BrokerClient, ClientError};
use crate::replication::{Replica, ReplicationHost, Role};
use crate::runtime::event::Event;
use crate::storage::StorageError;
use crate::storage::manager::AppendError;

/// The Fetch version followers send (the newest the front serves).
const FETCH_VERSION: i16 = 12;
/// The OffsetForLeaderEpoch version followers send.
const EPOCH_VERSION: i16 = 4;
/// Rounds of OffsetForLeaderEpoch before giving up on finding the divergence point (then the
/// log is cut at its high watermark).
const DIVERGENCE_ROUNDS_MAX: usize = 16;

/// What one partition's entry in the fetch session says: (fetch offset, leader epoch, log
/// start offset).
type SessionEntry = (i64, i32, i64);

/// The incremental fetch session with the leader, as this follower last left it.
#[derive(Debug, Default)]
struct Session {
    /// 0 until the leader gave one.
    id: i32,
    /// The epoch of the next incremental fetch.
    epoch: i32,
    /// What the session holds for each partition.
    sent: BTreeMap<(String, i32), SessionEntry>,
}

/// One followed partition.
#[derive(Debug)]
struct Followed {
    replica: Rc<Replica>,
    leader_epoch: i32,
    /// Truncate to the divergence point before fetching.
    truncate_first: bool,
    /// Parked until then after an error.
    parked_until: Option<Instant>,
}

/// The fetcher of one leader broker on this shard. See the module documentation.
#[derive(Debug)]
pub struct Fetcher {
    leader: i32,
    partitions: RefCell<BTreeMap<(String, i32), Followed>>,
    /// Bumped (and `wake` notified) when partitions are added or the fetcher stops.
    generation: Cell<u64>,
    wake: Event,
    stopped: Cell<bool>,
}

impl Fetcher {
    /// Starts the fetcher of `leader` on the current shard.
    pub fn start<H: ReplicationHost>(host: &Rc<H>, leader: i32) -> Rc<Fetcher> {
        let fetcher = Rc::new(Fetcher {
            leader,
            partitions: RefCell::default(),
            generation: Cell::new(0),
            wake: Event::default(),
            stopped: Cell::new(false),
        });
        let task = run(host.clone(), Rc::downgrade(&fetcher));
        match glommio::spawn_local_into(task, host.background_queue()) {
            Ok(task) => {
                task.detach();
            }
            Err(err) => warn!(leader, %err, "cannot start the replica fetcher"),
        }
        info!(leader, "replica fetcher started");
        fetcher
    }

    /// Follows `replica` from this leader at `leader_epoch`, truncating it first.
    pub fn add(&self, replica: Rc<Replica>, leader_epoch: i32) {
        let key = (replica.topic.clone(), replica.partition);
        self.partitions.borrow_mut().insert(
            key,
            Followed {
                replica,
                leader_epoch,
                truncate_first: true,
                parked_until: None,
            },
        );
        self.generation.set(self.generation.get() + 1);
        self.wake.notify_all();
    }

    /// Stops following `topic`-`partition` here.
    pub fn remove(&self, topic: &str, partition: i32) {
        self.partitions
            .borrow_mut()
            .remove(&(topic.to_string(), partition));
    }

    /// Whether it follows nothing.
    pub fn is_empty(&self) -> bool {
        self.partitions.borrow().is_empty()
    }

    /// Ends the fetcher's task.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.generation.set(self.generation.get() + 1);
        self.wake.notify_all();
    }
}

/// The fetcher's task: rounds until stopped or the shard drains.
async fn run<H: ReplicationHost>(host: Rc<H>, fetcher: Weak<Fetcher>) {
    let mut client: Option<BrokerClient> = None;
    let mut session = Session::default();
    loop {
        let Some(this) = fetcher.upgrade() else {
            return;
        };
        if this.stopped.get() || host.is_draining() {
            return;
        }
        let settings = host.replication().settings();
        let backoff = Duration::from_millis(settings.fetch_backoff_ms.max(10));
        let now = Instant::now();
        let ready = this
            .partitions
            .borrow()
            .values()
            .any(|f| f.parked_until.is_none_or(|t| t <= now));
        if !ready {
            // Nothing to fetch: wait for a partition, or for the first parked one to be due.
            let next_due = this
                .partitions
                .borrow()
                .values()
                .filter_map(|f| f.parked_until)
                .min();
            let wait =
                next_due.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
            let seen = this.generation.get();
            let _ = glommio::timer::timeout(wait.max(Duration::from_millis(1)), async {
                this.wake
                    .wait_for(|| (this.generation.get() != seen).then_some(()))
                    .await;
                Ok(())
            })
            .await;
            continue;
        }
        if client.is_none() {
            let leader = this.leader;
            let Some(addr) = leader_addr(&*host, leader) else {
                drop(this);
                if !host.sleep_or_drain(backoff).await {
                    return;
                }
                continue;
            };
            let name = format!("ringbroker-follower-{}", host.replication().node_id());
            let connect_bound = Duration::from_millis(REPLICA_CONNECT_TIMEOUT_MS);
            match BrokerClient::connect(addr, name, connect_bound).await {
                Ok(connected) => {
                    debug!(leader, %addr, "connected to the leader");
                    client = Some(connected);
                    session = Session::default();
                }
                Err(err) => {
                    debug!(leader, %err, "cannot reach the leader");
                    drop(this);
                    if !host.sleep_or_drain(backoff).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let connection = client.as_mut().expect("connected above");
        let round = async {
            truncate_diverged(&*host, &this, connection).await?;
            fetch_once(&*host, &this, connection, &mut session).await
        };
        if let Err(err) = round.await {
            debug!(leader = this.leader, %err, "fetch from the leader failed; reconnecting");
            client = None;
            drop(this);
            if !host.sleep_or_drain(backoff).await {
                return;
            }
        }
    }
}

/// The address of broker `id` from the image.
fn leader_addr<H: ReplicationHost>(host: &H, id: i32) -> Option<SocketAddr> {
    let image = host.current_image();
    let broker = image.brokers.get(&id)?;
    (broker.host.as_str(), broker.port)
        .to_socket_addrs()
        .ok()?
        .next()
}

/// Step 1 of the module documentation, for every partition that needs it.
async fn truncate_diverged<H: ReplicationHost>(
    host: &H,
    fetcher: &Fetcher,
    client: &mut BrokerClient,
) -> Result<(), ClientError> {
    let due: Vec<(Rc<Replica>, i32)> = fetcher
        .partitions
        .borrow()
        .values()
        .filter(|f| f.truncate_first && f.parked_until.is_none_or(|t| t <= Instant::now()))
        .map(|f| (f.replica.clone(), f.leader_epoch))
        .collect();
    for (replica, leader_epoch) in due {
        let outcome = divergence_point(host, client, &replica, leader_epoch).await?;
        let key = (replica.topic.clone(), replica.partition);
        match outcome {
            Divergence::Cut(offset) => {
                let log = &replica.open.log;
                if offset < log.log_end_offset() {
                    info!(topic = %replica.topic, partition = replica.partition,
                        from = log.log_end_offset(), to = offset,
                        "truncating to the leader's log before following");
                    if let Err(err) = replica.open.truncate_to(offset).await {
                        warn!(topic = %replica.topic, partition = replica.partition, %err,
                            "truncation failed");
                        park(fetcher, &key, host);
                        continue;
                    }
                }
                if let Some(f) = fetcher.partitions.borrow_mut().get_mut(&key) {
                    f.truncate_first = false;
                }
            }
            Divergence::Refused(code) => {
                debug!(topic = %replica.topic, partition = replica.partition, code,
                    "the leader refused OffsetForLeaderEpoch");
                park(fetcher, &key, host);
            }
        }
    }
    Ok(())
}

enum Divergence {
    /// Cut the log here (at or past its end: nothing to cut).
    Cut(i64),
    /// The leader answered this error code.
    Refused(i16),
}

/// Finds where the local log stops agreeing with the leader's (KIP-279).
async fn divergence_point<H: ReplicationHost>(
    host: &H,
    client: &mut BrokerClient,
    replica: &Replica,
    leader_epoch: i32,
) -> Result<Divergence, ClientError> {
    let log = &replica.open.log;
    let Some(mut epoch) = log.latest_epoch() else {
        return Ok(Divergence::Cut(log.high_watermark()));
    };
    let deadline = Duration::from_millis(REPLICA_CONNECT_TIMEOUT_MS * 3);
    for _ in 0..DIVERGENCE_ROUNDS_MAX {
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(host.replication().node_id()))
            .with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(replica.topic.clone())))
                    .with_partitions(vec![
                        OffsetForLeaderPartition::default()
                            .with_partition(replica.partition)
                            .with_current_leader_epoch(leader_epoch)
                            .with_leader_epoch(epoch),
                    ]),
            ]);
        let response = client.call(&request, EPOCH_VERSION, deadline).await?;
        let Some(answer) = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition == replica.partition)
        else {
            return Ok(Divergence::Refused(
                ResponseError::UnknownServerError.code(),
            ));
        };
        if answer.error_code != 0 {
            return Ok(Divergence::Refused(answer.error_code));
        }
        if answer.leader_epoch < 0 || answer.end_offset < 0 {
            // The leader knows no epoch at or below ours: nothing of ours is known to agree
            // beyond what was committed.
            return Ok(Divergence::Cut(log.high_watermark()));
        }
        let (local_epoch, local_end) = log.epoch_end_offset(answer.leader_epoch);
        if local_epoch == answer.leader_epoch || local_epoch < 0 {
            let local_end = if local_epoch < 0 {
                log.log_start_offset()
            } else {
                local_end
            };
            return Ok(Divergence::Cut(answer.end_offset.min(local_end)));
        }
        // We do not have the leader's epoch: ask again with the one we have below it.
        epoch = local_epoch;
    }
    Ok(Divergence::Cut(log.high_watermark()))
}

fn park<H: ReplicationHost>(fetcher: &Fetcher, key: &(String, i32), host: &H) {
    let backoff = Duration::from_millis(host.replication().settings().fetch_backoff_ms.max(10));
    if let Some(f) = fetcher.partitions.borrow_mut().get_mut(key) {
        f.parked_until = Some(Instant::now() + backoff);
    }
}

/// Steps 2 and 3 of the module documentation.
async fn fetch_once<H: ReplicationHost>(
    host: &H,
    fetcher: &Fetcher,
    client: &mut BrokerClient,
    session: &mut Session,
) -> Result<(), ClientError> {
    let settings = host.replication().settings();
    let now = Instant::now();
    // What the session should hold now: every partition not parked or truncating.
    let mut wanted: BTreeMap<(String, i32), SessionEntry> = BTreeMap::new();
    for (key, f) in fetcher.partitions.borrow_mut().iter_mut() {
        if f.truncate_first || f.parked_until.is_some_and(|t| t > now) {
            continue;
        }
        f.parked_until = None;
        let log = &f.replica.open.log;
        wanted.insert(
            key.clone(),
            (log.log_end_offset(), f.leader_epoch, log.log_start_offset()),
        );
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let incremental = session.id != 0;
    // A full fetch names everything; an incremental one what changed, and forgets the rest.
    let mut named: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for ((topic, partition), &(offset, epoch, log_start)) in &wanted {
        let key = (topic.clone(), *partition);
        if incremental && session.sent.get(&key) == Some(&(offset, epoch, log_start)) {
            continue;
        }
        named.entry(topic).or_default().push(
            FetchPartition::default()
                .with_partition(*partition)
                .with_fetch_offset(offset)
                .with_current_leader_epoch(epoch)
                .with_log_start_offset(log_start)
                .with_partition_max_bytes(settings.fetch_max_bytes),
        );
    }
    let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    if incremental {
        for (topic, partition) in session.sent.keys() {
            if !wanted.contains_key(&(topic.clone(), *partition)) {
                forgotten.entry(topic).or_default().push(*partition);
            }
        }
    }
    let topic_name = |topic: &str| TopicName(StrBytes::from_string(topic.to_string()));
    let topics = named
        .into_iter()
        .map(|(topic, partitions)| {
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions)
        })
        .collect();
    let forgotten_topics = forgotten
        .into_iter()
        .map(|(topic, partitions)| {
            ForgottenTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(partitions)
        })
        .collect();
    let (session_id, session_epoch) = if incremental {
        (session.id, session.epoch)
    } else {
        (0, 0)
    };
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(host.replication().node_id()))
        .with_max_wait_ms(settings.fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(settings.fetch_response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(session_id)
        .with_session_epoch(session_epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten_topics);
    let deadline = Duration::from_millis(
        settings.fetch_wait_max_ms.max(0) as u64 + REPLICA_CONNECT_TIMEOUT_MS * 3,
    );
    let response = client.call(&request, FETCH_VERSION, deadline).await?;
    let session_lost = [
        ResponseError::FetchSessionIdNotFound.code(),
        ResponseError::InvalidFetchSessionEpoch.code(),
    ];
    if session_lost.contains(&response.error_code) {
        debug!(
            leader = fetcher.leader,
            code = response.error_code,
            "the leader dropped the fetch session; starting over"
        );
        *session = Session::default();
        return Ok(());
    }
    if response.error_code != 0 {
        return Err(ClientError::Protocol {
            addr: client.addr(),
            why: format!("fetch refused with error {}", response.error_code),
        });
    }
    if incremental {
        session.epoch = if session.epoch == i32::MAX {
            1
        } else {
            session.epoch + 1
        };
        session.sent = wanted;
    } else if response.session_id != 0 {
        *session = Session {
            id: response.session_id,
            epoch: 1,
            sent: wanted,
        };
    }
    for topic in response.responses {
        let name = topic.topic.0.to_string();
        for answer in topic.partitions {
            let key = (name.clone(), answer.partition_index);
            let followed = fetcher
                .partitions
                .borrow()
                .get(&key)
                .map(|f| (f.replica.clone(), f.leader_epoch));
            let Some((replica, epoch)) = followed else {
                continue;
            };
            // The role may have changed while the fetch was out.
            let current = matches!(&*replica.role.borrow(),
                Role::Follower { leader, leader_epoch }
                    if *leader == fetcher.leader && *leader_epoch == epoch);
            if !current {
                continue;
            }
            apply_answer(host, fetcher, &key, &replica, answer).await;
        }
    }
    Ok(())
}

/// Step 3 for one partition.
async fn apply_answer<H: ReplicationHost>(
    host: &H,
    fetcher: &Fetcher,
    key: &(String, i32),
    replica: &Rc<Replica>,
    answer: kafka_protocol::messages::fetch_response::PartitionData,
) {
    let log = &replica.open.log;
    let code = answer.error_code;
    if code == ResponseError::OffsetOutOfRange.code() {
        let fetched_at = log.log_end_offset();
        if answer.log_start_offset >= 0 && fetched_at < answer.log_start_offset {
            warn!(topic = %replica.topic, partition = replica.partition, fetched_at,
                leader_log_start = answer.log_start_offset,
                "behind the leader's log start: restarting the log there");
            if let Err(err) = replica
                .open
                .truncate_fully_and_start_at(answer.log_start_offset)
                .await
            {
                warn!(topic = %replica.topic, partition = replica.partition, %err,
                    "cannot restart the log");
                park(fetcher, key, host);
            }
        } else if let Some(f) = fetcher.partitions.borrow_mut().get_mut(key) {
            f.truncate_first = true;
        }
        return;
    }
    if code != 0 {
        debug!(topic = %replica.topic, partition = replica.partition, code,
            "the leader refused the fetch of this partition");
        park(fetcher, key, host);
        return;
    }
    let records = whole_batches(answer.records.unwrap_or_default());
    if !records.is_empty() {
        match replica.open.append_replica(records).await {
            Ok(_) => {}
            Err(AppendError::Storage(StorageError::NonContiguous { .. })) => {
                if let Some(f) = fetcher.partitions.borrow_mut().get_mut(key) {
                    f.truncate_first = true;
                }
                return;
            }
            Err(err) => {
                warn!(topic = %replica.topic, partition = replica.partition, %err,
                    "cannot append what the leader sent");
                park(fetcher, key, host);
                return;
            }
        }
    }
    if answer.high_watermark >= 0 {
        log.set_replicated_high_watermark(Some(answer.high_watermark));
        replica.leader_high_watermark_known.set(true);
    }
    // The leader's log start (DeleteRecords, retention) moves this replica's too, as far as
    // its own high watermark reaches (Kafka's follower does the same), so a later leader here
    // does not bring deleted records back.
    let log_start = answer.log_start_offset.min(log.high_watermark());
    if log_start > log.log_start_offset()
        && let Err(err) = log.delete_records(log_start).await
    {
        warn!(topic = %replica.topic, partition = replica.partition, %err, log_start,
            "cannot move the log start to the leader's");
    }
}

/// The whole batches at the front of `records` (a leader cuts at batch boundaries, but a
/// partial batch at the end is legal in Kafka's protocol and is dropped here).
fn whole_batches(records: Bytes) -> Bytes {
    let mut end = 0usize;
    while records.len() >= end + 12 {
        let length = i32::from_be_bytes(records[end + 8..end + 12].try_into().expect("four bytes"));
        if length < 0 {
            break;
        }
        let next = end + 12 + length as usize;
        if next > records.len() {
            break;
        }
        end = next;
    }
    records.slice(..end)
}

#[cfg(test)]
mod tests {
    use super::whole_batches;
    use bytes::Bytes;

    fn batch(len: usize) -> Vec<u8> {
        let mut b = vec![0u8; 12 + len];
        b[8..12].copy_from_slice(&(len as i32).to_be_bytes());
        b
    }

    #[test]
    fn a_partial_batch_at_the_end_is_dropped() {
        let mut all = batch(50);
        all.extend(batch(20));
        let whole = all.len();
        all.extend(&batch(40)[..30]);
        assert_eq!(whole_batches(Bytes::from(all)).len(), whole);
        assert!(whole_batches(Bytes::from(vec![0u8; 5])).is_empty());
    }
}
