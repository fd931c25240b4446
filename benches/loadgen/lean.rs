//! The lean client (`loadgen --client lean`): a minimal Kafka producer and consumer of our own,
//! so the load generator can spend less of its core per message than librdkafka does.
//!
//! Scope: exactly what the load generator needs, nothing a general client would add (no
//! retries, no idempotence, no compression, no consumer groups, no TLS/SASL, no metadata
//! refresh after start). Message schemas come from the `kafka-protocol` crate; the v2 record
//! batch (header, varint records, CRC-32C from `attributes` to the end) is encoded and parsed
//! here. Fixed API versions, all served by ringbroker and by Kafka 3.x/4.x: Produce v9, Fetch
//! v12, Metadata v12 (no ApiVersions handshake).
//!
//! Producer: one thread per producer, one non-blocking connection per leader broker, driven by
//! `ppoll` with a nanosecond timeout. Messages are appended straight into the open batch of their
//! partition (no per-message allocation: the value is copied from a template whose first 8 bytes
//! are overwritten with the intended send time, exactly as the librdkafka path does). A batch
//! closes when the next message would take it past `batch_size_bytes` or when it is
//! `linger_ns` old; closed batches of a broker's partitions go out together in one Produce
//! request (at most one batch per partition per request, as Kafka requires for v3+), with up to
//! `max_in_flight` requests pipelined per connection. Responses come back in request order
//! (the Kafka protocol guarantees it per connection), so a FIFO of in-flight requests matches
//! them. Partitioning: with no key, the Java client's sticky partitioner (stay on a partition
//! until its batch closes, then move on; round robin here instead of random); with keys, the
//! message counter (round robin) or a random value, modulo the partition count.
//!
//! Consumer: one thread per (consumer, leader broker), blocking socket, one Fetch in flight
//! (`max_wait_ms` 100, `min_bytes` 1, the same as the librdkafka consumer's settings in
//! loadgen), parsing batches in place and handing each record's value to a callback.
//!
//! The producer holds at most `QUEUED_BYTES_MAX` of messages appended but not yet written into a
//! request (librdkafka bounds its queue the same way, `queue.buffering.max.kbytes`). When the
//! broker falls behind, messages past the bound are appended only as room frees up, still with
//! their own intended send times, so their wait is counted (no coordinated omission) while the
//! client's memory and CPU stay bounded: an unbounded queue made an overloaded step spend the
//! client's core on copying gigabytes of backlog instead of sending.
//!
//! acks=0: the broker sends no response, so a message counts as acknowledged once its request
//! is queued to the socket (librdkafka reports such messages delivered when they are sent).

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const METADATA_VERSION: i16 = 12;
const CLIENT_ID: &str = "loadgen-lean";

/// Bytes of messages a producer holds appended but not yet written into a Produce request.
const QUEUED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bytes of a v2 record batch header, up to and including `recordsCount`.
const BATCH_HEADER_BYTES: usize = 61;
/// Where the CRC-32C field sits, and where the bytes it covers start (`attributes`).
const BATCH_CRC_AT: usize = 17;
const BATCH_CRC_FROM: usize = 21;
/// Frame size prefix plus `baseOffset` and `batchLength`: the part of a batch that `batchLength`
/// does not count.
const BATCH_LOG_OVERHEAD_BYTES: usize = 12;

/// Where every partition's leader is, from one Metadata request.
#[derive(Clone, Debug)]
pub struct ClusterMap {
    /// Broker id to `host:port`.
    pub brokers: HashMap<i32, String>,
    /// (topic, partition) to the leader's broker id.
    pub leaders: HashMap<(String, i32), i32>,
}

/// How the producer picks a partition for each message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyMode {
    /// No key; sticky partitioner.
    NoKey,
    /// 8-byte key = message counter; partition = counter mod partitions.
    RoundRobin,
    /// 8-byte random key; partition = key mod partitions.
    Random,
}

/// Producer knobs (the ones the figures depend on).
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    /// 0, 1 or -1.
    pub acks: i16,
    /// Largest batch (bytes of the encoded batch, header included).
    pub batch_size_bytes: usize,
    /// How long a batch may wait for more messages after its first one.
    pub linger_ns: u64,
    /// Produce requests in flight per connection.
    pub max_in_flight: usize,
    /// Partition choice.
    pub keys: KeyMode,
    /// Produce request timeout sent to the broker.
    pub request_timeout_ms: i32,
}

/// The open-loop schedule of one producer: message `k` is due at
/// `start_ns + offset_ns + k * interval_ns`, until `end_ns`.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Time base (the caller's clock).
    pub start_ns: u64,
    /// This producer's stagger.
    pub offset_ns: f64,
    /// Time between two messages of this producer.
    pub interval_ns: f64,
    /// No message is due at or after this.
    pub end_ns: u64,
}

/// What the producer reports as it goes. Calls come from the producer's own thread.
pub trait ProduceSink {
    /// A batch was acknowledged at `now_ns`; `intended_ns` are its messages' intended send times.
    fn acked(&mut self, intended_ns: &[u64], now_ns: u64);
    /// `count` messages failed (error code from the broker or a lost connection).
    fn failed(&mut self, count: u64);
    /// `count` messages were handed to the client, `late` of them more than 10 ms behind
    /// schedule (reported once per pass over the schedule, not per message).
    fn sent(&mut self, count: u64, late: u64);
}

fn request_header(key: ApiKey, version: i16, correlation_id: i32) -> RequestHeader {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
    header
}

/// Appends one size-prefixed request frame to `out`.
fn encode_frame<M: Encodable>(
    out: &mut BytesMut,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> anyhow::Result<()> {
    let at = out.len();
    out.put_i32(0);
    request_header(key, version, correlation_id)
        .encode(out, key.request_header_version(version))
        .context("encoding a request header")?;
    body.encode(out, version).context("encoding a request")?;
    let size = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Reads one response frame from a blocking stream and checks its correlation id.
fn read_response(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> anyhow::Result<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if size < 4 {
        bail!("bad response size {size}");
    }
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body)?;
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
        .context("decoding a response header")?;
    if header.correlation_id != correlation_id {
        bail!(
            "correlation id {} where {correlation_id} was expected",
            header.correlation_id
        );
    }
    Ok(body)
}

fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Asks `bootstrap` for the leaders of every partition of `topics`, retrying until each of the
/// `partitions` partitions has one (topics were just created) or 30 s pass.
pub fn discover(bootstrap: &str, topics: &[String], partitions: i32) -> anyhow::Result<ClusterMap> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = connect(bootstrap)?;
    let mut correlation_id = 0;
    loop {
        let mut request = MetadataRequest::default();
        request.topics = Some(
            topics
                .iter()
                .map(|t| {
                    let mut topic = MetadataRequestTopic::default();
                    topic.name = Some(TopicName(StrBytes::from_string(t.clone())));
                    topic
                })
                .collect(),
        );
        request.allow_auto_topic_creation = false;
        let mut out = BytesMut::new();
        correlation_id += 1;
        encode_frame(
            &mut out,
            ApiKey::Metadata,
            METADATA_VERSION,
            correlation_id,
            &request,
        )?;
        stream.write_all(&out)?;
        let mut body = read_response(
            &mut stream,
            ApiKey::Metadata,
            METADATA_VERSION,
            correlation_id,
        )?;
        let response = MetadataResponse::decode(&mut body, METADATA_VERSION)?;
        let brokers: HashMap<i32, String> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let mut leaders = HashMap::new();
        for topic in &response.topics {
            let Some(name) = &topic.name else { continue };
            for p in &topic.partitions {
                if p.error_code == 0 && brokers.contains_key(&p.leader_id.0) {
                    leaders.insert((name.0.to_string(), p.partition_index), p.leader_id.0);
                }
            }
        }
        if leaders.len() == topics.len() * partitions as usize {
            return Ok(ClusterMap { brokers, leaders });
        }
        if Instant::now() > deadline {
            bail!(
                "metadata: {} of {} partitions have a leader after 30 s",
                leaders.len(),
                topics.len() * partitions as usize
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Length of `v` as a zigzag varint.
fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// Reads a zigzag varint at `*at`, advancing it. None if it runs past the end.
fn get_varint(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*at)?;
        *at += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Bytes one record takes in a batch (its length prefix included).
fn record_bytes(offset_delta: i32, key_len: usize, value_len: usize) -> usize {
    let body = record_body_bytes(offset_delta, key_len, value_len);
    varint_len(body as i64) + body
}

/// Bytes of one record's body (what its length prefix counts).
fn record_body_bytes(offset_delta: i32, key_len: usize, value_len: usize) -> usize {
    let key_part = if key_len == 0 {
        varint_len(-1)
    } else {
        varint_len(key_len as i64) + key_len
    };
    1 // attributes
        + varint_len(0) // timestamp delta
        + varint_len(i64::from(offset_delta))
        + key_part
        + varint_len(value_len as i64)
        + value_len
        + varint_len(0) // header count
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A v2 record batch being filled in place.
struct OpenBatch {
    buf: BytesMut,
    count: i32,
    /// When the first record went in (linger starts there).
    opened_ns: u64,
    base_timestamp_ms: i64,
    intended_ns: Vec<u64>,
}

impl OpenBatch {
    fn new(capacity_bytes: usize, now_ns: u64, intended_ns: Vec<u64>) -> OpenBatch {
        let mut buf = BytesMut::with_capacity(capacity_bytes);
        buf.put_bytes(0, BATCH_HEADER_BYTES);
        OpenBatch {
            buf,
            count: 0,
            opened_ns: now_ns,
            base_timestamp_ms: wall_clock_ms(),
            intended_ns,
        }
    }

    /// Appends one record: no key when `key` is empty, `value` as given.
    fn append(&mut self, key: &[u8], value: &[u8], intended_ns: u64) {
        let body_len = record_body_bytes(self.count, key.len(), value.len());
        put_varint(&mut self.buf, body_len as i64);
        self.buf.put_u8(0); // attributes
        put_varint(&mut self.buf, 0); // timestamp delta: one timestamp per batch
        put_varint(&mut self.buf, i64::from(self.count)); // offset delta
        if key.is_empty() {
            put_varint(&mut self.buf, -1);
        } else {
            put_varint(&mut self.buf, key.len() as i64);
            self.buf.put_slice(key);
        }
        put_varint(&mut self.buf, value.len() as i64);
        self.buf.put_slice(value);
        put_varint(&mut self.buf, 0); // no headers
        self.count += 1;
        self.intended_ns.push(intended_ns);
    }

    /// Fills in the header and the CRC; returns the batch and its messages' intended times.
    fn close(mut self) -> (Bytes, Vec<u64>) {
        let len = self.buf.len();
        let count = self.count;
        let ts = self.base_timestamp_ms;
        let h = &mut self.buf[..BATCH_HEADER_BYTES];
        h[0..8].copy_from_slice(&0i64.to_be_bytes()); // baseOffset: the broker assigns it
        h[8..12].copy_from_slice(&((len - BATCH_LOG_OVERHEAD_BYTES) as i32).to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        h[16] = 2; // magic
        h[21..23].copy_from_slice(&0i16.to_be_bytes()); // attributes: no compression, CreateTime
        h[23..27].copy_from_slice(&(count - 1).to_be_bytes()); // lastOffsetDelta
        h[27..35].copy_from_slice(&ts.to_be_bytes()); // baseTimestamp
        h[35..43].copy_from_slice(&ts.to_be_bytes()); // maxTimestamp
        h[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producerId
        h[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        h[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        h[57..61].copy_from_slice(&count.to_be_bytes()); // recordsCount
        let crc = crc32c::crc32c(&self.buf[BATCH_CRC_FROM..]);
        self.buf[BATCH_CRC_AT..BATCH_CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        (self.buf.freeze(), self.intended_ns)
    }
}

/// One partition as the producer sees it.
struct PartitionSlot {
    topic: TopicName,
    partition: i32,
    open: Option<OpenBatch>,
    closed: VecDeque<(Bytes, Vec<u64>)>,
}

/// A request on the wire, waiting for its response.
struct InFlight {
    correlation_id: i32,
    /// (slot, intended send times of the batch's messages).
    batches: Vec<(usize, Vec<u64>)>,
}

/// A non-blocking connection to one broker.
struct ProducerConnection {
    stream: TcpStream,
    out: BytesMut,
    input: BytesMut,
    in_flight: VecDeque<InFlight>,
    slots: Vec<usize>,
}

/// Runs one open-loop producer until its schedule ends and every request is answered (or
/// `drain_timeout` passes). `topics[k % topics.len()]` gets message `k`. `template` is the
/// message value; its first 8 bytes are replaced by the intended send time (little endian).
#[allow(clippy::too_many_arguments)]
pub fn run_producer(
    map: &ClusterMap,
    topics: &[String],
    partitions: i32,
    settings: &ProducerSettings,
    schedule: Schedule,
    template: &[u8],
    clock: fn() -> u64,
    sink: &mut dyn ProduceSink,
    drain_timeout: Duration,
) -> anyhow::Result<()> {
    assert!(template.len() >= 8);
    // Connections to every leader broker, and a slot per (topic, partition).
    let mut connections: Vec<ProducerConnection> = Vec::new();
    let mut by_broker: HashMap<i32, usize> = HashMap::new();
    let mut slots: Vec<PartitionSlot> = Vec::new();
    // slot index of (topic index, partition)
    let mut slot_of: Vec<Vec<usize>> = vec![Vec::new(); topics.len()];
    for (ti, topic) in topics.iter().enumerate() {
        for p in 0..partitions {
            let leader = *map
                .leaders
                .get(&(topic.clone(), p))
                .ok_or_else(|| anyhow!("no leader for {topic}-{p}"))?;
            let connection = match by_broker.get(&leader) {
                Some(&c) => c,
                None => {
                    let stream = connect(&map.brokers[&leader])?;
                    stream.set_nonblocking(true)?;
                    connections.push(ProducerConnection {
                        stream,
                        out: BytesMut::with_capacity(settings.batch_size_bytes * 2),
                        input: BytesMut::with_capacity(64 * 1024),
                        in_flight: VecDeque::new(),
                        slots: Vec::new(),
                    });
                    by_broker.insert(leader, connections.len() - 1);
                    connections.len() - 1
                }
            };
            connections[connection].slots.push(slots.len());
            slot_of[ti].push(slots.len());
            slots.push(PartitionSlot {
                topic: TopicName(StrBytes::from_string(topic.clone())),
                partition: p,
                open: None,
                closed: VecDeque::new(),
            });
        }
    }
    let message_bytes_max = record_bytes(i32::MAX, 8, template.len());
    let batch_capacity = settings
        .batch_size_bytes
        .max(BATCH_HEADER_BYTES + message_bytes_max);
    let mut value = template.to_vec();
    let mut spare_vecs: Vec<Vec<u64>> = Vec::new();
    let mut sticky: Vec<usize> = vec![0; topics.len()];
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d ^ schedule.offset_ns.to_bits();
    let mut k: u64 = 0;
    let mut correlation_id: i32 = 0;
    let mut schedule_done = false;
    let mut drain_deadline: Option<u64> = None;
    let mut pollfds: Vec<libc::pollfd> = Vec::with_capacity(connections.len());
    // Messages appended to batches not yet in a request, and the bound on them.
    let mut queued_messages: usize = 0;
    let queued_messages_max = (QUEUED_BYTES_MAX / message_bytes_max).max(1024);

    loop {
        let now = clock();
        // 1. Append every message that is due (within 20 µs; each keeps its intended time).
        let (mut appended, mut appended_late) = (0u64, 0u64);
        while !schedule_done {
            let intended =
                schedule.start_ns + (schedule.offset_ns + k as f64 * schedule.interval_ns) as u64;
            if intended >= schedule.end_ns {
                schedule_done = true;
                break;
            }
            if intended > now + 20_000 || queued_messages >= queued_messages_max {
                break;
            }
            // Late: appended more than 10 ms after the batch it belongs in was due to leave.
            appended += 1;
            appended_late += u64::from(now > intended + settings.linger_ns + 10_000_000);
            value[..8].copy_from_slice(&intended.to_le_bytes());
            let ti = (k as usize) % topics.len();
            let (key, pi): ([u8; 8], usize) = match settings.keys {
                KeyMode::NoKey => ([0; 8], sticky[ti]),
                KeyMode::RoundRobin => (
                    k.to_le_bytes(),
                    ((k / topics.len() as u64) % partitions as u64) as usize,
                ),
                KeyMode::Random => {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    (rng.to_le_bytes(), (rng % partitions as u64) as usize)
                }
            };
            let key: &[u8] = if settings.keys == KeyMode::NoKey {
                &[]
            } else {
                &key
            };
            let si = slot_of[ti][pi];
            let slot = &mut slots[si];
            let need = record_bytes(
                slot.open.as_ref().map_or(0, |b| b.count),
                key.len(),
                value.len(),
            );
            if let Some(open) = &slot.open
                && open.count > 0
                && open.buf.len() + need > settings.batch_size_bytes
            {
                let full = slot.open.take().unwrap();
                slot.closed.push_back(full.close());
                if settings.keys == KeyMode::NoKey {
                    sticky[ti] = (sticky[ti] + 1) % partitions as usize;
                }
            }
            // The sticky partition may have moved: append to the slot chosen now.
            let pi = if settings.keys == KeyMode::NoKey {
                sticky[ti]
            } else {
                pi
            };
            let slot = &mut slots[slot_of[ti][pi]];
            // Linger counts from the first message's intended send time, as if the application
            // had handed it over exactly then.
            let open = slot.open.get_or_insert_with(|| {
                OpenBatch::new(
                    batch_capacity,
                    intended,
                    spare_vecs.pop().unwrap_or_default(),
                )
            });
            open.append(key, &value, intended);
            queued_messages += 1;
            k += 1;
        }
        if appended > 0 {
            sink.sent(appended, appended_late);
        }
        // 2. Close batches whose linger is over (all of them once the schedule has ended).
        let mut next_linger_ns = u64::MAX;
        for (ti, slot_ids) in slot_of.iter().enumerate() {
            for (pi, &si) in slot_ids.iter().enumerate() {
                let slot = &mut slots[si];
                if let Some(open) = &slot.open {
                    let due = open.opened_ns + settings.linger_ns;
                    if schedule_done || due <= now {
                        let b = slot.open.take().unwrap();
                        slot.closed.push_back(b.close());
                        if settings.keys == KeyMode::NoKey && sticky[ti] == pi {
                            sticky[ti] = (sticky[ti] + 1) % partitions as usize;
                        }
                    } else {
                        next_linger_ns = next_linger_ns.min(due);
                    }
                }
            }
        }
        // 3. Build requests from closed batches, up to max_in_flight per connection.
        for connection in connections.iter_mut() {
            while connection.in_flight.len() < settings.max_in_flight
                && connection
                    .slots
                    .iter()
                    .any(|&s| !slots[s].closed.is_empty())
            {
                correlation_id = correlation_id.wrapping_add(1);
                let mut request = ProduceRequest::default();
                request.acks = settings.acks;
                request.timeout_ms = settings.request_timeout_ms;
                let mut batches = Vec::new();
                for &si in &connection.slots {
                    let slot = &mut slots[si];
                    let Some((records, intended)) = slot.closed.pop_front() else {
                        continue;
                    };
                    queued_messages -= intended.len();
                    let topic = match request
                        .topic_data
                        .iter_mut()
                        .position(|t| t.name == slot.topic)
                    {
                        Some(i) => &mut request.topic_data[i],
                        None => {
                            let mut t = TopicProduceData::default();
                            t.name = slot.topic.clone();
                            request.topic_data.push(t);
                            request.topic_data.last_mut().unwrap()
                        }
                    };
                    let mut data = PartitionProduceData::default();
                    data.index = slot.partition;
                    data.records = Some(records);
                    topic.partition_data.push(data);
                    batches.push((si, intended));
                }
                encode_frame(
                    &mut connection.out,
                    ApiKey::Produce,
                    PRODUCE_VERSION,
                    correlation_id,
                    &request,
                )?;
                if settings.acks == 0 {
                    let now = clock();
                    for (_, mut intended) in batches {
                        sink.acked(&intended, now);
                        intended.clear();
                        spare_vecs.push(intended);
                    }
                } else {
                    connection.in_flight.push_back(InFlight {
                        correlation_id,
                        batches,
                    });
                }
            }
        }
        // 4. Write what the sockets take, read and match responses.
        for connection in connections.iter_mut() {
            while !connection.out.is_empty() {
                match connection.stream.write(&connection.out) {
                    Ok(0) => bail!("broker closed the connection"),
                    Ok(n) => connection.out.advance(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("writing to the broker"),
                }
            }
            loop {
                if connection.input.capacity() - connection.input.len() < 16 * 1024 {
                    connection.input.reserve(64 * 1024);
                }
                let spare = connection.input.spare_capacity_mut();
                // SAFETY: `read` only writes initialised bytes into the buffer it is given, and
                // we only advance the length by what it reports.
                let spare: &mut [u8] = unsafe {
                    std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast(), spare.len())
                };
                match connection.stream.read(spare) {
                    Ok(0) => bail!("broker closed the connection"),
                    Ok(n) => unsafe { connection.input.set_len(connection.input.len() + n) },
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("reading from the broker"),
                }
            }
            while connection.input.len() >= 4 {
                let size = i32::from_be_bytes(connection.input[..4].try_into().unwrap()) as usize;
                if connection.input.len() < 4 + size {
                    break;
                }
                connection.input.advance(4);
                let mut body = connection.input.split_to(size).freeze();
                let header = ResponseHeader::decode(
                    &mut body,
                    ApiKey::Produce.response_header_version(PRODUCE_VERSION),
                )?;
                let request = connection
                    .in_flight
                    .pop_front()
                    .ok_or_else(|| anyhow!("a response nobody asked for"))?;
                if header.correlation_id != request.correlation_id {
                    bail!(
                        "response {} to request {}",
                        header.correlation_id,
                        request.correlation_id
                    );
                }
                let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION)?;
                let now = clock();
                for (si, mut intended) in request.batches {
                    let slot = &slots[si];
                    let error = response
                        .responses
                        .iter()
                        .find(|t| t.name == slot.topic)
                        .and_then(|t| {
                            t.partition_responses
                                .iter()
                                .find(|p| p.index == slot.partition)
                        })
                        .map_or(-1, |p| p.error_code);
                    if error == 0 {
                        sink.acked(&intended, now);
                    } else {
                        sink.failed(intended.len() as u64);
                    }
                    intended.clear();
                    spare_vecs.push(intended);
                }
            }
        }
        // 5. Done, or wait for the next message, linger deadline or socket event.
        let idle = connections
            .iter()
            .all(|c| c.in_flight.is_empty() && c.out.is_empty())
            && slots
                .iter()
                .all(|s| s.open.is_none() && s.closed.is_empty());
        if schedule_done && idle {
            return Ok(());
        }
        let now = clock();
        if schedule_done {
            let deadline = *drain_deadline.get_or_insert(now + drain_timeout.as_nanos() as u64);
            if now > deadline {
                let lost: usize = connections
                    .iter()
                    .flat_map(|c| c.in_flight.iter())
                    .flat_map(|r| r.batches.iter())
                    .map(|(_, v)| v.len())
                    .sum::<usize>()
                    + slots
                        .iter()
                        .flat_map(|s| s.closed.iter())
                        .map(|(_, v)| v.len())
                        .sum::<usize>();
                sink.failed(lost as u64);
                bail!("{lost} messages unanswered {drain_timeout:?} after the schedule ended");
            }
        }
        let mut wake_ns = next_linger_ns;
        if !schedule_done && queued_messages >= queued_messages_max {
            // Full: wait for the sockets (a response frees a request slot) or a linger.
            wake_ns = wake_ns.min(now + 1_000_000);
        } else if !schedule_done {
            // Messages are appended lazily: nothing observable happens between the intended send
            // time of a message and the moment its batch must leave (its linger deadline, or
            // when the batch fills), so the thread sleeps until then and appends every message
            // due by that time with its own intended time. This is what saves the per-message
            // wake-ups a send() call per message costs the librdkafka path.
            let next =
                schedule.start_ns + (schedule.offset_ns + k as f64 * schedule.interval_ns) as u64;
            let record = record_bytes(0, 8, value.len());
            let open_room = |slot: &PartitionSlot| {
                slot.open
                    .as_ref()
                    .map(|open| settings.batch_size_bytes.saturating_sub(open.buf.len()) / record)
            };
            let fit = if settings.keys == KeyMode::NoKey {
                let ti = (k as usize) % topics.len();
                open_room(&slots[slot_of[ti][sticky[ti]]])
            } else {
                slots.iter().filter_map(open_room).min()
            };
            let defer_ns = match fit {
                Some(fit) => fit as f64 * schedule.interval_ns,
                None => settings.linger_ns as f64,
            };
            wake_ns = wake_ns.min(next + (defer_ns.min(settings.linger_ns as f64)) as u64);
        } else {
            wake_ns = wake_ns.min(now + 10_000_000);
        }
        let timeout_ns = wake_ns.saturating_sub(now);
        if timeout_ns <= 20_000 {
            continue;
        }
        pollfds.clear();
        for c in &connections {
            let mut events = libc::POLLIN;
            if !c.out.is_empty() {
                events |= libc::POLLOUT;
            }
            pollfds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        // Wake a little early (the same 20 µs as the send window above).
        let t = timeout_ns - 20_000;
        let ts = libc::timespec {
            tv_sec: (t / 1_000_000_000) as libc::time_t,
            tv_nsec: (t % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `pollfds` is a live array of `len` pollfd structs; a null sigmask is allowed.
        unsafe {
            libc::ppoll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
    }
}

/// Consumer knobs.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// Fetch `max_wait_ms`.
    pub max_wait_ms: i32,
    /// Fetch `max_bytes`.
    pub max_bytes: i32,
    /// Per-partition `partition_max_bytes`.
    pub partition_max_bytes: i32,
}

/// Fetches `parts` (all led by `broker`) from offset 0 until `stop()` says so, calling
/// `on_value(value, now_ns)` for each record, in offset order per partition. Returns the number
/// of records seen.
pub fn run_consumer(
    map: &ClusterMap,
    broker: i32,
    parts: &[(String, i32)],
    settings: &ConsumerSettings,
    clock: fn() -> u64,
    stop: &mut dyn FnMut(bool) -> bool,
    on_value: &mut dyn FnMut(&[u8], u64),
) -> anyhow::Result<u64> {
    let mut stream = connect(&map.brokers[&broker])?;
    let mut offsets: HashMap<(String, i32), i64> = parts.iter().map(|p| (p.clone(), 0)).collect();
    let mut topics: Vec<String> = parts.iter().map(|(t, _)| t.clone()).collect();
    topics.dedup();
    let mut correlation_id = 0;
    let mut seen: u64 = 0;
    let mut out = BytesMut::new();
    loop {
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(-1);
        request.max_wait_ms = settings.max_wait_ms;
        request.min_bytes = 1;
        request.max_bytes = settings.max_bytes;
        request.isolation_level = 0;
        request.session_id = 0;
        request.session_epoch = -1;
        for topic in &topics {
            let mut t = FetchTopic::default();
            t.topic = TopicName(StrBytes::from_string(topic.clone()));
            for (_, p) in parts.iter().filter(|(pt, _)| pt == topic) {
                let mut fp = FetchPartition::default();
                fp.partition = *p;
                fp.current_leader_epoch = -1;
                fp.fetch_offset = offsets[&(topic.clone(), *p)];
                fp.last_fetched_epoch = -1;
                fp.log_start_offset = -1;
                fp.partition_max_bytes = settings.partition_max_bytes;
                t.partitions.push(fp);
            }
            request.topics.push(t);
        }
        correlation_id += 1;
        out.clear();
        encode_frame(
            &mut out,
            ApiKey::Fetch,
            FETCH_VERSION,
            correlation_id,
            &request,
        )?;
        stream.write_all(&out)?;
        let mut body = read_response(&mut stream, ApiKey::Fetch, FETCH_VERSION, correlation_id)?;
        let response = FetchResponse::decode(&mut body, FETCH_VERSION)?;
        let now = clock();
        let mut got = 0u64;
        for topic in &response.responses {
            let name = topic.topic.0.to_string();
            for p in &topic.partitions {
                if p.error_code != 0 {
                    eprintln!(
                        "loadgen: lean fetch {name}-{}: error {}",
                        p.partition_index, p.error_code
                    );
                    continue;
                }
                let Some(records) = &p.records else { continue };
                let next = walk_records(records, &mut |value| {
                    on_value(value, now);
                    got += 1;
                })?;
                if let Some(next) = next {
                    offsets.insert((name.clone(), p.partition_index), next);
                }
            }
        }
        seen += got;
        if stop(got > 0) {
            return Ok(seen);
        }
    }
}

/// Walks every complete batch in `records`, calling `on_value` for each record's value.
/// Returns the offset after the last complete batch (None if there was none). A truncated batch
/// at the end (the fetch size limit cut it) is skipped; it comes whole in the next fetch.
pub fn walk_records(
    records: &[u8],
    on_value: &mut dyn FnMut(&[u8]),
) -> anyhow::Result<Option<i64>> {
    let mut at = 0;
    let mut next = None;
    while records.len() - at >= BATCH_HEADER_BYTES {
        let h = &records[at..];
        let base_offset = i64::from_be_bytes(h[0..8].try_into().unwrap());
        let batch_length = i32::from_be_bytes(h[8..12].try_into().unwrap());
        let size = BATCH_LOG_OVERHEAD_BYTES + batch_length.max(0) as usize;
        if batch_length < 49 || records.len() - at < size {
            break;
        }
        if h[16] != 2 {
            bail!("batch at offset {base_offset} has magic {}", h[16]);
        }
        let attributes = i16::from_be_bytes(h[21..23].try_into().unwrap());
        if attributes & 0x7 != 0 {
            bail!("compressed batches are not supported by the lean client");
        }
        let last_offset_delta = i32::from_be_bytes(h[23..27].try_into().unwrap());
        let count = i32::from_be_bytes(h[57..61].try_into().unwrap());
        let batch = &records[at..at + size];
        let mut pos = BATCH_HEADER_BYTES;
        for _ in 0..count {
            let bad = || anyhow!("malformed record in batch at offset {base_offset}");
            let len = get_varint(batch, &mut pos).ok_or_else(bad)? as usize;
            let end = pos + len;
            if end > batch.len() {
                return Err(bad());
            }
            pos += 1; // attributes
            get_varint(batch, &mut pos).ok_or_else(bad)?; // timestamp delta
            get_varint(batch, &mut pos).ok_or_else(bad)?; // offset delta
            let key_len = get_varint(batch, &mut pos).ok_or_else(bad)?;
            if key_len > 0 {
                pos += key_len as usize;
            }
            let value_len = get_varint(batch, &mut pos).ok_or_else(bad)?;
            if value_len >= 0 {
                let v_end = pos + value_len as usize;
                if v_end > end {
                    return Err(bad());
                }
                on_value(&batch[pos..v_end]);
            }
            pos = end;
        }
        next = Some(base_offset + i64::from(last_offset_delta) + 1);
        at += size;
    }
    Ok(next)
}

/// A batch of `values` (no keys) as the producer encodes it, for the start-up self-check.
pub fn encode_batch(values: &[&[u8]]) -> Bytes {
    let mut batch = OpenBatch::new(4096, 0, Vec::new());
    for (i, v) in values.iter().enumerate() {
        batch.append(&[], v, i as u64);
    }
    batch.close().0
}
