//! DescribeLogDirs (key 35), versions 1 to 4: this node's log directory and the logs in it,
//! each with its size and how far its end is past the high watermark; v4 adds the size and
//! the free space of the file system holding it (KIP-827).
//!
//! Owner: runs on the connection's shard, which scatters the partitions to their owner shards
//! (`broker::owner::serve_log_dirs`) and answers with one result: a node keeps every partition
//! under its one data directory (`data-dir`, Kafka's `log.dirs`; several are refused at start).
//! The broker is a cluster of one, so every partition of the metadata image has its log here.
//! The file system is asked with one `statvfs`, a system call that does not wait on the disk.
//!
//! As Kafka: the client needs DESCRIBE on the cluster, else the answer is
//! CLUSTER_AUTHORIZATION_FAILED (v3+ carry it; older versions get no results). Null topics ask
//! for every log; listed partitions that have no log here are left out of the answer, not
//! refused. The size and free space are -1 (Kafka's "unknown") if the file system cannot be
//! asked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{self, operation};
use crate::broker::ShardContext;
use crate::broker::error;
use crate::broker::owner::LogDirItem;
use crate::kafka::admin::{text, topic_name};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::kafka::scatter;

/// The versions served (Kafka 3.9 serves 0-4; version 0 is not in our decoder).
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 4 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeLogDirs,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    serve(context, request).boxed_local()
}

async fn serve(context: Rc<ShardContext>, request: Request) -> HandlerOutcome {
    let body: DescribeLogDirsRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    if !context.authorize(
        &request.session,
        operation::DESCRIBE,
        acl::resource_type::CLUSTER,
        acl::CLUSTER_NAME,
    ) {
        let refused = DescribeLogDirsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
        return request.respond(&refused);
    }
    let image = context.image();
    // The partitions asked for that have a log here, each once.
    let mut wanted: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    match &body.topics {
        None => {
            for (name, topic) in &image.topics {
                wanted.insert(name.clone(), (0..topic.partitions).collect());
            }
        }
        Some(topics) => {
            for asked in topics {
                let Some(topic) = image.topic(&asked.topic.0) else {
                    continue;
                };
                let present = asked
                    .partitions
                    .iter()
                    .copied()
                    .filter(|p| (0..topic.partitions).contains(p));
                wanted
                    .entry(asked.topic.0.to_string())
                    .or_default()
                    .extend(present);
            }
        }
    }
    let items: Vec<LogDirItem> = wanted
        .iter()
        .flat_map(|(topic, partitions)| {
            partitions.iter().map(|&partition| LogDirItem {
                topic: topic.clone(),
                partition,
            })
        })
        .collect();
    let outcomes = if items.is_empty() {
        Vec::new()
    } else {
        let call = scatter::LOG_DIRS;
        scatter::scatter(
            &context,
            items.clone(),
            |item| (&item.topic, item.partition),
            call.request,
            call.response,
            call.failed,
        )
        .await
    };
    let mut topics: BTreeMap<&str, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for (item, outcome) in items.iter().zip(&outcomes) {
        if outcome.error_code != error::NONE {
            continue;
        }
        topics.entry(&item.topic).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(item.partition)
                .with_partition_size(outcome.size_bytes)
                .with_offset_lag(outcome.offset_lag)
                .with_is_future_key(false),
        );
    }
    let dir = &context.config.data_dir;
    let (total_bytes, usable_bytes) = volume_bytes(dir);
    let log_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    let result = DescribeLogDirsResult::default()
        .with_error_code(error::NONE)
        .with_log_dir(text(log_dir.display().to_string()))
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    DescribeLogDirsTopic::default()
                        .with_name(topic_name(name.to_string()))
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    request.respond(&DescribeLogDirsResponse::default().with_results(vec![result]))
}

/// The size and the space left to unprivileged users of the file system holding `dir`, as
/// Java's `FileStore.getTotalSpace` / `getUsableSpace` give them; -1 each if unknown.
fn volume_bytes(dir: &Path) -> (i64, i64) {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(stat) => {
            let unit = stat.fragment_size() as i64;
            (
                (stat.blocks() as i64).saturating_mul(unit),
                (stat.blocks_available() as i64).saturating_mul(unit),
            )
        }
        Err(err) => {
            tracing::warn!(dir = %dir.display(), %err, "cannot read the data directory's file system size");
            (-1, -1)
        }
    }
}
