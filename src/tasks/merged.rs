//! A page of tasks from the peers a plan covers, merged with this
//! instance's in the global order.

use super::*;

/// What a scoped `tasks` asks of every instance.
pub(super) struct FederatedTasks {
    pub(super) workspace_id: Option<String>,
    pub(super) filter: Value,
    pub(super) order: TaskOrder,
    pub(super) first: usize,
    pub(super) with_total: bool,
}

fn subquery() -> String {
    format!(
        "query($scope: InstanceScope, $workspaceId: ID, $filter: TaskFilter, $orderBy: TaskOrder, $first: Int, $after: String, $withTotal: Boolean!) {{
  tasks(scope: $scope, workspaceId: $workspaceId, filter: $filter, orderBy: $orderBy, first: $first, after: $after) {{
    edges {{ node {{ ...TaskFields }} }} pageInfo {{ hasNextPage }} totalCount @include(if: $withTotal) }} }} {}",
        wire::FRAGMENT
    )
}

/// Parses a peer's `tasks` connection into a source page and its total.
fn parse_connection(data: &Value) -> AppResult<(SourcePage<Task>, Option<i64>)> {
    let tasks = &data["tasks"];
    let rows = tasks["edges"]
        .as_array()
        .ok_or_else(|| AppError::BadInput("peer answer: edges".into()))?
        .iter()
        .map(|e| owned::<wire::TaskWire>(&e["node"]))
        .collect::<AppResult<Vec<_>>>()?;
    let has_next = tasks["pageInfo"]["hasNextPage"]
        .as_bool()
        .ok_or_else(|| AppError::BadInput("peer answer: pageInfo".into()))?;
    Ok((SourcePage { rows, has_next }, tasks["totalCount"].as_i64()))
}

/// One merged page across this instance and the planned peers. Every
/// source resumes from the same position, the last row's place in the
/// global order, which peers receive plain.
pub(super) async fn federated_page(
    rc: &RequestContext,
    plan: &Plan,
    request: &FederatedTasks,
    conditions: &Conditions,
    after: Option<&str>,
) -> AppResult<TaskConnection> {
    let order = request.order;
    let start = after.map(|a| rc.open_cursor(a, &order.name())).transpose()?;
    let order_value = order.to_value().into_json().map_err(AppError::internal)?;
    let query = subquery();
    let variables = |peer: &crate::federation::registry::PeerRecord| {
        json!({
            "scope": plan.scope_for(peer),
            "workspaceId": request.workspace_id,
            "filter": request.filter,
            "orderBy": order_value,
            "first": request.first,
            "after": start.as_ref().map(Cursor::plain),
            "withTotal": request.with_total,
        })
    };
    let local = async {
        if !plan.include_self {
            return Ok(None);
        }
        page(rc, conditions, order, request.first, start.as_ref(), request.with_total)
            .await
            .map(Some)
    };
    let (local, answers) = futures::join!(local, federated::ask_all(rc, plan, &query, variables));
    let mut total = 0;
    let mut pages = Vec::new();
    if let Some(local) = local? {
        total += local.total_count.unwrap_or(0);
        pages.push(SourcePage {
            has_next: local.page_info.has_next_page,
            rows: local.edges.into_iter().map(|e| e.node).collect(),
        });
    }
    // A peer's rows must come in order and after the position; a page
    // that breaks either is not used.
    let in_place = |rows: &[Task]| -> AppResult<()> {
        let sorted = rows.windows(2).all(|w| order.compare(&w[0], &w[1]) == Ordering::Less);
        let after_start = match &start {
            Some(c) => rows
                .iter()
                .try_fold(true, |ok, t| Ok::<_, AppError>(ok && order.follows(t, c)?))?,
            None => true,
        };
        if sorted && after_start {
            Ok(())
        } else {
            Err(AppError::BadInput(
                "peer answer: rows out of order or before the position asked".into(),
            ))
        }
    };
    for (peer, data) in answers {
        let Some(data) = data else { continue };
        match parse_connection(&data).and_then(|(page, count)| in_place(&page.rows).map(|()| (page, count))) {
            Ok((page, count)) => {
                total += count.unwrap_or(0);
                pages.push(page);
            }
            Err(e) => federated::bad_answer(rc, &peer, &e),
        }
    }
    let (rows, has_next_page) = fanout::merge(pages, request.first, |a, b| order.compare(a, b));
    let edges = rows
        .into_iter()
        .map(|node| {
            Ok(TaskEdge {
                cursor: rc.seal_cursor(&order.cursor_of(&node)?),
                node,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(TaskConnection::new(
        edges,
        has_next_page,
        after.is_some(),
        request.with_total.then_some(total),
    ))
}
