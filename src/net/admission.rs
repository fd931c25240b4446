//! Connection admission: how many connections the broker, and each client address, may hold.
//!
//! Owner: one `Admission` per broker, created before the shards start and shared by every
//! shard's accept loop (`Arc`). Each accepted connection takes a `ConnectionPass` and gives it
//! back when it closes, on whichever shard it lives.
//!
//! Why a lock here, against DESIGN §1's "no Mutex": connections land on shards by the kernel's
//! SO_REUSEPORT hash, so a per-address count split per shard would refuse a client that is
//! under its limit broker-wide. The lock is taken twice per connection (accept and close),
//! never on a request path, and never held across an `.await`.
//!
//! Kafka's rules (`max.connections`, `max.connections.per.ip`,
//! `max.connections.per.ip.overrides`): past the per-address limit a new connection is closed at
//! once; at the broker-wide limit the listeners stop accepting until a connection closes, so new
//! clients wait in the kernel's backlog. The broker-wide limit is also capped below the process's
//! open-file limit, keeping descriptors for the logs: a connection storm must not leave a
//! partition unable to open its next segment.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::Config;

/// Descriptors kept back from connections for log segments, indexes and the metadata log: a
/// quarter of the open-file limit, at least this many.
const DESCRIPTORS_RESERVED_MIN: u64 = 256;

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The broker holds `max.connections` already.
    #[error("the broker holds its maximum of {limit} connections")]
    BrokerFull {
        /// The effective limit.
        limit: u32,
    },
    /// This address holds its limit already.
    #[error("{ip} holds its maximum of {limit} connections (max.connections.per.ip)")]
    AddressFull {
        /// The client address.
        ip: IpAddr,
        /// Its limit.
        limit: u32,
    },
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

/// The broker's connection counts and limits. See the module documentation.
#[derive(Debug)]
pub struct Admission {
    max_connections: u32,
    max_per_ip: u32,
    overrides: HashMap<IpAddr, u32>,
    counts: Mutex<Counts>,
}

impl Admission {
    /// Limits from `config`, with `max.connections` capped by `open_files_limit` (the soft
    /// RLIMIT_NOFILE; `None` when unknown or unlimited).
    pub fn new(config: &Config, open_files_limit: Option<u64>) -> Arc<Admission> {
        let mut max_connections = config.max_connections;
        if let Some(files) = open_files_limit {
            let reserved = (files / 4).max(DESCRIPTORS_RESERVED_MIN);
            let cap = files.saturating_sub(reserved).max(1);
            max_connections = max_connections.min(u32::try_from(cap).unwrap_or(u32::MAX));
        }
        Arc::new(Admission {
            max_connections,
            max_per_ip: config.max_connections_per_ip,
            overrides: config
                .max_connections_per_ip_overrides
                .iter()
                .copied()
                .collect(),
            counts: Mutex::new(Counts::default()),
        })
    }

    /// The broker-wide limit in force (`max.connections`, capped by the open-file limit).
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// Whether the broker holds its broker-wide maximum: the accept loops wait while it does.
    pub fn is_full(&self) -> bool {
        self.counts().total >= self.max_connections
    }

    /// Connections open now, broker-wide.
    pub fn open(&self) -> u32 {
        self.counts().total
    }

    /// Takes a place for a connection from `ip`, or says why there is none.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnectionPass, Refusal> {
        let mut counts = self.counts();
        if counts.total >= self.max_connections {
            return Err(Refusal::BrokerFull {
                limit: self.max_connections,
            });
        }
        if let Some(ip) = ip {
            let limit = self.limit_for(ip);
            let held = counts.per_ip.get(&ip).copied().unwrap_or(0);
            if held >= limit {
                return Err(Refusal::AddressFull { ip, limit });
            }
            counts.per_ip.insert(ip, held + 1);
        }
        counts.total += 1;
        Ok(ConnectionPass {
            admission: self.clone(),
            ip,
        })
    }

    fn limit_for(&self, ip: IpAddr) -> u32 {
        self.overrides.get(&ip).copied().unwrap_or(self.max_per_ip)
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // A panic while holding the lock cannot leave the counts half-updated (each update is
        // one statement), so a poisoned lock is still consistent.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn release(&self, ip: Option<IpAddr>) {
        let mut counts = self.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = ip
            && let Some(held) = counts.per_ip.get_mut(&ip)
        {
            *held -= 1;
            if *held == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

/// One admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionPass {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionPass {
    fn drop(&mut self) {
        self.admission.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::build(&pairs).unwrap()
    }

    #[test]
    fn per_address_limits_and_overrides() {
        let admission = Admission::new(
            &config(&[
                ("max.connections.per.ip", "2"),
                (
                    "max.connections.per.ip.overrides",
                    "127.0.0.9:0,127.0.0.8:3",
                ),
            ]),
            None,
        );
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let first = admission.admit(Some(a)).unwrap();
        let _second = admission.admit(Some(a)).unwrap();
        assert_eq!(
            admission.admit(Some(a)).unwrap_err(),
            Refusal::AddressFull { ip: a, limit: 2 }
        );
        drop(first);
        let _third = admission.admit(Some(a)).unwrap();
        let blocked: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(admission.admit(Some(blocked)).is_err());
        let roomy: IpAddr = "127.0.0.8".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| admission.admit(Some(roomy)).unwrap())
            .collect();
        assert!(admission.admit(Some(roomy)).is_err());
        assert_eq!(admission.open(), 5);
        drop(held);
        assert_eq!(admission.open(), 2);
    }

    #[test]
    fn broker_limit_is_capped_by_open_files() {
        let admission = Admission::new(&config(&[("max.connections", "3")]), None);
        let held: Vec<_> = (0..3).map(|_| admission.admit(None).unwrap()).collect();
        assert!(admission.is_full());
        assert_eq!(
            admission.admit(None).unwrap_err(),
            Refusal::BrokerFull { limit: 3 }
        );
        drop(held);
        assert!(!admission.is_full());

        let capped = Admission::new(&config(&[]), Some(20_000));
        assert_eq!(capped.max_connections(), 15_000);
        let tiny = Admission::new(&config(&[]), Some(100));
        assert_eq!(tiny.max_connections(), 1);
    }

    #[test]
    fn overrides_that_do_not_parse_are_refused() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:x",
            "127.0.0.1:-1",
            "no.such.host.invalid:3",
        ] {
            let pairs = vec![(
                "max.connections.per.ip.overrides".to_string(),
                bad.to_string(),
            )];
            let err = Config::build(&pairs).unwrap_err().to_string();
            assert!(
                err.contains("max.connections.per.ip.overrides"),
                "{bad}: {err}"
            );
        }
    }
}
