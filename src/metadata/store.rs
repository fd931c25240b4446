//! Persistence of the metadata: `meta.properties`, an append-only metadata log and snapshots.
//!
//! Owner: opened by `main` before any shard starts (so a damaged store stops the broker before
//! it listens), then moved to shard 0's controller, which is its only writer. Writes run on
//! glommio's blocking thread pool (`spawn_blocking`): the store is moved into the closure and
//! handed back, so no lock is involved and shard 0's executor never blocks on a disk flush.
//!
//! Layout under `<data_dir>`:
//!
//! ```text
//! meta.properties                      Kafka's file: version, node.id, cluster.id
//! __cluster_metadata/metadata.log      one record a line: "<crc32c, 8 hex> <json>\n"
//! __cluster_metadata/snapshot.json     the image as of some offset (written atomically)
//! ```
//!
//! Each log record carries its own offset; the log is replayed over the snapshot, skipping
//! records the snapshot already holds. A line that is cut short or whose CRC does not match
//! ends the log: the file is truncated there, since such a record was never acknowledged (a
//! record is acknowledged only after its fdatasync). Every `METADATA_LOG_RECORDS_MAX` records
//! the controller writes a snapshot and starts an empty log. The records are shaped as changes
//! to the image, so the log can later become the replicated log of a Raft group.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use crate::acl::AclBinding;
use crate::limits;
use crate::metadata::image::{BrokerImage, MetadataImage, PartitionState, TopicImage};
use crate::quota::{QuotaEntity, QuotaKey};
use crate::security::sasl::scram::{ScramCredential, ScramMechanism};

/// Directory of the metadata log and snapshots.
pub const METADATA_DIR: &str = "__cluster_metadata";
const LOG_FILE: &str = "metadata.log";
const SNAPSHOT_FILE: &str = "snapshot.json";
const SNAPSHOT_TMP_FILE: &str = "snapshot.json.tmp";
const META_PROPERTIES: &str = "meta.properties";

/// A change to the topic table, as written to the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A topic came into being.
    TopicCreated {
        /// Its name.
        name: String,
        /// Its id.
        id: Uuid,
        /// Its partition count.
        partitions: i32,
        /// Its config overrides.
        configs: BTreeMap<String, String>,
        /// Each partition's replicas and leadership (quorum only).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        placement: Vec<PartitionState>,
    },
    /// A topic's partition count grew.
    PartitionsCreated {
        /// The topic.
        name: String,
        /// Its id.
        id: Uuid,
        /// The new partition count.
        partitions: i32,
        /// The new partitions' replicas and leadership (quorum only).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        placement: Vec<PartitionState>,
    },
    /// A topic's config overrides were replaced.
    TopicConfigsAltered {
        /// The topic.
        name: String,
        /// Its id.
        id: Uuid,
        /// The complete new set of overrides.
        configs: BTreeMap<String, String>,
    },
    /// A block of producer ids was handed out; ids below `next_producer_id` are never reused.
    ProducerIdsAllocated {
        /// The first id not yet handed out.
        next_producer_id: i64,
    },
    /// Dynamic broker settings were replaced: this broker's (`per_node`) or the cluster-wide
    /// defaults.
    BrokerConfigsAltered {
        /// This broker's settings rather than the cluster-wide defaults.
        per_node: bool,
        /// The complete new set.
        configs: BTreeMap<String, String>,
    },
    /// A topic was deleted.
    TopicDeleted {
        /// Its name.
        name: String,
        /// Its id (so a later topic of the same name is not confused with it).
        id: Uuid,
    },
    /// An ACL was added (CreateAcls).
    AclCreated {
        /// The ACL.
        acl: AclBinding,
    },
    /// An ACL was removed (DeleteAcls).
    AclDeleted {
        /// The ACL.
        acl: AclBinding,
    },
    /// A user's SCRAM credential for one mechanism was set (AlterUserScramCredentials).
    ScramCredentialUpserted {
        /// The user name.
        user: String,
        /// The mechanism.
        mechanism: ScramMechanism,
        /// Salt, keys and iterations (never the password).
        credential: ScramCredential,
    },
    /// A user's SCRAM credential for one mechanism was deleted.
    ScramCredentialDeleted {
        /// The user name.
        user: String,
        /// The mechanism.
        mechanism: ScramMechanism,
    },
    /// A client quota was set or removed (Kafka's ClientQuotaRecord).
    ClientQuotaAltered {
        /// The user, client id, or both.
        entity: QuotaEntity,
        /// The key.
        key: QuotaKey,
        /// Bytes a second; `None`: removed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<i64>,
    },
    /// A broker registered (fenced until caught up); replaces an earlier registration.
    BrokerRegistered {
        /// The broker as registered.
        broker: BrokerImage,
    },
    /// A broker was fenced (past its session).
    BrokerFenced {
        /// The broker.
        id: i32,
        /// Its registration.
        epoch: i64,
    },
    /// A broker was unfenced (caught up).
    BrokerUnfenced {
        /// The broker.
        id: i32,
        /// Its registration.
        epoch: i64,
    },
    /// A broker began a controlled shutdown.
    BrokerShuttingDown {
        /// The broker.
        id: i32,
        /// Its registration.
        epoch: i64,
    },
    /// A partition's leadership or ISR changed.
    PartitionChanged {
        /// The topic.
        name: String,
        /// Its id.
        id: Uuid,
        /// The partition.
        partition: i32,
        /// The new state.
        state: PartitionState,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct LoggedRecord {
    offset: i64,
    #[serde(flatten)]
    record: MetadataRecord,
}

/// Failures of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("metadata store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A file holds something we did not write.
    #[error("metadata store {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The data directory belongs to another node.
    #[error(
        "{path} belongs to node.id {found}, but this broker is node-id {configured}; \
         start with --node-id {found} or use another --data-dir"
    )]
    NodeIdMismatch {
        /// meta.properties.
        path: PathBuf,
        /// The node id in the file.
        found: i32,
        /// The configured node id.
        configured: i32,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The identity a data directory carries: written once, checked on every start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Kafka node id.
    pub node_id: i32,
    /// Kafka cluster id: 16 random bytes in URL-safe base64 without padding, like Kafka's.
    pub cluster_id: String,
}

/// Reads `<data_dir>/meta.properties`, or creates it (and the directory) on first start.
pub fn load_or_create_identity(data_dir: &Path, node_id: i32) -> Result<NodeIdentity, StoreError> {
    load_or_create_identity_in(data_dir, node_id, None)
}

/// Like `load_or_create_identity`, for a node of the cluster `cluster` (a quorum's nodes
/// derive one id from their voters): a new data dir gets it, an existing one must hold it.
pub fn load_or_create_identity_in(
    data_dir: &Path,
    node_id: i32,
    cluster: Option<Uuid>,
) -> Result<NodeIdentity, StoreError> {
    let identity = create_or_read_identity(data_dir, node_id, cluster)?;
    if let Some(cluster) = cluster {
        let expected = base64_url(cluster.as_bytes());
        if identity.cluster_id != expected {
            return Err(StoreError::Corrupt {
                path: data_dir.join(META_PROPERTIES),
                reason: format!(
                    "this data dir belongs to cluster {}, but controller.quorum.voters makes \
                     cluster {expected}; use the data dir of this quorum or an empty one",
                    identity.cluster_id
                ),
            });
        }
    }
    Ok(identity)
}

fn create_or_read_identity(
    data_dir: &Path,
    node_id: i32,
    cluster: Option<Uuid>,
) -> Result<NodeIdentity, StoreError> {
    fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
    let path = data_dir.join(META_PROPERTIES);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let props: BTreeMap<&str, &str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            let corrupt = |reason: &str| StoreError::Corrupt {
                path: path.clone(),
                reason: reason.to_string(),
            };
            let found: i32 = props
                .get("node.id")
                .ok_or_else(|| corrupt("no node.id"))?
                .parse()
                .map_err(|_| corrupt("node.id is not an integer"))?;
            let cluster_id = props
                .get("cluster.id")
                .filter(|id| !id.is_empty())
                .ok_or_else(|| corrupt("no cluster.id"))?
                .to_string();
            if found != node_id {
                return Err(StoreError::NodeIdMismatch {
                    path,
                    found,
                    configured: node_id,
                });
            }
            Ok(NodeIdentity {
                node_id,
                cluster_id,
            })
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let identity = NodeIdentity {
                node_id,
                cluster_id: base64_url(cluster.unwrap_or_else(Uuid::new_v4).as_bytes()),
            };
            let text = format!(
                "#Written by ringbroker on first start; do not edit.\nversion=1\nnode.id={}\ncluster.id={}\n",
                identity.node_id, identity.cluster_id
            );
            write_atomically(&path, text.as_bytes())?;
            info!(cluster_id = %identity.cluster_id, "initialised data directory");
            Ok(identity)
        }
        Err(source) => Err(StoreError::Io { path, source }),
    }
}

/// URL-safe base64 without padding, as Kafka prints cluster ids.
pub(crate) fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Writes `path` through a temporary file, fsyncs it, renames it into place and fsyncs the
/// directory, so a crash leaves either the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().expect("store files live in a directory");
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Applies `record` at `offset` to `image`. Records are facts already validated by the
/// controller, so applying never fails; a record that does not fit (a deleted topic that is
/// absent) is a no-op, which makes replay idempotent.
pub fn apply_record(image: &mut MetadataImage, offset: i64, record: &MetadataRecord) {
    assert!(offset > image.offset, "metadata offsets only grow");
    match record {
        MetadataRecord::TopicCreated {
            name,
            id,
            partitions,
            configs,
            placement,
        } => {
            image.topics.insert(
                name.clone(),
                TopicImage {
                    name: name.clone(),
                    id: *id,
                    partitions: *partitions,
                    configs: configs.clone(),
                    placement: placement.clone(),
                },
            );
        }
        MetadataRecord::PartitionsCreated {
            name,
            id,
            partitions,
            placement,
        } => {
            if let Some(topic) = image.topics.get_mut(name).filter(|t| t.id == *id) {
                topic.partitions = *partitions;
                topic.placement.extend(placement.iter().cloned());
            }
        }
        MetadataRecord::BrokerRegistered { broker } => {
            image.brokers.insert(broker.id, broker.clone());
        }
        MetadataRecord::BrokerFenced { id, epoch }
        | MetadataRecord::BrokerUnfenced { id, epoch } => {
            let fenced = matches!(record, MetadataRecord::BrokerFenced { .. });
            if let Some(broker) = image.brokers.get_mut(id).filter(|b| b.epoch == *epoch) {
                broker.fenced = fenced;
            }
        }
        MetadataRecord::BrokerShuttingDown { id, epoch } => {
            if let Some(broker) = image.brokers.get_mut(id).filter(|b| b.epoch == *epoch) {
                broker.shutting_down = true;
            }
        }
        MetadataRecord::PartitionChanged {
            name,
            id,
            partition,
            state,
        } => {
            if let Some(slot) = image
                .topics
                .get_mut(name)
                .filter(|t| t.id == *id)
                .and_then(|t| {
                    t.placement
                        .get_mut(usize::try_from(*partition).unwrap_or(usize::MAX))
                })
            {
                *slot = state.clone();
            }
        }
        MetadataRecord::TopicConfigsAltered { name, id, configs } => {
            if let Some(topic) = image.topics.get_mut(name).filter(|t| t.id == *id) {
                topic.configs = configs.clone();
            }
        }
        MetadataRecord::ProducerIdsAllocated { next_producer_id } => {
            image.next_producer_id = image.next_producer_id.max(*next_producer_id);
        }
        MetadataRecord::BrokerConfigsAltered { per_node, configs } => {
            if *per_node {
                image.node_configs = configs.clone();
            } else {
                image.cluster_configs = configs.clone();
            }
        }
        MetadataRecord::TopicDeleted { name, id } => {
            if image.topics.get(name).is_some_and(|t| t.id == *id) {
                image.topics.remove(name);
            }
        }
        MetadataRecord::AclCreated { acl } => {
            image.acls.insert(acl.clone());
        }
        MetadataRecord::AclDeleted { acl } => {
            image.acls.remove(acl);
        }
        MetadataRecord::ScramCredentialUpserted {
            user,
            mechanism,
            credential,
        } => {
            image
                .scram
                .entry(user.clone())
                .or_default()
                .insert(*mechanism, credential.clone());
        }
        MetadataRecord::ClientQuotaAltered { entity, key, value } => {
            image.quotas.set(entity, *key, *value);
        }
        MetadataRecord::ScramCredentialDeleted { user, mechanism } => {
            if let Some(credentials) = image.scram.get_mut(user) {
                credentials.remove(mechanism);
                if credentials.is_empty() {
                    image.scram.remove(user);
                }
            }
        }
    }
    image.offset = offset;
}

/// The metadata log and snapshot of one data directory. See the module documentation.
#[derive(Debug)]
pub struct MetadataStore {
    dir: PathBuf,
    log: File,
    records_in_log: usize,
}

impl MetadataStore {
    /// Opens (or creates) the store and replays it into an image. A torn tail is truncated.
    pub fn open(data_dir: &Path) -> Result<(MetadataStore, MetadataImage), StoreError> {
        let dir = data_dir.join(METADATA_DIR);
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let mut image = match fs::read(&snapshot_path) {
            Ok(bytes) => parse_snapshot(&bytes).map_err(|err| StoreError::Corrupt {
                path: snapshot_path.clone(),
                reason: err.to_string(),
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => MetadataImage::empty(),
            Err(source) => {
                return Err(StoreError::Io {
                    path: snapshot_path,
                    source,
                });
            }
        };
        // A leftover temporary snapshot is from a crash mid-write; the log still has its records.
        let _ = fs::remove_file(dir.join(SNAPSHOT_TMP_FILE));

        let log_path = dir.join(LOG_FILE);
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(io_error(&log_path))?;
        let mut text = Vec::new();
        log.read_to_end(&mut text).map_err(io_error(&log_path))?;
        let Replayed {
            good_len,
            records_in_log,
        } = replay_log(&mut image, &text);
        if good_len < text.len() {
            warn!(
                path = %log_path.display(),
                kept_bytes = good_len,
                cut_bytes = text.len() - good_len,
                "metadata log has a torn or corrupt tail; truncating it"
            );
            log.set_len(good_len as u64).map_err(io_error(&log_path))?;
            log.sync_all().map_err(io_error(&log_path))?;
        }
        Ok((
            MetadataStore {
                dir,
                log,
                records_in_log,
            },
            image,
        ))
    }

    /// Appends `records` (each with its offset) and makes them durable with one fdatasync.
    /// When the log has grown past its bound, `image_after` (the image including these
    /// records) is written as a snapshot and the log starts empty.
    pub fn append(
        &mut self,
        records: &[(i64, MetadataRecord)],
        image_after: &MetadataImage,
    ) -> Result<(), StoreError> {
        let log_path = self.dir.join(LOG_FILE);
        let mut text = String::new();
        for (offset, record) in records {
            let json = serde_json::to_string(&LoggedRecord {
                offset: *offset,
                record: record.clone(),
            })
            .expect("metadata records always serialise");
            text.push_str(&format!("{:08x} {json}\n", crc32c::crc32c(json.as_bytes())));
        }
        self.log
            .write_all(text.as_bytes())
            .map_err(io_error(&log_path))?;
        self.log.sync_data().map_err(io_error(&log_path))?;
        self.records_in_log += records.len();
        if self.records_in_log >= limits::METADATA_LOG_RECORDS_MAX {
            self.snapshot(image_after)?;
        }
        Ok(())
    }

    fn snapshot(&mut self, image: &MetadataImage) -> Result<(), StoreError> {
        let json = serde_json::to_vec(image).expect("images always serialise");
        write_atomically(&self.dir.join(SNAPSHOT_FILE), &json)?;
        // The snapshot holds everything the log held: the log can start over. A crash between
        // the two steps replays a log whose records the snapshot already has, which is skipped.
        let log_path = self.dir.join(LOG_FILE);
        self.log.set_len(0).map_err(io_error(&log_path))?;
        self.log.sync_all().map_err(io_error(&log_path))?;
        self.records_in_log = 0;
        info!(offset = image.offset, "metadata snapshot written");
        Ok(())
    }
}

/// How much of a metadata log `replay_log` kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Bytes of whole, CRC-checked records from the start of the log; the rest is a torn or
    /// corrupt tail.
    pub good_len: usize,
    /// Records in those bytes (including those the image already held).
    pub records_in_log: usize,
}

/// Replays the metadata log `text` over `image` (a snapshot or the empty image) up to the first
/// line that is cut short, fails its CRC or does not parse; records the image already holds are
/// skipped. Pure over the bytes; `MetadataStore::open` reads the file and truncates it to
/// `good_len`. Public for the fuzz targets (`tests/fuzz`).
pub fn replay_log(image: &mut MetadataImage, text: &[u8]) -> Replayed {
    let mut good_len = 0usize;
    let mut records_in_log = 0usize;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let Some(logged) = parse_line(line) else {
            break;
        };
        if logged.offset > image.offset {
            apply_record(image, logged.offset, &logged.record);
        }
        good_len += line.len();
        records_in_log += 1;
    }
    Replayed {
        good_len,
        records_in_log,
    }
}

/// Parses a snapshot file's bytes into an image. Public for the fuzz targets (`tests/fuzz`).
pub fn parse_snapshot(bytes: &[u8]) -> Result<MetadataImage, serde_json::Error> {
    serde_json::from_slice(bytes)
}

fn parse_line(line: &[u8]) -> Option<LoggedRecord> {
    let line = line.strip_suffix(b"\n")?;
    if line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
    let json = &line[9..];
    if crc32c::crc32c(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(name: &str, partitions: i32) -> MetadataRecord {
        MetadataRecord::TopicCreated {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs: BTreeMap::new(),
            placement: Vec::new(),
        }
    }

    #[test]
    fn identity_is_created_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_identity(dir.path(), 5).unwrap();
        assert_eq!(first.cluster_id.len(), 22);
        let again = load_or_create_identity(dir.path(), 5).unwrap();
        assert_eq!(first, again);
        let err = load_or_create_identity(dir.path(), 6).unwrap_err();
        assert!(err.to_string().contains("node.id 5"), "{err}");
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64_url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_url(b"fo"), "Zm8");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn records_survive_reopen_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut image) = MetadataStore::open(dir.path()).unwrap();
        for (offset, name) in ["a", "b", "c"].iter().enumerate() {
            let record = created(name, 3);
            apply_record(&mut image, offset as i64, &record);
            store.append(&[(offset as i64, record)], &image).unwrap();
        }
        drop(store);
        let log_path = dir.path().join(METADATA_DIR).join(LOG_FILE);
        let mut bytes = fs::read(&log_path).unwrap();
        let len_before = bytes.len();
        bytes.extend_from_slice(b"0badc0de {\"offset\":3,\"ty");
        fs::write(&log_path, &bytes).unwrap();

        let (_, reopened) = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(reopened, image);
        assert_eq!(fs::metadata(&log_path).unwrap().len() as usize, len_before);
    }

    #[test]
    fn a_flipped_byte_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut image) = MetadataStore::open(dir.path()).unwrap();
        for offset in 0..3 {
            let record = created(&format!("t{offset}"), 1);
            apply_record(&mut image, offset, &record);
            store.append(&[(offset, record)], &image).unwrap();
        }
        drop(store);
        let log_path = dir.path().join(METADATA_DIR).join(LOG_FILE);
        let mut bytes = fs::read(&log_path).unwrap();
        let second_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second_line + 20] ^= 0x01;
        fs::write(&log_path, &bytes).unwrap();
        let (_, reopened) = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(reopened.topics.len(), 1);
        assert!(reopened.topic("t0").is_some());
    }

    #[test]
    fn snapshots_replace_the_log_and_replay_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut image) = MetadataStore::open(dir.path()).unwrap();
        let total = limits::METADATA_LOG_RECORDS_MAX as i64 + 5;
        for offset in 0..total {
            let record = if offset % 2 == 0 {
                created(&format!("t{offset}"), 2)
            } else {
                let name = format!("t{}", offset - 1);
                let id = image.topic(&name).unwrap().id;
                MetadataRecord::TopicDeleted { name, id }
            };
            apply_record(&mut image, offset, &record);
            store.append(&[(offset, record)], &image).unwrap();
        }
        assert_eq!(store.records_in_log, 5);
        drop(store);
        let (_, reopened) = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(reopened, image);
        assert_eq!(reopened.offset, total - 1);
    }

    #[test]
    fn client_quotas_replay_from_the_log_and_old_snapshots_have_none() {
        use crate::quota::{QuotaEntity, QuotaKey};
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut image) = MetadataStore::open(dir.path()).unwrap();
        let alice = QuotaEntity::user_client(Some("alice"), None);
        let records = [
            MetadataRecord::ClientQuotaAltered {
                entity: alice.clone(),
                key: QuotaKey::ProducerByteRate,
                value: Some(1024),
            },
            MetadataRecord::ClientQuotaAltered {
                entity: QuotaEntity::client(None),
                key: QuotaKey::ConsumerByteRate,
                value: Some(2048),
            },
            MetadataRecord::ClientQuotaAltered {
                entity: QuotaEntity::client(None),
                key: QuotaKey::ConsumerByteRate,
                value: None,
            },
        ];
        for (offset, record) in records.into_iter().enumerate() {
            apply_record(&mut image, offset as i64, &record);
            store.append(&[(offset as i64, record)], &image).unwrap();
        }
        drop(store);
        let (_, reopened) = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(reopened, image);
        assert_eq!(reopened.quotas.len(), 1);
        assert_eq!(
            reopened
                .quotas
                .resolve("alice", "any", QuotaKey::ProducerByteRate),
            Some((alice, 1024))
        );
        // The snapshot round trip keeps the default entity (a null name) apart from absence.
        let json = serde_json::to_vec(&reopened).unwrap();
        assert_eq!(parse_snapshot(&json).unwrap(), reopened);
        // A snapshot written before quotas existed has none.
        let old = br#"{"offset":3,"topics":{}}"#;
        assert!(parse_snapshot(old).unwrap().quotas.is_empty());
    }
}
