//! SASL authentication of a SASL_PLAINTEXT listener's connections (KIP-43, KIP-152, KIP-368).
//!
//! Owner: `SaslConfig` is built once by `Config::build` and shared read-only by every shard;
//! each connection on a SASL listener owns one `SaslConnection`, driven by its reader task in
//! request order by the protocol front (`kafka::sasl_authenticate`). Nothing here awaits; the
//! clock is passed in.
//!
//! The state machine, as Kafka's `SaslServerAuthenticator`:
//! - before authentication only ApiVersions, SaslHandshake and SaslAuthenticate are served;
//!   anything else closes the connection;
//! - SaslHandshake picks a mechanism of `sasl.enabled.mechanisms` (else
//!   UNSUPPORTED_SASL_MECHANISM with the enabled list, and the connection is closed);
//! - SaslAuthenticate carries the mechanism's tokens; a failure is SASL_AUTHENTICATION_FAILED
//!   with a message, and the connection is closed;
//! - once authenticated the connection's principal is `User:<name>`; with
//!   `connections.max.reauth.ms` > 0 the session lasts that long (or until an OAUTHBEARER
//!   token's expiry, if sooner), a request after that closes the connection, and a
//!   SaslHandshake + SaslAuthenticate re-authenticates it (KIP-368), as the same principal only.
//!
//! Mechanisms: PLAIN (`plain`), SCRAM-SHA-256 and SCRAM-SHA-512 (`scram`, credentials from
//! the metadata log through a lookup the caller passes) and OAUTHBEARER with unsecured JWS
//! (`oauthbearer`). GSSAPI (Kerberos) is not served; naming it in `sasl.enabled.mechanisms` is
//! refused at start. Messages to clients never carry a password, a token or a proof; nor does any log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

pub mod jaas;
pub mod oauthbearer;
pub mod plain;
pub mod scram;

use scram::{ScramCredential, ScramExchange, ScramMechanism};

/// A served SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616, users from the JAAS configuration.
    Plain,
    /// RFC 7628 with unsecured JWS tokens (KIP-255).
    OAuthBearer,
    /// RFC 5802 / RFC 7677 with credentials from the metadata log.
    Scram(ScramMechanism),
}

impl Mechanism {
    /// The mechanism's SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::Scram(scram) => scram.name(),
        }
    }

    fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            "OAUTHBEARER" => Some(Mechanism::OAuthBearer),
            "SCRAM-SHA-256" => Some(Mechanism::Scram(ScramMechanism::Sha256)),
            "SCRAM-SHA-512" => Some(Mechanism::Scram(ScramMechanism::Sha512)),
            _ => None,
        }
    }
}

/// Why the SASL settings were refused (one line, naming the setting; never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SaslConfigError {
    /// The setting.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// The SASL settings of the SASL listener.
#[derive(Debug, Clone)]
pub struct SaslConfig {
    /// `sasl.enabled.mechanisms`, in the configured order.
    pub mechanisms: Vec<Mechanism>,
    /// PLAIN's users (from `listener.name.<l>.plain.sasl.jaas.config`).
    pub plain_users: plain::Users,
    /// OAUTHBEARER's validator settings.
    pub oauthbearer: oauthbearer::Validator,
    /// `connections.max.reauth.ms`; 0: sessions do not expire.
    pub max_reauth_ms: u64,
    /// `sasl.server.max.receive.size`: the largest frame read before authentication.
    pub max_receive_bytes: u32,
}

impl SaslConfig {
    /// Builds the settings of the listener `listener` (its name lower-cased in the keys) from
    /// `sasl.enabled.mechanisms`, `connections.max.reauth.ms`, `sasl.server.max.receive.size`
    /// and `jaas`, the
    /// `listener.name.<listener>.<mechanism>.sasl.jaas.config` values keyed by their full key.
    pub fn build(
        listener: &str,
        enabled_mechanisms: &str,
        max_reauth_ms: u64,
        max_receive_bytes: u32,
        jaas: &BTreeMap<String, String>,
    ) -> Result<SaslConfig, SaslConfigError> {
        let fail = |key: &str, reason: String| SaslConfigError {
            key: key.to_string(),
            reason,
        };
        let mut mechanisms = Vec::new();
        for name in enabled_mechanisms
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let mechanism = Mechanism::from_name(name).ok_or_else(|| {
                fail(
                    "sasl.enabled.mechanisms",
                    format!(
                        "{name} is not served (served: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER; GSSAPI is not)"
                    ),
                )
            })?;
            if !mechanisms.contains(&mechanism) {
                mechanisms.push(mechanism);
            }
        }
        if mechanisms.is_empty() {
            return Err(fail(
                "sasl.enabled.mechanisms",
                "a SASL_PLAINTEXT listener needs at least one mechanism".to_string(),
            ));
        }
        let prefix = format!("listener.name.{}.", listener.to_ascii_lowercase());
        let entry = |mechanism: Mechanism| -> Result<Option<jaas::JaasEntry>, SaslConfigError> {
            let key = format!(
                "{prefix}{}.sasl.jaas.config",
                mechanism.name().to_ascii_lowercase()
            );
            match jaas.get(&key) {
                None => Ok(None),
                Some(text) => jaas::parse(text)
                    .map(Some)
                    .map_err(|err| fail(&key, err.to_string())),
            }
        };
        for key in jaas.keys() {
            let known = [Mechanism::Plain, Mechanism::OAuthBearer].iter().any(|m| {
                *key == format!("{prefix}{}.sasl.jaas.config", m.name().to_ascii_lowercase())
                    && mechanisms.contains(m)
            });
            if !known {
                return Err(fail(
                    key,
                    format!(
                        "not a JAAS setting of an enabled mechanism of the SASL listener (expected {prefix}<mechanism>.sasl.jaas.config)"
                    ),
                ));
            }
        }
        let plain_key = format!("{prefix}plain.sasl.jaas.config");
        let plain_users = match entry(Mechanism::Plain)? {
            Some(entry) => plain::Users::from_jaas(&entry).map_err(|r| fail(&plain_key, r))?,
            None if mechanisms.contains(&Mechanism::Plain) => {
                return Err(fail(
                    &plain_key,
                    "PLAIN is enabled but has no users (PlainLoginModule required user_<name>=\"<password>\";)".to_string(),
                ));
            }
            None => plain::Users::default(),
        };
        let oauth_key = format!("{prefix}oauthbearer.sasl.jaas.config");
        let oauthbearer = match entry(Mechanism::OAuthBearer)? {
            Some(entry) => {
                oauthbearer::Validator::from_jaas(&entry).map_err(|r| fail(&oauth_key, r))?
            }
            None => oauthbearer::Validator::default(),
        };
        Ok(SaslConfig {
            mechanisms,
            plain_users,
            oauthbearer,
            max_reauth_ms,
            max_receive_bytes,
        })
    }

    /// The enabled mechanisms' names, as SaslHandshake lists them.
    pub fn mechanism_names(&self) -> Vec<&'static str> {
        self.mechanisms.iter().map(|m| m.name()).collect()
    }
}

/// What SaslHandshake may answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The mechanism is not enabled: UNSUPPORTED_SASL_MECHANISM, then close.
    Unsupported,
    /// A handshake in the middle of an exchange: ILLEGAL_SASL_STATE, then close.
    IllegalState(String),
}

/// What one SaslAuthenticate produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// The exchange goes on: send this token and wait for the client's next.
    Continue(Vec<u8>),
    /// Authenticated (or re-authenticated): the server's final token, the principal
    /// (`User:<name>`) and the session's lifetime in ms (0: no expiry).
    Done {
        /// The server's last token (empty for PLAIN and OAUTHBEARER).
        token: Vec<u8>,
        /// `User:<name>`.
        principal: String,
        /// `session_lifetime_ms` of SaslAuthenticate v1+.
        session_lifetime_ms: i64,
    },
    /// SASL_AUTHENTICATION_FAILED with this message, then close.
    Failed(String),
    /// ILLEGAL_SASL_STATE (SaslAuthenticate without a handshake), then close.
    IllegalState(String),
}

/// Whether a request other than the SASL ones may be served now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Serve it.
    Serve,
    /// Close the connection, for this reason (for the log; no secret in it).
    Close(String),
}

#[derive(Debug)]
enum Phase {
    /// Waiting for SaslHandshake.
    Handshake,
    /// The handshake chose this mechanism; waiting for SaslAuthenticate, or with `raw` (after
    /// SaslHandshake v0) for the token as a bare frame.
    Authenticate {
        /// The mechanism chosen.
        mechanism: Mechanism,
        /// Whether the token comes as a bare frame.
        raw: bool,
    },
    /// A SCRAM exchange waits for the client-final message.
    ScramFinal {
        /// The exchange so far.
        exchange: Box<ScramExchange>,
        /// Whether the token comes as a bare frame.
        raw: bool,
    },
}

/// One connection's authentication state. See the module documentation.
#[derive(Debug)]
pub struct SaslConnection {
    config: Arc<SaslConfig>,
    phase: Phase,
    /// `User:<name>` once authenticated.
    principal: Option<String>,
    /// When the session ends (re-authentication needed), if it does.
    expires: Option<Instant>,
}

impl SaslConnection {
    /// A new, unauthenticated connection.
    pub fn new(config: Arc<SaslConfig>) -> SaslConnection {
        SaslConnection {
            config,
            phase: Phase::Handshake,
            principal: None,
            expires: None,
        }
    }

    /// The enabled mechanisms, for SaslHandshake's answer.
    pub fn mechanism_names(&self) -> Vec<&'static str> {
        self.config.mechanism_names()
    }

    /// The largest frame read before authentication (`sasl.server.max.receive.size`).
    pub fn max_receive_bytes(&self) -> u32 {
        self.config.max_receive_bytes
    }

    /// The authenticated principal, if any.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// SaslHandshake with `mechanism`; `raw` (SaslHandshake v0) means the token will come as a
    /// bare frame rather than in SaslAuthenticate. Allowed first, and again once authenticated
    /// (KIP-368 re-authentication starts with it; v0 cannot re-authenticate).
    pub fn handshake(&mut self, mechanism: &str, raw: bool) -> Result<(), HandshakeError> {
        if !matches!(self.phase, Phase::Handshake) {
            return Err(HandshakeError::IllegalState(
                "SaslHandshake while an exchange is waiting for SaslAuthenticate".to_string(),
            ));
        }
        if raw && self.principal.is_some() {
            return Err(HandshakeError::IllegalState(
                "re-authentication needs SaslHandshake v1 and SaslAuthenticate".to_string(),
            ));
        }
        match Mechanism::from_name(mechanism).filter(|m| self.config.mechanisms.contains(m)) {
            Some(chosen) => {
                self.phase = Phase::Authenticate {
                    mechanism: chosen,
                    raw,
                };
                Ok(())
            }
            None => Err(HandshakeError::Unsupported),
        }
    }

    /// SaslAuthenticate with the client's `token`, at `now` (`now_ms` since the epoch, for
    /// token expiry); `scram` looks a user's SCRAM credential up.
    pub fn authenticate(
        &mut self,
        token: &[u8],
        now: Instant,
        now_ms: i64,
        scram: &dyn Fn(&str, ScramMechanism) -> Option<ScramCredential>,
    ) -> AuthStep {
        let (mechanism, raw) = match std::mem::replace(&mut self.phase, Phase::Handshake) {
            Phase::Handshake => {
                return AuthStep::IllegalState(
                    "SaslAuthenticate before a SaslHandshake chose a mechanism".to_string(),
                );
            }
            Phase::Authenticate { mechanism, raw } => (mechanism, raw),
            Phase::ScramFinal { exchange, .. } => {
                return match exchange.finish(token) {
                    Ok((name, server_final)) => self.authenticated(name, None, server_final, now),
                    Err(message) => AuthStep::Failed(message),
                };
            }
        };
        let (name, credential_lifetime_ms) = match mechanism {
            Mechanism::Scram(hash) => {
                return match ScramExchange::start(hash, token, |user| scram(user, hash)) {
                    Ok((exchange, server_first)) => {
                        self.phase = Phase::ScramFinal {
                            exchange: Box::new(exchange),
                            raw,
                        };
                        AuthStep::Continue(server_first)
                    }
                    Err(message) => AuthStep::Failed(message),
                };
            }
            Mechanism::Plain => match self.config.plain_users.authenticate(token) {
                Ok(name) => (name, None),
                Err(message) => return AuthStep::Failed(message),
            },
            Mechanism::OAuthBearer => match self.config.oauthbearer.authenticate(token, now_ms) {
                Ok(ok) => (ok.principal, Some((ok.expires_at_ms - now_ms).max(1))),
                Err(message) => {
                    return AuthStep::Failed(format!("Authentication failed: {message}"));
                }
            },
        };
        self.authenticated(name, credential_lifetime_ms, Vec::new(), now)
    }

    fn authenticated(
        &mut self,
        name: String,
        credential_lifetime_ms: Option<i64>,
        token: Vec<u8>,
        now: Instant,
    ) -> AuthStep {
        let principal = format!("User:{name}");
        if let Some(previous) = &self.principal
            && *previous != principal
        {
            return AuthStep::Failed(format!(
                "Cannot change principals during re-authentication from {previous} to {principal}"
            ));
        }
        // As Kafka: with re-authentication on, the session lasts connections.max.reauth.ms or
        // until the credential expires, whichever is first; with it off, it does not expire.
        let session_lifetime_ms = match self.config.max_reauth_ms {
            0 => 0,
            max => credential_lifetime_ms.map_or(max as i64, |c| c.min(max as i64)),
        };
        self.expires = (session_lifetime_ms > 0)
            .then(|| now + std::time::Duration::from_millis(session_lifetime_ms as u64));
        self.principal = Some(principal.clone());
        AuthStep::Done {
            token,
            principal,
            session_lifetime_ms,
        }
    }

    /// Whether the next frame is a bare SASL token (after SaslHandshake v0).
    pub fn expects_raw_token(&self) -> bool {
        matches!(
            self.phase,
            Phase::Authenticate { raw: true, .. } | Phase::ScramFinal { raw: true, .. }
        )
    }

    /// Whether another request may be served at `now`.
    pub fn gate(&self, now: Instant) -> Gate {
        match (&self.principal, self.expires) {
            (None, _) => Gate::Close(
                "a request other than ApiVersions, SaslHandshake and SaslAuthenticate before SASL authentication".to_string(),
            ),
            (Some(principal), Some(expires)) if now >= expires => Gate::Close(format!(
                "the SASL session of {principal} expired (connections.max.reauth.ms) and was not re-authenticated"
            )),
            _ => Gate::Serve,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn no_scram(_: &str, _: ScramMechanism) -> Option<ScramCredential> {
        None
    }

    fn config(mechanisms: &str, reauth: u64) -> Result<SaslConfig, SaslConfigError> {
        let mut jaas = BTreeMap::new();
        jaas.insert(
            "listener.name.sasl_plaintext.plain.sasl.jaas.config".to_string(),
            format!(
                r#"{} required user_alice="alice-secret" user_bob="bob-secret";"#,
                plain::LOGIN_MODULE
            ),
        );
        SaslConfig::build("SASL_PLAINTEXT", mechanisms, reauth, 524288, &jaas)
    }

    #[test]
    fn settings() {
        let c = config("PLAIN,OAUTHBEARER", 0).unwrap();
        assert_eq!(c.mechanism_names(), ["PLAIN", "OAUTHBEARER"]);
        assert_eq!(c.plain_users.len(), 2);
        for refused in ["GSSAPI", "SCRAM-SHA-1", "", "OAUTHBEARER"] {
            assert!(config(refused, 0).is_err(), "{refused}");
        }
        let error = config("GSSAPI", 0).unwrap_err().to_string();
        assert!(error.contains("GSSAPI is not served"), "{error}");
        // PLAIN enabled without users.
        assert!(SaslConfig::build("SASL_PLAINTEXT", "PLAIN", 0, 524288, &BTreeMap::new()).is_err());
        // OAUTHBEARER needs no JAAS setting.
        assert!(
            SaslConfig::build("SASL_PLAINTEXT", "OAUTHBEARER", 0, 524288, &BTreeMap::new()).is_ok()
        );
        // A JAAS setting for another listener is refused.
        let mut other = BTreeMap::new();
        other.insert(
            "listener.name.other.plain.sasl.jaas.config".to_string(),
            format!(r#"{} required user_a="b";"#, plain::LOGIN_MODULE),
        );
        assert!(SaslConfig::build("SASL_PLAINTEXT", "OAUTHBEARER", 0, 524288, &other).is_err());
    }

    #[test]
    fn state_machine() {
        let c = Arc::new(config("PLAIN", 0).unwrap());
        let now = Instant::now();
        let mut conn = SaslConnection::new(c.clone());
        assert!(matches!(conn.gate(now), Gate::Close(_)));
        assert!(matches!(
            conn.authenticate(b"\0alice\0alice-secret", now, 0, &no_scram),
            AuthStep::IllegalState(_)
        ));
        assert_eq!(
            conn.handshake("SCRAM-SHA-256", false),
            Err(HandshakeError::Unsupported)
        );
        conn.handshake("PLAIN", false).unwrap();
        assert!(matches!(
            conn.handshake("PLAIN", false),
            Err(HandshakeError::IllegalState(_))
        ));
        let done = conn.authenticate(b"\0alice\0alice-secret", now, 0, &no_scram);
        assert_eq!(
            done,
            AuthStep::Done {
                token: vec![],
                principal: "User:alice".to_string(),
                session_lifetime_ms: 0
            }
        );
        assert_eq!(conn.gate(now + Duration::from_secs(3600)), Gate::Serve);
        assert!(matches!(
            conn.handshake("PLAIN", true),
            Err(HandshakeError::IllegalState(_))
        ));

        let mut raw = SaslConnection::new(c.clone());
        raw.handshake("PLAIN", true).unwrap();
        assert!(raw.expects_raw_token());
        assert!(matches!(
            raw.authenticate(b"\0bob\0bob-secret", now, 0, &no_scram),
            AuthStep::Done { .. }
        ));
        assert!(!raw.expects_raw_token());

        let mut bad = SaslConnection::new(c);
        bad.handshake("PLAIN", false).unwrap();
        let AuthStep::Failed(message) = bad.authenticate(b"\0alice\0wrong", now, 0, &no_scram)
        else {
            panic!()
        };
        assert!(!message.contains("wrong"));
    }

    #[test]
    fn reauthentication() {
        let c = Arc::new(config("PLAIN", 1000).unwrap());
        let now = Instant::now();
        let mut conn = SaslConnection::new(c);
        conn.handshake("PLAIN", false).unwrap();
        let AuthStep::Done {
            session_lifetime_ms,
            ..
        } = conn.authenticate(b"\0alice\0alice-secret", now, 0, &no_scram)
        else {
            panic!()
        };
        assert_eq!(session_lifetime_ms, 1000);
        assert_eq!(conn.gate(now + Duration::from_millis(999)), Gate::Serve);
        assert!(matches!(
            conn.gate(now + Duration::from_millis(1000)),
            Gate::Close(_)
        ));
        let later = now + Duration::from_millis(1500);
        conn.handshake("PLAIN", false).unwrap();
        assert!(matches!(
            conn.authenticate(b"\0alice\0alice-secret", later, 0, &no_scram),
            AuthStep::Done { .. }
        ));
        assert_eq!(conn.gate(later + Duration::from_millis(999)), Gate::Serve);
        conn.handshake("PLAIN", false).unwrap();
        let AuthStep::Failed(message) =
            conn.authenticate(b"\0bob\0bob-secret", later, 0, &no_scram)
        else {
            panic!()
        };
        assert!(message.contains("Cannot change principals"), "{message}");
    }
}
