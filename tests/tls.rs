//! SSL listeners against the real broker: kcat (librdkafka), confluent-kafka and kafka-python
//! over TLS and mutual TLS, a PLAINTEXT and an SSL listener on one broker, ACLs keyed on the
//! certificate's principal, and the ways a connection can fail (wrong CA, no client
//! certificate, plaintext on the TLS port, TLS on the plaintext port, a handshake that never
//! finishes), each followed by a client the broker still serves.
//!
//! Certificates are made per test with the openssl CLI in the test's temporary directory,
//! with the same commands docs/SECURITY.md gives.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{Broker, run_bounded};

const BOUND: Duration = Duration::from_secs(60);

/// `run_bounded` without the test's `LD_LIBRARY_PATH`: cargo points it at the rdkafka crate's
/// own librdkafka, built without OpenSSL, which kcat would load instead of Debian's.
fn run_clean(program: &str, args: &[&str], input: &str, bound: Duration) -> (bool, String, String) {
    let (status, out, err) =
        support::run_bounded_without_env(program, args, input, bound, &["LD_LIBRARY_PATH"]);
    (status.success(), out, err)
}

/// A CA, a server certificate for 127.0.0.1/localhost and client certificates, as PEM files.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs");
    let status = support::wait_bounded(&mut child, BOUND);
    assert!(status.success(), "openssl {args:?} failed");
}

/// `ca` (+ `ca.key`), a certificate `name` signed by `ca` with subject `subject`.
fn sign(dir: &Path, ca: &str, name: &str, subject: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn make_ca(dir: &Path, name: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            subject,
        ],
    );
}

fn make_pki(dir: &Path) -> Pki {
    make_ca(dir, "ca", "/CN=ringbroker test CA");
    make_ca(dir, "rogue-ca", "/CN=someone else's CA");
    let client_ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
    sign(
        dir,
        "ca",
        "server",
        "/CN=localhost",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
    sign(dir, "ca", "alice", "/O=acme/OU=eng/CN=alice", client_ext);
    sign(dir, "ca", "admin", "/O=acme/CN=admin", client_ext);
    sign(
        dir,
        "rogue-ca",
        "mallory",
        "/O=acme/OU=eng/CN=alice",
        client_ext,
    );
    // The broker's key store: its key and its certificate chain in one PEM file.
    let mut keystore = std::fs::read(dir.join("server.key")).unwrap();
    keystore.extend(std::fs::read(dir.join("server.pem")).unwrap());
    std::fs::write(dir.join("server-keystore.pem"), keystore).unwrap();
    Pki {
        dir: dir.to_path_buf(),
    }
}

/// A broker with a PLAINTEXT and an SSL listener, both on ephemeral ports.
struct TlsBroker {
    broker: Broker,
    plain: SocketAddr,
    ssl: SocketAddr,
    _data: tempfile::TempDir,
}

fn start(pki: &Pki, extra: &[&str]) -> TlsBroker {
    let data = tempfile::tempdir().unwrap();
    let keystore = format!("ssl.keystore.location={}", pki.path("server-keystore.pem"));
    let truststore = format!("ssl.truststore.location={}", pki.path("ca.pem"));
    let mut args = vec![
        "--set",
        "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        "--set",
        &keystore,
        "--set",
        &truststore,
    ];
    for arg in extra {
        args.push("--set");
        args.push(arg);
    }
    let broker = Broker::start_in(data.path(), &args);
    TlsBroker {
        plain: ready_listener(&broker, "PLAINTEXT"),
        ssl: ready_listener(&broker, "SSL"),
        broker,
        _data: data,
    }
}

/// The address of listener `name` as the broker's ready line lists it
/// (`listeners=PLAINTEXT://127.0.0.1:41231,SSL://...`; the ready line reaches the log just
/// after the start returns).
fn ready_listener(broker: &Broker, name: &str) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = loop {
        if let Some(line) = broker
            .log()
            .into_iter()
            .find(|l| l.contains("ringbroker ready"))
        {
            break line;
        }
        assert!(Instant::now() < deadline, "no ready line");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Each entry follows `=` or `,`, so `SSL://` does not match inside `SASL_SSL://`.
    let start = [format!("={name}://"), format!(",{name}://")]
        .iter()
        .find_map(|tag| ready.find(tag.as_str()).map(|at| at + tag.len()))
        .expect("listener in the ready line");
    let rest = &ready[start..];
    let end = rest.find([',', ' ', '"']).unwrap_or(rest.len());
    rest[..end].parse().expect("an address")
}

/// kcat with TLS settings: the CA, and a client certificate `client` if given.
fn kcat_ssl(
    pki: &Pki,
    ca: &str,
    client: Option<&str>,
    addr: SocketAddr,
    args: &[&str],
) -> (bool, String, String) {
    kcat_ssl_with(pki, ca, client, addr, args, "")
}

/// `kcat_ssl` with `input` on kcat's standard input (one message per line with `-P`).
fn kcat_ssl_with(
    pki: &Pki,
    ca: &str,
    client: Option<&str>,
    addr: SocketAddr,
    args: &[&str],
    input: &str,
) -> (bool, String, String) {
    let ca = format!("ssl.ca.location={}", pki.path(&format!("{ca}.pem")));
    let mut argv: Vec<String> = vec![
        "-b".into(),
        addr.to_string(),
        "-X".into(),
        "security.protocol=ssl".into(),
        "-X".into(),
        ca,
        "-m".into(),
        "15".into(),
    ];
    if let Some(client) = client {
        argv.extend([
            "-X".into(),
            format!(
                "ssl.certificate.location={}",
                pki.path(&format!("{client}.pem"))
            ),
            "-X".into(),
            format!("ssl.key.location={}", pki.path(&format!("{client}.key"))),
        ]);
    }
    argv.extend(args.iter().map(|a| a.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    run_clean("kcat", &argv, input, BOUND)
}

fn kcat_plain(addr: SocketAddr, args: &[&str], input: &str) -> (bool, String, String) {
    let addr = addr.to_string();
    let mut argv = vec!["-b", addr.as_str(), "-m", "15"];
    argv.extend_from_slice(args);
    run_clean("kcat", &argv, input, BOUND)
}

fn produce_ssl(
    pki: &Pki,
    client: Option<&str>,
    addr: SocketAddr,
    topic: &str,
    lines: &str,
) -> (bool, String) {
    let (ok, _, err) = kcat_ssl_with(
        pki,
        "ca",
        client,
        addr,
        &["-P", "-t", topic, "-X", "topic.request.required.acks=1"],
        lines,
    );
    (ok, err)
}

fn consume_ssl(
    pki: &Pki,
    client: Option<&str>,
    addr: SocketAddr,
    topic: &str,
    count: usize,
) -> (bool, String, String) {
    let count = count.to_string();
    kcat_ssl(
        pki,
        "ca",
        client,
        addr,
        &["-C", "-t", topic, "-o", "beginning", "-c", &count, "-e"],
    )
}

/// The broker still answers a plaintext client.
fn still_serves(broker: &TlsBroker) {
    let (ok, out, err) = kcat_plain(broker.plain, &["-L"], "");
    assert!(
        ok && out.contains("broker 0 at"),
        "plaintext metadata after the failure: {out}{err}"
    );
}

#[test]
fn kcat_over_ssl_beside_plaintext_with_each_listener_advertised() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(&pki, &[]);
    // Metadata over each listener names the broker at that listener's address.
    let (ok, out, err) = kcat_ssl(&pki, "ca", None, broker.ssl, &["-L"]);
    assert!(ok, "kcat -L over SSL: {err}");
    assert!(
        out.contains(&format!("broker 0 at {}", broker.ssl)),
        "{out}"
    );
    let (ok, out, err) = kcat_plain(broker.plain, &["-L"], "");
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("broker 0 at {}", broker.plain)),
        "{out}"
    );
    // Written over TLS, read in the clear, and back.
    let (ok, err) = produce_ssl(&pki, None, broker.ssl, "secure", "one\ntwo\nthree\n");
    assert!(ok, "produce over SSL: {err}");
    let (ok, out, err) = kcat_plain(
        broker.plain,
        &["-C", "-t", "secure", "-o", "beginning", "-c", "3", "-e"],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["one", "two", "three"]);
    let (ok, out, err) = consume_ssl(&pki, None, broker.ssl, "secure", 3);
    assert!(ok, "consume over SSL: {err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["one", "two", "three"]);
}

#[test]
fn kcat_over_mtls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(&pki, &["ssl.client.auth=required"]);
    let (ok, err) = produce_ssl(&pki, Some("alice"), broker.ssl, "mtls", "a\nb\n");
    assert!(ok, "produce over mTLS: {err}");
    let (ok, out, err) = consume_ssl(&pki, Some("alice"), broker.ssl, "mtls", 2);
    assert!(ok, "consume over mTLS: {err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["a", "b"]);
    assert!(
        broker
            .broker
            .log()
            .iter()
            .all(|l| !l.contains("TLS handshake failed")),
        "no handshake failed"
    );
}

const PYTHON_CLIENTS: &str = r#"
import json, sys
mode, bootstrap, ca, cert, key, topic = sys.argv[1:7]
if mode == "confluent":
    from confluent_kafka import Producer, Consumer
    conf = {"bootstrap.servers": bootstrap, "security.protocol": "SSL",
            "ssl.ca.location": ca, "ssl.certificate.location": cert, "ssl.key.location": key}
    p = Producer(dict(conf))
    for i in range(5):
        p.produce(topic, value=f"c{i}".encode())
    assert p.flush(30) == 0
    c = Consumer(dict(conf, **{"group.id": "g-" + topic, "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    got = []
    import time
    deadline = time.time() + 40
    while len(got) < 5 and time.time() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    c.close()
else:
    from kafka import KafkaProducer, KafkaConsumer
    conf = dict(bootstrap_servers=bootstrap, security_protocol="SSL", ssl_cafile=ca,
                ssl_certfile=cert, ssl_keyfile=key, ssl_check_hostname=True)
    p = KafkaProducer(**conf)
    for i in range(5):
        p.send(topic, f"k{i}".encode())
    p.flush(30)
    p.close()
    c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=15000,
                      group_id="g-" + topic, **conf)
    got = []
    for m in c:
        got.append(m.value.decode())
        if len(got) == 5:
            break
    c.close()
print(json.dumps(got))
"#;

fn python_client(pki: &Pki, broker: &TlsBroker, mode: &str, topic: &str) -> Vec<String> {
    let bootstrap = broker.ssl.to_string();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("alice.pem"),
        pki.path("alice.key"),
    );
    let (status, out, err) = run_bounded(
        "python3",
        &[
            "-c",
            PYTHON_CLIENTS,
            mode,
            &bootstrap,
            &ca,
            &cert,
            &key,
            topic,
        ],
        Duration::from_secs(120),
    );
    assert!(status.success(), "{mode}: {out}{err}");
    serde_json::from_str(out.trim().lines().last().unwrap_or("")).expect("a JSON list")
}

#[test]
fn confluent_kafka_and_kafka_python_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(&pki, &["ssl.client.auth=required"]);
    assert_eq!(
        python_client(&pki, &broker, "confluent", "py-confluent"),
        ["c0", "c1", "c2", "c3", "c4"]
    );
    assert_eq!(
        python_client(&pki, &broker, "kafka-python", "py-kafka"),
        ["k0", "k1", "k2", "k3", "k4"]
    );
}

const ADMIN: &str = r#"
import sys
from confluent_kafka.admin import AdminClient, NewTopic, AclBinding, ResourceType, ResourcePatternType, AclOperation, AclPermissionType
bootstrap, ca, cert, key, principal = sys.argv[1:6]
a = AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca,
                 "ssl.certificate.location": cert, "ssl.key.location": key})
for f in a.create_topics([NewTopic("alice-topic", 1), NewTopic("other-topic", 1)]).values():
    f.result(30)
bindings = [AclBinding(ResourceType.TOPIC, "alice-topic", ResourcePatternType.LITERAL, principal, "*", op,
                       AclPermissionType.ALLOW) for op in (AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE)]
for f in a.create_acls(bindings, request_timeout=30).values():
    f.result()
print("ok")
"#;

#[test]
fn acls_are_keyed_on_the_certificate_principal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(
        &pki,
        &[
            "ssl.client.auth=required",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:admin",
            "auto.create.topics.enable=false",
            // The admin's DN maps to `admin`; every other DN stays itself.
            "ssl.principal.mapping.rules=RULE:^CN=admin,O=acme$/admin/,DEFAULT",
        ],
    );
    let bootstrap = broker.ssl.to_string();
    let (ok, out, err) = run_clean(
        "python3",
        &[
            "-c",
            ADMIN,
            &bootstrap,
            &pki.path("ca.pem"),
            &pki.path("admin.pem"),
            &pki.path("admin.key"),
            "User:CN=alice,OU=eng,O=acme",
        ],
        "",
        Duration::from_secs(120),
    );
    assert!(ok && out.contains("ok"), "admin as super user: {out}{err}");
    let (ok, err) = produce_ssl(&pki, Some("alice"), broker.ssl, "alice-topic", "allowed\n");
    assert!(ok, "alice writes her topic: {err}");
    let (ok, out, err) = consume_ssl(&pki, Some("alice"), broker.ssl, "alice-topic", 1);
    assert!(
        ok && out.trim() == "allowed",
        "alice reads her topic: {out}{err}"
    );
    let (ok, err) = produce_ssl(&pki, Some("alice"), broker.ssl, "other-topic", "denied\n");
    assert!(!ok, "alice may not write other-topic");
    assert!(
        err.contains("authoriz") || err.contains("Authoriz"),
        "{err}"
    );
    // The same topic, in the clear, as User:ANONYMOUS: denied.
    let (ok, _, err) = kcat_plain(broker.plain, &["-P", "-t", "alice-topic"], "anonymous\n");
    assert!(!ok, "ANONYMOUS may not write alice-topic: {err}");
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_and_the_broker_serves_others() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(&pki, &["ssl.client.auth=required"]);
    let (ok, _, err) = kcat_ssl(&pki, "ca", Some("mallory"), broker.ssl, &["-L"]);
    assert!(
        !ok,
        "mallory's certificate is not signed by the trusted CA: {err}"
    );
    // A client that does not trust the broker's CA fails on its side.
    let (ok, _, err) = kcat_ssl(&pki, "rogue-ca", Some("alice"), broker.ssl, &["-L"]);
    assert!(!ok, "the client refuses the broker's certificate: {err}");
    let (ok, out, err) = kcat_ssl(&pki, "ca", Some("alice"), broker.ssl, &["-L"]);
    assert!(
        ok && out.contains("broker 0 at"),
        "alice after mallory: {err}"
    );
    still_serves(&broker);
}

#[test]
fn no_client_certificate_where_one_is_required_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(&pki, &["listener.name.ssl.ssl.client.auth=required"]);
    let (ok, _, err) = kcat_ssl(&pki, "ca", None, broker.ssl, &["-L"]);
    assert!(!ok, "no certificate, required: {err}");
    let (ok, _, err) = kcat_ssl(&pki, "ca", Some("alice"), broker.ssl, &["-L"]);
    assert!(ok, "with a certificate: {err}");
    still_serves(&broker);
}

#[test]
fn requested_client_auth_serves_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(&pki, &["ssl.client.auth=requested"]);
    let (ok, _, err) = kcat_ssl(&pki, "ca", None, broker.ssl, &["-L"]);
    assert!(ok, "no certificate, requested: {err}");
    let (ok, _, err) = kcat_ssl(&pki, "ca", Some("mallory"), broker.ssl, &["-L"]);
    assert!(
        !ok,
        "a certificate that does not verify is refused even when only requested: {err}"
    );
}

fn api_versions_frame() -> Vec<u8> {
    support::encode_request(
        kafka_protocol::messages::ApiKey::ApiVersions,
        0,
        1,
        &kafka_protocol::messages::ApiVersionsRequest::default(),
    )
}

/// Reads until the broker closes the connection; when that happened, or `None` past `bound`.
fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<Instant> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < bound {
        match stream.read(&mut buf) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(Instant::now()),
        }
    }
    None
}

#[test]
fn a_plaintext_client_on_the_tls_port_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(&pki, &[]);
    let mut stream = TcpStream::connect(broker.ssl).unwrap();
    stream.write_all(&api_versions_frame()).unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(10));
    assert!(
        closed.is_some(),
        "a Kafka frame on the TLS port is not TLS: closed"
    );
    let (ok, _, err) = kcat_ssl(&pki, "ca", None, broker.ssl, &["-L"]);
    assert!(ok, "TLS clients still served: {err}");
    still_serves(&broker);
}

#[test]
fn a_tls_client_on_the_plaintext_port_fails_and_the_broker_serves_others() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(&pki, &[]);
    let (ok, _, err) = kcat_ssl(&pki, "ca", None, broker.plain, &["-L"]);
    assert!(!ok, "a ClientHello on the plaintext port: {err}");
    still_serves(&broker);
    let (ok, _, err) = kcat_ssl(&pki, "ca", None, broker.ssl, &["-L"]);
    assert!(ok, "{err}");
}

#[test]
fn a_handshake_that_never_finishes_is_closed_after_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(&pki, &["ssl-handshake-timeout-ms=1500"]);
    // Nothing at all, and half a ClientHello (a record header announcing 512 bytes, and 8).
    let opened = Instant::now();
    let mut silent = TcpStream::connect(broker.ssl).unwrap();
    let mut half = TcpStream::connect(broker.ssl).unwrap();
    half.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0,
    ])
    .unwrap();
    for (what, stream) in [("silent", &mut silent), ("half a ClientHello", &mut half)] {
        let closed = closed_within(stream, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{what}: not closed within 10 s"))
            - opened;
        assert!(
            closed >= Duration::from_millis(1000) && closed < Duration::from_secs(6),
            "{what}: closed after {closed:?}, the bound is 1.5 s"
        );
    }
    assert!(
        broker
            .broker
            .log()
            .iter()
            .any(|l| l.contains("ssl-handshake-timeout-ms")),
        "the close is logged with the setting"
    );
    let (ok, _, err) = kcat_ssl(&pki, "ca", None, broker.ssl, &["-L"]);
    assert!(ok, "{err}");
}

#[test]
fn bad_ssl_settings_stop_the_start_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let keystore = format!("ssl.keystore.location={}", pki.path("server-keystore.pem"));
    for (setting, part) in [
        (
            "listener.name.ssl.ssl.keystore.location=/nonexistent/keystore.pem".to_string(),
            "'listener.name.ssl.ssl.keystore.location'",
        ),
        (
            "ssl.cipher.suites=TLS_NOT_A_SUITE".to_string(),
            "'ssl.cipher.suites'",
        ),
        ("ssl.keystore.type=PKCS12".to_string(), "convert to PEM"),
        ("ssl.client.auth=required".to_string(), "trust store"),
        (
            "ssl.principal.mapping.rules=RULE:(/x/".to_string(),
            "'ssl.principal.mapping.rules'",
        ),
    ] {
        let (status, _, stderr) = run_bounded(
            env!("CARGO_BIN_EXE_ringbroker"),
            &[
                "serve",
                "--data-dir",
                &data_dir,
                "--listen",
                "127.0.0.1:0",
                "--set",
                "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
                "--set",
                &keystore,
                "--set",
                &setting,
            ],
            BOUND,
        );
        assert!(!status.success(), "{setting}: started");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("ringbroker: "))
            .unwrap_or_else(|| panic!("{setting}: no error line in {stderr}"));
        assert!(line.contains(part), "{setting}: {line}");
    }
}

const DESCRIBE: &str = r#"
import sys, json
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
bootstrap, ca, cert, key = sys.argv[1:5]
a = AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca,
                 "ssl.certificate.location": cert, "ssl.key.location": key})
resource = ConfigResource(ResourceType.BROKER, "0")
configs = a.describe_configs([resource])[resource].result(30)
out = {}
for name in ("ssl.keystore.key", "ssl.keystore.certificate.chain", "ssl.truststore.certificates", "ssl.client.auth"):
    entry = configs[name]
    out[name] = {"value": entry.value, "sensitive": entry.is_sensitive}
print(json.dumps(out))
"#;

#[test]
fn inline_pem_stores_serve_mtls_and_are_described_as_sensitive() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let read = |name: &str| std::fs::read_to_string(pki.dir.join(name)).unwrap();
    let key = format!("listener.name.ssl.ssl.keystore.key={}", read("server.key"));
    let chain = format!(
        "listener.name.ssl.ssl.keystore.certificate.chain={}",
        read("server.pem")
    );
    let trust = format!("ssl.truststore.certificates={}", read("ca.pem"));
    let data = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        data.path(),
        &[
            "--set",
            "listeners=SSL://127.0.0.1:0",
            "--set",
            &key,
            "--set",
            &chain,
            "--set",
            &trust,
            "--set",
            "ssl.client.auth=required",
        ],
    );
    // The one listener is SSL: `listen` is its address.
    let (ok, out, err) = kcat_ssl(&pki, "ca", Some("alice"), broker.addr, &["-L"]);
    assert!(
        ok && out.contains(&format!("broker 0 at {}", broker.addr)),
        "{out}{err}"
    );
    let bootstrap = broker.addr.to_string();
    let (ok, out, err) = run_clean(
        "python3",
        &[
            "-c",
            DESCRIBE,
            &bootstrap,
            &pki.path("ca.pem"),
            &pki.path("alice.pem"),
            &pki.path("alice.key"),
        ],
        "",
        Duration::from_secs(120),
    );
    assert!(ok, "{out}{err}");
    let described: serde_json::Value =
        serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    for secret in [
        "ssl.keystore.key",
        "ssl.keystore.certificate.chain",
        "ssl.truststore.certificates",
    ] {
        assert_eq!(described[secret]["sensitive"], true, "{described}");
        assert!(described[secret]["value"].is_null(), "{described}");
    }
    assert_eq!(described["ssl.client.auth"]["value"], "required");
    assert!(
        broker
            .log()
            .iter()
            .all(|l| !l.contains("PRIVATE KEY") && !l.contains("BEGIN CERTIFICATE")),
        "no key material in the log"
    );
}

#[test]
fn an_encrypted_pkcs8_key_is_read_with_ssl_key_password() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    openssl(
        dir.path(),
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "server.key",
            "-out",
            "server-encrypted.key",
            "-passout",
            "pass:s3cret-pw",
        ],
    );
    let mut keystore = std::fs::read(dir.path().join("server-encrypted.key")).unwrap();
    keystore.extend(std::fs::read(dir.path().join("server.pem")).unwrap());
    std::fs::write(dir.path().join("encrypted-keystore.pem"), keystore).unwrap();
    let location = format!(
        "ssl.keystore.location={}",
        pki.path("encrypted-keystore.pem")
    );
    // A wrong password stops the start, naming the setting and never the password.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let (status, _, stderr) = run_bounded(
        env!("CARGO_BIN_EXE_ringbroker"),
        &[
            "serve",
            "--data-dir",
            &data_dir,
            "--listen",
            "127.0.0.1:0",
            "--set",
            "listeners=SSL://127.0.0.1:0",
            "--set",
            &location,
            "--set",
            "ssl.key.password=wrong-pw",
        ],
        BOUND,
    );
    assert!(!status.success());
    let line = stderr
        .lines()
        .find(|l| l.starts_with("ringbroker: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        line.contains("'ssl.key.password'") && line.contains("cannot decrypt"),
        "{line}"
    );
    assert!(!stderr.contains("wrong-pw"), "{stderr}");
    // The right one serves.
    let broker = Broker::start_in(
        data.path(),
        &[
            "--set",
            "listeners=SSL://127.0.0.1:0",
            "--set",
            &location,
            "--set",
            "ssl.key.password=s3cret-pw",
        ],
    );
    let (ok, out, err) = kcat_ssl(&pki, "ca", None, broker.addr, &["-L"]);
    assert!(ok && out.contains("broker 0 at"), "{out}{err}");
    assert!(broker.log().iter().all(|l| !l.contains("s3cret-pw")));
}

const HANDSHAKE: &str = r#"
import socket, ssl, sys, json
host, port, ca, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if version == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
try:
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            print(json.dumps({"ok": True, "version": tls.version(), "cipher": tls.cipher()[0]}))
except (ssl.SSLError, OSError) as err:
    print(json.dumps({"ok": False, "error": str(err)}))
"#;

#[test]
fn enabled_protocols_and_cipher_suites_are_what_a_client_can_negotiate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let broker = start(
        &pki,
        &[
            "listener.name.ssl.ssl.enabled.protocols=TLSv1.3",
            "listener.name.ssl.ssl.cipher.suites=TLS_CHACHA20_POLY1305_SHA256",
        ],
    );
    let handshake = |broker: &TlsBroker, version: &str| -> serde_json::Value {
        let port = broker.ssl.port().to_string();
        let (ok, out, err) = run_clean(
            "python3",
            &[
                "-c",
                HANDSHAKE,
                "127.0.0.1",
                &port,
                &pki.path("ca.pem"),
                version,
            ],
            "",
            BOUND,
        );
        assert!(ok, "{out}{err}");
        serde_json::from_str(out.trim()).unwrap()
    };
    let tls13 = handshake(&broker, "1.3");
    assert_eq!(tls13["ok"], true, "{tls13}");
    assert_eq!(tls13["version"], "TLSv1.3", "{tls13}");
    assert_eq!(tls13["cipher"], "TLS_CHACHA20_POLY1305_SHA256", "{tls13}");
    let tls12 = handshake(&broker, "1.2");
    assert_eq!(tls12["ok"], false, "TLS 1.2 is not enabled: {tls12}");
    still_serves(&broker);
    drop(broker);
    // TLS 1.2 alone: a 1.2 client is served, with the one 1.2 suite allowed.
    let broker = start(
        &pki,
        &[
            "ssl.enabled.protocols=TLSv1.2",
            "ssl.cipher.suites=TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ],
    );
    let tls12 = handshake(&broker, "1.2");
    assert_eq!(tls12["ok"], true, "{tls12}");
    assert_eq!(tls12["version"], "TLSv1.2", "{tls12}");
    assert_eq!(tls12["cipher"], "ECDHE-ECDSA-AES256-GCM-SHA384", "{tls12}");
    let tls13 = handshake(&broker, "1.3");
    assert_eq!(
        tls13["version"], "TLSv1.2",
        "a client allowing 1.3 gets 1.2: {tls13}"
    );
}

/// SASL_SSL: the TLS handshake of an SSL listener, then SASL PLAIN; the principal is SASL's.
/// kcat and kafka-python produce and consume as alice; a bad password fails; the broker's log
/// never holds a password.
#[test]
fn sasl_ssl_authenticates_with_plain_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let data = tempfile::tempdir().unwrap();
    let keystore = format!("ssl.keystore.location={}", pki.path("server-keystore.pem"));
    let jaas = "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_alice=\"alice-secret\";";
    let broker = Broker::start_in(
        data.path(),
        &[
            "--set",
            "listeners=PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            "--set",
            &keystore,
            "--set",
            jaas,
        ],
    );
    let addr = ready_listener(&broker, "SASL_SSL");
    let kcat = |password: &str, args: &[&str], input: &str| {
        let ca = format!("ssl.ca.location={}", pki.path("ca.pem"));
        let password = format!("sasl.password={password}");
        let mut argv = vec![
            "-b",
            "",
            "-X",
            "security.protocol=sasl_ssl",
            "-X",
            &ca,
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            "sasl.username=alice",
            "-X",
            &password,
            "-m",
            "15",
        ];
        let bootstrap = addr.to_string();
        argv[1] = &bootstrap;
        argv.extend_from_slice(args);
        run_clean("kcat", &argv, input, BOUND)
    };
    let (ok, _, err) = kcat("alice-secret", &["-P", "-t", "over-sasl-ssl"], "one\ntwo\n");
    assert!(ok, "kcat produce over SASL_SSL: {err}");
    let (ok, out, err) = kcat(
        "alice-secret",
        &[
            "-C",
            "-t",
            "over-sasl-ssl",
            "-o",
            "beginning",
            "-c",
            "2",
            "-e",
        ],
        "",
    );
    assert!(
        ok && out.contains("one") && out.contains("two"),
        "{out}{err}"
    );
    let (ok, out, err) = kcat("not-it", &["-L"], "");
    assert!(!ok, "a bad password must fail: {out}");
    assert!(err.contains("Invalid username or password"), "{err}");
    let script = r#"
import sys
from kafka import KafkaConsumer
c = KafkaConsumer('over-sasl-ssl', bootstrap_servers=sys.argv[1], security_protocol='SASL_SSL',
                  ssl_cafile=sys.argv[2], sasl_mechanism='PLAIN', sasl_plain_username='alice',
                  sasl_plain_password='alice-secret', auto_offset_reset='earliest',
                  consumer_timeout_ms=10000)
print(sorted(m.value.decode() for m in c))
"#;
    let (status, out, err) = run_bounded(
        "python3",
        &["-c", script, &addr.to_string(), &pki.path("ca.pem")],
        Duration::from_secs(60),
    );
    assert!(status.success(), "kafka-python over SASL_SSL: {out}{err}");
    assert_eq!(out.trim(), "['one', 'two']");
    let log = broker.log().join("\n");
    assert!(!log.contains("alice-secret") && !log.contains("not-it"));
}
