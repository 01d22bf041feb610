//! OpenID Connect Back-Channel Logout 1.0, §2.4 and §2.6: checking a logout
//! token the provider sends when a user signs out there (or is signed out).
//! Pure: the keys and the time come in as arguments.
//!
//! openidconnect checks ID tokens only, so the JWS is checked here with its
//! key types: the header names an asymmetric algorithm the provider uses
//! (never `none`, never an HMAC), the key is the one the `kid` names, and the
//! claims must be a logout token for this client: issuer, audience, a recent
//! `iat`, the back-channel logout event, `sub` and/or `sid`, and no `nonce`
//! (so an ID token cannot pass for one).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::JsonWebKey;
use openidconnect::core::{CoreJsonWebKey, CoreJwsSigningAlgorithm};
use serde_json::Value;

pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Oldest `iat` accepted (and how far in the future, for clock skew).
pub const MAX_AGE_S: i64 = 300;
pub const MAX_SKEW_S: i64 = 60;

/// Whom a verified logout token signs out: every session of `subject`, or
/// the one provider session `sid`, or (both given) that session of that subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub subject: Option<String>,
    pub sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("not a signed JWT: {0}")]
    Malformed(String),
    #[error("signed with algorithm {0}, which is not accepted")]
    Algorithm(String),
    #[error("signed by a key the provider does not publish")]
    UnknownKey,
    #[error("the signature is not valid")]
    BadSignature,
    #[error("claim {claim}: {why}")]
    Claim { claim: &'static str, why: String },
}

impl LogoutTokenError {
    /// Whether the provider's keys should be fetched again before giving up.
    pub fn wants_fresh_keys(&self) -> bool {
        matches!(self, Self::UnknownKey)
    }
}

fn claim(claim: &'static str, why: impl Into<String>) -> LogoutTokenError {
    LogoutTokenError::Claim { claim, why: why.into() }
}

fn decode_json(part: &str, what: &str) -> Result<Value, LogoutTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| LogoutTokenError::Malformed(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| LogoutTokenError::Malformed(format!("{what} is not JSON")))
}

/// Checks `token` against the provider's `keys` and this client, at `now` (Unix seconds).
pub fn verify(
    token: &str,
    keys: &[CoreJsonWebKey],
    issuer: &str,
    client_id: &str,
    now: i64,
) -> Result<LogoutClaims, LogoutTokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(LogoutTokenError::Malformed("expected three dot-separated parts".into()));
    };
    let header_json = decode_json(header, "the header")?;
    let alg_name = header_json["alg"].as_str().unwrap_or_default();
    let alg: CoreJwsSigningAlgorithm = serde_json::from_value(Value::String(alg_name.into()))
        .map_err(|_| LogoutTokenError::Algorithm(alg_name.into()))?;
    if matches!(
        alg,
        CoreJwsSigningAlgorithm::None
            | CoreJwsSigningAlgorithm::HmacSha256
            | CoreJwsSigningAlgorithm::HmacSha384
            | CoreJwsSigningAlgorithm::HmacSha512
    ) {
        return Err(LogoutTokenError::Algorithm(alg_name.into()));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| LogoutTokenError::Malformed("the signature is not base64url".into()))?;
    let kid = header_json["kid"].as_str();
    let candidates: Vec<&CoreJsonWebKey> = keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.key_id().is_some_and(|id| id.as_str() == kid)))
        .collect();
    if candidates.is_empty() {
        return Err(LogoutTokenError::UnknownKey);
    }
    let signing_input = &token[..header.len() + 1 + payload.len()];
    if !candidates
        .iter()
        .any(|k| k.verify_signature(&alg, signing_input.as_bytes(), &signature).is_ok())
    {
        return Err(LogoutTokenError::BadSignature);
    }
    check_claims(&decode_json(payload, "the payload")?, issuer, client_id, now)
}

fn check_claims(c: &Value, issuer: &str, client_id: &str, now: i64) -> Result<LogoutClaims, LogoutTokenError> {
    if c["iss"].as_str() != Some(issuer) {
        return Err(claim("iss", format!("expected {issuer}")));
    }
    let for_us = match &c["aud"] {
        Value::String(a) => a == client_id,
        Value::Array(a) => a.iter().any(|x| x.as_str() == Some(client_id)),
        _ => false,
    };
    if !for_us {
        return Err(claim("aud", format!("does not name {client_id}")));
    }
    let iat = c["iat"].as_i64().ok_or_else(|| claim("iat", "missing"))?;
    if iat < now - MAX_AGE_S || iat > now + MAX_SKEW_S {
        return Err(claim("iat", format!("not within {MAX_AGE_S} s of now")));
    }
    if let Some(exp) = c.get("exp")
        && exp.as_i64().is_none_or(|exp| exp <= now - MAX_SKEW_S)
    {
        return Err(claim("exp", "expired"));
    }
    if c["jti"].as_str().is_none_or(str::is_empty) {
        return Err(claim("jti", "missing"));
    }
    if !c["events"][LOGOUT_EVENT].is_object() {
        return Err(claim("events", format!("has no {LOGOUT_EVENT} member")));
    }
    if c.get("nonce").is_some() {
        return Err(claim("nonce", "must not be present in a logout token"));
    }
    let text = |name: &str| c[name].as_str().filter(|s| !s.is_empty()).map(String::from);
    let (subject, sid) = (text("sub"), text("sid"));
    if subject.is_none() && sid.is_none() {
        return Err(claim("sub", "neither sub nor sid is present"));
    }
    Ok(LogoutClaims { subject, sid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://sso.example/application/o/mosaic/";
    const NOW: i64 = 1_800_000_000;

    fn good() -> Value {
        json!({
            "iss": ISS, "aud": "mosaic", "iat": NOW - 5, "exp": NOW + 115, "jti": "j1",
            "events": { LOGOUT_EVENT: {} }, "sub": "user-1", "sid": "s-1",
        })
    }

    fn check(c: Value) -> Result<LogoutClaims, LogoutTokenError> {
        check_claims(&c, ISS, "mosaic", NOW)
    }

    #[test]
    fn a_logout_token_names_whom_it_signs_out() {
        let expected = LogoutClaims {
            subject: Some("user-1".into()),
            sid: Some("s-1".into()),
        };
        assert_eq!(check(good()), Ok(expected));
        let mut only_sid = good();
        only_sid.as_object_mut().unwrap().remove("sub");
        assert_eq!(check(only_sid).unwrap().subject, None);
        let mut aud_list = good();
        aud_list["aud"] = json!(["other", "mosaic"]);
        assert!(check(aud_list).is_ok());
    }

    #[test]
    fn each_wrong_claim_is_named() {
        type Spoil = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("iss", Box::new(|c| c["iss"] = json!("https://evil.example/"))),
            ("aud", Box::new(|c| c["aud"] = json!("someone-else"))),
            ("iat", Box::new(|c| c["iat"] = json!(NOW - MAX_AGE_S - 1))),
            ("iat", Box::new(|c| c["iat"] = json!(NOW + MAX_SKEW_S + 1))),
            ("iat", Box::new(|c| c["iat"] = json!("soon"))),
            ("exp", Box::new(|c| c["exp"] = json!(NOW - MAX_SKEW_S))),
            ("jti", Box::new(|c| c["jti"] = json!(""))),
            ("events", Box::new(|c| c["events"] = json!({ "other": {} }))),
            ("events", Box::new(|c| c["events"] = json!([LOGOUT_EVENT]))),
            ("nonce", Box::new(|c| c["nonce"] = json!("n"))),
            (
                "sub",
                Box::new(|c| {
                    c["sub"] = json!("");
                    c.as_object_mut().unwrap().remove("sid");
                }),
            ),
        ];
        for (name, spoil) in cases {
            let mut c = good();
            spoil(&mut c);
            match check(c.clone()) {
                Err(LogoutTokenError::Claim { claim, .. }) => assert_eq!(claim, name, "{c}"),
                other => panic!("{c}: {other:?}"),
            }
        }
    }

    #[test]
    fn unsigned_hmac_and_garbage_tokens_are_refused_before_any_key_is_tried() {
        let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let payload = part(good());
        for (alg, sig) in [("none", ""), ("HS256", "c2ln")] {
            let token = format!("{}.{payload}.{sig}", part(json!({ "alg": alg })));
            assert_eq!(
                verify(&token, &[], ISS, "mosaic", NOW),
                Err(LogoutTokenError::Algorithm(alg.into()))
            );
        }
        let rs = part(json!({ "alg": "RS256", "kid": "k" }));
        assert_eq!(
            verify(&format!("{rs}.{payload}.c2ln"), &[], ISS, "mosaic", NOW),
            Err(LogoutTokenError::UnknownKey)
        );
        for garbage in ["", "a.b", "a.b.c.d", "!!.x.y", &format!("{rs}.{payload}.!!")] {
            assert!(
                matches!(
                    verify(garbage, &[], ISS, "mosaic", NOW),
                    Err(LogoutTokenError::Malformed(_))
                ),
                "{garbage}"
            );
        }
    }
}
