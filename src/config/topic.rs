//! Topic-level configs: the keys a topic may override, their broker-level synonyms, checks,
//! and resolution into the settings a partition log runs with.
//!
//! Owner: pure functions and static tables, used on any shard. A topic's overrides live in the
//! metadata image (set by CreateTopics and AlterConfigs); every other value comes from the
//! broker setting that is its synonym (`retention.ms` from `log.retention.ms`, ...), exactly
//! as Kafka resolves them, and DescribeConfigs reports which source each value came from.

use std::collections::BTreeMap;

use crate::config::{Config, ConfigSource, ValueKind, config_def};

/// A key a topic may override.
#[derive(Debug)]
pub struct TopicConfigDef {
    /// The topic-level key.
    pub name: &'static str,
    /// The broker setting that supplies the value when the topic does not override it.
    pub broker_synonym: &'static str,
}

impl TopicConfigDef {
    /// The kind of value, the same as the broker synonym's.
    pub fn kind(&self) -> ValueKind {
        self.synonym_def().kind
    }

    /// One line of documentation.
    pub fn doc(&self) -> &'static str {
        self.synonym_def().doc
    }

    fn synonym_def(&self) -> &'static crate::config::ConfigDef {
        config_def(self.broker_synonym).expect("every topic config has a broker synonym")
    }
}

/// Every topic-level key the broker implements. CreateTopics and AlterConfigs refuse others.
pub const TOPIC_CONFIG_DEFS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_synonym: "log.cleanup.policy",
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_synonym: "log.cleaner.delete.retention.ms",
    },
    TopicConfigDef {
        name: "flush.messages",
        broker_synonym: "log.flush.interval.messages",
    },
    TopicConfigDef {
        name: "flush.ms",
        broker_synonym: "log.flush.interval.ms",
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        broker_synonym: "log.index.interval.bytes",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_synonym: "message.max.bytes",
    },
    // Deprecated since Kafka 3.0 and ignored there from inter-broker protocol 3.0 on (every
    // KRaft cluster): accepted and described, changes nothing (docs/COMPAT.md).
    TopicConfigDef {
        name: "message.format.version",
        broker_synonym: "log.message.format.version",
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        broker_synonym: "log.cleaner.max.compaction.lag.ms",
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_synonym: "log.message.timestamp.type",
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_synonym: "log.cleaner.min.cleanable.ratio",
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        broker_synonym: "log.cleaner.min.compaction.lag.ms",
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_synonym: "min.insync.replicas",
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_synonym: "log.retention.bytes",
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_synonym: "log.retention.ms",
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_synonym: "log.segment.bytes",
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_synonym: "log.roll.ms",
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        broker_synonym: "unclean.leader.election.enable",
    },
];

/// The definition of topic key `name`.
pub fn topic_config_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIG_DEFS.iter().find(|def| def.name == name)
}

/// Why a topic config was refused; `Display` is the Kafka error message (INVALID_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicConfigError {
    /// Not a key we implement.
    #[error("Unknown topic config name: {0}")]
    UnknownKey(String),
    /// A value of the wrong kind or out of range.
    #[error("Invalid value {value} for configuration {key}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A key given no value (null) where a value is needed.
    #[error("Null value not supported for topic configs: {0}")]
    NullValue(String),
}

/// Checks one override.
pub fn check_topic_config(key: &str, value: &str) -> Result<(), TopicConfigError> {
    let def = topic_config_def(key).ok_or_else(|| TopicConfigError::UnknownKey(key.to_string()))?;
    def.kind()
        .check(value)
        .map_err(|reason| TopicConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        })
}

/// Checks a set of overrides.
pub fn check_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), TopicConfigError> {
    configs
        .iter()
        .try_for_each(|(key, value)| check_topic_config(key, value))
}

/// Where an effective value came from, in DescribeConfigs' terms (Kafka's `ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicValueSource {
    /// The topic overrides it (TOPIC_CONFIG, 1).
    Topic,
    /// A dynamic setting of this broker (DYNAMIC_BROKER_CONFIG, 2).
    DynamicBroker,
    /// A dynamic cluster-wide default (DYNAMIC_DEFAULT_BROKER_CONFIG, 3).
    DynamicDefault,
    /// The config file or a flag (STATIC_BROKER_CONFIG, 4).
    StaticBroker,
    /// The embedded default (DEFAULT_CONFIG, 5).
    Default,
}

impl TopicValueSource {
    /// Kafka's `ConfigSource` code.
    pub fn kafka_code(self) -> i8 {
        match self {
            TopicValueSource::Topic => 1,
            TopicValueSource::DynamicBroker => 2,
            TopicValueSource::DynamicDefault => 3,
            TopicValueSource::StaticBroker => 4,
            TopicValueSource::Default => 5,
        }
    }
}

/// The broker-level values a topic falls back to: dynamic settings of this broker, then
/// dynamic cluster-wide defaults (both altered at runtime and kept in the metadata image),
/// then the static configuration.
#[derive(Debug, Clone, Copy)]
pub struct BrokerValues<'a> {
    /// The static configuration (file, flags, embedded defaults).
    pub config: &'a Config,
    /// Dynamic cluster-wide defaults (AlterConfigs on the BROKER resource named "").
    pub cluster: &'a BTreeMap<String, String>,
    /// Dynamic settings of this broker (AlterConfigs on the BROKER resource named by node id).
    pub node: &'a BTreeMap<String, String>,
}

/// Broker settings Kafka also reads from lower-precedence keys in other units: the setting,
/// then its chain of keys with the milliseconds in one unit of each. The first key of the
/// chain set in any source wins (`log.retention.ms`, else `log.retention.minutes`, else
/// `log.retention.hours`, whose default applies last); a negative retention means none (-1).
pub const UNIT_SYNONYMS: &[(&str, &[(&str, i64)])] = &[
    (
        "log.retention.ms",
        &[
            ("log.retention.ms", 1),
            ("log.retention.minutes", 60_000),
            ("log.retention.hours", 3_600_000),
        ],
    ),
    (
        "log.roll.ms",
        &[("log.roll.ms", 1), ("log.roll.hours", 3_600_000)],
    ),
];

/// One source of a broker setting, as DescribeConfigs lists synonyms: the key it was set
/// under (a key of the setting's `UNIT_SYNONYMS` chain, in that key's unit), the value and
/// where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSynonym {
    /// The key.
    pub name: &'static str,
    /// The value, as set.
    pub value: String,
    /// Where it was set.
    pub source: TopicValueSource,
}

/// The keys that set broker setting `key`, highest precedence first, with their unit in ms.
fn synonym_chain(key: &str) -> Vec<(&'static str, i64)> {
    match UNIT_SYNONYMS.iter().find(|(head, _)| *head == key) {
        Some((_, chain)) => chain.to_vec(),
        None => config_def(key)
            .map(|d| vec![(d.name, 1)])
            .unwrap_or_default(),
    }
}

impl BrokerValues<'_> {
    /// The effective value of broker setting `key` and where it came from (for a setting of
    /// `UNIT_SYNONYMS`, converted to the setting's unit). Every source stacked under it,
    /// highest first, is listed by `synonyms`.
    pub fn get(&self, key: &str) -> (String, TopicValueSource) {
        let first = self
            .synonyms(key)
            .into_iter()
            .next()
            .expect("every broker setting has at least its default");
        let scale = synonym_chain(key)
            .into_iter()
            .find(|&(name, _)| name == first.name)
            .map_or(1, |(_, scale)| scale);
        if scale == 1 {
            return (first.value, first.source);
        }
        match first.value.trim().parse::<i64>() {
            Ok(v) if v < 0 => ("-1".to_string(), first.source),
            Ok(v) => (v.saturating_mul(scale).to_string(), first.source),
            // Checked when it was set; passed on as it is if it ever were not a number.
            Err(_) => (first.value, first.source),
        }
    }

    /// Every source that sets broker setting `key`, highest precedence first: for each key of
    /// its chain, this broker's dynamic value, the dynamic cluster default, the static value,
    /// then the embedded default (a default that is empty, as Kafka's null, is left out unless
    /// it is the chain's last word).
    pub fn synonyms(&self, key: &str) -> Vec<BrokerSynonym> {
        let chain = synonym_chain(key);
        let mut found = Vec::new();
        for (i, &(name, _)) in chain.iter().enumerate() {
            let mut push = |value: &str, source| {
                found.push(BrokerSynonym {
                    name,
                    value: value.to_string(),
                    source,
                })
            };
            if let Some(value) = self.node.get(name) {
                push(value, TopicValueSource::DynamicBroker);
            }
            if let Some(value) = self.cluster.get(name) {
                push(value, TopicValueSource::DynamicDefault);
            }
            let entry = &self.config.entries[name];
            if entry.source == ConfigSource::Static {
                push(&entry.value, TopicValueSource::StaticBroker);
            }
            let default = config_def(name).map_or("", |d| d.default);
            if !default.is_empty() || i + 1 == chain.len() {
                push(default, TopicValueSource::Default);
            }
        }
        found
    }
}

/// Whether broker setting `key` may be changed while the broker runs: the broker-wide
/// defaults of topic configs may, as in Kafka; the rest (addresses, directories, cores) may not.
pub fn is_dynamic_broker_config(key: &str) -> bool {
    TOPIC_CONFIG_DEFS
        .iter()
        .any(|def| def.broker_synonym == key)
}

/// One resolved topic config, for DescribeConfigs.
#[derive(Debug, Clone)]
pub struct ResolvedTopicConfig {
    /// The definition.
    pub def: &'static TopicConfigDef,
    /// The effective value.
    pub value: String,
    /// Where it came from.
    pub source: TopicValueSource,
}

/// Every topic key with its effective value for a topic with `overrides`.
pub fn resolve_all(
    overrides: &BTreeMap<String, String>,
    broker: &BrokerValues<'_>,
) -> Vec<ResolvedTopicConfig> {
    TOPIC_CONFIG_DEFS
        .iter()
        .map(|def| match overrides.get(def.name) {
            Some(value) => ResolvedTopicConfig {
                def,
                value: value.clone(),
                source: TopicValueSource::Topic,
            },
            None => {
                let (value, source) = broker.get(def.broker_synonym);
                ResolvedTopicConfig { def, value, source }
            }
        })
        .collect()
}

/// The typed settings a partition of a topic runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    /// `cleanup.policy` includes `delete`: retention deletes old segments.
    pub cleanup_delete: bool,
    /// `cleanup.policy` includes `compact`.
    pub cleanup_compact: bool,
    /// `flush.messages`: 1 syncs every append.
    pub flush_messages: i64,
    /// `flush.ms`.
    pub flush_ms: i64,
    /// `index.interval.bytes`.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`.
    pub max_message_bytes: u32,
    /// `message.timestamp.type` is LogAppendTime.
    pub log_append_time: bool,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i32,
    /// `retention.bytes`, -1 for none.
    pub retention_bytes: i64,
    /// `retention.ms`, -1 for none.
    pub retention_ms: i64,
    /// `segment.bytes`.
    pub segment_bytes: u32,
    /// `segment.ms`.
    pub segment_ms: i64,
    /// What the log cleaner runs with when `cleanup_compact`.
    pub compaction: CompactionSettings,
}

/// The topic configs of the log cleaner (`storage::cleaner`).
#[derive(Debug, Clone, Copy)]
pub struct CompactionSettings {
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
}

impl PartialEq for CompactionSettings {
    fn eq(&self, other: &Self) -> bool {
        self.min_cleanable_dirty_ratio.to_bits() == other.min_cleanable_dirty_ratio.to_bits()
            && self.delete_retention_ms == other.delete_retention_ms
            && self.min_compaction_lag_ms == other.min_compaction_lag_ms
            && self.max_compaction_lag_ms == other.max_compaction_lag_ms
    }
}

impl Eq for CompactionSettings {}

/// Resolves a topic's settings. Values were checked when they were stored, so parsing here
/// cannot fail; an unparsable value would be a bug in the checks, hence the assertions.
pub fn resolve(overrides: &BTreeMap<String, String>, broker: &BrokerValues<'_>) -> TopicSettings {
    let values: BTreeMap<&str, String> = resolve_all(overrides, broker)
        .into_iter()
        .map(|r| (r.def.name, r.value))
        .collect();
    let long = |key: &str| -> i64 {
        values[key]
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key} was checked when stored"))
    };
    let policy = &values["cleanup.policy"];
    TopicSettings {
        cleanup_delete: policy.split(',').any(|p| p.trim() == "delete"),
        cleanup_compact: policy.split(',').any(|p| p.trim() == "compact"),
        flush_messages: long("flush.messages"),
        flush_ms: long("flush.ms"),
        index_interval_bytes: long("index.interval.bytes") as u32,
        max_message_bytes: long("max.message.bytes") as u32,
        log_append_time: values["message.timestamp.type"] == "LogAppendTime",
        min_insync_replicas: long("min.insync.replicas") as i32,
        retention_bytes: long("retention.bytes"),
        retention_ms: long("retention.ms"),
        segment_bytes: long("segment.bytes") as u32,
        segment_ms: long("segment.ms"),
        compaction: CompactionSettings {
            min_cleanable_dirty_ratio: values["min.cleanable.dirty.ratio"]
                .trim()
                .parse()
                .expect("min.cleanable.dirty.ratio was checked when stored"),
            delete_retention_ms: long("delete.retention.ms"),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
            max_compaction_lag_ms: long("max.compaction.lag.ms"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_key_has_a_broker_synonym() {
        for def in TOPIC_CONFIG_DEFS {
            assert!(config_def(def.broker_synonym).is_some(), "{}", def.name);
        }
    }

    #[test]
    fn defaults_resolve_from_the_broker_and_overrides_win() {
        let config =
            Config::build(&[("log.retention.ms".to_string(), "1000".to_string())]).unwrap();
        let none = BTreeMap::new();
        let broker = BrokerValues {
            config: &config,
            cluster: &none,
            node: &none,
        };
        let settings = resolve(&none, &broker);
        assert_eq!(settings.retention_ms, 1000);
        assert_eq!(settings.segment_bytes, 1 << 30);
        assert_eq!(settings.flush_messages, 1);
        assert!(settings.cleanup_delete && !settings.cleanup_compact);
        let sources: BTreeMap<_, _> = resolve_all(&none, &broker)
            .into_iter()
            .map(|r| (r.def.name, r.source))
            .collect();
        assert_eq!(sources["retention.ms"], TopicValueSource::StaticBroker);
        assert_eq!(sources["segment.bytes"], TopicValueSource::Default);

        let overrides = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            (
                "message.timestamp.type".to_string(),
                "LogAppendTime".to_string(),
            ),
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
        ]);
        let settings = resolve(&overrides, &broker);
        assert_eq!(settings.retention_ms, -1);
        // Dynamic broker values sit between the topic's overrides and the static config.
        let cluster = BTreeMap::from([("log.segment.bytes".to_string(), "2048000".to_string())]);
        let node = BTreeMap::from([("log.retention.ms".to_string(), "5".to_string())]);
        let dynamic = BrokerValues {
            config: &config,
            cluster: &cluster,
            node: &node,
        };
        let dynamic_settings = resolve(&none, &dynamic);
        assert_eq!(
            (
                dynamic_settings.retention_ms,
                dynamic_settings.segment_bytes
            ),
            (5, 2048000)
        );
        assert_eq!(
            dynamic.get("log.segment.bytes").1,
            TopicValueSource::DynamicDefault
        );
        assert_eq!(dynamic.synonyms("log.retention.ms").len(), 3);
        // Kafka's unit synonyms: ms wins, then minutes, then hours (default 168).
        let hours = Config::build(&[
            ("log.retention.hours".to_string(), "2".to_string()),
            ("log.roll.hours".to_string(), "1".to_string()),
        ])
        .unwrap();
        let by_hours = BrokerValues {
            config: &hours,
            cluster: &none,
            node: &none,
        };
        assert_eq!(
            by_hours.get("log.retention.ms"),
            ("7200000".to_string(), TopicValueSource::StaticBroker)
        );
        assert_eq!(resolve(&none, &by_hours).segment_ms, 3_600_000);
        let names: Vec<_> = by_hours
            .synonyms("log.retention.ms")
            .into_iter()
            .map(|s| (s.name, s.value, s.source))
            .collect();
        assert_eq!(
            names,
            vec![
                (
                    "log.retention.hours",
                    "2".to_string(),
                    TopicValueSource::StaticBroker
                ),
                (
                    "log.retention.hours",
                    "168".to_string(),
                    TopicValueSource::Default
                ),
            ]
        );
        let minutes = BTreeMap::from([("log.retention.minutes".to_string(), "-5".to_string())]);
        let by_minutes = BrokerValues {
            config: &hours,
            cluster: &none,
            node: &minutes,
        };
        assert_eq!(by_minutes.get("log.retention.ms").0, "-1");
        let defaults = Config::defaults();
        let plain = BrokerValues {
            config: &defaults,
            cluster: &none,
            node: &none,
        };
        assert_eq!(
            plain.get("log.retention.ms"),
            ("604800000".to_string(), TopicValueSource::Default)
        );
        assert!(settings.log_append_time);
        assert!(settings.cleanup_compact && settings.cleanup_delete);
    }

    #[test]
    fn checks_name_the_key_in_kafkas_words() {
        assert_eq!(
            check_topic_config("retention.ms", "-5")
                .unwrap_err()
                .to_string(),
            "Invalid value -5 for configuration retention.ms: must be between -1 and 9223372036854775807"
        );
        assert_eq!(
            check_topic_config("no.such", "1").unwrap_err().to_string(),
            "Unknown topic config name: no.such"
        );
        assert!(check_topic_config("segment.bytes", "13").is_err());
        assert!(check_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(check_topic_config("message.format.version", "0.10.2").is_ok());
        assert_eq!(
            check_topic_config("message.format.version", "9.9")
                .unwrap_err()
                .to_string(),
            "Invalid value 9.9 for configuration message.format.version: Version 9.9 is not a valid version"
        );
        // Kafka 3.9 honours these, the broker does not implement them: refused, not ignored.
        for key in [
            "message.downconversion.enable",
            "message.timestamp.difference.max.ms",
        ] {
            assert!(matches!(
                check_topic_config(key, "1"),
                Err(TopicConfigError::UnknownKey(_))
            ));
        }
    }
}
