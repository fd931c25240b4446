//! The Kafka listener of one shard.
//!
//! Owner: each shard binds its own `glommio::net::TcpListener` on the same address; glommio
//! sets SO_REUSEPORT, so the kernel spreads incoming connections over the shards. The accept
//! loop runs in the shard's request queue until the shard drains; each connection runs as a
//! task holding a pass of the shard's connection gate, which draining waits on, and a place in
//! the broker's connection counts (`net::admission`).
//!
//! Port 0 (tests, ephemeral brokers) would give every shard a different port, so `main`
//! reserves one port first with `reserve_port` and every shard binds that port.
//!
//! A broker has one or more client listeners (`listeners`); every shard binds each and runs
//! one accept loop per listener. `open` turns an accepted socket into a served connection by
//! its listener's `SecurityProtocol`: PLAINTEXT serves the socket at once; SSL first runs the
//! TLS handshake (`net::tls`, bounded by `ssl-handshake-timeout-ms`) in the connection's own
//! task, so a slow handshake never holds the accept loop, and takes the principal from the
//! client certificate. SASL_PLAINTEXT and SASL_SSL (after the same handshake) hand the
//! listener's SASL settings to `connection::serve`, where the exchange runs before any other
//! request (`kafka::sasl_authenticate`); SASL's principal replaces the certificate's.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

use glommio::sync::Semaphore;

use crate::acl::Session;
use crate::config::SecurityProtocol;
use crate::net::admission::{Admission, ConnectionPass, Refusal};
use crate::net::connection;
use crate::net::frame::RequestMemory;
use crate::net::tls::TlsListener;
use crate::security::sasl::SaslConfig;

/// How long start-up waits for a fixed port that something still listens on.
const PORT_RELEASE_WAIT_MS: u64 = 10_000;
use crate::broker::ShardContext;

/// Resolves the address every shard will bind.
///
/// For port 0 it binds a placeholder socket (SO_REUSEPORT, never listening, so it receives no
/// connections) on a kernel-chosen port and returns it: the caller keeps it until every shard
/// has bound the same port, so no other process can take the port in between.
///
/// For a fixed port it refuses a port something already listens on, by connecting to it. A
/// bind test cannot tell: every shard binds with SO_REUSEPORT, so a second broker of the same
/// user would bind the same port without error and silently share the connections, while a
/// bind without SO_REUSEPORT fails on the TIME_WAIT connections a just-stopped broker leaves.
pub fn reserve_port(addr: SocketAddr) -> std::io::Result<(SocketAddr, Option<Socket>)> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    if addr.port() == 0 {
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        let bound = socket
            .local_addr()?
            .as_socket()
            .expect("an inet socket has an inet address");
        return Ok((bound, Some(socket)));
    }
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(if addr.is_ipv6() {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        });
    }
    // A broker killed a moment ago can leave its listeners open for a while: the kernel tears
    // down its io_uring rings (and the accepts pending in them) after the process is gone.
    // Wait for that instead of failing; a live listener is still refused after the wait.
    let deadline = std::time::Instant::now() + Duration::from_millis(PORT_RELEASE_WAIT_MS);
    while std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(500)).is_ok() {
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another process already listens on {addr}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((addr, None))
}

/// One client listener as the shards serve it: its place in `Config::listeners` (which
/// `Session::listener` carries, for the advertised address), name, protocol and TLS side.
#[derive(Debug, Clone)]
pub struct ListenerPlace {
    /// Index in `Config::listeners`.
    pub index: usize,
    /// Its name, for logs.
    pub name: String,
    /// What its connections speak.
    pub protocol: SecurityProtocol,
    /// Its TLS configuration, for an SSL or SASL_SSL listener.
    pub tls: Option<Arc<TlsListener>>,
    /// Its SASL mechanisms and users, for a SASL_PLAINTEXT or SASL_SSL listener.
    pub sasl: Option<Arc<SaslConfig>>,
}

/// Binds this shard's listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(std::io::Error::from)
}

/// How often an accept loop looks again while the broker holds `max.connections`.
const ACCEPT_FULL_RETRY_MS: u64 = 10;

/// At most one "refused" warning per shard in this interval; the others are counted in it.
const REFUSAL_LOG_INTERVAL_MS: u64 = 1000;

/// Accepts connections until the shard drains, then drops the listener.
///
/// Each connection takes a place in `admission` (closed at once past its address's limit; no
/// accepting at all while the broker holds its maximum) and reads its frames within this
/// shard's share of `queued.max.request.bytes`.
pub async fn accept_loop(
    context: Rc<ShardContext>,
    listener: TcpListener,
    admission: Arc<Admission>,
    place: Rc<ListenerPlace>,
) {
    let memory = request_memory(&context);
    let mut refusals = RefusalLog::default();
    loop {
        while admission.is_full() {
            let drained = future::or(
                async {
                    glommio::timer::sleep(Duration::from_millis(ACCEPT_FULL_RETRY_MS)).await;
                    false
                },
                async {
                    context.draining.raised().await;
                    true
                },
            )
            .await;
            if drained {
                break;
            }
            refusals.full(&context, admission.max_connections());
        }
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            context.draining.raised().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(err)) => {
                // Most often EMFILE/ENFILE: back off briefly rather than spin on the error.
                warn!(shard = %context.id, %err, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        let pass = match admission.admit(peer.map(|p| p.ip())) {
            Ok(pass) => pass,
            Err(refusal) => {
                // Dropping the stream closes it: the client sees the connection end, as with
                // Kafka's per-address limit.
                refusals.refused(&context, &refusal);
                continue;
            }
        };
        debug!(shard = %context.id, ?peer, listener = %place.name, "connection accepted");
        let spawned = context.connections.spawn_into(
            open(context.clone(), place.clone(), stream, memory.clone(), pass),
            context.queues.requests,
        );
        match spawned {
            Ok(task) => {
                task.detach();
            }
            // The gate closed between the drain signal and here: the connection is dropped.
            Err(_) => break,
        }
    }
    debug!(shard = %context.id, listener = %place.name, "listener closed");
}

/// Serves one accepted connection by its listener's protocol (see the module documentation).
async fn open(
    context: Rc<ShardContext>,
    place: Rc<ListenerPlace>,
    stream: glommio::net::TcpStream,
    memory: Option<RequestMemory>,
    pass: ConnectionPass,
) {
    let peer = stream.peer_addr().ok();
    if let Err(err) = stream.set_nodelay(true) {
        debug!(?peer, %err, "cannot set TCP_NODELAY");
    }
    let mut session = Session::anonymous(peer.map(|p| p.ip()));
    session.listener = place.index;
    let sasl = place.sasl.clone();
    match (place.protocol, &place.tls) {
        (SecurityProtocol::Plaintext | SecurityProtocol::SaslPlaintext, _) => {
            connection::serve(context, stream, peer, session, sasl, memory, pass).await;
        }
        (SecurityProtocol::Ssl | SecurityProtocol::SaslSsl, Some(tls)) => {
            let handshake = future::or(async { Some(tls.accept(stream).await) }, async {
                context.draining.raised().await;
                None
            })
            .await;
            match handshake {
                None => {}
                Some(Ok(accepted)) => {
                    debug!(?peer, listener = %place.name, principal = %accepted.principal, "TLS handshake done");
                    session.principal = accepted.principal;
                    connection::serve(context, accepted.stream, peer, session, sasl, memory, pass)
                        .await;
                }
                Some(Err(err)) => {
                    info!(?peer, listener = %place.name, %err, "closing connection");
                }
            }
        }
        // A TLS listener without its TLS side cannot be started (`pool::start`).
        (protocol, None) => {
            warn!(?peer, listener = %place.name, protocol = protocol.name(), "no TLS configuration; closing connection");
        }
    }
}

/// This shard's share of `queued.max.request.bytes`: an equal part, but never less than one
/// frame of `socket.request.max.bytes`, which a shard must always be able to take whole.
fn request_memory(context: &ShardContext) -> Option<RequestMemory> {
    let total = context.config.queued_max_request_bytes?;
    let share = (total / context.shard_count.max(1) as u64)
        .max(u64::from(context.config.socket_request_max_bytes));
    Some(Rc::new(Semaphore::new(share)))
}

/// Rate-limited warnings for refused connections: a storm must not flood the log.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| {
            now.duration_since(last) < Duration::from_millis(REFUSAL_LOG_INTERVAL_MS)
        }) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    fn refused(&mut self, context: &ShardContext, refusal: &Refusal) {
        if let Some(suppressed) = self.due() {
            warn!(shard = %context.id, %refusal, suppressed, "connection refused");
        }
    }

    fn full(&mut self, context: &ShardContext, limit: u32) {
        if let Some(suppressed) = self.due() {
            warn!(shard = %context.id, limit, suppressed, "max.connections reached: not accepting until a connection closes");
        }
    }
}
