//! Consumer groups: the group coordinator, its offset store, and how requests reach it.
//!
//! Owner: the coordinator of group `g` is the shard that owns partition
//! `consumer_offsets_partition(g, n)` of `__consumer_offsets` (DESIGN.md §2), `n` being the
//! topic's partition count (`offsets.topic.num.partitions` until it exists). Every shard holds one
//! `GroupCoordinator` (in its `ShardContext`) for the groups it coordinates. A handler on the
//! connection's shard decodes the request, makes sure `__consumer_offsets` exists (creating it
//! through the controller on first use, as Kafka does on the first FindCoordinator), and sends a
//! `GroupCall` to the coordinator shard with `router.call`; the answer comes back as a
//! `GroupReply` that the handler encodes at the request's version.
//!
//! Lifecycle: groups and committed offsets of a `__consumer_offsets` partition are loaded lazily,
//! the first time the coordinator shard serves a call for a group of that partition: the
//! partition is read from its log start to its high watermark and replayed. Every commit and
//! every completed generation is written to that partition (Kafka's record formats, see
//! `records`) and acknowledged only once durable under the topic's flush policy.
//!
//! Layering (`../shared/DESIGN.md` §7): a service; imports no protocol front (`kafka`). The
//! controller is reached through `metadata::client`. Departure: `coordinator` and `route` take
//! the broker's `ShardContext` and send `ShardRequest::Group` themselves, so this module and
//! `broker` import each other. The coordinator reads most of what the context owns (the
//! `__consumer_offsets` partitions, the image, the router, its own state inside the context)
//! and is served from the broker's dispatch; a narrow handle of its own instead of the context
//! would cut the edge (see `broker`'s header).

/// Builds a kafka-protocol message (its structs are `non_exhaustive`): the default with the
/// given fields set.
#[macro_export]
macro_rules! msg {
    (@value $field:ident $value:expr) => {
        $value
    };
    (@value $field:ident) => {
        $field
    };
    ($ty:ty { $($field:ident $(: $value:expr)?),* $(,)? }) => {{
        let mut message = <$ty>::default();
        $( message.$field = $crate::msg!(@value $field $($value)?); )*
        message
    }};
}

pub mod coordinator;
pub mod records;
pub mod route;

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::{
    JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
    SyncGroupRequest, SyncGroupResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

pub use coordinator::GroupCoordinator;

/// Kafka's internal topic of committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A `(topic, partitions)` list of a request.
pub type TopicPartitions = Vec<(String, Vec<i32>)>;

/// Per topic, one `(partition, error code)` per partition.
pub type PartitionErrors = Vec<(String, Vec<(i32, i16)>)>;

/// One committed offset as OffsetFetch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    /// The partition.
    pub partition: i32,
    /// The committed offset, -1 if none.
    pub offset: i64,
    /// Its leader epoch, -1 if unknown.
    pub leader_epoch: i32,
    /// Its metadata string.
    pub metadata: String,
    /// The partition's error: UNSTABLE_OFFSET_COMMIT when the caller asked for stable offsets
    /// and an open transaction holds one for this partition.
    pub error_code: i16,
}

/// One group as ListGroups reports it.
#[derive(Debug, Clone)]
pub struct ListedGroupInfo {
    /// Group id.
    pub group_id: String,
    /// Protocol type ("" for groups that only store offsets).
    pub protocol_type: String,
    /// State name as Kafka spells it.
    pub state: &'static str,
}

/// Work for a group coordinator. Carried by `ShardRequest::Group`.
#[derive(Debug)]
pub enum GroupCall {
    /// JoinGroup.
    Join {
        /// Request version.
        version: i16,
        /// The client id from the request header.
        client_id: String,
        /// The client's address as Kafka prints it (`/127.0.0.1`), empty if unknown.
        client_host: String,
        /// The request (boxed: it is the largest of the calls).
        request: Box<JoinGroupRequest>,
    },
    /// SyncGroup.
    Sync {
        /// Request version.
        version: i16,
        /// The request.
        request: SyncGroupRequest,
    },
    /// Heartbeat.
    Heartbeat {
        /// Group id.
        group_id: String,
        /// Generation.
        generation: i32,
        /// Member id.
        member_id: String,
        /// Static instance id.
        instance_id: Option<String>,
    },
    /// LeaveGroup, one or more members.
    Leave {
        /// Group id.
        group_id: String,
        /// The members leaving.
        members: Vec<MemberIdentity>,
    },
    /// OffsetCommit.
    Commit {
        /// Request version.
        version: i16,
        /// The request.
        request: OffsetCommitRequest,
    },
    /// OffsetFetch for one group; `topics: None` asks for every committed offset.
    FetchOffsets {
        /// Group id.
        group_id: String,
        /// The partitions asked for.
        topics: Option<TopicPartitions>,
        /// OffsetFetch v7+ `require_stable`: partitions with transactional offsets not yet
        /// decided answer UNSTABLE_OFFSET_COMMIT.
        require_stable: bool,
    },
    /// TxnOffsetCommit: offsets committed inside a producer's transaction.
    TxnCommit {
        /// Request version.
        version: i16,
        /// The request.
        request: TxnOffsetCommitRequest,
    },
    /// The groups this shard coordinates.
    List,
    /// DescribeGroups for groups this shard coordinates.
    Describe {
        /// Group ids.
        group_ids: Vec<String>,
    },
    /// DeleteGroups for groups this shard coordinates.
    Delete {
        /// Group ids.
        group_ids: Vec<String>,
    },
    /// OffsetDelete.
    DeleteOffsets {
        /// Group id.
        group_id: String,
        /// The partitions whose offsets go.
        topics: TopicPartitions,
    },
}

/// The answer to a `GroupCall`. Carried by `ShardResponse::Group`.
#[derive(Debug)]
pub enum GroupReply {
    /// Answer to `Join`.
    Join(JoinGroupResponse),
    /// Answer to `Sync`.
    Sync(SyncGroupResponse),
    /// Answer to `Heartbeat`: the error code.
    Heartbeat(i16),
    /// Answer to `Leave`: top-level error and one error per member.
    Leave(i16, Vec<i16>),
    /// Answer to `Commit`.
    Commit(OffsetCommitResponse),
    /// Answer to `TxnCommit`.
    TxnCommit(TxnOffsetCommitResponse),
    /// Answer to `FetchOffsets`: a group-level error, or the offsets per topic.
    FetchOffsets(Result<Vec<(String, Vec<FetchedOffset>)>, i16>),
    /// Answer to `List`.
    List(Vec<ListedGroupInfo>),
    /// Answer to `Describe`.
    Describe(Vec<DescribedGroup>),
    /// Answer to `Delete`: one error per group, in request order.
    Delete(Vec<i16>),
    /// Answer to `DeleteOffsets`: a group-level error, or one error per partition.
    DeleteOffsets(Result<PartitionErrors, i16>),
}
