//! SaslAuthenticate (key 36), versions 0 to 2: the SASL tokens of the mechanism SaslHandshake
//! chose (KIP-152), and the gate of a SASL_PLAINTEXT listener's connections.
//!
//! Owner: the connection's reader, on the shard that accepted it. `dispatch_sasl` takes each
//! frame of a SASL connection in arrival order: ApiVersions is always served; SaslHandshake and
//! SaslAuthenticate are answered at once from the connection's
//! `security::sasl::SaslConnection` (so a later frame sees the new principal); any other
//! request is dispatched as usual once the connection is authenticated and its session
//! (`connections.max.reauth.ms`) has not expired, and closes the connection otherwise.
//! A refused handshake or a failed authentication is answered, then the connection closes.
//!
//! `HANDLER` serves the other listeners, where Kafka answers ILLEGAL_SASL_STATE. Nothing here
//! logs a token.

use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tracing::{debug, info};

use crate::acl::Session;
use crate::broker::ShardContext;
use crate::kafka::dispatch::{
    self, ApiHandler, Dispatched, HandlerFuture, HandlerOutcome, ParsedFrame, Request,
    ResponseFrame,
};
use crate::kafka::sasl_handshake;
use crate::security::sasl::scram::{ScramCredential, ScramMechanism};
use crate::security::sasl::{AuthStep, Gate, SaslConnection};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

/// The dispatch table entry: the answer on a listener without SASL.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::SaslAuthenticate,
    versions: VERSIONS,
    handle,
};

fn handle(_context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    let outcome = match request.decode::<SaslAuthenticateRequest>() {
        Ok(_) => request.respond(
            &SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "SaslAuthenticate on a listener without SASL",
                ))),
        ),
        Err(outcome) => outcome,
    };
    futures::future::ready(outcome).boxed_local()
}

/// The SCRAM credential of `user` for `mechanism` in the shard's metadata image.
fn scram_lookup(
    context: &ShardContext,
) -> impl Fn(&str, ScramMechanism) -> Option<ScramCredential> {
    let image = context.image();
    move |user, mechanism| {
        image
            .scram
            .get(user)
            .and_then(|credentials| credentials.get(&mechanism))
            .cloned()
    }
}

fn answer(
    context: &ShardContext,
    request: &Request,
    sasl: &mut SaslConnection,
    session: &mut Rc<Session>,
) -> (HandlerOutcome, bool) {
    let body: SaslAuthenticateRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return (outcome, true),
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let failed = |code: ResponseError, message: String| {
        SaslAuthenticateResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    match sasl.authenticate(
        &body.auth_bytes,
        Instant::now(),
        now_ms,
        &scram_lookup(context),
    ) {
        AuthStep::Continue(token) => {
            let response = SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token));
            (request.respond(&response), false)
        }
        AuthStep::Done {
            token,
            principal,
            session_lifetime_ms,
        } => {
            debug!(%principal, session_lifetime_ms, "SASL authentication succeeded");
            *session = Rc::new(Session {
                principal,
                host: session.host.clone(),
                listener: session.listener,
            });
            let response = SaslAuthenticateResponse::default()
                .with_auth_bytes(Bytes::from(token))
                .with_session_lifetime_ms(session_lifetime_ms);
            (request.respond(&response), false)
        }
        AuthStep::Failed(message) => {
            info!(host = %session.host, %message, "SASL authentication failed; closing after the answer");
            let response = failed(ResponseError::SaslAuthenticationFailed, message);
            (request.respond(&response), true)
        }
        AuthStep::IllegalState(message) => {
            info!(host = %session.host, %message, "SASL authentication out of turn; closing after the answer");
            let response = failed(ResponseError::IllegalSaslState, message);
            (request.respond(&response), true)
        }
    }
}

/// A bare token after SaslHandshake v0: answered with a bare frame (the next challenge, or the
/// last token on success); a failure closes the connection unanswered, as Kafka does.
fn raw_token(
    context: &ShardContext,
    sasl: &mut SaslConnection,
    session: &mut Rc<Session>,
    token: Bytes,
) -> (Dispatched, bool) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let token = match sasl.authenticate(&token, Instant::now(), now_ms, &scram_lookup(context)) {
        AuthStep::Continue(token) => token,
        AuthStep::Done {
            token, principal, ..
        } => {
            debug!(%principal, "SASL authentication (v0 framing) succeeded");
            *session = Rc::new(Session {
                principal,
                host: session.host.clone(),
                listener: session.listener,
            });
            token
        }
        AuthStep::Failed(message) | AuthStep::IllegalState(message) => {
            return (
                Dispatched::Refused(format!("SASL authentication failed: {message}")),
                true,
            );
        }
    };
    let frame = ResponseFrame {
        correlation_id: 0,
        throttle_ms: 0,
        flexible_header: false,
        headerless: true,
        body: vec![Bytes::from(token)],
    };
    let dispatched = Dispatched::Started {
        api_key: ApiKey::SaslAuthenticate as i16,
        future: futures::future::ready(HandlerOutcome::Respond(frame)).boxed_local(),
    };
    (dispatched, false)
}

/// Dispatches one frame of a connection on a SASL listener (see the module documentation);
/// the bool says whether the connection closes once this request is answered.
pub fn dispatch_sasl(
    context: &Rc<ShardContext>,
    sasl: &mut SaslConnection,
    session: &mut Rc<Session>,
    frame: Bytes,
) -> (Dispatched, bool) {
    if sasl.expects_raw_token() {
        return raw_token(context, sasl, session, frame);
    }
    let key = if frame.len() >= 2 {
        i16::from_be_bytes([frame[0], frame[1]])
    } else {
        -1
    };
    let sasl_api = key == ApiKey::SaslHandshake as i16 || key == ApiKey::SaslAuthenticate as i16;
    if !sasl_api {
        // ApiVersions is served before authentication; after it, every request but the SASL
        // ones is gated by the session's expiry.
        let before_authentication = sasl.principal().is_none();
        if !(key == ApiKey::ApiVersions as i16 && before_authentication)
            && let Gate::Close(reason) = sasl.gate(Instant::now())
        {
            return (Dispatched::Refused(reason), true);
        }
        return (dispatch::dispatch(context, session, frame), false);
    }
    let (handler, header, body) = match dispatch::parse_frame(frame) {
        ParsedFrame::Request {
            handler,
            header,
            body,
        } => (handler, header, body),
        ParsedFrame::Refused(reason) => return (Dispatched::Refused(reason), true),
        ParsedFrame::UnsupportedApiVersions { .. } => {
            return (
                Dispatched::Refused("unexpected ApiVersions parse".to_string()),
                true,
            );
        }
    };
    let request = Request {
        api_key: handler.key,
        header,
        body,
        session: session.clone(),
    };
    let (outcome, close) = if handler.key == ApiKey::SaslHandshake {
        sasl_handshake::answer(&request, sasl)
    } else {
        answer(context, &request, sasl, session)
    };
    let dispatched = Dispatched::Started {
        api_key: key,
        future: futures::future::ready(outcome).boxed_local(),
    };
    (dispatched, close)
}
