//! The local break-glass administrator: for when the identity provider is
//! down. Created with `mosaic admin create --email E` (password on stdin),
//! stored as an argon2id hash, and every use (or failed attempt) is audited.

use anyhow::{Result, bail};
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::Principal;

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

/// Creates (or updates) a break-glass administrator: the user is made an
/// instance admin and given this password. Returns the user id.
pub async fn create_admin(conn: &mut PgConnection, email: &str, password: &str) -> Result<Uuid> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("password: must be at least {MIN_PASSWORD_CHARS} characters");
    }
    let email = email.trim().to_lowercase();
    let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(&mut *conn)
        .await?;
    let user_id = match existing {
        Some(id) => {
            sqlx::query("UPDATE users SET is_admin = true, updated_at = now() WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            id
        }
        None => super::users::create(conn, &email, Some("Break-glass administrator"), true).await?,
    };
    sqlx::query(
        "INSERT INTO local_credentials (user_id, password_hash) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()",
    )
    .bind(user_id)
    .bind(hash_password(password)?)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT auth_audit_write($1, $2, 'breakglass_created', '{}')")
        .bind(user_id)
        .bind(&email)
        .execute(&mut *conn)
        .await?;
    Ok(user_id)
}

/// Checks a break-glass login and audits it, whatever the outcome.
pub async fn login(pool: &PgPool, email: &str, password: &str) -> Result<Option<Principal>, sqlx::Error> {
    type Row = (Uuid, String, Option<String>, bool, bool, String, bool);
    let row: Option<Row> = sqlx::query_as(
        "SELECT user_id, email, name, is_admin, email_verified, password_hash, deactivated \
         FROM breakglass_credential($1)",
    )
    .bind(email.trim())
    .fetch_optional(pool)
    .await?;
    // Hash work happens either way, so timing does not tell whether the account exists.
    let (ok, user) = match row {
        Some((user_id, email, name, is_admin, email_verified, phc, deactivated)) => {
            let ok = verify_password(password, &phc) && is_admin && !deactivated;
            (
                ok,
                Some(Principal {
                    user_id,
                    email,
                    name,
                    is_admin,
                    email_verified,
                }),
            )
        }
        None => {
            let _ = verify_password(password, DUMMY_HASH);
            (false, None)
        }
    };
    let action = if ok {
        "breakglass_login"
    } else {
        "breakglass_login_failed"
    };
    tracing::warn!(email = %email, action, "break-glass login attempt");
    super::sessions::audit(
        pool,
        user.as_ref().map(|u| u.user_id),
        Some(email),
        action,
        serde_json::json!({}),
    )
    .await?;
    Ok(if ok { user } else { None })
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
}
