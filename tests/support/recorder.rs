//! A recording TCP proxy for building the mutation corpus (tests/record_frames.rs).
//!
//! It listens on 127.0.0.1:0 before the broker starts, so the broker can be told to advertise
//! the proxy's address (`--advertised-listener`) and clients that learn brokers from Metadata
//! keep talking through it. Each accepted connection gets two threads: one reads the client's
//! request frames (4-byte size, then header and body), records each under the current
//! scenario label and forwards it; the other copies the broker's responses back unchanged.
//!
//! Lifecycle: `Recorder::bind`, then `forward_to` once the broker's address is known; threads
//! end when either side closes. `frames` hands out what was recorded so far. Nothing here is
//! bounded in time by itself: the clients driven through it are.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request frame as the client sent it, without the 4-byte size prefix.
#[derive(Clone)]
pub struct Recorded {
    pub scenario: String,
    pub frame: Vec<u8>,
}

/// Frames above this are not recorded (they are still forwarded): the corpus stays small.
const RECORD_FRAME_BYTES_MAX: usize = 64 * 1024;

#[derive(Default)]
struct Shared {
    upstream: Mutex<Option<SocketAddr>>,
    scenario: Mutex<String>,
    frames: Mutex<Vec<Recorded>>,
    stop: AtomicBool,
}

/// The proxy; its accept thread stops when this drops.
pub struct Recorder {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Recorder {
    /// Binds 127.0.0.1:0 and starts accepting (connections wait for `forward_to`).
    pub fn bind() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        std::thread::spawn(move || accept_loop(listener, accept_shared));
        Recorder { addr, shared }
    }

    /// Sets the broker address new connections are forwarded to.
    pub fn forward_to(&self, broker: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = Some(broker);
    }

    /// Labels the frames recorded from now on.
    pub fn scenario(&self, name: &str) {
        *self.shared.scenario.lock().unwrap() = name.to_string();
    }

    /// Every frame recorded so far, in arrival order.
    pub fn frames(&self) -> Vec<Recorded> {
        self.shared.frames.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let shared = shared.clone();
                std::thread::spawn(move || proxy_connection(client, shared));
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
}

fn proxy_connection(client: TcpStream, shared: Arc<Shared>) {
    client.set_nonblocking(false).unwrap();
    let Some(upstream_addr) = *shared.upstream.lock().unwrap() else {
        return;
    };
    let Ok(upstream) = TcpStream::connect(upstream_addr) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(mut from_broker), Ok(mut to_client)) = (upstream.try_clone(), client.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_broker, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let mut from_client = client;
    let mut to_broker = upstream;
    loop {
        let mut size = [0u8; 4];
        if from_client.read_exact(&mut size).is_err() {
            break;
        }
        let len = i32::from_be_bytes(size);
        let Ok(len) = usize::try_from(len) else { break };
        let mut frame = vec![0u8; len];
        if from_client.read_exact(&mut frame).is_err() {
            break;
        }
        if len <= RECORD_FRAME_BYTES_MAX {
            let scenario = shared.scenario.lock().unwrap().clone();
            shared.frames.lock().unwrap().push(Recorded {
                scenario,
                frame: frame.clone(),
            });
        }
        if to_broker.write_all(&size).is_err() || to_broker.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = to_broker.shutdown(Shutdown::Write);
}
