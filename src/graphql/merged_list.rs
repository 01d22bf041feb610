//! A keyset-paged list merged across this instance and the planned peers
//! (tasks, agent tasks, knowledge entries): one driver for every such list.
//!
//! Every source resumes from the same position, the last row's place in
//! the global order, which peers receive plain. Each source is first asked
//! for its share of the page (`fanout::share`); the few that may hold more
//! of it are asked once more, all at once, from their own last row
//! (`fanout::shortfall`). A peer's page whose rows are out of order or not
//! after the position asked is not used, and the peer is reported.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::federated::{self, PeerData, Plan};
use super::pagination::Cursor;
use super::wire::Row;
use super::{InstanceInfo, RequestContext};
use crate::error::{AppError, AppResult};
use crate::federation::fanout::{self, SourcePage};
use crate::federation::provenance;
use crate::federation::registry::PeerRecord;

/// A source's page of a list and its total, when asked.
pub type Sourced<R> = (SourcePage<R>, Option<i64>);

/// The signed subquery a list sends every peer, and its own variables
/// (workspace, filter, order: an object); `scope`, `first`, `after` and
/// `withTotal` are added per peer and round.
pub struct Subquery {
    pub query: String,
    pub variables: Value,
}

/// What the driver needs of one list's rows.
pub trait MergedList {
    type Row;
    /// A row as a peer's answer carries it.
    type Wire: Row<Object = Self::Row>;
    /// What the row must hold beyond its type (the parts a selection asked for).
    fn check(&self, _wire: &Self::Wire) -> AppResult<()> {
        Ok(())
    }
    /// The global order.
    fn compare(&self, a: &Self::Row, b: &Self::Row) -> Ordering;
    /// The position right after `row`.
    fn cursor_of(&self, row: &Self::Row) -> AppResult<Cursor>;
    /// Whether `row` comes after the position `at`.
    fn follows(&self, row: &Self::Row, at: &Cursor) -> AppResult<bool>;
    /// This instance's page; `None` when it holds nothing of the list.
    fn local(
        &self,
        rc: &RequestContext,
        first: usize,
        after: Option<&Cursor>,
        with_total: bool,
    ) -> impl Future<Output = AppResult<Option<Sourced<Self::Row>>>>;
}

/// The merged page: its rows, whether more follow, and the sum of the
/// sources' totals (when asked).
pub struct Merged<R> {
    pub rows: Vec<R>,
    pub has_next: bool,
    pub total: i64,
}

/// One source: this instance (no peer) or a peer with everything behind it.
struct Source<R> {
    peer: Option<PeerRecord>,
    page: SourcePage<R>,
    total: i64,
}

/// The first `first` rows after `start` across the plan's instances.
pub async fn page<L: MergedList>(
    rc: &RequestContext,
    plan: &Plan,
    list: &L,
    subquery: &Subquery,
    first: usize,
    start: Option<&Cursor>,
    with_total: bool,
) -> AppResult<Merged<L::Row>> {
    let sources = usize::from(plan.include_self) + plan.peers.len();
    let share = fanout::share(first, sources);
    let local = async {
        match plan.include_self {
            true => list.local(rc, share, start, with_total).await,
            false => Ok(None),
        }
    };
    let asked = federated::ask_all(rc, plan, &subquery.query, |peer| {
        variables(subquery, plan, peer, share, start, with_total)
    });
    // The peers first: their answers are the long pole, and this
    // instance's first poll runs its page's statement up to the wire.
    let (answers, local) = futures::join!(asked, local);
    let mut sources: Vec<Source<L::Row>> = Vec::new();
    if let Some((page, total)) = local? {
        sources.push(Source {
            peer: None,
            page,
            total: total.unwrap_or(0),
        });
    }
    for (peer, data) in answers {
        if let Some((page, total)) = data.and_then(|d| checked(rc, list, &peer, d, start)) {
            sources.push(Source {
                peer: Some(peer),
                page,
                total: total.unwrap_or(0),
            });
        }
    }
    let short = fanout::shortfall(sources.iter().map(|s| &s.page), share, first, |a, b| list.compare(a, b));
    if !short.is_empty() {
        ask_again(rc, plan, list, subquery, &mut sources, &short).await?;
    }
    let total = sources.iter().map(|s| s.total).sum();
    let pages = sources.into_iter().map(|s| s.page).collect();
    let (rows, has_next) = fanout::merge(pages, first, |a, b| list.compare(a, b));
    Ok(Merged { rows, has_next, total })
}

/// The second round: each short source, from its last row, for what the
/// page may still take from it. A peer that fails it, or answers with rows
/// that cannot be used, is left out with all its rows, as if it had failed
/// the first.
async fn ask_again<L: MergedList>(
    rc: &RequestContext,
    plan: &Plan,
    list: &L,
    subquery: &Subquery,
    sources: &mut Vec<Source<L::Row>>,
    short: &[(usize, usize)],
) -> AppResult<()> {
    let mut local_after = None;
    let mut asks = Vec::new();
    let mut asked = Vec::new();
    for &(i, more) in short {
        let last = sources[i].page.rows.last().expect("a short source gave rows");
        let after = list.cursor_of(last)?;
        match &sources[i].peer {
            None => local_after = Some((i, more, after)),
            Some(peer) => {
                asks.push((peer, variables(subquery, plan, peer, more, Some(&after), false)));
                asked.push((i, after));
            }
        }
    }
    let local = async {
        match &local_after {
            Some((_, more, after)) => list.local(rc, *more, Some(after), false).await,
            None => Ok(None),
        }
    };
    let (local, answers) = futures::join!(local, federated::ask_some(rc, plan, asks, &subquery.query));
    let mut more: Vec<(usize, Option<SourcePage<L::Row>>)> = Vec::new();
    if let Some((i, ..)) = local_after {
        more.push((i, local?.map(|(page, _)| page)));
    }
    for ((peer, data), (i, after)) in answers.into_iter().zip(&asked) {
        let page = data.and_then(|d| checked(rc, list, &peer, d, Some(after)));
        more.push((*i, page.map(|(page, _)| page)));
    }
    let mut dropped = Vec::new();
    for (i, page) in more {
        match page {
            Some(page) => {
                let source = &mut sources[i].page;
                // A source that gave no rows is done, whatever it says.
                source.has_next = page.has_next && !page.rows.is_empty();
                source.rows.extend(page.rows);
            }
            None => dropped.push(i),
        }
    }
    dropped.sort_unstable();
    for i in dropped.into_iter().rev() {
        sources.remove(i);
    }
    Ok(())
}

/// This instance's page as a source: its rows, whether more follow, its total.
pub fn local_source<R>(rows: impl IntoIterator<Item = R>, has_next: bool, total: Option<i64>) -> Option<Sourced<R>> {
    Some((
        SourcePage {
            rows: rows.into_iter().collect(),
            has_next,
        },
        total,
    ))
}

/// A peer's answer to a list's subquery, read straight from its bytes:
/// the one field of `data` (`tasks`, ...) with `edges { node }`,
/// `pageInfo { hasNextPage }` and `totalCount` when asked.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct PageData<W>(BTreeMap<String, Option<ConnectionWire<W>>>);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionWire<W> {
    edges: Vec<EdgeWire<W>>,
    page_info: PageInfoWire,
    #[serde(default)]
    total_count: Option<i64>,
}

#[derive(Deserialize)]
struct EdgeWire<W> {
    node: W,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfoWire {
    has_next_page: bool,
}

impl<W: Row> PeerData for PageData<W> {
    /// Drops every row that claims what the peer may not (provenance).
    fn prune(&mut self, may_speak_for: &dyn Fn(&str) -> bool) -> usize {
        let mut removed = 0;
        for connection in self.0.values_mut().flatten() {
            connection.edges.retain(|e| {
                let mut ids = Vec::new();
                e.node.ids(&mut ids);
                let stands = provenance::row_stands(&e.node.instance().id, &ids, may_speak_for);
                removed += usize::from(!stands);
                stands
            });
        }
        removed
    }
}

impl<W: Row> PageData<W> {
    /// The page, each row checked by `check` and made its object; rows of
    /// one instance share its `InstanceInfo`.
    fn into_page(self, check: impl Fn(&W) -> AppResult<()>) -> AppResult<Sourced<W::Object>> {
        let mut fields = self.0.into_values();
        let connection = match (fields.next(), fields.next()) {
            (Some(Some(c)), None) => c,
            _ => return Err(AppError::BadInput("peer answer: edges".into())),
        };
        let mut shared: Option<Arc<InstanceInfo>> = None;
        let rows = connection
            .edges
            .into_iter()
            .map(|e| {
                let mut wire = e.node;
                check(&wire)?;
                let named = wire.take_instance();
                let instance = match shared.take() {
                    Some(i) if i.id == named.id && i.name == named.name => i,
                    _ => Arc::new(named),
                };
                shared = Some(instance.clone());
                wire.into_object(&instance)
            })
            .collect::<AppResult<Vec<_>>>()?;
        let has_next = connection.page_info.has_next_page;
        Ok((SourcePage { rows, has_next }, connection.total_count))
    }
}

/// A peer's variables for a page of `first` after `after`.
fn variables(
    subquery: &Subquery,
    plan: &Plan,
    peer: &PeerRecord,
    first: usize,
    after: Option<&Cursor>,
    with_total: bool,
) -> Value {
    let mut vars = subquery.variables.clone();
    vars["scope"] = plan.scope_for(peer);
    vars["first"] = json!(first);
    vars["after"] = json!(after.map(Cursor::plain));
    vars["withTotal"] = json!(with_total);
    vars
}

/// A peer's page, if its rows are in the global order and after the
/// position asked; otherwise the peer is reported and nothing is used.
fn checked<L: MergedList>(
    rc: &RequestContext,
    list: &L,
    peer: &PeerRecord,
    data: PageData<L::Wire>,
    after: Option<&Cursor>,
) -> Option<Sourced<L::Row>> {
    let in_place = |rows: &[L::Row]| -> AppResult<()> {
        let sorted = rows.windows(2).all(|w| list.compare(&w[0], &w[1]) == Ordering::Less);
        // In strict order, every row follows the first: if it follows the
        // position, they all do (one cursor read back, not one per row).
        let after = match (after, rows.first()) {
            (Some(c), Some(first)) => list.follows(first, c)?,
            _ => true,
        };
        if sorted && after {
            Ok(())
        } else {
            Err(AppError::BadInput(
                "peer answer: rows out of order or before the position asked".into(),
            ))
        }
    };
    match data
        .into_page(|w| list.check(w))
        .and_then(|sourced| in_place(&sourced.0.rows).map(|()| sourced))
    {
        Ok(sourced) => Some(sourced),
        Err(e) => {
            federated::bad_answer(rc, peer, &e);
            None
        }
    }
}
