//! The client listeners a broker serves, resolved: each listener's name, bound address,
//! protocol, advertised address and, for an SSL listener, its `ssl.*` settings with the
//! per-listener overrides (`listener.name.<name>.ssl.*`) applied.
//!
//! Owner: `Config::build` on the main thread, before any shard starts; read-only afterwards.
//! Pure: text in, values or one `ConfigError` line out. The key material itself is read and
//! checked by `net::tls` at start (it reads files), which names the setting on error.

use std::fmt;
use std::net::SocketAddr;

use super::kraft::SecurityProtocol;
use super::{AdvertisedListener, ConfigError, invalid};

/// The settings an SSL listener reads, each overridable per listener as
/// `listener.name.<lower-case listener name>.<setting>` (Kafka's listener prefix).
pub const SSL_SETTINGS: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.key.password",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.certificates",
    "ssl.client.auth",
    "ssl.enabled.protocols",
    "ssl.cipher.suites",
    "ssl.principal.mapping.rules",
];

/// One client listener, ready to bind.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Its name (`PLAINTEXT`, `SSL`, `INTERNAL`, ...), upper case.
    pub name: String,
    /// The address every shard binds (port 0: one free port, picked at start).
    pub addr: SocketAddr,
    /// What its connections speak.
    pub protocol: SecurityProtocol,
    /// What Metadata tells its clients; `None`: the bound address.
    pub advertised: Option<AdvertisedListener>,
    /// Its `ssl.*` settings, for a TLS listener.
    pub ssl: Option<SslSettings>,
    /// Its SASL mechanisms and users, for a SASL listener (`security::sasl`).
    pub sasl: Option<std::sync::Arc<crate::security::sasl::SaslConfig>>,
}

/// One `ssl.*` value of a listener and the key it was given under (the override's key, or the
/// plain setting), so that an error names what the operator wrote.
#[derive(Clone)]
struct SslValue {
    setting: &'static str,
    key: String,
    value: String,
}

/// The `ssl.*` settings of one listener. Its `Debug` prints keys, never values: some are keys
/// and passwords.
#[derive(Clone, Default)]
pub struct SslSettings {
    values: Vec<SslValue>,
}

impl fmt::Debug for SslSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|v| v.key.as_str()))
            .finish()
    }
}

impl SslSettings {
    /// The key a setting was given under and its value (trimmed; empty when unset).
    pub fn get<'s>(&'s self, setting: &'s str) -> (&'s str, &'s str) {
        self.values
            .iter()
            .find(|v| v.setting == setting)
            .map_or((setting, ""), |v| (v.key.as_str(), v.value.as_str()))
    }

    /// Builds a listener's settings from `overrides` and the plain settings `get` returns.
    pub fn resolve<'a>(
        listener: &str,
        get: impl Fn(&str) -> &'a str,
        overrides: &[ListenerOverride],
    ) -> SslSettings {
        let values = SSL_SETTINGS
            .iter()
            .map(|&setting| {
                match overrides
                    .iter()
                    .rev()
                    .find(|o| o.listener == listener && o.setting == setting)
                {
                    Some(found) => SslValue {
                        setting,
                        key: found.key.clone(),
                        value: found.value.clone(),
                    },
                    None => SslValue {
                        setting,
                        key: setting.to_string(),
                        value: get(setting).trim().to_string(),
                    },
                }
            })
            .collect();
        SslSettings { values }
    }
}

/// A `listener.name.<name>.<setting>` entry.
#[derive(Clone)]
pub struct ListenerOverride {
    /// The listener, upper case.
    pub listener: String,
    /// The setting it overrides (one of `SSL_SETTINGS`).
    pub setting: &'static str,
    /// The key as given.
    pub key: String,
    /// The value, trimmed.
    pub value: String,
}

impl fmt::Debug for ListenerOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// Reads `key` as a per-listener override, if it has the `listener.name.` prefix: `Ok(None)`
/// for any other key, an error for a prefixed key whose setting cannot be overridden.
pub fn parse_override(key: &str, value: &str) -> Result<Option<ListenerOverride>, ConfigError> {
    let Some(rest) = key.strip_prefix("listener.name.") else {
        return Ok(None);
    };
    let Some((listener, setting)) = rest.split_once('.') else {
        return Err(invalid(
            key,
            value,
            "expected listener.name.<listener>.<setting>",
        ));
    };
    let Some(&setting) = SSL_SETTINGS.iter().find(|s| **s == setting) else {
        return Err(invalid(
            key,
            value,
            format!("'{setting}' cannot be set per listener (the ssl.* settings can)"),
        ));
    };
    if listener.is_empty() {
        return Err(invalid(key, value, "no listener name"));
    }
    Ok(Some(ListenerOverride {
        listener: listener.to_ascii_uppercase(),
        setting,
        key: key.to_string(),
        value: value.trim().to_string(),
    }))
}

/// Refuses an override of a listener that is not an SSL client listener: it would be ignored.
pub fn check_overrides(
    listeners: &[ListenerConfig],
    overrides: &[ListenerOverride],
) -> Result<(), ConfigError> {
    for o in overrides {
        let known = listeners
            .iter()
            .any(|l| l.name == o.listener && l.protocol.uses_tls());
        if !known {
            return Err(invalid(
                &o.key,
                &o.value,
                format!(
                    "{} is not an SSL listener of listeners, so nothing reads this",
                    o.listener
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_per_listener_and_name_their_key() {
        let overrides = vec![
            parse_override("listener.name.ssl.ssl.client.auth", "required")
                .unwrap()
                .unwrap(),
            parse_override("listener.name.other.ssl.client.auth", "requested")
                .unwrap()
                .unwrap(),
        ];
        let get = |key: &str| if key == "ssl.client.auth" { "none" } else { "" };
        let ssl = SslSettings::resolve("SSL", get, &overrides);
        assert_eq!(
            ssl.get("ssl.client.auth"),
            ("listener.name.ssl.ssl.client.auth", "required")
        );
        assert_eq!(
            ssl.get("ssl.keystore.location"),
            ("ssl.keystore.location", "")
        );
        let plain = SslSettings::resolve("TLS2", get, &overrides);
        assert_eq!(plain.get("ssl.client.auth"), ("ssl.client.auth", "none"));
        assert!(parse_override("num.partitions", "1").unwrap().is_none());
        let err = parse_override("listener.name.ssl.num.partitions", "1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot be set per listener"), "{err}");
    }

    #[test]
    fn debug_never_prints_values() {
        let overrides = vec![
            parse_override("listener.name.ssl.ssl.keystore.key", "SECRET-KEY")
                .unwrap()
                .unwrap(),
        ];
        let ssl = SslSettings::resolve("SSL", |_| "", &overrides);
        let printed = format!("{ssl:?}");
        assert!(!printed.contains("SECRET-KEY"), "{printed}");
        assert!(printed.contains("listener.name.ssl.ssl.keystore.key"));
    }
}
