//! raft-rs logs through `slog`; this drain forwards its records to `tracing`, so the quorum's
//! elections and term changes appear in the broker's log with the same filter and format.
//!
//! Owner: one `slog::Logger` per quorum node, made on shard 0 when the node starts. Pure: it
//! formats a record's message and key-values into one event and returns.

use std::fmt::Write as _;

use slog::{Drain, KV, Level, OwnedKVList, Record};

/// A `slog` drain that writes each record as one `tracing` event (target `raft`).
#[derive(Debug)]
pub struct TracingDrain;

/// Collects a record's key-values as `key=value` pairs.
struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{key}={value}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut pairs = Pairs(String::new());
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let message = record.msg();
        let fields = pairs.0;
        match record.level() {
            Level::Critical | Level::Error => {
                tracing::error!(target: "raft", %fields, "{message}")
            }
            Level::Warning => tracing::warn!(target: "raft", %fields, "{message}"),
            Level::Info => tracing::info!(target: "raft", %fields, "{message}"),
            Level::Debug => tracing::debug!(target: "raft", %fields, "{message}"),
            Level::Trace => tracing::trace!(target: "raft", %fields, "{message}"),
        }
        Ok(())
    }
}

/// A logger for the quorum node `node_id`.
pub fn logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("raft_id" => node_id))
}
