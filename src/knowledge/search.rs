//! `searchKnowledge`: full text in PostgreSQL (a weighted tsvector, title
//! above content; `websearch_to_tsquery`, all words before some; `ts_rank`;
//! `ts_headline` snippets), with typo-tolerant title matches (`pg_trgm`) after the word
//! matches when those are fewer than asked for. Every query runs under the
//! caller's scope, so ranking only ever sees entries the caller may read.
//!
//! SEMANTIC compares the query's embedding with those of the entries the
//! caller may see (PostgreSQL decides which, before any ranking); HYBRID
//! fuses the TEXT and SEMANTIC rankings (reciprocal rank fusion). Both need
//! an embedding model (`KnowledgeService`); without one, SEMANTIC is refused
//! with SEMANTIC_SEARCH_UNAVAILABLE and HYBRID answers from full text
//! alone, saying so in `extensions.searchKnowledge`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use serde_json::json;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::embeddings::Embeddings;
use super::markdown::{HIGHLIGHT, snippet_html};
use super::{Conditions, KnowledgeEntry, KnowledgeFilter, federated, input, store};
use crate::embedding::vectors;
use crate::error::{AppError, AppResult};
use crate::graphql::federated::InstanceScope;
use crate::graphql::{RequestContext, limits};

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KnowledgeSearchMode {
    /// Words, ranked by PostgreSQL full-text search; typo-tolerant on titles.
    #[default]
    Text,
    /// Meaning, by sentence embeddings.
    Semantic,
    /// Text and semantic ranks fused (reciprocal rank fusion).
    Hybrid,
}

impl KnowledgeSearchMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Text => "TEXT",
            Self::Semantic => "SEMANTIC",
            Self::Hybrid => "HYBRID",
        }
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct KnowledgeSearchHit {
    pub entry: KnowledgeEntry,
    /// The mode's own measure, higher is better: for TEXT `ts_rank` (plus 1
    /// when every word matched), for SEMANTIC the cosine similarity, for
    /// HYBRID the fused reciprocal-rank score.
    pub score: f64,
    /// 1 for the best hit.
    pub rank: i32,
    /// HTML: the content around the matched words, escaped, with the
    /// matches in `<mark>`.
    pub snippet: Option<String>,
}

/// A ranked hit before its entry is loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub id: Uuid,
    pub score: f64,
    pub snippet: Option<String>,
}

/// Title matches found by similarity rank below every word match.
const TRIGRAM_SCALE: f64 = 0.01;
/// How much of the content a snippet is looked for in.
const HEADLINE_SOURCE_CHARS: i32 = 100_000;
/// A snippet without a match: the content's start, this long.
const PLAIN_SNIPPET_CHARS: usize = 200;
/// How deep each list of a hybrid search is ranked before fusion.
const FUSION_DEPTH: usize = 50;
/// Semantic search ranks this many times `first` in memory before
/// PostgreSQL checks them (some may be drafts, archived or filtered out)…
const SEMANTIC_OVERFETCH: usize = 4;
const MIN_SEMANTIC_DEPTH: usize = 40;
/// …and, when too few of those are kept, this many times deeper.
const SEMANTIC_DEEPER: usize = 8;

/// Full-text hits, best first, at most `first`.
pub async fn text(rc: &RequestContext, query: &str, conditions: &Conditions, first: usize) -> AppResult<Vec<Ranked>> {
    let options = format!(
        "StartSel={}, StopSel={}, MaxWords=35, MinWords=12, MaxFragments=2, FragmentDelimiter=\" … \"",
        HIGHLIGHT.0, HIGHLIGHT.1
    );
    // Entries with every word rank first (score 1 + rank), then those with
    // some (score = rank): a question in plain words still finds the entries
    // that share its key words. Negations and phrases keep their meaning.
    // Candidates come from the index, those with every word first
    // (migrations 0060 and 0062 say why), read here under the policies.
    let candidates = rc.knowledge.settings.max_search_candidates as i32;
    let mut q = QueryBuilder::<Postgres>::new("WITH q AS (SELECT websearch_to_tsquery('english', ");
    q.push_bind(query.to_string()).push(
        ") AS q), o AS (SELECT q, CASE WHEN q::text ~ '[!<]' THEN q ELSE replace(q::text, ' & ', ' | ')::tsquery END AS o FROM q), \
         hits AS (SELECT e.id, ts_rank(e.search, o.o) + CASE WHEN e.search @@ o.q THEN 1 ELSE 0 END AS score \
         FROM o, knowledge_text_candidates(",
    );
    q.push_bind(conditions.workspaces.clone())
        .push(", o.q, o.o, ")
        .push_bind(candidates)
        .push(") AS c(id) JOIN knowledge_entries e ON e.id = c.id WHERE true");
    conditions.push(&mut q);
    q.push(format!(" ORDER BY score DESC, e.id{}", crate::db::limit(first)))
        .push(") SELECT h.id, h.score::float8, ts_headline('english', left(e.content, ")
        .push_bind(HEADLINE_SOURCE_CHARS)
        .push("), o.o, ")
        .push_bind(options)
        .push(") FROM hits h JOIN knowledge_entries e ON e.id = h.id, o ORDER BY h.score DESC, h.id");
    let mut conn = rc.db.conn().await?;
    let rows: Vec<(Uuid, f64, String)> = q.build_query_as().fetch_all(&mut *conn).await?;
    let mut hits: Vec<Ranked> = rows
        .into_iter()
        .map(|(id, score, headline)| Ranked {
            id,
            score,
            snippet: Some(snippet_html(&headline)),
        })
        .collect();
    if hits.len() < first {
        let found: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        let mut q = QueryBuilder::<Postgres>::new("SELECT e.id, (word_similarity(lower(");
        q.push_bind(query.to_string())
            .push("), e.title_key) * ")
            .push_bind(TRIGRAM_SCALE)
            .push(")::float8 AS score, left(e.content, ")
            .push_bind(PLAIN_SNIPPET_CHARS as i32)
            .push(") FROM knowledge_title_candidates(")
            .push_bind(conditions.workspaces.clone())
            .push(", lower(")
            .push_bind(query.to_string())
            .push("), ")
            .push_bind(candidates)
            .push(") AS c(id) JOIN knowledge_entries e ON e.id = c.id WHERE NOT (e.id = ANY(")
            .push_bind(found)
            .push("))");
        conditions.push(&mut q);
        q.push(format!(
            " ORDER BY score DESC, e.id{}",
            crate::db::limit(first - hits.len())
        ));
        let rows: Vec<(Uuid, f64, String)> = q.build_query_as().fetch_all(&mut *conn).await?;
        hits.extend(rows.into_iter().map(|(id, score, start)| Ranked {
            id,
            score,
            snippet: Some(snippet_html(&start)),
        }));
    }
    Ok(hits)
}

/// The hits with their entries, in rank order.
async fn with_entries(rc: &RequestContext, ranked: Vec<Ranked>) -> AppResult<Vec<KnowledgeSearchHit>> {
    let ids: Vec<Uuid> = ranked.iter().map(|r| r.id).collect();
    let rows = store::load_many(&mut *rc.db.conn().await?, &ids).await?;
    let mut rows: std::collections::HashMap<Uuid, store::EntryRow> = rows.into_iter().map(|r| (r.id, r)).collect();
    let mut out = Vec::with_capacity(ranked.len());
    for r in ranked {
        if let Some(row) = rows.remove(&r.id) {
            out.push(KnowledgeSearchHit {
                rank: out.len() as i32 + 1,
                snippet: r.snippet.or_else(|| Some(plain_snippet(&row.content))),
                entry: KnowledgeEntry::from_row(rc, row)?,
                score: r.score,
            });
        }
    }
    Ok(out)
}

/// The content's first PLAIN_SNIPPET_CHARS characters, escaped.
fn plain_snippet(content: &str) -> String {
    let end = content
        .char_indices()
        .nth(PLAIN_SNIPPET_CHARS)
        .map_or(content.len(), |(i, _)| i);
    snippet_html(&content[..end])
}

fn semantic_unavailable() -> AppError {
    AppError::invalid(
        "SEMANTIC_SEARCH_UNAVAILABLE",
        "mode: semantic search needs an embedding model, and none is configured on this instance",
    )
}

/// This instance's hits for a checked query, best first, at most `first`:
/// in `workspace`, or in every local workspace the caller reads.
pub async fn local(
    rc: &RequestContext,
    query: &str,
    mode: KnowledgeSearchMode,
    workspace: Option<Uuid>,
    filter: &KnowledgeFilter,
    first: usize,
) -> AppResult<Vec<KnowledgeSearchHit>> {
    let conditions = Conditions::parse(rc, workspace, filter).await?;
    let ranked = match (mode, &rc.knowledge.embeddings) {
        (KnowledgeSearchMode::Text, _) => text(rc, query, &conditions, first).await?,
        (KnowledgeSearchMode::Semantic, Some(emb)) => semantic(rc, emb, query, &conditions, first).await?,
        (KnowledgeSearchMode::Hybrid, Some(emb)) => hybrid(rc, emb, query, &conditions, first).await?,
        (KnowledgeSearchMode::Semantic, None) => return Err(semantic_unavailable()),
        (KnowledgeSearchMode::Hybrid, None) => {
            rc.note_extension(
                "searchKnowledge",
                json!({
                    "requestedMode": mode.as_str(),
                    "answeredMode": "TEXT",
                    "code": "SEMANTIC_SEARCH_UNAVAILABLE",
                    "message": "no embedding model is configured: these are full-text results only",
                }),
            );
            text(rc, query, &conditions, first).await?
        }
    };
    with_entries(rc, ranked).await
}

/// Semantic hits, best first, at most `first`. Hits carry no snippet here:
/// `with_entries` gives them the content's start.
pub async fn semantic(
    rc: &RequestContext,
    emb: &Arc<Embeddings>,
    query: &str,
    conditions: &Conditions,
    first: usize,
) -> AppResult<Vec<Ranked>> {
    let vector = embed_query(emb, query).await?;
    nearest(rc, emb, vector, conditions, first).await
}

/// The query's vector (the model runs on a blocking thread).
async fn embed_query(emb: &Embeddings, query: &str) -> AppResult<Vec<f32>> {
    emb.embed(vec![query.to_string()])
        .await
        .map_err(AppError::internal)?
        .pop()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("the embedder returned no vector")))
}

/// The visible entries nearest to `vector`, best first. PostgreSQL says
/// which workspaces the caller reads; the index ranks their vectors in
/// memory; PostgreSQL then keeps, of the best, those the caller may see and
/// the filter keeps (drafts, archived entries and the filter are its
/// business, under the policies). When it keeps fewer than `first`, a
/// deeper ranking is checked, until the workspaces hold no more.
async fn nearest(
    rc: &RequestContext,
    emb: &Arc<Embeddings>,
    vector: Vec<f32>,
    conditions: &Conditions,
    first: usize,
) -> AppResult<Vec<Ranked>> {
    let mut conn = rc.db.conn().await?;
    let workspaces: Vec<Uuid> = sqlx::query_scalar(
        "SELECT coalesce(array_agg(DISTINCT w), '{}') FROM unnest(readable_workspace_ids()) w \
         WHERE $1::uuid[] IS NULL OR w = ANY($1)",
    )
    .bind(conditions.workspaces.clone())
    .fetch_one(&mut *conn)
    .await?;
    let vector = Arc::new(vector);
    let workspaces = Arc::new(workspaces);
    let mut depth = (first * SEMANTIC_OVERFETCH).max(MIN_SEMANTIC_DEPTH);
    loop {
        let (index_of, v, ws) = (emb.clone(), vector.clone(), workspaces.clone());
        let best = tokio::task::spawn_blocking(move || index_of.index.top_k(&v, &ws, depth))
            .await
            .map_err(AppError::internal)?;
        let exhausted = best.len() < depth;
        let mut q = QueryBuilder::<Postgres>::new("SELECT e.id FROM knowledge_entries e WHERE e.id = ANY(");
        q.push_bind(best.iter().map(|b| b.0).collect::<Vec<_>>()).push(")");
        conditions.push(&mut q);
        let kept: HashSet<Uuid> = q
            .build_query_scalar()
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
        let hits: Vec<Ranked> = best
            .into_iter()
            .filter(|(id, _)| kept.contains(id))
            .take(first)
            .map(|(id, score)| Ranked {
                id,
                score: score as f64,
                snippet: None,
            })
            .collect();
        if hits.len() == first || exhausted {
            return Ok(hits);
        }
        depth = depth.saturating_mul(SEMANTIC_DEEPER);
    }
}

/// Text and semantic lists fused by reciprocal rank (k = 60); a hit keeps
/// its text snippet when it has one. Each list is ranked `FUSION_DEPTH`
/// deep at least, so an entry second in both still rises above one first
/// in only one.
async fn hybrid(
    rc: &RequestContext,
    emb: &Arc<Embeddings>,
    query: &str,
    conditions: &Conditions,
    first: usize,
) -> AppResult<Vec<Ranked>> {
    let depth = first.max(FUSION_DEPTH);
    // The model embeds the query while PostgreSQL answers the text search.
    let (by_text, vector) = tokio::join!(text(rc, query, conditions, depth), embed_query(emb, query));
    let by_meaning = nearest(rc, emb, vector?, conditions, depth).await?;
    let by_text = by_text?;
    let lists = [
        by_text.iter().map(|r| r.id).collect::<Vec<_>>(),
        by_meaning.iter().map(|r| r.id).collect::<Vec<_>>(),
    ];
    let mut snippets: HashMap<Uuid, Option<String>> = by_text.into_iter().map(|r| (r.id, r.snippet)).collect();
    Ok(vectors::rrf(&lists, first)
        .into_iter()
        .map(|(id, score)| Ranked {
            id,
            score,
            snippet: snippets.remove(&id).flatten(),
        })
        .collect())
}

#[derive(Default)]
pub struct KnowledgeSearchQuery;

#[Object]
impl KnowledgeSearchQuery {
    /// Entries matching `query`, best first: in one workspace (of another
    /// instance: answered by its owner), or in every workspace you can read
    /// here and, with `scope`, on other instances, whose rankings are fused
    /// by rank (reciprocal rank fusion; each hit's score is then its fused
    /// score).
    #[graphql(
        complexity = "scope.as_ref().map_or(0, |_| limits::FORWARD_COST) + first.unwrap_or(20).max(1) as usize * child_complexity"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn search_knowledge(
        &self,
        ctx: &Context<'_>,
        query: String,
        mode: Option<KnowledgeSearchMode>,
        workspace_id: Option<ID>,
        filter: Option<KnowledgeFilter>,
        first: Option<i32>,
        scope: Option<InstanceScope>,
    ) -> AppResult<Vec<KnowledgeSearchHit>> {
        let rc = RequestContext::of(ctx);
        let query = input::query(&query)?;
        let first = rc.page_size(first)?;
        let mode = mode.unwrap_or_default();
        let filter = filter.unwrap_or_default();
        let (plan, ws) = federated::route(rc, workspace_id.as_ref(), scope.as_ref()).await?;
        if !plan.fans_out() {
            return local(rc, query, mode, ws, &filter, first).await;
        }
        let request = federated::FederatedSearch {
            query,
            mode,
            workspace_id: workspace_id.map(|w| w.0),
            filter,
            first,
        };
        federated::search(rc, &plan, &request, Some(ws)).await
    }
}
