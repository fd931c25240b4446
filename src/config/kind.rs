//! What kind of value a setting takes, and the one check every source of values goes through
//! (the config file, `--set`, CreateTopics, AlterConfigs).

/// See the module documentation.
#[derive(Debug, Clone, Copy)]
pub enum ValueKind {
    /// A 32-bit integer within bounds.
    Int {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A 64-bit integer within bounds.
    Long {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A 16-bit integer within bounds.
    Short {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A 64-bit float within bounds (Kafka's DOUBLE).
    Double {
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// `true` or `false`.
    Bool,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A comma-separated, non-empty list of words from a fixed set.
    List(&'static [&'static str]),
    /// Free text, checked elsewhere (addresses, paths, filters).
    Text,
    /// A secret (Kafka's PASSWORD: keys, key passwords): free text that DescribeConfigs
    /// reports as sensitive, with a null value, and that no log line carries.
    Password,
    /// A Kafka release or inter-broker protocol version as Kafka 3.9 parses one
    /// (`message.format.version`): `3.0`, `3.0-IV1`, `2.8.1`, `0.10.2`, ...
    KafkaVersion,
}

/// Kafka's releases up to 3.9 with the number of internal versions (`-IV0`, ...) each has;
/// 0 for the releases before internal versions existed.
const KAFKA_RELEASES: &[(&str, u8)] = &[
    ("0.8.0", 0),
    ("0.8.1", 0),
    ("0.8.2", 0),
    ("0.9.0", 0),
    ("0.10.0", 2),
    ("0.10.1", 3),
    ("0.10.2", 1),
    ("0.11.0", 3),
    ("1.0", 1),
    ("1.1", 1),
    ("2.0", 2),
    ("2.1", 3),
    ("2.2", 2),
    ("2.3", 2),
    ("2.4", 2),
    ("2.5", 1),
    ("2.6", 1),
    ("2.7", 3),
    ("2.8", 2),
    ("3.0", 2),
    ("3.1", 1),
    ("3.2", 1),
    ("3.3", 4),
    ("3.4", 1),
    ("3.5", 3),
    ("3.6", 3),
    ("3.7", 5),
    ("3.8", 1),
    ("3.9", 1),
];

/// Whether Kafka 3.9 reads `value` as a version: a release (`3.0`; a longer one is cut to its
/// release, `2.8.1` to `2.8`, `0.10.2.1` to `0.10.2`) or a release with one of its internal
/// versions (`3.0-IV1`).
fn is_kafka_version(value: &str) -> bool {
    let segments: Vec<&str> = value.split('.').collect();
    let wanted = if value.starts_with("0.") { 3 } else { 2 };
    let key = if segments.len() <= wanted {
        value.to_string()
    } else {
        segments[..wanted].join(".")
    };
    let (release, internal) = match key.split_once("-IV") {
        Some((release, iv)) => (release, Some(iv)),
        None => (key.as_str(), None),
    };
    KAFKA_RELEASES.iter().any(|&(name, ivs)| {
        name == release
            && match internal {
                None => true,
                Some(iv) => iv
                    .parse::<u8>()
                    .is_ok_and(|n| n < ivs && n.to_string() == iv),
            }
    })
}

/// Kafka's `ConfigType` codes, reported by DescribeConfigs v3+.
mod config_type {
    pub const BOOLEAN: i8 = 1;
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const SHORT: i8 = 4;
    pub const LONG: i8 = 5;
    pub const DOUBLE: i8 = 6;
    pub const LIST: i8 = 7;
    pub const PASSWORD: i8 = 9;
}

impl ValueKind {
    /// A non-negative 32-bit integer.
    pub const NON_NEGATIVE_INT: ValueKind = ValueKind::Int {
        min: 0,
        max: i32::MAX as i64,
    };

    /// Checks `value`; the error says why in words fit for a Kafka error message.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let value = value.trim();
        match *self {
            ValueKind::Int { min, max }
            | ValueKind::Long { min, max }
            | ValueKind::Short { min, max } => {
                let parsed: i64 = value
                    .parse()
                    .map_err(|_| "expected an integer".to_string())?;
                if parsed < min || parsed > max {
                    return Err(format!("must be between {min} and {max}"));
                }
                Ok(())
            }
            ValueKind::Double { min, max } => {
                let parsed: f64 = value.parse().map_err(|_| "expected a number".to_string())?;
                if !(min..=max).contains(&parsed) {
                    return Err(format!("must be between {min} and {max}"));
                }
                Ok(())
            }
            ValueKind::Bool => match value {
                "true" | "false" => Ok(()),
                _ => Err("expected true or false".to_string()),
            },
            ValueKind::Choice(words) => {
                if words.contains(&value) {
                    Ok(())
                } else {
                    Err(format!("expected one of {}", words.join(", ")))
                }
            }
            ValueKind::List(words) => {
                let items: Vec<&str> = value.split(',').map(str::trim).collect();
                if items.iter().all(|i| words.contains(i)) && !value.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "expected a comma-separated list of {}",
                        words.join(", ")
                    ))
                }
            }
            ValueKind::Text | ValueKind::Password => Ok(()),
            ValueKind::KafkaVersion => {
                if is_kafka_version(value) {
                    Ok(())
                } else {
                    Err(format!("Version {value} is not a valid version"))
                }
            }
        }
    }

    /// The Kafka `ConfigType` code.
    pub fn kafka_type(&self) -> i8 {
        match self {
            ValueKind::Int { .. } => config_type::INT,
            ValueKind::Long { .. } => config_type::LONG,
            ValueKind::Short { .. } => config_type::SHORT,
            ValueKind::Double { .. } => config_type::DOUBLE,
            ValueKind::Bool => config_type::BOOLEAN,
            ValueKind::Choice(_) | ValueKind::Text | ValueKind::KafkaVersion => config_type::STRING,
            ValueKind::List(_) => config_type::LIST,
            ValueKind::Password => config_type::PASSWORD,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        let long = ValueKind::Long {
            min: -1,
            max: i64::MAX,
        };
        assert!(long.check("-1").is_ok());
        assert!(long.check("-2").is_err());
        assert!(long.check("9223372036854775807").is_ok());
        assert!(long.check("x").is_err());
        assert!(ValueKind::Bool.check("true").is_ok());
        assert!(ValueKind::Bool.check("yes").is_err());
        let policy = ValueKind::List(&["delete", "compact"]);
        assert!(policy.check("delete").is_ok());
        assert!(policy.check("compact,delete").is_ok());
        assert!(policy.check("").is_err());
        assert!(policy.check("remove").is_err());
        let kind = ValueKind::Choice(&["CreateTime", "LogAppendTime"]);
        assert!(kind.check("LogAppendTime").is_ok());
        assert!(kind.check("logappendtime").is_err());
        for good in [
            "3.0", "3.0-IV1", "2.8.1", "0.10.2", "0.10.2.1", "0.8.0", "3.9-IV0", "1.0",
        ] {
            assert!(ValueKind::KafkaVersion.check(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "3",
            "4.0",
            "3.0-IV2",
            "0.10",
            "0.8.0-IV0",
            "x.y",
            "3.0-IV",
            "2.8-IV+1",
            "2.8-IV01",
        ] {
            assert!(ValueKind::KafkaVersion.check(bad).is_err(), "{bad}");
        }
    }
}
