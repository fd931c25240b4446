//! DescribeCluster (key 60), versions 0 to 1: cluster id, controller and brokers.
//!
//! Owner: any shard. A lone node answers from its identity and advertised address: it is the
//! only broker and the controller. Under a controller quorum the brokers are the image's live
//! (registered, unfenced) ones with host, port and rack, and the controller is the quorum's
//! leader as shard 0 sees it (-1 while there is none; one `quorum_status` call). Only the
//! BROKERS endpoint type is served: the CONTROLLERS endpoint type (v1) gets
//! UNSUPPORTED_ENDPOINT_TYPE, as a Kafka broker answers it.

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
use crate::kafka::metadata::{authorized_operations, quorum_leader};

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeCluster,
    versions: VersionRange { min: 0, max: 1 },
    handle,
};

const ENDPOINT_BROKERS: i8 = 1;

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let controller_id = if context.clustered() {
            quorum_leader(&context).await
        } else {
            context.identity.node_id
        };
        answer(&context, &request, controller_id)
    }
    .boxed_local()
}

fn answer(context: &ShardContext, request: &Request, controller_id: i32) -> HandlerOutcome {
    let body: DescribeClusterRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let mut response = DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_cluster_id(text(context.identity.cluster_id.clone()))
        .with_controller_id(BrokerId(controller_id));
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
    let brokers = if context.clustered() {
        context
            .image()
            .live_brokers()
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(text(b.host.clone()))
                    .with_port(i32::from(b.port))
                    .with_rack(b.rack.clone().map(text))
            })
            .collect()
    } else {
        vec![
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(context.identity.node_id))
                .with_host(text(context.advertised_for(&request.session).host.clone()))
                .with_port(i32::from(context.advertised_for(&request.session).port)),
        ]
    };
    response = response.with_brokers(brokers);
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
