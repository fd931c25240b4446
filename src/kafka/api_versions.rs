//! ApiVersions (key 18), versions 0 to 3: which APIs and versions this broker serves.
//!
//! Owner: any shard; reads only the static handler table.
//!
//! The answer is built from `dispatch::HANDLERS`, so it lists exactly what has a handler. A
//! request at a version above 3 never reaches this handler: dispatch answers it with
//! UNSUPPORTED_VERSION and a version 0 body (KIP-511), from which the client picks a version
//! it shares with us. Version 3 carries the client's software name and version, which Kafka
//! checks against a pattern; a request that fails the check gets INVALID_REQUEST.

use std::rc::Rc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::broker::ShardContext;
use crate::kafka::dispatch::{self, ApiHandler, HandlerFuture, HandlerOutcome, Request};

/// The versions served.
pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

/// The dispatch table entry.
pub const HANDLER: ApiHandler = ApiHandler {
    key: ApiKey::ApiVersions,
    versions: VERSIONS,
    handle,
};

fn handle(_context: Rc<ShardContext>, request: Request) -> HandlerFuture {
    futures::future::ready(answer(&request)).boxed_local()
}

fn answer(request: &Request) -> HandlerOutcome {
    let body: ApiVersionsRequest = match request.decode() {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    if request.version() >= 3
        && (!is_valid_software_field(body.client_software_name.as_str())
            || !is_valid_software_field(body.client_software_version.as_str()))
    {
        let response =
            ApiVersionsResponse::default().with_error_code(ResponseError::InvalidRequest.code());
        return request.respond(&response);
    }
    let response = ApiVersionsResponse::default().with_api_keys(supported_api_keys());
    request.respond(&response)
}

/// The answer to an ApiVersions request at a version we do not serve: UNSUPPORTED_VERSION and
/// our API list, in a version 0 body with a version 0 response header (KIP-511).
pub fn unsupported_version(correlation_id: i32) -> HandlerOutcome {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(supported_api_keys());
    dispatch::encode_response(ApiKey::ApiVersions, 0, correlation_id, &response)
}

/// Every served API with its version range, by API key.
pub fn supported_api_keys() -> Vec<ApiVersion> {
    let mut keys: Vec<ApiVersion> = dispatch::HANDLERS
        .iter()
        .map(|h| {
            ApiVersion::default()
                .with_api_key(h.key as i16)
                .with_min_version(h.versions.min)
                .with_max_version(h.versions.max)
        })
        .collect();
    keys.sort_by_key(|k| k.api_key);
    keys
}

/// Kafka's check for `client_software_name` and `client_software_version`:
/// `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`.
fn is_valid_software_field(value: &str) -> bool {
    let bytes = value.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn software_field_pattern() {
        for ok in [
            "librdkafka",
            "a",
            "2.0.2",
            "confluent-kafka-python",
            "x.y-z",
        ] {
            assert!(is_valid_software_field(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "a_b", ".", "ü"] {
            assert!(!is_valid_software_field(bad), "{bad}");
        }
    }

    #[test]
    fn unsupported_version_answer_is_a_v0_body_with_our_keys() {
        let HandlerOutcome::Respond(frame) = unsupported_version(42) else {
            panic!("expected a response");
        };
        assert_eq!(frame.correlation_id, 42);
        assert!(!frame.flexible_header);
        let mut body = Bytes::from(frame.body.concat());
        let decoded = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(decoded.error_code, ResponseError::UnsupportedVersion.code());
        assert_eq!(decoded.api_keys, supported_api_keys());
        assert!(
            decoded
                .api_keys
                .iter()
                .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 3)
        );
    }
}
