//! The peer registry in PostgreSQL, and its audit trail. Requests read it
//! from `Federation::all_peers`, a cache that every change forgets: at commit
//! here (`Change`), and on every replica by notification (migration 0051), so
//! a revocation takes effect on the next request.

use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::document::{IdentityDocument, PublicKey};
use super::grant::{self, RateLimit, Resource, Terms, Unmapped, UserMapping};
use crate::db::cache::Forget;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PeerRecord {
    pub id: Uuid,
    pub name: String,
    pub base_url: String,
    pub keys: sqlx::types::Json<Vec<PublicKey>>,
    pub schema_hash: Option<String>,
    /// What we let the peer do: none, pending, active, suspended, rejected, revoked.
    #[sqlx(try_from = "String")]
    pub inbound_state: PeerState,
    /// What the peer lets us do: none, requested, active, suspended, rejected, revoked.
    #[sqlx(try_from = "String")]
    pub outbound_state: PeerState,
    pub grant_workspaces: Vec<Uuid>,
    pub grant_read_write: bool,
    pub grant_users: Option<Vec<String>>,
    pub grant_forward: bool,
    /// The scope document's resources, as stored (`Terms` reads them: `terms`).
    pub grant_resources: Option<Vec<String>>,
    pub grant_excluded_resources: Vec<String>,
    pub grant_write_resources: Option<Vec<String>>,
    pub grant_max_rows: Option<i32>,
    /// The peer's own rate limit (None: the instance's defaults).
    #[sqlx(json(nullable))]
    pub grant_rate_limit: Option<RateLimit>,
    #[sqlx(json)]
    pub grant_user_mappings: Vec<UserMapping>,
    pub grant_unmapped: String,
    /// A new name the peer announced, waiting for an admin's approval.
    pub pending_name: Option<String>,
    /// A new base URL the peer announced, waiting for an admin's approval.
    pub pending_base_url: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One side of a peering, as stored in `inbound_state` and `outbound_state`
/// (the database checks which states each side may take).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    None,
    /// We asked the peer (outbound only).
    Requested,
    /// The peer asked us (inbound only).
    Pending,
    Active,
    Suspended,
    Rejected,
    Revoked,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Requested => "requested",
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Rejected => "rejected",
            Self::Revoked => "revoked",
        }
    }

    /// Approved and not ended.
    pub fn approved(self) -> bool {
        matches!(self, Self::Active | Self::Suspended)
    }

    /// Asked for or approved, and not ended.
    pub fn live(self) -> bool {
        self.approved() || matches!(self, Self::Requested | Self::Pending)
    }
}

impl TryFrom<String> for PeerState {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "none" => Self::None,
            "requested" => Self::Requested,
            "pending" => Self::Pending,
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            "rejected" => Self::Rejected,
            "revoked" => Self::Revoked,
            other => return Err(format!("unknown peer state {other}")),
        })
    }
}

/// A state equals its stored name.
impl PartialEq<&str> for PeerState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PeerRecord {
    /// The grant as a scope document (the database keeps out unknown names).
    pub fn terms(&self) -> Terms {
        let known = |names: &[String]| -> Vec<Resource> { names.iter().filter_map(|n| Resource::parse(n)).collect() };
        Terms {
            workspaces: self.grant_workspaces.clone(),
            read_write: self.grant_read_write,
            users: self.grant_users.clone(),
            forward: self.grant_forward,
            resources: self.grant_resources.as_deref().map(known),
            excluded_resources: known(&self.grant_excluded_resources),
            write_resources: self.grant_write_resources.as_deref().map(known),
            max_rows_per_query: self.grant_max_rows.and_then(|n| u32::try_from(n).ok()),
            rate_limit: self.grant_rate_limit,
            user_mappings: self.grant_user_mappings.clone(),
            unmapped: Unmapped::parse(&self.grant_unmapped).unwrap_or(Unmapped::Refuse),
        }
    }

    /// The key the peer signs with now, as we hold it (no expiry).
    pub fn current_key(&self) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.valid_until.is_none())
    }

    /// Whether the peering is live in either direction: the peer may then
    /// send EVENT and DISCONNECT (any other peer only CONNECT).
    pub fn is_live(&self) -> bool {
        self.inbound_state.live() || self.outbound_state.live()
    }

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
    grant_read_write, grant_users, grant_forward, grant_resources, grant_excluded_resources, grant_write_resources,
    grant_max_rows, grant_rate_limit, grant_user_mappings, grant_unmapped, pending_name, pending_base_url, created_at, updated_at";

/// A transaction that changes the registry. Committing it forgets the
/// cached registry at once, so that this instance's next request sees the
/// change; other replicas hear of it by notification (migration 0051).
pub struct Change<'c> {
    tx: Transaction<'static, Postgres>,
    cached: &'c dyn Forget,
}

impl<'c> Change<'c> {
    pub async fn begin(pool: &PgPool, cached: &'c dyn Forget) -> sqlx::Result<Self> {
        Ok(Self {
            tx: pool.begin().await?,
            cached,
        })
    }

    pub async fn commit(self) -> sqlx::Result<()> {
        self.tx.commit().await?;
        self.cached.forget("");
        Ok(())
    }
}

impl std::ops::Deref for Change<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Change<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

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

fn all_keys(doc: &IdentityDocument) -> Vec<PublicKey> {
    let mut keys = vec![doc.current_key.clone()];
    keys.extend(doc.old_keys.iter().cloned());
    keys
}

/// The document's keys, keeping every expiry we already hold: a stored
/// `valid_until` is never lost or extended (a retired key cannot be made
/// current again, even by a document signed with it).
pub fn merge_keys(stored: &[PublicKey], doc: &IdentityDocument) -> Vec<PublicKey> {
    all_keys(doc)
        .into_iter()
        .map(|mut k| {
            if let Some(old) = stored.iter().find(|s| s.key_id == k.key_id) {
                k.valid_until = match (old.valid_until, k.valid_until) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (Some(a), None) => Some(a),
                    (None, b) => b,
                };
            }
            k
        })
        .collect()
}

/// Who vouches for a document's name and base URL.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Vouched {
    /// An admin of ours chose this URL (outbound connect): apply at once.
    ByAdmin,
    /// Only the peer says so (CONNECT): once an admin approved the peering,
    /// a new name or base URL waits as pending until an admin approves it.
    ByPeer,
}

/// Records (or refreshes) what a peer's identity document says about it.
pub async fn record_identity(conn: &mut PgConnection, doc: &IdentityDocument, vouched: Vouched) -> sqlx::Result<()> {
    let id: Uuid = doc.instance_id.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let url = doc.base_url.trim_end_matches('/');
    #[derive(sqlx::FromRow)]
    struct Stored {
        keys: sqlx::types::Json<Vec<PublicKey>>,
        name: String,
        base_url: String,
        #[sqlx(try_from = "String")]
        inbound_state: PeerState,
        #[sqlx(try_from = "String")]
        outbound_state: PeerState,
    }
    let stored: Option<Stored> = sqlx::query_as(
        "SELECT keys, name, base_url, inbound_state, outbound_state FROM peers WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(Stored {
        keys,
        name,
        base_url,
        inbound_state: inbound,
        outbound_state: outbound,
    }) = stored
    else {
        sqlx::query("INSERT INTO peers (id, name, base_url, keys, schema_hash) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(&doc.name)
            .bind(url)
            .bind(json!(all_keys(doc)))
            .bind(&doc.schema_hash)
            .execute(conn)
            .await?;
        return Ok(());
    };
    let keys = json!(merge_keys(&keys, doc));
    let approved = inbound.approved() || outbound.live();
    if vouched == Vouched::ByPeer && approved {
        sqlx::query(
            "UPDATE peers SET keys = $2, schema_hash = $3, pending_name = $4, pending_base_url = $5,
                 updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(keys)
        .bind(&doc.schema_hash)
        .bind((doc.name != name).then_some(&doc.name))
        .bind((url != base_url).then_some(url))
        .execute(conn)
        .await?;
    } else {
        sqlx::query(
            "UPDATE peers SET name = $2, base_url = $3, keys = $4, schema_hash = $5, pending_name = NULL,
                 pending_base_url = NULL, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(&doc.name)
        .bind(url)
        .bind(keys)
        .bind(&doc.schema_hash)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Refreshes only the keys (after fetching a rotated peer's document).
pub async fn update_keys(tx: &mut PgConnection, doc: &IdentityDocument) -> sqlx::Result<()> {
    let id: Uuid = doc.instance_id.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let stored: Option<sqlx::types::Json<Vec<PublicKey>>> =
        sqlx::query_scalar("SELECT keys FROM peers WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(stored) = stored {
        sqlx::query("UPDATE peers SET keys = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(json!(merge_keys(&stored, doc)))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Deletes a peer nobody approved or that was ended (inbound none, pending,
/// rejected or revoked, outbound none, rejected or revoked); false when
/// there is no such peer in such a state.
pub async fn delete_unapproved(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let deleted = sqlx::query(
        "DELETE FROM peers WHERE id = $1 AND inbound_state IN ('none', 'pending', 'rejected', 'revoked')
             AND outbound_state IN ('none', 'rejected', 'revoked')",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Peers waiting for an admin's approval.
pub async fn pending_count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM peers WHERE inbound_state = 'pending'")
        .fetch_one(pool)
        .await
}

/// Our side of a peering, locked for the transaction.
pub async fn inbound_state(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<PeerState> {
    let state: String = sqlx::query_scalar("SELECT inbound_state FROM peers WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_one(conn)
        .await?;
    PeerState::try_from(state).map_err(|e| sqlx::Error::Decode(e.into()))
}

pub async fn set_outbound(conn: &mut PgConnection, id: Uuid, state: PeerState) -> sqlx::Result<()> {
    sqlx::query("UPDATE peers SET outbound_state = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(state.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_inbound(conn: &mut PgConnection, id: Uuid, state: PeerState) -> sqlx::Result<()> {
    sqlx::query("UPDATE peers SET inbound_state = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(state.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends a peering both ways at once, its grant with it.
pub async fn revoke_both(conn: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE peers SET inbound_state = 'revoked', outbound_state = 'revoked', grant_workspaces = '{}',
             grant_read_write = false, grant_forward = false, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes a grant (already checked: `Terms::checked`) and makes the peer active.
pub async fn set_grant(conn: &mut PgConnection, id: Uuid, terms: &Terms) -> sqlx::Result<()> {
    let names = |rs: &[Resource]| grant::resource_names(rs);
    sqlx::query(
        "UPDATE peers SET inbound_state = 'active', grant_workspaces = $2, grant_read_write = $3,
             grant_users = $4, grant_forward = $5, grant_resources = $6, grant_excluded_resources = $7,
             grant_write_resources = $8, grant_max_rows = $9, grant_rate_limit = $10,
             grant_user_mappings = $11, grant_unmapped = $12, name = coalesce(pending_name, name),
             base_url = coalesce(pending_base_url, base_url), pending_name = NULL, pending_base_url = NULL,
             updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(&terms.workspaces)
    .bind(terms.read_write)
    .bind(terms.users.as_deref())
    .bind(terms.forward)
    .bind(terms.resources.as_deref().map(names))
    .bind(names(&terms.excluded_resources))
    .bind(terms.write_resources.as_deref().map(names))
    .bind(terms.max_rows_per_query.map(|n| n as i32))
    .bind(terms.rate_limit.map(sqlx::types::Json))
    .bind(sqlx::types::Json(&terms.user_mappings))
    .bind(terms.unmapped.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// A grant as the audit trail records it.
pub fn grant_details(terms: &Terms) -> Value {
    json!({
        "workspaces": terms.workspaces,
        "read_write": terms.read_write,
        "users": terms.users,
        "forward": terms.forward,
        "resources": terms.resources.as_deref().map(grant::resource_names),
        "excluded_resources": grant::resource_names(&terms.excluded_resources),
        "write_resources": terms.write_resources.as_deref().map(grant::resource_names),
        "max_rows_per_query": terms.max_rows_per_query,
        "rate_limit": terms.rate_limit,
        "user_mappings": terms.user_mappings,
        "unmapped": terms.unmapped.as_str(),
    })
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
