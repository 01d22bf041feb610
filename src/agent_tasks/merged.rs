//! A page of agent tasks from the peers a plan covers, merged with this
//! instance's in the global order (created_at, instance, id).

use std::cmp::Ordering;

use serde_json::{Value, json};

use super::{AgentTask, AgentTaskConnection, Conditions, ORDERING, page, wire};
use crate::error::AppResult;
use crate::graphql::RequestContext;
use crate::graphql::federated::Plan;
use crate::graphql::merged_list::{self, MergedList, Sourced, Subquery};
use crate::graphql::pagination::Cursor;

/// What a scoped `agentTasks` asks of every instance.
pub(super) struct FederatedAgentTasks {
    pub(super) workspace_id: Option<String>,
    pub(super) filter: Value,
    pub(super) first: usize,
    pub(super) with_total: bool,
}

fn subquery() -> String {
    format!(
        "query($scope: InstanceScope, $workspaceId: ID, $filter: AgentTaskFilter, $first: Int, $after: String, $withTotal: Boolean!) {{
  agentTasks(scope: $scope, workspaceId: $workspaceId, filter: $filter, first: $first, after: $after) {{
    edges {{ node {{ ...AgentTaskFields }} }} pageInfo {{ hasNextPage }} totalCount @include(if: $withTotal) }} }} {}",
        wire::FRAGMENT
    )
}

/// `agentTasks` as a list merged across instances.
struct AgentTasks<'a> {
    conditions: &'a Conditions,
}

impl MergedList for AgentTasks<'_> {
    type Row = AgentTask;
    type Wire = wire::AgentTaskWire;

    fn compare(&self, a: &AgentTask, b: &AgentTask) -> Ordering {
        AgentTask::compare(a, b)
    }

    fn cursor_of(&self, row: &AgentTask) -> AppResult<Cursor> {
        row.cursor()
    }

    fn follows(&self, row: &AgentTask, at: &Cursor) -> AppResult<bool> {
        row.follows(at)
    }

    async fn local(
        &self,
        rc: &RequestContext,
        first: usize,
        after: Option<&Cursor>,
        with_total: bool,
    ) -> AppResult<Option<Sourced<AgentTask>>> {
        let page = page(rc, self.conditions, first, after, with_total).await?;
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
    request: &FederatedAgentTasks,
    conditions: &Conditions,
    after: Option<&str>,
) -> AppResult<AgentTaskConnection> {
    let start = after.map(|a| rc.open_cursor(a, ORDERING)).transpose()?;
    let subquery = Subquery {
        query: subquery(),
        variables: json!({ "workspaceId": request.workspace_id, "filter": request.filter }),
    };
    let list = AgentTasks { conditions };
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
    AgentTaskConnection::new(
        merged.rows,
        rc,
        merged.has_next,
        after.is_some(),
        request.with_total.then_some(merged.total),
    )
}
