//! A page of agent tasks from the peers a plan covers, merged with this
//! instance's in the global order (created_at, instance, id).

use serde_json::{Value, json};

use super::{AgentTask, AgentTaskConnection, Conditions, ORDERING, page, wire};
use crate::error::{AppError, AppResult};
use crate::federation::fanout::SourcePage;
use crate::graphql::RequestContext;
use crate::graphql::federated::{self, Plan};
use crate::graphql::pagination::Cursor;
use crate::graphql::wire::owned;

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

fn parse_connection(data: &Value) -> AppResult<(SourcePage<AgentTask>, Option<i64>)> {
    let list = &data["agentTasks"];
    let rows = list["edges"]
        .as_array()
        .ok_or_else(|| AppError::BadInput("peer answer: edges".into()))?
        .iter()
        .map(|e| owned::<wire::AgentTaskWire>(&e["node"]))
        .collect::<AppResult<Vec<_>>>()?;
    let has_next = list["pageInfo"]["hasNextPage"]
        .as_bool()
        .ok_or_else(|| AppError::BadInput("peer answer: pageInfo".into()))?;
    Ok((SourcePage { rows, has_next }, list["totalCount"].as_i64()))
}

/// One merged page across this instance and the planned peers; every
/// source resumes from the same position, which peers receive plain.
pub(super) async fn federated_page(
    rc: &RequestContext,
    plan: &Plan,
    request: &FederatedAgentTasks,
    conditions: &Conditions,
    after: Option<&str>,
) -> AppResult<AgentTaskConnection> {
    let start = after.map(|a| rc.open_cursor(a, ORDERING)).transpose()?;
    let query = subquery();
    let variables = |peer: &crate::federation::registry::PeerRecord| {
        json!({
            "scope": plan.scope_for(peer),
            "workspaceId": request.workspace_id,
            "filter": request.filter,
            "first": request.first,
            "after": start.as_ref().map(Cursor::plain),
            "withTotal": request.with_total,
        })
    };
    let local = async {
        if !plan.include_self {
            return Ok(None);
        }
        page(rc, conditions, request.first, start.as_ref(), request.with_total)
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
        parse_connection,
        AgentTask::compare,
        |t| start.as_ref().map_or(Ok(true), |c| t.follows(c)),
        request.first,
    );
    AgentTaskConnection::new(
        rows,
        rc,
        has_next_page,
        after.is_some(),
        request.with_total.then_some(total),
    )
}
