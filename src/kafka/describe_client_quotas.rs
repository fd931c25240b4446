//! DescribeClientQuotas (key 48), versions 0-1: the client quotas a filter matches (KIP-546).
//!
//! Owner: the connection's shard, from its copy of the metadata image; never waits.
//!
//! As Kafka: the caller needs DESCRIBE_CONFIGS on the cluster (else
//! CLUSTER_AUTHORIZATION_FAILED); each filter component matches an entity type exactly (a
//! name; a null name is the default), the default entity (match type 1) or any entity of the
//! type (2); `strict` keeps only entities with exactly the filter's types. A bad filter gets
//! INVALID_REQUEST. The answer lists each matching entity with its own values (no precedence
//! applied), defaults with a null name.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{ApiKey, DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{CLUSTER_NAME, operation, resource_type};
use crate::broker::ShardContext;
use crate::broker::error;
use crate::kafka::admin::text;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::quota::QuotaFilter;

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeClientQuotas,
    versions: VersionRange { min: 0, max: 1 },
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: DescribeClientQuotasRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        let failed = |code: i16, message: String| {
            request.respond(
                &DescribeClientQuotasResponse::default()
                    .with_error_code(code)
                    .with_error_message(Some(text(&message)))
                    .with_entries(None),
            )
        };
        if !context.authorize(
            &request.session,
            operation::DESCRIBE_CONFIGS,
            resource_type::CLUSTER,
            CLUSTER_NAME,
        ) {
            return failed(
                ResponseError::ClusterAuthorizationFailed.code(),
                "Cluster authorization failed.".to_string(),
            );
        }
        let components: Vec<(&str, i8, Option<&str>)> = body
            .components
            .iter()
            .map(|c| (c.entity_type.as_str(), c.match_type, c._match.as_deref()))
            .collect();
        let filter = match QuotaFilter::parse(&components, body.strict) {
            Ok(filter) => filter,
            Err(err) => return failed(error::quota_error_code(&err), err.to_string()),
        };
        let image = context.image();
        let entries = match filter {
            None => Vec::new(),
            Some(filter) => image
                .quotas
                .iter()
                .filter(|(entity, _)| filter.matches(entity))
                .map(|(entity, values)| {
                    let entity = entity
                        .components()
                        .into_iter()
                        .map(|(kind, name)| {
                            EntityData::default()
                                .with_entity_type(text(kind))
                                .with_entity_name(name.map(text))
                        })
                        .collect();
                    let values = values
                        .iter()
                        .map(|(key, value)| {
                            ValueData::default()
                                .with_key(text(key.name()))
                                .with_value(*value as f64)
                        })
                        .collect();
                    EntryData::default().with_entity(entity).with_values(values)
                })
                .collect(),
        };
        request.respond(&DescribeClientQuotasResponse::default().with_entries(Some(entries)))
    }
    .boxed_local()
}
