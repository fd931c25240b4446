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

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures::io::{AsyncReadExt as _, WriteHalf};
use futures_lite::{AsyncWriteExt, future};
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::acl::Session;
use crate::kafka::dispatch::{self, Dispatched, HandlerOutcome, ResponseFrame};
use crate::limits;
use crate::net::frame::{self, FrameError};
use crate::shard::ShardContext;
use crate::shard::shutdown::ShutdownSignal;

type PendingResponse = JoinHandle<HandlerOutcome>;

/// Serves `stream` until the peer closes it, a protocol error ends it, or the shard drains.
pub async fn serve(context: Rc<ShardContext>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    context.metrics.connection_opened();
    if let Err(err) = stream.set_nodelay(true) {
        debug!(?peer, %err, "cannot set TCP_NODELAY");
    }
    // No SASL or TLS yet: every connection is anonymous. Authentication will set the principal
    // here, once per connection, before the first request is dispatched.
    let session = Rc::new(Session::anonymous(peer.map(|p| p.ip())));
    let (mut reader, writer) = stream.split();
    let (pending_tx, pending_rx) =
        local_channel::new_bounded::<PendingResponse>(limits::CONNECTION_INFLIGHT_REQUESTS_MAX);
    let writer_closed = Rc::new(ShutdownSignal::new());
    let writer_task = glommio::spawn_local_into(
        write_responses(
            context.clone(),
            writer,
            pending_rx,
            writer_closed.clone(),
            peer,
        ),
        context.queues.requests,
    )
    .expect("the request queue exists for the life of the shard");

    let max_bytes = context.config.socket_request_max_bytes;
    loop {
        let next = future::or(
            async { Some(frame::read_frame(&mut reader, max_bytes).await) },
            async {
                future::or(context.draining.raised(), writer_closed.raised()).await;
                None
            },
        )
        .await;
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(FrameError::Closed)) => break,
            Some(Err(err)) => {
                warn!(?peer, %err, "closing connection");
                break;
            }
        };
        context.metrics.add_bytes_in(4 + frame.len());
        match dispatch::dispatch(&context, &session, frame) {
            Dispatched::Started { api_key, future } => {
                let started = Instant::now();
                let measured = {
                    let context = context.clone();
                    async move {
                        let outcome = future.await;
                        let failed = matches!(outcome, HandlerOutcome::Close(_));
                        context
                            .metrics
                            .record_request(api_key, started.elapsed(), failed);
                        outcome
                    }
                };
                let task = glommio::spawn_local_into(measured, context.queues.requests)
                    .expect("the request queue exists for the life of the shard")
                    .detach();
                if pending_tx.send(task).await.is_err() {
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

async fn write_responses(
    context: Rc<ShardContext>,
    mut writer: WriteHalf<TcpStream>,
    pending: LocalReceiver<PendingResponse>,
    closed: Rc<ShutdownSignal>,
    peer: Option<SocketAddr>,
) {
    while let Some(task) = pending.recv().await {
        let outcome = match task.await {
            Some(outcome) => outcome,
            None => HandlerOutcome::Close("request handler was cancelled".to_string()),
        };
        let response = match outcome {
            HandlerOutcome::Respond(response) => response,
            HandlerOutcome::NoResponse => continue,
            HandlerOutcome::Close(reason) => {
                info!(?peer, %reason, "closing connection");
                break;
            }
        };
        let bytes = 4
            + usize::from(response.flexible_header)
            + 4
            + response.body.iter().map(Bytes::len).sum::<usize>();
        if let Err(err) = write_response(&mut writer, response).await {
            debug!(?peer, %err, "write failed; closing connection");
            break;
        }
        context.metrics.add_bytes_out(bytes);
    }
    closed.raise();
    let _ = writer.close().await;
}

/// Writes one response frame: size, response header, body chunks. glommio's TCP stream has no
/// vectored write, so small chunks are gathered into one buffer (one send) and only chunks of
/// at least `RESPONSE_COALESCE_BYTES_MAX` (record data) are sent as they are, never copied.
async fn write_response(
    writer: &mut WriteHalf<TcpStream>,
    response: ResponseFrame,
) -> std::io::Result<()> {
    let header_len = if response.flexible_header { 5 } else { 4 };
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
    pending.put_i32(response.correlation_id);
    if response.flexible_header {
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
