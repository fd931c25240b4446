//! SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677, KIP-84) against credentials kept
//! in the metadata log (`ScramCredential`, managed with AlterUserScramCredentials, KIP-554).
//!
//! Owner: one `ScramExchange` per authenticating connection, created by its `SaslConnection`
//! with the client's first message and dropped when the exchange ends. Pure, never awaits; the
//! credential comes from the caller (the shard's metadata image).
//!
//! Exchange: client-first (`n,,n=<user>,r=<cnonce>`) → server-first (`r=<cnonce><snonce>,
//! s=<salt>,i=<iterations>`) → client-final (`c=biws,r=<nonce>,p=<proof>`) → server-final
//! (`v=<signature>`). The proof is checked in constant time. As Kafka 3.8.1 does, a
//! client-final nonce that only ends with the server's nonce is accepted: librdkafka before
//! 2.6.1 (so Debian's kcat 2.0.2) sends the client nonce twice. An unknown user and a wrong
//! proof get the same message; no proof, salt or key reaches a log.
//!
//! Dependencies: `sha2` and `hmac` (RustCrypto, the maintained pure-Rust implementations) for
//! H and HMAC, `subtle` for the comparison, `base64` for the attributes, `uuid` (already used)
//! for the server nonce's randomness. PBKDF2 is the client's work (AlterUserScramCredentials
//! carries the salted password); `pbkdf2` serves the tests only.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Kafka's minimum iteration count of both mechanisms.
pub const ITERATIONS_MIN: i32 = 4096;
/// Kafka's maximum iteration count for AlterUserScramCredentials.
pub const ITERATIONS_MAX: i32 = 16384;

/// A SCRAM hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (Kafka's mechanism type 1).
    Sha256,
    /// SCRAM-SHA-512 (Kafka's mechanism type 2).
    Sha512,
}

impl ScramMechanism {
    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Kafka's `ScramMechanism` code (DescribeUserScramCredentials, AlterUserScramCredentials).
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism of a Kafka code.
    pub fn from_code(code: i8) -> Option<ScramMechanism> {
        match code {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length: `new_from_slice` cannot fail.
        match self {
            ScramMechanism::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// The credential of a salted password (`Hi(password, salt, iterations)`, which the
    /// client computes for AlterUserScramCredentials).
    pub fn credential(
        self,
        salt: &[u8],
        salted_password: &[u8],
        iterations: i32,
    ) -> ScramCredential {
        let client_key = self.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: self.hash(&client_key),
            server_key: self.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }
}

/// What the broker keeps of a user's SCRAM password (RFC 5802 §3).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// The salt.
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
    /// The iteration count.
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach a log line.
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// A SCRAM exchange after the client's first message.
#[derive(Debug)]
pub struct ScramExchange {
    mechanism: ScramMechanism,
    /// The user name, decoded.
    user: String,
    credential: Option<ScramCredential>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// The message every credential failure gets, as Kafka words it.
pub fn invalid_credentials(mechanism: ScramMechanism) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
        mechanism.name()
    )
}

fn attribute(part: Option<&str>, name: char) -> Result<&str, String> {
    part.and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or_else(|| format!("Invalid SCRAM message: expected attribute {name}"))
}

fn decode_saslname(name: &str) -> Result<String, String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("Invalid SCRAM user name encoding".to_string()),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramExchange {
    /// Parses the client-first message; `lookup` gives the user's credential, if any. An
    /// unknown user goes on with a made-up salt and fails at the proof, so the answer does not
    /// tell which users exist. Returns the exchange and the server-first message.
    pub fn start(
        mechanism: ScramMechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(ScramExchange, Vec<u8>), String> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| "Invalid SCRAM client first message: not UTF-8".to_string())?;
        let mut parts = text.splitn(3, ',');
        let cbind = parts.next().unwrap_or_default();
        if cbind != "n" && cbind != "y" {
            return Err(
                "Invalid SCRAM client first message: channel binding is not served".to_string(),
            );
        }
        let authzid = parts
            .next()
            .ok_or_else(|| "Invalid SCRAM client first message".to_string())?;
        let bare = parts
            .next()
            .ok_or_else(|| "Invalid SCRAM client first message".to_string())?;
        let mut attrs = bare.split(',');
        let user = decode_saslname(attribute(attrs.next(), 'n')?)?;
        let client_nonce = attribute(attrs.next(), 'r')?;
        if user.is_empty() || client_nonce.is_empty() {
            return Err("Invalid SCRAM client first message: empty user or nonce".to_string());
        }
        for extension in attrs {
            if extension.starts_with("tokenauth=") {
                return Err("Authentication failed: delegation tokens are not served".to_string());
            }
        }
        if !authzid.is_empty() {
            let authzid = decode_saslname(authzid.strip_prefix("a=").unwrap_or(authzid))?;
            if authzid != user {
                return Err(
                    "Authentication failed: Client requested an authorization id that is different from username"
                        .to_string(),
                );
            }
        }
        let credential = lookup(&user);
        let server_nonce = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let nonce = format!("{client_nonce}{server_nonce}");
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (
                mechanism.hash(format!("unknown user {user}").as_bytes())[..16].to_vec(),
                ITERATIONS_MIN,
            ),
        };
        let server_first = format!("r={nonce},s={},i={iterations}", STANDARD.encode(salt));
        let exchange = ScramExchange {
            mechanism,
            user,
            credential,
            gs2_header: format!("{cbind},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first.into_bytes()))
    }

    /// Checks the client-final message: the user name and the server-final message, or the
    /// message for the client.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), String> {
        let invalid = || invalid_credentials(self.mechanism);
        let text = std::str::from_utf8(client_final)
            .map_err(|_| "Invalid SCRAM client final message: not UTF-8".to_string())?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| "Invalid SCRAM client final message: no proof".to_string())?;
        let mut attrs = without_proof.split(',');
        let channel_binding = attribute(attrs.next(), 'c')?;
        let nonce = attribute(attrs.next(), 'r')?;
        if STANDARD.decode(channel_binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(
                "Invalid SCRAM client final message: channel binding does not match".to_string(),
            );
        }
        // RFC 5802 wants the server's nonce back; librdkafka < 2.6.1 sends the client's nonce
        // before it, which Kafka 3.8.1 accepts (its check is endsWith).
        if nonce != self.nonce && !nonce.ends_with(&self.nonce) {
            return Err("Invalid SCRAM client final message: nonce does not match".to_string());
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| "Invalid SCRAM client final message: proof is not base64".to_string())?;
        let Some(credential) = &self.credential else {
            return Err(invalid());
        };
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = self
            .mechanism
            .hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(invalid());
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored_key = self.mechanism.hash(&client_key);
        if !bool::from(stored_key.ct_eq(&credential.stored_key)) {
            return Err(invalid());
        }
        let server_signature = self
            .mechanism
            .hmac(&credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", STANDARD.encode(server_signature));
        Ok((self.user, server_final.into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salted(mechanism: ScramMechanism, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match mechanism {
            ScramMechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations)
                    .to_vec()
            }
            ScramMechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password.as_bytes(), salt, iterations)
                    .to_vec()
            }
        }
    }

    /// RFC 7677 §3: user "user", password "pencil". The server nonce is random here, so the
    /// vector's proof is recomputed from the RFC's messages against our server-first message:
    /// the keys (RFC 5802 §3) are checked against the RFC's exchange directly.
    #[test]
    fn rfc7677_vector() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mechanism = ScramMechanism::Sha256;
        let credential =
            mechanism.credential(&salt, &salted(mechanism, "pencil", &salt, 4096), 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let client_signature = mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(mechanism.hash(&client_key), credential.stored_key);
        let server_signature = mechanism.hmac(&credential.server_key, auth_message.as_bytes());
        assert_eq!(
            STANDARD.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// A client's side of the exchange, as RFC 5802 §3 has it; `doubled_nonce` sends the
    /// client nonce twice, as librdkafka < 2.6.1 does.
    fn client_final(
        mechanism: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        doubled_nonce: Option<&str>,
    ) -> (String, Vec<u8>) {
        let mut fields = server_first.split(',');
        let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
        let salt = STANDARD
            .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = fields
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let salted_password = salted(mechanism, password, &salt, iterations);
        let client_key = mechanism.hmac(&salted_password, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let nonce = match doubled_nonce {
            Some(cnonce) => format!("{cnonce}{nonce}"),
            None => nonce.to_string(),
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = mechanism.hmac(&salted_password, b"Server Key");
        let expected_final = format!(
            "v={}",
            STANDARD.encode(mechanism.hmac(&server_key, auth_message.as_bytes()))
        );
        (
            format!("{without_proof},p={}", STANDARD.encode(proof)),
            expected_final.into_bytes(),
        )
    }

    #[test]
    fn full_exchanges() {
        for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let salt = b"0123456789abcdef";
            let stored = mechanism.credential(salt, &salted(mechanism, "pencil", salt, 4096), 4096);
            for doubled in [None, Some("fyko+d2lbbFgONRv9qkxdawL")] {
                let first = b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL";
                let (exchange, server_first) = ScramExchange::start(mechanism, first, |u| {
                    (u == "user").then(|| stored.clone())
                })
                .unwrap();
                let server_first = String::from_utf8(server_first).unwrap();
                assert!(server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
                let (client_final, expected) = client_final(
                    mechanism,
                    "pencil",
                    "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                    &server_first,
                    doubled,
                );
                let (user, server_final) = exchange.finish(client_final.as_bytes()).unwrap();
                assert_eq!(user, "user");
                assert_eq!(server_final, expected);
            }
            // A wrong password and an unknown user fail alike.
            let first = b"n,,n=user,r=abc";
            let (exchange, server_first) =
                ScramExchange::start(mechanism, first, |_| Some(stored.clone())).unwrap();
            let server_first = String::from_utf8(server_first).unwrap();
            let (wrong, _) = client_final(mechanism, "pen", "n=user,r=abc", &server_first, None);
            let wrong = exchange.finish(wrong.as_bytes()).unwrap_err();
            let (exchange, server_first) =
                ScramExchange::start(mechanism, b"n,,n=nobody,r=abc", |_| None).unwrap();
            let server_first = String::from_utf8(server_first).unwrap();
            let (unknown, _) =
                client_final(mechanism, "pencil", "n=nobody,r=abc", &server_first, None);
            let unknown = exchange.finish(unknown.as_bytes()).unwrap_err();
            assert_eq!(wrong, unknown);
            assert_eq!(wrong, invalid_credentials(mechanism));
            // A nonce that is not the server's.
            let (exchange, _) =
                ScramExchange::start(mechanism, first, |_| Some(stored.clone())).unwrap();
            assert!(
                exchange
                    .finish(b"c=biws,r=abc,p=AAAA")
                    .unwrap_err()
                    .contains("nonce")
            );
        }
    }

    #[test]
    fn malformed_first_messages() {
        let m = ScramMechanism::Sha256;
        for bad in [
            &b"p=tls-unique,,n=user,r=x"[..],
            b"n,,r=x",
            b"n,,n=user",
            b"n,,n=,r=x",
            b"n,,n=us=ZZer,r=x",
            b"n,a=other,n=user,r=x",
            b"n,,n=user,r=x,tokenauth=true",
            b"\xff",
        ] {
            assert!(ScramExchange::start(m, bad, |_| None).is_err(), "{bad:?}");
        }
        let (exchange, _) = ScramExchange::start(m, b"n,a=u=2Cv,n=u=2Cv,r=x", |_| None).unwrap();
        assert_eq!(exchange.user, "u,v");
    }
}
