//! One client connection: read frames, dispatch requests, write responses in request order.
//!
//! Owner: the shard that accepted the connection, for the connection's whole life. Two tasks
//! share the socket (split into halves): the reader and the writer.
//!
//! The reader parses each frame's header and starts its handler as a task of its own, in
//! arrival order, then hands the task to the writer through a bounded channel of
//! `CONNECTION_INFLIGHT_REQUESTS_MAX` slots. The writer awaits the tasks in that same order and
//! writes each response, so responses leave in request order even when a later request (say, a
//! metadata read) finishes before an earlier one (say, a produce waiting on another shard).
//! When the channel is full the reader stops reading: a pipelining client meets TCP
//! backpressure instead of growing our memory.
//!
//! A malformed frame or a request we must refuse ends the connection with one log line; it
//! never touches another connection. On drain the reader stops taking new requests, the
//! writer finishes the ones in flight, and the connection closes.
//!
//! What one client can hold is bounded (docs/RELIABILITY.md):
//! - requests in flight: `CONNECTION_INFLIGHT_REQUESTS_MAX`;
//! - request bytes: each frame's buffer is taken from the shard's `RequestMemory` as it arrives
//!   and given back once its response is written;
//! - a frame must arrive whole within `request-read-timeout-ms` of its first byte, or the
//!   connection is closed (a trickled frame cannot pin its buffer forever);
//! - answered but unsent responses: past `CONNECTION_RESPONSES_QUEUED_BYTES_MAX` the reader stops
//!   starting requests until the client reads, and a response that cannot be written for
//!   `connections.max.idle.ms` closes the connection;
//! - idle connections (nothing in flight, nothing read or written for `connections.max.idle.ms`)
//!   are closed, as Kafka closes them.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, WriteHalf};
use futures_lite::{AsyncWriteExt, future};
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::sync::{Semaphore, StaticPermit};
use glommio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::acl::Session;
use kafka_protocol::messages::ApiKey;

use crate::broker::ShardContext;
use crate::kafka::dispatch::{self, Dispatched, HandlerOutcome, ResponseFrame};
use crate::kafka::sasl_authenticate;
use crate::limits;
use crate::net::admission::ConnectionPass;
use crate::net::frame::{self, FrameError, FrameMemory, RequestMemory};
use crate::runtime::shutdown::ShutdownSignal;
use crate::security::sasl::{SaslConfig, SaslConnection};

/// A request in flight: its place in the connection's order, its handler's task and the request
/// memory its frame holds until the response is written.
struct PendingResponse {
    seq: u64,
    task: JoinHandle<HandlerOutcome>,
    _memory: FrameMemory,
}

/// What the reader and the writer of one connection share.
struct ConnectionState {
    /// Requests dispatched whose responses are not yet written.
    in_flight: Cell<usize>,
    /// Bytes of responses computed but not yet written.
    queued_response_bytes: Cell<usize>,
    /// The last time a frame arrived or a response was written.
    last_activity: Cell<Instant>,
    /// When the frame being read started arriving, while one is.
    frame_started: Cell<Option<Instant>>,
    /// The request whose response the writer waits for or writes now.
    writing_seq: Cell<u64>,
    /// Raised whenever a response has been written: the reader and fetches paused on queued
    /// responses look again.
    written: Notify,
    /// Held by the one fetch of this connection that runs at a time (see `gate_fetch`).
    fetch_slot: Rc<Semaphore>,
    /// Until when a client quota mutes the connection (KIP-219): no request is started.
    muted_until: Cell<Option<Instant>>,
    /// Set when the writer has stopped: gated fetches give up instead of waiting forever.
    writer_stopped: Cell<bool>,
}

impl ConnectionState {
    fn over_response_bound(&self) -> bool {
        self.queued_response_bytes.get() > limits::CONNECTION_RESPONSES_QUEUED_BYTES_MAX
    }
}

/// Wakes every task waiting on it; a task that waits after a wake-up waits for the next one.
#[derive(Default)]
struct Notify {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for waker in self.wakers.take() {
            waker.wake();
        }
    }

    async fn notified(&self) {
        let seen = self.generation.get();
        futures::future::poll_fn(|cx| {
            if self.generation.get() != seen {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Fetch responses are the large ones (up to the request's `max_bytes`). So that a client which
/// pipelines fetches and never reads cannot make the broker hold one full response per request
/// in flight, a connection runs one fetch at a time, and a fetch starts only while the
/// connection's unsent responses are within `CONNECTION_RESPONSES_QUEUED_BYTES_MAX`, or when
/// every response before it has been written (so the writer never waits on a fetch that waits
/// on the writer). No client pipelines fetches on one connection; each sends the next fetch
/// after the last answer.
async fn gate_fetch(state: &ConnectionState, seq: u64) -> Option<StaticPermit> {
    loop {
        while state.over_response_bound() && state.writing_seq.get() != seq {
            if state.writer_stopped.get() {
                return None;
            }
            state.written.notified().await;
        }
        let slot = state
            .fetch_slot
            .acquire_static_permit(1)
            .await
            .expect("the fetch slot is never closed");
        if !state.over_response_bound() || state.writing_seq.get() == seq {
            return Some(slot);
        }
    }
}

/// Awaits `wait` unless the shard drains or the connection's writer closes first: `true` when
/// `wait` finished, `false` when the connection is closing.
async fn before_closing(
    context: &ShardContext,
    writer_closed: &ShutdownSignal,
    wait: impl std::future::Future,
) -> bool {
    future::or(
        async {
            wait.await;
            true
        },
        async {
            future::or(context.draining.raised(), writer_closed.raised()).await;
            false
        },
    )
    .await
}

/// How often a connection looks at its idle and frame-completion clocks.
const CONNECTION_CLOCK_CHECK_MS_MAX: u64 = 1000;

/// Serves `stream` until the peer closes it, a protocol error ends it, a bound is passed, or the
/// shard drains. `_pass` is the connection's place in the broker's connection counts, given back
/// when this returns.
///
/// `stream` is the accepted TCP stream itself on a PLAINTEXT listener, its TLS stream on an
/// SSL one (`net::listener::open` did the handshake); each kind gets its own copy of this
/// loop, so the plaintext path reads and writes the socket as directly as before. `session`
/// carries the principal its listener authenticated, set once, before the first request.
pub async fn serve<S>(
    context: Rc<ShardContext>,
    stream: S,
    peer: Option<SocketAddr>,
    session: Session,
    sasl: Option<Arc<SaslConfig>>,
    memory: Option<RequestMemory>,
    _pass: ConnectionPass,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    context.metrics.connection_opened();
    // The listener's principal (anonymous, or the client certificate's) until SASL
    // authentication, on a SASL listener, sets its own.
    let mut session = Rc::new(session);
    let mut sasl = sasl.map(SaslConnection::new);
    let (mut reader, writer) = stream.split();
    let (pending_tx, pending_rx) =
        local_channel::new_bounded::<PendingResponse>(limits::CONNECTION_INFLIGHT_REQUESTS_MAX);
    let state = Rc::new(ConnectionState {
        in_flight: Cell::new(0),
        queued_response_bytes: Cell::new(0),
        last_activity: Cell::new(Instant::now()),
        frame_started: Cell::new(None),
        writing_seq: Cell::new(0),
        written: Notify::default(),
        fetch_slot: Rc::new(Semaphore::new(1)),
        writer_stopped: Cell::new(false),
        muted_until: Cell::new(None),
    });
    let writer_closed = Rc::new(ShutdownSignal::new());
    let writer_task = glommio::spawn_local_into(
        write_responses(
            context.clone(),
            writer,
            pending_rx,
            state.clone(),
            writer_closed.clone(),
            peer,
        ),
        context.queues.requests,
    )
    .expect("the request queue exists for the life of the shard");

    let max_bytes = context.config.socket_request_max_bytes;
    let idle = Duration::from_millis(context.config.connections_max_idle_ms);
    let read_timeout = Duration::from_millis(context.config.request_read_timeout_ms);
    let clock_check = Duration::from_millis(CONNECTION_CLOCK_CHECK_MS_MAX)
        .min(idle)
        .min(read_timeout);
    let mut next_seq = 0u64;
    loop {
        // Too much answered and unsent: start nothing new until the client reads.
        while state.over_response_bound() {
            if !before_closing(&context, &writer_closed, state.written.notified()).await {
                break;
            }
        }
        // Before SASL authentication a frame is bounded by sasl.server.max.receive.size, as in
        // Kafka: an unauthenticated client cannot make the broker hold a large buffer.
        let frame_max = match &sasl {
            Some(sasl) if sasl.principal().is_none() => max_bytes.min(sasl.max_receive_bytes()),
            _ => max_bytes,
        };
        let read = frame::read_frame_within(
            &mut reader,
            frame_max,
            memory.as_ref(),
            &state.frame_started,
        );
        futures::pin_mut!(read);
        let next = loop {
            let step = future::or(async { Some(Some((&mut read).await)) }, async {
                future::or(
                    async {
                        future::or(context.draining.raised(), writer_closed.raised()).await;
                        Some(None)
                    },
                    async {
                        glommio::timer::sleep(clock_check).await;
                        None
                    },
                )
                .await
            })
            .await;
            match step {
                Some(next) => break next,
                None => {
                    if let Some(started) = state.frame_started.get() {
                        if started.elapsed() >= read_timeout {
                            break Some(Err(FrameError::Stalled {
                                timeout_ms: context.config.request_read_timeout_ms,
                            }));
                        }
                    } else if state.in_flight.get() == 0
                        && state.last_activity.get().elapsed() >= idle
                    {
                        debug!(
                            ?peer,
                            idle_ms = idle.as_millis() as u64,
                            "closing idle connection"
                        );
                        break None;
                    }
                }
            }
        };
        let (frame, frame_memory) = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(FrameError::Closed)) => break,
            Some(Err(err)) => {
                warn!(?peer, %err, "closing connection");
                break;
            }
        };
        // Throttled by a client quota: start nothing more until the throttle time is over,
        // as Kafka mutes the channel (the client, told the time, waits as well).
        if let Some(until) = state.muted_until.take() {
            let wait = until.saturating_duration_since(Instant::now());
            if !wait.is_zero()
                && !before_closing(&context, &writer_closed, glommio::timer::sleep(wait)).await
            {
                break;
            }
        }
        state.last_activity.set(Instant::now());
        context.metrics.add_bytes_in(4 + frame.len());
        let (dispatched, close_after) = match sasl.as_mut() {
            Some(sasl) => sasl_authenticate::dispatch_sasl(&context, sasl, &mut session, frame),
            None => (dispatch::dispatch(&context, &session, frame), false),
        };
        match dispatched {
            Dispatched::Started { api_key, future } => {
                let seq = next_seq;
                next_seq += 1;
                let measured = {
                    let context = context.clone();
                    let state = state.clone();
                    async move {
                        let _slot = if api_key == ApiKey::Fetch as i16 {
                            match gate_fetch(&state, seq).await {
                                Some(slot) => Some(slot),
                                None => {
                                    return HandlerOutcome::Close(
                                        "connection closed while a fetch waited".to_string(),
                                    );
                                }
                            }
                        } else {
                            None
                        };
                        let started = Instant::now();
                        let outcome = future.await;
                        let failed = matches!(outcome, HandlerOutcome::Close(_));
                        context
                            .metrics
                            .record_request(api_key, started.elapsed(), failed);
                        let throttle_ms = match &outcome {
                            HandlerOutcome::Respond(response) => response.throttle_ms,
                            HandlerOutcome::NoResponse { throttle_ms } => *throttle_ms,
                            HandlerOutcome::Close(_) => 0,
                        };
                        if throttle_ms > 0 {
                            let until = Instant::now() + Duration::from_millis(throttle_ms);
                            let later = state.muted_until.get().map_or(until, |u| u.max(until));
                            state.muted_until.set(Some(later));
                        }
                        if let HandlerOutcome::Respond(response) = &outcome {
                            state
                                .queued_response_bytes
                                .set(state.queued_response_bytes.get() + response.len_bytes());
                        }
                        outcome
                    }
                };
                let task = glommio::spawn_local_into(measured, context.queues.requests)
                    .expect("the request queue exists for the life of the shard")
                    .detach();
                state.in_flight.set(state.in_flight.get() + 1);
                let pending = PendingResponse {
                    seq,
                    task,
                    _memory: frame_memory,
                };
                if pending_tx.send(pending).await.is_err() || close_after {
                    break;
                }
            }
            Dispatched::Refused(reason) => {
                warn!(?peer, %reason, "closing connection");
                break;
            }
        }
    }
    // Closing the channel lets the writer finish what is in flight and then stop.
    drop(pending_tx);
    writer_task.await;
    context.metrics.connection_closed();
    debug!(?peer, "connection closed");
}

async fn write_responses<S: AsyncWrite>(
    context: Rc<ShardContext>,
    mut writer: WriteHalf<S>,
    pending: LocalReceiver<PendingResponse>,
    state: Rc<ConnectionState>,
    closed: Rc<ShutdownSignal>,
    peer: Option<SocketAddr>,
) {
    let stall = Duration::from_millis(context.config.connections_max_idle_ms);
    while let Some(request) = pending.recv().await {
        let PendingResponse {
            seq,
            task,
            _memory: memory,
        } = request;
        state.writing_seq.set(seq);
        state.written.notify_all();
        let outcome = match task.await {
            Some(outcome) => outcome,
            None => HandlerOutcome::Close("request handler was cancelled".to_string()),
        };
        let response = match outcome {
            HandlerOutcome::Respond(response) => response,
            HandlerOutcome::NoResponse { .. } => {
                state.in_flight.set(state.in_flight.get() - 1);
                continue;
            }
            HandlerOutcome::Close(reason) => {
                info!(?peer, %reason, "closing connection");
                break;
            }
        };
        let body_bytes = response.len_bytes();
        let bytes = 4 + header_len(&response) + body_bytes;
        let result = future::or(write_response(&mut writer, response), async {
            glommio::timer::sleep(stall).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the client read no response for {} ms (connections.max.idle.ms)",
                    stall.as_millis()
                ),
            ))
        })
        .await;
        state
            .queued_response_bytes
            .set(state.queued_response_bytes.get().saturating_sub(body_bytes));
        state.in_flight.set(state.in_flight.get() - 1);
        state.last_activity.set(Instant::now());
        state.written.notify_all();
        drop(memory);
        if let Err(err) = result {
            if err.kind() == std::io::ErrorKind::TimedOut {
                warn!(?peer, %err, "closing connection");
            } else {
                debug!(?peer, %err, "write failed; closing connection");
            }
            break;
        }
        context.metrics.add_bytes_out(bytes);
    }
    state.writer_stopped.set(true);
    state.written.notify_all();
    closed.raise();
    let _ = writer.close().await;
}

/// Bytes of `response`'s header: none for a SASL v0 token, else 4, or 5 when flexible.
fn header_len(response: &ResponseFrame) -> usize {
    match (response.headerless, response.flexible_header) {
        (true, _) => 0,
        (false, flexible) => 4 + usize::from(flexible),
    }
}

/// Writes one response frame: size, response header, body chunks. glommio's TCP stream has no
/// vectored write, so small chunks are gathered into one buffer (one send) and only chunks of
/// at least `RESPONSE_COALESCE_BYTES_MAX` (record data) are sent as they are, never copied.
async fn write_response<S: AsyncWrite>(
    writer: &mut WriteHalf<S>,
    response: ResponseFrame,
) -> std::io::Result<()> {
    let header_len = header_len(&response);
    let body_len: usize = response.body.iter().map(Bytes::len).sum();
    let frame_len = header_len + body_len;
    let size = i32::try_from(frame_len).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("response of {frame_len} bytes does not fit a frame"),
        )
    })?;
    let mut pending =
        BytesMut::with_capacity((4 + frame_len).min(limits::RESPONSE_COALESCE_BYTES_MAX));
    pending.put_i32(size);
    if !response.headerless {
        pending.put_i32(response.correlation_id);
    }
    if response.flexible_header && !response.headerless {
        // Response header v1 ends with an empty tagged-field section.
        pending.put_u8(0);
    }
    for chunk in &response.body {
        if chunk.len() < limits::RESPONSE_COALESCE_BYTES_MAX {
            pending.put_slice(chunk);
            if pending.len() >= limits::RESPONSE_COALESCE_BYTES_MAX {
                writer.write_all(&pending).await?;
                pending.clear();
            }
        } else {
            if !pending.is_empty() {
                writer.write_all(&pending).await?;
                pending.clear();
            }
            writer.write_all(chunk).await?;
        }
    }
    if !pending.is_empty() {
        writer.write_all(&pending).await?;
    }
    writer.flush().await
}
