//! Typed broker configuration: embedded defaults, then a TOML file, then command-line flags.
//!
//! Owner: built once by `main` before any shard starts, then shared read-only (each shard gets
//! a clone). Nothing here changes after start; dynamic (per-topic, altered at runtime) configs
//! live in the metadata image.
//!
//! Every setting has one key. The broker's own settings use the flag's name (`data-dir`,
//! `listen`, ...); Kafka's settings use Kafka's names (`socket.request.max.bytes`). In the TOML
//! file a Kafka name may be written bare (`socket.request.max.bytes = 1048576`, which TOML
//! reads as nested tables) or quoted; both are flattened back to the dotted name. On the
//! command line any key can be given with `--set key=value`, and the broker's own settings also
//! have their flags. Later sources override earlier ones, and each value remembers where it
//! came from (`ConfigSource`) so that DescribeConfigs can report it.
//!
//! Validation is complete before the broker touches the disk or the network: an unknown key or
//! a bad value is one `ConfigError` line naming the key and the reason.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::limits;

pub use kraft::QuorumConfig;

pub mod kind;
pub mod kraft;
pub mod listener;
pub mod properties;
pub mod topic;

pub use kind::ValueKind;
pub use kraft::SecurityProtocol;
pub use listener::{ListenerConfig, SslSettings};

/// Where a configuration value came from, in Kafka's terms (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// The embedded default.
    Default,
    /// The config file or a command-line flag (Kafka: STATIC_BROKER_CONFIG).
    Static,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A failure to build the configuration. Every variant names the offending key or file, and
/// its `Display` is the single line the broker prints before exiting with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key no setting has.
    #[error("unknown config key '{key}'")]
    UnknownKey {
        /// The key as given.
        key: String,
    },
    /// A value that does not parse or is out of range.
    #[error("invalid value '{value}' for '{key}': {reason}")]
    InvalidValue {
        /// The setting.
        key: String,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A `--set` argument without `=`.
    #[error("--set expects key=value, got '{0}'")]
    MalformedSet(String),
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    FileRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or holds a value TOML cannot give us as a scalar.
    #[error("config file {path}: {reason}")]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, on one line.
        reason: String,
    },
}

/// One setting's definition: its key, its embedded default and how to check a value.
#[derive(Debug)]
pub struct ConfigDef {
    /// The key, as written in the file and after `--set`.
    pub name: &'static str,
    /// The embedded default, as text (checked by the same code as user values).
    pub default: &'static str,
    /// What values it takes.
    pub kind: ValueKind,
    /// One line for listings and DescribeConfigs documentation.
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    default: &'static str,
    kind: ValueKind,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        default,
        kind,
        doc,
    }
}

const LONG_MAX: i64 = i64::MAX;

/// Kafka's KRaft authorizer class name (`authorizer.class.name`).
pub const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";
/// Kafka's ZooKeeper-era authorizer class name, accepted as the same built-in authorizer.
pub const ACL_AUTHORIZER: &str = "kafka.security.authorizer.AclAuthorizer";
/// Kafka's default `replica.selector.class`: consumers read from the leader.
pub const LEADER_SELECTOR: &str = "org.apache.kafka.common.replica.LeaderSelector";
/// Kafka's rack-aware `replica.selector.class` (KIP-392; `replication::selector`).
pub const RACK_AWARE_SELECTOR: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";
const INT_MAX: i64 = i32::MAX as i64;

/// Every setting the broker understands. DescribeConfigs on the broker reports exactly these.
///
/// Kafka's defaults are kept, with one deliberate exception: `log.flush.interval.messages`
/// defaults to 1 (fsync before acknowledging every append, DESIGN.md §3) where Kafka leaves
/// flushing to the OS.
pub const CONFIG_DEFS: &[ConfigDef] = &[
    def(
        "data-dir",
        "./data",
        ValueKind::Text,
        "Directory holding the metadata log and one directory per partition.",
    ),
    def(
        "listen",
        "127.0.0.1:9092",
        ValueKind::Text,
        "HOST:PORT the Kafka listener binds on every shard (SO_REUSEPORT); port 0 picks a free port.",
    ),
    def(
        "advertised-listener",
        "",
        ValueKind::Text,
        "HOST:PORT given to clients in Metadata; empty means the bound listen address.",
    ),
    def(
        "process.roles",
        "broker,controller",
        ValueKind::Text,
        "broker, controller, or both: what this node does (a lone node is both).",
    ),
    def(
        "controller.quorum.voters",
        "",
        ValueKind::Text,
        "The controller quorum as id@host:port pairs; empty: a lone node with its local metadata log.",
    ),
    def(
        "controller.quorum.election.timeout.ms",
        "1000",
        ValueKind::Int {
            min: 200,
            max: 60_000,
        },
        "Time without a quorum leader before a voter calls an election (randomised up to twice it).",
    ),
    def(
        "broker.session.timeout.ms",
        "9000",
        ValueKind::Int {
            min: 500,
            max: 600_000,
        },
        "Time the active controller waits without hearing from a broker before fencing it.",
    ),
    def(
        "broker.heartbeat.interval.ms",
        "2000",
        ValueKind::Int {
            min: 50,
            max: 60_000,
        },
        "How often each broker checks its registration and the active controller checks every broker's session.",
    ),
    def(
        "broker.rack",
        "",
        ValueKind::Text,
        "This broker's rack, for rack-aware replica placement and consumers' rack-aware reads; empty: none.",
    ),
    def(
        "replica.selector.class",
        "",
        ValueKind::Choice(&["", LEADER_SELECTOR, RACK_AWARE_SELECTOR]),
        "Which replica a leader names for a consumer's fetches (KIP-392): empty or Kafka's LeaderSelector for the leader, Kafka's RackAwareReplicaSelector for a replica in the consumer's client.rack.",
    ),
    def(
        "listeners",
        "",
        ValueKind::Text,
        "NAME://host:port list: the client listeners (the first sets listen) and the controller listener; empty: listen alone, PLAINTEXT.",
    ),
    def(
        "advertised.listeners",
        "",
        ValueKind::Text,
        "NAME://host:port list: what clients of each client listener are told (the first listener's sets advertised-listener).",
    ),
    def(
        "controller.listener.names",
        "CONTROLLER",
        ValueKind::Text,
        "The listener in listeners that the controller quorum uses.",
    ),
    def(
        "listener.security.protocol.map",
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        ValueKind::Text,
        "NAME:PROTOCOL for every listener: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (a controller listener PLAINTEXT).",
    ),
    def(
        "inter.broker.listener.name",
        "",
        ValueKind::Text,
        "The listener brokers use to reach each other; empty: the client listener.",
    ),
    def(
        "ssl.keystore.type",
        "PEM",
        ValueKind::Text,
        "Format of the key store of SSL listeners: PEM (Kafka's default JKS, and PKCS12, are refused: convert them to PEM).",
    ),
    def(
        "ssl.keystore.location",
        "",
        ValueKind::Text,
        "PEM file holding the private key and the certificate chain of SSL listeners.",
    ),
    def(
        "ssl.keystore.key",
        "",
        ValueKind::Password,
        "The private key in PEM, inline (instead of ssl.keystore.location).",
    ),
    def(
        "ssl.keystore.certificate.chain",
        "",
        ValueKind::Password,
        "The certificate chain in PEM, inline (with ssl.keystore.key).",
    ),
    def(
        "ssl.key.password",
        "",
        ValueKind::Password,
        "Password of the encrypted (PKCS#8) private key of ssl.keystore.location or ssl.keystore.key.",
    ),
    def(
        "ssl.truststore.type",
        "PEM",
        ValueKind::Text,
        "Format of the trust store (the CAs that sign client certificates): PEM.",
    ),
    def(
        "ssl.truststore.location",
        "",
        ValueKind::Text,
        "PEM file of the CA certificates client certificates are checked against.",
    ),
    def(
        "ssl.truststore.certificates",
        "",
        ValueKind::Password,
        "The CA certificates in PEM, inline (instead of ssl.truststore.location).",
    ),
    def(
        "ssl.client.auth",
        "none",
        ValueKind::Choice(&["none", "requested", "required"]),
        "Whether SSL listeners ask clients for a certificate: none, requested, required.",
    ),
    def(
        "ssl.enabled.protocols",
        "TLSv1.2,TLSv1.3",
        ValueKind::Text,
        "TLS versions SSL listeners accept (TLSv1.2, TLSv1.3).",
    ),
    def(
        "ssl.cipher.suites",
        "",
        ValueKind::Text,
        "Cipher suites by their Kafka (JSSE) names; empty: every suite rustls offers.",
    ),
    def(
        "ssl.principal.mapping.rules",
        "DEFAULT",
        ValueKind::Text,
        "Rules mapping a client certificate's subject DN to a principal name (RULE:pattern/replacement/[LU], DEFAULT).",
    ),
    def(
        "ssl-handshake-timeout-ms",
        "10000",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "How long a TLS handshake may take from the accept; past it the connection is closed.",
    ),
    def(
        "cores",
        "",
        ValueKind::Text,
        "CPU cores to run one shard each on, e.g. 0-3 or 0,2; empty means every online core.",
    ),
    def(
        "node-id",
        "0",
        ValueKind::Int {
            min: 0,
            max: INT_MAX,
        },
        "This broker's node id (Kafka node.id).",
    ),
    def(
        "log-level",
        "info",
        ValueKind::Text,
        "Log filter (tracing EnvFilter syntax) used when RUST_LOG is not set.",
    ),
    def(
        "log-format",
        "text",
        ValueKind::Choice(&["text", "json"]),
        "text or json.",
    ),
    def(
        "metrics-listen",
        "",
        ValueKind::Text,
        "HOST:PORT of the Prometheus endpoint (/metrics, /ready) on shard 0; empty means off.",
    ),
    def(
        "shutdown-drain-ms",
        "10000",
        ValueKind::Long {
            min: 0,
            max: 3_600_000,
        },
        "How long SIGINT/SIGTERM waits for in-flight requests before closing connections.",
    ),
    def(
        "shard-spin-before-park-us",
        "0",
        ValueKind::Long {
            min: 0,
            max: limits::SHARD_SPIN_BEFORE_PARK_US_MAX as i64,
        },
        "How long an idle shard keeps polling (spinning) before it parks; 0 parks at once.",
    ),
    def(
        "socket.request.max.bytes",
        "104857600",
        ValueKind::Int {
            min: 1,
            max: limits::SOCKET_REQUEST_BYTES_MAX as i64,
        },
        "Largest request frame a client may send; a larger one closes its connection.",
    ),
    def(
        "max.connections",
        "2147483647",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "Connections the broker accepts at once; past it the listeners stop accepting until one closes. Capped by the open-file limit (see docs/RELIABILITY.md).",
    ),
    def(
        "max.connections.per.ip",
        "2147483647",
        ValueKind::NON_NEGATIVE_INT,
        "Connections one client address may hold; a further one is closed at once.",
    ),
    def(
        "max.connections.per.ip.overrides",
        "",
        ValueKind::Text,
        "Per-address exceptions to max.connections.per.ip, as host:count pairs separated by commas.",
    ),
    def(
        "sasl.enabled.mechanisms",
        "PLAIN",
        ValueKind::Text,
        "SASL mechanisms a SASL_PLAINTEXT listener offers: PLAIN, OAUTHBEARER (unsecured JWS). Kafka's default GSSAPI is not served, so the default is PLAIN.",
    ),
    def(
        "connections.max.reauth.ms",
        "0",
        ValueKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        "SASL session lifetime (KIP-368): past it a connection that has not re-authenticated is closed on its next request; 0: sessions do not expire.",
    ),
    def(
        "sasl.server.max.receive.size",
        "524288",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "Largest request frame a SASL_PLAINTEXT listener reads from a connection before it has authenticated.",
    ),
    def(
        "connections.max.idle.ms",
        "600000",
        ValueKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        "A connection with no request in flight and nothing read or written for this long is closed; so is one whose response cannot be written for this long.",
    ),
    def(
        "queued.max.request.bytes",
        "1073741824",
        ValueKind::Long {
            min: -1,
            max: LONG_MAX,
        },
        "Bytes of requests the broker holds read but not yet answered, shared out over the shards (each may hold at least one socket.request.max.bytes frame); reading pauses at the bound. -1: unbounded.",
    ),
    def(
        "request-read-timeout-ms",
        "30000",
        ValueKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        "How long a request frame may take to arrive once its first byte has; a slower one closes its connection.",
    ),
    def(
        "max.incremental.fetch.session.cache.slots",
        "1000",
        ValueKind::Int {
            min: 0,
            max: INT_MAX,
        },
        "Incremental fetch sessions (KIP-227) the broker keeps, shared out over the shards; 0 serves every fetch sessionless.",
    ),
    def(
        "num.partitions",
        "1",
        ValueKind::Int {
            min: 1,
            max: limits::TOPIC_PARTITIONS_MAX as i64,
        },
        "Partitions of a topic created without a partition count (auto-created or -1).",
    ),
    def(
        "group.min.session.timeout.ms",
        "6000",
        ValueKind::NON_NEGATIVE_INT,
        "Shortest session timeout a group member may ask for.",
    ),
    def(
        "group.max.session.timeout.ms",
        "1800000",
        ValueKind::NON_NEGATIVE_INT,
        "Longest session timeout a group member may ask for.",
    ),
    def(
        "group.initial.rebalance.delay.ms",
        "3000",
        ValueKind::NON_NEGATIVE_INT,
        "How long the first rebalance of an empty group waits for more members to join.",
    ),
    def(
        "offset.metadata.max.bytes",
        "4096",
        ValueKind::NON_NEGATIVE_INT,
        "Longest metadata string an offset commit may carry.",
    ),
    def(
        "offsets.topic.num.partitions",
        "50",
        ValueKind::Int {
            min: 1,
            max: limits::TOPIC_PARTITIONS_MAX as i64,
        },
        "Partitions of __consumer_offsets when it is created; once it exists its own count is used.",
    ),
    def(
        "offsets.topic.replication.factor",
        "3",
        ValueKind::Short {
            min: 1,
            max: i16::MAX as i64,
        },
        "Replicas of each __consumer_offsets partition under a controller quorum; its creation (and so every group) waits until that many brokers are live. A lone node holds one replica.",
    ),
    def(
        "offsets.retention.minutes",
        "10080",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "How long committed offsets are kept once a group is empty (or, for simple consumers and unsubscribed topics, since their commit).",
    ),
    def(
        "offsets.retention.check.interval.ms",
        "600000",
        ValueKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        "How often each shard looks for expired committed offsets.",
    ),
    def(
        "offsets.commit.timeout.ms",
        "5000",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "How long an offset commit (or group metadata write) waits for the __consumer_offsets ISR to hold it; then COORDINATOR_NOT_AVAILABLE.",
    ),
    def(
        "request.timeout.ms",
        "30000",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "How long transaction state writes and transaction markers wait for their partition's ISR, and the deadline of WriteTxnMarkers sent to other brokers.",
    ),
    def(
        "transaction.state.log.num.partitions",
        "50",
        ValueKind::Int {
            min: 1,
            max: limits::TOPIC_PARTITIONS_MAX as i64,
        },
        "Partitions of __transaction_state, used when the broker creates it on first use.",
    ),
    def(
        "transaction.state.log.replication.factor",
        "3",
        ValueKind::Short {
            min: 1,
            max: i16::MAX as i64,
        },
        "Replicas of each __transaction_state partition under a controller quorum; its creation (and so every transactional producer) waits until that many brokers are live. A lone node holds one replica.",
    ),
    def(
        "transaction.state.log.min.isr",
        "2",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "min.insync.replicas of __transaction_state when it is created under a controller quorum (a lone node's copy has no other replica and sets none).",
    ),
    def(
        "transaction.max.timeout.ms",
        "900000",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "Longest transaction.timeout.ms a transactional producer may ask for (longer: INVALID_TRANSACTION_TIMEOUT).",
    ),
    def(
        "transactional.id.expiration.ms",
        "604800000",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "How long the coordinator keeps an idle transactional id (no transaction) before expiring it.",
    ),
    def(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "10000",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "Interval at which the coordinator aborts transactions open longer than their timeout.",
    ),
    def(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        "3600000",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "Interval at which the coordinator removes transactional ids past transactional.id.expiration.ms.",
    ),
    def(
        "auto.create.topics.enable",
        "true",
        ValueKind::Bool,
        "Create a topic when a client asks for its metadata or produces to it.",
    ),
    def(
        "default.replication.factor",
        "1",
        ValueKind::Short {
            min: 1,
            max: i16::MAX as i64,
        },
        "Replication factor of topics created without one.",
    ),
    def(
        "authorizer.class.name",
        "",
        ValueKind::Choice(&["", STANDARD_AUTHORIZER, ACL_AUTHORIZER]),
        "Empty for no authorization; Kafka's StandardAuthorizer (or AclAuthorizer) class name turns on the built-in ACL authorizer.",
    ),
    def(
        "allow.everyone.if.no.acl.found",
        "false",
        ValueKind::Bool,
        "With an authorizer: allow an operation on a resource no ACL matches.",
    ),
    def(
        "super.users",
        "",
        ValueKind::Text,
        "With an authorizer: semicolon-separated principals (User:NAME) allowed everything.",
    ),
    def(
        "delete.topic.enable",
        "true",
        ValueKind::Bool,
        "Whether DeleteTopics may delete topics.",
    ),
    def(
        "unclean.leader.election.enable",
        "false",
        ValueKind::Bool,
        "Whether a partition with no live in-sync replica may be led by a live replica out of sync (records may be lost).",
    ),
    def(
        "auto.leader.rebalance.enable",
        "true",
        ValueKind::Bool,
        "Under a controller quorum: the active controller moves leaderships back to preferred replicas (the first of each partition) every leader.imbalance.check.interval.seconds.",
    ),
    def(
        "leader.imbalance.check.interval.seconds",
        "300",
        ValueKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        "How often the active controller checks the leader balance.",
    ),
    def(
        "leader.imbalance.per.broker.percentage",
        "10",
        ValueKind::Int {
            min: 0,
            max: INT_MAX,
        },
        "Share of a broker's preferred partitions that others may lead before the balance check moves them back to it.",
    ),
    def(
        "min.insync.replicas",
        "1",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "Replicas that must have an acks=all write before it is acknowledged.",
    ),
    def(
        "replica.lag.time.max.ms",
        "30000",
        ValueKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        "A follower that has not caught up with its leader for this long leaves the ISR.",
    ),
    def(
        "replica.fetch.wait.max.ms",
        "500",
        ValueKind::Int {
            min: 0,
            max: INT_MAX,
        },
        "How long a leader holds a follower's fetch when it has no new data.",
    ),
    def(
        "replica.fetch.max.bytes",
        "1048576",
        ValueKind::Int {
            min: 0,
            max: INT_MAX,
        },
        "Bytes a follower fetches per partition per request (at least one batch).",
    ),
    def(
        "replica.fetch.response.max.bytes",
        "10485760",
        ValueKind::Int {
            min: 0,
            max: INT_MAX,
        },
        "Bytes a follower fetches per request (at least one batch).",
    ),
    def(
        "replica.fetch.backoff.ms",
        "1000",
        ValueKind::Int {
            min: 0,
            max: INT_MAX,
        },
        "How long a follower waits after a failed fetch before it tries again.",
    ),
    def(
        "message.max.bytes",
        "1048588",
        ValueKind::NON_NEGATIVE_INT,
        "Largest record batch a topic accepts (topic: max.message.bytes).",
    ),
    // The retention and roll ages, as Kafka: the `.ms` key has no default and wins when set,
    // else `log.retention.minutes`, else `log.retention.hours` (default 168)
    // (`topic::UNIT_SYNONYMS`).
    def(
        "log.retention.ms",
        "",
        ValueKind::Long {
            min: -1,
            max: LONG_MAX,
        },
        "Age after which closed segments are deleted; -1 keeps them (topic: retention.ms).",
    ),
    def(
        "log.retention.minutes",
        "",
        ValueKind::Int {
            min: i32::MIN as i64,
            max: INT_MAX,
        },
        "log.retention.ms in minutes, used when log.retention.ms is not set; negative keeps segments.",
    ),
    def(
        "log.retention.hours",
        "168",
        ValueKind::Int {
            min: i32::MIN as i64,
            max: INT_MAX,
        },
        "log.retention.ms in hours, used when neither log.retention.ms nor log.retention.minutes is set.",
    ),
    def(
        "log.retention.bytes",
        "-1",
        ValueKind::Long {
            min: -1,
            max: LONG_MAX,
        },
        "Partition size above which the oldest closed segments are deleted; -1 for no limit (topic: retention.bytes).",
    ),
    def(
        "log.segment.bytes",
        "1073741824",
        ValueKind::Int {
            min: 14,
            max: INT_MAX,
        },
        "Segment size at which a partition rolls to a new segment (topic: segment.bytes).",
    ),
    def(
        "quota.window.num",
        "11",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "The number of samples kept in memory for client quotas (producer_byte_rate, consumer_byte_rate).",
    ),
    def(
        "quota.window.size.seconds",
        "1",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "The time span of each sample of client quotas.",
    ),
    def(
        "log.segment.reserve.budget.bytes",
        "1073741824",
        ValueKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        "Per shard: file space active segments may hold reserved ahead of their tail (steps of 1 MiB growing to 64 MiB with a segment's writes; segments below 1 MiB written share half of it); past it a segment appends without reserving (its file grows). 0: no reservations.",
    ),
    def(
        "log.roll.ms",
        "",
        ValueKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        "Segment age at which a partition rolls to a new segment (topic: segment.ms).",
    ),
    def(
        "log.roll.hours",
        "168",
        ValueKind::Int {
            min: 1,
            max: INT_MAX,
        },
        "log.roll.ms in hours, used when log.roll.ms is not set.",
    ),
    def(
        "log.message.format.version",
        "3.0-IV1",
        ValueKind::KafkaVersion,
        "Deprecated by Kafka 3.0 and ignored, as Kafka ignores it from inter-broker protocol 3.0 on: batches are stored as produced, in format v2 (topic: message.format.version).",
    ),
    def(
        "log.message.timestamp.type",
        "CreateTime",
        ValueKind::Choice(&["CreateTime", "LogAppendTime"]),
        "Whether record timestamps are the producer's or the broker's (topic: message.timestamp.type).",
    ),
    def(
        "log.flush.interval.messages",
        "1",
        ValueKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        "1 syncs every append before acknowledging it; larger leaves syncing to log.flush.interval.ms or the OS (topic: flush.messages).",
    ),
    def(
        "log.flush.interval.ms",
        "9223372036854775807",
        ValueKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        "Sync interval when appends are not synced one by one (topic: flush.ms).",
    ),
    def(
        "log.index.interval.bytes",
        "4096",
        ValueKind::NON_NEGATIVE_INT,
        "Bytes between entries of the sparse offset index (topic: index.interval.bytes).",
    ),
    def(
        "log.cleanup.policy",
        "delete",
        ValueKind::List(&["delete", "compact"]),
        "delete removes old segments by retention; compact keeps the latest record per key (topic: cleanup.policy).",
    ),
    def(
        "log.cleaner.enable",
        "true",
        ValueKind::Bool,
        "Whether each shard runs the log cleaner on its partitions whose cleanup.policy includes compact.",
    ),
    def(
        "log.cleaner.backoff.ms",
        "15000",
        ValueKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        "How long a shard's cleaner sleeps when no partition needs cleaning.",
    ),
    def(
        "log.cleaner.dedupe.buffer.size",
        "134217728",
        ValueKind::Long {
            min: 1024 * 1024,
            max: LONG_MAX,
        },
        "Memory for the cleaners' key-to-offset maps, shared equally by the shards (24 bytes a key).",
    ),
    def(
        "log.cleaner.io.buffer.load.factor",
        "0.9",
        ValueKind::Double {
            min: 0.01,
            max: 1.0,
        },
        "How full a cleaner's key map may get before a cleaning pass stops there.",
    ),
    def(
        "log.cleaner.io.max.bytes.per.second",
        "1.7976931348623157E308",
        ValueKind::Double {
            min: 1.0,
            max: f64::MAX,
        },
        "Bytes per second the cleaners read and write at most, shared equally by the shards.",
    ),
    def(
        "log.cleaner.min.cleanable.ratio",
        "0.5",
        ValueKind::Double { min: 0.0, max: 1.0 },
        "Share of a compacted log's cleanable bytes that must be dirty before it is cleaned (topic: min.cleanable.dirty.ratio).",
    ),
    def(
        "log.cleaner.delete.retention.ms",
        "86400000",
        ValueKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        "How long tombstones and transaction markers stay after the cleaning that first saw them (topic: delete.retention.ms).",
    ),
    def(
        "log.cleaner.min.compaction.lag.ms",
        "0",
        ValueKind::Long {
            min: 0,
            max: LONG_MAX,
        },
        "Segments with records younger than this are not compacted (topic: min.compaction.lag.ms).",
    ),
    def(
        "log.cleaner.max.compaction.lag.ms",
        "9223372036854775807",
        ValueKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        "A dirty record older than this forces a cleaning whatever the dirty ratio (topic: max.compaction.lag.ms).",
    ),
    def(
        "log.retention.check.interval.ms",
        "300000",
        ValueKind::Long {
            min: 1,
            max: LONG_MAX,
        },
        "How often each shard applies retention to its partitions.",
    ),
];

/// Kafka's names for settings the broker keys by its own shorthand: a `server.properties` (or
/// `--set node.id=1`) means the same setting as `node-id`. A later source overrides an earlier
/// one whichever of the two names each used.
pub const KAFKA_ALIASES: &[(&str, &str)] = &[
    ("node.id", "node-id"),
    // A KRaft node's broker id is its node id.
    ("broker.id", "node-id"),
    ("log.dirs", "data-dir"),
    ("log.dir", "data-dir"),
];

/// The key `key` is stored under. `log.dirs` may name one directory: a node keeps its metadata
/// log and every partition under one data directory (several log dirs, JBOD, are not supported).
fn canonical_key<'a>(key: &'a str, value: &str) -> Result<&'a str, ConfigError> {
    let Some(&(_, canonical)) = KAFKA_ALIASES.iter().find(|(alias, _)| *alias == key) else {
        return Ok(key);
    };
    if key == "log.dirs" && value.contains(',') {
        return Err(invalid(
            key,
            value,
            "one directory per node is supported (several log dirs, JBOD, are not)",
        ));
    }
    Ok(canonical)
}

/// The definition of `name`, if the broker has such a setting.
pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    CONFIG_DEFS.iter().find(|def| def.name == name)
}

/// A value with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The value, as text.
    pub value: String,
    /// Where it came from.
    pub source: ConfigSource,
}

/// A Kafka listener address as given to clients: a host name (not resolved) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedListener {
    /// Host name or address, as written.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for AdvertisedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The validated configuration. Its `Debug` masks every secret (see below).
#[derive(Clone)]
pub struct Config {
    /// Root of all persistent state.
    pub data_dir: PathBuf,
    /// Address every shard's listener binds.
    pub listen: SocketAddr,
    /// What Metadata tells clients; `None` means the bound listen address.
    pub advertised_listener: Option<AdvertisedListener>,
    /// Every client listener, in `listeners` order; the first is `listen` and
    /// `advertised_listener` (one PLAINTEXT listener when `listeners` is empty).
    pub listeners: Vec<ListenerConfig>,
    /// How long a TLS handshake may take (`ssl-handshake-timeout-ms`).
    pub ssl_handshake_timeout_ms: u64,
    /// Cores to run shards on; `None` means all online cores.
    pub cores: Option<Vec<usize>>,
    /// Kafka node id.
    pub node_id: i32,
    /// Log filter when `RUST_LOG` is unset.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Graceful shutdown bound.
    pub shutdown_drain_ms: u64,
    /// How long an idle shard spins (polls io_uring, timers and the cross-shard channels)
    /// before it parks its thread; 0 parks at once.
    pub shard_spin_before_park_us: u64,
    /// Where the metrics endpoint listens, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Largest accepted request frame.
    pub socket_request_max_bytes: u32,
    /// Connections the broker accepts at once (`max.connections`).
    pub max_connections: u32,
    /// Connections one address may hold (`max.connections.per.ip`).
    pub max_connections_per_ip: u32,
    /// Exceptions to `max_connections_per_ip`, by address.
    pub max_connections_per_ip_overrides: Vec<(IpAddr, u32)>,
    /// Idle and write-stall bound of a connection.
    pub connections_max_idle_ms: u64,
    /// Request bytes the broker may hold read but unanswered; `None` is unbounded.
    pub queued_max_request_bytes: Option<u64>,
    /// How long one request frame may take to arrive once it has started.
    pub request_read_timeout_ms: u64,
    /// Roles, controller quorum and its listener (`process.roles`, `controller.quorum.*`).
    pub quorum: QuorumConfig,
    /// Partitions of topics created without a count.
    pub num_partitions: i32,
    /// Whether Metadata and Produce create unknown topics.
    pub auto_create_topics_enable: bool,
    /// Replication factor of topics created without one.
    pub default_replication_factor: i16,
    /// Whether DeleteTopics is allowed.
    pub delete_topic_enable: bool,
    /// The ACL authorizer, when `authorizer.class.name` names one.
    pub authorizer: Option<crate::acl::Authorizer>,
    /// How often retention runs, per shard.
    pub log_retention_check_interval_ms: u64,
    /// Every setting's value and source, for DescribeConfigs.
    pub entries: BTreeMap<&'static str, ConfigEntry>,
}

impl Config {
    /// The replication factor of an internal topic (`offsets.topic.replication.factor`,
    /// `transaction.state.log.replication.factor`: Kafka's default 3) under a controller
    /// quorum, where its creation fails (INVALID_REPLICATION_FACTOR, and the coordinator APIs
    /// answer COORDINATOR_NOT_AVAILABLE) until that many brokers are live, as in Kafka; 1 on a
    /// lone node, which holds every partition's only replica.
    pub fn internal_replication_factor(&self, key: &str) -> i16 {
        if self.quorum.voters.is_empty() {
            1
        } else {
            self.int(key, 3) as i16
        }
    }

    /// An integer setting's value from `entries`, or `default` when it is absent or not an
    /// integer (values are checked when the configuration is built).
    pub fn int(&self, key: &str, default: i64) -> i64 {
        self.entries
            .get(key)
            .and_then(|e| e.value.parse().ok())
            .unwrap_or(default)
    }

    /// A text setting's value from `entries`, or `default` when it is absent.
    pub fn text(&self, key: &str, default: &str) -> String {
        self.entries
            .get(key)
            .map_or_else(|| default.to_string(), |e| e.value.clone())
    }

    /// A floating-point setting's value from `entries`, or `default` (as `int`).
    pub fn double(&self, key: &str, default: f64) -> f64 {
        self.entries
            .get(key)
            .and_then(|e| e.value.parse().ok())
            .unwrap_or(default)
    }

    /// The embedded defaults alone.
    pub fn defaults() -> Config {
        Self::build(&[]).expect("embedded defaults are valid")
    }

    /// Builds the configuration from an optional TOML file and then `overrides` (flags and
    /// `--set`, in command-line order; later wins).
    pub fn load(
        file: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut pairs = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::FileRead {
                path: path.to_path_buf(),
                source,
            })?;
            pairs = if path.extension().is_some_and(|ext| ext == "properties") {
                properties::parse(&text).map_err(|err| ConfigError::FileSyntax {
                    path: path.to_path_buf(),
                    reason: err.to_string(),
                })?
            } else {
                parse_toml(path, &text)?
            };
        }
        pairs.extend(overrides.iter().cloned());
        Self::build(&pairs)
    }

    /// Applies `pairs` over the defaults and validates the result.
    pub fn build(pairs: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut entries: BTreeMap<&'static str, ConfigEntry> = CONFIG_DEFS
            .iter()
            .map(|def| {
                let entry = ConfigEntry {
                    value: def.default.to_string(),
                    source: ConfigSource::Default,
                };
                (def.name, entry)
            })
            .collect();
        let mut overrides = Vec::new();
        // Listener-prefixed SASL settings (`listener.name.<l>.<mechanism>.sasl.jaas.config`):
        // secrets, kept out of `entries` and so out of DescribeConfigs.
        let mut listener_jaas: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in pairs {
            if key.starts_with("listener.name.") && key.ends_with(".sasl.jaas.config") {
                listener_jaas.insert(key.to_ascii_lowercase(), value.trim().to_string());
                continue;
            }
            if let Some(found) = listener::parse_override(key, value)? {
                let def = config_def(found.setting).expect("SSL_SETTINGS are defined");
                def.kind
                    .check(value)
                    .map_err(|reason| invalid(key, value, reason))?;
                overrides.push(found);
                continue;
            }
            let key = canonical_key(key, value)?;
            let def = config_def(key).ok_or_else(|| ConfigError::UnknownKey {
                key: key.to_string(),
            })?;
            def.kind
                .check(value)
                .map_err(|reason| invalid(def.name, value, reason))?;
            entries.insert(
                def.name,
                ConfigEntry {
                    value: value.trim().to_string(),
                    source: ConfigSource::Static,
                },
            );
        }
        let get = |key: &str| entries[key].value.as_str();

        let data_dir = PathBuf::from(nonempty("data-dir", get("data-dir"))?);
        let listen = parse_socket_addr("listen", get("listen"))?;
        let mut advertised_listener = match get("advertised-listener") {
            "" => None,
            text => Some(parse_advertised("advertised-listener", text)?),
        };
        let cores = match get("cores") {
            "" => None,
            text => Some(parse_core_list("cores", text)?),
        };
        let node_id = parse_int::<i32>("node-id", get("node-id"), 0, i32::MAX as i64)?;
        let mut listen = listen;
        let explicit = |key: &str| entries[key].source == ConfigSource::Static;
        let quorum = QuorumConfig::build(get, node_id)?;
        let mut listeners = Vec::with_capacity(quorum.client_listeners.len().max(1));
        for client in &quorum.client_listeners {
            let host = if client.listener.host.is_empty() {
                "0.0.0.0"
            } else {
                client.listener.host.as_str()
            };
            listeners.push(ListenerConfig {
                name: client.listener.name.clone(),
                addr: parse_socket_addr("listeners", &format!("{host}:{}", client.listener.port))?,
                protocol: client.protocol,
                advertised: client.advertised.clone(),
                ssl: None,
                sasl: None,
            });
        }
        if listeners.is_empty() {
            listeners.push(ListenerConfig {
                name: "PLAINTEXT".to_string(),
                addr: listen,
                protocol: SecurityProtocol::Plaintext,
                advertised: quorum.listen_advertised.clone(),
                ssl: None,
                sasl: None,
            });
        }
        // The shorthands name the first client listener, and win over `listeners`.
        if explicit("listen") {
            listeners[0].addr = listen;
        }
        if explicit("advertised-listener") {
            listeners[0].advertised = advertised_listener.clone();
        }
        for listener in &mut listeners {
            if listener.protocol.uses_tls() {
                listener.ssl = Some(SslSettings::resolve(&listener.name, get, &overrides));
            }
        }
        listener::check_overrides(&listeners, &overrides)?;
        listen = listeners[0].addr;
        advertised_listener = listeners[0].advertised.clone();
        let ssl_handshake_timeout_ms = parse_int::<u64>(
            "ssl-handshake-timeout-ms",
            get("ssl-handshake-timeout-ms"),
            1,
            INT_MAX,
        )?;
        let log_level = nonempty("log-level", get("log-level"))?.to_string();
        let log_format = match get("log-format") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log-format", other, "expected text or json")),
        };
        let metrics_listen = match get("metrics-listen") {
            "" => None,
            text => Some(parse_socket_addr("metrics-listen", text)?),
        };
        let shutdown_drain_ms =
            parse_int::<u64>("shutdown-drain-ms", get("shutdown-drain-ms"), 0, 3_600_000)?;
        let shard_spin_before_park_us = parse_int::<u64>(
            "shard-spin-before-park-us",
            get("shard-spin-before-park-us"),
            0,
            limits::SHARD_SPIN_BEFORE_PARK_US_MAX as i64,
        )?;
        let socket_request_max_bytes = parse_int::<u32>(
            "socket.request.max.bytes",
            get("socket.request.max.bytes"),
            1,
            limits::SOCKET_REQUEST_BYTES_MAX as i64,
        )?;
        let max_connections =
            parse_int::<u32>("max.connections", get("max.connections"), 1, INT_MAX)?;
        let max_connections_per_ip = parse_int::<u32>(
            "max.connections.per.ip",
            get("max.connections.per.ip"),
            0,
            INT_MAX,
        )?;
        let max_connections_per_ip_overrides = parse_ip_overrides(
            "max.connections.per.ip.overrides",
            get("max.connections.per.ip.overrides"),
        )?;
        let connections_max_idle_ms = parse_int::<u64>(
            "connections.max.idle.ms",
            get("connections.max.idle.ms"),
            1,
            LONG_MAX,
        )?;
        let queued_max_request_bytes = match parse_int::<i64>(
            "queued.max.request.bytes",
            get("queued.max.request.bytes"),
            -1,
            LONG_MAX,
        )? {
            -1 => None,
            0 => {
                return Err(invalid(
                    "queued.max.request.bytes",
                    "0",
                    "expected -1 (unbounded) or a positive number of bytes",
                ));
            }
            bytes => Some(bytes as u64),
        };
        let request_read_timeout_ms = parse_int::<u64>(
            "request-read-timeout-ms",
            get("request-read-timeout-ms"),
            1,
            LONG_MAX,
        )?;

        // SASL, per listener that authenticates with it: its mechanisms' settings and users.
        let mut sasl_listeners = 0;
        for listener in listeners.iter_mut().filter(|l| l.protocol.uses_sasl()) {
            sasl_listeners += 1;
            let max_reauth_ms = parse_int::<u64>(
                "connections.max.reauth.ms",
                get("connections.max.reauth.ms"),
                0,
                LONG_MAX,
            )?;
            let max_receive_bytes = parse_int::<u32>(
                "sasl.server.max.receive.size",
                get("sasl.server.max.receive.size"),
                1,
                INT_MAX,
            )?;
            let config = crate::security::sasl::SaslConfig::build(
                &listener.name,
                get("sasl.enabled.mechanisms"),
                max_reauth_ms,
                max_receive_bytes,
                &listener_jaas,
            )
            .map_err(|err| ConfigError::InvalidValue {
                key: err.key.clone(),
                // The value may hold passwords: it is never echoed.
                value: "(hidden)".to_string(),
                reason: err.reason,
            })?;
            listener.sasl = Some(std::sync::Arc::new(config));
        }
        if sasl_listeners == 0
            && let Some(key) = listener_jaas.keys().next()
        {
            return Err(invalid(
                key,
                "(hidden)",
                "no SASL_PLAINTEXT or SASL_SSL listener in listeners",
            ));
        }

        let num_partitions =
            parse_int::<i32>("num.partitions", get("num.partitions"), 1, i64::MAX)?;
        let auto_create_topics_enable = get("auto.create.topics.enable") == "true";
        let default_replication_factor = parse_int::<i16>(
            "default.replication.factor",
            get("default.replication.factor"),
            1,
            i64::MAX,
        )?;
        let delete_topic_enable = get("delete.topic.enable") == "true";
        let authorizer = match get("authorizer.class.name") {
            "" => None,
            _ => {
                let mut super_users = Vec::new();
                for principal in get("super.users").split(';').map(str::trim) {
                    if principal.is_empty() {
                        continue;
                    }
                    if !principal
                        .split_once(':')
                        .is_some_and(|(kind, name)| !kind.is_empty() && !name.is_empty())
                    {
                        return Err(invalid(
                            "super.users",
                            get("super.users"),
                            "expected principals like User:alice separated by ';'",
                        ));
                    }
                    super_users.push(principal.to_string());
                }
                Some(crate::acl::Authorizer {
                    super_users,
                    allow_everyone_if_no_acl_found: get("allow.everyone.if.no.acl.found") == "true",
                })
            }
        };
        let log_retention_check_interval_ms = parse_int::<u64>(
            "log.retention.check.interval.ms",
            get("log.retention.check.interval.ms"),
            1,
            i64::MAX,
        )?;

        Ok(Config {
            metrics_listen,
            num_partitions,
            auto_create_topics_enable,
            default_replication_factor,
            delete_topic_enable,
            authorizer,
            log_retention_check_interval_ms,
            data_dir,
            listen,
            advertised_listener,
            listeners,
            ssl_handshake_timeout_ms,
            cores,
            node_id,
            log_level,
            log_format,
            shutdown_drain_ms,
            shard_spin_before_park_us,
            socket_request_max_bytes,
            max_connections,
            max_connections_per_ip,
            max_connections_per_ip_overrides,
            connections_max_idle_ms,
            queued_max_request_bytes,
            request_read_timeout_ms,
            quorum,
            entries,
        })
    }
}

/// The settings as they were given, but every secret (a setting of kind password: PEM keys,
/// `ssl.key.password`) shown as `[hidden]`: a `Config` printed in a panic or a log line must
/// not carry key material. The listeners' own `Debug` hides their secrets likewise.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: BTreeMap<&str, (&str, ConfigSource)> = self
            .entries
            .iter()
            .map(|(key, entry)| {
                let secret = config_def(key).is_some_and(|d| matches!(d.kind, ValueKind::Password));
                let value = if secret && !entry.value.is_empty() {
                    "[hidden]"
                } else {
                    entry.value.as_str()
                };
                (*key, (value, entry.source))
            })
            .collect();
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listeners", &self.listeners)
            .field("quorum", &self.quorum)
            .field("entries", &entries)
            .finish_non_exhaustive()
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `host:count` pairs separated by commas (Kafka's `max.connections.per.ip.overrides`). A host
/// may be an IP address or a name, which is resolved once, at start, to every address it has.
fn parse_ip_overrides(key: &str, value: &str) -> Result<Vec<(IpAddr, u32)>, ConfigError> {
    let mut out = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (host, count) = pair
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, value, format!("'{pair}' is not host:count")))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|&c: &u32| c <= i32::MAX as u32)
            .ok_or_else(|| invalid(key, value, format!("'{count}' in '{pair}' is not a count")))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host, 0)
                .to_socket_addrs()
                .map_err(|err| invalid(key, value, format!("cannot resolve '{host}': {err}")))?
                .map(|a| a.ip())
                .collect(),
        };
        out.extend(addresses.into_iter().map(|ip| (ip, count)));
    }
    Ok(out)
}

fn nonempty<'a>(key: &str, value: &'a str) -> Result<&'a str, ConfigError> {
    if value.is_empty() {
        return Err(invalid(key, value, "must not be empty"));
    }
    Ok(value)
}

fn parse_int<T>(key: &str, value: &str, min: i64, max: i64) -> Result<T, ConfigError>
where
    T: TryFrom<i64>,
{
    let parsed: i64 = value
        .parse()
        .map_err(|_| invalid(key, value, "expected an integer"))?;
    if parsed < min || parsed > max {
        return Err(invalid(
            key,
            value,
            format!("must be between {min} and {max}"),
        ));
    }
    T::try_from(parsed).map_err(|_| invalid(key, value, "out of range"))
}

/// Resolves `HOST:PORT` to the first address it names.
fn parse_socket_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let mut addrs = value
        .to_socket_addrs()
        .map_err(|err| invalid(key, value, format!("expected HOST:PORT ({err})")))?;
    addrs
        .next()
        .ok_or_else(|| invalid(key, value, "resolves to no address"))
}

fn parse_advertised(key: &str, value: &str) -> Result<AdvertisedListener, ConfigError> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, value, "expected HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(key, value, "host is empty"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(key, value, "port must be 1 to 65535"))?;
    if port == 0 {
        return Err(invalid(key, value, "port must be 1 to 65535"));
    }
    Ok(AdvertisedListener {
        host: host.to_string(),
        port,
    })
}

/// Parses `0-3,6,8-9` into a sorted list without duplicates.
pub fn parse_core_list(key: &str, value: &str) -> Result<Vec<usize>, ConfigError> {
    let mut cores = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let first: usize = first
            .parse()
            .map_err(|_| invalid(key, value, format!("'{part}' is not a core or a range")))?;
        let last: usize = last
            .parse()
            .map_err(|_| invalid(key, value, format!("'{part}' is not a core or a range")))?;
        if first > last {
            return Err(invalid(key, value, format!("range '{part}' is reversed")));
        }
        if last >= 4096 {
            return Err(invalid(key, value, "core numbers must be below 4096"));
        }
        cores.extend(first..=last);
    }
    cores.sort_unstable();
    cores.dedup();
    Ok(cores)
}

/// Reads a TOML document into `(dotted key, value)` pairs. Scalars only: a setting is never a
/// list or a table of its own, so those are refused with the key that holds them.
fn parse_toml(path: &Path, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let table: toml::Table =
        text.parse()
            .map_err(|err: toml::de::Error| ConfigError::FileSyntax {
                path: path.to_path_buf(),
                reason: err.message().to_string(),
            })?;
    let mut pairs = Vec::new();
    flatten_toml(path, "", &table, &mut pairs)?;
    Ok(pairs)
}

fn flatten_toml(
    path: &Path,
    prefix: &str,
    table: &toml::Table,
    pairs: &mut Vec<(String, String)>,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let text = match value {
            toml::Value::Table(inner) => {
                flatten_toml(path, &full, inner, pairs)?;
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Array(_) => {
                return Err(ConfigError::FileSyntax {
                    path: path.to_path_buf(),
                    reason: format!("'{full}' must be a single value, not a list"),
                });
            }
        };
        pairs.push((full, text));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Key material given inline never shows in a printed `Config`.
    #[test]
    fn debug_hides_secrets() {
        let key = "-----BEGIN PRIVATE KEY-----secret-key-bytes-----END PRIVATE KEY-----";
        let config = Config::build(&pairs(&[
            ("ssl.keystore.key", key),
            ("ssl.key.password", "hunter2"),
        ]))
        .expect("accepted");
        let printed = format!("{config:?}");
        assert!(!printed.contains("secret-key-bytes"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("[hidden]"), "{printed}");
    }

    #[test]
    fn defaults_are_valid_and_match_the_issue() {
        let config = Config::defaults();
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.listen, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(config.node_id, 0);
        assert_eq!(config.socket_request_max_bytes, 100 * 1024 * 1024);
        assert!(config.cores.is_none());
        assert!(config.advertised_listener.is_none());
        assert!(
            config
                .entries
                .values()
                .all(|e| e.source == ConfigSource::Default)
        );
    }

    #[test]
    fn a_server_properties_file_uses_kafka_names_for_the_shorthands() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.properties");
        std::fs::write(
            &file,
            "# Kafka's\nnode.id=4\nlog.dirs=/tmp/rb-props\nnum.partitions = 3\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), &[]).unwrap();
        assert_eq!(config.node_id, 4);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/rb-props"));
        assert_eq!(config.entries["num.partitions"].value, "3");
        // A later source wins whichever name it uses.
        let config = Config::load(Some(&file), &pairs(&[("node-id", "9")])).unwrap();
        assert_eq!(config.node_id, 9);

        std::fs::write(&file, "node.id=1\nzookeeper.connect=localhost:2181\n").unwrap();
        let err = Config::load(Some(&file), &[]).unwrap_err();
        assert_eq!(err.to_string(), "unknown config key 'zookeeper.connect'");
        std::fs::write(&file, "log.dirs=/a,/b\n").unwrap();
        let err = Config::load(Some(&file), &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid value '/a,/b' for 'log.dirs'"),
            "{err}"
        );
        std::fs::write(&file, "a=\\u00zz\n").unwrap();
        let err = Config::load(Some(&file), &[]).unwrap_err().to_string();
        assert!(
            err.contains("server.properties: line 1: malformed"),
            "{err}"
        );
    }

    #[test]
    fn toml_dotted_keys_flatten_to_kafka_names_and_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(
            &file,
            "node-id = 3\nlisten = \"127.0.0.1:1234\"\nsocket.request.max.bytes = 4096\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), &pairs(&[("node-id", "7")])).unwrap();
        assert_eq!(config.node_id, 7);
        assert_eq!(config.listen.port(), 1234);
        assert_eq!(config.socket_request_max_bytes, 4096);
        assert_eq!(
            config.entries["socket.request.max.bytes"].source,
            ConfigSource::Static
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("node-id", "-1"),
            ("node-id", "abc"),
            ("listen", "nonsense"),
            ("advertised-listener", "host:0"),
            ("advertised-listener", "hostonly"),
            ("cores", "3-1"),
            ("cores", "x"),
            ("log-format", "xml"),
            ("socket.request.max.bytes", "0"),
            ("socket.request.max.bytes", "4294967295"),
        ];
        for (key, value) in cases {
            let err = Config::build(&pairs(&[(key, value)])).unwrap_err();
            let line = err.to_string();
            assert!(line.contains(key), "{line} should name {key}");
            assert!(!line.contains('\n'));
        }
        let err = Config::build(&pairs(&[("no.such.key", "1")])).unwrap_err();
        assert_eq!(err.to_string(), "unknown config key 'no.such.key'");
    }

    #[test]
    fn core_lists() {
        assert_eq!(parse_core_list("cores", "0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_core_list("cores", "2, 0,1-2").unwrap(), vec![0, 1, 2]);
        assert!(parse_core_list("cores", "").is_err());
    }

    #[test]
    fn toml_lists_are_refused_with_the_key() {
        let err = parse_toml(Path::new("f.toml"), "cores = [1, 2]").unwrap_err();
        assert!(err.to_string().contains("'cores'"));
        let err = parse_toml(Path::new("f.toml"), "listen = ").unwrap_err();
        assert!(err.to_string().starts_with("config file f.toml"));
    }
}
