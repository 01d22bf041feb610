//! The graph of entries and the links between them, as the caller sees it:
//! an edge exists where a link resolves (under the caller's scope) to
//! another visible, unarchived entry.

use std::collections::{HashMap, HashSet};

use async_graphql::{Context, ID, Object, SimpleObject};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use super::tags::{self, KnowledgeTag};
use super::{Conditions, KnowledgeFilter, KnowledgeStatus, input, store, workspace_here};
use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;

const DEFAULT_LIMIT: usize = 500;
const MAX_DEPTH: i32 = 5;
const MOST_CONNECTED: i64 = 10;

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeGraphNode {
    /// The entry's ID.
    pub id: ID,
    pub slug: String,
    pub title: String,
    pub status: KnowledgeStatus,
    /// Edges to and from other nodes of this graph (of the whole workspace in stats).
    pub degree: i32,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeGraphEdge {
    pub source: ID,
    pub target: ID,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeGraph {
    pub nodes: Vec<KnowledgeGraphNode>,
    pub edges: Vec<KnowledgeGraphEdge>,
    /// Nodes without an edge in this graph.
    pub orphans: Vec<ID>,
    /// Whether `limit` left entries out.
    pub truncated: bool,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeGraphStats {
    pub entries: i64,
    /// Distinct entry-to-entry edges.
    pub links: i64,
    pub broken_links: i64,
    pub orphans: i64,
    pub average_links_per_entry: f64,
    pub most_connected: Vec<KnowledgeGraphNode>,
    pub tags: Vec<KnowledgeTag>,
}

#[derive(sqlx::FromRow)]
struct NodeRow {
    id: Uuid,
    slug: String,
    title: String,
    status: String,
}

/// Entries by id that pass the conditions, in no particular order.
async fn nodes_among(conn: &mut PgConnection, ids: &[Uuid], conditions: &Conditions) -> AppResult<Vec<NodeRow>> {
    let mut q = QueryBuilder::<Postgres>::new(
        "SELECT e.id, e.slug, e.title, e.status FROM knowledge_entries e WHERE e.id = ANY(",
    );
    q.push_bind(ids.to_vec()).push(")");
    conditions.push(&mut q);
    Ok(q.build_query_as().fetch_all(&mut *conn).await?)
}

/// Resolved links out of `ids`: (source, target), self-links left out.
async fn out_edges(conn: &mut PgConnection, ids: &[Uuid]) -> AppResult<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT l.source_id, r.id FROM knowledge_links l
         JOIN LATERAL knowledge_resolve(l.workspace_id, l.target_key) AS r(id) ON r.id <> l.source_id
         WHERE l.source_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?)
}

/// Resolved links into `ids`: (source, target).
async fn in_edges(conn: &mut PgConnection, ids: &[Uuid]) -> AppResult<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT l.source_id, t.id FROM knowledge_entries t
         JOIN knowledge_links l ON l.workspace_id = t.workspace_id AND l.target_key IN (t.slug, t.title_key)
         JOIN LATERAL knowledge_resolve(l.workspace_id, l.target_key) AS r(id) ON r.id = t.id
         WHERE t.id = ANY($1) AND l.source_id <> t.id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?)
}

fn build(
    rc: &RequestContext,
    rows: Vec<NodeRow>,
    edges: Vec<(Uuid, Uuid)>,
    truncated: bool,
) -> AppResult<KnowledgeGraph> {
    let present: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
    let edges: Vec<(Uuid, Uuid)> = edges
        .into_iter()
        .filter(|(s, t)| present.contains(s) && present.contains(t))
        .collect();
    let mut degree: HashMap<Uuid, i32> = HashMap::new();
    for (s, t) in &edges {
        *degree.entry(*s).or_default() += 1;
        *degree.entry(*t).or_default() += 1;
    }
    let id = |u: Uuid| rc.global_id(Kind::KnowledgeEntry, u);
    let orphans = rows
        .iter()
        .filter(|r| !degree.contains_key(&r.id))
        .map(|r| id(r.id))
        .collect();
    let nodes = rows
        .into_iter()
        .map(|r| {
            Ok(KnowledgeGraphNode {
                id: id(r.id),
                degree: degree.get(&r.id).copied().unwrap_or(0),
                status: KnowledgeStatus::parse(&r.status)?,
                slug: r.slug,
                title: r.title,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(KnowledgeGraph {
        nodes,
        edges: edges
            .into_iter()
            .map(|(s, t)| KnowledgeGraphEdge {
                source: id(s),
                target: id(t),
            })
            .collect(),
        orphans,
        truncated,
    })
}

/// The whole workspace's graph, the most recently changed entries first.
async fn whole(rc: &RequestContext, conditions: &Conditions, limit: usize) -> AppResult<KnowledgeGraph> {
    let mut conn = rc.db.conn().await?;
    let mut q =
        QueryBuilder::<Postgres>::new("SELECT e.id, e.slug, e.title, e.status FROM knowledge_entries e WHERE true");
    conditions.push(&mut q);
    q.push(format!(
        " ORDER BY e.updated_at DESC, e.id DESC{}",
        crate::db::limit(limit + 1)
    ));
    let mut rows: Vec<NodeRow> = q.build_query_as().fetch_all(&mut *conn).await?;
    let truncated = rows.len() > limit;
    rows.truncate(limit);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let edges = out_edges(&mut conn, &ids).await?;
    drop(conn);
    build(rc, rows, edges, truncated)
}

/// The entries within `depth` links (either way) of `start`.
async fn around_entry(
    rc: &RequestContext,
    conditions: &Conditions,
    start: Uuid,
    depth: i32,
    limit: usize,
) -> AppResult<KnowledgeGraph> {
    let mut conn = rc.db.conn().await?;
    let mut rows = nodes_among(&mut conn, &[start], conditions).await?;
    let mut seen: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut frontier: Vec<Uuid> = seen.iter().copied().collect();
    let mut truncated = false;
    for _ in 0..depth {
        if frontier.is_empty() {
            break;
        }
        let mut next: Vec<Uuid> = Vec::new();
        for (s, t) in out_edges(&mut conn, &frontier)
            .await?
            .into_iter()
            .chain(in_edges(&mut conn, &frontier).await?)
        {
            for n in [s, t] {
                if !seen.contains(&n) && !next.contains(&n) {
                    next.push(n);
                }
            }
        }
        let mut found = nodes_among(&mut conn, &next, conditions).await?;
        found.sort_by_key(|r| r.id);
        if rows.len() + found.len() > limit {
            truncated = true;
            found.truncate(limit - rows.len());
        }
        frontier = found.iter().map(|r| r.id).collect();
        seen.extend(frontier.iter().copied());
        rows.extend(found);
        if truncated {
            break;
        }
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let edges = out_edges(&mut conn, &ids).await?;
    drop(conn);
    build(rc, rows, edges, truncated)
}

#[derive(Default)]
pub struct KnowledgeGraphQuery;

#[Object]
impl KnowledgeGraphQuery {
    /// The graph of a workspace's entries (all but archived unless the
    /// filter says otherwise), or with `around` the entries within `depth`
    /// links of one entry, either way (`depth` 1 to 5, default 1).
    async fn knowledge_graph(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        filter: Option<KnowledgeFilter>,
        limit: Option<i32>,
        around: Option<String>,
        depth: Option<i32>,
    ) -> AppResult<KnowledgeGraph> {
        let rc = RequestContext::of(ctx);
        let depth = depth.unwrap_or(1);
        let max = rc.knowledge.settings.max_graph_nodes;
        let limit = match limit {
            None => DEFAULT_LIMIT.min(max),
            Some(n) if n >= 1 && n as usize <= max => n as usize,
            Some(_) => {
                return Err(AppError::invalid(
                    "INVALID_LIMIT",
                    format!("limit: must be between 1 and {max}"),
                ));
            }
        };
        if !(1..=MAX_DEPTH).contains(&depth) {
            return Err(AppError::invalid(
                "INVALID_DEPTH",
                format!("depth: must be between 1 and {MAX_DEPTH}"),
            ));
        }
        let ws = workspace_here(rc, "workspaceId", &workspace_id).await?;
        let conditions = Conditions::parse(rc, Some(ws), &filter.unwrap_or_default()).await?;
        match around {
            None => whole(rc, &conditions, limit).await,
            Some(slug) => {
                let slug = input::slug(&slug).map_err(|e| match e {
                    AppError::Invalid { code, message } => AppError::Invalid {
                        code,
                        message: message.replacen("slug", "around", 1),
                    },
                    other => other,
                })?;
                let start = store::by_slug(&mut *rc.db.conn().await?, ws, slug)
                    .await?
                    .ok_or_else(|| {
                        AppError::invalid("UNKNOWN_ENTRY", format!("around: no entry '{slug}' you can see"))
                    })?;
                around_entry(rc, &conditions, start.id, depth, limit).await
            }
        }
    }

    /// Totals of a workspace's graph (all but archived entries).
    async fn knowledge_graph_stats(&self, ctx: &Context<'_>, workspace_id: ID) -> AppResult<KnowledgeGraphStats> {
        let rc = RequestContext::of(ctx);
        let ws = workspace_here(rc, "workspaceId", &workspace_id).await?;
        let mut conn = rc.db.conn().await?;
        let (entries, links, broken_links, orphans, top, top_degree): (i64, i64, i64, i64, Vec<Uuid>, Vec<i64>) =
            sqlx::query_as(
                "WITH n AS (SELECT id FROM knowledge_entries WHERE workspace_id = $1 AND status <> 'ARCHIVED'),
                 r AS (SELECT l.source_id, t.id AS target_id FROM knowledge_links l JOIN n ON n.id = l.source_id
                       LEFT JOIN LATERAL knowledge_resolve(l.workspace_id, l.target_key) AS t(id) ON true),
                 ed AS (SELECT DISTINCT source_id, target_id FROM r
                        WHERE target_id IS NOT NULL AND target_id <> source_id),
                 deg AS (SELECT id, count(*) AS d FROM (SELECT source_id AS id FROM ed UNION ALL
                                                        SELECT target_id FROM ed) x GROUP BY id),
                 top AS (SELECT id, d FROM deg ORDER BY d DESC, id LIMIT $2)
                 SELECT (SELECT count(*) FROM n), (SELECT count(*) FROM ed),
                        (SELECT count(*) FROM r WHERE target_id IS NULL),
                        (SELECT count(*) FROM n WHERE NOT EXISTS (SELECT 1 FROM deg WHERE deg.id = n.id)),
                        coalesce((SELECT array_agg(id ORDER BY d DESC, id) FROM top), '{}'),
                        coalesce((SELECT array_agg(d ORDER BY d DESC, id) FROM top), '{}')",
            )
            .bind(ws)
            .bind(MOST_CONNECTED)
            .fetch_one(&mut *conn)
            .await?;
        let rows = store::load_many(&mut conn, &top).await?;
        drop(conn);
        let most_connected = rows
            .into_iter()
            .zip(top_degree)
            .map(|(r, d)| {
                Ok(KnowledgeGraphNode {
                    id: rc.global_id(Kind::KnowledgeEntry, r.id),
                    status: KnowledgeStatus::parse(&r.status)?,
                    slug: r.slug,
                    title: r.title,
                    degree: d as i32,
                })
            })
            .collect::<AppResult<Vec<_>>>()?;
        Ok(KnowledgeGraphStats {
            entries,
            links,
            broken_links,
            orphans,
            average_links_per_entry: if entries == 0 {
                0.0
            } else {
                links as f64 / entries as f64
            },
            most_connected,
            tags: tags::list(rc, ws).await?,
        })
    }
}
