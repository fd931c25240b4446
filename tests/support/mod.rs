//! Shared support for black-box tests: start the real `ringbroker` binary on an ephemeral
//! port and a temporary data directory, speak raw Kafka frames to it, and stop it.
//!
//! Every broker started here is killed when its `Broker` value drops, so a failing test never
//! leaves a process behind; every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// How long a broker may take to report that it listens.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running broker process.
pub struct Broker {
    child: Option<Child>,
    /// The bound listen address.
    pub addr: SocketAddr,
    /// Its data directory (owned by the test).
    pub data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Broker {
    /// Starts a broker with `extra` arguments after `serve`, on port 0 and `data_dir`.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Broker {
        Self::start_at(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts a broker listening on `listen` (to restart one on the port clients know).
    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Broker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringbroker"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(listen)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the broker binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("ringbroker ready")
                        && let Some(addr) = field(&line, "listen=")
                    {
                        let _ = addr_tx.send(addr);
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let addr = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr.parse().expect("the ready line carries an address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not become ready within {START_TIMEOUT:?}; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Broker {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// The broker's log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The broker's log lines from index `start` on (a long run scans only what is new).
    pub fn log_from(&self, start: usize) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.get(start..).map_or_else(Vec::new, <[String]>::to_vec)
    }

    /// `host:port` for client configuration.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Sends `signal` (a `kill` signal name) to the broker.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends `signal` and waits (bounded) for the exit status.
    pub fn stop_with(mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        let mut child = self.child.take().expect("running");
        wait_bounded(&mut child, Duration::from_secs(20))
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The broker's resident set size now and its high-water mark, in bytes
    /// (`VmRSS` and `VmHWM` of `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the broker's /proc status is readable");
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{key} in /proc status"))
        };
        (kib("VmRSS:") * 1024, kib("VmHWM:") * 1024)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` to exit, killing it (and failing) after `bound`.
pub fn wait_bounded(child: &mut Child, bound: Duration) -> ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait works") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_string())
}

/// Runs `program` with `args`, bounded in time; returns (status, stdout, stderr).
pub fn run_bounded(program: &str, args: &[&str], bound: Duration) -> (ExitStatus, String, String) {
    run_bounded_with_input(program, args, "", bound)
}

/// `run_bounded` with `input` written to the program's standard input (then closed).
pub fn run_bounded_with_input(
    program: &str,
    args: &[&str],
    input: &str,
    bound: Duration,
) -> (ExitStatus, String, String) {
    run_bounded_without_env(program, args, input, bound, &[])
}

/// `run_bounded_with_input` with the variables `removed` taken out of the program's
/// environment (e.g. cargo's `LD_LIBRARY_PATH`, which would give kcat the rdkafka crate's
/// librdkafka instead of the system's).
pub fn run_bounded_without_env(
    program: &str,
    args: &[&str],
    input: &str,
    bound: Duration,
    removed: &[&str],
) -> (ExitStatus, String, String) {
    let mut command = Command::new(program);
    for name in removed {
        command.env_remove(name);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("cannot run {program}: {err}; install the test tools with `make deps`")
        });
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, bound);
    let _ = feeder.join();
    (status, out.join().unwrap(), err.join().unwrap())
}

/// A raw Kafka connection for protocol-level tests.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    /// Connects with 10-second read and write timeouts.
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawClient { stream }
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Writes one request frame.
    pub fn send<M: Encodable>(&mut self, key: ApiKey, version: i16, correlation_id: i32, body: &M) {
        self.send_raw(&encode_request(key, version, correlation_id, body));
    }

    /// Reads one response frame: (correlation id, body after the header).
    pub fn recv(&mut self, key: ApiKey, version: i16) -> (i32, Bytes) {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).expect("response size");
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).expect("response body");
        let correlation_id = i32::from_be_bytes(frame[..4].try_into().unwrap());
        let header_len = if key.response_header_version(version) >= 1 {
            5
        } else {
            4
        };
        (correlation_id, Bytes::from(frame).slice(header_len..))
    }

    /// Sends a request and decodes its response.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Resp {
        self.send(key, version, 7, body);
        let (correlation_id, mut bytes) = self.recv(key, version);
        assert_eq!(correlation_id, 7);
        Resp::decode(&mut bytes, version).expect("response decodes")
    }

    /// True once the broker has closed the connection (read returns EOF or a reset).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 64];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(err)
                    if err.kind() == std::io::ErrorKind::WouldBlock
                        || err.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

/// Encodes a request frame (size, header, body).
pub fn encode_request<M: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("ringbroker-test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    frame
}

/// Sends a raw request with a v1 header; returns the response body.
pub fn raw_call(client: &mut RawClient, key: ApiKey, version: i16, body: &[u8]) -> Bytes {
    let mut frame = Vec::new();
    frame.put_i16(key as i16);
    frame.put_i16(version);
    frame.put_i32(11);
    frame.put_i16(4);
    frame.put_slice(b"test");
    frame.put_slice(body);
    let mut sized = (frame.len() as i32).to_be_bytes().to_vec();
    sized.extend_from_slice(&frame);
    client.send_raw(&sized);
    let (correlation_id, response) = client.recv(key, version);
    assert_eq!(correlation_id, 11);
    response
}

/// Fetch v0-3 of partition 0 from offset 0, at most 1 MiB: (error code, high watermark, record
/// bytes). kafka-protocol encodes Fetch from v4 only, so this one is written by hand.
pub fn fetch_legacy(client: &mut RawClient, version: i16, topic: &str) -> (i16, i64, Bytes) {
    let mut body = Vec::new();
    body.put_i32(-1);
    body.put_i32(100);
    body.put_i32(1);
    if version == 3 {
        body.put_i32(1 << 20);
    }
    body.put_i32(1);
    body.put_i16(topic.len() as i16);
    body.put_slice(topic.as_bytes());
    body.put_i32(1);
    body.put_i32(0);
    body.put_i64(0);
    body.put_i32(1 << 20);
    let mut response = raw_call(client, ApiKey::Fetch, version, &body);
    if version >= 1 {
        response.get_i32();
    }
    assert_eq!(response.get_i32(), 1);
    let len = response.get_i16() as usize;
    response.advance(len);
    assert_eq!(response.get_i32(), 1);
    assert_eq!(response.get_i32(), 0);
    let error = response.get_i16();
    let high_watermark = response.get_i64();
    let len = response.get_i32() as usize;
    let records = response.split_to(len);
    assert!(response.is_empty());
    (error, high_watermark, records)
}
