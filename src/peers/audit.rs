//! `federationAudit`: the request audit (federation/audit.rs), newest first,
//! for instance administrators (the table's policy says so too).

use async_graphql::{ComplexObject, Context, ID, InputObject, Object, SimpleObject};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::federation::audit::Outcome;
use crate::graphql::RequestContext;
use crate::graphql::pagination::{Cursor, PageInfo, page_size};

/// The list's one ordering: newest first (ids are UUIDv7, in the order received).
const ORDERING: &str = "RECEIVED:DESC";

/// One request a peer made to this instance.
#[derive(SimpleObject, Clone, Debug, sqlx::FromRow)]
#[graphql(name = "FederationAuditEntry", complex)]
pub struct AuditEntry {
    #[graphql(skip)]
    pub id: Uuid,
    pub at: OffsetDateTime,
    #[graphql(skip)]
    pub peer_id: Option<Uuid>,
    /// Whether its signature verified.
    pub verified: bool,
    /// The remote person the request named (global User ID).
    pub remote_user: Option<String>,
    /// QUERY, COMMAND, EVENT, DISCONNECT or CONNECT.
    pub verb: String,
    /// The root fields it asked for.
    pub resources: Vec<String>,
    /// Hex SHA-256 of its normalised GraphQL document.
    pub query_hash: Option<String>,
    #[sqlx(try_from = "String")]
    pub outcome: Outcome,
    /// Why it was refused or failed.
    pub code: Option<String>,
    /// Objects in the lists of the answer.
    pub rows: i64,
    /// Bytes of the answer.
    pub bytes: i64,
    pub latency_ms: i64,
}

#[ComplexObject]
impl AuditEntry {
    /// The instance it came from (only as claimed when `verified` is false).
    async fn peer_id(&self) -> Option<String> {
        self.peer_id.map(|p| p.to_string())
    }
}

#[derive(SimpleObject)]
#[graphql(name = "FederationAuditEdge")]
pub struct AuditEdge {
    pub cursor: String,
    pub node: AuditEntry,
}

#[derive(SimpleObject)]
#[graphql(name = "FederationAuditConnection")]
pub struct AuditConnection {
    pub edges: Vec<AuditEdge>,
    pub page_info: PageInfo,
    /// All entries matching the filter (not only this page).
    pub total_count: i64,
}

#[derive(InputObject, Default)]
#[graphql(name = "FederationAuditFilter")]
pub struct AuditFilter {
    /// Only requests from this instance.
    pub peer_id: Option<ID>,
    pub outcome: Option<Outcome>,
}

/// Which entries a list holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selection {
    pub peer: Option<Uuid>,
    pub outcome: Option<Outcome>,
}

impl Selection {
    fn push(&self, q: &mut QueryBuilder<Postgres>) {
        q.push(" WHERE true");
        if let Some(peer) = self.peer {
            q.push(" AND peer_id = ").push_bind(peer);
        }
        if let Some(outcome) = self.outcome {
            q.push(" AND outcome = ").push_bind(outcome.as_str());
        }
    }
}

/// Up to `limit` entries, newest first, older than `before` when given
/// (`mosaic audit` reads it too).
pub async fn page(
    conn: &mut PgConnection,
    selection: Selection,
    before: Option<Uuid>,
    limit: usize,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new(
        "SELECT id, at, peer_id, verified, remote_user, verb, resources, query_hash, outcome, code, \
         rows, bytes, latency_ms FROM federation_audit",
    );
    selection.push(&mut q);
    if let Some(before) = before {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(format!(" ORDER BY id DESC{}", crate::db::limit(limit)));
    q.build_query_as().fetch_all(conn).await
}

async fn count(conn: &mut PgConnection, selection: Selection) -> Result<i64, sqlx::Error> {
    let mut q = QueryBuilder::<Postgres>::new("SELECT count(*) FROM federation_audit");
    selection.push(&mut q);
    q.build_query_scalar().fetch_one(conn).await
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The requests peers made to this instance, newest first: allowed,
    /// refused (with the precise code) or failed. Instance administrators only.
    async fn federation_audit(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<AuditFilter>,
    ) -> AppResult<AuditConnection> {
        let rc = RequestContext::of(ctx);
        rc.admin()?;
        let first = page_size(first, rc.max_page_size)?;
        let after = after.map(|a| rc.open_cursor(&a, ORDERING)).transpose()?;
        let filter = filter.unwrap_or_default();
        let selection = Selection {
            peer: filter
                .peer_id
                .as_ref()
                .map(|id| {
                    id.parse::<Uuid>()
                        .map_err(|_| AppError::BadInput(format!("filter.peerId: '{}' is not an instance id", id.0)))
                })
                .transpose()?,
            outcome: filter.outcome,
        };
        let mut conn = rc.db.conn().await?;
        let mut rows = page(&mut conn, selection, after.as_ref().map(|c| c.i), first + 1).await?;
        let total_count = count(&mut conn, selection).await?;
        drop(conn);
        let has_next_page = rows.len() > first;
        rows.truncate(first);
        let edges: Vec<AuditEdge> = rows
            .into_iter()
            .map(|node| AuditEdge {
                cursor: rc.seal_cursor(&Cursor {
                    o: ORDERING.into(),
                    k: None,
                    n: None,
                    i: node.id,
                }),
                node,
            })
            .collect();
        Ok(AuditConnection {
            page_info: PageInfo::of(edges.iter().map(|e| &e.cursor), has_next_page, after.is_some()),
            edges,
            total_count,
        })
    }
}
