//! SASL/OAUTHBEARER (RFC 7628, KIP-255) with unsecured JWS tokens, as Kafka's default
//! `OAuthBearerUnsecuredValidatorCallbackHandler` accepts them: a JOSE header with
//! `"alg":"none"`, no signature, the principal in the `sub` claim (or the claim
//! `unsecuredValidatorPrincipalClaimName` names), a required `exp` and an optional `iat`, both
//! in seconds and possibly fractional. Signed tokens (JWKS) are not validated: they are refused.
//!
//! Owner: `Validator` is built at start from the listener's JAAS options and shared read-only;
//! `authenticate` is called by a connection's `SaslConnection` with the client's first
//! message. Pure, never awaits; the clock is passed in.
//!
//! Dependencies: `base64` (the crate the Rust ecosystem uses for it) for the token's base64url
//! parts and `serde_json` (already used) for its claims. A token never reaches a log line.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::jaas::JaasEntry;

/// Kafka's OAUTHBEARER login module class.
pub const LOGIN_MODULE: &str =
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule";

/// The unsecured validator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validator {
    /// The claim holding the principal name (`unsecuredValidatorPrincipalClaimName`).
    pub principal_claim: String,
    /// Clock skew tolerated on `exp` and `iat` (`unsecuredValidatorAllowableClockSkewMs`).
    pub allowable_clock_skew_ms: u64,
}

impl Default for Validator {
    fn default() -> Self {
        Validator {
            principal_claim: "sub".to_string(),
            allowable_clock_skew_ms: 0,
        }
    }
}

/// A validated token: who, and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    /// The principal's name (without `User:`).
    pub principal: String,
    /// The token's `exp`, in ms since the epoch.
    pub expires_at_ms: i64,
}

impl Validator {
    /// The options of an `OAuthBearerLoginModule` entry.
    pub fn from_jaas(entry: &JaasEntry) -> Result<Validator, String> {
        if entry.login_module != LOGIN_MODULE {
            return Err(format!(
                "OAUTHBEARER needs {LOGIN_MODULE}, not {}",
                entry.login_module
            ));
        }
        let mut validator = Validator::default();
        for (key, value) in &entry.options {
            match key.as_str() {
                "unsecuredValidatorPrincipalClaimName" if !value.trim().is_empty() => {
                    validator.principal_claim = value.trim().to_string();
                }
                "unsecuredValidatorAllowableClockSkewMs" => {
                    validator.allowable_clock_skew_ms = value.trim().parse().map_err(|_| {
                        "unsecuredValidatorAllowableClockSkewMs must be a number of ms".to_string()
                    })?;
                }
                other => {
                    return Err(format!(
                        "option {other} is not served (served: unsecuredValidatorPrincipalClaimName, unsecuredValidatorAllowableClockSkewMs; the broker's own unsecuredLogin* identity is for inter-broker SASL, which is not served)"
                    ));
                }
            }
        }
        Ok(validator)
    }

    /// Checks the client's first message (`gs2-header \x01 auth=Bearer <token> \x01 ... \x01`)
    /// at `now_ms`; the principal and expiry, or the message for the client.
    pub fn authenticate(&self, message: &[u8], now_ms: i64) -> Result<Authenticated, String> {
        let text = std::str::from_utf8(message)
            .map_err(|_| "Invalid OAUTHBEARER client first message: not UTF-8".to_string())?;
        let (gs2, rest) = text
            .split_once('\x01')
            .ok_or_else(|| "Invalid OAUTHBEARER client first message".to_string())?;
        let authzid = parse_gs2_header(gs2)?;
        let mut token = None;
        for pair in rest.split('\x01').filter(|p| !p.is_empty()) {
            if let Some(value) = pair.strip_prefix("auth=") {
                let bearer = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or_else(|| "Invalid OAUTHBEARER auth value: expected Bearer".to_string())?;
                token = Some(bearer.trim());
            }
        }
        let token =
            token.ok_or_else(|| "Invalid OAUTHBEARER client first message: no auth".to_string())?;
        let authenticated = self.validate(token, now_ms)?;
        if let Some(authzid) = authzid
            && authzid != authenticated.principal
        {
            return Err(
                "Authentication failed: Client requested an authorization id that is different from the token's principal"
                    .to_string(),
            );
        }
        Ok(authenticated)
    }

    /// Validates an unsecured JWS compact serialization.
    pub fn validate(&self, token: &str, now_ms: i64) -> Result<Authenticated, String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            return Err("invalid_token: not a JWS compact serialization".to_string());
        };
        if !signature.is_empty() {
            return Err(
                "invalid_token: signed tokens are not validated here (unsecured JWS only)"
                    .to_string(),
            );
        }
        let header = decode_json(header, "header")?;
        if header.get("alg").and_then(Value::as_str) != Some("none") {
            return Err("invalid_token: the JOSE header's alg must be none".to_string());
        }
        let claims = decode_json(payload, "payload")?;
        let principal = match claims.get(&self.principal_claim) {
            Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
            _ => {
                return Err(format!(
                    "invalid_token: no principal claim '{}'",
                    self.principal_claim
                ));
            }
        };
        let skew = self.allowable_clock_skew_ms as i64;
        let expires_at_ms = match claims.get("exp").and_then(Value::as_f64) {
            Some(exp) => seconds_to_ms(exp),
            None => return Err("invalid_token: no exp claim".to_string()),
        };
        if now_ms >= expires_at_ms.saturating_add(skew) {
            return Err("invalid_token: the token has expired".to_string());
        }
        if let Some(iat) = claims.get("iat") {
            let iat = iat
                .as_f64()
                .map(seconds_to_ms)
                .ok_or_else(|| "invalid_token: iat is not a number".to_string())?;
            if iat > now_ms.saturating_add(skew) {
                return Err("invalid_token: the token is issued in the future".to_string());
            }
            if iat > expires_at_ms {
                return Err("invalid_token: the token expires before it is issued".to_string());
            }
        }
        Ok(Authenticated {
            principal,
            expires_at_ms,
        })
    }
}

fn seconds_to_ms(seconds: f64) -> i64 {
    // A float cast saturates; NaN becomes 0, an expired token.
    (seconds * 1000.0) as i64
}

fn decode_json(part: &str, what: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| format!("invalid_token: the {what} is not base64url"))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| format!("invalid_token: the {what} is not JSON"))?;
    if !value.is_object() {
        return Err(format!("invalid_token: the {what} is not a JSON object"));
    }
    Ok(value)
}

/// `n,,` or `n,a=<authzid>,` (RFC 5801's GS2 header without channel binding).
fn parse_gs2_header(gs2: &str) -> Result<Option<String>, String> {
    let rest = gs2
        .strip_prefix("n,")
        .or_else(|| gs2.strip_prefix("y,"))
        .ok_or_else(|| {
            "Invalid OAUTHBEARER GS2 header (channel binding is not served)".to_string()
        })?;
    let authzid = rest
        .strip_suffix(',')
        .ok_or_else(|| "Invalid OAUTHBEARER GS2 header".to_string())?;
    if authzid.is_empty() {
        return Ok(None);
    }
    let name = authzid
        .strip_prefix("a=")
        .ok_or_else(|| "Invalid OAUTHBEARER GS2 header".to_string())?;
    Ok(Some(name.replace("=2C", ",").replace("=3D", "=")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &str) -> String {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    fn message(token: &str) -> Vec<u8> {
        format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
    }

    #[test]
    fn unsecured_tokens() {
        let v = Validator::default();
        let now = 1_700_000_000_000;
        let ok = v
            .authenticate(
                &message(&token(
                    r#"{"sub":"alice","exp":1700000100.5,"iat":1699999999.25}"#,
                )),
                now,
            )
            .unwrap();
        assert_eq!(ok.principal, "alice");
        assert_eq!(ok.expires_at_ms, 1_700_000_100_500);
        let expired = v
            .authenticate(&message(&token(r#"{"sub":"alice","exp":1699999999}"#)), now)
            .unwrap_err();
        assert!(expired.contains("expired"), "{expired}");
        assert!(
            v.authenticate(&message(&token(r#"{"sub":"alice"}"#)), now)
                .is_err()
        );
        assert!(
            v.authenticate(&message(&token(r#"{"exp":1700000100}"#)), now)
                .is_err()
        );
        let future = token(r#"{"sub":"a","exp":1700000100,"iat":1700000050}"#);
        assert!(v.authenticate(&message(&future), now).is_err());
        let signed = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"a","exp":1700000100}"#)
        );
        assert!(v.authenticate(&message(&signed), now).is_err());
        let with_authzid = format!(
            "n,a=bob,\x01auth=Bearer {}\x01\x01",
            token(r#"{"sub":"alice","exp":1700000100}"#)
        );
        assert!(v.authenticate(with_authzid.as_bytes(), now).is_err());
        assert!(v.authenticate(b"garbage", now).is_err());
        let claim = Validator {
            principal_claim: "user".to_string(),
            allowable_clock_skew_ms: 5000,
        };
        let ok = claim
            .authenticate(
                &message(&token(r#"{"user":"carol","exp":1699999998}"#)),
                now,
            )
            .unwrap();
        assert_eq!(ok.principal, "carol");
    }
}
