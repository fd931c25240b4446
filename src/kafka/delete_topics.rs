//! DeleteTopics (key 20), versions 1 to 6: delete topics by name, or by id from v6.
//!
//! Owner: the connection's shard resolves ids and checks `delete.topic.enable`; shard 0's
//! controller commits the deletions. Each shard drops the partitions of a deleted topic when
//! the new metadata image reaches it. Each topic succeeds or fails on its own.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::VersionRange;
use uuid::Uuid;

use crate::broker::ShardContext;
use crate::kafka::admin::{self, text, topic_name};
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, Request};
use crate::metadata::ControllerRequest;

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 6 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::DeleteTopics,
    versions: VERSIONS,
    handle,
};

fn handle(context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    async move {
        let body: DeleteTopicsRequest = match request.decode() {
            Ok(body) => body,
            Err(outcome) => return outcome,
        };
        // v6 names topics by name or id; earlier versions by name only.
        let wanted: Vec<(Option<String>, Uuid)> = if request.version() >= 6 {
            body.topics
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
                .collect()
        } else {
            body.topic_names
                .iter()
                .map(|n| (Some(n.0.to_string()), Uuid::nil()))
                .collect()
        };
        let image = context.image();
        let mut results = Vec::with_capacity(wanted.len());
        let mut names = Vec::new();
        for (name, id) in wanted {
            let result = DeletableTopicResult::default()
                .with_name(name.clone().map(topic_name))
                .with_topic_id(id);
            if !context.config.delete_topic_enable {
                results.push(
                    result
                        .with_error_code(ResponseError::TopicDeletionDisabled.code())
                        .with_error_message(Some(text("Topic deletion is disabled."))),
                );
                continue;
            }
            let resolved = match &name {
                Some(name) => Some(name.clone()),
                None => image
                    .topic_by_id(id)
                    .filter(|_| !id.is_nil())
                    .map(|t| t.name.clone()),
            };
            let refused = resolved.as_ref().and_then(|resolved| {
                admin::topic_refused(
                    &context,
                    &request.session,
                    crate::acl::operation::DELETE,
                    resolved,
                )
            });
            match resolved {
                Some(_) if refused.is_some() => {
                    let (code, message) = refused.expect("checked");
                    results.push(
                        result
                            .with_error_code(code)
                            .with_error_message(Some(text(message))),
                    );
                }
                Some(resolved) => {
                    names.push((results.len(), resolved));
                    results.push(result);
                }
                None => results.push(
                    result
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_error_message(Some(text(format!("Topic id {id} does not exist")))),
                ),
            }
        }
        if !names.is_empty() {
            let request_names = names.iter().map(|(_, n)| n.clone()).collect();
            let outcome = admin::call_controller(
                &context,
                ControllerRequest::DeleteTopics {
                    names: request_names,
                },
            )
            .await;
            for (i, (slot, name)) in names.iter().enumerate() {
                let result = &mut results[*slot];
                result.name = Some(topic_name(name.clone()));
                match &outcome {
                    Ok(outcomes) => match &outcomes[i] {
                        Ok(deleted) => result.topic_id = deleted.id,
                        Err(err) => {
                            let (code, message) = admin::metadata_failure(err);
                            result.error_code = code;
                            result.error_message = message;
                        }
                    },
                    Err((code, message)) => {
                        result.error_code = *code;
                        result.error_message = Some(text(message.clone()));
                    }
                }
            }
        }
        request.respond(&DeleteTopicsResponse::default().with_responses(results))
    }
    .boxed_local()
}
