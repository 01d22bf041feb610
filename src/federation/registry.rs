//! The peer registry in PostgreSQL, and its audit trail. State is read from
//! the database on every request, so a revocation takes effect at once.

use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::document::{IdentityDocument, PublicKey};
use super::grant::Terms;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PeerRecord {
    pub id: Uuid,
    pub name: String,
    pub base_url: String,
    pub keys: sqlx::types::Json<Vec<PublicKey>>,
    pub schema_hash: Option<String>,
    pub inbound_state: String,
    pub outbound_state: String,
    pub grant_workspaces: Vec<Uuid>,
    pub grant_read_write: bool,
    pub grant_users: Option<Vec<String>>,
    pub grant_forward: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl PeerRecord {
    /// Keys that verify now: the current one and old ones before their expiry.
    pub fn key(&self, key_id: &str, now: i64) -> KeyLookup<'_> {
        match self.keys.iter().find(|k| k.key_id == key_id) {
            None => KeyLookup::Unknown,
            Some(k) if k.valid_until.is_some_and(|until| until <= now) => KeyLookup::Expired,
            Some(k) => KeyLookup::Valid(k),
        }
    }
}

pub enum KeyLookup<'a> {
    Valid(&'a PublicKey),
    Expired,
    Unknown,
}

const COLUMNS: &str = "id, name, base_url, keys, schema_hash, inbound_state, outbound_state, grant_workspaces,
    grant_read_write, grant_users, grant_forward, created_at, updated_at";

pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<PeerRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM peers WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<PeerRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM peers ORDER BY name, id"
    )))
    .fetch_all(pool)
    .await
}

/// Peers we may query now.
pub async fn queryable(pool: &PgPool) -> sqlx::Result<Vec<PeerRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM peers WHERE outbound_state = 'active' ORDER BY name, id"
    )))
    .fetch_all(pool)
    .await
}

fn all_keys(doc: &IdentityDocument) -> Value {
    let mut keys = vec![doc.current_key.clone()];
    keys.extend(doc.old_keys.iter().cloned());
    json!(keys)
}

/// Records (or refreshes) what a peer's identity document says about it.
pub async fn upsert_identity(conn: &mut PgConnection, doc: &IdentityDocument) -> sqlx::Result<()> {
    let id: Uuid = doc.instance_id.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO peers (id, name, base_url, keys, schema_hash) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, base_url = EXCLUDED.base_url,
             keys = EXCLUDED.keys, schema_hash = EXCLUDED.schema_hash, updated_at = now()",
    )
    .bind(id)
    .bind(&doc.name)
    .bind(doc.base_url.trim_end_matches('/'))
    .bind(all_keys(doc))
    .bind(&doc.schema_hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Refreshes only the keys (after fetching a rotated peer's document).
pub async fn update_keys(pool: &PgPool, doc: &IdentityDocument) -> sqlx::Result<()> {
    let id: Uuid = doc.instance_id.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    sqlx::query("UPDATE peers SET keys = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(all_keys(doc))
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn set_outbound(conn: &mut PgConnection, id: Uuid, state: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE peers SET outbound_state = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(state)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_inbound(conn: &mut PgConnection, id: Uuid, state: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE peers SET inbound_state = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(state)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_grant(conn: &mut PgConnection, id: Uuid, terms: &Terms) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE peers SET inbound_state = 'active', grant_workspaces = $2, grant_read_write = $3,
             grant_users = $4, grant_forward = $5, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(&terms.workspaces)
    .bind(terms.read_write)
    .bind(terms.users.as_deref())
    .bind(terms.forward)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn audit(conn: &mut PgConnection, peer: Uuid, actor: &str, action: &str, details: Value) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO peer_audit (peer_id, actor, action, details) VALUES ($1, $2, $3, $4)")
        .bind(peer)
        .bind(actor)
        .bind(action)
        .bind(details)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub details: Value,
    pub at: OffsetDateTime,
}

pub async fn audit_log(pool: &PgPool, peer: Uuid) -> sqlx::Result<Vec<AuditEntry>> {
    sqlx::query_as("SELECT actor, action, details, at FROM peer_audit WHERE peer_id = $1 ORDER BY id")
        .bind(peer)
        .fetch_all(pool)
        .await
}
