//! TLS for SSL client listeners: the rustls server configuration built from Kafka's `ssl.*`
//! settings, the bounded handshake of each connection, and its principal (`principal`).
//!
//! Owner: `TlsListener::build` runs once per SSL listener in `pool::start`, on the main
//! thread, before any shard binds; a bad setting is one `TlsError` line naming the key (the
//! per-listener override's key when one was given). The built `TlsListener` is shared
//! read-only (`Arc`) by every shard's accept loop; `TlsListener::accept` runs in the task of
//! the connection it serves, on the shard that accepted it, and awaits only the handshake's
//! socket reads and writes, bounded by `ssl-handshake-timeout-ms` (Kafka has no such bound:
//! its idle timeout, ten minutes, is all that closes a stalled handshake there).
//!
//! Crates: `futures-rustls` (rustls over `futures-io` streams, which glommio's `TcpStream`
//! is) with rustls's `ring` provider. ring builds with the system C compiler alone; rustls's
//! default provider, aws-lc-rs, needs cmake (and nasm or a prebuilt blob), which this
//! machine's offline build does not have. The principal mapping uses `regex`, already in the
//! dependency tree.
//!
//! What is read: PEM key stores and trust stores, from files or inline, the private key
//! unencrypted or encrypted PKCS#8 with `ssl.key.password` (`pkcs8`, RustCrypto's pure-Rust
//! PBES2 reader: PBKDF2 or scrypt with AES-CBC, what `openssl pkcs8 -topk8` writes). Refused
//! with a line saying so: JKS and PKCS12 stores (no maintained pure-Rust reader of both;
//! convert to PEM), OpenSSL's legacy encrypted keys (`Proc-Type: 4,ENCRYPTED`), TLS versions
//! before 1.2, and cipher suites rustls does not implement. Nothing reloads a key store while
//! the broker runs.

pub mod principal;

use std::sync::Arc;
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use futures_rustls::rustls;
use futures_rustls::server::TlsStream;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use crate::config::SslSettings;
use principal::{PrincipalError, PrincipalMapper};

/// Kafka's principal of a connection without a client certificate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// A bad `ssl.*` setting; the line names the key as the operator wrote it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The setting's value is refused.
    #[error("invalid value for '{key}': {reason}")]
    Setting {
        /// The key (`ssl.keystore.location`, `listener.name.ssl.ssl.client.auth`, ...).
        key: String,
        /// Why, never quoting key material.
        reason: String,
    },
}

fn setting(key: &str, reason: impl Into<String>) -> TlsError {
    TlsError::Setting {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Why one connection's handshake ended it.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not done within `ssl-handshake-timeout-ms`.
    #[error("TLS handshake not done within {0} ms (ssl-handshake-timeout-ms)")]
    TimedOut(u64),
    /// The peer is not a TLS client, or failed verification, or went away.
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    /// The certificate has no principal (malformed subject, no rule maps it).
    #[error("{0}")]
    Principal(#[from] PrincipalError),
}

/// One SSL listener's TLS side, shared by every shard.
pub struct TlsListener {
    acceptor: futures_rustls::TlsAcceptor,
    mapper: PrincipalMapper,
    handshake_timeout: Duration,
}

/// What a finished handshake gives the connection.
pub struct Accepted<S> {
    /// The encrypted stream.
    pub stream: TlsStream<S>,
    /// `User:<mapped DN>`, or `User:ANONYMOUS` without a client certificate.
    pub principal: String,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("mapper", &self.mapper)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for Accepted<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Builds the listener's TLS configuration from its settings, reading its key store and
    /// trust store.
    pub fn build(ssl: &SslSettings, handshake_timeout_ms: u64) -> Result<TlsListener, TlsError> {
        let provider = Arc::new(provider(ssl)?);
        let versions = versions(ssl)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|err| {
                let (key, _) = ssl.get("ssl.cipher.suites");
                setting(
                    key,
                    format!("no suite left for the enabled protocols ({err})"),
                )
            })?;
        let (auth_key, auth) = ssl.get("ssl.client.auth");
        let builder = match auth {
            "" | "none" => builder.with_no_client_auth(),
            "requested" | "required" => {
                let roots = Arc::new(truststore(ssl)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = if auth == "requested" {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|err| setting(auth_key, format!("cannot verify clients: {err}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            other => {
                return Err(setting(
                    auth_key,
                    format!("'{other}' is not none, requested or required"),
                ));
            }
        };
        let (chain, key, key_setting) = keystore(ssl)?;
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|err| setting(&key_setting, format!("key and certificate refused: {err}")))?;
        // Kafka speaks no ALPN; accept clients that offer none.
        config.alpn_protocols.clear();
        let (rules_key, rules) = ssl.get("ssl.principal.mapping.rules");
        let mapper = PrincipalMapper::parse(if rules.is_empty() { "DEFAULT" } else { rules })
            .map_err(|err| setting(rules_key, err.0))?;
        Ok(TlsListener {
            acceptor: futures_rustls::TlsAcceptor::from(Arc::new(config)),
            mapper,
            handshake_timeout: Duration::from_millis(handshake_timeout_ms),
        })
    }

    /// Runs the server side of the handshake on `stream`, within the handshake bound, and
    /// finds the client's principal.
    pub async fn accept<S>(&self, stream: S) -> Result<Accepted<S>, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let bound = self.handshake_timeout;
        let handshake =
            futures_lite::future::or(async { Some(self.acceptor.accept(stream).await) }, async {
                glommio::timer::sleep(bound).await;
                None
            })
            .await;
        let stream = match handshake {
            None => return Err(HandshakeError::TimedOut(bound.as_millis() as u64)),
            Some(Err(err)) => return Err(HandshakeError::Failed(err)),
            Some(Ok(stream)) => stream,
        };
        let principal = match stream.get_ref().1.peer_certificates() {
            Some([leaf, ..]) => self.principal_of(leaf.as_ref())?,
            _ => ANONYMOUS.to_string(),
        };
        Ok(Accepted { stream, principal })
    }

    /// `User:<name>` of a DER client certificate.
    pub fn principal_of(&self, certificate: &[u8]) -> Result<String, PrincipalError> {
        let dn = principal::subject_dn(certificate)?;
        Ok(format!("User:{}", self.mapper.map(&dn)?))
    }
}

/// Reads a setting's file, naming the setting on failure.
fn read_file(key: &str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| setting(key, format!("cannot read {path}: {err}")))
}

fn check_pem_type(ssl: &SslSettings, type_setting: &str) -> Result<(), TlsError> {
    let (key, value) = ssl.get(type_setting);
    match value.to_ascii_uppercase().as_str() {
        "" | "PEM" => Ok(()),
        "PKCS12" | "JKS" => Err(setting(
            key,
            format!(
                "{value} stores are not read; convert to PEM (openssl pkcs12 -in store.p12 -nodes, or keytool -importkeystore then openssl) and set PEM"
            ),
        )),
        _ => Err(setting(key, format!("'{value}' is not a store type (PEM)"))),
    }
}

/// The certificate chain and private key, from `ssl.keystore.location` or the inline
/// `ssl.keystore.key` and `ssl.keystore.certificate.chain`; and the setting that gave the key.
fn keystore(
    ssl: &SslSettings,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), TlsError> {
    check_pem_type(ssl, "ssl.keystore.type")?;
    let (password_key, password) = ssl.get("ssl.key.password");
    let (location_key, location) = ssl.get("ssl.keystore.location");
    let (inline_key_key, inline_key) = ssl.get("ssl.keystore.key");
    let (chain_key, inline_chain) = ssl.get("ssl.keystore.certificate.chain");
    let (key_pem, key_setting, chain_pem, chain_setting) = match (
        location.is_empty(),
        inline_key.is_empty(),
        inline_chain.is_empty(),
    ) {
        (false, true, true) => {
            let bytes = read_file(location_key, location)?;
            (bytes.clone(), location_key, bytes, location_key)
        }
        (true, false, false) => (
            inline_key.as_bytes().to_vec(),
            inline_key_key,
            inline_chain.as_bytes().to_vec(),
            chain_key,
        ),
        (true, true, true) => {
            return Err(setting(
                location_key,
                "an SSL listener needs a key store: ssl.keystore.location, or ssl.keystore.key with ssl.keystore.certificate.chain",
            ));
        }
        (false, _, _) => {
            return Err(setting(
                location_key,
                "set either ssl.keystore.location or the inline ssl.keystore.key and ssl.keystore.certificate.chain, not both",
            ));
        }
        (true, true, false) => {
            return Err(setting(
                inline_key_key,
                "ssl.keystore.certificate.chain is set without its key",
            ));
        }
        (true, false, true) => {
            return Err(setting(
                chain_key,
                "ssl.keystore.key is set without its certificate chain",
            ));
        }
    };
    let text = String::from_utf8_lossy(&key_pem);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(setting(
            key_setting,
            "the private key is encrypted in OpenSSL's legacy format, which is not read; convert it to PKCS#8 (openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key8.pem)",
        ));
    }
    let key = match (encrypted_block(&text), password.is_empty()) {
        (Some(block), false) => {
            decrypt_key(block, password).map_err(|reason| setting(password_key, reason))?
        }
        (Some(_), true) => {
            return Err(setting(
                key_setting,
                "the private key is encrypted: set ssl.key.password",
            ));
        }
        (None, false) => {
            return Err(setting(
                password_key,
                "is set, but the private key is not encrypted",
            ));
        }
        (None, true) => PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|err| setting(key_setting, format!("no PEM private key ({err})")))?,
    };
    let chain = certificates(chain_setting, &chain_pem)?;
    Ok((chain, key, key_setting.to_string()))
}

const ENCRYPTED_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";

/// The `ENCRYPTED PRIVATE KEY` PEM block of `text`, if it has one.
fn encrypted_block(text: &str) -> Option<&str> {
    let start = text.find(ENCRYPTED_BEGIN)?;
    let end = text[start..].find(ENCRYPTED_END)? + start + ENCRYPTED_END.len();
    Some(&text[start..end])
}

/// Decrypts an encrypted PKCS#8 key (PBES2: PBKDF2 or scrypt, AES-CBC), as Kafka reads PEM
/// keys with `ssl.key.password`. The error never carries the password or the key.
fn decrypt_key(block: &str, password: &str) -> Result<PrivateKeyDer<'static>, String> {
    use pkcs8::der::SecretDocument;
    let (_, document) = SecretDocument::from_pem(block)
        .map_err(|err| format!("the encrypted private key is not valid PEM ({err})"))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(document.as_bytes())
        .map_err(|err| format!("the encrypted private key is not PKCS#8 ({err})"))?;
    let plain = info.decrypt(password.as_bytes()).map_err(|err| {
        format!("cannot decrypt the private key (wrong password, or an unsupported cipher: {err})")
    })?;
    Ok(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into()))
}

/// Every PEM certificate of `pem`; at least one.
fn certificates(key: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| setting(key, format!("bad PEM certificate ({err})")))?;
    if chain.is_empty() {
        return Err(setting(key, "holds no PEM certificate"));
    }
    Ok(chain)
}

/// The CAs client certificates are checked against.
fn truststore(ssl: &SslSettings) -> Result<RootCertStore, TlsError> {
    check_pem_type(ssl, "ssl.truststore.type")?;
    let (location_key, location) = ssl.get("ssl.truststore.location");
    let (inline_key, inline) = ssl.get("ssl.truststore.certificates");
    let (key, pem) = match (location.is_empty(), inline.is_empty()) {
        (false, true) => (location_key, read_file(location_key, location)?),
        (true, false) => (inline_key, inline.as_bytes().to_vec()),
        (true, true) => {
            let (auth_key, _) = ssl.get("ssl.client.auth");
            return Err(setting(
                auth_key,
                "client certificates are checked against a trust store: set ssl.truststore.location or ssl.truststore.certificates",
            ));
        }
        (false, false) => {
            return Err(setting(
                location_key,
                "set either ssl.truststore.location or ssl.truststore.certificates, not both",
            ));
        }
    };
    let mut roots = RootCertStore::empty();
    for certificate in certificates(key, &pem)? {
        roots
            .add(certificate)
            .map_err(|err| setting(key, format!("a CA certificate is refused: {err}")))?;
    }
    Ok(roots)
}

/// `ssl.enabled.protocols` as rustls versions.
fn versions(ssl: &SslSettings) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let (key, value) = ssl.get("ssl.enabled.protocols");
    let mut out: Vec<&'static SupportedProtocolVersion> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let version = match name {
            "TLSv1.3" => &rustls::version::TLS13,
            "TLSv1.2" => &rustls::version::TLS12,
            "TLSv1" | "TLSv1.1" | "SSLv3" => {
                return Err(setting(
                    key,
                    format!("{name} is not served (TLSv1.2 and TLSv1.3 are)"),
                ));
            }
            other => return Err(setting(key, format!("'{other}' is not a TLS version"))),
        };
        if !out.iter().any(|v| v.version == version.version) {
            out.push(version);
        }
    }
    if out.is_empty() {
        return Err(setting(key, "no TLS version enabled"));
    }
    Ok(out)
}

/// The Kafka (JSSE) name of a rustls suite.
fn jsse_name(suite: &SupportedCipherSuite) -> String {
    let name = format!("{:?}", suite.suite());
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// ring's provider, its suites narrowed to `ssl.cipher.suites` when set.
fn provider(ssl: &SslSettings) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let (key, value) = ssl.get("ssl.cipher.suites");
    let wanted: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if wanted.is_empty() {
        return Ok(provider);
    }
    let mut chosen = Vec::new();
    for name in wanted {
        let Some(suite) = provider.cipher_suites.iter().find(|s| jsse_name(s) == name) else {
            let known: Vec<String> = provider.cipher_suites.iter().map(jsse_name).collect();
            return Err(setting(
                key,
                format!(
                    "cipher suite '{name}' is not served (these are: {})",
                    known.join(", ")
                ),
            ));
        };
        chosen.push(*suite);
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::listener::{ListenerOverride, parse_override};

    fn settings(pairs: &[(&str, &str)]) -> SslSettings {
        let overrides: Vec<ListenerOverride> = pairs
            .iter()
            .map(|(k, v)| {
                parse_override(&format!("listener.name.ssl.{k}"), v)
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let defaults = |key: &str| match key {
            "ssl.enabled.protocols" => "TLSv1.2,TLSv1.3",
            "ssl.client.auth" => "none",
            "ssl.principal.mapping.rules" => "DEFAULT",
            _ => "",
        };
        SslSettings::resolve("SSL", defaults, &overrides)
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        match TlsListener::build(&settings(pairs), 1000) {
            Ok(_) => panic!("{pairs:?} built"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn jsse_names_map_to_rustls_suites() {
        let names: Vec<String> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(jsse_name)
            .collect();
        for name in [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (pairs, key, part) in [
            (vec![], "ssl.keystore.location", "needs a key store"),
            (
                vec![("ssl.keystore.location", "/nonexistent/ks.pem")],
                "listener.name.ssl.ssl.keystore.location",
                "cannot read /nonexistent/ks.pem",
            ),
            (
                vec![("ssl.keystore.type", "PKCS12")],
                "listener.name.ssl.ssl.keystore.type",
                "convert to PEM",
            ),
            (
                vec![
                    (
                        "ssl.keystore.key",
                        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                    ),
                    ("ssl.keystore.certificate.chain", "x"),
                    ("ssl.key.password", "secret"),
                ],
                "listener.name.ssl.ssl.key.password",
                "not encrypted",
            ),
            (
                vec![
                    (
                        "ssl.keystore.key",
                        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                    ),
                    ("ssl.keystore.certificate.chain", "x"),
                    ("ssl.key.password", "secret"),
                ],
                "listener.name.ssl.ssl.key.password",
                "not valid PEM",
            ),
            (
                vec![("ssl.cipher.suites", "TLS_RSA_WITH_AES_128_CBC_SHA")],
                "listener.name.ssl.ssl.cipher.suites",
                "'TLS_RSA_WITH_AES_128_CBC_SHA' is not served",
            ),
            (
                vec![("ssl.enabled.protocols", "TLSv1.1")],
                "listener.name.ssl.ssl.enabled.protocols",
                "TLSv1.1 is not served",
            ),
            (
                vec![("ssl.client.auth", "required")],
                "listener.name.ssl.ssl.client.auth",
                "trust store",
            ),
            (
                vec![
                    (
                        "ssl.keystore.key",
                        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                    ),
                    ("ssl.keystore.certificate.chain", "x"),
                ],
                "listener.name.ssl.ssl.keystore.key",
                "set ssl.key.password",
            ),
        ] {
            let err = error(&pairs);
            assert!(
                err.contains(&format!("'{key}'")) && err.contains(part),
                "{pairs:?}: {err}"
            );
            assert!(!err.contains("AAAA") && !err.contains("secret"), "{err}");
        }
    }
}
