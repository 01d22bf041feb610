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
    /// The optional parts of a task the client selected.
    pub(super) selection: wire::Selection,
}

fn subquery(selection: wire::Selection) -> String {
    format!(
        "query($scope: InstanceScope, $workspaceId: ID, $filter: TaskFilter, $orderBy: TaskOrder, $first: Int, $after: String, $withTotal: Boolean!) {{
  tasks(scope: $scope, workspaceId: $workspaceId, filter: $filter, orderBy: $orderBy, first: $first, after: $after) {{
    edges {{ node {{ ...TaskFields }} }} pageInfo {{ hasNextPage }} totalCount @include(if: $withTotal) }} }} {}",
        selection.fragment()
    )
}

/// Parses a peer's `tasks` connection into a source page and its total.
fn parse_connection(data: &Value, selection: wire::Selection) -> AppResult<(SourcePage<Task>, Option<i64>)> {
    let tasks = &data["tasks"];
    let rows = tasks["edges"]
        .as_array()
        .ok_or_else(|| AppError::BadInput("peer answer: edges".into()))?
        .iter()
        .map(|e| selection.parse(&e["node"]))
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
    let query = subquery(request.selection);
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
    let local = local?.map(|page| {
        let source = SourcePage {
            has_next: page.page_info.has_next_page,
            rows: page.edges.into_iter().map(|e| e.node).collect(),
        };
        (source, page.total_count)
    });
    let (rows, has_next_page, total) = federated::merge_pages(
        rc,
        local,
        answers,
        |data| parse_connection(data, request.selection),
        |a, b| order.compare(a, b),
        |t| start.as_ref().map_or(Ok(true), |c| order.follows(t, c)),
        request.first,
    );
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
