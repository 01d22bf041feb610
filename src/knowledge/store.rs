//! The knowledge base's SQL. Every statement runs in the request's
//! transaction under its scope, so the policies decide what each one sees;
//! nothing here filters by author or draft itself.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use super::links::{WikiLink, slugify};
use crate::error::{AppError, AppResult};

pub const COLUMNS: &str = "e.id, e.workspace_id, e.slug, e.title, e.content, e.summary, e.status, e.author_id, \
     e.created_by, e.updated_by, e.created_at, e.updated_at";

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct EntryRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub slug: String,
    pub title: String,
    pub content: String,
    pub summary: Option<String>,
    pub status: String,
    pub author_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    pub updated_by: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// How many `-2`, `-3`… a colliding slug tries before a random suffix.
const SLUG_ATTEMPTS: u32 = 20;

pub struct NewEntry<'a> {
    pub workspace_id: Uuid,
    /// A slug the caller chose: taken is a refusal, not a renaming.
    pub slug: Option<&'a str>,
    pub title: &'a str,
    pub content: &'a str,
    pub summary: Option<&'a str>,
    pub status: &'a str,
    /// None when a peer writes (its users are not users here).
    pub author: Option<Uuid>,
}

/// Inserts an entry. The slug is unique per workspace over every entry,
/// drafts the caller cannot see included: a collision takes the next free
/// suffix, found by trying (the unique index answers, never a query that
/// could read a hidden row).
pub async fn insert(conn: &mut PgConnection, new: &NewEntry<'_>) -> AppResult<EntryRow> {
    let base = new.slug.map_or_else(|| slugify(new.title), str::to_string);
    let id = Uuid::now_v7();
    for attempt in 1..=SLUG_ATTEMPTS + 1 {
        let slug = match attempt {
            1 => base.clone(),
            n if n <= SLUG_ATTEMPTS => format!("{base}-{n}"),
            _ => format!("{base}-{}", &Uuid::new_v4().simple().to_string()[..8]),
        };
        let row: Option<EntryRow> = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO knowledge_entries AS e (id, workspace_id, slug, title, content, summary, status, \
             author_id, created_by, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8) \
             ON CONFLICT (workspace_id, slug) DO NOTHING RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(new.workspace_id)
        .bind(&slug)
        .bind(new.title)
        .bind(new.content)
        .bind(new.summary)
        .bind(new.status)
        .bind(new.author)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| AppError::from(e).forbidden_as("guests cannot write to the knowledge base"))?;
        if let Some(row) = row {
            return Ok(row);
        }
        if new.slug.is_some() {
            return Err(slug_taken(&slug));
        }
    }
    Err(AppError::internal(anyhow::anyhow!("no free slug for '{base}'")))
}

pub fn slug_taken(slug: &str) -> AppError {
    AppError::invalid("SLUG_TAKEN", format!("slug: '{slug}' is taken in this workspace"))
}

pub async fn load(conn: &mut PgConnection, id: Uuid) -> AppResult<Option<EntryRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM knowledge_entries e WHERE e.id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

pub async fn by_slug(conn: &mut PgConnection, workspace: Uuid, slug: &str) -> AppResult<Option<EntryRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM knowledge_entries e WHERE e.workspace_id = $1 AND e.slug = $2"
    )))
    .bind(workspace)
    .bind(slug)
    .fetch_optional(&mut *conn)
    .await?)
}

/// What an update changes; `None` leaves a field as it is.
#[derive(Default)]
pub struct Changes<'a> {
    pub slug: Option<&'a str>,
    pub title: Option<&'a str>,
    pub content: Option<&'a str>,
    /// `Some(None)` clears the summary.
    pub summary: Option<Option<&'a str>>,
    pub status: Option<&'a str>,
}

/// Applies `changes`; `None` when the policies refuse the row.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    user: Option<Uuid>,
    changes: &Changes<'_>,
) -> AppResult<Option<EntryRow>> {
    let mut q = QueryBuilder::<Postgres>::new("UPDATE knowledge_entries e SET updated_by = ");
    q.push_bind(user);
    if let Some(slug) = changes.slug {
        q.push(", slug = ").push_bind(slug);
    }
    if let Some(title) = changes.title {
        q.push(", title = ").push_bind(title);
    }
    if let Some(content) = changes.content {
        q.push(", content = ").push_bind(content);
    }
    if let Some(summary) = changes.summary {
        q.push(", summary = ").push_bind(summary);
    }
    if let Some(status) = changes.status {
        q.push(", status = ").push_bind(status);
    }
    q.push(" WHERE e.id = ")
        .push_bind(id)
        .push(format!(" RETURNING {COLUMNS}"));
    q.build_query_as()
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| match (AppError::from(e), changes.slug) {
            (AppError::Conflict(_), Some(slug)) => slug_taken(slug),
            (e, _) => e.forbidden_as("only the author may make an entry a draft; guests cannot write"),
        })
}

/// What a save stores besides the entry: its links (when the content was
/// given), its tags (given, or its current ones again: a draft's new tag
/// names stop being hidden once the entry is not a draft), and a version.
pub async fn after_save(
    conn: &mut PgConnection,
    row: &EntryRow,
    links: Option<&[WikiLink]>,
    tags: Option<&[String]>,
    author: Option<Uuid>,
    message: Option<&str>,
) -> AppResult<()> {
    if let Some(links) = links {
        set_links(conn, row, links).await?;
    }
    let tags = match tags {
        Some(t) => t.to_vec(),
        None => tags_of(conn, row.id).await?,
    };
    set_tags(conn, row, &tags).await?;
    add_version(conn, row, author, message).await?;
    Ok(())
}

/// Records the entry as it now is as its next version.
pub async fn add_version(
    conn: &mut PgConnection,
    entry: &EntryRow,
    author: Option<Uuid>,
    message: Option<&str>,
) -> AppResult<i32> {
    // The entry's row is locked by the write before this, so numbers do not race.
    Ok(sqlx::query_scalar(
        "INSERT INTO knowledge_versions (id, workspace_id, entry_id, number, title, content, message, author_id)
         SELECT $1, $2, $3, coalesce(max(number), 0) + 1, $4, $5, $6, $7
         FROM knowledge_versions WHERE entry_id = $3
         RETURNING number",
    )
    .bind(Uuid::now_v7())
    .bind(entry.workspace_id)
    .bind(entry.id)
    .bind(&entry.title)
    .bind(&entry.content)
    .bind(message)
    .bind(author)
    .fetch_one(&mut *conn)
    .await?)
}

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct VersionRow {
    pub id: Uuid,
    pub number: i32,
    pub title: String,
    pub content: String,
    pub message: Option<String>,
    pub author_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
}

const VERSION_COLUMNS: &str = "id, number, title, content, message, author_id, created_at";

/// Versions newest first, after version `before` (exclusive), at most `limit`.
pub async fn versions(
    conn: &mut PgConnection,
    entry: Uuid,
    before: Option<i32>,
    limit: usize,
) -> AppResult<Vec<VersionRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM knowledge_versions WHERE entry_id = $1 AND ($2::int IS NULL OR number < $2)
         ORDER BY number DESC LIMIT $3"
    )))
    .bind(entry)
    .bind(before)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?)
}

pub async fn version_count(conn: &mut PgConnection, entry: Uuid) -> AppResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM knowledge_versions WHERE entry_id = $1")
            .bind(entry)
            .fetch_one(&mut *conn)
            .await?,
    )
}

pub async fn version(conn: &mut PgConnection, entry: Uuid, number: i32) -> AppResult<Option<VersionRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM knowledge_versions WHERE entry_id = $1 AND number = $2"
    )))
    .bind(entry)
    .bind(number)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Replaces the entry's links with those of its current content.
pub async fn set_links(conn: &mut PgConnection, entry: &EntryRow, links: &[WikiLink]) -> AppResult<()> {
    sqlx::query("DELETE FROM knowledge_links WHERE source_id = $1")
        .bind(entry.id)
        .execute(&mut *conn)
        .await?;
    if links.is_empty() {
        return Ok(());
    }
    let targets: Vec<&str> = links.iter().map(|l| l.target.as_str()).collect();
    let keys: Vec<String> = links.iter().map(WikiLink::key).collect();
    let labels: Vec<Option<&str>> = links.iter().map(|l| l.label.as_deref()).collect();
    sqlx::query(
        "INSERT INTO knowledge_links (workspace_id, source_id, position, target, target_key, label)
         SELECT $1, $2, n - 1, t, k, l FROM unnest($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(t, k, l, n)",
    )
    .bind(entry.workspace_id)
    .bind(entry.id)
    .bind(&targets)
    .bind(&keys)
    .bind(&labels)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The slug each key resolves to for this caller, in order (None: broken).
pub async fn resolve_keys(conn: &mut PgConnection, workspace: Uuid, keys: &[String]) -> AppResult<Vec<Option<String>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT e.slug FROM unnest($2::text[]) WITH ORDINALITY AS u(k, n)
         LEFT JOIN LATERAL knowledge_resolve($1, u.k) AS r(id) ON true
         LEFT JOIN knowledge_entries e ON e.id = r.id
         ORDER BY u.n",
    )
    .bind(workspace)
    .bind(keys)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct LinkRow {
    pub position: i32,
    pub target: String,
    pub label: Option<String>,
    pub target_id: Option<Uuid>,
}

/// The entry's links as written, each with the entry it resolves to for this caller.
pub async fn links_of(conn: &mut PgConnection, entry: Uuid) -> AppResult<Vec<LinkRow>> {
    Ok(sqlx::query_as(
        "SELECT l.position, l.target, l.label, r.id AS target_id FROM knowledge_links l
         LEFT JOIN LATERAL knowledge_resolve(l.workspace_id, l.target_key) AS r(id) ON true
         WHERE l.source_id = $1 ORDER BY l.position",
    )
    .bind(entry)
    .fetch_all(&mut *conn)
    .await?)
}

/// Entries by id, in the order given (missing or invisible ones left out).
pub async fn load_many(conn: &mut PgConnection, ids: &[Uuid]) -> AppResult<Vec<EntryRow>> {
    let rows: Vec<EntryRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM knowledge_entries e WHERE e.id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_id: HashMap<Uuid, EntryRow> = rows.into_iter().map(|r| (r.id, r)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// Entries (not archived) with a link that resolves to `entry`, by title.
pub async fn backlinks(conn: &mut PgConnection, entry: &EntryRow) -> AppResult<Vec<EntryRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM knowledge_entries e WHERE e.status <> 'ARCHIVED' AND e.id IN (
             SELECT l.source_id FROM knowledge_links l
             JOIN LATERAL knowledge_resolve(l.workspace_id, l.target_key) AS r(id) ON r.id = $4
             WHERE l.workspace_id = $1 AND l.target_key IN ($2, lower($3)))
         ORDER BY e.title, e.id"
    )))
    .bind(entry.workspace_id)
    .bind(&entry.slug)
    .bind(&entry.title)
    .bind(entry.id)
    .fetch_all(&mut *conn)
    .await?)
}

#[derive(sqlx::FromRow, Clone, Debug)]
pub struct BrokenRow {
    pub source_id: Uuid,
    pub target: String,
    pub label: Option<String>,
}

/// Links of visible, unarchived entries that resolve to nothing this caller can see.
pub async fn broken_links(conn: &mut PgConnection, workspace: Uuid, limit: usize) -> AppResult<Vec<BrokenRow>> {
    Ok(sqlx::query_as(
        "SELECT l.source_id, l.target, l.label FROM knowledge_links l
         JOIN knowledge_entries e ON e.id = l.source_id AND e.status <> 'ARCHIVED'
         LEFT JOIN LATERAL knowledge_resolve(l.workspace_id, l.target_key) AS r(id) ON true
         WHERE l.workspace_id = $1 AND r.id IS NULL
         ORDER BY e.title, l.source_id, l.position LIMIT $2",
    )
    .bind(workspace)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?)
}

/// Tag names of an entry, by name.
pub async fn tags_of(conn: &mut PgConnection, entry: Uuid) -> AppResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT t.name FROM knowledge_entry_tags et JOIN knowledge_tags t ON t.id = et.tag_id
         WHERE et.entry_id = $1 ORDER BY lower(t.name)",
    )
    .bind(entry)
    .fetch_all(&mut *conn)
    .await?)
}

/// Gives the entry exactly these tags, creating the names the workspace lacks.
pub async fn set_tags(conn: &mut PgConnection, entry: &EntryRow, names: &[String]) -> AppResult<()> {
    let ids = tag_ids(conn, entry.workspace_id, names, entry.status == "DRAFT").await?;
    sqlx::query("DELETE FROM knowledge_entry_tags WHERE entry_id = $1")
        .bind(entry.id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO knowledge_entry_tags (workspace_id, entry_id, tag_id) SELECT $1, $2, unnest($3::uuid[])")
        .bind(entry.workspace_id)
        .bind(entry.id)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The ids of tag names, created where missing (see `knowledge_tag_ids`).
pub async fn tag_ids(
    conn: &mut PgConnection,
    workspace: Uuid,
    names: &[String],
    for_draft: bool,
) -> AppResult<Vec<Uuid>> {
    sqlx::query_scalar("SELECT knowledge_tag_ids($1, $2, $3)")
        .bind(workspace)
        .bind(names)
        .bind(for_draft)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| AppError::from(e).forbidden_as("guests cannot write to the knowledge base"))
}

/// The tag's id by name in a workspace the caller reads.
pub async fn tag_id(conn: &mut PgConnection, workspace: Uuid, name: &str) -> AppResult<Option<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM knowledge_tags WHERE workspace_id = $1 AND lower(name) = lower($2)")
            .bind(workspace)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?,
    )
}
