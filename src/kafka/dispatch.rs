//! Request dispatch: the table of handlers, header parsing and version negotiation.
//!
//! Owner: called by a connection's reader task on the shard that accepted the connection, once
//! per frame and in arrival order. `dispatch` itself is synchronous: it parses the header,
//! picks the handler and returns the handler's future, which the connection runs as a task.
//!
//! `HANDLERS` is the only list of supported APIs: ApiVersions is built from it, so the broker
//! can never advertise an API or a version that has no handler. Each handler declares its
//! version range next to its code.
//!
//! What Kafka does with a request it cannot serve, and so what we do:
//! - a frame too short for a header, an API key we do not serve, or a header that does not
//!   parse: the connection is closed (Kafka cannot answer without a parsed header);
//! - an unsupported version of ApiVersions: answered with UNSUPPORTED_VERSION and a version 0
//!   body listing what we support (KIP-511), so the client can pick a version and retry;
//! - an unsupported version of any other API: the connection is closed, as Kafka does;
//! - a body that does not decode at the requested version: the connection is closed.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, VersionRange};

use crate::acl::Session;
use crate::broker::ShardContext;
use crate::kafka::{
    add_offsets_to_txn, add_partitions_to_txn, alter_client_quotas, alter_configs,
    alter_user_scram_credentials, api_versions, create_acls, create_partitions, create_topics,
    delete_acls, delete_groups, delete_records, delete_topics, describe_acls,
    describe_client_quotas, describe_cluster, describe_configs, describe_groups, describe_log_dirs,
    describe_producers, describe_quorum, describe_transactions, describe_user_scram_credentials,
    elect_leaders, end_txn, fetch, find_coordinator, heartbeat, init_producer_id, join_group,
    leave_group, legacy_versions, list_groups, list_offsets, list_transactions, metadata,
    offset_commit, offset_delete, offset_fetch, offset_for_leader_epoch, produce,
    sasl_authenticate, sasl_handshake, sync_group, txn_offset_commit, write_txn_markers,
};

/// A request whose header has been parsed; `body` is the rest of the frame, not yet decoded.
#[derive(Debug)]
pub struct Request {
    /// The API.
    pub api_key: ApiKey,
    /// The request header (API key, version, correlation id, client id).
    pub header: RequestHeader,
    /// The undecoded request body.
    pub body: Bytes,
    /// Who sent it, from where: what the authorizer checks.
    pub session: Rc<Session>,
}

impl Request {
    /// The API version the client used.
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    /// Decodes the body as `M` at the request's version. A body that does not decode ends the
    /// connection, as in Kafka.
    pub fn decode<M: Decodable>(&self) -> Result<M, HandlerOutcome> {
        let mut body = self.body.clone();
        M::decode(&mut body, self.version()).map_err(|err| {
            HandlerOutcome::Close(format!(
                "malformed {:?} v{} request: {err}",
                self.api_key,
                self.version()
            ))
        })
    }

    /// Encodes `message` as this request's response.
    pub fn respond<M: Encodable>(&self, message: &M) -> HandlerOutcome {
        encode_response(
            self.api_key,
            self.version(),
            self.header.correlation_id,
            message,
        )
    }
}

/// The future a handler returns.
pub type HandlerFuture = LocalBoxFuture<'static, HandlerOutcome>;

/// One API's handler and the versions it serves.
#[derive(Debug)]
pub struct ApiHandler {
    /// The API.
    pub key: ApiKey,
    /// The versions the handler implements, every one of them fully.
    pub versions: VersionRange,
    /// Serves one request.
    pub handle: fn(Rc<ShardContext>, Request) -> HandlerFuture,
}

/// Every API the broker serves. See the module documentation.
pub static HANDLERS: &[ApiHandler] = &[
    produce::HANDLER,
    fetch::HANDLER,
    list_offsets::HANDLER,
    metadata::HANDLER,
    offset_for_leader_epoch::HANDLER,
    init_producer_id::HANDLER,
    delete_records::HANDLER,
    api_versions::HANDLER,
    sasl_handshake::HANDLER,
    sasl_authenticate::HANDLER,
    create_topics::HANDLER,
    delete_topics::HANDLER,
    create_partitions::HANDLER,
    elect_leaders::HANDLER,
    describe_configs::HANDLER,
    describe_log_dirs::HANDLER,
    describe_producers::HANDLER,
    alter_configs::ALTER_CONFIGS,
    alter_configs::INCREMENTAL_ALTER_CONFIGS,
    describe_cluster::HANDLER,
    describe_quorum::HANDLER,
    find_coordinator::HANDLER,
    join_group::HANDLER,
    sync_group::HANDLER,
    heartbeat::HANDLER,
    leave_group::HANDLER,
    offset_commit::HANDLER,
    offset_fetch::HANDLER,
    list_groups::HANDLER,
    describe_groups::HANDLER,
    delete_groups::HANDLER,
    offset_delete::HANDLER,
    describe_acls::HANDLER,
    create_acls::HANDLER,
    delete_acls::HANDLER,
    describe_user_scram_credentials::HANDLER,
    alter_user_scram_credentials::HANDLER,
    describe_client_quotas::HANDLER,
    alter_client_quotas::HANDLER,
    add_partitions_to_txn::HANDLER,
    add_offsets_to_txn::HANDLER,
    end_txn::HANDLER,
    txn_offset_commit::HANDLER,
    describe_transactions::HANDLER,
    list_transactions::HANDLER,
    write_txn_markers::HANDLER,
];

/// The handler for `key`, if the broker serves that API.
pub fn handler_for(key: i16) -> Option<&'static ApiHandler> {
    HANDLERS.iter().find(|h| h.key as i16 == key)
}

/// What a handler produced.
#[derive(Debug)]
pub enum HandlerOutcome {
    /// A response to send.
    Respond(ResponseFrame),
    /// The request gets no response (a produce with acks=0); a client quota's throttle time
    /// still mutes the connection for `throttle_ms` (KIP-219).
    NoResponse {
        /// Milliseconds to read nothing more from the client; usually zero.
        throttle_ms: u64,
    },
    /// The request cannot be served; close the connection after logging the reason.
    Close(String),
}

/// An encoded response, ready for the socket.
#[derive(Debug)]
pub struct ResponseFrame {
    /// The request's correlation id.
    pub correlation_id: i32,
    /// Response header v1 (with a tagged-field section) rather than v0.
    pub flexible_header: bool,
    /// No response header at all: a SASL token after SaslHandshake v0, which travels as the
    /// size and the bytes alone (KIP-43).
    pub headerless: bool,
    /// The encoded body, in one or more chunks that go to the socket as they are.
    pub body: Vec<Bytes>,
    /// A client quota's throttle time the response carries: the connection reads nothing
    /// more from the client for that long (KIP-219). Zero for most responses.
    pub throttle_ms: u64,
}

impl ResponseFrame {
    /// Bytes of the body.
    pub fn len_bytes(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }
}

/// Encodes `message` as the response to a request of `api_key` at `version`.
pub fn encode_response<M: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    message: &M,
) -> HandlerOutcome {
    let mut body = BytesMut::new();
    match message.encode(&mut body, version) {
        Ok(()) => HandlerOutcome::Respond(ResponseFrame {
            correlation_id,
            throttle_ms: 0,
            flexible_header: api_key.response_header_version(version) >= 1,
            headerless: false,
            body: vec![body.freeze()],
        }),
        // Our own response does not encode: a bug, but one that must cost one connection, not
        // the broker.
        Err(err) => HandlerOutcome::Close(format!(
            "cannot encode {api_key:?} v{version} response: {err}"
        )),
    }
}

/// The result of dispatching one frame.
pub enum Dispatched {
    /// The handler's future, to be run as a task; its outcome goes to the socket in order.
    Started {
        /// The API being served.
        api_key: i16,
        /// The handler's work.
        future: HandlerFuture,
    },
    /// The request cannot be served at all; close the connection with this reason.
    Refused(String),
}

impl std::fmt::Debug for Dispatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dispatched::Started { api_key, .. } => write!(f, "Started({api_key})"),
            Dispatched::Refused(reason) => write!(f, "Refused({reason})"),
        }
    }
}

/// What a frame's header says, before any handler runs.
#[derive(Debug)]
pub enum ParsedFrame {
    /// A served API at a served version, with its header parsed and its body not yet decoded.
    Request {
        /// The API's handler.
        handler: &'static ApiHandler,
        /// The parsed header.
        header: RequestHeader,
        /// The rest of the frame.
        body: Bytes,
    },
    /// ApiVersions at a version we do not serve: answered with UNSUPPORTED_VERSION (KIP-511).
    UnsupportedApiVersions {
        /// The request's correlation id.
        correlation_id: i32,
    },
    /// The request cannot be served at all; close the connection with this reason.
    Refused(String),
}

/// Parses the header of `frame` (a request without its size prefix). See the module
/// documentation for what is refused. Public for the fuzz targets (`tests/fuzz`).
pub fn parse_frame(frame: Bytes) -> ParsedFrame {
    // api_key, api_version and correlation_id are the first 8 bytes of every header version.
    if frame.len() < 8 {
        return ParsedFrame::Refused(format!(
            "request of {} bytes is too short for a request header",
            frame.len()
        ));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Some(handler) = handler_for(key) else {
        let name = ApiKey::try_from(key)
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|_| "unknown".to_string());
        return ParsedFrame::Refused(format!("API key {key} ({name}) is not supported"));
    };
    if version < handler.versions.min || version > handler.versions.max {
        if handler.key == ApiKey::ApiVersions {
            return ParsedFrame::UnsupportedApiVersions { correlation_id };
        }
        return ParsedFrame::Refused(format!(
            "{:?} v{version} is not supported (supported: v{} to v{})",
            handler.key, handler.versions.min, handler.versions.max
        ));
    }
    let mut body = frame;
    let header_version = handler.key.request_header_version(version);
    match RequestHeader::decode(&mut body, header_version) {
        Ok(header) => ParsedFrame::Request {
            handler,
            header,
            body,
        },
        Err(err) => ParsedFrame::Refused(format!(
            "malformed {:?} v{version} request header: {err}",
            handler.key
        )),
    }
}

/// Parses `frame`'s header and starts its handler. See the module documentation.
pub fn dispatch(context: &Rc<ShardContext>, session: &Rc<Session>, frame: Bytes) -> Dispatched {
    match parse_frame(frame) {
        ParsedFrame::Request {
            handler,
            header,
            body,
        } => {
            let request = Request {
                api_key: handler.key,
                header,
                body,
                session: session.clone(),
            };
            Dispatched::Started {
                api_key: handler.key as i16,
                future: (handler.handle)(context.clone(), request),
            }
        }
        ParsedFrame::UnsupportedApiVersions { correlation_id } => Dispatched::Started {
            api_key: ApiKey::ApiVersions as i16,
            future: futures::future::ready(api_versions::unsupported_version(correlation_id))
                .boxed_local(),
        },
        ParsedFrame::Refused(reason) => Dispatched::Refused(reason),
    }
}

/// Decodes `request`'s body exactly as its API's handler does first, and drops the result:
/// the decoding a client's bytes reach before any handler logic. Public for the fuzz targets
/// (`tests/fuzz`); `Err` is the outcome the handler would return (the connection is closed).
pub fn decode_body(request: &Request) -> Result<(), HandlerOutcome> {
    use kafka_protocol::messages::*;
    fn drop_ok<T>(result: Result<T, HandlerOutcome>) -> Result<(), HandlerOutcome> {
        result.map(|_| ())
    }
    match request.api_key {
        ApiKey::Produce => drop_ok(legacy_versions::decode_produce(request)),
        ApiKey::Fetch => drop_ok(legacy_versions::decode_fetch(request)),
        ApiKey::ListOffsets if request.version() == 0 => {
            drop_ok(legacy_versions::decode_list_offsets_v0(request))
        }
        ApiKey::ListOffsets => drop_ok(request.decode::<ListOffsetsRequest>()),
        ApiKey::Metadata => drop_ok(request.decode::<MetadataRequest>()),
        ApiKey::OffsetForLeaderEpoch => drop_ok(request.decode::<OffsetForLeaderEpochRequest>()),
        ApiKey::InitProducerId => drop_ok(request.decode::<InitProducerIdRequest>()),
        ApiKey::DeleteRecords => drop_ok(request.decode::<DeleteRecordsRequest>()),
        ApiKey::ApiVersions => drop_ok(request.decode::<ApiVersionsRequest>()),
        ApiKey::SaslHandshake => drop_ok(request.decode::<SaslHandshakeRequest>()),
        ApiKey::SaslAuthenticate => drop_ok(request.decode::<SaslAuthenticateRequest>()),
        ApiKey::CreateTopics => drop_ok(request.decode::<CreateTopicsRequest>()),
        ApiKey::DeleteTopics => drop_ok(request.decode::<DeleteTopicsRequest>()),
        ApiKey::CreatePartitions => drop_ok(request.decode::<CreatePartitionsRequest>()),
        ApiKey::ElectLeaders => drop_ok(request.decode::<ElectLeadersRequest>()),
        ApiKey::DescribeConfigs => drop_ok(request.decode::<DescribeConfigsRequest>()),
        ApiKey::AlterConfigs => drop_ok(request.decode::<AlterConfigsRequest>()),
        ApiKey::IncrementalAlterConfigs => {
            drop_ok(request.decode::<IncrementalAlterConfigsRequest>())
        }
        ApiKey::DescribeCluster => drop_ok(request.decode::<DescribeClusterRequest>()),
        ApiKey::DescribeQuorum => drop_ok(request.decode::<DescribeQuorumRequest>()),
        ApiKey::DescribeLogDirs => drop_ok(request.decode::<DescribeLogDirsRequest>()),
        ApiKey::DescribeProducers => drop_ok(request.decode::<DescribeProducersRequest>()),
        ApiKey::FindCoordinator => drop_ok(request.decode::<FindCoordinatorRequest>()),
        ApiKey::JoinGroup => drop_ok(request.decode::<JoinGroupRequest>()),
        ApiKey::SyncGroup => drop_ok(request.decode::<SyncGroupRequest>()),
        ApiKey::Heartbeat => drop_ok(request.decode::<HeartbeatRequest>()),
        ApiKey::LeaveGroup => drop_ok(request.decode::<LeaveGroupRequest>()),
        ApiKey::OffsetCommit => drop_ok(request.decode::<OffsetCommitRequest>()),
        ApiKey::OffsetFetch => drop_ok(request.decode::<OffsetFetchRequest>()),
        ApiKey::ListGroups => drop_ok(request.decode::<ListGroupsRequest>()),
        ApiKey::DescribeGroups => drop_ok(request.decode::<DescribeGroupsRequest>()),
        ApiKey::DeleteGroups => drop_ok(request.decode::<DeleteGroupsRequest>()),
        ApiKey::OffsetDelete => drop_ok(request.decode::<OffsetDeleteRequest>()),
        ApiKey::DescribeAcls => drop_ok(request.decode::<DescribeAclsRequest>()),
        ApiKey::CreateAcls => drop_ok(request.decode::<CreateAclsRequest>()),
        ApiKey::DeleteAcls => drop_ok(request.decode::<DeleteAclsRequest>()),
        ApiKey::DescribeUserScramCredentials => {
            drop_ok(request.decode::<DescribeUserScramCredentialsRequest>())
        }
        ApiKey::AlterUserScramCredentials => {
            drop_ok(request.decode::<AlterUserScramCredentialsRequest>())
        }
        ApiKey::DescribeClientQuotas => {
            drop_ok(request.decode::<kafka_protocol::messages::DescribeClientQuotasRequest>())
        }
        ApiKey::AlterClientQuotas => {
            drop_ok(request.decode::<kafka_protocol::messages::AlterClientQuotasRequest>())
        }
        ApiKey::AddPartitionsToTxn => drop_ok(request.decode::<AddPartitionsToTxnRequest>()),
        ApiKey::AddOffsetsToTxn => drop_ok(request.decode::<AddOffsetsToTxnRequest>()),
        ApiKey::EndTxn => drop_ok(request.decode::<EndTxnRequest>()),
        ApiKey::TxnOffsetCommit => drop_ok(request.decode::<TxnOffsetCommitRequest>()),
        ApiKey::DescribeTransactions => drop_ok(request.decode::<DescribeTransactionsRequest>()),
        ApiKey::ListTransactions => drop_ok(request.decode::<ListTransactionsRequest>()),
        ApiKey::WriteTxnMarkers => drop_ok(request.decode::<WriteTxnMarkersRequest>()),
        other => Err(HandlerOutcome::Close(format!(
            "{other:?} has no decoder in dispatch::decode_body"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::legacy_versions;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::Message;

    #[test]
    fn every_handler_range_is_within_the_schema_and_keys_are_unique() {
        for handler in HANDLERS {
            let schema = handler.key.valid_versions();
            // Versions older than the schema crate's come with their own codec.
            let oldest = legacy_versions::oldest_version(handler.key).unwrap_or(schema.min);
            assert!(handler.versions.min >= oldest, "{:?}", handler.key);
            assert!(handler.versions.max <= schema.max, "{:?}", handler.key);
            assert!(!handler.versions.is_empty(), "{:?}", handler.key);
            let same = HANDLERS.iter().filter(|h| h.key == handler.key).count();
            assert_eq!(same, 1, "{:?} registered twice", handler.key);
        }
        const { assert!(MetadataRequest::VERSIONS.max >= 12) };
        const { assert!(ApiVersionsRequest::VERSIONS.max >= 3) };
    }

    /// Encodes a default `M` at every version the handler of `key` serves (from the schema
    /// crate's oldest) as a whole frame, and checks it parses and decodes as the handler would.
    fn default_frames_decode<M: Encodable + Default>(key: ApiKey) {
        let handler = handler_for(key as i16).expect("served");
        let oldest = key.valid_versions().min.max(handler.versions.min);
        for version in oldest..=handler.versions.max {
            let mut frame = BytesMut::new();
            RequestHeader::default()
                .with_request_api_key(key as i16)
                .with_request_api_version(version)
                .with_correlation_id(7)
                .encode(&mut frame, key.request_header_version(version))
                .unwrap();
            M::default().encode(&mut frame, version).unwrap();
            let ParsedFrame::Request {
                handler,
                header,
                body,
            } = parse_frame(frame.freeze())
            else {
                panic!("{key:?} v{version} refused");
            };
            assert_eq!(header.correlation_id, 7);
            let request = Request {
                api_key: handler.key,
                header,
                body,
                session: Rc::new(Session::anonymous(None)),
            };
            assert!(decode_body(&request).is_ok(), "{key:?} v{version}");
        }
    }

    #[test]
    fn every_handler_has_a_body_decoder() {
        use kafka_protocol::messages::*;
        for handler in HANDLERS {
            let request = Request {
                api_key: handler.key,
                header: RequestHeader::default().with_request_api_version(handler.versions.max),
                body: Bytes::new(),
                session: Rc::new(Session::anonymous(None)),
            };
            // An empty body is malformed for every API; what matters is that the error is the
            // API's own decode error and not the "no decoder" fallback.
            if let Err(HandlerOutcome::Close(reason)) = decode_body(&request) {
                assert!(!reason.contains("no decoder"), "{reason}");
            }
        }
        default_frames_decode::<ListOffsetsRequest>(ApiKey::ListOffsets);
        default_frames_decode::<MetadataRequest>(ApiKey::Metadata);
        default_frames_decode::<CreateTopicsRequest>(ApiKey::CreateTopics);
        default_frames_decode::<JoinGroupRequest>(ApiKey::JoinGroup);
        default_frames_decode::<TxnOffsetCommitRequest>(ApiKey::TxnOffsetCommit);
        default_frames_decode::<ApiVersionsRequest>(ApiKey::ApiVersions);
        default_frames_decode::<WriteTxnMarkersRequest>(ApiKey::WriteTxnMarkers);
    }

    #[test]
    fn unsupported_api_versions_and_short_frames() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
        frame.extend_from_slice(&99i16.to_be_bytes());
        frame.extend_from_slice(&5i32.to_be_bytes());
        assert!(matches!(
            parse_frame(Bytes::from(frame)),
            ParsedFrame::UnsupportedApiVersions { correlation_id: 5 }
        ));
        assert!(matches!(
            parse_frame(Bytes::from_static(&[0, 3, 0])),
            ParsedFrame::Refused(_)
        ));
    }

    #[test]
    fn handler_lookup() {
        assert!(handler_for(ApiKey::ApiVersions as i16).is_some());
        assert!(handler_for(ApiKey::Metadata as i16).is_some());
        assert!(handler_for(ApiKey::Produce as i16).is_some());
        assert!(handler_for(ApiKey::FindCoordinator as i16).is_some());
        assert!(handler_for(-1).is_none());
        assert!(handler_for(i16::MAX).is_none());
    }
}
