//! Client quotas as Kafka has them: the entities (`user`, `client-id`, the two together, and
//! their defaults), the values (`producer_byte_rate`, `consumer_byte_rate`), Kafka's eight
//! levels of precedence, and the checks and filters of AlterClientQuotas and
//! DescribeClientQuotas (KIP-546).
//!
//! Owner: nobody; plain data. The quotas live in the metadata image (`MetadataImage::quotas`),
//! changed only by shard 0's controller through `MetadataRecord::ClientQuotaAltered`, and every
//! shard reads its own copy of the image. Nothing here awaits or does I/O.
//!
//! `meter` measures the byte rates and computes throttle times (KIP-219). The keys Kafka has
//! but this broker does not enforce (`request_percentage`, `controller_mutation_rate`,
//! `connection_creation_rate`) and the `ip` entity are refused by `check_entity` and
//! `check_op`, never stored.
//!
//! Entity names: `None` is the default entity of that type (Kafka's `<default>`, a null
//! name on the wire). A user quota names the principal's name (`alice` for `User:alice`).

pub mod meter;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Kafka's entity type names.
pub mod entity_type {
    /// A principal's name.
    pub const USER: &str = "user";
    /// A client's `client.id`.
    pub const CLIENT_ID: &str = "client-id";
    /// A client's address (Kafka's connection-rate quotas; refused here).
    pub const IP: &str = "ip";
}

/// The user quota name of a principal `Type:Name`: its name (`alice` for `User:alice`).
pub fn principal_user(principal: &str) -> &str {
    principal
        .split_once(':')
        .map_or(principal, |(_, name)| name)
}

/// One entity's checked alteration: its (key, value to set or `None` to remove) pairs.
pub type QuotaAlteration = (QuotaEntity, Vec<(QuotaKey, Option<i64>)>);

/// Quota entities this broker may hold at most (each lives in every shard's image);
/// an alteration adding one past it is refused.
pub const ENTITIES_MAX: usize = 100_000;

/// Why a quota alteration or filter is refused. Each maps to Kafka's INVALID_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// The request is malformed (unknown key or entity type, duplicates, bad combinations,
    /// bad values).
    #[error("{0}")]
    InvalidRequest(String),
}

fn invalid(message: impl Into<String>) -> QuotaError {
    QuotaError::InvalidRequest(message.into())
}

/// A quota entity: a user, a client id, or both; each may be the default of its type.
/// `None` means the type is not part of the entity; `Some(None)` is its default.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    /// The `user` part.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub user: Option<Option<String>>,
    /// The `client-id` part.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub client_id: Option<Option<String>>,
}

/// A part that is written is present, a null name being the default (an absent part is
/// `None` by `serde(default)`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

impl QuotaEntity {
    /// The entity of `user` and `client_id` (`None`: that type's default).
    pub fn user_client(user: Option<&str>, client_id: Option<&str>) -> QuotaEntity {
        QuotaEntity {
            user: Some(user.map(str::to_string)),
            client_id: Some(client_id.map(str::to_string)),
        }
    }

    /// The entity of `user` alone (`None`: the default user).
    pub fn user(user: Option<&str>) -> QuotaEntity {
        QuotaEntity {
            user: Some(user.map(str::to_string)),
            client_id: None,
        }
    }

    /// The entity of `client_id` alone (`None`: the default client id).
    pub fn client(client_id: Option<&str>) -> QuotaEntity {
        QuotaEntity {
            user: None,
            client_id: Some(client_id.map(str::to_string)),
        }
    }

    /// The entity as the wire lists it: (entity type, name; `None` for the default), user
    /// first.
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut parts = Vec::with_capacity(2);
        if let Some(user) = &self.user {
            parts.push((entity_type::USER, user.as_deref()));
        }
        if let Some(client) = &self.client_id {
            parts.push((entity_type::CLIENT_ID, client.as_deref()));
        }
        parts
    }

    /// The ZooKeeper-era path Kafka's docs name the entity by, e.g.
    /// `/config/users/alice/clients/<default>`.
    pub fn path(&self) -> String {
        let name = |n: &Option<String>| n.clone().unwrap_or_else(|| "<default>".to_string());
        match (&self.user, &self.client_id) {
            (Some(u), Some(c)) => format!("/config/users/{}/clients/{}", name(u), name(c)),
            (Some(u), None) => format!("/config/users/{}", name(u)),
            (None, Some(c)) => format!("/config/clients/{}", name(c)),
            (None, None) => "/config".to_string(),
        }
    }
}

/// The quota keys this broker enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QuotaKey {
    /// `producer_byte_rate`: bytes a second a client may produce.
    #[serde(rename = "producer_byte_rate")]
    ProducerByteRate,
    /// `consumer_byte_rate`: bytes a second a client may fetch.
    #[serde(rename = "consumer_byte_rate")]
    ConsumerByteRate,
}

impl QuotaKey {
    /// Every key, in Kafka's order.
    pub const ALL: [QuotaKey; 2] = [QuotaKey::ProducerByteRate, QuotaKey::ConsumerByteRate];

    /// Kafka's name of the key.
    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
        }
    }

    /// The key named `name`; a key Kafka has but this broker does not enforce, or one
    /// Kafka does not have, is refused with a message saying which.
    pub fn parse(name: &str) -> Result<QuotaKey, QuotaError> {
        match name {
            "producer_byte_rate" => Ok(QuotaKey::ProducerByteRate),
            "consumer_byte_rate" => Ok(QuotaKey::ConsumerByteRate),
            "request_percentage" | "controller_mutation_rate" | "connection_creation_rate" => {
                Err(invalid(format!(
                    "Quota key {name} is not supported by this broker (only producer_byte_rate \
                     and consumer_byte_rate are enforced)"
                )))
            }
            _ => Err(invalid(format!("Unknown quota key {name}"))),
        }
    }
}

/// Every entity's quotas, by entity and key. Values are bytes a second (Kafka's
/// `producer_byte_rate` and `consumer_byte_rate` are LONG configs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientQuotas {
    entries: BTreeMap<QuotaEntity, BTreeMap<QuotaKey, i64>>,
}

/// One entity's quotas as written in a snapshot (JSON maps want string keys).
#[derive(Serialize, Deserialize)]
struct SnapshotEntry {
    entity: QuotaEntity,
    values: BTreeMap<QuotaKey, i64>,
}

impl Serialize for ClientQuotas {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entries: Vec<SnapshotEntry> = self
            .entries
            .iter()
            .map(|(entity, values)| SnapshotEntry {
                entity: entity.clone(),
                values: values.clone(),
            })
            .collect();
        entries.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ClientQuotas {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = Vec::<SnapshotEntry>::deserialize(deserializer)?;
        Ok(ClientQuotas {
            entries: entries
                .into_iter()
                .filter(|e| !e.values.is_empty())
                .map(|e| (e.entity, e.values))
                .collect(),
        })
    }
}

impl ClientQuotas {
    /// Whether no entity has a quota.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entities have a quota.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sets (`Some`) or removes (`None`) `entity`'s value of `key`. An entity left with no
    /// value is forgotten.
    pub fn set(&mut self, entity: &QuotaEntity, key: QuotaKey, value: Option<i64>) {
        match value {
            Some(value) => {
                self.entries
                    .entry(entity.clone())
                    .or_default()
                    .insert(key, value);
            }
            None => {
                if let Some(values) = self.entries.get_mut(entity) {
                    values.remove(&key);
                    if values.is_empty() {
                        self.entries.remove(entity);
                    }
                }
            }
        }
    }

    /// `entity`'s own values (no precedence applied).
    pub fn get(&self, entity: &QuotaEntity) -> Option<&BTreeMap<QuotaKey, i64>> {
        self.entries.get(entity)
    }

    /// Every entity with its values.
    pub fn iter(&self) -> impl Iterator<Item = (&QuotaEntity, &BTreeMap<QuotaKey, i64>)> {
        self.entries.iter()
    }

    /// The quota of `key` that applies to a connection of principal name `user` with client
    /// id `client_id`, and the entity it is set on, by Kafka's precedence (most specific
    /// first):
    ///
    /// 1. `/config/users/<user>/clients/<client-id>`
    /// 2. `/config/users/<user>/clients/<default>`
    /// 3. `/config/users/<user>`
    /// 4. `/config/users/<default>/clients/<client-id>`
    /// 5. `/config/users/<default>/clients/<default>`
    /// 6. `/config/users/<default>`
    /// 7. `/config/clients/<client-id>`
    /// 8. `/config/clients/<default>`
    ///
    /// Each key is resolved on its own (as Kafka's produce and fetch quota managers do), so a
    /// client's producer quota may come from one level and its consumer quota from another.
    pub fn resolve(
        &self,
        user: &str,
        client_id: &str,
        key: QuotaKey,
    ) -> Option<(QuotaEntity, i64)> {
        let (u, c) = (Some(user), Some(client_id));
        let levels = [
            QuotaEntity::user_client(u, c),
            QuotaEntity::user_client(u, None),
            QuotaEntity::user(u),
            QuotaEntity::user_client(None, c),
            QuotaEntity::user_client(None, None),
            QuotaEntity::user(None),
            QuotaEntity::client(c),
            QuotaEntity::client(None),
        ];
        levels.into_iter().find_map(|entity| {
            let value = *self.entries.get(&entity)?.get(&key)?;
            Some((entity, value))
        })
    }
}

/// Checks an AlterClientQuotas entity: its (entity type, name) components. Refused as Kafka
/// does: no component, a type named twice, an unknown type; and, here, the `ip` entity
/// (connection-rate quotas are not enforced by this broker).
pub fn check_entity(components: &[(&str, Option<&str>)]) -> Result<QuotaEntity, QuotaError> {
    if components.is_empty() {
        return Err(invalid("Invalid empty client quota entity"));
    }
    let mut entity = QuotaEntity {
        user: None,
        client_id: None,
    };
    for (kind, name) in components {
        let slot = match *kind {
            entity_type::USER => &mut entity.user,
            entity_type::CLIENT_ID => &mut entity.client_id,
            entity_type::IP => {
                return Err(invalid(
                    "Quotas on the ip entity (connection_creation_rate) are not supported by \
                     this broker",
                ));
            }
            other => {
                return Err(invalid(format!(
                    "Unhandled client quota entity type: {other}"
                )));
            }
        };
        if slot.is_some() {
            return Err(invalid(format!(
                "Duplicate {kind} entity in the client quota entity"
            )));
        }
        *slot = Some(name.map(str::to_string));
    }
    Ok(entity)
}

/// Checks one AlterClientQuotas operation: the key, and the value unless it is a removal.
/// Gives the key and the value to set (`None`: remove). As Kafka: the byte rates are LONG
/// configs, so a value must be a whole number that fits one; and it must be positive here
/// (a zero or negative rate would throttle every request for the longest time).
pub fn check_op(
    key: &str,
    value: f64,
    remove: bool,
) -> Result<(QuotaKey, Option<i64>), QuotaError> {
    let key = QuotaKey::parse(key)?;
    if remove {
        return Ok((key, None));
    }
    if !value.is_finite() || value.fract() != 0.0 || value.abs() >= i64::MAX as f64 {
        return Err(invalid(format!(
            "Quota {} must be a whole number of bytes a second, not {value}",
            key.name()
        )));
    }
    if value <= 0.0 {
        return Err(invalid(format!(
            "Quota {} must be positive, not {value}",
            key.name()
        )));
    }
    Ok((key, Some(value as i64)))
}

/// Checks one entity's operations together: a key named twice is refused.
pub fn check_ops(
    ops: impl IntoIterator<Item = (String, f64, bool)>,
) -> Result<Vec<(QuotaKey, Option<i64>)>, QuotaError> {
    let mut checked: Vec<(QuotaKey, Option<i64>)> = Vec::new();
    for (key, value, remove) in ops {
        let (key, value) = check_op(&key, value, remove)?;
        if checked.iter().any(|(k, _)| *k == key) {
            return Err(invalid(format!("Duplicate quota key {}", key.name())));
        }
        checked.push((key, value));
    }
    Ok(checked)
}

/// How a DescribeClientQuotas filter component matches an entity's name of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    /// The name itself (match type 0 with a name).
    Exact(String),
    /// The default entity of the type (match type 1, or 0 with a null name as Kafka reads it).
    Default,
    /// Any name, the default included (match type 2): the entity only has to have the type.
    Any,
}

/// A DescribeClientQuotas filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaFilter {
    /// The user part's match; `None`: the filter says nothing of users.
    pub user: Option<NameMatch>,
    /// The client-id part's match.
    pub client_id: Option<NameMatch>,
    /// Only entities with exactly the filter's types (else ones with more types match too).
    pub strict: bool,
}

impl QuotaFilter {
    /// Builds a filter from the wire's components: (entity type, match type, match).
    /// As Kafka reads them: an exact match with a null name is the default entity, and the
    /// default and any match types disregard the name. Refused as Kafka does: an empty or
    /// unknown entity type, a type named twice, `ip` beside `user` or `client-id`, an unknown
    /// match type. A filter on `ip` alone is valid and matches nothing (`None`), since no
    /// ip entity is ever stored here.
    pub fn parse(
        components: &[(&str, i8, Option<&str>)],
        strict: bool,
    ) -> Result<Option<QuotaFilter>, QuotaError> {
        let mut filter = QuotaFilter {
            user: None,
            client_id: None,
            strict,
        };
        let mut ip = false;
        let mut seen: Vec<&str> = Vec::new();
        for (kind, match_type, name) in components {
            if kind.is_empty() {
                return Err(invalid("Invalid empty entity type in the filter"));
            }
            if seen.contains(kind) {
                return Err(invalid(format!(
                    "Entity type {kind} cannot appear more than once in the filter"
                )));
            }
            seen.push(kind);
            let matched = match (*match_type, name) {
                (0, Some(name)) => NameMatch::Exact(name.to_string()),
                (0, None) | (1, _) => NameMatch::Default,
                (2, _) => NameMatch::Any,
                (other, _) => return Err(invalid(format!("Unknown match type {other}"))),
            };
            match *kind {
                entity_type::USER => filter.user = Some(matched),
                entity_type::CLIENT_ID => filter.client_id = Some(matched),
                entity_type::IP => ip = true,
                other => {
                    return Err(invalid(format!(
                        "Invalid entity type {other} in the filter"
                    )));
                }
            }
        }
        if ip && (filter.user.is_some() || filter.client_id.is_some()) {
            return Err(invalid(
                "The ip entity type cannot be combined with user or client-id in a filter",
            ));
        }
        Ok(if ip { None } else { Some(filter) })
    }

    /// Whether `entity` passes the filter.
    pub fn matches(&self, entity: &QuotaEntity) -> bool {
        fn part(filter: &Option<NameMatch>, name: &Option<Option<String>>, strict: bool) -> bool {
            match (filter, name) {
                (None, None) => true,
                (None, Some(_)) => !strict,
                (Some(_), None) => false,
                (Some(NameMatch::Any), Some(_)) => true,
                (Some(NameMatch::Default), Some(n)) => n.is_none(),
                (Some(NameMatch::Exact(want)), Some(n)) => n.as_deref() == Some(want.as_str()),
            }
        }
        part(&self.user, &entity.user, self.strict)
            && part(&self.client_id, &entity.client_id, self.strict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_levels() -> ClientQuotas {
        let mut quotas = ClientQuotas::default();
        let levels = [
            QuotaEntity::user_client(Some("alice"), Some("app")),
            QuotaEntity::user_client(Some("alice"), None),
            QuotaEntity::user(Some("alice")),
            QuotaEntity::user_client(None, Some("app")),
            QuotaEntity::user_client(None, None),
            QuotaEntity::user(None),
            QuotaEntity::client(Some("app")),
            QuotaEntity::client(None),
        ];
        for (i, entity) in levels.iter().enumerate() {
            quotas.set(entity, QuotaKey::ProducerByteRate, Some(i as i64 + 1));
        }
        quotas
    }

    #[test]
    fn precedence_follows_kafkas_eight_levels() {
        let mut quotas = all_levels();
        let resolved = |q: &ClientQuotas| {
            q.resolve("alice", "app", QuotaKey::ProducerByteRate)
                .map(|(e, v)| (e.path(), v))
        };
        let expected = [
            "/config/users/alice/clients/app",
            "/config/users/alice/clients/<default>",
            "/config/users/alice",
            "/config/users/<default>/clients/app",
            "/config/users/<default>/clients/<default>",
            "/config/users/<default>",
            "/config/clients/app",
            "/config/clients/<default>",
        ];
        // Remove the most specific level each round: the next one takes over.
        for (i, path) in expected.iter().enumerate() {
            assert_eq!(resolved(&quotas), Some((path.to_string(), i as i64 + 1)));
            let entity = quotas
                .resolve("alice", "app", QuotaKey::ProducerByteRate)
                .unwrap()
                .0;
            quotas.set(&entity, QuotaKey::ProducerByteRate, None);
        }
        assert_eq!(resolved(&quotas), None);
        assert!(quotas.is_empty());
    }

    #[test]
    fn other_users_and_clients_fall_to_the_defaults() {
        let quotas = all_levels();
        let path = |user: &str, client: &str| {
            quotas
                .resolve(user, client, QuotaKey::ProducerByteRate)
                .map(|(e, _)| e.path())
        };
        assert_eq!(
            path("bob", "app").as_deref(),
            Some("/config/users/<default>/clients/app")
        );
        assert_eq!(
            path("alice", "x").as_deref(),
            Some("/config/users/alice/clients/<default>")
        );
        assert_eq!(
            path("bob", "x").as_deref(),
            Some("/config/users/<default>/clients/<default>")
        );
        // Keys resolve on their own: no consumer quota anywhere.
        assert_eq!(
            quotas.resolve("alice", "app", QuotaKey::ConsumerByteRate),
            None
        );
    }

    #[test]
    fn client_id_quota_applies_without_user_quotas() {
        let mut quotas = ClientQuotas::default();
        quotas.set(
            &QuotaEntity::client(Some("app")),
            QuotaKey::ConsumerByteRate,
            Some(10),
        );
        quotas.set(
            &QuotaEntity::client(None),
            QuotaKey::ConsumerByteRate,
            Some(20),
        );
        assert_eq!(
            quotas
                .resolve("ANONYMOUS", "app", QuotaKey::ConsumerByteRate)
                .map(|q| q.1),
            Some(10)
        );
        assert_eq!(
            quotas
                .resolve("ANONYMOUS", "other", QuotaKey::ConsumerByteRate)
                .map(|q| q.1),
            Some(20)
        );
        // A user quota beats a client-id one.
        quotas.set(
            &QuotaEntity::user(Some("ANONYMOUS")),
            QuotaKey::ConsumerByteRate,
            Some(30),
        );
        assert_eq!(
            quotas
                .resolve("ANONYMOUS", "app", QuotaKey::ConsumerByteRate)
                .map(|q| q.1),
            Some(30)
        );
    }

    #[test]
    fn entities_are_checked_as_kafka_does() {
        assert_eq!(
            check_entity(&[("user", Some("alice")), ("client-id", None)]),
            Ok(QuotaEntity::user_client(Some("alice"), None))
        );
        assert_eq!(
            check_entity(&[("client-id", Some("c"))]),
            Ok(QuotaEntity::client(Some("c")))
        );
        for bad in [
            vec![],
            vec![("user", Some("a")), ("user", Some("b"))],
            vec![("group", Some("g"))],
            vec![("ip", Some("1.2.3.4"))],
            vec![("ip", None)],
        ] {
            assert!(check_entity(&bad).is_err(), "{bad:?}");
        }
        let err = check_entity(&[("ip", None)]).unwrap_err().to_string();
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn ops_are_checked_and_unenforced_keys_refused() {
        assert_eq!(
            check_op("producer_byte_rate", 1024.0, false),
            Ok((QuotaKey::ProducerByteRate, Some(1024)))
        );
        assert_eq!(
            check_op("consumer_byte_rate", f64::NAN, true),
            Ok((QuotaKey::ConsumerByteRate, None))
        );
        for key in [
            "request_percentage",
            "controller_mutation_rate",
            "connection_creation_rate",
        ] {
            let err = check_op(key, 10.0, false).unwrap_err().to_string();
            assert!(err.contains("not supported by this broker"), "{err}");
            // Refused even as a removal: nothing of it is ever stored.
            assert!(check_op(key, 0.0, true).is_err());
        }
        assert!(
            check_op("bogus", 1.0, false)
                .unwrap_err()
                .to_string()
                .contains("Unknown")
        );
        assert!(check_op("producer_byte_rate", 1.5, false).is_err());
        assert!(check_op("producer_byte_rate", 0.0, false).is_err());
        assert!(check_op("producer_byte_rate", -5.0, false).is_err());
        assert!(check_op("producer_byte_rate", f64::INFINITY, false).is_err());
        let twice = vec![
            ("producer_byte_rate".to_string(), 1.0, false),
            ("producer_byte_rate".to_string(), 0.0, true),
        ];
        assert!(
            check_ops(twice)
                .unwrap_err()
                .to_string()
                .contains("Duplicate")
        );
    }

    #[test]
    fn filters_match_exact_default_any_and_strict() {
        let alice_app = QuotaEntity::user_client(Some("alice"), Some("app"));
        let alice = QuotaEntity::user(Some("alice"));
        let default_user = QuotaEntity::user(None);
        let app = QuotaEntity::client(Some("app"));
        let entities = [&alice_app, &alice, &default_user, &app];
        let matching = |components: &[(&str, i8, Option<&str>)], strict: bool| {
            let filter = QuotaFilter::parse(components, strict).unwrap();
            entities
                .iter()
                .filter(|e| filter.as_ref().is_some_and(|f| f.matches(e)))
                .map(|e| e.path())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            matching(&[("user", 0, Some("alice"))], false),
            vec!["/config/users/alice/clients/app", "/config/users/alice"]
        );
        assert_eq!(
            matching(&[("user", 0, Some("alice"))], true),
            vec!["/config/users/alice"]
        );
        assert_eq!(
            matching(&[("user", 1, None)], false),
            vec!["/config/users/<default>"]
        );
        assert_eq!(matching(&[("user", 2, None)], true).len(), 2);
        assert_eq!(matching(&[("client-id", 2, None)], false).len(), 2);
        assert_eq!(matching(&[], false).len(), 4);
        assert!(matching(&[], true).is_empty());
        assert!(matching(&[("ip", 2, None)], false).is_empty());
        // As Kafka reads them: default and any disregard a name; exact without one is default.
        assert_eq!(
            matching(&[("user", 1, Some("x"))], true),
            vec!["/config/users/<default>"]
        );
        assert_eq!(
            matching(&[("user", 0, None)], true),
            vec!["/config/users/<default>"]
        );
        for bad in [
            vec![("", 2, None)],
            vec![("group", 2, None)],
            vec![("ip", 2, None), ("user", 2, None)],
            vec![("user", 7, None)],
            vec![("user", 2, None), ("user", 1, None)],
        ] {
            assert!(QuotaFilter::parse(&bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quotas_survive_a_snapshot() {
        let quotas = all_levels();
        let json = serde_json::to_string(&quotas).unwrap();
        let back: ClientQuotas = serde_json::from_str(&json).unwrap();
        assert_eq!(back, quotas);
        assert_eq!(back.len(), 8);
    }
}
