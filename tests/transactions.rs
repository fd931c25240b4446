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
        assert_eq!(i32::from(response.port), i32::from(broker.addr.port()));
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
}

/// Runs the client script with `args`, bounded; returns stdout and asserts success.
fn script(args: &[&str], bound: Duration) -> String {
    let mut all = vec![SCRIPT];
    all.extend_from_slice(args);
    let (status, out, err) = run_bounded("python3", &all, bound);
    assert!(status.success(), "{args:?} failed:\n{out}\n{err}");
    out
}
