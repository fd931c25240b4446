//! The metrics listener: `GET /metrics` (Prometheus text) and `GET /ready`.
//!
//! Owner: shard 0 runs it when `metrics-listen` is set, in its background task queue so a
//! scrape never competes with requests. Each scrape gathers a snapshot from every shard over
//! the router. The HTTP handling is deliberately small: one request per connection, a bounded
//! request head, `Connection: close`; anything else gets 404 or 400.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use glommio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::broker::{ShardContext, ShardRequest, ShardResponse};
use crate::metrics::{MetricsSnapshot, render};
use crate::runtime::ShardId;

/// The largest request head read; scrapers send a few hundred bytes.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// How long a scrape client may take to send its request.
const REQUEST_READ_TIMEOUT_MS: u64 = 5_000;

/// Serves the metrics listener on `listener` until the shard drains.
pub async fn serve(context: Rc<ShardContext>, listener: TcpListener) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            context.draining.raised().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                let queue = context.queues.background;
                let context = context.clone();
                glommio::spawn_local_into(
                    async move {
                        if let Err(err) = answer(&context, stream).await {
                            debug!(%err, "metrics request failed");
                        }
                    },
                    queue,
                )
                .expect("the background queue exists for the life of the shard")
                .detach();
            }
            Some(Err(err)) => {
                warn!(%err, "metrics accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Binds the metrics listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(std::io::Error::from)
}

async fn answer(context: &Rc<ShardContext>, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(REQUEST_READ_TIMEOUT_MS)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return respond(&mut stream, "400 Bad Request", "request head too large\n").await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/metrics") => {
            let mut body = render(&gather(context).await);
            body.push_str(&crate::quota::meter::render_metrics(
                context.quotas.meters(),
            ));
            respond(&mut stream, "200 OK", &body).await
        }
        ("GET", "/ready") => respond(&mut stream, "200 OK", "ready\n").await,
        ("GET", _) => respond(&mut stream, "404 Not Found", "try /metrics or /ready\n").await,
        _ => respond(&mut stream, "400 Bad Request", "only GET is served\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await
}

/// Every shard's snapshot, in shard order; a shard that does not answer counts as empty.
async fn gather(context: &Rc<ShardContext>) -> Vec<MetricsSnapshot> {
    let calls = (0..context.shard_count).map(|shard| {
        let context = context.clone();
        async move {
            match context
                .router
                .call(ShardId(shard), ShardRequest::Metrics)
                .await
            {
                Ok(ShardResponse::Metrics(snapshot)) => *snapshot,
                _ => MetricsSnapshot::default(),
            }
        }
    });
    futures::future::join_all(calls).await
}
