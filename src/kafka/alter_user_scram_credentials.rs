//! AlterUserScramCredentials (key 51), version 0: set and delete users' SCRAM credentials
//! (KIP-554).
//!
//! Owner: the connection's shard checks the request; shard 0's controller writes the changes
//! to the metadata log and broadcasts the image, so every shard authenticates with them from
//! then on.
//!
//! As Kafka: the caller needs ALTER on the cluster (else CLUSTER_AUTHORIZATION_FAILED for
//! every user); the client sends the salted password (PBKDF2 is its work) and the broker keeps
//! the salt, the iterations and the stored and server keys, never the salted password; one
//! result per user. A user named twice in a request gets DUPLICATE_RESOURCE; an empty name,
//! an empty salt or salted password, or iterations outside 4096..=16384 get
//! UNACCEPTABLE_CREDENTIAL; an unknown mechanism UNSUPPORTED_SASL_MECHANISM; deleting a
//! credential that does not exist RESOURCE_NOT_FOUND. The valid alterations are committed
//! together; users with a refused one change nothing.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
};
use kafka_protocol::protocol::VersionRange;

use crate::acl::{CLUSTER_NAME, operation, resource_type};
use crate::broker::ShardContext;
use crate::kafka::admin::{self, text};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::ControllerRequest;
use crate::security::sasl::scram::{ITERATIONS_MAX, ITERATIONS_MIN, ScramMechanism};

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::AlterUserScramCredentials,
    versions: VersionRange { min: 0, max: 0 },
    handle,
};

type Refusal = (i16, String);

fn mechanism(code: i8) -> Result<ScramMechanism, Refusal> {
    ScramMechanism::from_code(code).ok_or_else(|| {
        (
            ResponseError::UnsupportedSaslMechanism.code(),
            "Unknown SCRAM mechanism".to_string(),
        )
    })
}

fn user_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() {
        return Err((
            ResponseError::UnacceptableCredential.code(),
            "Username must not be empty".to_string(),
        ));
    }
    Ok(())
}

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: AlterUserScramCredentialsRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        // Users in the order they first appear, each with its alterations' count.
        let mut users: Vec<String> = Vec::new();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let names = body
            .deletions
            .iter()
            .map(|d| d.name.to_string())
            .chain(body.upsertions.iter().map(|u| u.name.to_string()));
        for name in names {
            let count = counts.entry(name.clone()).or_default();
            if *count == 0 {
                users.push(name);
            }
            *count += 1;
        }
        let respond = |outcomes: &BTreeMap<String, Result<(), Refusal>>| {
            let results = users
                .iter()
                .map(|user| {
                    let result = AlterUserScramCredentialsResult::default().with_user(text(user));
                    match outcomes.get(user) {
                        Some(Err((code, message))) => result
                            .with_error_code(*code)
                            .with_error_message(Some(text(message))),
                        _ => result,
                    }
                })
                .collect();
            request.respond(&AlterUserScramCredentialsResponse::default().with_results(results))
        };
        if !context.authorize(
            &request.session,
            operation::ALTER,
            resource_type::CLUSTER,
            CLUSTER_NAME,
        ) {
            let refused = users
                .iter()
                .map(|u| {
                    let failure = (
                        ResponseError::ClusterAuthorizationFailed.code(),
                        "Cluster authorization failed.".to_string(),
                    );
                    (u.clone(), Err(failure))
                })
                .collect();
            return respond(&refused);
        }
        let image = context.image();
        let mut outcomes: BTreeMap<String, Result<(), Refusal>> = BTreeMap::new();
        let mut deletions = Vec::new();
        let mut upsertions = Vec::new();
        for deletion in &body.deletions {
            let name = deletion.name.to_string();
            let checked = (|| {
                user_name(&name)?;
                let mechanism = mechanism(deletion.mechanism)?;
                if !image
                    .scram
                    .get(&name)
                    .is_some_and(|c| c.contains_key(&mechanism))
                {
                    return Err((
                        ResponseError::ResourceNotFound.code(),
                        "Attempt to delete a user credential that does not exist".to_string(),
                    ));
                }
                Ok(mechanism)
            })();
            match checked {
                Ok(mechanism) => deletions.push((name.clone(), mechanism)),
                Err(refusal) => {
                    outcomes.insert(name.clone(), Err(refusal));
                }
            }
        }
        for upsertion in &body.upsertions {
            let name = upsertion.name.to_string();
            let checked = (|| {
                user_name(&name)?;
                let mechanism = mechanism(upsertion.mechanism)?;
                let iterations = upsertion.iterations;
                if iterations < ITERATIONS_MIN {
                    return Err((
                        ResponseError::UnacceptableCredential.code(),
                        format!(
                            "Iterations {iterations} is less than the minimum {ITERATIONS_MIN} for {}",
                            mechanism.name()
                        ),
                    ));
                }
                if iterations > ITERATIONS_MAX {
                    return Err((
                        ResponseError::UnacceptableCredential.code(),
                        format!(
                            "Iterations {iterations} is more than the maximum {ITERATIONS_MAX} for {}",
                            mechanism.name()
                        ),
                    ));
                }
                if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
                    return Err((
                        ResponseError::UnacceptableCredential.code(),
                        "Salt and salted password must not be empty".to_string(),
                    ));
                }
                Ok(mechanism.credential(&upsertion.salt, &upsertion.salted_password, iterations))
                    .map(|credential| (mechanism, credential))
            })();
            match checked {
                Ok((mechanism, credential)) => upsertions.push((name.clone(), mechanism, credential)),
                Err(refusal) => {
                    outcomes.insert(name.clone(), Err(refusal));
                }
            }
        }
        for (user, count) in &counts {
            if *count > 1 {
                outcomes.insert(
                    user.clone(),
                    Err((
                        ResponseError::DuplicateResource.code(),
                        "A user credential cannot be altered twice in the same request"
                            .to_string(),
                    )),
                );
            }
        }
        // A user with any refused alteration changes nothing.
        deletions.retain(|(user, _)| !outcomes.contains_key(user));
        upsertions.retain(|(user, _, _)| !outcomes.contains_key(user));
        if !deletions.is_empty() || !upsertions.is_empty() {
            let changed: Vec<String> = deletions
                .iter()
                .map(|(u, _)| u.clone())
                .chain(upsertions.iter().map(|(u, _, _)| u.clone()))
                .collect();
            let alter = ControllerRequest::AlterScramCredentials {
                upsertions,
                deletions,
            };
            let result = admin::alter_through_controller(&context, alter).await;
            for user in changed {
                outcomes.insert(user, result.clone());
            }
        }
        respond(&outcomes)
    }
    .boxed_local()
}
