//! A page of tasks from the peers a plan covers, merged with this
//! instance's in the global order.

use super::*;
use crate::graphql::merged_list::{self, MergedList, Sourced, Subquery};

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

/// `tasks` as a list merged across instances.
struct Tasks<'a> {
    request: &'a FederatedTasks,
    conditions: &'a Conditions,
}

impl MergedList for Tasks<'_> {
    type Row = Task;
    type Wire = wire::TaskWire;

    fn check(&self, task: &wire::TaskWire) -> AppResult<()> {
        self.request.selection.check(task)
    }

    fn compare(&self, a: &Task, b: &Task) -> Ordering {
        self.request.order.compare(a, b)
    }

    fn cursor_of(&self, row: &Task) -> AppResult<Cursor> {
        self.request.order.cursor_of(row)
    }

    fn follows(&self, row: &Task, at: &Cursor) -> AppResult<bool> {
        self.request.order.follows(row, at)
    }

    async fn local(
        &self,
        rc: &RequestContext,
        first: usize,
        after: Option<&Cursor>,
        with_total: bool,
    ) -> AppResult<Option<Sourced<Task>>> {
        let request = self.request;
        let page = page(
            rc,
            self.conditions,
            request.order,
            request.selection,
            first,
            after,
            with_total,
        )
        .await?;
        let rows = page.edges.0.into_iter().map(|e| e.node);
        Ok(merged_list::local_source(
            rows,
            page.page_info.has_next_page,
            page.total_count,
        ))
    }
}

/// One merged page across this instance and the planned peers.
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
    let subquery = Subquery {
        query: subquery(request.selection),
        variables: json!({ "workspaceId": request.workspace_id, "filter": request.filter, "orderBy": order_value }),
    };
    let list = Tasks { request, conditions };
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
    let edges = merged.rows.into_iter().map(|node| TaskEdge { node, order }).collect();
    TaskConnection::new(
        rc,
        edges,
        merged.has_next,
        after.is_some(),
        request.with_total.then_some(merged.total),
    )
}
