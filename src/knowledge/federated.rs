//! Knowledge across instances: lists merged in the global order, search
//! fused by rank, and entries of another instance read and written at
//! their owner. Everything goes through `graphql::federated` (plans, grants,
//! deadlines, the report in `extensions.federation`); nothing a peer
//! returns is stored.

use async_graphql::{ID, InputType};
use serde_json::{Value, json};
use uuid::Uuid;

use super::search::{self, KnowledgeSearchHit, KnowledgeSearchMode};
use super::wire::{self, FRAGMENT, KnowledgeEntryWire, VERSION_FRAGMENT};
use super::{
    Conditions, KnowledgeEntry, KnowledgeEntryConnection, KnowledgeEntryEdge, KnowledgeEntryOrder, KnowledgeFilter,
    page, workspace_here,
};
use crate::embedding::vectors;
use crate::error::{AppError, AppResult};
use crate::federation::registry::PeerRecord;
use crate::graphql::RequestContext;
use crate::graphql::federated::{self as across, InstanceScope, Plan};
use crate::graphql::ids::{Kind, Owner};
use crate::graphql::merged_list::{self, MergedList, Sourced, Subquery};
use crate::graphql::pagination::{Cursor, PageInfo};
use crate::graphql::wire::owned;

/// A write of an entry that `owner` holds, sent to it as a COMMAND:
/// `call` is the mutation field with its arguments, `$input` of `input_type`.
pub async fn command(
    rc: &RequestContext,
    owner: Uuid,
    call: &str,
    input_type: &str,
    variables: Value,
) -> AppResult<KnowledgeEntry> {
    let field = call.split('(').next().unwrap_or(call);
    let query = format!("mutation($input: {input_type}) {{ {call} {{ ...KnowledgeEntryFields }} }} {FRAGMENT}");
    let data = across::forward(rc, owner, true, &query, variables).await?;
    owned::<KnowledgeEntryWire>(&data[field])
}

/// `knowledgeEntry(workspaceId, slug)` in a workspace that `owner` holds.
pub async fn remote_entry(
    rc: &RequestContext,
    owner: Uuid,
    workspace: &ID,
    slug: &str,
) -> AppResult<Option<KnowledgeEntry>> {
    let query = format!(
        "query($w: ID!, $s: String!) {{ knowledgeEntry(workspaceId: $w, slug: $s) {{ ...KnowledgeEntryFields }} }} {FRAGMENT}"
    );
    let data = across::forward(rc, owner, false, &query, json!({ "w": workspace.as_str(), "s": slug })).await?;
    match &data["knowledgeEntry"] {
        Value::Null => Ok(None),
        entry => owned::<KnowledgeEntryWire>(entry).map(Some),
    }
}

/// `selection` of an entry of another instance, asked of its owner; the
/// entry as the owner answered (its fields, as selected). `declarations`
/// declares the variables besides `$id` that `variables` holds.
pub async fn remote_field(
    rc: &RequestContext,
    entry: &KnowledgeEntry,
    selection: &str,
    declarations: &str,
    mut variables: Value,
) -> AppResult<Value> {
    let owner: Uuid = entry.instance.id.parse().map_err(AppError::internal)?;
    let mut fragments = String::new();
    for (name, fragment) in [
        ("...KnowledgeEntryFields", FRAGMENT),
        ("...KnowledgeVersionFields", VERSION_FRAGMENT),
    ] {
        if selection.contains(name) {
            fragments.push(' ');
            fragments.push_str(fragment);
        }
    }
    let query = format!(
        "query($id: ID!{declarations}) {{ node(id: $id) {{ ... on KnowledgeEntry {{ {selection} }} }} }}{fragments}"
    );
    variables["id"] = json!(entry.global_id.as_str());
    let data = across::forward(rc, owner, false, &query, variables).await?;
    match &data["node"] {
        Value::Null => Err(AppError::NotFound("knowledge entry".into())),
        node => Ok(node.clone()),
    }
}

/// Which instances a list or search covers, and the local workspace it is
/// narrowed to: a workspace of this instance is answered here, one of
/// another instance by its owner alone; without one, `scope` decides.
pub async fn route(
    rc: &RequestContext,
    workspace_id: Option<&ID>,
    scope: Option<&InstanceScope>,
) -> AppResult<(Plan, Option<Uuid>)> {
    let Some(id) = workspace_id else {
        return Ok((across::plan(rc, scope).await?, None));
    };
    match rc.owner_of("workspaceId", id, Kind::Workspace)? {
        Owner::Here(_) => Ok((Plan::local(), Some(workspace_here(rc, "workspaceId", id).await?))),
        Owner::Instance(owner) => Ok((across::owner_plan(rc, owner).await?, None)),
    }
}

/// A filter that names a tag this instance does not have matches nothing
/// here, while a peer may have it: such a filter leaves this instance out
/// of a list across instances instead of refusing the request.
pub fn unless_unknown_tag(parsed: AppResult<Conditions>) -> AppResult<Option<Conditions>> {
    match parsed {
        Ok(c) => Ok(Some(c)),
        Err(AppError::Invalid {
            code: "UNKNOWN_TAG", ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a `knowledgeEntries` across instances asks of every instance.
pub struct FederatedEntries {
    pub workspace_id: Option<String>,
    pub filter: KnowledgeFilter,
    pub order: KnowledgeEntryOrder,
    pub first: usize,
    pub with_total: bool,
}

fn entries_subquery() -> String {
    format!(
        "query($scope: InstanceScope, $workspaceId: ID, $filter: KnowledgeFilter, $orderBy: KnowledgeEntryOrder, $first: Int, $after: String, $withTotal: Boolean!) {{
  knowledgeEntries(scope: $scope, workspaceId: $workspaceId, filter: $filter, orderBy: $orderBy, first: $first, after: $after) {{
    edges {{ node {{ ...KnowledgeEntryFields }} }} pageInfo {{ hasNextPage }} totalCount @include(if: $withTotal) }} }} {FRAGMENT}"
    )
}

/// `knowledgeEntries` as a list merged across instances.
struct Entries<'a> {
    order: KnowledgeEntryOrder,
    conditions: Option<&'a Conditions>,
}

impl MergedList for Entries<'_> {
    type Row = KnowledgeEntry;
    type Wire = KnowledgeEntryWire;

    fn compare(&self, a: &KnowledgeEntry, b: &KnowledgeEntry) -> std::cmp::Ordering {
        self.order.compare(a, b)
    }

    fn cursor_of(&self, row: &KnowledgeEntry) -> AppResult<Cursor> {
        self.order.cursor_of(row)
    }

    fn follows(&self, row: &KnowledgeEntry, at: &Cursor) -> AppResult<bool> {
        self.order.follows(row, at)
    }

    async fn local(
        &self,
        rc: &RequestContext,
        first: usize,
        after: Option<&Cursor>,
        with_total: bool,
    ) -> AppResult<Option<Sourced<KnowledgeEntry>>> {
        let Some(conditions) = self.conditions else {
            return Ok(None);
        };
        let page = page(rc, conditions, self.order, first, after, with_total).await?;
        let rows = page.edges.into_iter().map(|e| e.node);
        Ok(merged_list::local_source(
            rows,
            page.page_info.has_next_page,
            page.total_count,
        ))
    }
}

/// One page merged from this instance (when `conditions` are given and the
/// plan includes it) and the planned peers, in the global order (the
/// field, then instance id, then id).
pub async fn entries_page(
    rc: &RequestContext,
    plan: &Plan,
    request: &FederatedEntries,
    conditions: Option<&Conditions>,
    after: Option<&str>,
) -> AppResult<KnowledgeEntryConnection> {
    let order = request.order;
    let start = after.map(|a| rc.open_cursor(a, order.name())).transpose()?;
    let filter = request.filter.to_value().into_json().map_err(AppError::internal)?;
    let order_value = order.to_value().into_json().map_err(AppError::internal)?;
    let subquery = Subquery {
        query: entries_subquery(),
        variables: json!({ "workspaceId": request.workspace_id, "filter": filter, "orderBy": order_value }),
    };
    let list = Entries { order, conditions };
    let merged = merged_list::page(
        rc,
        plan,
        &list,
        &subquery,
        request.first,
        start.as_ref(),
        request.with_total,
    )
    .await?;
    let edges = merged
        .rows
        .into_iter()
        .map(|node| {
            Ok(KnowledgeEntryEdge {
                cursor: rc.seal_cursor(&order.cursor_of(&node)?),
                node,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(KnowledgeEntryConnection {
        page_info: PageInfo::of(edges.iter().map(|e| &e.cursor), merged.has_next, after.is_some()),
        edges,
        total_count: request.with_total.then_some(merged.total),
    })
}

/// What a `searchKnowledge` across instances asks of every instance.
pub struct FederatedSearch<'a> {
    pub query: &'a str,
    pub mode: KnowledgeSearchMode,
    pub workspace_id: Option<String>,
    pub filter: KnowledgeFilter,
    pub first: usize,
}

fn search_subquery() -> String {
    format!(
        "query($query: String!, $mode: KnowledgeSearchMode, $workspaceId: ID, $filter: KnowledgeFilter, $first: Int, $scope: InstanceScope) {{
  searchKnowledge(query: $query, mode: $mode, workspaceId: $workspaceId, filter: $filter, first: $first, scope: $scope) {{ {} }} }} {FRAGMENT}",
        wire::HIT_SELECTION
    )
}

/// A peer's hits, grouped by the instance each entry lives on (a peer that
/// forwards answers for the instances behind it too), each group in its
/// rank order. Ranks must rise down the list within each instance.
fn parse_hits(data: &Value) -> AppResult<Vec<RankedList>> {
    let hits = data["searchKnowledge"]
        .as_array()
        .ok_or_else(|| AppError::BadInput("peer answer: searchKnowledge".into()))?
        .iter()
        .map(wire::hit)
        .collect::<AppResult<Vec<_>>>()?;
    let mut lists: Vec<RankedList> = Vec::new();
    for hit in hits {
        let instance = hit.entry.instance.clone();
        match lists.iter_mut().find(|l| l.instance_id == instance.id) {
            Some(list) => {
                if list.hits.last().is_some_and(|h| h.rank >= hit.rank) {
                    return Err(AppError::BadInput("peer answer: hits out of rank order".into()));
                }
                list.hits.push(hit);
            }
            None => lists.push(RankedList {
                instance_id: instance.id.clone(),
                instance_name: instance.name.clone(),
                hits: vec![hit],
            }),
        }
    }
    Ok(lists)
}

/// One instance's hits, best first.
pub struct RankedList {
    pub instance_id: String,
    pub instance_name: String,
    pub hits: Vec<KnowledgeSearchHit>,
}

/// Search over this instance (when `local_workspace` says where and the
/// plan includes it) and the planned peers, fused into one ranking.
pub async fn search(
    rc: &RequestContext,
    plan: &Plan,
    request: &FederatedSearch<'_>,
    local_workspace: Option<Option<Uuid>>,
) -> AppResult<Vec<KnowledgeSearchHit>> {
    let filter = request.filter.to_value().into_json().map_err(AppError::internal)?;
    let mode = request.mode.to_value().into_json().map_err(AppError::internal)?;
    let query = search_subquery();
    let variables = |peer: &PeerRecord| {
        json!({
            "query": request.query,
            "mode": mode,
            "workspaceId": request.workspace_id,
            "filter": filter,
            "first": request.first,
            "scope": plan.scope_for(peer),
        })
    };
    let local = async {
        match local_workspace {
            Some(ws) if plan.include_self => {
                let hits = search::local(rc, request.query, request.mode, ws, &request.filter, request.first).await;
                match hits {
                    Ok(hits) => Ok(hits),
                    // A tag only peers have: nothing here matches.
                    Err(AppError::Invalid {
                        code: "UNKNOWN_TAG", ..
                    }) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            }
            _ => Ok(Vec::new()),
        }
    };
    let (local, answers) = futures::join!(local, across::ask_all(rc, plan, &query, variables));
    let mut lists = vec![RankedList {
        instance_id: rc.instance.id.clone(),
        instance_name: rc.instance.name.clone(),
        hits: local?,
    }];
    for (peer, data) in answers {
        let Some(data) = data else { continue };
        match parse_hits(&data) {
            Ok(found) => lists.extend(found),
            Err(e) => across::bad_answer(rc, &peer, &e),
        }
    }
    lists.retain(|l| !l.hits.is_empty());
    // One instance's list is its own ranking, with its own scores.
    if let [only] = lists.as_mut_slice() {
        let mut hits = std::mem::take(&mut only.hits);
        hits.truncate(request.first);
        return Ok(hits);
    }
    Ok(fuse(lists, request.first))
}

/// Instances' ranked lists fused into one ranking by reciprocal rank
/// (`vectors::rrf`), the first `first` of it: ranks are compared, never the
/// instances' own scores (which are not comparable). Equal scores go by
/// instance name, then instance id. Each hit gets its fused score and its
/// rank in the fused list.
pub fn fuse(mut lists: Vec<RankedList>, first: usize) -> Vec<KnowledgeSearchHit> {
    // rrf keeps the order in which lists come for equal scores.
    lists.sort_by(|a, b| (&a.instance_name, &a.instance_id).cmp(&(&b.instance_name, &b.instance_id)));
    let places: Vec<Vec<(usize, usize)>> = lists
        .iter()
        .enumerate()
        .map(|(l, list)| (0..list.hits.len()).map(|h| (l, h)).collect())
        .collect();
    let mut hits: Vec<Vec<Option<KnowledgeSearchHit>>> = lists
        .into_iter()
        .map(|l| l.hits.into_iter().map(Some).collect())
        .collect();
    vectors::rrf(&places, first)
        .into_iter()
        .enumerate()
        .filter_map(|(i, ((l, h), score))| {
            Some(KnowledgeSearchHit {
                score,
                rank: i as i32 + 1,
                ..hits[l][h].take()?
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::graphql::InstanceInfo;
    use crate::knowledge::store::EntryRow;

    fn hit(title: &str) -> KnowledgeSearchHit {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        KnowledgeSearchHit {
            entry: KnowledgeEntry {
                row: Arc::new(EntryRow {
                    id: Uuid::now_v7(),
                    workspace_id: Uuid::now_v7(),
                    slug: "s".into(),
                    title: title.into(),
                    content: String::new(),
                    summary: None,
                    status: "PUBLISHED".into(),
                    author_id: None,
                    created_by: None,
                    updated_by: None,
                    created_at: now,
                    updated_at: now,
                }),
                status: crate::knowledge::KnowledgeStatus::Published,
                global_id: async_graphql::ID("x".into()),
                instance: Arc::new(InstanceInfo {
                    id: "i".into(),
                    name: "n".into(),
                }),
                remote: None,
            },
            score: 99.0,
            rank: 1,
            snippet: None,
        }
    }

    fn list(name: &str, id: &str, titles: &[&str]) -> RankedList {
        RankedList {
            instance_id: id.into(),
            instance_name: name.into(),
            hits: titles.iter().map(|t| hit(t)).collect(),
        }
    }

    fn titles(hits: &[KnowledgeSearchHit]) -> Vec<String> {
        hits.iter().map(|h| h.entry.row.title.clone()).collect()
    }

    #[test]
    fn fusion_interleaves_by_rank_with_ties_by_instance_name() {
        let fused = fuse(
            vec![
                list("zulu", "1", &["z1", "z2", "z3"]),
                list("alpha", "2", &["a1"]),
                list("mike", "3", &["m1", "m2"]),
            ],
            10,
        );
        assert_eq!(titles(&fused), ["a1", "m1", "z1", "m2", "z2", "z3"]);
        assert_eq!(fused.iter().map(|h| h.rank).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(fused[0].score, 1.0 / 61.0);
        assert_eq!(fused[3].score, 1.0 / 62.0);
        assert!(fused.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn fusion_is_deterministic_and_takes_the_first() {
        let make = || vec![list("b", "2", &["b1", "b2"]), list("b", "1", &["c1", "c2"])];
        let fused = fuse(make(), 3);
        // Same name: the instance id decides.
        assert_eq!(titles(&fused), ["c1", "b1", "c2"]);
        assert_eq!(titles(&fuse(make(), 3)), titles(&fused));
        assert!(fuse(Vec::new(), 5).is_empty());
    }
}
