//! The durable log of the controller quorum: Raft entries, hard state (term, vote, commit),
//! voter set and the latest snapshot, in files of our own checksummed format, served to raft-rs
//! through its `Storage` trait.
//!
//! Owner: shard 0's quorum driver, the only reader and writer; raft-rs holds the `RaftLog` inside
//! its `RawNode` and the driver reaches it through `RawNode::mut_store`. Opened before the shard
//! serves (a damaged log stops the node at start with one line). Nothing here awaits: writes
//! are plain file writes and `sync` is an fdatasync, which the driver calls before it sends the
//! messages or acknowledges the proposals that depend on it (Raft's persistence rule).
//!
//! Layout under `<data_dir>/__cluster_metadata/`:
//!
//! ```text
//! raft.log        records: [u32 body length][u32 crc32c of body][body], all big-endian
//! raft.snapshot   [8-byte magic][u32 crc32c of rest][u64 index][u64 term][voters][data]
//! ```
//!
//! A record body starts with its kind: an entry (index, term, data, context), the hard state,
//! the voter set, or the compaction point (entries up to it live in the snapshot). Replaying
//! the records in order rebuilds the state; an entry at an index the log already holds replaces
//! it and everything after it (Raft's conflict rule). A log is compacted by writing a new file
//! (compaction point, hard state, voters, remaining entries) beside it and renaming it over the
//! old one, so a crash leaves either the old or the new file.
//!
//! Recovery follows the rule of the partition logs and the metadata log: the first record that
//! is cut short, fails its CRC or does not fit the log before it ends the log, and the file is
//! truncated there. Such a record was never synced, so nothing acknowledged is lost.
//!
//! Every length read from disk is checked against the bytes present and against
//! `limits::RAFT_RECORD_BYTES_MAX` / `QUORUM_VOTERS_MAX` before anything is allocated.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use tracing::warn;

use crate::limits;

const LOG_FILE: &str = "raft.log";
const LOG_TMP_FILE: &str = "raft.log.tmp";
const SNAPSHOT_FILE: &str = "raft.snapshot";
const SNAPSHOT_TMP_FILE: &str = "raft.snapshot.tmp";
const SNAPSHOT_MAGIC: &[u8; 8] = b"RBSNAP01";

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_VOTERS: u8 = 3;
const KIND_COMPACTED: u8 = 4;

const RECORD_HEADER_BYTES: usize = 8;

/// A failure to read or write the quorum's log. `Display` is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The snapshot file is damaged (it is written atomically, so this is not a torn write).
    #[error("{path}: {reason}")]
    CorruptSnapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An entry to append cannot be stored (a configuration-change entry, or one too large).
    #[error("entry {index} cannot be stored: {reason}")]
    BadEntry {
        /// Its index.
        index: u64,
        /// Why.
        reason: String,
    },
}

/// One decoded record of `raft.log`.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    /// A Raft entry.
    Entry(Entry),
    /// The hard state as of this point.
    HardState(HardState),
    /// The voter set as of this point.
    Voters(Vec<u64>),
    /// Entries up to `index` (of `term`) are in the snapshot.
    Compacted {
        /// Last index the snapshot holds.
        index: u64,
        /// Its term.
        term: u64,
    },
}

/// What a scan of `raft.log` found: the valid records and where they end.
#[derive(Debug, Default)]
pub struct Scan {
    /// The records before the first invalid one.
    pub records: Vec<LogRecord>,
    /// Bytes of the file they take; anything after is cut.
    pub valid_bytes: usize,
    /// Why the scan stopped early, if it did.
    pub stopped: Option<String>,
}

/// Reads the records of a `raft.log` image. Never fails: the first record that is cut short,
/// fails its CRC or does not decode ends the scan (`stopped` says why).
pub fn scan(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < RECORD_HEADER_BYTES {
            scan.stopped = Some(format!("record header cut short at byte {at}"));
            break;
        }
        let body_len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
        if body_len == 0 || body_len > limits::RAFT_RECORD_BYTES_MAX {
            scan.stopped = Some(format!("record at byte {at} claims {body_len} bytes"));
            break;
        }
        if rest.len() - RECORD_HEADER_BYTES < body_len {
            scan.stopped = Some(format!("record at byte {at} cut short"));
            break;
        }
        let body = &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + body_len];
        if crc32c::crc32c(body) != crc {
            scan.stopped = Some(format!("record at byte {at} fails its CRC"));
            break;
        }
        match decode_body(body) {
            Ok(record) => scan.records.push(record),
            Err(reason) => {
                scan.stopped = Some(format!("record at byte {at}: {reason}"));
                break;
            }
        }
        at += RECORD_HEADER_BYTES + body_len;
        scan.valid_bytes = at;
    }
    scan
}

/// A cursor over a record body; every read is checked against the bytes left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!("needs {n} bytes, {} left", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn sized(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn ids(&mut self) -> Result<Vec<u64>, String> {
        let count = self.u32()? as usize;
        if count > limits::QUORUM_VOTERS_MAX {
            return Err(format!(
                "{count} voters, at most {}",
                limits::QUORUM_VOTERS_MAX
            ));
        }
        (0..count).map(|_| self.u64()).collect()
    }

    fn end(&self) -> Result<(), String> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the record's fields")),
        }
    }
}

fn decode_body(body: &[u8]) -> Result<LogRecord, String> {
    let mut r = Reader { bytes: body };
    let record = match r.u8()? {
        KIND_ENTRY => {
            let index = r.u64()?;
            let term = r.u64()?;
            let entry_type = match r.u8()? {
                0 => EntryType::EntryNormal,
                other => return Err(format!("entry type {other} is not stored here")),
            };
            if index == 0 {
                return Err("entry index 0".to_string());
            }
            LogRecord::Entry(Entry {
                index,
                term,
                entry_type,
                data: Bytes::copy_from_slice(r.sized()?),
                context: Bytes::copy_from_slice(r.sized()?),
                ..Default::default()
            })
        }
        KIND_HARD_STATE => LogRecord::HardState(HardState {
            term: r.u64()?,
            vote: r.u64()?,
            commit: r.u64()?,
            ..Default::default()
        }),
        KIND_VOTERS => LogRecord::Voters(r.ids()?),
        KIND_COMPACTED => LogRecord::Compacted {
            index: r.u64()?,
            term: r.u64()?,
        },
        other => return Err(format!("unknown record kind {other}")),
    };
    r.end()?;
    Ok(record)
}

fn encode_record(record: &LogRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    match record {
        LogRecord::Entry(entry) => {
            out.push(KIND_ENTRY);
            out.extend_from_slice(&entry.index.to_be_bytes());
            out.extend_from_slice(&entry.term.to_be_bytes());
            out.push(0);
            for field in [&entry.data, &entry.context] {
                out.extend_from_slice(&(field.len() as u32).to_be_bytes());
                out.extend_from_slice(field);
            }
        }
        LogRecord::HardState(hard_state) => {
            out.push(KIND_HARD_STATE);
            for value in [hard_state.term, hard_state.vote, hard_state.commit] {
                out.extend_from_slice(&value.to_be_bytes());
            }
        }
        LogRecord::Voters(voters) => {
            out.push(KIND_VOTERS);
            put_ids(out, voters);
        }
        LogRecord::Compacted { index, term } => {
            out.push(KIND_COMPACTED);
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&term.to_be_bytes());
        }
    }
    let body_len = out.len() - start - RECORD_HEADER_BYTES;
    let crc = crc32c::crc32c(&out[start + RECORD_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
}

/// The state a replay of the records builds.
#[derive(Debug, Default, Clone, PartialEq)]
struct State {
    hard_state: HardState,
    voters: Vec<u64>,
    /// Entries up to here are in the snapshot.
    compacted_index: u64,
    compacted_term: u64,
    /// Entries `compacted_index + 1 ..`, contiguous.
    entries: Vec<Entry>,
}

impl State {
    fn last_index(&self) -> u64 {
        self.compacted_index + self.entries.len() as u64
    }

    /// Applies one record; an error means it does not fit the log before it.
    fn apply(&mut self, record: LogRecord) -> Result<(), String> {
        match record {
            LogRecord::Entry(entry) => {
                if entry.index <= self.compacted_index {
                    return Err(format!(
                        "entry {} is at or below the compaction point {}",
                        entry.index, self.compacted_index
                    ));
                }
                if entry.index > self.last_index() + 1 {
                    return Err(format!(
                        "entry {} leaves a gap after {}",
                        entry.index,
                        self.last_index()
                    ));
                }
                let keep = (entry.index - self.compacted_index - 1) as usize;
                self.entries.truncate(keep);
                self.entries.push(entry);
            }
            LogRecord::HardState(hard_state) => self.hard_state = hard_state,
            LogRecord::Voters(voters) => self.voters = voters,
            LogRecord::Compacted { index, term } => {
                if index < self.compacted_index {
                    return Err(format!(
                        "compaction point {index} is behind {}",
                        self.compacted_index
                    ));
                }
                // Keep the entries after the new point if the log holds them.
                if index <= self.last_index() && index > self.compacted_index {
                    let drop = (index - self.compacted_index) as usize;
                    self.entries.drain(..drop);
                } else {
                    self.entries.clear();
                }
                self.compacted_index = index;
                self.compacted_term = term;
            }
        }
        Ok(())
    }
}

/// The quorum's durable log, served to raft-rs as its `Storage`.
#[derive(Debug)]
pub struct RaftLog {
    dir: PathBuf,
    file: File,
    state: State,
    /// The latest snapshot's data (the metadata image as of `compacted_index`), if any.
    snapshot_data: Bytes,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RaftLogError + '_ {
    move |source| RaftLogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl RaftLog {
    /// Opens (or creates) the log under `dir`, cutting a torn tail.
    pub fn open(dir: &Path) -> Result<RaftLog, RaftLogError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut state = State::default();
        let mut snapshot_data = Bytes::new();
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        if snapshot_path.exists() {
            let bytes = fs::read(&snapshot_path).map_err(io_error(&snapshot_path))?;
            let (index, term, voters, data) =
                decode_snapshot(&bytes).map_err(|reason| RaftLogError::CorruptSnapshot {
                    path: snapshot_path.clone(),
                    reason,
                })?;
            state.compacted_index = index;
            state.compacted_term = term;
            state.voters = voters;
            snapshot_data = Bytes::from(data);
        }
        let log_path = dir.join(LOG_FILE);
        let bytes = match fs::read(&log_path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(io_error(&log_path)(err)),
        };
        let mut found = scan(&bytes);
        let mut valid = found.valid_bytes;
        // Replay; a record that does not fit the log before it ends the log like a torn one.
        let mut replayed = 0;
        let mut offset = 0;
        for record in found.records.drain(..) {
            let len = encoded_len(&record);
            if let Err(reason) = state.apply(record) {
                found.stopped = Some(format!("record at byte {offset}: {reason}"));
                valid = offset;
                break;
            }
            offset += len;
            replayed += 1;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&log_path)
            .map_err(io_error(&log_path))?;
        if let Some(reason) = &found.stopped {
            warn!(
                path = %log_path.display(),
                records = replayed,
                cut_bytes = bytes.len() - valid,
                %reason,
                "quorum log: cutting a torn tail"
            );
            file.set_len(valid as u64).map_err(io_error(&log_path))?;
            file.sync_data().map_err(io_error(&log_path))?;
        }
        let mut log = RaftLog {
            dir: dir.to_path_buf(),
            file,
            state,
            snapshot_data,
        };
        log.seek_end()?;
        Ok(log)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn seek_end(&mut self) -> Result<(), RaftLogError> {
        use std::io::Seek;
        let path = self.log_path();
        self.file
            .seek(io::SeekFrom::End(0))
            .map_err(io_error(&path))?;
        Ok(())
    }

    fn write_records(&mut self, records: &[LogRecord]) -> Result<(), RaftLogError> {
        let mut out = Vec::new();
        for record in records {
            encode_record(record, &mut out);
        }
        let path = self.log_path();
        self.file.write_all(&out).map_err(io_error(&path))
    }

    /// Appends `entries` (raft-rs's unstable entries from a `Ready`), replacing any the log
    /// holds at their indexes and after. Not synced until `sync`.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), RaftLogError> {
        let mut records = Vec::with_capacity(entries.len());
        let mut next = self.state.clone();
        for entry in entries {
            if entry.entry_type != EntryType::EntryNormal {
                return Err(RaftLogError::BadEntry {
                    index: entry.index,
                    reason: "configuration-change entries are not used by a static quorum"
                        .to_string(),
                });
            }
            let record = LogRecord::Entry(entry.clone());
            if encoded_len(&record) - RECORD_HEADER_BYTES > limits::RAFT_RECORD_BYTES_MAX {
                return Err(RaftLogError::BadEntry {
                    index: entry.index,
                    reason: format!("larger than {} bytes", limits::RAFT_RECORD_BYTES_MAX),
                });
            }
            next.apply(record.clone())
                .map_err(|reason| RaftLogError::BadEntry {
                    index: entry.index,
                    reason,
                })?;
            records.push(record);
        }
        self.write_records(&records)?;
        self.state = next;
        Ok(())
    }

    /// Records the hard state (term, vote, commit). Not synced until `sync`.
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), RaftLogError> {
        self.write_records(&[LogRecord::HardState(hard_state.clone())])?;
        self.state.hard_state = hard_state;
        Ok(())
    }

    /// Records the commit index (raft-rs reports it alone in a `LightReady`).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), RaftLogError> {
        let mut hard_state = self.state.hard_state.clone();
        hard_state.commit = commit;
        self.set_hard_state(hard_state)
    }

    /// Records the voter set (from `controller.quorum.voters` when the log is new).
    pub fn set_voters(&mut self, voters: &[u64]) -> Result<(), RaftLogError> {
        self.write_records(&[LogRecord::Voters(voters.to_vec())])?;
        self.state.voters = voters.to_vec();
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), RaftLogError> {
        let path = self.log_path();
        self.file.sync_data().map_err(io_error(&path))
    }

    /// The voters, as recorded.
    pub fn voters(&self) -> &[u64] {
        &self.state.voters
    }

    /// The hard state, as recorded.
    pub fn hard_state(&self) -> &HardState {
        &self.state.hard_state
    }

    /// Takes a local snapshot: `data` is the state machine as of `index` (applied), so entries
    /// up to it are dropped. The snapshot file is written first and synced, then the log is
    /// rewritten without them.
    pub fn compact(&mut self, index: u64, data: Bytes) -> Result<(), RaftLogError> {
        if index <= self.state.compacted_index {
            return Ok(());
        }
        let term = self.term_of(index).ok_or_else(|| RaftLogError::BadEntry {
            index,
            reason: format!("not in the log (last index {})", self.state.last_index()),
        })?;
        self.write_snapshot(index, term, &data)?;
        let mut next = self.state.clone();
        next.apply(LogRecord::Compacted { index, term })
            .map_err(|reason| RaftLogError::BadEntry { index, reason })?;
        self.rewrite(next)?;
        self.snapshot_data = data;
        Ok(())
    }

    /// Installs a snapshot received from the leader: the log is replaced by it (entries after
    /// it that agree on its term are kept, as Raft allows).
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), RaftLogError> {
        let metadata = snapshot.get_metadata();
        let (index, term) = (metadata.index, metadata.term);
        if index <= self.state.compacted_index {
            return Ok(());
        }
        let voters = metadata.get_conf_state().voters.clone();
        self.write_snapshot(index, term, &snapshot.data)?;
        let mut next = self.state.clone();
        if self.term_of(index) != Some(term) {
            next.entries.clear();
            next.compacted_index = 0;
        }
        next.apply(LogRecord::Compacted { index, term })
            .map_err(|reason| RaftLogError::BadEntry { index, reason })?;
        next.voters = voters;
        if next.hard_state.commit < index {
            next.hard_state.commit = index;
        }
        self.rewrite(next)?;
        self.snapshot_data = snapshot.data.clone();
        Ok(())
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.state.compacted_index {
            return Some(self.state.compacted_term);
        }
        if index < self.state.compacted_index || index > self.state.last_index() {
            return None;
        }
        Some(self.state.entries[(index - self.state.compacted_index - 1) as usize].term)
    }

    fn write_snapshot(&self, index: u64, term: u64, data: &[u8]) -> Result<(), RaftLogError> {
        let mut rest = Vec::with_capacity(24 + data.len());
        rest.extend_from_slice(&index.to_be_bytes());
        rest.extend_from_slice(&term.to_be_bytes());
        put_ids(&mut rest, &self.state.voters);
        rest.extend_from_slice(data);
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&rest).to_be_bytes());
        bytes.extend_from_slice(&rest);
        replace_file(&self.dir, SNAPSHOT_TMP_FILE, SNAPSHOT_FILE, &bytes)
    }

    /// Writes `state` as a fresh log file and renames it over the current one.
    fn rewrite(&mut self, state: State) -> Result<(), RaftLogError> {
        let mut out = Vec::new();
        encode_record(
            &LogRecord::Compacted {
                index: state.compacted_index,
                term: state.compacted_term,
            },
            &mut out,
        );
        encode_record(&LogRecord::HardState(state.hard_state.clone()), &mut out);
        encode_record(&LogRecord::Voters(state.voters.clone()), &mut out);
        for entry in &state.entries {
            encode_record(&LogRecord::Entry(entry.clone()), &mut out);
        }
        replace_file(&self.dir, LOG_TMP_FILE, LOG_FILE, &out)?;
        let path = self.log_path();
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        self.seek_end()?;
        self.state = state;
        Ok(())
    }
}

fn encoded_len(record: &LogRecord) -> usize {
    RECORD_HEADER_BYTES
        + 1
        + match record {
            LogRecord::Entry(entry) => 8 + 8 + 1 + 4 + entry.data.len() + 4 + entry.context.len(),
            LogRecord::HardState(_) => 24,
            LogRecord::Voters(voters) => 4 + 8 * voters.len(),
            LogRecord::Compacted { .. } => 16,
        }
}

fn decode_snapshot(bytes: &[u8]) -> Result<(u64, u64, Vec<u64>, Vec<u8>), String> {
    let mut r = Reader { bytes };
    if r.take(8)? != SNAPSHOT_MAGIC {
        return Err("not a quorum snapshot (bad magic)".to_string());
    }
    let crc = r.u32()?;
    if crc32c::crc32c(r.bytes) != crc {
        return Err("fails its CRC".to_string());
    }
    let index = r.u64()?;
    let term = r.u64()?;
    let voters = r.ids()?;
    Ok((index, term, voters, r.bytes.to_vec()))
}

/// Writes `bytes` to `tmp`, syncs it, renames it to `name` and syncs the directory.
fn replace_file(dir: &Path, tmp: &str, name: &str, bytes: &[u8]) -> Result<(), RaftLogError> {
    let tmp_path = dir.join(tmp);
    let path = dir.join(name);
    let mut file = File::create(&tmp_path).map_err(io_error(&tmp_path))?;
    file.write_all(bytes).map_err(io_error(&tmp_path))?;
    file.sync_all().map_err(io_error(&tmp_path))?;
    fs::rename(&tmp_path, &path).map_err(io_error(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let conf_state = ConfState {
            voters: self.state.voters.clone(),
            ..Default::default()
        };
        Ok(RaftState::new(self.state.hard_state.clone(), conf_state))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.state.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.state.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.state.compacted_index - 1) as usize;
        let to = (high - self.state.compacted_index - 1) as usize;
        let mut entries = self.state.entries[from..to].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.state.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.state.compacted_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.state.last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.state.compacted_index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut metadata = SnapshotMetadata {
            index: self.state.compacted_index,
            term: self.state.compacted_term,
            ..Default::default()
        };
        metadata.mut_conf_state().voters = self.state.voters.clone();
        let mut snapshot = Snapshot {
            data: self.snapshot_data.clone(),
            ..Default::default()
        };
        snapshot.set_metadata(metadata);
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            data: Bytes::copy_from_slice(data.as_bytes()),
            ..Default::default()
        }
    }

    fn all(log: &RaftLog) -> Vec<(u64, u64, Bytes)> {
        let first = log.first_index().unwrap();
        let last = log.last_index().unwrap();
        log.entries(first, last + 1, None, GetEntriesContext::empty(false))
            .unwrap()
            .into_iter()
            .map(|e| (e.index, e.term, e.data))
            .collect()
    }

    #[test]
    fn entries_hard_state_and_voters_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RaftLog::open(dir.path()).unwrap();
        assert_eq!(
            (log.first_index().unwrap(), log.last_index().unwrap()),
            (1, 0)
        );
        log.set_voters(&[1, 2, 3]).unwrap();
        log.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")])
            .unwrap();
        let hard_state = HardState {
            term: 2,
            vote: 3,
            commit: 2,
            ..Default::default()
        };
        log.set_hard_state(hard_state.clone()).unwrap();
        // A new leader's entries replace the conflicting suffix.
        log.append(&[entry(3, 2, "c2"), entry(4, 2, "d")]).unwrap();
        log.sync().unwrap();
        drop(log);

        let log = RaftLog::open(dir.path()).unwrap();
        let state = log.initial_state().unwrap();
        assert_eq!(state.hard_state, hard_state);
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(
            all(&log),
            vec![
                (1, 1, Bytes::from("a")),
                (2, 1, Bytes::from("b")),
                (3, 2, Bytes::from("c2")),
                (4, 2, Bytes::from("d")),
            ]
        );
        assert_eq!(log.term(3).unwrap(), 2);
        assert!(matches!(
            log.term(9),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
    }

    #[test]
    fn a_torn_tail_is_cut_and_what_came_before_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RaftLog::open(dir.path()).unwrap();
        log.append(&[entry(1, 1, "a"), entry(2, 1, "b")]).unwrap();
        log.sync().unwrap();
        drop(log);
        let path = dir.path().join(LOG_FILE);
        let good = fs::read(&path).unwrap();
        for cut in 1..40 {
            // Append a third record and tear it at every length, and also flip a byte in it.
            let mut extra = Vec::new();
            encode_record(&LogRecord::Entry(entry(3, 1, "cccccccccc")), &mut extra);
            let mut torn = good.clone();
            torn.extend_from_slice(&extra[..cut.min(extra.len() - 1)]);
            fs::write(&path, &torn).unwrap();
            let log = RaftLog::open(dir.path()).unwrap();
            assert_eq!(log.last_index().unwrap(), 2, "cut at {cut}");
            assert_eq!(fs::read(&path).unwrap(), good, "file cut back at {cut}");
            drop(log);
            let mut flipped = good.clone();
            let mut bad = extra.clone();
            let at = cut % bad.len();
            bad[at] ^= 0x40;
            flipped.extend_from_slice(&bad);
            fs::write(&path, &flipped).unwrap();
            let log = RaftLog::open(dir.path()).unwrap();
            assert_eq!(log.last_index().unwrap(), 2, "flip at {at}");
            drop(log);
        }
    }

    #[test]
    fn compaction_keeps_later_entries_and_serves_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RaftLog::open(dir.path()).unwrap();
        log.set_voters(&[1]).unwrap();
        let entries: Vec<_> = (1..=10).map(|i| entry(i, 1, &format!("e{i}"))).collect();
        log.append(&entries).unwrap();
        log.set_commit(8).unwrap();
        log.compact(7, Bytes::from("image@7")).unwrap();
        assert_eq!(log.first_index().unwrap(), 8);
        assert_eq!(log.term(7).unwrap(), 1);
        assert!(matches!(
            log.term(6),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            log.entries(7, 9, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        drop(log);
        let log = RaftLog::open(dir.path()).unwrap();
        assert_eq!(log.first_index().unwrap(), 8);
        assert_eq!(log.last_index().unwrap(), 10);
        assert_eq!(log.hard_state().commit, 8);
        let snapshot = log.snapshot(7, 2).unwrap();
        assert_eq!(snapshot.data, Bytes::from("image@7"));
        assert_eq!(snapshot.get_metadata().index, 7);
        assert_eq!(snapshot.get_metadata().get_conf_state().voters, vec![1]);
        assert!(log.snapshot(9, 2).is_err());
    }

    #[test]
    fn a_leaders_snapshot_replaces_a_diverged_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RaftLog::open(dir.path()).unwrap();
        log.append(&[entry(1, 1, "a"), entry(2, 1, "b")]).unwrap();
        let mut snapshot = Snapshot {
            data: Bytes::from("leader image"),
            ..Default::default()
        };
        snapshot.mut_metadata().index = 5;
        snapshot.mut_metadata().term = 3;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        log.apply_snapshot(&snapshot).unwrap();
        drop(log);
        let log = RaftLog::open(dir.path()).unwrap();
        assert_eq!(
            (log.first_index().unwrap(), log.last_index().unwrap()),
            (6, 5)
        );
        assert_eq!(log.term(5).unwrap(), 3);
        assert_eq!(log.voters(), &[1, 2, 3]);
        assert_eq!(log.hard_state().commit, 5);
        assert_eq!(
            log.snapshot(5, 1).unwrap().data,
            Bytes::from("leader image")
        );
    }

    #[test]
    fn configuration_changes_and_gaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RaftLog::open(dir.path()).unwrap();
        let mut change = entry(1, 1, "");
        change.entry_type = EntryType::EntryConfChangeV2;
        assert!(log.append(&[change]).is_err());
        assert!(log.append(&[entry(2, 1, "gap")]).is_err());
        assert_eq!(log.last_index().unwrap(), 0, "nothing was written");
        drop(log);
        assert_eq!(RaftLog::open(dir.path()).unwrap().last_index().unwrap(), 0);
    }

    #[test]
    fn the_scanner_survives_any_bytes() {
        // Lengths claiming more than the file or the bound end the scan without allocating.
        for bytes in [
            vec![0xff; 8],
            vec![0, 0, 0, 0, 0, 0, 0, 0],
            [&u32::MAX.to_be_bytes()[..], &[0; 4]].concat(),
            vec![0, 0, 0, 1],
        ] {
            let found = scan(&bytes);
            assert_eq!(found.valid_bytes, 0);
            assert!(found.stopped.is_some());
        }
        // A record whose voter count claims 2^32 - 1 voters.
        let mut body = vec![KIND_VOTERS];
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        assert!(scan(&bytes).stopped.unwrap().contains("voters"));
    }
}
