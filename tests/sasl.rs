//! SASL on a SASL_PLAINTEXT listener against the real broker: kcat, kafka-python,
//! confluent-kafka and the rdkafka crate with PLAIN and OAUTHBEARER (unsecured JWS); an ACL
//! keyed on a SASL principal; and, at the protocol level, every way authentication can fail
//! (bad password, unknown user, unknown mechanism, a request before authentication, an expired
//! token, re-authentication as another principal, an expired session), SaslHandshake v0's bare
//! token framing, and the answers of a PLAINTEXT listener.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::{Broker, RawClient, run_bounded, run_bounded_with_input};

const PLAIN_JAAS: &str = "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_alice=\"alice-secret\" user_bob=\"bob-secret\" user_admin=\"admin-secret\";";
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

fn sasl_broker(dir: &tempfile::TempDir, extra: &[&str]) -> Broker {
    let mut args = vec![
        "--set",
        "listeners=SASL_PLAINTEXT://127.0.0.1:0",
        "--set",
        "sasl.enabled.mechanisms=PLAIN,OAUTHBEARER",
        "--set",
        PLAIN_JAAS,
    ];
    args.extend_from_slice(extra);
    Broker::start_in(dir.path(), &args)
}

fn handshake(client: &mut RawClient, version: i16, mechanism: &str) -> SaslHandshakeResponse {
    client.call(
        ApiKey::SaslHandshake,
        version,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.into())),
    )
}

fn authenticate(client: &mut RawClient, version: i16, token: &[u8]) -> SaslAuthenticateResponse {
    client.call(
        ApiKey::SaslAuthenticate,
        version,
        &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token)),
    )
}

fn plain(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// A connection authenticated with PLAIN (SaslAuthenticate v2).
fn plain_login(addr: SocketAddr, user: &str, password: &str) -> (RawClient, i64) {
    let mut client = RawClient::connect(addr);
    assert_eq!(handshake(&mut client, 1, "PLAIN").error_code, 0);
    let response = authenticate(&mut client, 2, &plain(user, password));
    assert_eq!(response.error_code, 0, "{:?}", response.error_message);
    (client, response.session_lifetime_ms)
}

fn metadata(client: &mut RawClient) -> MetadataResponse {
    client.call(ApiKey::Metadata, 12, &MetadataRequest::default())
}

/// A connection that must be closed by the broker: a read sees EOF within 10 s.
fn assert_closed(client: &mut RawClient) {
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(
        client.is_closed_by_peer(),
        "the broker kept the connection open"
    );
}

fn unsecured_token(sub: &str, exp_s: f64) -> String {
    let iat = now_s() - 1.5;
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{sub}","exp":{exp_s},"iat":{iat}}}"#))
    )
}

fn oauth_message(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn kcat(broker: &Broker, mechanism_args: &[&str], args: &[&str], input: &str) -> (bool, String) {
    let bootstrap = broker.bootstrap();
    // cargo's LD_LIBRARY_PATH would give kcat the test build's librdkafka (PLAIN only, no
    // SCRAM); kcat runs with the system's (Debian's 2.0.2, which has the SCRAM nonce quirk).
    let mut argv = vec![
        "-u",
        "LD_LIBRARY_PATH",
        "kcat",
        "-b",
        &bootstrap,
        "-X",
        "security.protocol=sasl_plaintext",
    ];
    for arg in mechanism_args {
        argv.push("-X");
        argv.push(arg);
    }
    argv.extend_from_slice(args);
    let (status, stdout, stderr) =
        run_bounded_with_input("env", &argv, input, Duration::from_secs(60));
    (status.success(), format!("{stdout}\n{stderr}"))
}

#[test]
fn kcat_plain_produces_and_consumes_and_a_bad_password_fails() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &[]);
    let alice = [
        "sasl.mechanisms=PLAIN",
        "sasl.username=alice",
        "sasl.password=alice-secret",
    ];
    let (ok, out) = kcat(&broker, &alice, &["-P", "-t", "plain-topic"], "one\ntwo\n");
    assert!(ok, "{out}");
    let (ok, out) = kcat(
        &broker,
        &alice,
        &["-C", "-t", "plain-topic", "-o", "beginning", "-e", "-q"],
        "",
    );
    assert!(ok, "{out}");
    assert!(out.contains("one") && out.contains("two"), "{out}");
    let wrong = [
        "sasl.mechanisms=PLAIN",
        "sasl.username=alice",
        "sasl.password=not-it",
    ];
    let (ok, out) = kcat(&broker, &wrong, &["-L", "-m", "5"], "");
    assert!(!ok, "{out}");
    assert!(out.contains("Invalid username or password"), "{out}");
    // No password reaches the broker's log.
    let log = broker.log().join("\n");
    assert!(
        !log.contains("alice-secret") && !log.contains("not-it"),
        "{log}"
    );
}

const PYTHON_SCRIPT: &str = r#"
import sys, json
from kafka import KafkaProducer, KafkaConsumer
from confluent_kafka import Producer, Consumer
bootstrap = sys.argv[1]
out = {}
common = dict(bootstrap_servers=bootstrap, security_protocol='SASL_PLAINTEXT',
              sasl_mechanism='PLAIN', sasl_plain_username='bob', sasl_plain_password='bob-secret')
p = KafkaProducer(**common)
p.send('py-plain', b'kafka-python').get(timeout=30)
p.close()
c = KafkaConsumer('py-plain', auto_offset_reset='earliest', consumer_timeout_ms=10000, **common)
out['kafka_python'] = [m.value.decode() for m in c]
c.close()
oauth = {'bootstrap.servers': bootstrap, 'security.protocol': 'SASL_PLAINTEXT',
         'sasl.mechanisms': 'OAUTHBEARER', 'sasl.oauthbearer.config': 'principal=alice',
         'enable.sasl.oauthbearer.unsecure.jwt': True}
p = Producer(oauth)
p.produce('py-oauth', b'confluent-oauthbearer')
out['oauth_unflushed'] = p.flush(30)
c = Consumer(dict(oauth, **{'group.id': 'g-oauth', 'auto.offset.reset': 'earliest'}))
c.subscribe(['py-oauth'])
got = []
import time
deadline = time.time() + 30
while not got and time.time() < deadline:
    m = c.poll(1.0)
    if m is not None and m.error() is None:
        got.append(m.value().decode())
c.close()
out['oauth'] = got
print(json.dumps(out))
"#;

#[test]
fn python_clients_with_plain_and_oauthbearer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &[]);
    let bootstrap = broker.bootstrap();
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &["-c", PYTHON_SCRIPT, &bootstrap],
        Duration::from_secs(150),
    );
    assert!(status.success(), "{stderr}\n{stdout}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["kafka_python"], serde_json::json!(["kafka-python"]));
    assert_eq!(out["oauth_unflushed"], 0);
    assert_eq!(out["oauth"], serde_json::json!(["confluent-oauthbearer"]));
}

#[test]
fn rdkafka_crate_with_plain() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &[]);
    let config = |config: &mut ClientConfig| {
        config
            .set("bootstrap.servers", broker.bootstrap())
            .set("security.protocol", "sasl_plaintext")
            .set("sasl.mechanisms", "PLAIN")
            .set("sasl.username", "alice")
            .set("sasl.password", "alice-secret");
    };
    let mut producer_config = ClientConfig::new();
    config(&mut producer_config);
    let producer: BaseProducer = producer_config.create().unwrap();
    producer
        .send(BaseRecord::to("rd-plain").key("k").payload("from-rdkafka"))
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    let mut consumer_config = ClientConfig::new();
    config(&mut consumer_config);
    let consumer: BaseConsumer = consumer_config
        .set("group.id", "rd-plain")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["rd-plain"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            got = message.payload().map(|p| p.to_vec());
        }
    }
    assert_eq!(got.as_deref(), Some(&b"from-rdkafka"[..]));
}

const ACL_SCRIPT: &str = r#"
import sys
from confluent_kafka.admin import (AdminClient, AclBinding, AclOperation, AclPermissionType,
    NewTopic, ResourcePatternType, ResourceType)
a = AdminClient({'bootstrap.servers': sys.argv[1], 'security.protocol': 'SASL_PLAINTEXT',
                 'sasl.mechanisms': 'PLAIN', 'sasl.username': 'admin', 'sasl.password': 'admin-secret'})
a.create_topics([NewTopic('orders', 1, 1)])['orders'].result()
b = AclBinding(ResourceType.TOPIC, 'orders', ResourcePatternType.LITERAL, 'User:alice', '*',
               AclOperation.ALL, AclPermissionType.ALLOW)
a.create_acls([b], request_timeout=30)[b].result()
print('ok')
"#;

#[test]
fn acl_keyed_on_a_sasl_principal() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(
        &dir,
        &[
            "--set",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "--set",
            "super.users=User:admin",
            "--set",
            "allow.everyone.if.no.acl.found=false",
        ],
    );
    let bootstrap = broker.bootstrap();
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &["-c", ACL_SCRIPT, &bootstrap],
        Duration::from_secs(120),
    );
    assert!(status.success(), "{stderr}\n{stdout}");
    let user = |name: &'static str, password: &'static str| {
        [
            "sasl.mechanisms=PLAIN".to_string(),
            format!("sasl.username={name}"),
            format!("sasl.password={password}"),
        ]
    };
    let alice = user("alice", "alice-secret");
    let alice: Vec<&str> = alice.iter().map(String::as_str).collect();
    let (ok, out) = kcat(&broker, &alice, &["-P", "-t", "orders"], "paid\n");
    assert!(ok, "alice may write: {out}");
    let bob = user("bob", "bob-secret");
    let bob: Vec<&str> = bob.iter().map(String::as_str).collect();
    let (ok, out) = kcat(&broker, &bob, &["-P", "-t", "orders"], "forged\n");
    assert!(!ok, "bob may not write: {out}");
    assert!(out.to_lowercase().contains("authoriz"), "{out}");
    let (ok, out) = kcat(
        &broker,
        &alice,
        &["-C", "-t", "orders", "-o", "beginning", "-e", "-q"],
        "",
    );
    assert!(ok, "{out}");
    assert!(out.contains("paid") && !out.contains("forged"), "{out}");
}

#[test]
fn bad_password_fails_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &[]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(handshake(&mut client, 1, "PLAIN").error_code, 0);
    let response = authenticate(&mut client, 1, &plain("alice", "wrong-password"));
    assert_eq!(response.error_code, SASL_AUTHENTICATION_FAILED);
    let message = response.error_message.unwrap().to_string();
    assert!(
        message.contains("Invalid username or password"),
        "{message}"
    );
    assert_closed(&mut client);
    assert!(!broker.log().join("\n").contains("wrong-password"));
}

#[test]
fn unknown_user_fails_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &[]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(handshake(&mut client, 1, "PLAIN").error_code, 0);
    let response = authenticate(&mut client, 0, &plain("mallory", "alice-secret"));
    assert_eq!(response.error_code, SASL_AUTHENTICATION_FAILED);
    assert_closed(&mut client);
}

#[test]
fn unknown_mechanism_lists_the_enabled_ones_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &[]);
    let mut client = RawClient::connect(broker.addr);
    let response = handshake(&mut client, 1, "GSSAPI");
    assert_eq!(response.error_code, UNSUPPORTED_SASL_MECHANISM);
    let names: Vec<String> = response.mechanisms.iter().map(|m| m.to_string()).collect();
    assert_eq!(names, ["PLAIN", "OAUTHBEARER"]);
    assert_closed(&mut client);
}

#[test]
fn request_before_authentication_closes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &[]);
    let mut client = RawClient::connect(broker.addr);
    // ApiVersions is served before authentication, and lists the SASL APIs.
    let versions: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 2, &ApiVersionsRequest::default());
    let range = |key: ApiKey| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(range(ApiKey::SaslHandshake), Some((0, 1)));
    assert_eq!(range(ApiKey::SaslAuthenticate), Some((0, 2)));
    client.send(ApiKey::Metadata, 12, 9, &MetadataRequest::default());
    assert_closed(&mut client);
    // SaslAuthenticate without a handshake: ILLEGAL_SASL_STATE, then closed.
    let mut client = RawClient::connect(broker.addr);
    let response = authenticate(&mut client, 1, &plain("alice", "alice-secret"));
    assert_eq!(response.error_code, ILLEGAL_SASL_STATE);
    assert_closed(&mut client);
    // After authentication the same request is served.
    let (mut client, lifetime) = plain_login(broker.addr, "alice", "alice-secret");
    assert_eq!(lifetime, 0, "connections.max.reauth.ms defaults to 0");
    assert_eq!(metadata(&mut client).brokers.len(), 1);
}

#[test]
fn oauthbearer_token_and_expired_token() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &[]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(handshake(&mut client, 1, "OAUTHBEARER").error_code, 0);
    let token = unsecured_token("carol", now_s() + 3600.5);
    let response = authenticate(&mut client, 2, &oauth_message(&token));
    assert_eq!(response.error_code, 0, "{:?}", response.error_message);
    assert_eq!(metadata(&mut client).brokers.len(), 1);

    let mut client = RawClient::connect(broker.addr);
    assert_eq!(handshake(&mut client, 1, "OAUTHBEARER").error_code, 0);
    let expired = unsecured_token("carol", now_s() - 60.25);
    let response = authenticate(&mut client, 2, &oauth_message(&expired));
    assert_eq!(response.error_code, SASL_AUTHENTICATION_FAILED);
    let message = response.error_message.unwrap().to_string();
    assert!(message.contains("expired"), "{message}");
    assert_closed(&mut client);
    assert!(!broker.log().join("\n").contains(&expired));
}

#[test]
fn session_expires_without_reauthentication_and_reauthentication_extends_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &["--set", "connections.max.reauth.ms=1500"]);
    // An OAUTHBEARER session ends with its token if that comes first.
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(handshake(&mut client, 1, "OAUTHBEARER").error_code, 0);
    let response = authenticate(
        &mut client,
        1,
        &oauth_message(&unsecured_token("carol", now_s() + 1.0)),
    );
    assert_eq!(response.error_code, 0);
    assert!(
        (1..=1000).contains(&response.session_lifetime_ms),
        "{}",
        response.session_lifetime_ms
    );

    let (mut client, lifetime) = plain_login(broker.addr, "alice", "alice-secret");
    assert_eq!(lifetime, 1500);
    assert_eq!(metadata(&mut client).brokers.len(), 1);
    // Re-authenticated before expiry, as the same principal: served past the first expiry.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(handshake(&mut client, 1, "PLAIN").error_code, 0);
    let response = authenticate(&mut client, 2, &plain("alice", "alice-secret"));
    assert_eq!(
        (response.error_code, response.session_lifetime_ms),
        (0, 1500)
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(metadata(&mut client).brokers.len(), 1);
    // Not re-authenticated: the next request closes the connection.
    std::thread::sleep(Duration::from_millis(1000));
    client.send(ApiKey::Metadata, 12, 9, &MetadataRequest::default());
    assert_closed(&mut client);
    assert!(
        broker
            .log()
            .iter()
            .any(|l| l.contains("expired") && l.contains("User:alice")),
        "{:?}",
        broker.log()
    );
}

#[test]
fn reauthentication_as_another_principal_is_refused_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &["--set", "connections.max.reauth.ms=60000"]);
    let (mut client, _) = plain_login(broker.addr, "alice", "alice-secret");
    assert_eq!(handshake(&mut client, 1, "PLAIN").error_code, 0);
    let response = authenticate(&mut client, 2, &plain("bob", "bob-secret"));
    assert_eq!(response.error_code, SASL_AUTHENTICATION_FAILED);
    let message = response.error_message.unwrap().to_string();
    assert!(message.contains("Cannot change principals"), "{message}");
    assert_closed(&mut client);
}

#[test]
fn handshake_v0_carries_the_token_as_a_bare_frame() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &[]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(handshake(&mut client, 0, "PLAIN").error_code, 0);
    let token = plain("alice", "alice-secret");
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&token);
    client.stream.write_all(&frame).unwrap();
    let mut size = [0u8; 4];
    client.stream.read_exact(&mut size).unwrap();
    assert_eq!(
        i32::from_be_bytes(size),
        0,
        "PLAIN's answer is an empty token"
    );
    assert_eq!(metadata(&mut client).brokers.len(), 1);
    // A bad bare token closes the connection unanswered.
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(handshake(&mut client, 0, "PLAIN").error_code, 0);
    let token = plain("alice", "nope");
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&token);
    client.stream.write_all(&frame).unwrap();
    assert_closed(&mut client);
}

#[test]
fn a_plaintext_listener_answers_illegal_sasl_state() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(
        handshake(&mut client, 1, "PLAIN").error_code,
        ILLEGAL_SASL_STATE
    );
    let response = authenticate(&mut client, 2, &plain("alice", "alice-secret"));
    assert_eq!(response.error_code, ILLEGAL_SASL_STATE);
    // Still anonymous, still served.
    assert_eq!(metadata(&mut client).brokers.len(), 1);
}

#[test]
fn sasl_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let start = |args: &[&str]| {
        let mut argv = vec!["serve", "--data-dir", data, "--listen", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        let (status, _, stderr) = run_bounded(
            env!("CARGO_BIN_EXE_ringbroker"),
            &argv,
            Duration::from_secs(20),
        );
        (status.code(), stderr)
    };
    let (code, stderr) = start(&[
        "--set",
        "listeners=SASL_PLAINTEXT://127.0.0.1:0",
        "--set",
        "sasl.enabled.mechanisms=GSSAPI",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("GSSAPI is not served"), "{stderr}");
    // PLAIN without users.
    let (code, stderr) = start(&["--set", "listeners=SASL_PLAINTEXT://127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no users"), "{stderr}");
    // A JAAS setting without a SASL listener; its value (a password) is not echoed.
    let (code, stderr) = start(&["--set", PLAIN_JAAS]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("alice-secret"), "{stderr}");
}

const SCRAM_SCRIPT: &str = r#"
import sys, json, time
from kafka import KafkaConsumer
from kafka.admin import (KafkaAdminClient, UserScramCredentialUpsertion as Up,
    UserScramCredentialDeletion as Del)
from confluent_kafka import Producer
bootstrap, step = sys.argv[1], sys.argv[2]
out = {}
if step == 'create':
    a = KafkaAdminClient(bootstrap_servers=bootstrap, security_protocol='SASL_PLAINTEXT',
                         sasl_mechanism='PLAIN', sasl_plain_username='alice',
                         sasl_plain_password='alice-secret')
    out['alter'] = a.alter_user_scram_credentials([
        Up('carol', 'SCRAM-SHA-256', 'carol-secret'),
        Up('dave', 'SCRAM-SHA-512', 'dave-secret', iterations=8192),
        Up('erin', 'SCRAM-SHA-256', 'erin-secret', iterations=4095),
        Up('frank', 'SCRAM-SHA-256', 'f', iterations=16385),
        Up('gina', 'SCRAM-SHA-256', 'g'), Del('gina', 'SCRAM-SHA-512'),
        Del('nobody', 'SCRAM-SHA-256'),
    ])
    d = a.describe_user_scram_credentials()
    out['describe'] = {u: [[int(c['mechanism']), c['iterations']] for c in v['credential_infos']]
                       for u, v in d.items()}
    d = a.describe_user_scram_credentials(['carol', 'nobody'])
    out['describe_some'] = {u: v['error'] for u, v in d.items()}
elif step == 'delete':
    a = KafkaAdminClient(bootstrap_servers=bootstrap, security_protocol='SASL_PLAINTEXT',
                         sasl_mechanism='SCRAM-SHA-512', sasl_plain_username='dave',
                         sasl_plain_password='dave-secret')
    out['alter'] = a.alter_user_scram_credentials([Del('carol', 'SCRAM-SHA-256')])
else:
    # confluent-kafka's librdkafka sends RFC 5802's nonce (kcat 2.0.2's does not).
    p = Producer({'bootstrap.servers': bootstrap, 'security.protocol': 'SASL_PLAINTEXT',
                  'sasl.mechanisms': 'SCRAM-SHA-256', 'sasl.username': 'carol',
                  'sasl.password': 'carol-secret'})
    p.produce('scram-topic', b'confluent-scram')
    out['unflushed'] = p.flush(30)
    c = KafkaConsumer('scram-topic', bootstrap_servers=bootstrap,
                      security_protocol='SASL_PLAINTEXT', sasl_mechanism='SCRAM-SHA-512',
                      sasl_plain_username='dave', sasl_plain_password='dave-secret',
                      auto_offset_reset='earliest', consumer_timeout_ms=10000)
    out['consumed'] = sorted(m.value.decode() for m in c)
print(json.dumps(out))
"#;

fn scram_script(broker: &Broker, step: &str) -> serde_json::Value {
    let bootstrap = broker.bootstrap();
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &["-c", SCRAM_SCRIPT, &bootstrap, step],
        Duration::from_secs(150),
    );
    assert!(status.success(), "{stderr}\n{stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|err| panic!("{err}: {stdout}"))
}

const SCRAM_MECHANISMS: &str = "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512";

#[test]
fn scram_credentials_from_the_admin_api_authenticate_kcat_and_python_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &["--set", SCRAM_MECHANISMS]);
    let out = scram_script(&broker, "create");
    let alter = &out["alter"];
    assert_eq!(alter["carol"], serde_json::Value::Null, "{out}");
    assert_eq!(alter["dave"], serde_json::Value::Null, "{out}");
    assert!(
        alter["erin"]
            .as_str()
            .unwrap()
            .contains("less than the minimum 4096"),
        "{out}"
    );
    assert!(
        alter["frank"]
            .as_str()
            .unwrap()
            .contains("more than the maximum 16384"),
        "{out}"
    );
    assert!(alter["gina"].as_str().unwrap().contains("twice"), "{out}");
    assert!(
        alter["nobody"].as_str().unwrap().contains("does not exist"),
        "{out}"
    );
    assert_eq!(
        out["describe"],
        serde_json::json!({"carol": [[1, 4096]], "dave": [[2, 8192]]})
    );
    assert_eq!(out["describe_some"]["carol"], serde_json::Value::Null);
    assert!(
        out["describe_some"]["nobody"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );

    let carol = [
        "sasl.mechanisms=SCRAM-SHA-256",
        "sasl.username=carol",
        "sasl.password=carol-secret",
    ];
    let dave = [
        "sasl.mechanisms=SCRAM-SHA-512",
        "sasl.username=dave",
        "sasl.password=dave-secret",
    ];
    let (ok, out) = kcat(
        &broker,
        &carol,
        &["-P", "-t", "scram-topic"],
        "kcat-scram\n",
    );
    assert!(ok, "{out}");
    let out = scram_script(&broker, "clients");
    assert_eq!(out["unflushed"], 0);
    assert_eq!(
        out["consumed"],
        serde_json::json!(["confluent-scram", "kcat-scram"])
    );
    let wrong = [
        "sasl.mechanisms=SCRAM-SHA-512",
        "sasl.username=dave",
        "sasl.password=not-dave",
    ];
    let (ok, out) = kcat(&broker, &wrong, &["-L", "-m", "5"], "");
    assert!(!ok, "{out}");
    assert!(out.contains("invalid credentials"), "{out}");
    // A mechanism the user has no credential for fails the same way.
    let carol_512 = [
        "sasl.mechanisms=SCRAM-SHA-512",
        "sasl.username=carol",
        "sasl.password=carol-secret",
    ];
    let (ok, out) = kcat(&broker, &carol_512, &["-L", "-m", "5"], "");
    assert!(!ok && out.contains("invalid credentials"), "{out}");
    let log = broker.log().join("\n");
    assert!(
        !log.contains("carol-secret") && !log.contains("not-dave"),
        "{log}"
    );

    // The credentials live in the metadata log.
    drop(broker);
    let broker = sasl_broker(&dir, &["--set", SCRAM_MECHANISMS]);
    let (ok, out) = kcat(
        &broker,
        &dave,
        &["-C", "-t", "scram-topic", "-o", "beginning", "-e", "-q"],
        "",
    );
    assert!(ok && out.contains("kcat-scram"), "{out}");
    // Deleted (by dave, over SCRAM), carol can no longer authenticate.
    let out = scram_script(&broker, "delete");
    assert_eq!(out["alter"]["carol"], serde_json::Value::Null, "{out}");
    let (ok, out) = kcat(&broker, &carol, &["-L", "-m", "5"], "");
    assert!(!ok && out.contains("invalid credentials"), "{out}");
}

#[test]
fn scram_credential_apis_need_cluster_rights_and_known_mechanisms() {
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use kafka_protocol::messages::{
        AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
        DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
    };
    const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    const UNACCEPTABLE_CREDENTIAL: i16 = 93;
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(
        &dir,
        &[
            "--set",
            SCRAM_MECHANISMS,
            "--set",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "--set",
            "super.users=User:admin",
            "--set",
            "allow.everyone.if.no.acl.found=false",
        ],
    );
    let upsert = |name: &str, mechanism: i8, iterations: i32| {
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(name.into()))
            .with_mechanism(mechanism)
            .with_iterations(iterations)
            .with_salt(Bytes::from_static(b"salt-salt"))
            .with_salted_password(Bytes::from(vec![7u8; 32]))
    };
    let request =
        AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsert("carol", 1, 4096)]);
    let (mut bob, _) = plain_login(broker.addr, "bob", "bob-secret");
    let response: AlterUserScramCredentialsResponse =
        bob.call(ApiKey::AlterUserScramCredentials, 0, &request);
    assert_eq!(response.results.len(), 1);
    assert_eq!(response.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED);
    let response: DescribeUserScramCredentialsResponse = bob.call(
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default(),
    );
    assert_eq!(response.error_code, CLUSTER_AUTHORIZATION_FAILED);

    let (mut admin, _) = plain_login(broker.addr, "admin", "admin-secret");
    let request = AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![
            upsert("carol", 1, 4096),
            upsert("dave", 3, 4096),
            upsert("", 1, 4096),
        ])
        .with_deletions(vec![
            ScramCredentialDeletion::default()
                .with_name(StrBytes::from_static_str("erin"))
                .with_mechanism(0),
        ]);
    let response: AlterUserScramCredentialsResponse =
        admin.call(ApiKey::AlterUserScramCredentials, 0, &request);
    let codes: Vec<(String, i16)> = response
        .results
        .iter()
        .map(|r| (r.user.to_string(), r.error_code))
        .collect();
    assert_eq!(
        codes,
        [
            ("erin".to_string(), UNSUPPORTED_SASL_MECHANISM),
            ("carol".to_string(), 0),
            ("dave".to_string(), UNSUPPORTED_SASL_MECHANISM),
            (String::new(), UNACCEPTABLE_CREDENTIAL),
        ]
    );
    let response: DescribeUserScramCredentialsResponse = admin.call(
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default(),
    );
    assert_eq!(response.error_code, 0);
    let users: Vec<String> = response
        .results
        .iter()
        .map(|r| r.user.to_string())
        .collect();
    assert_eq!(users, ["carol"]);
}

#[test]
fn frames_before_authentication_are_bounded_by_sasl_server_max_receive_size() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &["--set", "sasl.server.max.receive.size=1024"]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(handshake(&mut client, 1, "PLAIN").error_code, 0);
    client.send(
        ApiKey::SaslAuthenticate,
        2,
        1,
        &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(vec![b'x'; 2000])),
    );
    assert_closed(&mut client);
    // Once authenticated, socket.request.max.bytes is the bound again.
    let (mut client, _) = plain_login(broker.addr, "alice", "alice-secret");
    let request = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(kafka_protocol::messages::TopicName(StrBytes::from_string(
                "t".repeat(249),
            ))));
        10
    ]));
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &request);
    assert_eq!(response.topics.len(), 1);
}

const REAUTH_SCRIPT: &str = r#"
import sys, time
from kafka import KafkaProducer
from confluent_kafka import Producer
bootstrap = sys.argv[1]
p = KafkaProducer(bootstrap_servers=bootstrap, security_protocol='SASL_PLAINTEXT',
                  sasl_mechanism='PLAIN', sasl_plain_username='bob', sasl_plain_password='bob-secret')
c = Producer({'bootstrap.servers': bootstrap, 'security.protocol': 'SASL_PLAINTEXT',
              'sasl.mechanisms': 'PLAIN', 'sasl.username': 'alice', 'sasl.password': 'alice-secret'})
for i in range(6):
    p.send('reauth', b'%d' % i).get(timeout=10)
    c.produce('reauth', b'c%d' % i)
    assert c.flush(10) == 0
    time.sleep(1)
print('ok')
"#;

#[test]
fn kafka_python_and_librdkafka_reauthenticate_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let broker = sasl_broker(&dir, &["--set", "connections.max.reauth.ms=1500"]);
    let bootstrap = broker.bootstrap();
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &["-c", REAUTH_SCRIPT, &bootstrap],
        Duration::from_secs(90),
    );
    assert!(
        status.success() && stdout.contains("ok"),
        "{stderr}\n{stdout}"
    );
    // Six seconds of use over 1.5 s sessions, and no connection was closed for expiry.
    let log = broker.log();
    assert!(!log.iter().any(|l| l.contains("expired")), "{log:?}");
}
