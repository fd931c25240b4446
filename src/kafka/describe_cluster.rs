//! DescribeCluster (key 60), versions 0 to 1: cluster id, controller and brokers.
//!
//! Owner: any shard; answered from the shard's identity and advertised address. The broker
//! serves both roles of a one-node cluster, so the BROKERS endpoint type is answered and the
//! CONTROLLERS endpoint type (v1) gets UNSUPPORTED_ENDPOINT_TYPE, as a Kafka broker answers it.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::VersionRange;

use crate::acl;
use crate::broker::ShardContext;
use crate::kafka::admin::text;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::kafka::metadata::authorized_operations;

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeCluster,
    versions: VersionRange { min: 0, max: 1 },
    handle,
};

const ENDPOINT_BROKERS: i8 = 1;

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    futures::future::ready(answer(&context, &request)).boxed_local()
}

fn answer(context: &ShardContext, request: &Request) -> HandlerOutcome {
    let body: DescribeClusterRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut response = DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_cluster_id(text(context.identity.cluster_id.clone()))
        .with_controller_id(BrokerId(context.identity.node_id));
    if request.version() >= 1 && body.endpoint_type != ENDPOINT_BROKERS {
        response = response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(text(format!(
                "Endpoint type {} is not served here; this listener serves brokers (1)",
                body.endpoint_type
            ))));
        return request.respond(&response);
    }
    if !context.authorize(
        &request.session,
        acl::operation::DESCRIBE,
        acl::resource_type::CLUSTER,
        acl::CLUSTER_NAME,
    ) {
        response = response
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(text("Cluster authorization failed.")));
        return request.respond(&response);
    }
    let broker = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(context.identity.node_id))
        .with_host(text(context.advertised.host.clone()))
        .with_port(i32::from(context.advertised.port));
    response = response.with_brokers(vec![broker]);
    if body.include_cluster_authorized_operations {
        response = response.with_cluster_authorized_operations(authorized_operations(
            context,
            request,
            acl::resource_type::CLUSTER,
            acl::CLUSTER_NAME,
        ));
    }
    request.respond(&response)
}
