//! API tokens: random secrets shown once; only their SHA-256 is stored.
//!
//! Lookup is by hash, so the secret itself is never compared and a timing
//! difference reveals nothing about it.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::Principal;
use super::token_cache::{CachedToken, TOUCH_EVERY, TokenCache};

const PREFIX: &str = "mosaic_";

/// Lifetime of a token created without `--expires`.
pub const DEFAULT_LIFETIME: Duration = Duration::days(90);
/// Longest token name.
pub const MAX_NAME_CHARS: usize = 100;

pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Parses `--expires`: a duration such as `30d`, `12h`, `45m`, an RFC 3339
/// time, or `never`; none given: [`DEFAULT_LIFETIME`] from now.
pub fn expiry(text: Option<&str>, now: OffsetDateTime) -> Result<Option<OffsetDateTime>> {
    match text {
        None => Ok(Some(now + DEFAULT_LIFETIME)),
        Some("never") => Ok(None),
        Some(text) => parse_expiry(text, now).map(Some),
    }
}

/// Parses a duration such as `30d`, `12h`, `45m`, or an RFC 3339 time.
pub fn parse_expiry(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    let unit_len = text.chars().last().map(char::len_utf8).unwrap_or(0);
    let (number, unit) = text.split_at(text.len() - unit_len);
    if let Ok(n) = number.parse::<i64>() {
        let d = match unit {
            "d" => Duration::days(n),
            "h" => Duration::hours(n),
            "m" => Duration::minutes(n),
            "s" => Duration::seconds(n),
            _ => bail!("--expires: unknown unit '{unit}' (use d, h, m or s)"),
        };
        if n <= 0 {
            bail!("--expires: must be in the future");
        }
        return Ok(now + d);
    }
    let at = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--expires: '{text}' is neither a duration (30d), an RFC 3339 time nor 'never'"))?;
    if at <= now {
        bail!("--expires: {text} is in the past");
    }
    Ok(at)
}

/// Creates an unnamed token for the active user with this e-mail; returns
/// the secret (shown once).
pub async fn create(conn: &mut PgConnection, email: &str, expires_at: Option<OffsetDateTime>) -> Result<String> {
    create_named(conn, email, "", expires_at).await
}

/// Creates a token named `name` for the active user with this e-mail;
/// returns the secret (shown once).
pub async fn create_named(
    conn: &mut PgConnection,
    email: &str,
    name: &str,
    expires_at: Option<OffsetDateTime>,
) -> Result<String> {
    if name.chars().count() > MAX_NAME_CHARS || name.contains('\0') {
        bail!("--name: at most {MAX_NAME_CHARS} characters, no NUL");
    }
    let user: Option<(Uuid, bool)> =
        sqlx::query_as("SELECT id, deactivated_at IS NOT NULL FROM users WHERE email = lower($1)")
            .bind(email)
            .fetch_optional(&mut *conn)
            .await?;
    let user_id = match user {
        None => bail!("--user: no user with e-mail {email}"),
        Some((_, true)) => {
            bail!("--user: {email} is deactivated; reactivate them first (reactivateUser) to give them a token")
        }
        Some((id, false)) => id,
    };
    let token = generate();
    sqlx::query("INSERT INTO api_tokens (id, user_id, token_hash, expires_at, name) VALUES ($1, $2, $3, $4, $5)")
        .bind(Uuid::new_v4())
        .bind(user_id)
        .bind(hash(&token))
        .bind(expires_at)
        .bind(name.trim())
        .execute(conn)
        .await?;
    Ok(token)
}

/// A token as listed (never its secret or hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub user_id: Uuid,
    pub email: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

/// Every token, or those of the user with this e-mail, newest first
/// (operator connection).
pub async fn list(conn: &mut PgConnection, email: Option<&str>) -> Result<Vec<TokenInfo>> {
    Ok(sqlx::query_as(
        "SELECT t.id, t.name, u.id AS user_id, u.email, t.created_at, t.expires_at, t.last_used_at
         FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE $1::text IS NULL OR u.email = lower($1)
         ORDER BY t.created_at DESC, t.id",
    )
    .bind(email)
    .fetch_all(conn)
    .await?)
}

/// Revokes a token (operator connection); audited.
pub async fn revoke(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    let owner: Option<Uuid> = sqlx::query_scalar("DELETE FROM api_tokens WHERE id = $1 RETURNING user_id")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(owner) = owner else {
        bail!("ID: no token {id} (see `mosaic token list`)");
    };
    sqlx::query(
        "INSERT INTO auth_audit (user_id, email, action, details)
         SELECT id, email, 'token_revoked', jsonb_build_object('token', $2::uuid, 'by', 'cli') FROM users WHERE id = $1",
    )
    .bind(owner)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenRejection {
    Unknown,
    Expired,
    /// The token's user was deactivated by an instance administrator.
    Deactivated,
}

/// Maps a bearer token to its user: from the cache when it holds the token,
/// else through the narrow definer function (the application role cannot
/// read the token table).
pub async fn authenticate(
    pool: &PgPool,
    cache: &TokenCache,
    token: &str,
) -> Result<Result<Principal, TokenRejection>, sqlx::Error> {
    if !token.starts_with(PREFIX) {
        return Ok(Err(TokenRejection::Unknown));
    }
    let hash = hash(token);
    if let Some(cached) = cache.get(&hash) {
        if cached.expires_at.is_some_and(|at| at <= OffsetDateTime::now_utc()) {
            return Ok(Err(TokenRejection::Expired));
        }
        if cached.touched.elapsed() >= TOUCH_EVERY {
            touch(pool, cached.token_id).await?;
            cache.update(&hash, |t| t.touched = Instant::now());
        }
        return Ok(Ok(cached.principal));
    }
    let generation = cache.generation();
    type Row = (
        Uuid,
        String,
        Option<String>,
        bool,
        bool,
        Option<OffsetDateTime>,
        bool,
        bool,
        Uuid,
        bool,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT user_id, email, name, is_admin, email_verified, expires_at, expired, deactivated,
                token_id, stale_use
         FROM authenticate_token($1)",
    )
    .bind(&hash)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Err(TokenRejection::Unknown),
        Some((.., true, _, _)) => Err(TokenRejection::Deactivated),
        Some((.., true, false, _, _)) => Err(TokenRejection::Expired),
        Some((user_id, email, name, is_admin, email_verified, expires_at, false, false, token_id, stale_use)) => {
            if stale_use {
                // Last use is kept to the minute, so most requests write nothing.
                touch(pool, token_id).await?;
            }
            let principal = Principal {
                user_id,
                email,
                name,
                is_admin,
                email_verified,
                session: None,
            };
            let cached = CachedToken {
                principal: principal.clone(),
                token_id,
                expires_at,
                touched: Instant::now(),
            };
            cache.keep(generation, hash, cached);
            Ok(principal)
        }
    })
}

async fn touch(pool: &PgPool, token_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT token_touch($1)")
        .bind(token_id)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_accepts_durations_and_times() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(parse_expiry("2d", now).unwrap(), now + Duration::days(2));
        assert_eq!(parse_expiry("90m", now).unwrap(), now + Duration::minutes(90));
        assert!(parse_expiry("1971-01-01T00:00:00Z", now).is_ok());
        assert!(parse_expiry("0d", now).is_err());
        assert!(parse_expiry("5y", now).unwrap_err().to_string().contains("unit"));
        assert!(parse_expiry("1960-01-01T00:00:00Z", now).is_err());
        assert_eq!(expiry(None, now).unwrap(), Some(now + DEFAULT_LIFETIME));
        assert_eq!(expiry(Some("never"), now).unwrap(), None);
        assert_eq!(expiry(Some("1h"), now).unwrap(), Some(now + Duration::hours(1)));
    }

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() > 40);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }
}
