//! DescribeUserScramCredentials (key 50), version 0: which SCRAM mechanisms each user has a
//! credential for, and with how many iterations (KIP-554). Never a salt or a key.
//!
//! Owner: any shard; answered from the shard's metadata image, without a cross-shard call.
//!
//! As Kafka: the caller needs DESCRIBE on the cluster (else CLUSTER_AUTHORIZATION_FAILED for
//! the whole request); no users (null or empty) means every user with a credential; a user
//! named twice gets DUPLICATE_RESOURCE, one without credentials RESOURCE_NOT_FOUND.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    ApiKey, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{CLUSTER_NAME, operation, resource_type};
use crate::broker::ShardContext;
use crate::kafka::admin::text;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DescribeUserScramCredentials,
    versions: VersionRange { min: 0, max: 0 },
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    let outcome = (|| {
        let body: DescribeUserScramCredentialsRequest = request.decode()?;
        if !context.authorize(
            &request.session,
            operation::DESCRIBE,
            resource_type::CLUSTER,
            CLUSTER_NAME,
        ) {
            let response = DescribeUserScramCredentialsResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                .with_error_message(Some(text("Cluster authorization failed.")));
            return Ok(request.respond(&response));
        }
        let image = context.image();
        let names: Vec<String> = match &body.users {
            Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
            _ => image.scram.keys().cloned().collect(),
        };
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for name in &names {
            *counts.entry(name).or_default() += 1;
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut results = Vec::new();
        for name in &names {
            if !seen.insert(name.as_str()) {
                continue;
            }
            let result = DescribeUserScramCredentialsResult::default().with_user(text(name));
            let result = if counts[name.as_str()] > 1 {
                result
                    .with_error_code(ResponseError::DuplicateResource.code())
                    .with_error_message(Some(text(
                        "Cannot describe SCRAM credentials for the same user twice in a single request",
                    )))
            } else {
                match image.scram.get(name) {
                    Some(credentials) if !credentials.is_empty() => result.with_credential_infos(
                        credentials
                            .iter()
                            .map(|(mechanism, credential)| {
                                CredentialInfo::default()
                                    .with_mechanism(mechanism.code())
                                    .with_iterations(credential.iterations)
                            })
                            .collect(),
                    ),
                    _ => result
                        .with_error_code(ResponseError::ResourceNotFound.code())
                        .with_error_message(Some(text(
                            "Attempt to describe a user credential that does not exist",
                        ))),
                }
            };
            results.push(result);
        }
        Ok(request.respond(&DescribeUserScramCredentialsResponse::default().with_results(results)))
    })();
    let outcome = match outcome {
        Ok(outcome) | Err(outcome) => outcome,
    };
    futures::future::ready(outcome).boxed_local()
}
