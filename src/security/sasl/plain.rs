//! SASL/PLAIN (RFC 4616) against the users of the listener's JAAS configuration
//! (`user_<name>="<password>"` options of `PlainLoginModule`, as Kafka's
//! `PlainServerCallbackHandler` reads them).
//!
//! Owner: the `Users` table is built at start and shared read-only; `authenticate` is called by
//! a connection's `SaslConnection` with the client's one message. Pure, never awaits.
//!
//! Passwords are compared in constant time with `subtle` (the dalek-cryptography crate most
//! Rust cryptography code uses for this; no other dependency). A wrong password and an unknown
//! user get the same message, as in Kafka, and nothing here logs a password.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;

use super::jaas::JaasEntry;

/// Kafka's PLAIN login module class.
pub const LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";

/// PLAIN's users and their passwords.
#[derive(Clone, Default)]
pub struct Users {
    passwords: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: passwords never reach a log line.
        f.debug_struct("Users")
            .field("names", &self.passwords.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Users {
    /// The `user_<name>` options of a `PlainLoginModule` entry.
    pub fn from_jaas(entry: &JaasEntry) -> Result<Users, String> {
        if entry.login_module != LOGIN_MODULE {
            return Err(format!(
                "PLAIN needs {LOGIN_MODULE}, not {}",
                entry.login_module
            ));
        }
        let mut passwords = BTreeMap::new();
        for (key, value) in &entry.options {
            match key.strip_prefix("user_").filter(|name| !name.is_empty()) {
                Some(name) => {
                    passwords.insert(name.to_string(), value.as_bytes().to_vec());
                }
                None => {
                    return Err(format!(
                        "option {key} is not served: only user_<name>=\"<password>\" options are (username/password are the broker's own login for inter-broker SASL, which is not served)"
                    ));
                }
            }
        }
        Ok(Users { passwords })
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.passwords.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.passwords.is_empty()
    }

    /// Checks one PLAIN message (`[authzid] NUL authcid NUL password`); the authenticated user
    /// name, or the message for the client.
    pub fn authenticate(&self, message: &[u8]) -> Result<String, String> {
        let mut parts = message.split(|&b| b == 0);
        let (Some(authzid), Some(username), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("Invalid SASL/PLAIN response: expected 3 tokens".to_string());
        };
        let (Ok(authzid), Ok(username)) =
            (std::str::from_utf8(authzid), std::str::from_utf8(username))
        else {
            return Err("Invalid SASL/PLAIN response: names must be UTF-8".to_string());
        };
        if username.is_empty() {
            return Err("Authentication failed: username not specified".to_string());
        }
        if password.is_empty() {
            return Err("Authentication failed: password not specified".to_string());
        }
        let expected = self.passwords.get(username);
        // An unknown user still costs a comparison, against a password of the same length.
        let matches = match expected {
            Some(expected) => bool::from(expected.as_slice().ct_eq(password)),
            None => {
                let _ = password.ct_eq(password);
                false
            }
        };
        if !matches {
            return Err("Authentication failed: Invalid username or password".to_string());
        }
        if !authzid.is_empty() && authzid != username {
            return Err(
                "Authentication failed: Client requested an authorization id that is different from username"
                    .to_string(),
            );
        }
        Ok(username.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::sasl::jaas;

    fn users() -> Users {
        let entry = jaas::parse(&format!(
            r#"{LOGIN_MODULE} required user_alice="alice-secret" user_bob="bob-secret";"#
        ))
        .unwrap();
        Users::from_jaas(&entry).unwrap()
    }

    #[test]
    fn plain_messages() {
        let users = users();
        assert_eq!(users.len(), 2);
        assert_eq!(
            users.authenticate(b"\0alice\0alice-secret").unwrap(),
            "alice"
        );
        assert_eq!(
            users.authenticate(b"alice\0alice\0alice-secret").unwrap(),
            "alice"
        );
        let wrong = users.authenticate(b"\0alice\0bob-secret").unwrap_err();
        let unknown = users.authenticate(b"\0carol\0alice-secret").unwrap_err();
        assert_eq!(wrong, unknown);
        assert!(wrong.contains("Invalid username or password"));
        assert!(
            users
                .authenticate(b"bob\0alice\0alice-secret")
                .unwrap_err()
                .contains("authorization id")
        );
        assert!(users.authenticate(b"alice\0alice-secret").is_err());
        assert!(users.authenticate(b"\0\0x").is_err());
        assert!(users.authenticate(b"\0alice\0").is_err());
        assert!(!format!("{users:?}").contains("secret"));
    }

    #[test]
    fn other_login_modules_are_refused() {
        let entry = jaas::parse("com.example.Other required user_a=b;").unwrap();
        assert!(Users::from_jaas(&entry).is_err());
        let entry = jaas::parse(&format!(
            r#"{LOGIN_MODULE} required username="admin" password="admin-pw" user_a="b";"#
        ))
        .unwrap();
        let error = Users::from_jaas(&entry).unwrap_err();
        assert!(error.contains("option password is not served"), "{error}");
        assert!(!error.contains("admin-pw"), "{error}");
    }
}
