//! Local users, created by operators (`mosaic user create`) and, later, by SSO.

use anyhow::{Result, bail};
use sqlx::PgConnection;
use uuid::Uuid;

/// Lower-cases and checks an e-mail address as the `users` table will
/// (one `@`, something on both sides, no spaces).
pub fn normalise_email(email: &str) -> Result<String, String> {
    let email = email.trim().to_lowercase();
    let ok = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !email.contains(char::is_whitespace)
        }
        None => false,
    };
    if ok {
        Ok(email)
    } else {
        Err(format!("'{email}' is not an e-mail address"))
    }
}

/// Creates a user; errors name the offending field.
pub async fn create(conn: &mut PgConnection, email: &str, name: Option<&str>, admin: bool) -> Result<Uuid> {
    let email = normalise_email(email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
    let id = Uuid::now_v7();
    let created = sqlx::query("INSERT INTO users (id, email, name, is_admin) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(&email)
        .bind(name)
        .bind(admin)
        .execute(conn)
        .await;
    match created {
        Ok(_) => Ok(id),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            bail!("--email: a user with e-mail {email} already exists")
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23514") => {
            if e.constraint().is_some_and(|c| c.contains("email")) {
                bail!("--email: '{email}' is not an e-mail address")
            }
            bail!("--name: longer than 200 characters")
        }
        Err(e) => Err(e.into()),
    }
}

/// A user as `mosaic user list` shows them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserSummary {
    pub id: Uuid,
    pub email: String,
    pub is_admin: bool,
    pub deactivated: bool,
}

/// Every user, by e-mail (operator connection).
pub async fn list(conn: &mut PgConnection) -> Result<Vec<UserSummary>> {
    Ok(sqlx::query_as(
        "SELECT id, email, is_admin, deactivated_at IS NOT NULL AS deactivated FROM users ORDER BY email",
    )
    .fetch_all(conn)
    .await?)
}
