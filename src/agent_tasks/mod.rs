//! Agent tasks: work for agents in a durable queue (migration 0063). This
//! file holds the GraphQL objects and the list; `mutations.rs` what users
//! do to tasks, `queue.rs` what agents do through the worker API
//! (`http/worker.rs`), `dispatch.rs` the return of tasks whose agent went
//! quiet and the agents Mosaic runs as containers, `runtime.rs` the reference agent (`mosaic worker`).

pub mod budgets;
pub mod dispatch;
pub mod events;
mod merged;
pub mod mutations;
pub mod queue;
pub mod runtime;
pub mod tokens;
pub mod wire;

use std::cmp::Ordering;
use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, InputType, Json, Object, SimpleObject};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::edges::Edges;
use crate::graphql::federated::{self, InstanceScope, Plan};
use crate::graphql::ids::{Kind, Owner};
use crate::graphql::pagination::{Cursor, PageInfo, push_after};
use crate::graphql::{InstanceInfo, RequestContext, limits};

pub use mutations::{AgentTaskMutation, CreateAgentTaskInput};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AgentTaskStatus {
    Queued,
    Assigned,
    Running,
    Completed,
    Failed,
    Killed,
    Cancelled,
    /// Failed or lost on its last attempt.
    Dead,
}

impl AgentTaskStatus {
    pub fn as_db(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Assigned => "ASSIGNED",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Killed => "KILLED",
            Self::Cancelled => "CANCELLED",
            Self::Dead => "DEAD",
        }
    }

    pub fn from_db(s: &str) -> AppResult<Self> {
        [
            Self::Queued,
            Self::Assigned,
            Self::Running,
            Self::Completed,
            Self::Failed,
            Self::Killed,
            Self::Cancelled,
            Self::Dead,
        ]
        .into_iter()
        .find(|v| v.as_db() == s)
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("unknown agent task status {s}")))
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AgentTaskKind {
    Worker,
    Reviewer,
    Tester,
    /// JSON steps the reference agent (`mosaic worker`) follows.
    Script,
}

impl AgentTaskKind {
    pub fn as_db(self) -> &'static str {
        match self {
            Self::Worker => "WORKER",
            Self::Reviewer => "REVIEWER",
            Self::Tester => "TESTER",
            Self::Script => "SCRIPT",
        }
    }

    pub(crate) fn from_db(s: &str) -> AppResult<Self> {
        [Self::Worker, Self::Reviewer, Self::Tester, Self::Script]
            .into_iter()
            .find(|v| v.as_db() == s)
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("unknown agent task kind {s}")))
    }
}

/// Why a queued task is not claimed now.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AgentTaskBlock {
    /// A budget covering the task has no headroom (`budgets`): it is claimed
    /// once the budget is raised or reset, or its window resets.
    BudgetExceeded,
}

/// Who changed a task's status.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AgentTaskActor {
    User,
    Agent,
    /// Another instance, through a COMMAND under its read-write grant
    /// (`actorId`: its instance id).
    Peer,
    /// The instance itself (the reaper, the dispatcher).
    System,
}

/// One status change of a task, from the append-only log.
#[derive(SimpleObject, Clone, Debug)]
pub struct AgentTaskEvent {
    /// None for the task's creation.
    pub from_status: Option<AgentTaskStatus>,
    pub to_status: AgentTaskStatus,
    pub actor: AgentTaskActor,
    /// The user, agent or peer instance (a UUID); none for the instance itself.
    pub actor_id: Option<String>,
    pub reason: Option<String>,
    pub at: OffsetDateTime,
}

/// What an agent reported it used, summed over the task's attempts.
#[derive(SimpleObject, Clone, Debug, Default)]
pub struct AgentTaskUsage {
    pub tokens: i64,
    pub cost: i64,
    pub agent_ms: i64,
}

#[derive(Clone, Debug)]
pub struct AgentTask {
    pub id: Uuid,
    pub global_id: ID,
    pub workspace_id: ID,
    pub project_id: Option<ID>,
    pub title: String,
    pub kind: AgentTaskKind,
    pub priority: i32,
    pub status: AgentTaskStatus,
    pub status_reason: Option<String>,
    pub blocked_by: Option<AgentTaskBlock>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub instructions: Value,
    pub checkpoint: Option<Value>,
    pub checkpoint_step: Option<i32>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub usage: AgentTaskUsage,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    pub instance: Arc<InstanceInfo>,
    /// A task of another instance comes with its events; ours are read when asked.
    pub remote_events: Option<Vec<AgentTaskEvent>>,
}

pub(crate) const COLUMNS: &str = "id, workspace_id, project_id, title, kind, priority, status, status_reason,
    attempts, max_attempts, instructions, checkpoint, checkpoint_step, result, error, usage_tokens, usage_cost,
    usage_agent_ms, created_at, updated_at, finished_at,
    status = 'QUEUED' AND agent_budget_exhausted(workspace_id, project_id, created_by) AS budget_exceeded";

impl AgentTask {
    fn from_row(rc: &RequestContext, r: &PgRow) -> AppResult<Self> {
        let id: Uuid = r.try_get("id")?;
        Ok(Self {
            global_id: rc.global_id(Kind::AgentTask, id),
            id,
            workspace_id: rc.global_id(Kind::Workspace, r.try_get("workspace_id")?),
            project_id: r
                .try_get::<Option<Uuid>, _>("project_id")?
                .map(|p| rc.global_id(Kind::Project, p)),
            title: r.try_get("title")?,
            kind: AgentTaskKind::from_db(r.try_get("kind")?)?,
            priority: r.try_get::<i16, _>("priority")?.into(),
            status: AgentTaskStatus::from_db(r.try_get("status")?)?,
            status_reason: r.try_get("status_reason")?,
            blocked_by: r
                .try_get::<bool, _>("budget_exceeded")?
                .then_some(AgentTaskBlock::BudgetExceeded),
            attempts: r.try_get("attempts")?,
            max_attempts: r.try_get("max_attempts")?,
            instructions: r.try_get("instructions")?,
            checkpoint: r.try_get("checkpoint")?,
            checkpoint_step: r.try_get("checkpoint_step")?,
            result: r.try_get("result")?,
            error: r.try_get("error")?,
            usage: AgentTaskUsage {
                tokens: r.try_get("usage_tokens")?,
                cost: r.try_get("usage_cost")?,
                agent_ms: r.try_get("usage_agent_ms")?,
            },
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            finished_at: r.try_get("finished_at")?,
            instance: rc.instance.clone(),
            remote_events: None,
        })
    }
}

pub async fn load(rc: &RequestContext, id: Uuid) -> AppResult<Option<AgentTask>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agent_tasks WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *rc.db.conn().await?)
    .await?;
    row.map(|r| AgentTask::from_row(rc, &r)).transpose()
}

/// The columns [`event_from_row`] reads.
pub(crate) const EVENT_COLUMNS: &str = "from_status, to_status, actor_kind, actor_id, reason, at";

pub(crate) fn event_from_row(r: &PgRow) -> AppResult<AgentTaskEvent> {
    Ok(AgentTaskEvent {
        from_status: r
            .try_get::<Option<&str>, _>("from_status")?
            .map(AgentTaskStatus::from_db)
            .transpose()?,
        to_status: AgentTaskStatus::from_db(r.try_get("to_status")?)?,
        actor: match r.try_get::<&str, _>("actor_kind")? {
            "USER" => AgentTaskActor::User,
            "AGENT" => AgentTaskActor::Agent,
            "PEER" => AgentTaskActor::Peer,
            _ => AgentTaskActor::System,
        },
        actor_id: r.try_get::<Option<Uuid>, _>("actor_id")?.map(|u| u.to_string()),
        reason: r.try_get("reason")?,
        at: r.try_get("at")?,
    })
}

async fn events_of(rc: &RequestContext, task: Uuid) -> AppResult<Vec<AgentTaskEvent>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM agent_task_events WHERE task_id = $1 ORDER BY id"
    )))
    .bind(task)
    .fetch_all(&mut *rc.db.conn().await?)
    .await?;
    rows.iter().map(event_from_row).collect()
}

#[Object]
impl AgentTask {
    pub async fn id(&self) -> ID {
        self.global_id.clone()
    }
    async fn workspace_id(&self) -> &ID {
        &self.workspace_id
    }
    /// The project whose budgets also cover the task, if any.
    async fn project_id(&self) -> Option<&ID> {
        self.project_id.as_ref()
    }
    async fn title(&self) -> &str {
        &self.title
    }
    async fn kind(&self) -> AgentTaskKind {
        self.kind
    }
    /// 1 (lowest) to 10 (highest).
    async fn priority(&self) -> i32 {
        self.priority
    }
    async fn status(&self) -> AgentTaskStatus {
        self.status
    }
    /// Why the status last changed.
    async fn status_reason(&self) -> Option<&str> {
        self.status_reason.as_deref()
    }
    /// Why a queued task is not claimed now (none when it can be).
    async fn blocked_by(&self) -> Option<AgentTaskBlock> {
        self.blocked_by
    }
    /// Claims so far (a retry by a user starts counting again).
    async fn attempts(&self) -> i32 {
        self.attempts
    }
    async fn max_attempts(&self) -> i32 {
        self.max_attempts
    }
    async fn instructions(&self) -> Json<&Value> {
        Json(&self.instructions)
    }
    /// The latest checkpoint an agent saved; a resumed attempt starts from it.
    async fn checkpoint(&self) -> Option<Json<&Value>> {
        self.checkpoint.as_ref().map(Json)
    }
    /// The step the checkpoint was taken after (SCRIPT tasks).
    async fn checkpoint_step(&self) -> Option<i32> {
        self.checkpoint_step
    }
    async fn result(&self) -> Option<Json<&Value>> {
        self.result.as_ref().map(Json)
    }
    /// The last failure an agent reported.
    async fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    async fn usage(&self) -> &AgentTaskUsage {
        &self.usage
    }
    async fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }
    async fn updated_at(&self) -> OffsetDateTime {
        self.updated_at
    }
    async fn finished_at(&self) -> Option<OffsetDateTime> {
        self.finished_at
    }
    async fn instance(&self) -> &InstanceInfo {
        &self.instance
    }
    /// Every status change, oldest first: the task's audit trail.
    async fn events(&self, ctx: &Context<'_>) -> AppResult<Vec<AgentTaskEvent>> {
        match &self.remote_events {
            Some(events) => Ok(events.clone()),
            None => events_of(RequestContext::of(ctx), self.id).await,
        }
    }
}

#[derive(InputObject, Clone, Default, Debug)]
pub struct AgentTaskFilter {
    pub status: Option<Vec<AgentTaskStatus>>,
    pub kind: Option<Vec<AgentTaskKind>>,
}

/// An agent task in a page; its cursor is sealed only when selected.
#[derive(Clone, Debug)]
pub struct AgentTaskEdge {
    pub node: AgentTask,
}

#[Object]
impl AgentTaskEdge {
    async fn cursor(&self, ctx: &Context<'_>) -> AppResult<String> {
        self.sealed(RequestContext::of(ctx))
    }
    async fn node(&self) -> &AgentTask {
        &self.node
    }
}

impl AgentTaskEdge {
    fn sealed(&self, rc: &RequestContext) -> AppResult<String> {
        Ok(rc.seal_cursor(&self.node.cursor()?))
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct AgentTaskConnection {
    pub edges: Edges<AgentTaskEdge>,
    pub page_info: PageInfo,
    /// All tasks matching the filter (not only this page); computed only when asked for.
    pub total_count: Option<i64>,
}

/// The list's one ordering: creation, then instance, then id.
const ORDERING: &str = "CREATED_AT:ASC";

impl AgentTask {
    /// The task's place in the global order, as a cursor.
    fn cursor(&self) -> AppResult<Cursor> {
        Ok(Cursor {
            o: ORDERING.into(),
            k: Some(self.created_at.format(&Rfc3339).map_err(AppError::internal)?),
            n: Some(Uuid::parse_str(&self.instance.id).map_err(AppError::internal)?),
            i: self.id,
        })
    }

    /// The global order across instances: created_at, instance id, id.
    fn compare(a: &Self, b: &Self) -> Ordering {
        (a.created_at, &a.instance.id, a.id).cmp(&(b.created_at, &b.instance.id, b.id))
    }

    /// Whether the task comes after the position `c` names.
    fn follows(&self, c: &Cursor) -> AppResult<bool> {
        let at = OffsetDateTime::parse(c.k.as_deref().unwrap_or_default(), &Rfc3339)
            .map_err(|_| AppError::BadInput("after: cursor does not fit this list".into()))?;
        let instance = c.n.map(|n| n.to_string()).unwrap_or_default();
        Ok((self.created_at, &self.instance.id, self.id) > (at, &instance, c.i))
    }
}

/// A parsed filter, ready to become SQL.
pub struct Conditions {
    workspace: Option<Uuid>,
    status: Option<Vec<&'static str>>,
    kind: Option<Vec<&'static str>>,
}

impl Conditions {
    fn new(workspace: Option<Uuid>, filter: &AgentTaskFilter) -> Self {
        Self {
            workspace,
            status: filter.status.as_ref().map(|s| s.iter().map(|s| s.as_db()).collect()),
            kind: filter.kind.as_ref().map(|k| k.iter().map(|k| k.as_db()).collect()),
        }
    }

    fn push(&self, q: &mut QueryBuilder<Postgres>) {
        q.push(" WHERE true");
        if let Some(ws) = self.workspace {
            q.push(" AND workspace_id = ").push_bind(ws);
        }
        if let Some(s) = &self.status {
            q.push(" AND status = ANY(").push_bind(s.clone()).push(")");
        }
        if let Some(k) = &self.kind {
            q.push(" AND kind = ANY(").push_bind(k.clone()).push(")");
        }
    }
}

impl AgentTaskConnection {
    fn new(
        nodes: Vec<AgentTask>,
        rc: &RequestContext,
        has_next_page: bool,
        has_previous_page: bool,
        total_count: Option<i64>,
    ) -> AppResult<Self> {
        let edges: Vec<AgentTaskEdge> = nodes.into_iter().map(|node| AgentTaskEdge { node }).collect();
        Ok(Self {
            page_info: PageInfo::of_edges(&edges, |e| e.sealed(rc), has_next_page, has_previous_page)?,
            edges: Edges(edges),
            total_count,
        })
    }
}

/// This instance's page after a position.
async fn page(
    rc: &RequestContext,
    conditions: &Conditions,
    first: usize,
    after: Option<&Cursor>,
    with_total: bool,
) -> AppResult<AgentTaskConnection> {
    let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM agent_tasks"));
    conditions.push(&mut q);
    if let Some(c) = after {
        let key = c.k.clone().unwrap_or_default();
        push_after(
            &mut q,
            c,
            rc.instance_id,
            "created_at",
            "timestamptz",
            "id",
            ">",
            true,
            key,
        );
    }
    q.push(format!(" ORDER BY created_at, id{}", crate::db::limit(first + 1)));
    let mut conn = rc.db.conn().await?;
    let rows = q
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| match AppError::from(e) {
            AppError::BadInput(_) => AppError::BadInput("after: cursor does not fit this list".into()),
            other => other,
        })?;
    let total_count = if with_total {
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM agent_tasks");
        conditions.push(&mut count);
        Some(rc.cap_total(count.build_query_scalar::<i64>().fetch_one(&mut *conn).await?))
    } else {
        None
    };
    drop(conn);
    let has_next_page = rows.len() > first;
    let nodes = rows
        .iter()
        .take(first)
        .map(|r| AgentTask::from_row(rc, r))
        .collect::<AppResult<Vec<_>>>()?;
    AgentTaskConnection::new(nodes, rc, has_next_page, after.is_some(), total_count)
}

#[derive(Default)]
pub struct AgentTaskQuery;

#[Object]
impl AgentTaskQuery {
    /// The agents that take work from a workspace of this instance, newest
    /// first, at most `first`; revoked ones only with `includeRevoked`.
    /// Owners and admins of the workspace (FORBIDDEN for other members).
    async fn agent_tokens(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        include_revoked: Option<bool>,
        first: Option<i32>,
    ) -> AppResult<Vec<tokens::AgentToken>> {
        tokens::list(RequestContext::of(ctx), workspace_id, include_revoked, first).await
    }

    /// Agent tasks you can see, optionally in one workspace, oldest first
    /// (ties broken by instance, then id), paginated with `first`/`after`.
    /// `scope` adds other instances; a workspace of another instance is
    /// listed by its owner.
    #[graphql(
        complexity = "scope.as_ref().map_or(0, |_| limits::FORWARD_COST) + first.unwrap_or(20).max(1) as usize * child_complexity"
    )]
    async fn agent_tasks(
        &self,
        ctx: &Context<'_>,
        workspace_id: Option<ID>,
        filter: Option<AgentTaskFilter>,
        first: Option<i32>,
        after: Option<String>,
        scope: Option<InstanceScope>,
    ) -> AppResult<AgentTaskConnection> {
        let rc = RequestContext::of(ctx);
        let first = rc.page_size(first)?;
        let filter = filter.unwrap_or_default();
        let with_total = ctx.look_ahead().field("totalCount").exists();
        let owner = match &workspace_id {
            Some(id) => Some(rc.owner_of("workspaceId", id, Kind::Workspace)?),
            None => None,
        };
        let (plan, workspace) = match owner {
            Some(Owner::Instance(owner)) => (federated::owner_plan(rc, owner).await?, None),
            Some(Owner::Here(ws)) => (Plan::local(), Some(ws)),
            None => (federated::plan(rc, scope.as_ref()).await?, None),
        };
        let conditions = Conditions::new(workspace, &filter);
        if !plan.fans_out() && plan.include_self && scope.is_none() {
            let after = after.map(|a| rc.open_cursor(&a, ORDERING)).transpose()?;
            return page(rc, &conditions, first, after.as_ref(), with_total).await;
        }
        let request = merged::FederatedAgentTasks {
            workspace_id: workspace_id.map(|w| w.0),
            filter: filter.to_value().into_json().map_err(AppError::internal)?,
            first,
            with_total,
        };
        merged::federated_page(rc, &plan, &request, &conditions, after.as_deref()).await
    }
}
