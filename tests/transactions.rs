//! Transactions (issue 6), coordinator side: the protocol of InitProducerId with a transactional
//! id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit, DescribeTransactions and
//! ListTransactions, with bad input answered by Kafka's error codes; the coordinator's state
//! across a restart and its timeout; and real clients (confluent-kafka) running transactions:
//! commit/abort alternation seen by read_committed and read_uncommitted consumers, a broker
//! restart in the middle of a transaction, a consume-transform-produce loop killed and
//! restarted, and the fencing of a zombie producer.

mod support;

use std::time::{Duration, Instant};

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, CreateTopicsRequest, CreateTopicsResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, InitProducerIdRequest,
    InitProducerIdResponse, ListTransactionsRequest, ListTransactionsResponse, OffsetFetchRequest,
    OffsetFetchResponse, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use support::{Broker, RawClient, run_bounded};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/transactions.py");

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const PRODUCER_FENCED: i16 = 90;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn create_topic(client: &mut RawClient, name: &str, partitions: i32) {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(text(name)))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 5, &request);
    assert_eq!(response.topics[0].error_code, 0, "create {name}");
}

/// InitProducerId at `version`: (error, producer id, epoch).
fn init(
    client: &mut RawClient,
    version: i16,
    transactional_id: &str,
    timeout_ms: i32,
    expected: (i64, i16),
) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(text(transactional_id))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(expected.0))
        .with_producer_epoch(expected.1);
    let response: InitProducerIdResponse = client.call(ApiKey::InitProducerId, version, &request);
    (
        response.error_code,
        response.producer_id.0,
        response.producer_epoch,
    )
}

/// InitProducerId retried while the coordinator answers CONCURRENT_TRANSACTIONS (as clients do).
fn init_retrying(client: &mut RawClient, transactional_id: &str, timeout_ms: i32) -> (i64, i16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, id, epoch) = init(client, 4, transactional_id, timeout_ms, (-1, -1));
        if code == 0 {
            return (id, epoch);
        }
        assert_eq!(code, CONCURRENT_TRANSACTIONS, "InitProducerId");
        assert!(Instant::now() < deadline, "InitProducerId kept failing");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// AddPartitionsToTxn at `version`: every partition's error, in request order.
fn add_partitions(
    client: &mut RawClient,
    version: i16,
    transactional_id: &str,
    producer: (i64, i16),
    partitions: &[(&str, i32)],
) -> Vec<i16> {
    let topics = partitions
        .iter()
        .map(|(t, p)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(text(t)))
                .with_partitions(vec![*p])
        })
        .collect();
    let mut request = AddPartitionsToTxnRequest::default();
    request.v3_and_below_transactional_id = TransactionalId(text(transactional_id));
    request.v3_and_below_producer_id = ProducerId(producer.0);
    request.v3_and_below_producer_epoch = producer.1;
    request.v3_and_below_topics = topics;
    let response: AddPartitionsToTxnResponse =
        client.call(ApiKey::AddPartitionsToTxn, version, &request);
    response
        .results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
        })
        .collect()
}

fn end_txn(
    client: &mut RawClient,
    version: i16,
    transactional_id: &str,
    producer: (i64, i16),
    commit: bool,
) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(text(transactional_id)))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_committed(commit);
    let response: EndTxnResponse = client.call(ApiKey::EndTxn, version, &request);
    response.error_code
}

fn describe(
    client: &mut RawClient,
    transactional_id: &str,
) -> kafka_protocol::messages::describe_transactions_response::TransactionState {
    let request = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(text(transactional_id))]);
    let mut response: DescribeTransactionsResponse =
        client.call(ApiKey::DescribeTransactions, 0, &request);
    response.transaction_states.remove(0)
}

fn list(
    client: &mut RawClient,
    states: &[&str],
    producer_ids: &[i64],
) -> (Vec<String>, Vec<ListedState>) {
    let request = ListTransactionsRequest::default()
        .with_state_filters(states.iter().map(|s| text(s)).collect())
        .with_producer_id_filters(producer_ids.iter().map(|&p| ProducerId(p)).collect())
        .with_duration_filter(-1);
    let response: ListTransactionsResponse = client.call(ApiKey::ListTransactions, 1, &request);
    assert_eq!(response.error_code, 0);
    (
        response
            .unknown_state_filters
            .iter()
            .map(|s| s.to_string())
            .collect(),
        response.transaction_states,
    )
}

/// Waits until DescribeTransactions reports `state` for the id.
fn wait_for_state(client: &mut RawClient, transactional_id: &str, state: &str, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        let d = describe(client, transactional_id);
        if d.error_code == 0 && d.transaction_state.as_str() == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{transactional_id} never reached {state}: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn find_coordinator_answers_for_transactional_ids() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    for version in [1, 3] {
        let request = FindCoordinatorRequest::default()
            .with_key(text("tx-find"))
            .with_key_type(1);
        let response: FindCoordinatorResponse =
            client.call(ApiKey::FindCoordinator, version, &request);
        assert_eq!(response.error_code, 0, "v{version}");
        assert_eq!(response.port, i32::from(broker.addr.port()));
    }
    let request = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![text("a"), text("b"), text("")]);
    let response: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 4, &request);
    let codes: Vec<i16> = response.coordinators.iter().map(|c| c.error_code).collect();
    assert_eq!(
        codes,
        vec![0, 0, 42],
        "an empty transactional id is INVALID_REQUEST"
    );
}

#[test]
fn init_producer_id_bumps_the_epoch_and_fences_old_incarnations() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    let (code, id, epoch) = init(&mut client, 4, "tx-a", 60_000, (-1, -1));
    assert_eq!((code, epoch), (0, 0));
    assert!(id >= 0);
    let (code, id2, epoch2) = init(&mut client, 4, "tx-a", 60_000, (-1, -1));
    assert_eq!(
        (code, id2, epoch2),
        (0, id, 1),
        "same producer id, next epoch"
    );
    // KIP-360: the current incarnation may bump its own epoch...
    let (code, id3, epoch3) = init(&mut client, 4, "tx-a", 60_000, (id, 1));
    assert_eq!((code, id3, epoch3), (0, id, 2));
    // ...a retry of that bump gets the same answer...
    let (code, _, epoch_retry) = init(&mut client, 4, "tx-a", 60_000, (id, 1));
    assert_eq!((code, epoch_retry), (0, 2));
    // ...but an older incarnation is fenced, with the code its version knows.
    assert_eq!(
        init(&mut client, 4, "tx-a", 60_000, (id, 0)).0,
        PRODUCER_FENCED
    );
    assert_eq!(
        init(&mut client, 3, "tx-a", 60_000, (id, 0)).0,
        INVALID_PRODUCER_EPOCH
    );
    // A producer id that never belonged to the transactional id is fenced too.
    assert_eq!(
        init(&mut client, 4, "tx-a", 60_000, (id + 12345, 2)).0,
        PRODUCER_FENCED
    );
    // Half an expected producer is malformed.
    assert_eq!(init(&mut client, 4, "tx-a", 60_000, (id, -1)).0, 42);
    // Other ids get other producer ids.
    let (_, other, other_epoch) = init(&mut client, 4, "tx-b", 60_000, (-1, -1));
    assert_ne!(other, id);
    assert_eq!(other_epoch, 0);
}

#[test]
fn transaction_timeouts_are_checked_against_the_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "transaction.max.timeout.ms=60000"]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(
        init(&mut client, 4, "tx-t", 60_001, (-1, -1)).0,
        INVALID_TRANSACTION_TIMEOUT
    );
    assert_eq!(
        init(&mut client, 4, "tx-t", 0, (-1, -1)).0,
        INVALID_TRANSACTION_TIMEOUT
    );
    assert_eq!(init(&mut client, 4, "tx-t", 60_000, (-1, -1)).0, 0);
}

#[test]
fn transaction_requests_are_checked_against_the_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "orders", 3);
    let (_, id, epoch) = init(&mut client, 4, "tx-s", 60_000, (-1, -1));
    let producer = (id, epoch);
    // No transaction yet.
    assert_eq!(
        end_txn(&mut client, 3, "tx-s", producer, true),
        INVALID_TXN_STATE
    );
    assert_eq!(
        end_txn(&mut client, 3, "tx-s", producer, false),
        INVALID_TXN_STATE
    );
    // Unknown ids, wrong producer ids and stale epochs.
    assert_eq!(
        end_txn(&mut client, 3, "tx-never", producer, true),
        INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        add_partitions(&mut client, 3, "tx-s", (id + 1, epoch), &[("orders", 0)]),
        vec![INVALID_PRODUCER_ID_MAPPING]
    );
    assert_eq!(
        add_partitions(&mut client, 3, "tx-s", (id, epoch + 1), &[("orders", 0)]),
        vec![PRODUCER_FENCED]
    );
    assert_eq!(
        add_partitions(&mut client, 1, "tx-s", (id, epoch + 1), &[("orders", 0)]),
        vec![INVALID_PRODUCER_EPOCH]
    );
    // An unknown topic or partition: that one is refused, the others not attempted.
    assert_eq!(
        add_partitions(
            &mut client,
            3,
            "tx-s",
            producer,
            &[("orders", 0), ("missing", 0), ("orders", 7)]
        ),
        vec![
            OPERATION_NOT_ATTEMPTED,
            UNKNOWN_TOPIC_OR_PARTITION,
            UNKNOWN_TOPIC_OR_PARTITION
        ]
    );
    assert_eq!(
        describe(&mut client, "tx-s").transaction_state.as_str(),
        "Empty"
    );
    // A real transaction.
    assert_eq!(
        add_partitions(
            &mut client,
            3,
            "tx-s",
            producer,
            &[("orders", 0), ("orders", 2)]
        ),
        vec![0, 0]
    );
    let d = describe(&mut client, "tx-s");
    assert_eq!(d.transaction_state.as_str(), "Ongoing");
    assert_eq!((d.producer_id.0, d.producer_epoch), producer);
    assert_eq!(d.transaction_timeout_ms, 60_000);
    assert!(d.transaction_start_time_ms > 0);
    assert_eq!(d.topics.len(), 1);
    assert_eq!(d.topics[0].partitions, vec![0, 2]);
    // AddOffsetsToTxn adds the group's __consumer_offsets partition.
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(text("tx-s")))
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(text("group")));
    let response: AddOffsetsToTxnResponse = client.call(ApiKey::AddOffsetsToTxn, 3, &request);
    assert_eq!(response.error_code, 0);
    let d = describe(&mut client, "tx-s");
    let offsets = d
        .topics
        .iter()
        .find(|t| t.topic.0.as_str() == "__consumer_offsets")
        .expect("the offsets partition is in the transaction");
    assert_eq!(offsets.partitions, vec![47], "\"group\".hashCode() % 50");
    // Listing, with filters.
    let (unknown, listed) = list(&mut client, &[], &[]);
    assert!(unknown.is_empty());
    assert!(
        listed
            .iter()
            .any(|t| t.transactional_id.0.as_str() == "tx-s")
    );
    let (_, listed) = list(&mut client, &["Ongoing"], &[id]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].transaction_state.as_str(), "Ongoing");
    let (_, listed) = list(&mut client, &["CompleteCommit"], &[]);
    assert!(listed.is_empty());
    let (unknown, listed) = list(&mut client, &["Bogus"], &[]);
    assert_eq!(unknown, vec!["Bogus".to_string()]);
    assert!(listed.is_empty());
    let (_, listed) = list(&mut client, &[], &[id + 999]);
    assert!(listed.is_empty());
    // Ending with the wrong decision while preparing the other is refused.
    assert_eq!(end_txn(&mut client, 3, "tx-s", producer, false), 0);
    let again = end_txn(&mut client, 3, "tx-s", producer, true);
    assert_eq!(again, INVALID_TXN_STATE);
    // Unknown ids are not found.
    let d = describe(&mut client, "tx-unknown");
    assert_eq!(d.error_code, TRANSACTIONAL_ID_NOT_FOUND);
}

#[test]
fn txn_offsets_are_pending_until_the_transaction_ends() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "in", 1);
    let (_, id, epoch) = init(&mut client, 4, "tx-o", 60_000, (-1, -1));
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(text("tx-o")))
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(text("g-o")));
    let response: AddOffsetsToTxnResponse = client.call(ApiKey::AddOffsetsToTxn, 3, &request);
    assert_eq!(response.error_code, 0);
    let commit = |client: &mut RawClient, epoch: i16, offset: i64| -> i16 {
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(text("tx-o")))
            .with_group_id(GroupId(text("g-o")))
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(text("in")))
                    .with_partitions(vec![
                        TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1),
                    ]),
            ]);
        let response: TxnOffsetCommitResponse = client.call(ApiKey::TxnOffsetCommit, 3, &request);
        response.topics[0].partitions[0].error_code
    };
    assert_eq!(commit(&mut client, epoch, 42), 0);
    let fetch = |client: &mut RawClient, require_stable: bool| -> (i16, i64) {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(text("g-o")))
            .with_require_stable(require_stable)
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(text("in")))
                    .with_partition_indexes(vec![0]),
            ]));
        let response: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 7, &request);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.committed_offset)
    };
    // Not visible before the commit; unstable for a consumer that asks for stable offsets.
    assert_eq!(fetch(&mut client, false), (0, -1));
    assert_eq!(fetch(&mut client, true), (UNSTABLE_OFFSET_COMMIT, -1));
    assert_eq!(end_txn(&mut client, 3, "tx-o", (id, epoch), true), 0);
    wait_for_state(
        &mut client,
        "tx-o",
        "CompleteCommit",
        Duration::from_secs(20),
    );
    assert_eq!(fetch(&mut client, true), (0, 42));
    // An aborted transaction's offsets never show.
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(text("tx-o")))
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(text("g-o")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response: AddOffsetsToTxnResponse = client.call(ApiKey::AddOffsetsToTxn, 3, &request);
        if response.error_code == 0 {
            break;
        }
        assert_eq!(response.error_code, CONCURRENT_TRANSACTIONS);
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(commit(&mut client, epoch, 99), 0);
    assert_eq!(end_txn(&mut client, 3, "tx-o", (id, epoch), false), 0);
    wait_for_state(
        &mut client,
        "tx-o",
        "CompleteAbort",
        Duration::from_secs(20),
    );
    assert_eq!(fetch(&mut client, true), (0, 42));
    // The same after a restart: the log replays the transactional batches and the markers.
    let addr = broker.addr.to_string();
    assert!(broker.stop().success());
    let broker = Broker::start_at(dir.path(), &addr, &[]);
    let mut client = RawClient::connect(broker.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = fetch(&mut client, true);
        if found == (0, 42) {
            break;
        }
        assert!(Instant::now() < deadline, "offset after restart: {found:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn coordinator_state_survives_a_restart_and_open_transactions_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
    ];
    let broker = Broker::start_in(dir.path(), &args);
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "t", 2);
    let (id, epoch) = init_retrying(&mut client, "tx-r", 3_000);
    assert_eq!(
        add_partitions(&mut client, 3, "tx-r", (id, epoch), &[("t", 1)]),
        vec![0]
    );
    let addr = broker.addr.to_string();
    assert!(broker.stop().success());
    let broker = Broker::start_at(dir.path(), &addr, &args);
    let mut client = RawClient::connect(broker.addr);
    // Replayed as Ongoing, then aborted on timeout with a bumped epoch (fencing the producer).
    wait_for_state(
        &mut client,
        "tx-r",
        "CompleteAbort",
        Duration::from_secs(30),
    );
    let d = describe(&mut client, "tx-r");
    assert_eq!((d.producer_id.0, d.producer_epoch), (id, epoch + 1));
    assert_eq!(
        end_txn(&mut client, 3, "tx-r", (id, epoch), true),
        PRODUCER_FENCED
    );
    assert!(d.topics.is_empty());
    // The next incarnation continues from the replayed epoch.
    let (id2, epoch2) = init_retrying(&mut client, "tx-r", 3_000);
    assert_eq!((id2, epoch2), (id, epoch + 2));
    drop(client);
    assert!(broker.stop().success());
}

/// TxnOffsetCommit of one offset of partition 0 of `topic`: the partition's error.
fn txn_offset_commit(
    client: &mut RawClient,
    version: i16,
    transactional_id: &str,
    group: &str,
    producer: (i64, i16),
    topic: &str,
    offset: i64,
) -> i16 {
    let request = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(text(transactional_id)))
        .with_group_id(GroupId(text(group)))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_generation_id(-1)
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(-1),
                ]),
        ]);
    let response: TxnOffsetCommitResponse = client.call(ApiKey::TxnOffsetCommit, version, &request);
    response.topics[0].partitions[0].error_code
}

fn add_offsets(
    client: &mut RawClient,
    transactional_id: &str,
    producer: (i64, i16),
    group: &str,
) -> i16 {
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(text(transactional_id)))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_group_id(GroupId(text(group)));
    let response: AddOffsetsToTxnResponse = client.call(ApiKey::AddOffsetsToTxn, 3, &request);
    response.error_code
}

#[test]
fn a_new_incarnation_aborts_the_open_transaction_of_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "f", 1);
    let (id, epoch) = init_retrying(&mut client, "tx-f", 60_000);
    assert_eq!(
        add_partitions(&mut client, 3, "tx-f", (id, epoch), &[("f", 0)]),
        vec![0]
    );
    assert_eq!(add_offsets(&mut client, "tx-f", (id, epoch), "g-f"), 0);
    assert_eq!(
        txn_offset_commit(&mut client, 3, "tx-f", "g-f", (id, epoch), "f", 5),
        0
    );
    // The new incarnation is told to retry while the old transaction aborts...
    let (id2, epoch2) = init_retrying(&mut client, "tx-f", 60_000);
    // ...with the fencing bump and its own.
    assert_eq!((id2, epoch2), (id, epoch + 2));
    assert_eq!(
        end_txn(&mut client, 3, "tx-f", (id, epoch), true),
        PRODUCER_FENCED
    );
    assert_eq!(
        add_partitions(&mut client, 3, "tx-f", (id, epoch), &[("f", 0)]),
        vec![PRODUCER_FENCED]
    );
    // The abort marker carried the bumped epoch to the group's partition: the zombie's offset
    // commits are refused there too, with the code its version knows.
    assert_eq!(
        txn_offset_commit(&mut client, 3, "tx-f", "g-f", (id, epoch), "f", 6),
        PRODUCER_FENCED
    );
    assert_eq!(
        txn_offset_commit(&mut client, 2, "tx-f", "g-f", (id, epoch), "f", 6),
        INVALID_PRODUCER_EPOCH
    );
}

/// Runs the client script with `args`, bounded; returns stdout and asserts success.
fn script(args: &[&str], bound: Duration) -> String {
    let mut all = vec![SCRIPT];
    all.extend_from_slice(args);
    let (status, out, err) = run_bounded("python3", &all, bound);
    assert!(status.success(), "{args:?} failed:\n{out}\n{err}");
    out
}

/// A client script running in the background; killed when dropped.
struct Background {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Background {
    fn start(args: &[&str]) -> Background {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .arg(SCRIPT)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Background { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the output lines; panics after `bound`.
    fn wait_for(&mut self, what: &str, bound: Duration, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + bound;
        loop {
            if done(&self.lines()) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread drain what is left before the last check.
                std::thread::sleep(Duration::from_millis(200));
                if done(&self.lines()) {
                    return;
                }
                panic!("client exited ({status}) before {what}: {:?}", self.lines());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in time: {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads every partition of `topic` with `isolation`; (partition, value) in arrival order.
fn read_all(broker: &Broker, topic: &str, isolation: &str, expected: usize) -> Vec<(i32, String)> {
    let out = script(
        &[
            "consume",
            &broker.bootstrap(),
            topic,
            isolation,
            &expected.to_string(),
            "60",
        ],
        Duration::from_secs(90),
    );
    let parsed: Vec<(i32, String)> =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("consumer output {out}: {e}"));
    parsed
}

fn values_of(txns: &[usize], per_txn: usize) -> std::collections::BTreeSet<String> {
    txns.iter()
        .flat_map(|i| (0..per_txn).map(move |j| format!("t{i}-{j}")))
        .collect()
}

/// The values of each partition are in the order they were produced.
fn assert_ordered_per_partition(seen: &[(i32, String)]) {
    let mut last: std::collections::HashMap<i32, (usize, usize)> = Default::default();
    for (partition, value) in seen {
        let (i, j) = value[1..].split_once('-').unwrap();
        let key = (i.parse::<usize>().unwrap(), j.parse::<usize>().unwrap());
        if let Some(prev) = last.insert(*partition, key) {
            assert!(prev < key, "partition {partition}: {prev:?} before {key:?}");
        }
    }
}

#[test]
fn read_committed_consumers_see_exactly_the_committed_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "alt", 3);
    let (txns, per_txn) = (10, 9);
    let out = script(
        &[
            "alternate",
            &broker.bootstrap(),
            "alt",
            "tx-alt",
            "10",
            "9",
            "3",
        ],
        Duration::from_secs(120),
    );
    let committed: Vec<usize> = (0..txns).filter(|i| i % 2 == 0).collect();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("C ")).count(),
        committed.len()
    );
    let seen = read_all(&broker, "alt", "read_committed", committed.len() * per_txn);
    let values: std::collections::BTreeSet<String> = seen.iter().map(|s| s.1.clone()).collect();
    assert_eq!(seen.len(), values.len(), "no duplicates");
    assert_eq!(values, values_of(&committed, per_txn));
    assert_ordered_per_partition(&seen);
    let all: Vec<usize> = (0..txns).collect();
    let seen = read_all(&broker, "alt", "read_uncommitted", txns * per_txn);
    let values: std::collections::BTreeSet<String> = seen.iter().map(|s| s.1.clone()).collect();
    assert_eq!(values, values_of(&all, per_txn));
    assert_eq!(seen.len(), txns * per_txn);
    assert_ordered_per_partition(&seen);
}

#[test]
fn transactions_ride_out_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let addr = broker.addr.to_string();
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "rs", 3);
    drop(client);
    let (txns, per_txn) = (24, 6);
    let mut producer = Background::start(&[
        "run",
        &broker.bootstrap(),
        "rs",
        "tx-rs",
        &txns.to_string(),
        &per_txn.to_string(),
        "3",
        "0.2",
    ]);
    producer.wait_for("three commits", Duration::from_secs(60), |lines| {
        lines.iter().filter(|l| l.starts_with("C ")).count() >= 3
    });
    // A crash in the middle of a transaction (the producer pauses inside each one).
    drop(broker);
    let broker = Broker::start_at(dir.path(), &addr, &[]);
    producer.wait_for("the end", Duration::from_secs(150), |lines| {
        lines.iter().any(|l| l == "DONE")
    });
    let lines = producer.lines();
    let outcome = |prefix: &str| -> Vec<usize> {
        lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let (committed, aborted, unknown) = (outcome("C "), outcome("A "), outcome("U "));
    assert!(
        committed.iter().any(|&i| i > 3),
        "transactions commit after the restart: {lines:?}"
    );
    let seen = read_all(&broker, "rs", "read_committed", committed.len() * per_txn);
    let values: std::collections::BTreeSet<String> = seen.iter().map(|s| s.1.clone()).collect();
    assert_eq!(seen.len(), values.len(), "no duplicates: {seen:?}");
    assert_ordered_per_partition(&seen);
    for value in values_of(&committed, per_txn) {
        assert!(values.contains(&value), "committed {value} missing");
    }
    for value in values_of(&aborted, per_txn) {
        assert!(!values.contains(&value), "aborted {value} visible");
    }
    // A transaction whose outcome the client could not learn is all or nothing.
    for i in unknown {
        let of_txn = values_of(&[i], per_txn);
        let visible = of_txn.iter().filter(|v| values.contains(*v)).count();
        assert!(
            visible == 0 || visible == per_txn,
            "transaction {i} partly visible"
        );
    }
    let allowed = values_of(
        &committed
            .iter()
            .chain(outcome("U ").iter())
            .copied()
            .collect::<Vec<_>>(),
        per_txn,
    );
    assert!(values.is_subset(&allowed), "only committed data is visible");
}

#[test]
fn an_open_transaction_aborts_on_timeout_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
    ];
    let broker = Broker::start_in(dir.path(), &args);
    let addr = broker.addr.to_string();
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "ot", 1);
    drop(client);
    let mut open = Background::start(&["open", &broker.bootstrap(), "ot", "tx-open", "4000"]);
    open.wait_for("an open transaction", Duration::from_secs(60), |lines| {
        lines.iter().any(|l| l == "OPEN")
    });
    // The producer dies with its transaction open, and the broker restarts.
    open.kill();
    drop(broker);
    let broker = Broker::start_at(dir.path(), &addr, &args);
    script(
        &[
            "alternate",
            &broker.bootstrap(),
            "ot",
            "tx-after",
            "1",
            "3",
            "1",
        ],
        Duration::from_secs(60),
    );
    // The committed transaction behind the open one becomes readable once the open one aborts.
    let started = Instant::now();
    let seen = read_all(&broker, "ot", "read_committed", 3);
    let values: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(
        values,
        vec!["t0-0", "t0-1", "t0-2"],
        "after {:?}",
        started.elapsed()
    );
    let seen = read_all(&broker, "ot", "read_uncommitted", 4);
    let values: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(values, vec!["open", "t0-0", "t0-1", "t0-2"]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(
        describe(&mut client, "tx-open").transaction_state.as_str(),
        "CompleteAbort"
    );
}

#[test]
fn consume_transform_produce_killed_and_restarted_outputs_each_input_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "ctp-in", 3);
    create_topic(&mut client, "ctp-out", 3);
    drop(client);
    let count = 600;
    script(
        &["seed", &broker.bootstrap(), "ctp-in", &count.to_string()],
        Duration::from_secs(60),
    );
    let args = [
        "ctp",
        &broker.bootstrap(),
        "ctp-in",
        "ctp-out",
        "ctp-group",
        "tx-ctp",
        "0.1",
        "8",
    ];
    let mut first = Background::start(&args);
    first.wait_for("some progress", Duration::from_secs(60), |lines| {
        lines.iter().any(|l| {
            l.strip_prefix("P ")
                .is_some_and(|n| n.parse::<usize>().unwrap() >= 100)
        })
    });
    // Killed in the middle of its work (it pauses inside every transaction).
    first.kill();
    let mut second = Background::start(&args);
    second.wait_for("the end", Duration::from_secs(150), |lines| {
        lines.iter().any(|l| l.starts_with("DONE"))
    });
    let seen = read_all(&broker, "ctp-out", "read_committed", count);
    let mut values: Vec<usize> = seen.iter().map(|s| s.1.parse().unwrap()).collect();
    values.sort_unstable();
    assert_eq!(
        values,
        (0..count).collect::<Vec<_>>(),
        "each input exactly once"
    );
}

#[test]
fn a_zombie_producer_is_fenced_by_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "zf", 1);
    let out = script(
        &["fence", &broker.bootstrap(), "zf", "tx-zombie"],
        Duration::from_secs(90),
    );
    let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_ne!(result["zombie_commit"], "committed", "{result}");
    assert_eq!(result["zombie_fatal"], true, "{result}");
    assert_eq!(result["successor"], "committed");
    let seen = read_all(&broker, "zf", "read_committed", 1);
    let values: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(values, vec!["successor"]);
}

#[test]
fn idle_transactional_ids_expire() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--set",
        "transactional.id.expiration.ms=1000",
        "--set",
        "transaction.remove.expired.transaction.cleanup.interval.ms=200",
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
    ];
    let broker = Broker::start_in(dir.path(), &args);
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "ex", 1);
    init_retrying(&mut client, "tx-idle", 60_000);
    // An id inside a transaction does not expire, however long it is idle.
    let (id, epoch) = init_retrying(&mut client, "tx-busy", 60_000);
    assert_eq!(
        add_partitions(&mut client, 3, "tx-busy", (id, epoch), &[("ex", 0)]),
        vec![0]
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while describe(&mut client, "tx-idle").error_code != TRANSACTIONAL_ID_NOT_FOUND {
        assert!(Instant::now() < deadline, "tx-idle never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        describe(&mut client, "tx-busy").transaction_state.as_str(),
        "Ongoing"
    );
    let (_, listed) = list(&mut client, &[], &[]);
    let ids: Vec<&str> = listed
        .iter()
        .map(|t| t.transactional_id.0.as_str())
        .collect();
    assert_eq!(ids, vec!["tx-busy"]);
    // The expiry is in the log: still gone after a restart.
    let addr = broker.addr.to_string();
    drop(client);
    assert!(broker.stop().success());
    let broker = Broker::start_at(dir.path(), &addr, &args);
    let mut client = RawClient::connect(broker.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = describe(&mut client, "tx-idle");
        if d.error_code == TRANSACTIONAL_ID_NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "after restart: {d:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// kafka-python's `send_offsets_to_transaction` naming a partition the topic does not have:
/// every TxnOffsetCommit is answered UNKNOWN_TOPIC_OR_PARTITION for it (retriable, so the client
/// keeps trying, as against Kafka), also after the coordinator aborted the timed-out
/// transaction with a new producer epoch, which must not turn the answer into PRODUCER_FENCED.
#[test]
fn txn_offset_commit_for_a_missing_partition_is_unknown_topic_or_partition() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
        ],
    );
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "one", 1);
    let script = r#"
import json, logging, os, re, sys, threading
from kafka import KafkaProducer
from kafka.structs import TopicPartition, OffsetAndMetadata
codes = set()
class Codes(logging.Handler):
    def emit(self, record):
        text = record.getMessage()
        if 'Received transactional response TxnOffsetCommitResponse' in text:
            codes.update(int(c) for c in re.findall(r'error_code=(\d+)', text))
log = logging.getLogger('kafka.producer.transaction_manager')
log.setLevel(logging.DEBUG)
log.addHandler(Codes())
p = KafkaProducer(bootstrap_servers=sys.argv[1], transactional_id='tx-missing',
                  transaction_timeout_ms=1000)
p.init_transactions()
p.begin_transaction()
outcome = {}
def send():
    try:
        p.send_offsets_to_transaction({TopicPartition('one', 1): OffsetAndMetadata(5, '', -1)}, 'g')
        outcome['result'] = 'committed'
    except Exception as e:
        outcome['result'] = type(e).__name__
t = threading.Thread(target=send, daemon=True)
t.start()
# Well past the transaction timeout and the coordinator's abort of it.
t.join(4)
print(json.dumps({'result': outcome.get('result', 'retrying'), 'codes': sorted(codes)}), flush=True)
os._exit(0)
"#;
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &["-c", script, &broker.bootstrap()],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        out,
        serde_json::json!({"result": "retrying", "codes": [UNKNOWN_TOPIC_OR_PARTITION]})
    );
    // The transaction was aborted with a bumped epoch meanwhile.
    wait_for_state(
        &mut client,
        "tx-missing",
        "CompleteAbort",
        Duration::from_secs(10),
    );
}

/// ListOffsets by timestamp, as Kafka: a record inside an open transaction counts for
/// read_uncommitted (below the high watermark) but not for read_committed (at or past the last
/// stable offset), which gets no offset.
#[test]
fn list_offsets_by_timestamp_stops_at_the_last_stable_offset_for_read_committed() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    create_topic(&mut client, "lso", 1);
    let mut open = Background::start(&["open", &broker.bootstrap(), "lso", "tx-lso", "60000"]);
    open.wait_for("an open transaction", Duration::from_secs(60), |lines| {
        lines.iter().any(|l| l == "OPEN")
    });
    let by_time = |client: &mut RawClient, isolation_level: i8| {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation_level)
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(text("lso")))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(0),
                    ]),
            ]);
        let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 7, &request);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.offset)
    };
    assert_eq!(by_time(&mut client, 0), (0, 0), "read_uncommitted");
    assert_eq!(by_time(&mut client, 1), (0, -1), "read_committed");
    open.kill();
}
