//! API tokens: random secrets shown once; only their SHA-256 is stored.
//!
//! Lookup is by hash, so the secret itself is never compared and a timing
//! difference reveals nothing about it.

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::Principal;

const PREFIX: &str = "mosaic_";

pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Parses `--expires`: a duration such as `30d`, `12h`, `45m`, or an RFC 3339 time.
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
        .with_context(|| format!("--expires: '{text}' is neither a duration (30d) nor an RFC 3339 time"))?;
    if at <= now {
        bail!("--expires: {text} is in the past");
    }
    Ok(at)
}

/// Creates a token for the user with this e-mail; returns the secret (shown once).
pub async fn create(conn: &mut PgConnection, email: &str, expires_at: Option<OffsetDateTime>) -> Result<String> {
    let user: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE email = lower($1)")
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(user_id) = user else {
        bail!("--user: no user with e-mail {email}");
    };
    let token = generate();
    sqlx::query("INSERT INTO api_tokens (id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::new_v4())
        .bind(user_id)
        .bind(hash(&token))
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(token)
}

#[derive(Debug, PartialEq, Eq)]
pub enum TokenRejection {
    Unknown,
    Expired,
    /// The token's user was deactivated by an instance administrator.
    Deactivated,
}

/// Maps a bearer token to its user, through the narrow definer function (the
/// application role cannot read the token table).
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Result<Principal, TokenRejection>, sqlx::Error> {
    if !token.starts_with(PREFIX) {
        return Ok(Err(TokenRejection::Unknown));
    }
    type Row = (Uuid, String, Option<String>, bool, bool, bool, bool);
    let row: Option<Row> = sqlx::query_as(
        "SELECT user_id, email, name, is_admin, email_verified, expired, deactivated FROM authenticate_token($1)",
    )
    .bind(hash(token))
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Err(TokenRejection::Unknown),
        Some((.., true)) => Err(TokenRejection::Deactivated),
        Some((.., true, false)) => Err(TokenRejection::Expired),
        Some((user_id, email, name, is_admin, email_verified, false, false)) => Ok(Principal {
            user_id,
            email,
            name,
            is_admin,
            email_verified,
            session: None,
        }),
    })
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
