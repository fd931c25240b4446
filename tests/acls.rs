//! ACLs against the real broker: CreateAcls, DescribeAcls and DeleteAcls through
//! confluent-kafka's AdminClient, enforcement on a real producer, consumer and metadata
//! requests, persistence across a restart, SECURITY_DISABLED without an authorizer, cluster
//! authorization of the ACL APIs themselves, and malformed ACLs and filters at the protocol
//! level.

mod support;

use std::time::Duration;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse, FetchRequest, FetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use support::{Broker, RawClient, run_bounded};

const STANDARD_AUTHORIZER: &str =
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer";
const SECURITY_DISABLED: i16 = 54;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const INVALID_REQUEST: i16 = 42;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

/// Runs a confluent-kafka script with the broker's address as `sys.argv[1]` and `args` after
/// it; returns its stdout parsed as JSON.
fn python(broker: &Broker, script: &str, args: &[&str]) -> serde_json::Value {
    let bootstrap = broker.bootstrap();
    let mut argv = vec!["-c", script, &bootstrap];
    argv.extend_from_slice(args);
    let (status, stdout, stderr) = run_bounded("python3", &argv, Duration::from_secs(120));
    assert!(
        status.success(),
        "script failed: {stderr}\nstdout: {stdout}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|err| panic!("{err}: {stdout}"))
}

const ADMIN_SCRIPT: &str = r#"
import sys, json
from confluent_kafka.admin import (AdminClient, AclBinding, AclBindingFilter, AclOperation,
    AclPermissionType, ResourcePatternType, ResourceType)
a = AdminClient({'bootstrap.servers': sys.argv[1]})
step = sys.argv[2]
T, G, B = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.BROKER
LIT, PRE = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
def name(e):
    err = e.args[0] if e.args else e
    return err.name() if hasattr(err, 'name') else str(e)
def show(bindings):
    return sorted([b.restype.name, b.name, b.resource_pattern_type.name, b.principal, b.host,
                   b.operation.name, b.permission_type.name] for b in bindings)
everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                              AclOperation.ANY, AclPermissionType.ANY)
out = {}
if step == 'create':
    bindings = [
        AclBinding(T, 'secret', LIT, 'User:*', '*', AclOperation.ALL, DENY),
        AclBinding(T, 'logs-', PRE, 'User:alice', '10.0.0.1', AclOperation.READ, ALLOW),
        AclBinding(G, 'g1', LIT, 'User:bob', '*', AclOperation.DESCRIBE, ALLOW),
        # Once an ACL names the cluster, allow.everyone.if.no.acl.found no longer covers it:
        # the anonymous principal keeps ACL rights (ALTER implies DESCRIBE) through this one.
        AclBinding(B, 'kafka-cluster', LIT, 'User:ANONYMOUS', '*', AclOperation.ALTER, ALLOW),
        # Invalid: the cluster resource has one name.
        AclBinding(B, 'not-the-cluster', LIT, 'User:ops', '*', AclOperation.ALTER, ALLOW),
    ]
    results = a.create_acls(bindings, request_timeout=30)
    out['create'] = []
    for b in bindings:
        try:
            results[b].result()
            out['create'].append('ok')
        except Exception as e:
            out['create'].append(name(e))
    # Creating an existing ACL again is not an error and adds nothing.
    a.create_acls([bindings[0]], request_timeout=30)[bindings[0]].result()
if step == 'delete':
    f = AclBindingFilter(ResourceType.TOPIC, 'logs-topic', ResourcePatternType.MATCH, None, None,
                         AclOperation.ANY, AclPermissionType.ANY)
    out['deleted'] = show(a.delete_acls([f], request_timeout=30)[f].result())
if step == 'disabled':
    b = AclBinding(T, 't', LIT, 'User:*', '*', AclOperation.READ, ALLOW)
    try:
        a.create_acls([b], request_timeout=30)[b].result()
        out['create'] = 'ok'
    except Exception as e:
        out['create'] = name(e)
    print(json.dumps(out))
    sys.exit(0)
out['all'] = show(a.describe_acls(everything, request_timeout=30).result())
match = AclBindingFilter(ResourceType.TOPIC, 'logs-today', ResourcePatternType.MATCH, None, None,
                         AclOperation.ANY, AclPermissionType.ANY)
out['match'] = show(a.describe_acls(match, request_timeout=30).result())
print(json.dumps(out))
"#;

fn row(items: [&str; 7]) -> serde_json::Value {
    serde_json::json!(items)
}

#[test]
fn acl_admin_through_confluent_kafka_persists_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--set",
        STANDARD_AUTHORIZER,
        "--set",
        "allow.everyone.if.no.acl.found=true",
    ];
    let broker = Broker::start_in(dir.path(), &args);
    let out = python(&broker, ADMIN_SCRIPT, &["create"]);
    assert_eq!(
        out["create"],
        serde_json::json!(["ok", "ok", "ok", "ok", "INVALID_REQUEST"])
    );
    let secret = row(["TOPIC", "secret", "LITERAL", "User:*", "*", "ALL", "DENY"]);
    let logs = row([
        "TOPIC",
        "logs-",
        "PREFIXED",
        "User:alice",
        "10.0.0.1",
        "READ",
        "ALLOW",
    ]);
    let group = row([
        "GROUP", "g1", "LITERAL", "User:bob", "*", "DESCRIBE", "ALLOW",
    ]);
    let cluster = row([
        "BROKER",
        "kafka-cluster",
        "LITERAL",
        "User:ANONYMOUS",
        "*",
        "ALTER",
        "ALLOW",
    ]);
    let mut all = vec![secret.clone(), logs.clone(), group.clone(), cluster.clone()];
    all.sort_by_key(|v| v.to_string());
    let sorted = |v: &serde_json::Value| {
        let mut rows = v.as_array().unwrap().clone();
        rows.sort_by_key(|r| r.to_string());
        rows
    };
    assert_eq!(sorted(&out["all"]), all);
    assert_eq!(out["match"], serde_json::json!([logs]));

    // Persisted in the metadata log: the same ACLs after a restart.
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &args);
    let out = python(&broker, ADMIN_SCRIPT, &["delete"]);
    assert_eq!(out["deleted"], serde_json::json!([logs]));
    let mut left = vec![secret, group, cluster];
    left.sort_by_key(|v| v.to_string());
    assert_eq!(sorted(&out["all"]), left);
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &args);
    let out = python(&broker, ADMIN_SCRIPT, &["list"]);
    assert_eq!(sorted(&out["all"]), left);
}

#[test]
fn without_an_authorizer_acl_apis_answer_security_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let out = python(&broker, ADMIN_SCRIPT, &["disabled"]);
    assert_eq!(out["create"], "SECURITY_DISABLED");
    // librdkafka does not surface DescribeAcls' top-level error: look at it directly.
    let mut client = connect(&broker);
    let response: DescribeAclsResponse =
        client.call(ApiKey::DescribeAcls, 1, &describe_everything());
    assert_eq!(response.error_code, SECURITY_DISABLED);
    let response: DeleteAclsResponse = client.call(
        ApiKey::DeleteAcls,
        1,
        &DeleteAclsRequest::default().with_filters(vec![filter()]),
    );
    assert_eq!(response.filter_results[0].error_code, SECURITY_DISABLED);
}

const ENFORCE_SCRIPT: &str = r#"
import sys, json, time
from confluent_kafka import Producer, Consumer, TopicPartition, KafkaError
from confluent_kafka.admin import (AdminClient, NewTopic, AclBinding, AclOperation,
    AclPermissionType, ResourcePatternType, ResourceType)
bs = sys.argv[1]
a = AdminClient({'bootstrap.servers': bs})
for f in a.create_topics([NewTopic('secret', 1, 1), NewTopic('open', 1, 1)]).values():
    f.result()
deny = AclBinding(ResourceType.TOPIC, 'secret', ResourcePatternType.LITERAL, 'User:*', '*',
                  AclOperation.ALL, AclPermissionType.DENY)
a.create_acls([deny])[deny].result()
out = {}
md = a.list_topics(timeout=20)
out['listed'] = sorted(t for t in md.topics if not t.startswith('__'))
md = a.list_topics(topic='secret', timeout=20)
out['named'] = md.topics['secret'].error.name() if md.topics['secret'].error else 'none'
delivered = {}
def report(err, msg):
    delivered[msg.topic()] = err.name() if err else 'ok'
p = Producer({'bootstrap.servers': bs, 'message.timeout.ms': 10000, 'acks': 'all'})
p.produce('open', b'fine', callback=report)
p.produce('secret', b'refused', callback=report)
p.flush(30)
out['produce'] = delivered
def consume(topic):
    c = Consumer({'bootstrap.servers': bs, 'group.id': 'acl-test-' + topic,
                  'auto.offset.reset': 'earliest', 'enable.partition.eof': True})
    c.subscribe([topic])
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return m.error().name()
            return m.value().decode()
        return 'timeout'
    finally:
        c.close()
out['consume_open'] = consume('open')
out['consume_secret'] = consume('secret')
print(json.dumps(out))
"#;

#[test]
fn a_deny_acl_stops_producers_consumers_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            STANDARD_AUTHORIZER,
            "--set",
            "allow.everyone.if.no.acl.found=true",
        ],
    );
    let out = python(&broker, ENFORCE_SCRIPT, &[]);
    assert_eq!(out["listed"], serde_json::json!(["open"]), "{out}");
    assert_eq!(out["named"], "TOPIC_AUTHORIZATION_FAILED");
    assert_eq!(out["produce"]["open"], "ok");
    assert_eq!(out["produce"]["secret"], "TOPIC_AUTHORIZATION_FAILED");
    assert_eq!(out["consume_open"], "fine");
    assert_eq!(out["consume_secret"], "TOPIC_AUTHORIZATION_FAILED");
    // Fetch itself refuses the topic (a client that skips Metadata).
    let request = FetchRequest::default()
        .with_max_wait_ms(10)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(text("secret")))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let mut client = connect(&broker);
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
    assert_eq!(
        response.responses[0].partitions[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
}

/// A raw connection with a generous read bound: an fsync on a machine busy with other work
/// can take seconds.
fn connect(broker: &Broker) -> RawClient {
    let client = RawClient::connect(broker.addr);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    client
}

fn text(s: &'static str) -> StrBytes {
    StrBytes::from_static_str(s)
}

fn creation(
    resource_type: i8,
    name: &'static str,
    pattern: i8,
    principal: &'static str,
) -> AclCreation {
    AclCreation::default()
        .with_resource_type(resource_type)
        .with_resource_name(text(name))
        .with_resource_pattern_type(pattern)
        .with_principal(text(principal))
        .with_host(text("*"))
        .with_operation(3)
        .with_permission_type(3)
}

fn describe_everything() -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(1)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1)
}

fn filter() -> DeleteAclsFilter {
    DeleteAclsFilter::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1)
}

#[test]
fn acl_apis_need_cluster_rights_and_refuse_malformed_acls() {
    // Without allow.everyone.if.no.acl.found, the anonymous principal may not alter ACLs.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", STANDARD_AUTHORIZER]);
    let mut client = connect(&broker);
    let request = CreateAclsRequest::default().with_creations(vec![creation(2, "t", 3, "User:a")]);
    let response: CreateAclsResponse = client.call(ApiKey::CreateAcls, 2, &request);
    assert_eq!(response.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED);
    let response: DescribeAclsResponse =
        client.call(ApiKey::DescribeAcls, 2, &describe_everything());
    assert_eq!(response.error_code, CLUSTER_AUTHORIZATION_FAILED);
    assert!(broker.stop().success());

    // A super user may; every malformed ACL is refused on its own, the valid one is created.
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            STANDARD_AUTHORIZER,
            "--set",
            "super.users=User:admin;User:ANONYMOUS",
        ],
    );
    let mut client = connect(&broker);
    let creations = vec![
        creation(2, "t", 3, "User:a"),
        creation(1, "t", 3, "User:a"),     // resource type ANY
        creation(9, "t", 3, "User:a"),     // unknown resource type
        creation(2, "t", 2, "User:a"),     // pattern MATCH
        creation(2, "", 3, "User:a"),      // empty name
        creation(2, "t", 3, "nobody"),     // principal without a type
        creation(4, "other", 3, "User:a"), // cluster resource with another name
        creation(2, "t", 3, "User:a").with_operation(1), // operation ANY
        creation(2, "t", 3, "User:a").with_permission_type(1), // permission ANY
    ];
    let count = creations.len();
    let request = CreateAclsRequest::default().with_creations(creations);
    let response: CreateAclsResponse = client.call(ApiKey::CreateAcls, 3, &request);
    let codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
    let mut expected = vec![INVALID_REQUEST; count];
    expected[0] = 0;
    assert_eq!(codes, expected);
    // An unknown filter code is INVALID_REQUEST; a good filter finds the one ACL.
    let bad = describe_everything().with_resource_type_filter(0);
    let response: DescribeAclsResponse = client.call(ApiKey::DescribeAcls, 1, &bad);
    assert_eq!(response.error_code, INVALID_REQUEST);
    let good = bad.with_resource_type_filter(1);
    let response: DescribeAclsResponse = client.call(ApiKey::DescribeAcls, 1, &good);
    assert_eq!(response.error_code, 0);
    assert_eq!(response.resources.len(), 1);
    assert_eq!(response.resources[0].resource_name.as_str(), "t");
    let request =
        DeleteAclsRequest::default().with_filters(vec![filter().with_operation(0), filter()]);
    let response: DeleteAclsResponse = client.call(ApiKey::DeleteAcls, 1, &request);
    assert_eq!(response.filter_results[0].error_code, INVALID_REQUEST);
    assert_eq!(response.filter_results[1].error_code, 0);
    assert_eq!(response.filter_results[1].matching_acls.len(), 1);
    let response: DescribeAclsResponse = client.call(ApiKey::DescribeAcls, 1, &good);
    assert!(response.resources.is_empty());
}

#[test]
fn deny_acls_reach_groups_admin_apis_and_producer_ids() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{
        CreateTopicsRequest, CreateTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
        GroupId, InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest,
        JoinGroupResponse,
    };
    const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            STANDARD_AUTHORIZER,
            "--set",
            "allow.everyone.if.no.acl.found=true",
        ],
    );
    let mut client = connect(&broker);
    let deny = |resource_type: i8, name: &'static str, pattern: i8, operation: i8| {
        creation(resource_type, name, pattern, "User:*")
            .with_operation(operation)
            .with_permission_type(2)
    };
    // Once an ACL names a resource, allow.everyone.if.no.acl.found no longer covers it: the
    // wildcard DENY names every topic, so topics that stay usable need an ALLOW (free-*).
    let request = CreateAclsRequest::default().with_creations(vec![
        deny(2, "locked-", 4, 2),        // every operation on topics named locked-*
        deny(3, "locked-group", 3, 3),   // READ on one group
        deny(2, "*", 3, 4),              // WRITE on every topic
        deny(4, "kafka-cluster", 3, 12), // IDEMPOTENT_WRITE on the cluster
        creation(2, "free-", 4, "User:*").with_operation(2), // ALLOW everything on free-*
    ]);
    let response: CreateAclsResponse = client.call(ApiKey::CreateAcls, 3, &request);
    assert!(
        response.results.iter().all(|r| r.error_code == 0),
        "{response:?}"
    );
    // The cluster is named by an ACL now, and nothing allows ALTER on it.
    let response: CreateAclsResponse = client.call(ApiKey::CreateAcls, 3, &request);
    assert!(
        response
            .results
            .iter()
            .all(|r| r.error_code == CLUSTER_AUTHORIZATION_FAILED),
        "{response:?}"
    );

    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(text("locked-t")))
                .with_num_partitions(1)
                .with_replication_factor(1),
            CreatableTopic::default()
                .with_name(TopicName(text("free-t")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 5, &request);
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, vec![TOPIC_AUTHORIZATION_FAILED, 0]);

    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("locked-t"))
            .with_configuration_keys(None),
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("free-t"))
            .with_configuration_keys(None),
    ]);
    let response: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, 4, &request);
    let codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![TOPIC_AUTHORIZATION_FAILED, 0]);

    let join = |group: &'static str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(text(""))
            .with_protocol_type(text("consumer"))
    };
    let response: JoinGroupResponse = client.call(ApiKey::JoinGroup, 5, &join("locked-group"));
    assert_eq!(response.error_code, GROUP_AUTHORIZATION_FAILED);
    // An empty protocol list is refused by the coordinator itself: the request got past the
    // authorizer.
    let response: JoinGroupResponse = client.call(ApiKey::JoinGroup, 5, &join("free-group"));
    assert_ne!(response.error_code, GROUP_AUTHORIZATION_FAILED);

    // No IDEMPOTENT_WRITE on the cluster and WRITE denied on every topic (KIP-679).
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let response: InitProducerIdResponse = client.call(ApiKey::InitProducerId, 4, &request);
    assert_eq!(response.error_code, CLUSTER_AUTHORIZATION_FAILED);
}

#[test]
fn transaction_apis_check_transactional_id_group_and_topic_acls() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
        AddPartitionsToTxnResponse, CreateTopicsRequest, CreateTopicsResponse,
        DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
        GroupId, InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
        ListTransactionsResponse, ProducerId, TransactionalId, TxnOffsetCommitRequest,
        TxnOffsetCommitResponse,
    };
    const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    const OPERATION_NOT_ATTEMPTED: i16 = 55;
    const TXN_ID: i8 = 5;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            STANDARD_AUTHORIZER,
            "--set",
            "allow.everyone.if.no.acl.found=true",
        ],
    );
    // Every read is bounded by the connection's timeout (`connect`).
    let mut client = connect(&broker);
    let topics = ["open", "secret", "hidden"].map(|name| {
        CreatableTopic::default()
            .with_name(TopicName(text(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)
    });
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(topics.to_vec());
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 5, &request);
    assert!(
        response.topics.iter().all(|t| t.error_code == 0),
        "{response:?}"
    );

    let deny = |resource_type: i8, name: &'static str, pattern: i8, operation: i8| {
        creation(resource_type, name, pattern, "User:*")
            .with_operation(operation)
            .with_permission_type(2)
    };
    let allow = |resource_type: i8, name: &'static str, operation: i8| {
        creation(resource_type, name, 3, "User:*").with_operation(operation)
    };
    let request = CreateAclsRequest::default().with_creations(vec![
        deny(TXN_ID, "locked-", 4, 2), // everything on transactional ids locked-*
        deny(TXN_ID, "quiet-txn", 3, 8), // DESCRIBE on one id ...
        allow(TXN_ID, "quiet-txn", 4), // ... which may still WRITE
        deny(2, "secret", 3, 2),       // everything on topic secret
        deny(2, "hidden", 3, 8),       // DESCRIBE on topic hidden ...
        allow(2, "hidden", 4),         // ... which may still be written
        deny(3, "locked-group", 3, 3), // READ on one group
    ]);
    let response: CreateAclsResponse = client.call(ApiKey::CreateAcls, 3, &request);
    assert!(
        response.results.iter().all(|r| r.error_code == 0),
        "{response:?}"
    );

    let init = |client: &mut RawClient, id: &'static str| -> InitProducerIdResponse {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(text(id))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        client.call(ApiKey::InitProducerId, 4, &request)
    };
    let locked = init(&mut client, "locked-a");
    assert_eq!(locked.error_code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    let quiet = init(&mut client, "quiet-txn");
    assert_eq!(quiet.error_code, 0, "WRITE is allowed on quiet-txn");
    let ok = init(&mut client, "ok-txn");
    assert_eq!(ok.error_code, 0);
    let (pid, epoch) = (ok.producer_id, ok.producer_epoch);

    let add = |client: &mut RawClient, id: &'static str, names: &[&'static str]| {
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(text(id)))
            .with_v3_and_below_producer_id(pid)
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(
                names
                    .iter()
                    .map(|&n| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(text(n)))
                            .with_partitions(vec![0])
                    })
                    .collect(),
            );
        let response: AddPartitionsToTxnResponse =
            client.call(ApiKey::AddPartitionsToTxn, 3, &request);
        response
            .results_by_topic_v3_and_below
            .iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.results_by_partition[0].partition_error_code,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        add(&mut client, "locked-a", &["open"]),
        vec![("open".into(), TRANSACTIONAL_ID_AUTHORIZATION_FAILED)]
    );
    assert_eq!(
        add(&mut client, "ok-txn", &["open", "secret"]),
        vec![
            ("open".into(), OPERATION_NOT_ATTEMPTED),
            ("secret".into(), TOPIC_AUTHORIZATION_FAILED)
        ]
    );
    assert_eq!(
        add(&mut client, "ok-txn", &["open", "hidden"]),
        vec![("open".into(), 0), ("hidden".into(), 0)]
    );

    let add_offsets = |client: &mut RawClient, id: &'static str, group: &'static str| {
        let request = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(text(id)))
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(text(group)));
        let response: AddOffsetsToTxnResponse = client.call(ApiKey::AddOffsetsToTxn, 3, &request);
        response.error_code
    };
    assert_eq!(
        add_offsets(&mut client, "locked-a", "g"),
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    assert_eq!(
        add_offsets(&mut client, "ok-txn", "locked-group"),
        GROUP_AUTHORIZATION_FAILED
    );
    assert_eq!(add_offsets(&mut client, "ok-txn", "g"), 0);

    let commit = |client: &mut RawClient, id: &'static str, group: &'static str| {
        let topics = ["open", "secret"].map(|n| {
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(text(n)))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(0),
                ])
        });
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(text(id)))
            .with_group_id(GroupId(text(group)))
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_member_id(text(""))
            .with_topics(topics.to_vec());
        let response: TxnOffsetCommitResponse = client.call(ApiKey::TxnOffsetCommit, 3, &request);
        let mut codes: Vec<(String, i16)> = response
            .topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partitions[0].error_code))
            .collect();
        codes.sort();
        codes
    };
    let locked = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
    assert_eq!(
        commit(&mut client, "locked-a", "g"),
        vec![("open".into(), locked), ("secret".into(), locked)]
    );
    let refused = GROUP_AUTHORIZATION_FAILED;
    assert_eq!(
        commit(&mut client, "ok-txn", "locked-group"),
        vec![("open".into(), refused), ("secret".into(), refused)]
    );
    assert_eq!(
        commit(&mut client, "ok-txn", "g"),
        vec![
            ("open".into(), 0),
            ("secret".into(), TOPIC_AUTHORIZATION_FAILED)
        ]
    );

    let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![
        TransactionalId(text("locked-a")),
        TransactionalId(text("quiet-txn")),
        TransactionalId(text("ok-txn")),
    ]);
    let response: DescribeTransactionsResponse =
        client.call(ApiKey::DescribeTransactions, 0, &request);
    let codes: Vec<i16> = response
        .transaction_states
        .iter()
        .map(|s| s.error_code)
        .collect();
    assert_eq!(
        codes,
        vec![
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            0
        ]
    );
    let mut described: Vec<String> = response.transaction_states[2]
        .topics
        .iter()
        .map(|t| t.topic.0.to_string())
        .collect();
    described.sort();
    assert_eq!(
        described,
        vec!["__consumer_offsets", "open"],
        "hidden is left out"
    );

    let response: ListTransactionsResponse = client.call(
        ApiKey::ListTransactions,
        1,
        &ListTransactionsRequest::default(),
    );
    assert_eq!(response.error_code, 0);
    let listed: Vec<String> = response
        .transaction_states
        .iter()
        .map(|s| s.transactional_id.0.to_string())
        .collect();
    assert_eq!(listed, vec!["ok-txn"], "quiet-txn may not be described");

    let end = |client: &mut RawClient, id: &'static str| {
        let request = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(text(id)))
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_committed(true);
        let response: EndTxnResponse = client.call(ApiKey::EndTxn, 3, &request);
        response.error_code
    };
    assert_eq!(
        end(&mut client, "locked-a"),
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    assert_eq!(end(&mut client, "ok-txn"), 0);
}
