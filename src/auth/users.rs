//! Local users, created by operators (`mosaic user create`) and, later, by SSO.

use anyhow::{Result, bail};
use sqlx::PgConnection;
use uuid::Uuid;

/// Creates a user; errors name the offending field.
pub async fn create(conn: &mut PgConnection, email: &str, name: Option<&str>, admin: bool) -> Result<Uuid> {
    let email = email.trim().to_lowercase();
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
            bail!("--email/--name: '{email}' is not an e-mail address, or the name is too long")
        }
        Err(e) => Err(e.into()),
    }
}
