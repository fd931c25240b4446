//! The Kafka protocol front: request dispatch, error mapping and one handler per API
//! (DESIGN.md §4).
//!
//! Owner: runs on whichever shard accepted the connection. Handlers read the shard's metadata
//! image and reach other shards through the router; they never block the executor.
//!
//! Message schemas (encode/decode of every version) come from the `kafka-protocol` crate;
//! framing, the dispatch table, version negotiation and the record-batch data plane are ours.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod admin;
pub mod alter_client_quotas;
pub mod alter_configs;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod dispatch;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod fetch_session;
pub mod find_coordinator;
pub mod init_producer_id;
pub mod leader_epoch;
pub mod legacy_format;
pub mod legacy_versions;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod scatter;
pub mod txn_offset_commit;
pub mod write_txn_markers;

pub mod delete_groups;
pub mod describe_groups;
pub mod heartbeat;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod sync_group;
