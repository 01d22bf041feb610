//! The knowledge base: Markdown entries joined by `[[wiki links]]`, with
//! versions, tags, full-text search and a graph. Who sees what is decided by
//! the policies of migration 0060 (a draft is its author's alone); the
//! resolvers here never filter by author.
//!
//! `mod.rs` holds the entry object and the lists; `mutations.rs` the writes,
//! `tags.rs`, `search.rs` and `graph.rs` their parts, `store.rs` the SQL,
//! `input.rs` the checks of what clients send, `links.rs` the link parser,
//! `markdown.rs` the safe HTML, `versions.rs` the diffs, `transfer.rs`
//! the import and export of Markdown files, and `embeddings.rs` the
//! vectors semantic search compares (computed off the request path).

pub mod embeddings;
pub mod federated;
pub mod graph;
pub mod input;
pub mod links;
pub mod markdown;
pub mod mutations;
pub mod search;
pub mod store;
pub mod tags;
pub mod transfer;
pub mod versions;
pub mod wire;

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use serde_json::json;
use sqlx::{Postgres, QueryBuilder};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::config::KnowledgeSettings;
use crate::error::{AppError, AppResult};
use crate::graphql::federated::InstanceScope;
use crate::graphql::ids::{Kind, Owner};
use crate::graphql::pagination::{Cursor, PageInfo, push_after};
use crate::graphql::wire::owned_list;
use crate::graphql::{InstanceInfo, RequestContext, limits};
use crate::users::{self, User};
use crate::workspaces::{self, Workspace};
use store::EntryRow;

/// What the knowledge base needs beyond the request: its bounds, and the
/// embeddings for semantic search when a model is installed (None: semantic
/// search answers SEMANTIC_SEARCH_UNAVAILABLE).
pub struct KnowledgeService {
    pub settings: KnowledgeSettings,
    pub embeddings: Option<Arc<embeddings::Embeddings>>,
}

impl KnowledgeService {
    pub fn new(settings: KnowledgeSettings, embeddings: Option<Arc<embeddings::Embeddings>>) -> Self {
        Self { settings, embeddings }
    }

    /// Loads the model from `settings.model_dir` when that directory holds
    /// it (off the async runtime: it reads ~90 MB) and starts the embedding
    /// worker; with none of the model's files there, semantic search is
    /// off, said once. Files that do not load are an error naming the file:
    /// a broken install is not silently a smaller feature.
    pub async fn start(settings: KnowledgeSettings, pool: sqlx::PgPool) -> anyhow::Result<Self> {
        let dir = settings.model_dir.clone();
        if !crate::embedding::MiniLm::present(&dir) {
            tracing::info!(
                model_dir = %dir.display(),
                "no embedding model there: semantic search is off (scripts/install-model installs it; knowledge.model_dir says where)"
            );
            return Ok(Self::new(settings, None));
        }
        let model = tokio::task::spawn_blocking(move || crate::embedding::MiniLm::load(&dir)).await??;
        let embeddings = embeddings::Embeddings::start(Arc::new(model), pool, settings.embedding_queue).await?;
        Ok(Self::new(settings, Some(embeddings)))
    }
}

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnowledgeStatus {
    /// Seen by its author only.
    Draft,
    /// Seen by the workspace.
    Published,
    /// Kept but hidden from lists, search and the graph (unless asked for).
    Archived,
}

impl KnowledgeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "DRAFT",
            Self::Published => "PUBLISHED",
            Self::Archived => "ARCHIVED",
        }
    }

    fn parse(s: &str) -> AppResult<Self> {
        match s {
            "DRAFT" => Ok(Self::Draft),
            "PUBLISHED" => Ok(Self::Published),
            "ARCHIVED" => Ok(Self::Archived),
            other => Err(AppError::internal(anyhow::anyhow!("unknown entry status {other}"))),
        }
    }
}

/// An entry of the knowledge base.
#[derive(Clone, Debug)]
pub struct KnowledgeEntry {
    pub row: Arc<EntryRow>,
    pub status: KnowledgeStatus,
    pub global_id: ID,
    pub instance: Arc<InstanceInfo>,
    /// What the owner's answer carried of an entry of another instance.
    pub remote: Option<Arc<RemoteParts>>,
}

/// The parts of another instance's entry read with it (`wire::FRAGMENT`).
#[derive(Debug)]
pub struct RemoteParts {
    pub workspace: Workspace,
    pub tags: Vec<String>,
}

impl KnowledgeEntry {
    pub fn from_row(rc: &RequestContext, row: EntryRow) -> AppResult<Self> {
        Ok(Self {
            status: KnowledgeStatus::parse(&row.status)?,
            global_id: rc.global_id(Kind::KnowledgeEntry, row.id),
            instance: rc.instance.clone(),
            row: Arc::new(row),
            remote: None,
        })
    }

    fn from_rows(rc: &RequestContext, rows: Vec<EntryRow>) -> AppResult<Vec<Self>> {
        rows.into_iter().map(|r| Self::from_row(rc, r)).collect()
    }

    /// Whether the entry lives on another instance (its fields then come
    /// from its owner).
    fn is_remote(&self, rc: &RequestContext) -> bool {
        !rc.is_local(&self.instance)
    }
}

/// Fields that only the workspace's own instance answers (tags, broken
/// links, the graph of a workspace of another instance).
fn remote_unsupported(field: &str) -> AppError {
    AppError::invalid(
        "REMOTE_KNOWLEDGE_UNSUPPORTED",
        format!("{field}: names a workspace of another instance; ask that instance"),
    )
}

/// An entry by id, for `node(id:)`.
pub async fn load(rc: &RequestContext, id: Uuid) -> AppResult<Option<KnowledgeEntry>> {
    let row = store::load(&mut *rc.db.conn().await?, id).await?;
    row.map(|r| KnowledgeEntry::from_row(rc, r)).transpose()
}

/// The local workspace `id` names, refused with UNKNOWN_WORKSPACE unless
/// the caller can read it.
pub async fn workspace_here(rc: &RequestContext, field: &str, id: &ID) -> AppResult<Uuid> {
    let ws = match rc.owner_of(field, id, Kind::Workspace)? {
        Owner::Here(ws) => ws,
        Owner::Instance(_) => return Err(remote_unsupported(field)),
    };
    if workspaces::load(rc, ws).await?.is_none() {
        return Err(AppError::invalid(
            "UNKNOWN_WORKSPACE",
            format!("{field}: no such workspace, or not one you can read"),
        ));
    }
    Ok(ws)
}

async fn user_of(rc: &RequestContext, id: Option<Uuid>) -> AppResult<Option<User>> {
    match id {
        Some(id) => users::load(rc, id).await,
        None => Ok(None),
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeLink {
    /// The target as written between the brackets.
    pub target: String,
    pub label: Option<String>,
    /// The entry it resolves to for you; null when broken.
    pub entry: Option<KnowledgeEntry>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeBrokenLink {
    pub source: KnowledgeEntry,
    pub target: String,
    pub label: Option<String>,
}

#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct KnowledgeVersion {
    pub number: i32,
    pub title: String,
    pub content: String,
    pub message: Option<String>,
    pub created_at: OffsetDateTime,
    #[graphql(skip)]
    pub author_id: Option<Uuid>,
}

#[async_graphql::ComplexObject]
impl KnowledgeVersion {
    async fn author(&self, ctx: &Context<'_>) -> AppResult<Option<User>> {
        user_of(RequestContext::of(ctx), self.author_id).await
    }
}

impl From<store::VersionRow> for KnowledgeVersion {
    fn from(v: store::VersionRow) -> Self {
        Self {
            number: v.number,
            title: v.title,
            content: v.content,
            message: v.message,
            created_at: v.created_at,
            author_id: v.author_id,
        }
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeVersionEdge {
    pub cursor: String,
    pub node: KnowledgeVersion,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeVersionConnection {
    pub total_count: i64,
    pub edges: Vec<KnowledgeVersionEdge>,
    pub page_info: PageInfo,
}

const VERSIONS_ORDER: &str = "NUMBER:DESC";

impl KnowledgeEntry {
    /// Version `number` of an entry of another instance, from its owner.
    async fn remote_version(&self, rc: &RequestContext, number: i32) -> AppResult<Option<KnowledgeVersion>> {
        let selection = "version(number: $number) { ...KnowledgeVersionFields }";
        let data = federated::remote_field(rc, self, selection, ", $number: Int!", json!({ "number": number })).await?;
        wire::version(&data["version"])
    }
}

#[Object]
impl KnowledgeEntry {
    pub async fn id(&self) -> ID {
        self.global_id.clone()
    }
    async fn slug(&self) -> &str {
        &self.row.slug
    }
    async fn title(&self) -> &str {
        &self.row.title
    }
    /// Markdown, as written.
    async fn content(&self) -> &str {
        &self.row.content
    }
    /// The content as HTML safe to show: no raw HTML, no script URLs; wiki
    /// links as anchors, broken ones with the class `broken`.
    async fn content_html(&self, ctx: &Context<'_>) -> AppResult<String> {
        let rc = RequestContext::of(ctx);
        if self.is_remote(rc) {
            let html: String = wire::decode_field(
                &federated::remote_field(rc, self, "contentHtml", "", json!({})).await?,
                "contentHtml",
            )?;
            return Ok(markdown::sanitize(&html));
        }
        let found = links::parse(&self.row.content);
        let keys: Vec<String> = found.iter().map(links::WikiLink::key).collect();
        let slugs = store::resolve_keys(&mut *rc.db.conn().await?, self.row.workspace_id, &keys).await?;
        Ok(markdown::render(&self.row.content, &found, &slugs))
    }
    async fn summary(&self) -> Option<&str> {
        self.row.summary.as_deref()
    }
    async fn status(&self) -> KnowledgeStatus {
        self.status
    }
    /// Tag names, alphabetically.
    async fn tags(&self, ctx: &Context<'_>) -> AppResult<Vec<String>> {
        let rc = RequestContext::of(ctx);
        if let Some(remote) = &self.remote {
            return Ok(remote.tags.clone());
        }
        store::tags_of(&mut *rc.db.conn().await?, self.row.id).await
    }
    async fn workspace(&self, ctx: &Context<'_>) -> AppResult<Workspace> {
        let rc = RequestContext::of(ctx);
        if let Some(remote) = &self.remote {
            return Ok(remote.workspace.clone());
        }
        workspaces::require_visible(rc, self.row.workspace_id).await
    }
    async fn author(&self, ctx: &Context<'_>) -> AppResult<Option<User>> {
        user_of(RequestContext::of(ctx), self.row.author_id).await
    }
    async fn updated_by(&self, ctx: &Context<'_>) -> AppResult<Option<User>> {
        user_of(RequestContext::of(ctx), self.row.updated_by).await
    }
    async fn created_at(&self) -> OffsetDateTime {
        self.row.created_at
    }
    async fn updated_at(&self) -> OffsetDateTime {
        self.row.updated_at
    }
    async fn instance(&self) -> &InstanceInfo {
        &self.instance
    }
    /// Every `[[link]]` in the content, in order, resolved for you.
    async fn links(&self, ctx: &Context<'_>) -> AppResult<Vec<KnowledgeLink>> {
        let rc = RequestContext::of(ctx);
        if self.is_remote(rc) {
            let selection = "links { target label entry { ...KnowledgeEntryFields } }";
            let data = federated::remote_field(rc, self, selection, "", json!({})).await?;
            return wire::links(&data["links"], &self.instance);
        }
        let mut conn = rc.db.conn().await?;
        let rows = store::links_of(&mut conn, self.row.id).await?;
        let ids: Vec<Uuid> = rows.iter().filter_map(|l| l.target_id).collect();
        let targets = store::load_many(&mut conn, &ids).await?;
        drop(conn);
        let targets = KnowledgeEntry::from_rows(rc, targets)?;
        Ok(rows
            .into_iter()
            .map(|l| KnowledgeLink {
                entry: l
                    .target_id
                    .and_then(|id| targets.iter().find(|t| t.row.id == id).cloned()),
                target: l.target,
                label: l.label,
            })
            .collect())
    }
    /// The entries this one links to (each once, in order of first mention).
    async fn outgoing_links(&self, ctx: &Context<'_>) -> AppResult<Vec<KnowledgeEntry>> {
        let rc = RequestContext::of(ctx);
        if self.is_remote(rc) {
            let selection = "outgoingLinks { ...KnowledgeEntryFields }";
            let data = federated::remote_field(rc, self, selection, "", json!({})).await?;
            return owned_list::<wire::KnowledgeEntryWire>(&data["outgoingLinks"]);
        }
        let mut conn = rc.db.conn().await?;
        let rows = store::links_of(&mut conn, self.row.id).await?;
        let mut ids: Vec<Uuid> = Vec::new();
        for id in rows.iter().filter_map(|l| l.target_id) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let targets = store::load_many(&mut conn, &ids).await?;
        drop(conn);
        KnowledgeEntry::from_rows(rc, targets)
    }
    /// Entries that link to this one, by title.
    async fn backlinks(&self, ctx: &Context<'_>) -> AppResult<Vec<KnowledgeEntry>> {
        let rc = RequestContext::of(ctx);
        if self.is_remote(rc) {
            let data =
                federated::remote_field(rc, self, "backlinks { ...KnowledgeEntryFields }", "", json!({})).await?;
            return owned_list::<wire::KnowledgeEntryWire>(&data["backlinks"]);
        }
        let rows = store::backlinks(&mut *rc.db.conn().await?, &self.row).await?;
        KnowledgeEntry::from_rows(rc, rows)
    }
    /// Saved versions, newest first.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity")]
    async fn versions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> AppResult<KnowledgeVersionConnection> {
        let rc = RequestContext::of(ctx);
        let first = rc.page_size(first)?;
        if self.is_remote(rc) {
            // The owner's cursors go back to it as they are.
            let selection = "versions(first: $first, after: $after) { totalCount edges { cursor node { ...KnowledgeVersionFields } }
                pageInfo { hasNextPage hasPreviousPage startCursor endCursor } }";
            let vars = json!({ "first": first, "after": after });
            let data = federated::remote_field(rc, self, selection, ", $first: Int, $after: String", vars).await?;
            return wire::versions(&data["versions"]);
        }
        let before = match &after {
            Some(a) => {
                let c = rc.open_cursor(a, VERSIONS_ORDER)?;
                Some(
                    c.k.as_deref()
                        .and_then(|k| k.parse::<i32>().ok())
                        .ok_or_else(|| AppError::BadInput("after: not a cursor issued by this field".into()))?,
                )
            }
            None => None,
        };
        let mut conn = rc.db.conn().await?;
        let rows = store::versions(&mut conn, self.row.id, before, first + 1).await?;
        let total_count = store::version_count(&mut conn, self.row.id).await?;
        drop(conn);
        let has_next_page = rows.len() > first;
        let edges: Vec<KnowledgeVersionEdge> = rows
            .into_iter()
            .take(first)
            .map(|v| KnowledgeVersionEdge {
                cursor: rc.seal_cursor(&Cursor {
                    o: VERSIONS_ORDER.into(),
                    k: Some(v.number.to_string()),
                    n: None,
                    i: v.id,
                }),
                node: v.into(),
            })
            .collect();
        Ok(KnowledgeVersionConnection {
            total_count,
            page_info: PageInfo::of(edges.iter().map(|e| &e.cursor), has_next_page, after.is_some()),
            edges,
        })
    }
    /// One version by number.
    async fn version(&self, ctx: &Context<'_>, number: i32) -> AppResult<Option<KnowledgeVersion>> {
        let rc = RequestContext::of(ctx);
        if self.is_remote(rc) {
            return self.remote_version(rc, number).await;
        }
        let v = store::version(&mut *rc.db.conn().await?, self.row.id, number).await?;
        Ok(v.map(Into::into))
    }
    /// What changed from version `from` to version `to`.
    async fn diff(&self, ctx: &Context<'_>, from: i32, to: i32) -> AppResult<versions::Diff> {
        let rc = RequestContext::of(ctx);
        let (old, new) = if self.is_remote(rc) {
            // The owner's two versions, diffed here (the diff is pure).
            let (old, new) = futures::join!(self.remote_version(rc, from), self.remote_version(rc, to));
            (old?.map(|v| v.content), new?.map(|v| v.content))
        } else {
            let mut conn = rc.db.conn().await?;
            let old = store::version(&mut conn, self.row.id, from).await?;
            let new = store::version(&mut conn, self.row.id, to).await?;
            (old.map(|v| v.content), new.map(|v| v.content))
        };
        let missing = |n: i32| AppError::invalid("UNKNOWN_VERSION", format!("from/to: this entry has no version {n}"));
        let old = old.ok_or_else(|| missing(from))?;
        let new = new.ok_or_else(|| missing(to))?;
        // Diffing is CPU work proportional to the content: off the runtime.
        tokio::task::spawn_blocking(move || versions::diff(from, to, &old, &new))
            .await
            .map_err(AppError::internal)
    }
}

/// Filters of lists and search.
#[derive(InputObject, Default, Clone)]
pub struct KnowledgeFilter {
    /// Only entries of this status; without it, all but ARCHIVED.
    pub status: Option<KnowledgeStatus>,
    /// Only entries with this tag (by name).
    pub tag: Option<String>,
    /// Only entries matching these words (web search syntax).
    pub search: Option<String>,
}

/// A filter checked and resolved to SQL values.
pub struct Conditions {
    pub workspaces: Option<Vec<Uuid>>,
    pub status: Option<&'static str>,
    pub tag: Option<Uuid>,
    pub search: Option<String>,
}

impl Conditions {
    /// `workspace`: one workspace, or (None) every one the caller reads.
    pub async fn parse(rc: &RequestContext, workspace: Option<Uuid>, filter: &KnowledgeFilter) -> AppResult<Self> {
        let tag =
            match (&filter.tag, workspace) {
                (Some(name), ws) => {
                    let name = input::tag_name("filter.tag", name)?;
                    let mut conn = rc.db.conn().await?;
                    let found: Vec<Uuid> = match ws {
                        Some(ws) => store::tag_id(&mut conn, ws, &name).await?.into_iter().collect(),
                        None => {
                            sqlx::query_scalar("SELECT id FROM knowledge_tags WHERE lower(name) = lower($1) LIMIT 1")
                                .bind(&name)
                                .fetch_all(&mut *conn)
                                .await?
                        }
                    };
                    Some(found.first().copied().ok_or_else(|| {
                        AppError::invalid("UNKNOWN_TAG", format!("filter.tag: no tag named '{name}'"))
                    })?)
                }
                (None, _) => None,
            };
        let search = match &filter.search {
            Some(s) => Some(input::query(s).map_err(|e| match e {
                AppError::Invalid { code, message } => AppError::Invalid {
                    code,
                    message: message.replacen("query", "filter.search", 1),
                },
                other => other,
            })?),
            None => None,
        };
        Ok(Self {
            workspaces: workspace.map(|w| vec![w]),
            status: filter.status.map(KnowledgeStatus::as_str),
            tag,
            search: search.map(str::to_string),
        })
    }

    /// ` AND …` conditions on `e`, knowledge_entries.
    pub fn push(&self, q: &mut QueryBuilder<Postgres>) {
        // One workspace as `=`, so an index on (workspace_id, …) can also give the order.
        match self.workspaces.as_deref() {
            Some([ws]) => {
                q.push(" AND e.workspace_id = ").push_bind(*ws);
            }
            Some(many) => {
                q.push(" AND e.workspace_id = ANY(").push_bind(many.to_vec()).push(")");
            }
            None => {}
        }
        match self.status {
            Some(s) => {
                q.push(" AND e.status = ").push_bind(s);
            }
            None => {
                q.push(" AND e.status <> 'ARCHIVED'");
            }
        }
        if let Some(tag) = self.tag {
            q.push(" AND EXISTS (SELECT 1 FROM knowledge_entry_tags et WHERE et.entry_id = e.id AND et.tag_id = ")
                .push_bind(tag)
                .push(")");
        }
        if let Some(s) = &self.search {
            q.push(" AND e.search @@ websearch_to_tsquery('english', ")
                .push_bind(s.clone())
                .push(")");
        }
    }
}

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KnowledgeEntryOrder {
    /// Most recently changed first.
    #[default]
    UpdatedAtDesc,
    /// By title, A to Z.
    TitleAsc,
}

impl KnowledgeEntryOrder {
    fn name(self) -> &'static str {
        match self {
            Self::UpdatedAtDesc => "UPDATED_AT:DESC",
            Self::TitleAsc => "TITLE:ASC",
        }
    }

    /// (sort expression, its type, comparison after a cursor, direction).
    /// Titles sort bytewise, as instances agree on bytes, not on collations.
    fn sql(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::UpdatedAtDesc => ("e.updated_at", "timestamptz", "<", "DESC"),
            Self::TitleAsc => ("(e.title COLLATE \"C\")", "text", ">", "ASC"),
        }
    }

    fn ascending(self) -> bool {
        self == Self::TitleAsc
    }

    /// The value an entry sorts by, compared as SQL compares it.
    fn sort_key(self, row: &EntryRow) -> EntryKey {
        match self {
            Self::UpdatedAtDesc => EntryKey::Time(row.updated_at),
            Self::TitleAsc => EntryKey::Text(row.title.clone()),
        }
    }

    /// A cursor's key read back; a key this ordering never issues is refused.
    fn parse_key(self, text: &str) -> AppResult<EntryKey> {
        match self {
            Self::UpdatedAtDesc => OffsetDateTime::parse(text, &Rfc3339)
                .map(EntryKey::Time)
                .map_err(|_| AppError::BadInput("after: cursor does not fit this ordering".into())),
            Self::TitleAsc => Ok(EntryKey::Text(text.to_string())),
        }
    }

    /// The global order across instances: the field, then instance id,
    /// then id; all reversed for a descending field.
    pub fn compare(self, a: &KnowledgeEntry, b: &KnowledgeEntry) -> std::cmp::Ordering {
        let total = self
            .sort_key(&a.row)
            .cmp(&self.sort_key(&b.row))
            .then_with(|| a.instance.id.cmp(&b.instance.id))
            .then_with(|| a.row.id.cmp(&b.row.id));
        if self.ascending() { total } else { total.reverse() }
    }

    /// The cursor after `e`: its place in the global order.
    fn cursor_of(self, e: &KnowledgeEntry) -> AppResult<Cursor> {
        let key = match self.sort_key(&e.row) {
            EntryKey::Time(t) => t.format(&Rfc3339).map_err(AppError::internal)?,
            EntryKey::Text(t) => t,
        };
        Ok(Cursor {
            o: self.name().into(),
            k: Some(key),
            n: Some(Uuid::parse_str(&e.instance.id).map_err(AppError::internal)?),
            i: e.row.id,
        })
    }

    /// Whether `e` comes after the position `c` names, in the global order.
    fn follows(self, e: &KnowledgeEntry, c: &Cursor) -> AppResult<bool> {
        let key = self.parse_key(c.k.as_deref().unwrap_or_default())?;
        let at = c.n.map(|n| n.to_string()).unwrap_or_default();
        let total = self
            .sort_key(&e.row)
            .cmp(&key)
            .then_with(|| e.instance.id.cmp(&at))
            .then_with(|| e.row.id.cmp(&c.i));
        let forward = if self.ascending() {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Less
        };
        Ok(total == forward)
    }
}

/// What an entry sorts by (`KnowledgeEntryOrder::sql`).
#[derive(PartialEq, Eq, PartialOrd, Ord, Debug)]
enum EntryKey {
    Time(OffsetDateTime),
    /// Compared bytewise, as `COLLATE "C"` does.
    Text(String),
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeEntryEdge {
    pub cursor: String,
    pub node: KnowledgeEntry,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeEntryConnection {
    pub edges: Vec<KnowledgeEntryEdge>,
    pub page_info: PageInfo,
    /// All entries matching the filter; computed only when asked for.
    pub total_count: Option<i64>,
}

async fn page(
    rc: &RequestContext,
    conditions: &Conditions,
    order: KnowledgeEntryOrder,
    first: usize,
    after: Option<&Cursor>,
    with_total: bool,
) -> AppResult<KnowledgeEntryConnection> {
    let (expr, cast, cmp, dir) = order.sql();
    let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {} FROM knowledge_entries e WHERE true", store::COLUMNS));
    conditions.push(&mut q);
    if let Some(c) = after {
        let key = c.k.clone().unwrap_or_default();
        push_after(
            &mut q,
            c,
            rc.instance_id,
            expr,
            cast,
            "e.id",
            cmp,
            order.ascending(),
            key,
        );
    }
    q.push(format!(
        " ORDER BY {expr} {dir}, e.id {dir}{}",
        crate::db::limit(first + 1)
    ));
    let mut conn = rc.db.conn().await?;
    let rows: Vec<EntryRow> = q
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| match AppError::from(e) {
            AppError::BadInput(_) => AppError::BadInput("after: cursor does not fit this ordering".into()),
            other => other,
        })?;
    let total_count = if with_total {
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM knowledge_entries e WHERE true");
        conditions.push(&mut count);
        Some(rc.cap_total(count.build_query_scalar::<i64>().fetch_one(&mut *conn).await?))
    } else {
        None
    };
    drop(conn);
    let has_next_page = rows.len() > first;
    let edges = rows
        .into_iter()
        .take(first)
        .map(|r| {
            let node = KnowledgeEntry::from_row(rc, r)?;
            Ok(KnowledgeEntryEdge {
                cursor: rc.seal_cursor(&order.cursor_of(&node)?),
                node,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(KnowledgeEntryConnection {
        page_info: PageInfo::of(edges.iter().map(|e| &e.cursor), has_next_page, after.is_some()),
        edges,
        total_count,
    })
}

#[derive(Default)]
pub struct KnowledgeQuery;

#[Object]
impl KnowledgeQuery {
    /// Entries (drafts only your own) of a workspace, or of every workspace
    /// you read; filtered, ordered (ties broken by instance, then id) and
    /// paginated. A workspace of another instance is listed by its owner;
    /// `scope` adds other instances.
    #[graphql(
        complexity = "scope.as_ref().map_or(0, |_| limits::FORWARD_COST) + first.unwrap_or(20).max(1) as usize * child_complexity"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn knowledge_entries(
        &self,
        ctx: &Context<'_>,
        workspace_id: Option<ID>,
        filter: Option<KnowledgeFilter>,
        order_by: Option<KnowledgeEntryOrder>,
        first: Option<i32>,
        after: Option<String>,
        scope: Option<InstanceScope>,
    ) -> AppResult<KnowledgeEntryConnection> {
        let rc = RequestContext::of(ctx);
        let first = rc.page_size(first)?;
        let order = order_by.unwrap_or_default();
        let filter = filter.unwrap_or_default();
        let with_total = ctx.look_ahead().field("totalCount").exists();
        let (plan, ws) = federated::route(rc, workspace_id.as_ref(), scope.as_ref()).await?;
        if !plan.fans_out() && scope.is_none() {
            let conditions = Conditions::parse(rc, ws, &filter).await?;
            let after = after.map(|a| rc.open_cursor(&a, order.name())).transpose()?;
            return page(rc, &conditions, order, first, after.as_ref(), with_total).await;
        }
        let conditions = match plan.include_self {
            true => federated::unless_unknown_tag(Conditions::parse(rc, ws, &filter).await)?,
            false => None,
        };
        let request = federated::FederatedEntries {
            workspace_id: workspace_id.map(|w| w.0),
            filter,
            order,
            first,
            with_total,
        };
        federated::entries_page(rc, &plan, &request, conditions.as_ref(), after.as_deref()).await
    }

    /// One entry by its slug in a workspace (of another instance: asked of
    /// its owner); null when there is none you can see.
    async fn knowledge_entry(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        slug: String,
    ) -> AppResult<Option<KnowledgeEntry>> {
        let rc = RequestContext::of(ctx);
        let slug = input::slug(&slug)?;
        if let Owner::Instance(owner) = rc.owner_of("workspaceId", &workspace_id, Kind::Workspace)? {
            return federated::remote_entry(rc, owner, &workspace_id, slug).await;
        }
        let ws = workspace_here(rc, "workspaceId", &workspace_id).await?;
        let row = store::by_slug(&mut *rc.db.conn().await?, ws, slug).await?;
        row.map(|r| KnowledgeEntry::from_row(rc, r)).transpose()
    }

    /// Links in a workspace's entries that lead nowhere you can see.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity")]
    async fn knowledge_broken_links(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        first: Option<i32>,
    ) -> AppResult<Vec<KnowledgeBrokenLink>> {
        let rc = RequestContext::of(ctx);
        let first = rc.page_size(first)?;
        let ws = workspace_here(rc, "workspaceId", &workspace_id).await?;
        let mut conn = rc.db.conn().await?;
        let rows = store::broken_links(&mut conn, ws, first).await?;
        let mut ids: Vec<Uuid> = rows.iter().map(|r| r.source_id).collect();
        ids.dedup();
        let sources = store::load_many(&mut conn, &ids).await?;
        drop(conn);
        let sources = KnowledgeEntry::from_rows(rc, sources)?;
        rows.into_iter()
            .map(|r| {
                let source = sources
                    .iter()
                    .find(|s| s.row.id == r.source_id)
                    .cloned()
                    .ok_or_else(|| AppError::internal(anyhow::anyhow!("a broken link's source vanished")))?;
                Ok(KnowledgeBrokenLink {
                    source,
                    target: r.target,
                    label: r.label,
                })
            })
            .collect()
    }
}

/// Used by `wire.rs` to build remote entries.
pub(crate) fn status_from_wire(s: &str) -> AppResult<KnowledgeStatus> {
    KnowledgeStatus::parse(s)
}
