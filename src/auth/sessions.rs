//! Server-side browser sessions: a random id in an HttpOnly cookie, only its
//! SHA-256 in the database, a per-session CSRF token that cookie-authenticated
//! GraphQL POSTs must send back in the `x-mosaic-csrf` header.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Principal;

pub const SESSION_COOKIE: &str = "mosaic_session";
/// Readable by the page's scripts (not HttpOnly): the CSRF token to echo in the header.
pub const CSRF_COOKIE: &str = "mosaic_csrf";
pub const CSRF_HEADER: &str = "x-mosaic-csrf";
/// The pending login's id between `/auth/login` and `/auth/callback`.
pub const LOGIN_COOKIE: &str = "mosaic_login";

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

/// How the session was opened.
#[derive(Clone, Copy, Debug)]
pub enum Method {
    Oidc,
    BreakGlass,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::BreakGlass => "breakglass",
        }
    }
}

pub struct NewSession {
    pub id: String,
    pub csrf_token: String,
    pub expires_at: OffsetDateTime,
}

/// What a session opened through the provider keeps of it: the ID token
/// (sealed by `Sso::seal_id_token`) for logout, and the provider's session
/// id, which a back-channel logout may name.
pub struct ProviderSession<'a> {
    pub sealed_id_token: &'a str,
    pub sid: Option<&'a str>,
}

/// Opens a session for a user.
pub async fn create(
    pool: &PgPool,
    user_id: Uuid,
    method: Method,
    provider: Option<ProviderSession<'_>>,
    ttl: std::time::Duration,
) -> Result<NewSession, sqlx::Error> {
    let id = random_token();
    let csrf_token = random_token();
    let expires_at: OffsetDateTime = sqlx::query_scalar("SELECT session_create($1, $2, $3, $4, $5, $6, $7)")
        .bind(hash(&id))
        .bind(user_id)
        .bind(&csrf_token)
        .bind(method.as_str())
        .bind(provider.as_ref().map(|p| p.sealed_id_token))
        .bind(i32::try_from(ttl.as_secs()).unwrap_or(i32::MAX))
        .bind(provider.as_ref().and_then(|p| p.sid))
        .fetch_one(pool)
        .await?;
    Ok(NewSession {
        id,
        csrf_token,
        expires_at,
    })
}

pub struct Session {
    pub principal: Principal,
    pub csrf_token: String,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SessionRejection {
    Unknown,
    Expired,
    /// Unused for longer than `session.idle_timeout_s`.
    Idle,
    Deactivated,
}

/// What `session_authenticate` answers for a session cookie.
#[derive(sqlx::FromRow)]
struct SessionRow {
    user_id: Uuid,
    email: String,
    name: Option<String>,
    is_admin: bool,
    email_verified: bool,
    csrf_token: String,
    expires_at: OffsetDateTime,
    expired: bool,
    deactivated: bool,
    public_id: Uuid,
    idle: bool,
    /// Last use was recorded over a minute ago.
    stale_use: bool,
}

/// Checks a session cookie; a session in use is marked as used (a write at
/// most once a minute, so the usual check is one read). `idle_timeout` zero: sessions never end for lack of use.
pub async fn authenticate(
    pool: &PgPool,
    id: &str,
    idle_timeout: std::time::Duration,
) -> Result<Result<Session, SessionRejection>, sqlx::Error> {
    let row: Option<SessionRow> = sqlx::query_as(
        "SELECT user_id, email, name, is_admin, email_verified, csrf_token, expires_at, expired, deactivated, \
         public_id, idle, stale_use FROM session_authenticate($1, $2)",
    )
    .bind(hash(id))
    .bind(i32::try_from(idle_timeout.as_secs()).unwrap_or(i32::MAX))
    .fetch_optional(pool)
    .await?;
    if let Some(r) = &row
        && r.stale_use
        && !(r.deactivated || r.expired || r.idle)
    {
        sqlx::query("SELECT session_touch($1)")
            .bind(hash(id))
            .execute(pool)
            .await?;
    }
    Ok(match row {
        None => Err(SessionRejection::Unknown),
        Some(r) if r.deactivated => Err(SessionRejection::Deactivated),
        Some(r) if r.expired => Err(SessionRejection::Expired),
        Some(r) if r.idle => Err(SessionRejection::Idle),
        Some(r) => Ok(Session {
            principal: Principal {
                user_id: r.user_id,
                email: r.email,
                name: r.name,
                is_admin: r.is_admin,
                email_verified: r.email_verified,
                session: Some(r.public_id),
            },
            csrf_token: r.csrf_token,
            expires_at: r.expires_at,
        }),
    })
}

/// Ends a session; returns (user, sealed ID token) if it existed.
pub async fn end(pool: &PgPool, id: &str) -> Result<Option<(Uuid, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT user_id, id_token FROM session_end($1)")
        .bind(hash(id))
        .fetch_optional(pool)
        .await
}

/// Ends the SSO sessions a verified back-channel logout token names; returns
/// the users signed out (one entry per session).
pub async fn end_by_provider(
    pool: &PgPool,
    issuer: &str,
    subject: Option<&str>,
    sid: Option<&str>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM session_end_by_provider($1, $2, $3)")
        .bind(issuer)
        .bind(subject)
        .bind(sid)
        .fetch_all(pool)
        .await
}

/// Whether the request carries the session's CSRF token in `x-mosaic-csrf`.
pub fn csrf_ok(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sent| !sent.is_empty() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes())))
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: Path=/, SameSite=Lax, Secure over HTTPS.
pub fn set_cookie(name: &str, value: &str, max_age_s: i64, http_only: bool, secure: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; Max-Age={max_age_s}; SameSite=Lax");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie values are base64url")
}

pub fn clear_cookie(name: &str, http_only: bool, secure: bool) -> HeaderValue {
    set_cookie(name, "", 0, http_only, secure)
}

/// Writes one row of the authentication audit (logins, break-glass use, logouts).
pub async fn audit(
    pool: &PgPool,
    user_id: Option<Uuid>,
    email: Option<&str>,
    action: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT auth_audit_write($1, $2, $3, $4)")
        .bind(user_id)
        .bind(email)
        .bind(action)
        .bind(details)
        .execute(pool)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_parse_and_csrf_compares() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; mosaic_session=abc; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "nope"), None);
        assert!(!csrf_ok(&h, "t"));
        h.insert(CSRF_HEADER, HeaderValue::from_static("t"));
        assert!(csrf_ok(&h, "t"));
        assert!(!csrf_ok(&h, "u"));
        let c = set_cookie(SESSION_COOKIE, "v", 60, true, true);
        assert_eq!(
            c.to_str().unwrap(),
            "mosaic_session=v; Path=/; Max-Age=60; SameSite=Lax; HttpOnly; Secure"
        );
        assert_ne!(random_token(), random_token());
    }
}
