//! The local break-glass administrator: for when the identity provider is
//! down. Created with `mosaic admin create --email E` (password on stdin),
//! stored as an argon2id hash, and every use (or failed attempt) is audited.

use anyhow::{Result, bail};
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::Principal;
use super::throttle;

pub const MIN_PASSWORD_CHARS: usize = 12;

pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// Checks a new break-glass password before anything is opened or written.
pub fn check_password(password: &str) -> Result<()> {
    if password.is_empty() {
        bail!("password: none was read from standard input; pipe it in or type it at the prompt");
    }
    if password.trim().is_empty() {
        bail!("password: must not be only spaces");
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("password: must be at least {MIN_PASSWORD_CHARS} characters");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        bail!("password: must be at most {MAX_PASSWORD_BYTES} bytes");
    }
    Ok(())
}

/// What `create_admin` did to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAccount {
    Created,
    /// An existing user was made an instance administrator and given the password.
    Promoted,
    /// An existing administrator's password was replaced; their sessions ended.
    PasswordReset,
}

/// Creates (or updates) a break-glass administrator, in one transaction: the
/// user is made an instance admin and given this password, and any session
/// they had ends (a reset locks out whoever knew the old password).
pub async fn create_admin(conn: &mut PgConnection, email: &str, password: &str) -> Result<(Uuid, AdminAccount)> {
    check_password(password)?;
    let email = super::users::normalise_email(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let mut tx = conn.begin().await?;
    let existing: Option<(Uuid, bool)> = sqlx::query_as("SELECT id, is_admin FROM users WHERE email = $1 FOR UPDATE")
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await?;
    let (user_id, account) = match existing {
        Some((id, was_admin)) => {
            sqlx::query("UPDATE users SET is_admin = true, updated_at = now() WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let account = if was_admin {
                AdminAccount::PasswordReset
            } else {
                AdminAccount::Promoted
            };
            (id, account)
        }
        None => {
            let id = super::users::create(&mut tx, &email, Some("Break-glass administrator"), true).await?;
            (id, AdminAccount::Created)
        }
    };
    sqlx::query(
        "INSERT INTO local_credentials (user_id, password_hash) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()",
    )
    .bind(user_id)
    .bind(hash_password(password)?)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT auth_audit_write($1, $2, 'breakglass_created', $3)")
        .bind(user_id)
        .bind(&email)
        .bind(serde_json::json!({ "account": format!("{account:?}") }))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((user_id, account))
}

/// How a break-glass login attempt ended.
#[derive(Debug)]
pub enum LoginOutcome {
    SignedIn(Principal),
    /// Wrong address or password, or not an active administrator (one answer for all).
    Refused,
    /// Too many recent attempts for this address: try again after this long.
    Throttled(Duration),
}

/// Longest address and password looked at; longer input is refused unread.
pub const MAX_EMAIL_BYTES: usize = 320;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// argon2id with the default parameters holds 19 MiB for each hash: at most
/// this many run at once, off the async workers, so a flood of attempts can
/// neither stall other requests nor exhaust memory.
static HASHING: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

async fn verify_off_thread(password: &str, phc: String) -> bool {
    let Ok(_permit) = HASHING.acquire().await else {
        return false;
    };
    let password = password.to_string();
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false)
}

/// Checks a break-glass login (throttled per address, see `throttle`) and
/// audits every attempt that is checked, whatever the outcome.
pub async fn login(pool: &PgPool, email: &str, password: &str) -> Result<LoginOutcome, sqlx::Error> {
    let account = email.trim().to_lowercase();
    if let Err(wait) = throttle::begin(pool, &account).await? {
        tracing::warn!(email = %account, wait_s = wait.as_secs_f64(), "break-glass login throttled");
        return Ok(LoginOutcome::Throttled(wait));
    }
    type Row = (Uuid, String, Option<String>, bool, bool, String, bool);
    let row: Option<Row> = sqlx::query_as(
        "SELECT user_id, email, name, is_admin, email_verified, password_hash, deactivated \
         FROM breakglass_credential($1)",
    )
    .bind(&account)
    .fetch_optional(pool)
    .await?;
    // Hash work happens either way, so timing does not tell whether the account exists.
    let (ok, user) = match row {
        Some((user_id, email, name, is_admin, email_verified, phc, deactivated)) => {
            let ok = verify_off_thread(password, phc).await && is_admin && !deactivated;
            (
                ok,
                Some(Principal {
                    user_id,
                    email,
                    name,
                    is_admin,
                    email_verified,
                    session: None,
                }),
            )
        }
        None => {
            verify_off_thread(password, DUMMY_HASH.to_string()).await;
            (false, None)
        }
    };
    throttle::end(pool, &account, ok).await?;
    let action = if ok {
        "breakglass_login"
    } else {
        "breakglass_login_failed"
    };
    tracing::warn!(email = %account, action, "break-glass login attempt");
    super::sessions::audit(
        pool,
        user.as_ref().map(|u| u.user_id),
        Some(&account),
        action,
        serde_json::json!({}),
    )
    .await?;
    Ok(match user {
        Some(user) if ok => LoginOutcome::SignedIn(user),
        _ => LoginOutcome::Refused,
    })
}

/// argon2id of a random string, so an unknown account costs the same as a known one.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9ZuAmbm7yUXLVeO7zEBzYd6HCjnaqK2PEJhQ4rbNYtA";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong", &h));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn weak_passwords_are_refused_naming_the_field() {
        let e = check_password("").unwrap_err().to_string();
        assert!(e.starts_with("password:") && e.contains("standard input"), "{e}");
        let e = check_password(&" ".repeat(20)).unwrap_err().to_string();
        assert!(e.contains("only spaces"), "{e}");
        let e = check_password("elevenchars").unwrap_err().to_string();
        assert!(e.contains("at least 12"), "{e}");
        assert!(check_password("twelve chars").is_ok());
        let e = check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 1024 bytes"), "{e}");
        assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES)).is_ok());
    }

    #[test]
    fn addresses_are_checked_like_the_users_table() {
        assert_eq!(
            super::super::users::normalise_email(" Root@Example.COM ").unwrap(),
            "root@example.com"
        );
        for bad in ["", "root", "@example.com", "root@", "a@b@c", "ro ot@example.com"] {
            assert!(super::super::users::normalise_email(bad).is_err(), "{bad}");
        }
    }
}
