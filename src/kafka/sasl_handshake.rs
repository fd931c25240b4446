//! SaslHandshake (key 17), versions 0 and 1: the client names the SASL mechanism it will use
//! (KIP-43). After version 1 the tokens travel in SaslAuthenticate; after version 0 the one
//! token of PLAIN or OAUTHBEARER travels as a bare frame (its size and its bytes, no Kafka
//! header), and so does the answer; a failure closes the connection without one, as in Kafka.
//!
//! Owner: the connection's reader, on the shard that accepted it. On a SASL_PLAINTEXT listener
//! the request never reaches `HANDLER`: `sasl_authenticate::dispatch_sasl` answers it from the
//! connection's `security::sasl::SaslConnection`, in request order, before the next frame is
//! read. `HANDLER` serves the other listeners, where Kafka answers ILLEGAL_SASL_STATE.
//!
//! librdkafka requires version 0 to be listed before it uses SASL at all, then uses version 1
//! with SaslAuthenticate; kafka-python uses version 1.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::broker::ShardContext;
use crate::kafka::dispatch::{ApiHandler, HandlerFuture, HandlerOutcome, Request};
use crate::security::sasl::{HandshakeError, SaslConnection};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

/// The dispatch table entry: the answer on a listener without SASL.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::SaslHandshake,
    versions: VERSIONS,
    handle,
};

fn handle(_context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    let outcome = match request.decode::<SaslHandshakeRequest>() {
        Ok(_) => request.respond(
            &SaslHandshakeResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code()),
        ),
        Err(outcome) => outcome,
    };
    futures::future::ready(outcome).boxed_local()
}

/// Answers SaslHandshake on a SASL listener; the outcome and whether the connection closes
/// after it.
pub fn answer(request: &Request, sasl: &mut SaslConnection) -> (HandlerOutcome, bool) {
    let body: SaslHandshakeRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return (outcome, true),
    };
    let mechanisms: Vec<StrBytes> = sasl
        .mechanism_names()
        .into_iter()
        .map(StrBytes::from_static_str)
        .collect();
    let response = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
    match sasl.handshake(body.mechanism.as_str(), request.version() == 0) {
        Ok(()) => (request.respond(&response), false),
        Err(HandshakeError::Unsupported) => {
            tracing::info!(
                mechanism = %body.mechanism.as_str(),
                "SASL handshake names a mechanism that is not enabled; closing after the answer"
            );
            let response = response.with_error_code(ResponseError::UnsupportedSaslMechanism.code());
            (request.respond(&response), true)
        }
        Err(HandshakeError::IllegalState(reason)) => {
            tracing::info!(%reason, "SASL handshake out of turn; closing after the answer");
            let response = response.with_error_code(ResponseError::IllegalSaslState.code());
            (request.respond(&response), true)
        }
    }
}
