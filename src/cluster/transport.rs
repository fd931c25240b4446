//! Connections between controller quorum voters: one outbound connection per peer carrying
//! this node's Raft messages, and an accept loop for the peers' connections carrying theirs.
//!
//! Owner: shard 0 of a controller node. `Transport::start` spawns the accept loop and one
//! sender task per peer on the current glommio executor; `close` (or dropping the transport)
//! ends them all, closes the listener and every peer connection. Tasks await only socket I/O,
//! timers and local channels.
//!
//! A frame is `[u32 length][16-byte cluster id][u64 from][u64 to][wire::encode(message)]`,
//! big-endian. The reader refuses, closing the connection with one rate-limited log line and
//! changing nothing: a length past `QUORUM_FRAME_BYTES_MAX`, another cluster's id, a sender
//! that is not a voter or that is this node, a frame for another node, and any message the
//! wire codec refuses. Raft tolerates lost messages, so sending never blocks the quorum: a
//! peer's queue holds at most `QUORUM_PEER_QUEUE_MAX` messages and drops new ones past that,
//! and a peer that cannot be reached is retried with a backoff up to `QUORUM_RECONNECT_MAX_MS`
//! (raft-rs is told it is unreachable, so it probes it gently).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::channel::oneshot;
use futures::future::Shared;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use raft::eraftpb::Message;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::cluster::wire::{self, WireError};
use crate::limits;

const FRAME_HEADER_BYTES: usize = 16 + 8 + 8;

/// Why a peer's frame was refused. `Display` is one line for the log.
#[derive(Debug, thiserror::Error)]
pub enum PeerFrameError {
    /// A length past the bound, or shorter than the header.
    #[error("frame of {0} bytes is outside 32..={max}", max = limits::QUORUM_FRAME_BYTES_MAX)]
    Size(usize),
    /// Another cluster's id.
    #[error("frame from cluster {0}, not this one")]
    Cluster(Uuid),
    /// A sender outside the quorum, or this node, or a frame for another node.
    #[error("frame from node {from} to node {to}: not a peer voter, or not for this node")]
    Stranger {
        /// Claimed sender.
        from: u64,
        /// Addressee.
        to: u64,
    },
    /// The message inside is refused.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Encodes one frame (with its length prefix) into `out`.
pub fn encode_frame(cluster_id: Uuid, message: &Message, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(cluster_id.as_bytes());
    out.extend_from_slice(&message.from.to_be_bytes());
    out.extend_from_slice(&message.to.to_be_bytes());
    wire::encode(message, out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Decodes a frame body (after its length) from `from`-claiming peers of `voters` to `me`.
pub fn decode_frame(
    body: &[u8],
    cluster_id: Uuid,
    me: u64,
    voters: &[u64],
) -> Result<Message, PeerFrameError> {
    if body.len() < FRAME_HEADER_BYTES {
        return Err(PeerFrameError::Size(body.len()));
    }
    let id = Uuid::from_bytes(body[..16].try_into().expect("16 bytes"));
    if id != cluster_id {
        return Err(PeerFrameError::Cluster(id));
    }
    let from = u64::from_be_bytes(body[16..24].try_into().expect("8 bytes"));
    let to = u64::from_be_bytes(body[24..32].try_into().expect("8 bytes"));
    if to != me || from == me || !voters.contains(&from) {
        return Err(PeerFrameError::Stranger { from, to });
    }
    let message = wire::decode(&body[FRAME_HEADER_BYTES..])?;
    if message.from != from || message.to != to {
        return Err(PeerFrameError::Stranger {
            from: message.from,
            to: message.to,
        });
    }
    Ok(message)
}

/// Logs at most one refusal a second, counting the others.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
}

impl RefusalLog {
    fn refused(&self, peer: Option<SocketAddr>, err: &PeerFrameError) {
        let now = Instant::now();
        if self
            .last
            .get()
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.suppressed.set(self.suppressed.get() + 1);
            return;
        }
        let suppressed = self.suppressed.replace(0);
        self.last.set(Some(now));
        warn!(?peer, %err, suppressed, "controller listener: frame refused, connection closed");
    }
}

/// Resolves once the transport is closed.
type Stopped = Shared<oneshot::Receiver<()>>;

/// The sending side: one queue per peer.
#[derive(Debug)]
pub struct Transport {
    queues: BTreeMap<u64, LocalSender<Message>>,
    /// Dropped on close, which resolves every task's `Stopped`.
    stop: Option<oneshot::Sender<()>>,
    /// The accept loop and inbound connection tasks still running.
    inbound: Rc<Cell<usize>>,
    /// Peers whose last send failed since the driver last asked (`take_unreachable`).
    unreachable: Rc<std::cell::RefCell<Vec<u64>>>,
}

impl Transport {
    /// Binds nothing: `listener` is already bound. Spawns the accept loop (messages for this
    /// node go to `inbox`) and a sender per peer of `peers` (id → address).
    pub fn start(
        me: u64,
        cluster_id: Uuid,
        voters: Vec<u64>,
        peers: BTreeMap<u64, SocketAddr>,
        listener: TcpListener,
        inbox: LocalSender<Message>,
    ) -> Transport {
        let unreachable = Rc::new(std::cell::RefCell::new(Vec::new()));
        let (stop, stopped) = oneshot::channel();
        let inbound = Rc::new(Cell::new(1));
        let shared = Rc::new(Inbound {
            me,
            cluster_id,
            voters,
            inbox,
            refusals: RefusalLog::default(),
            stopped: stopped.shared(),
            open: inbound.clone(),
        });
        glommio::spawn_local(accept_loop(listener, shared)).detach();
        let mut queues = BTreeMap::new();
        for (id, addr) in peers {
            if id == me {
                continue;
            }
            let (tx, rx) = local_channel::new_bounded(limits::QUORUM_PEER_QUEUE_MAX);
            glommio::spawn_local(send_loop(id, addr, cluster_id, rx, unreachable.clone())).detach();
            queues.insert(id, tx);
        }
        Transport {
            queues,
            stop: Some(stop),
            inbound,
            unreachable,
        }
    }

    /// Queues `message` for its peer; drops it if the queue is full (Raft resends).
    pub fn send(&self, message: Message) {
        if let Some(queue) = self.queues.get(&message.to)
            && queue.try_send(message).is_err()
        {
            debug!("quorum peer queue full: message dropped");
        }
    }

    /// Peers a send failed to since the last call.
    pub fn take_unreachable(&self) -> Vec<u64> {
        let mut list = std::mem::take(&mut *self.unreachable.borrow_mut());
        list.sort_unstable();
        list.dedup();
        list
    }

    /// Stops every task: peer queues close, the listener and inbound connections are dropped.
    pub fn close(&mut self) {
        self.queues.clear();
        self.stop.take();
    }
}

impl Transport {
    /// Closes, then waits (at most a second) until the listener and every inbound connection
    /// are dropped, so a restarted voter can bind the port and peers see the old connections
    /// close.
    pub async fn shut_down(&mut self) {
        self.close();
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.inbound.get() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.close();
    }
}

/// What the accept loop and its connection tasks share.
struct Inbound {
    me: u64,
    cluster_id: Uuid,
    voters: Vec<u64>,
    inbox: LocalSender<Message>,
    refusals: RefusalLog,
    stopped: Stopped,
    /// The accept loop and connection tasks still running.
    open: Rc<Cell<usize>>,
}

async fn accept_loop(listener: TcpListener, shared: Rc<Inbound>) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            let _ = shared.stopped.clone().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(err)) => {
                warn!(%err, "controller listener: accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // `open` counts this loop too.
        if shared.open.get() > limits::QUORUM_INBOUND_CONNECTIONS_MAX {
            debug!("controller listener: too many connections, closing a new one");
            continue;
        }
        shared.open.set(shared.open.get() + 1);
        let shared = shared.clone();
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            future::or(read_peer(stream, peer, &shared), async {
                let _ = shared.stopped.clone().await;
            })
            .await;
            shared.open.set(shared.open.get() - 1);
        })
        .detach();
    }
    drop(listener);
    shared.open.set(shared.open.get() - 1);
}

async fn read_peer(mut stream: TcpStream, peer: Option<SocketAddr>, shared: &Inbound) {
    let Inbound {
        me,
        cluster_id,
        voters,
        inbox,
        refusals,
        ..
    } = shared;
    let idle = Duration::from_millis(limits::QUORUM_PEER_IDLE_MS);
    let _ = stream.set_read_timeout(Some(idle));
    let mut body = Vec::new();
    loop {
        let mut size = [0u8; 4];
        if stream.read_exact(&mut size).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(size) as usize;
        if !(FRAME_HEADER_BYTES..=limits::QUORUM_FRAME_BYTES_MAX).contains(&len) {
            refusals.refused(peer, &PeerFrameError::Size(len));
            return;
        }
        // Grow as bytes arrive: a frame's buffer holds no more than has been sent.
        body.clear();
        while body.len() < len {
            let step = (len - body.len()).min(limits::QUORUM_READ_STEP_BYTES);
            let at = body.len();
            body.resize(at + step, 0);
            if stream.read_exact(&mut body[at..]).await.is_err() {
                return;
            }
        }
        match decode_frame(&body, *cluster_id, *me, voters) {
            Ok(message) => {
                if inbox.send(message).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                refusals.refused(peer, &err);
                return;
            }
        }
        if body.capacity() > limits::QUORUM_READ_STEP_BYTES * 4 {
            body = Vec::new();
        }
    }
}

async fn send_loop(
    peer: u64,
    addr: SocketAddr,
    cluster_id: Uuid,
    queue: LocalReceiver<Message>,
    unreachable: Rc<std::cell::RefCell<Vec<u64>>>,
) {
    let mut stream: Option<TcpStream> = None;
    let mut backoff = Duration::from_millis(limits::QUORUM_RECONNECT_MIN_MS);
    let mut retry_at = Instant::now();
    let mut frame = Vec::new();
    let mut was_connected = false;
    while let Some(message) = queue.recv().await {
        if stream.is_none() {
            if Instant::now() < retry_at {
                // Still backing off: this message is lost, as on a cut link.
                unreachable.borrow_mut().push(peer);
                continue;
            }
            match TcpStream::connect_timeout(addr, Duration::from_millis(1000)).await {
                Ok(connected) => {
                    let _ = connected.set_nodelay(true);
                    let _ = connected.set_write_timeout(Some(Duration::from_millis(
                        limits::QUORUM_PEER_IDLE_MS,
                    )));
                    if !was_connected {
                        info!(peer, %addr, "quorum peer connected");
                    }
                    was_connected = true;
                    backoff = Duration::from_millis(limits::QUORUM_RECONNECT_MIN_MS);
                    stream = Some(connected);
                }
                Err(err) => {
                    if was_connected {
                        info!(peer, %addr, %err, "quorum peer unreachable");
                    }
                    was_connected = false;
                    unreachable.borrow_mut().push(peer);
                    retry_at = Instant::now() + backoff;
                    backoff =
                        (backoff * 2).min(Duration::from_millis(limits::QUORUM_RECONNECT_MAX_MS));
                    continue;
                }
            }
        }
        frame.clear();
        encode_frame(cluster_id, &message, &mut frame);
        let connection = stream.as_mut().expect("connected above");
        if let Err(err) = connection.write_all(&frame).await {
            debug!(peer, %err, "quorum peer write failed; reconnecting");
            stream = None;
            unreachable.borrow_mut().push(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::MessageType;

    #[test]
    fn frames_are_checked_before_their_message() {
        let cluster = Uuid::from_u128(7);
        let message = Message {
            msg_type: MessageType::MsgHeartbeat,
            from: 2,
            to: 1,
            term: 3,
            ..Default::default()
        };
        let mut frame = Vec::new();
        encode_frame(cluster, &message, &mut frame);
        let body = &frame[4..];
        assert_eq!(decode_frame(body, cluster, 1, &[1, 2, 3]).unwrap(), message);
        assert!(matches!(
            decode_frame(body, Uuid::from_u128(8), 1, &[1, 2, 3]),
            Err(PeerFrameError::Cluster(_))
        ));
        assert!(matches!(
            decode_frame(body, cluster, 1, &[1, 3]),
            Err(PeerFrameError::Stranger { from: 2, .. })
        ));
        assert!(matches!(
            decode_frame(body, cluster, 3, &[1, 2, 3]),
            Err(PeerFrameError::Stranger { .. })
        ));
        assert!(matches!(
            decode_frame(&body[..20], cluster, 1, &[1, 2, 3]),
            Err(PeerFrameError::Size(20))
        ));
        // The header's sender must match the message's.
        let mut lying = body.to_vec();
        lying[16..24].copy_from_slice(&3u64.to_be_bytes());
        assert!(matches!(
            decode_frame(&lying, cluster, 1, &[1, 2, 3]),
            Err(PeerFrameError::Stranger { from: 2, .. })
        ));
    }
}
