//! Kafka's KRaft settings: `process.roles`, `listeners`, `advertised.listeners`,
//! `controller.listener.names`, `listener.security.protocol.map`, `inter.broker.listener.name`,
//! `controller.quorum.voters` and the quorum's timers, parsed and checked against each other.
//!
//! Owner: `Config::build` on the main thread, before any shard starts. Pure: text in, a
//! `Cluster` value or one `ConfigError` line out, naming the key.
//!
//! `listeners` names the client listeners (several, each with its protocol from
//! `listener.security.protocol.map` and its `advertised.listeners` entry) and the `CONTROLLER`
//! listener. The shorthands stay: `listen` is the first client listener's address and
//! `advertised-listener` what its clients are told (a `listen` or `advertised-listener` given
//! as well wins, as a flag wins over a file). Without quorum settings a node is broker and controller of itself
//! with its local metadata log, exactly as before. With `controller.quorum.voters`, every node
//! is broker and voter (combined mode; dedicated controllers and brokers are refused, not yet
//! served), its `node.id` must be a voter and its controller listener on its voter's port.
//!
//! PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL client listeners are served (`SecurityProtocol`
//! says which a connection speaks); a controller listener that is not PLAINTEXT is refused. A
//! quorum node serves one client listener, PLAINTEXT: brokers register one endpoint and reach
//! each other in the clear.

use std::collections::BTreeMap;

use super::{AdvertisedListener, ConfigError, invalid};

/// One `NAME://host:port` of `listeners` or `advertised.listeners`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedListener {
    /// The listener name (`PLAINTEXT`, `CONTROLLER`, ...), upper-cased as Kafka does.
    pub name: String,
    /// Host as written; empty means every interface (`PLAINTEXT://:9092`).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// A listener's protocol (`listener.security.protocol.map`): what a connection on it speaks
/// before its first Kafka request, and how its principal is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// Kafka frames in the clear; the principal is `User:ANONYMOUS`.
    Plaintext,
    /// TLS first (`net::tls`); the principal comes from the client certificate, if any.
    Ssl,
    /// SASL (`security::sasl`) over plaintext.
    SaslPlaintext,
    /// TLS first, then SASL; the principal is SASL's.
    SaslSsl,
}

impl SecurityProtocol {
    /// Parses Kafka's name (upper case).
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        Some(match name {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether the connection starts with a TLS handshake.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the connection authenticates with SASL before its other requests.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// A client listener of `listeners`: its name and address, protocol and advertised address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientListener {
    /// Name, host and port as `listeners` gives them.
    pub listener: NamedListener,
    /// Its protocol from `listener.security.protocol.map`.
    pub protocol: SecurityProtocol,
    /// Its `advertised.listeners` entry, if any.
    pub advertised: Option<AdvertisedListener>,
}

/// One voter of `controller.quorum.voters` (`id@host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// Its node id.
    pub id: i32,
    /// Host of its controller listener.
    pub host: String,
    /// Port of its controller listener.
    pub port: u16,
}

/// What roles this node plays (`process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serves clients and holds partitions.
    pub broker: bool,
    /// Votes in the controller quorum.
    pub controller: bool,
}

/// The quorum settings, checked against each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    /// What this node does.
    pub roles: Roles,
    /// The voters; empty means a lone node (its metadata log local, no controller listener).
    pub voters: Vec<Voter>,
    /// The client listeners of `listeners` in their order, each with its protocol and what
    /// `advertised.listeners` tells its clients; empty when `listeners` is.
    pub client_listeners: Vec<ClientListener>,
    /// Without `listeners`: the one `advertised.listeners` entry, for `listen`.
    pub listen_advertised: Option<AdvertisedListener>,
    /// The listener voters reach this node on (`controller.listener.names`), with voters.
    pub controller_listener: Option<NamedListener>,
    /// `controller.quorum.election.timeout.ms`.
    pub election_timeout_ms: u64,
    /// `broker.session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `broker.rack`.
    pub rack: Option<String>,
}

fn parse_ms<'a>(get: &impl Fn(&str) -> &'a str, key: &str) -> Result<u64, ConfigError> {
    get(key)
        .trim()
        .parse::<u64>()
        .map_err(|_| invalid(key, get(key), "expected a number of milliseconds"))
}

impl QuorumConfig {
    /// Reads and cross-checks the quorum settings (`get` returns each key's value).
    pub fn build<'a>(
        get: impl Fn(&str) -> &'a str,
        node_id: i32,
    ) -> Result<QuorumConfig, ConfigError> {
        let roles = parse_roles("process.roles", get("process.roles"))?;
        let voters = parse_voters("controller.quorum.voters", get("controller.quorum.voters"))?;
        let listeners = parse_listeners("listeners", get("listeners"))?;
        let advertised = parse_listeners("advertised.listeners", get("advertised.listeners"))?;
        let protocols = parse_protocol_map(
            "listener.security.protocol.map",
            get("listener.security.protocol.map"),
        )?;
        let controller_names: Vec<String> = get("controller.listener.names")
            .split(',')
            .map(|n| n.trim().to_ascii_uppercase())
            .filter(|n| !n.is_empty())
            .collect();
        let protocol_of = |listener: &NamedListener| {
            let text = protocols.get(&listener.name).ok_or_else(|| {
                invalid(
                    "listener.security.protocol.map",
                    get("listener.security.protocol.map"),
                    format!("listener {} has no security protocol", listener.name),
                )
            })?;
            Ok::<_, ConfigError>(
                SecurityProtocol::parse(text).expect("the map holds only known protocols"),
            )
        };
        let is_controller_name = |name: &str| controller_names.iter().any(|n| n == name);
        let mut client_listeners: Vec<ClientListener> = Vec::new();
        for listener in &listeners {
            let protocol = protocol_of(listener)?;
            if is_controller_name(&listener.name) {
                if protocol != SecurityProtocol::Plaintext {
                    return Err(invalid(
                        "listener.security.protocol.map",
                        get("listener.security.protocol.map"),
                        format!(
                            "the controller listener {} is {}; the quorum speaks PLAINTEXT only (TLS between voters is not done)",
                            listener.name,
                            protocol.name()
                        ),
                    ));
                }
                continue;
            }
            client_listeners.push(ClientListener {
                listener: listener.clone(),
                protocol,
                advertised: None,
            });
        }
        // Without `listeners`, the one client listener is `listen` and one advertised entry
        // (of any name) says what its clients are told.
        let mut listen_advertised = None;
        if listeners.is_empty() {
            match advertised.as_slice() {
                [] => {}
                [one] => {
                    check_advertised(&get, one)?;
                    listen_advertised = Some(AdvertisedListener {
                        host: one.host.clone(),
                        port: one.port,
                    });
                }
                _ => {
                    return Err(invalid(
                        "advertised.listeners",
                        get("advertised.listeners"),
                        "without listeners, one entry, for the listen address",
                    ));
                }
            }
        }
        for entry in advertised.iter().filter(|_| !listeners.is_empty()) {
            protocol_of(entry)?;
            let Some(client) = client_listeners
                .iter_mut()
                .find(|c| c.listener.name == entry.name)
            else {
                return Err(invalid(
                    "advertised.listeners",
                    get("advertised.listeners"),
                    format!("{} is not a client listener of listeners", entry.name),
                ));
            };
            check_advertised(&get, entry)?;
            client.advertised = Some(AdvertisedListener {
                host: entry.host.clone(),
                port: entry.port,
            });
        }
        if !roles.broker && !client_listeners.is_empty() {
            return Err(invalid(
                "listeners",
                get("listeners"),
                "a controller-only node has no client listener (process.roles=controller)",
            ));
        }
        if !voters.is_empty() && client_listeners.len() > 1 {
            return Err(invalid(
                "listeners",
                get("listeners"),
                "a quorum node serves one client listener (broker registrations carry one endpoint)",
            ));
        }
        if !voters.is_empty()
            && let Some(client) = client_listeners.first()
            && client.protocol != SecurityProtocol::Plaintext
        {
            return Err(invalid(
                "listeners",
                get("listeners"),
                format!(
                    "listener {} is {}: brokers of a quorum reach each other on the client listener, in PLAINTEXT only",
                    client.listener.name,
                    client.protocol.name()
                ),
            ));
        }
        let controller_listener = listeners
            .iter()
            .find(|l| is_controller_name(&l.name))
            .cloned();
        let inter_broker = get("inter.broker.listener.name")
            .trim()
            .to_ascii_uppercase();
        if !inter_broker.is_empty() {
            let named = client_listeners
                .iter()
                .find(|client| client.listener.name == inter_broker);
            match named {
                None => {
                    return Err(invalid(
                        "inter.broker.listener.name",
                        get("inter.broker.listener.name"),
                        "brokers reach each other on a client listener, which listeners names otherwise",
                    ));
                }
                Some(client) if client.protocol != SecurityProtocol::Plaintext => {
                    return Err(invalid(
                        "inter.broker.listener.name",
                        get("inter.broker.listener.name"),
                        format!(
                            "listener {} is {}; brokers reach each other in PLAINTEXT only",
                            client.listener.name,
                            client.protocol.name()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if voters.is_empty() {
            // A lone node: its metadata log is local and nothing listens for voters.
            if !(roles.broker && roles.controller) {
                return Err(invalid(
                    "process.roles",
                    get("process.roles"),
                    "a node without controller.quorum.voters is broker and controller",
                ));
            }
            if let Some(controller) = &controller_listener {
                return Err(invalid(
                    "listeners",
                    get("listeners"),
                    format!(
                        "the {} listener needs controller.quorum.voters (a lone node has none)",
                        controller.name
                    ),
                ));
            }
        } else {
            // Every node of a quorum is broker and voter (combined mode): brokers that only
            // observe the quorum, and voters that serve no clients, are not served yet.
            if !(roles.broker && roles.controller) {
                return Err(invalid(
                    "process.roles",
                    get("process.roles"),
                    "every node of a quorum is broker,controller (dedicated brokers and controllers are not served yet)",
                ));
            }
            let Some(me) = voters.iter().find(|v| v.id == node_id) else {
                return Err(invalid(
                    "controller.quorum.voters",
                    get("controller.quorum.voters"),
                    format!("node.id {node_id} is not among the voters"),
                ));
            };
            let Some(controller) = &controller_listener else {
                return Err(invalid(
                    "listeners",
                    get("listeners"),
                    format!(
                        "a quorum voter needs a {} listener in listeners",
                        controller_names
                            .first()
                            .map_or("CONTROLLER", String::as_str)
                    ),
                ));
            };
            if controller.port != me.port {
                return Err(invalid(
                    "listeners",
                    get("listeners"),
                    format!(
                        "the {} listener is on port {}, but controller.quorum.voters puts node {node_id} on port {}",
                        controller.name, controller.port, me.port
                    ),
                ));
            }
        }
        let election_timeout_ms = parse_ms(&get, "controller.quorum.election.timeout.ms")?;
        let session_timeout_ms = parse_ms(&get, "broker.session.timeout.ms")?;
        let heartbeat_interval_ms = parse_ms(&get, "broker.heartbeat.interval.ms")?;
        if !voters.is_empty() && heartbeat_interval_ms >= session_timeout_ms {
            return Err(invalid(
                "broker.heartbeat.interval.ms",
                get("broker.heartbeat.interval.ms"),
                "must be below broker.session.timeout.ms",
            ));
        }
        let rack = Some(get("broker.rack").trim().to_string()).filter(|r| !r.is_empty());
        Ok(QuorumConfig {
            roles,
            voters,
            client_listeners,
            listen_advertised,
            controller_listener,
            election_timeout_ms,
            session_timeout_ms,
            heartbeat_interval_ms,
            rack,
        })
    }
}

fn check_advertised<'a>(
    get: &impl Fn(&str) -> &'a str,
    entry: &NamedListener,
) -> Result<(), ConfigError> {
    if entry.host.is_empty() || entry.port == 0 {
        return Err(invalid(
            "advertised.listeners",
            get("advertised.listeners"),
            format!(
                "the advertised listener {} needs a host and a port",
                entry.name
            ),
        ));
    }
    Ok(())
}

/// Parses `process.roles`.
pub fn parse_roles(key: &str, value: &str) -> Result<Roles, ConfigError> {
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for role in value.split(',').map(str::trim) {
        match role {
            "broker" if !roles.broker => roles.broker = true,
            "controller" if !roles.controller => roles.controller = true,
            "broker" | "controller" => return Err(invalid(key, value, format!("'{role}' twice"))),
            other => {
                return Err(invalid(
                    key,
                    value,
                    format!("'{other}' is not a role (broker, controller)"),
                ));
            }
        }
    }
    Ok(roles)
}

fn parse_port(key: &str, value: &str, port: &str) -> Result<u16, ConfigError> {
    port.parse::<u16>()
        .map_err(|_| invalid(key, value, format!("'{port}' is not a port")))
}

/// Parses a `listeners`-style list: `NAME://host:port,...`; names unique.
pub fn parse_listeners(key: &str, value: &str) -> Result<Vec<NamedListener>, ConfigError> {
    let mut out: Vec<NamedListener> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once("://")
            .ok_or_else(|| invalid(key, value, format!("'{item}' is not NAME://host:port")))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, value, format!("'{item}' has no port")))?;
        let name = name.to_ascii_uppercase();
        if name.is_empty() {
            return Err(invalid(
                key,
                value,
                format!("'{item}' has no listener name"),
            ));
        }
        if out.iter().any(|l| l.name == name) {
            return Err(invalid(
                key,
                value,
                format!("listener {name} appears twice"),
            ));
        }
        out.push(NamedListener {
            name,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: parse_port(key, value, port)?,
        });
    }
    Ok(out)
}

/// Parses `controller.quorum.voters`: `id@host:port,...`; ids unique and non-negative.
pub fn parse_voters(key: &str, value: &str) -> Result<Vec<Voter>, ConfigError> {
    let mut out: Vec<Voter> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item
            .split_once('@')
            .ok_or_else(|| invalid(key, value, format!("'{item}' is not id@host:port")))?;
        let id: i32 = id
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| invalid(key, value, format!("'{id}' is not a node id")))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, value, format!("'{item}' has no port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid(key, value, format!("'{item}' has no host")));
        }
        if out.iter().any(|v| v.id == id) {
            return Err(invalid(key, value, format!("voter {id} appears twice")));
        }
        out.push(Voter {
            id,
            host: host.to_string(),
            port: parse_port(key, value, port)?,
        });
    }
    if out.len() > crate::limits::QUORUM_VOTERS_MAX {
        return Err(invalid(
            key,
            value,
            format!("at most {} voters", crate::limits::QUORUM_VOTERS_MAX),
        ));
    }
    Ok(out)
}

/// Parses `listener.security.protocol.map` (`NAME:PROTOCOL,...`).
pub fn parse_protocol_map(key: &str, value: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, protocol) = item
            .split_once(':')
            .ok_or_else(|| invalid(key, value, format!("'{item}' is not NAME:PROTOCOL")))?;
        let protocol = protocol.trim().to_ascii_uppercase();
        if !matches!(
            protocol.as_str(),
            "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL"
        ) {
            return Err(invalid(
                key,
                value,
                format!("'{protocol}' is not a security protocol"),
            ));
        }
        out.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_sample_values_parse() {
        let listeners =
            parse_listeners("listeners", "PLAINTEXT://:9092,controller://127.0.0.1:9093").unwrap();
        assert_eq!(listeners[0].name, "PLAINTEXT");
        assert_eq!(listeners[0].host, "");
        assert_eq!(listeners[1].name, "CONTROLLER");
        assert_eq!(listeners[1].port, 9093);
        let voters = parse_voters(
            "controller.quorum.voters",
            "1@127.0.0.1:9093, 2@[::1]:9193,3@host-3:9293",
        )
        .unwrap();
        assert_eq!(voters.len(), 3);
        assert_eq!(voters[1].host, "::1");
        let roles = parse_roles("process.roles", "broker,controller").unwrap();
        assert!(roles.broker && roles.controller);
        let map = parse_protocol_map(
            "listener.security.protocol.map",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL",
        )
        .unwrap();
        assert_eq!(map["CONTROLLER"], "PLAINTEXT");
    }

    fn build(pairs: &[(&str, &str)]) -> Result<crate::config::Config, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::config::Config::build(&pairs)
    }

    #[test]
    fn listeners_set_the_shorthands_unless_these_are_given() {
        let config = build(&[
            ("node.id", "1"),
            ("listeners", "PLAINTEXT://127.0.0.1:19092"),
            ("advertised.listeners", "PLAINTEXT://kafka-1.example:9092"),
        ])
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:19092".parse().unwrap());
        assert_eq!(
            config.advertised_listener.as_ref().unwrap().to_string(),
            "kafka-1.example:9092"
        );
        let config = build(&[
            ("listeners", "PLAINTEXT://:19092"),
            ("listen", "127.0.0.1:2000"),
        ])
        .unwrap();
        assert_eq!(config.listen.port(), 2000, "the shorthand wins");
        let config = build(&[("listeners", "PLAINTEXT://:19092")]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:19092".parse().unwrap());
    }

    #[test]
    fn what_is_not_served_is_refused_with_its_key() {
        type Case = (
            Vec<(&'static str, &'static str)>,
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                vec![("controller.quorum.voters", "1@h:1,2@h:2,3@h:3")],
                "controller.quorum.voters",
                "node.id 0 is not among the voters",
            ),
            (
                vec![("controller.quorum.voters", "0@127.0.0.1:9093")],
                "listeners",
                "needs a CONTROLLER listener",
            ),
            (
                vec![
                    ("controller.quorum.voters", "0@127.0.0.1:9093"),
                    ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9094"),
                    (
                        "listener.security.protocol.map",
                        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    ),
                ],
                "listeners",
                "on port 9093",
            ),
            (
                vec![
                    ("controller.quorum.voters", "0@127.0.0.1:9093"),
                    ("process.roles", "broker"),
                ],
                "process.roles",
                "every node of a quorum is broker,controller",
            ),
            (
                vec![("process.roles", "controller")],
                "process.roles",
                "broker and controller",
            ),
            (
                vec![
                    ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                    (
                        "listener.security.protocol.map",
                        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    ),
                ],
                "listeners",
                "needs controller.quorum.voters",
            ),
            (
                vec![("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093")],
                "listener.security.protocol.map",
                "CONTROLLER has no security protocol",
            ),
            (
                vec![
                    ("listeners", "PLAINTEXT://:9092,CONTROLLER://127.0.0.1:9093"),
                    ("controller.quorum.voters", "0@127.0.0.1:9093"),
                    (
                        "listener.security.protocol.map",
                        "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL",
                    ),
                ],
                "listener.security.protocol.map",
                "the quorum speaks PLAINTEXT only",
            ),
            (
                vec![
                    (
                        "listeners",
                        "PLAINTEXT://:9092,OTHER://:9094,CONTROLLER://127.0.0.1:9093",
                    ),
                    ("controller.quorum.voters", "0@127.0.0.1:9093"),
                    (
                        "listener.security.protocol.map",
                        "PLAINTEXT:PLAINTEXT,OTHER:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    ),
                ],
                "listeners",
                "a quorum node serves one client listener",
            ),
            (
                vec![
                    ("listeners", "SSL://:9092,CONTROLLER://127.0.0.1:9093"),
                    ("controller.quorum.voters", "0@127.0.0.1:9093"),
                    (
                        "listener.security.protocol.map",
                        "SSL:SSL,CONTROLLER:PLAINTEXT",
                    ),
                ],
                "listeners",
                "in PLAINTEXT only",
            ),
            (
                vec![
                    ("listeners", "PLAINTEXT://:9092,SSL://:9093"),
                    ("inter.broker.listener.name", "SSL"),
                ],
                "inter.broker.listener.name",
                "PLAINTEXT only",
            ),
            (
                vec![
                    ("listeners", "PLAINTEXT://:9092"),
                    ("advertised.listeners", "SSL://h:9093"),
                ],
                "advertised.listeners",
                "SSL is not a client listener",
            ),
            (
                vec![
                    ("listeners", "PLAINTEXT://:9092"),
                    ("listener.name.plaintext.ssl.client.auth", "required"),
                ],
                "listener.name.plaintext.ssl.client.auth",
                "not an SSL listener",
            ),
            (
                vec![
                    ("listeners", "SSL://:9093"),
                    ("listener.name.ssl.ssl.client.auth", "maybe"),
                ],
                "listener.name.ssl.ssl.client.auth",
                "expected one of none, requested, required",
            ),
            (
                vec![("inter.broker.listener.name", "INTERNAL")],
                "inter.broker.listener.name",
                "client listener",
            ),
        ];
        for (pairs, key, part) in cases {
            let err = build(&pairs).unwrap_err().to_string();
            assert!(
                err.contains(&format!("for '{key}'")) && err.contains(part),
                "{pairs:?}: {err}"
            );
        }
    }

    #[test]
    fn several_client_listeners_each_with_protocol_and_advertised_address() {
        let config = build(&[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:19092,SSL://127.0.0.1:19093,INTERNAL://127.0.0.1:19094",
            ),
            (
                "advertised.listeners",
                "SSL://kafka.example:9093,PLAINTEXT://kafka.example:9092",
            ),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,SSL:SSL,INTERNAL:PLAINTEXT",
            ),
            ("ssl.client.auth", "requested"),
            ("listener.name.ssl.ssl.keystore.location", "/etc/ks.pem"),
        ])
        .unwrap();
        let names: Vec<(&str, SecurityProtocol, u16)> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.protocol, l.addr.port()))
            .collect();
        assert_eq!(
            names,
            [
                ("PLAINTEXT", SecurityProtocol::Plaintext, 19092),
                ("SSL", SecurityProtocol::Ssl, 19093),
                ("INTERNAL", SecurityProtocol::Plaintext, 19094),
            ]
        );
        assert_eq!(
            config.listeners[1].advertised.as_ref().unwrap().to_string(),
            "kafka.example:9093"
        );
        assert!(config.listeners[2].advertised.is_none());
        assert_eq!(config.listen.port(), 19092);
        let ssl = config.listeners[1].ssl.as_ref().unwrap();
        assert_eq!(ssl.get("ssl.client.auth"), ("ssl.client.auth", "requested"));
        assert_eq!(
            ssl.get("ssl.keystore.location"),
            ("listener.name.ssl.ssl.keystore.location", "/etc/ks.pem")
        );
        assert!(config.listeners[0].ssl.is_none());
        // The shorthand names the first listener, and wins.
        let config = build(&[
            (
                "listeners",
                "SSL://127.0.0.1:19093,PLAINTEXT://127.0.0.1:19092",
            ),
            ("listen", "127.0.0.1:2000"),
        ])
        .unwrap();
        assert_eq!(config.listeners[0].name, "SSL");
        assert_eq!(config.listeners[0].addr.port(), 2000);
    }

    #[test]
    fn a_combined_voter_is_accepted() {
        let config = build(&[
            ("node.id", "2"),
            ("process.roles", "broker,controller"),
            (
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293",
            ),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9192,CONTROLLER://127.0.0.1:9193",
            ),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
            ("controller.quorum.election.timeout.ms", "500"),
            ("broker.rack", "r1"),
        ])
        .unwrap();
        assert_eq!(config.quorum.voters.len(), 3);
        assert_eq!(
            config.quorum.controller_listener.as_ref().unwrap().port,
            9193
        );
        assert_eq!(config.quorum.election_timeout_ms, 500);
        assert_eq!(config.quorum.session_timeout_ms, 9000);
        assert_eq!(config.quorum.rack.as_deref(), Some("r1"));
        assert_eq!(config.listen.port(), 9192);
    }

    #[test]
    fn bad_values_name_the_part() {
        for (value, part) in [
            ("1@h", "no port"),
            ("x@h:1", "not a node id"),
            ("1@h:1,1@h:2", "appears twice"),
            ("1h:1", "not id@host:port"),
            ("1@:9093", "no host"),
        ] {
            let err = parse_voters("controller.quorum.voters", value)
                .unwrap_err()
                .to_string();
            assert!(err.contains(part), "{value}: {err}");
        }
        assert!(parse_roles("process.roles", "broker,broker").is_err());
        assert!(parse_roles("process.roles", "zookeeper").is_err());
        assert!(parse_listeners("listeners", "127.0.0.1:9092").is_err());
        assert!(parse_listeners("listeners", "A://h:1,a://h:2").is_err());
        assert!(parse_protocol_map("m", "A:TLS").is_err());
    }
}
