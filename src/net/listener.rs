//! The Kafka listener of one shard.
//!
//! Owner: each shard binds its own `glommio::net::TcpListener` on the same address; glommio
//! sets SO_REUSEPORT, so the kernel spreads incoming connections over the shards. The accept
//! loop runs in the shard's request queue until the shard drains; each connection runs as a
//! task holding a pass of the shard's connection gate, which draining waits on.
//!
//! Port 0 (tests, ephemeral brokers) would give every shard a different port, so `main`
//! reserves one port first with `reserve_port` and every shard binds that port.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

use crate::net::connection;

/// How long start-up waits for a fixed port that something still listens on.
const PORT_RELEASE_WAIT_MS: u64 = 10_000;
use crate::shard::ShardContext;

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

/// Binds this shard's listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(std::io::Error::from)
}

/// Accepts connections until the shard drains, then drops the listener.
pub async fn accept_loop(context: Rc<ShardContext>, listener: TcpListener) {
    loop {
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
        debug!(shard = %context.id, ?peer, "connection accepted");
        let spawned = context.connections.spawn_into(
            connection::serve(context.clone(), stream),
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
    debug!(shard = %context.id, "listener closed");
}
