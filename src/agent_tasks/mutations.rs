//! What users do to agent tasks: agent tokens, creating, cancelling and
//! retrying tasks. A task or workspace of another instance is changed by
//! its owner (COMMAND).

use async_graphql::{Context, ID, InputObject, InputType, Json, Object};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde_json::{Value, json};
use uuid::Uuid;

use super::runtime::Script;
use super::{AgentTask, AgentTaskKind, load, wire};
use crate::error::{AppError, AppResult};
use crate::graphql::federated;
use crate::graphql::ids::{Kind, Owner};
use crate::graphql::wire::owned;
use crate::graphql::{Caller, RequestContext, optional_text, required_text};
use crate::workspaces;

/// The largest `instructions`, in bytes of JSON.
pub const MAX_INSTRUCTIONS_BYTES: usize = 64 * 1024;
/// Workspaces one agent token may serve.
pub const MAX_AGENT_WORKSPACES: usize = 50;
/// An agent token starts with this, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "mosaic_agent_";

#[derive(InputObject)]
pub struct CreateAgentTaskInput {
    pub workspace_id: ID,
    /// A project of the workspace: its budgets then cover the task too.
    pub project_id: Option<ID>,
    pub title: String,
    pub kind: AgentTaskKind,
    /// 1 (lowest) to 10 (highest); 5 when not given.
    pub priority: Option<i32>,
    /// What the agent is to do. For SCRIPT: `{"steps": [...]}` (a JSON
    /// string holding that object is read as the object).
    pub instructions: Option<Json<Value>>,
    /// Claims before the task is DEAD: 1 to 100; 3 when not given.
    pub max_attempts: Option<i32>,
}

/// A new agent token's secret, shown once.
pub(crate) fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Checked instructions: bounded, and for SCRIPT a script the reference agent can follow.
fn instructions(kind: AgentTaskKind, given: Option<Json<Value>>) -> AppResult<Value> {
    let mut value = given.map(|j| j.0).unwrap_or_else(|| json!({}));
    if let (AgentTaskKind::Script, Value::String(text)) = (kind, &value) {
        value = serde_json::from_str(text).map_err(|e| AppError::BadInput(format!("instructions: not JSON: {e}")))?;
    }
    let size = serde_json::to_vec(&value).map_err(AppError::internal)?.len();
    if size > MAX_INSTRUCTIONS_BYTES {
        return Err(AppError::invalid(
            "INSTRUCTIONS_TOO_LARGE",
            format!("instructions: {size} bytes of JSON, more than the limit of {MAX_INSTRUCTIONS_BYTES}"),
        ));
    }
    if kind == AgentTaskKind::Script {
        Script::parse(&value).map_err(|e| AppError::BadInput(format!("instructions: {e}")))?;
    }
    Ok(value)
}

fn in_range(field: &str, value: Option<i32>, default: i32, min: i32, max: i32) -> AppResult<i32> {
    match value.unwrap_or(default) {
        v if (min..=max).contains(&v) => Ok(v),
        v => Err(AppError::BadInput(format!(
            "{field} must be between {min} and {max}, not {v}"
        ))),
    }
}

async fn require(rc: &RequestContext, id: Uuid) -> AppResult<AgentTask> {
    load(rc, id)
        .await?
        .ok_or_else(|| AppError::NotFound("agent task".into()))
}

/// The local task `id` names, which the caller must be able to change; or
/// the owner to ask.
async fn writable_task(rc: &RequestContext, id: &ID) -> AppResult<Result<AgentTask, Uuid>> {
    let local = match rc.owner_of("id", id, Kind::AgentTask)? {
        Owner::Here(local) => local,
        Owner::Instance(owner) => return Ok(Err(owner)),
    };
    let task = require(rc, local).await?;
    let writable: bool = sqlx::query_scalar("SELECT $1 = ANY (writable_workspace_ids())")
        .bind(crate::graphql::ids::GlobalId::parse(&task.workspace_id)?.local)
        .fetch_one(&mut *rc.db.conn().await?)
        .await?;
    if !writable {
        return Err(AppError::Forbidden("guests cannot change agent tasks".into()));
    }
    Ok(Ok(task))
}

/// Kill (and start) authority: owners and admins of the workspace, or a peer whose
/// grant lets it change the workspace (a master, through COMMAND).
pub(super) async fn require_admin(rc: &RequestContext, ws: Uuid) -> AppResult<()> {
    let admin: bool =
        sqlx::query_scalar("SELECT $1 = ANY (admin_workspace_ids()) OR $1 = ANY (granted_write_workspace_ids())")
            .bind(ws)
            .fetch_one(&mut *rc.db.conn().await?)
            .await?;
    if admin {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "only owners and admins of the workspace may kill or start its agents".into(),
        ))
    }
}

/// Names a peer caller (a master's COMMAND) as the actor of the status
/// changes this request makes: migration 0064's trigger logs it as PEER.
async fn log_peer_as_actor(rc: &RequestContext) -> AppResult<()> {
    if let Caller::Peer(peer) = &rc.caller {
        sqlx::query("SELECT set_config('mosaic.peer_id', $1, true)")
            .bind(peer.instance_id.to_string())
            .execute(&mut *rc.db.conn().await?)
            .await?;
    }
    Ok(())
}

/// Marks the held tasks of `ws` (or only `task`) KILLED, and stops the
/// containers of their agents that run in one; returns the tasks' ids.
async fn kill_held(rc: &RequestContext, ws: Uuid, task: Option<Uuid>) -> AppResult<Vec<Uuid>> {
    log_peer_as_actor(rc).await?;
    let killed: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "UPDATE agent_tasks SET status = 'KILLED', status_reason = 'agent killed', finished_at = clock_timestamp()
         WHERE workspace_id = $1 AND ($2::uuid IS NULL OR id = $2) AND status IN ('ASSIGNED', 'RUNNING')
         RETURNING id, agent_id",
    )
    .bind(ws)
    .bind(task)
    .fetch_all(&mut *rc.db.conn().await?)
    .await?;
    for agent in killed.iter().filter_map(|(_, agent)| *agent) {
        super::dispatch::stop_agent_container(&rc.agents, agent);
    }
    Ok(killed.into_iter().map(|(id, _)| id).collect())
}

/// Asks the owner of a remote task to run `field` on it.
async fn at_owner(rc: &RequestContext, owner: Uuid, field: &str, id: &ID) -> AppResult<AgentTask> {
    let query = format!(
        "mutation($id: ID!) {{ {field}(id: $id) {{ ...AgentTaskFields }} }} {}",
        wire::FRAGMENT
    );
    let data = federated::forward(rc, owner, true, &query, json!({ "id": id.as_str() })).await?;
    owned::<wire::AgentTaskWire>(&data[field])
}

#[derive(Default)]
pub struct AgentTaskMutation;

#[Object]
impl AgentTaskMutation {
    /// Starts a container agent for `kind` in a workspace of this instance
    /// now, beside those the dispatcher starts for queued work (it exits
    /// when idle); returns its id (see `agentTokens`). Owners and admins of
    /// the workspace. AGENT_LIMIT_REACHED (the worker API's 429) when the
    /// instance runs `agent_tasks.max_running` container agents already;
    /// AGENT_PROFILE_MISSING when no agent profile serves the kind.
    async fn start_agent(&self, ctx: &Context<'_>, workspace_id: ID, kind: AgentTaskKind) -> async_graphql::Result<ID> {
        super::tokens::start(RequestContext::of(ctx), workspace_id, kind).await
    }

    /// Revokes an agent's token: its next worker call is refused
    /// (AGENT_TOKEN_REVOKED), what it held is queued again to resume from
    /// its checkpoint, and a container Mosaic started for it is stopped.
    /// Owners and admins of a workspace it serves; NOT_FOUND otherwise.
    /// Revoking again changes nothing.
    async fn revoke_agent_token(&self, ctx: &Context<'_>, id: ID) -> AppResult<bool> {
        super::tokens::revoke(RequestContext::of(ctx), id).await
    }

    /// A new agent and its token (shown once, only its hash is kept). The
    /// agent takes work from `workspaceId` and from `moreWorkspaceIds`; you
    /// must own or administer each.
    async fn create_agent_token(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        name: Option<String>,
        more_workspace_ids: Option<Vec<ID>>,
    ) -> AppResult<String> {
        let rc = RequestContext::of(ctx);
        rc.user()?;
        let name = optional_text("name", name, 100)?.unwrap_or_else(|| "agent".into());
        let name = required_text("name", &name, 100)?;
        let more = more_workspace_ids.unwrap_or_default();
        if more.len() + 1 > MAX_AGENT_WORKSPACES {
            return Err(AppError::BadInput(format!(
                "moreWorkspaceIds: an agent serves at most {MAX_AGENT_WORKSPACES} workspaces"
            )));
        }
        let mut workspaces = vec![rc.local_id_of("workspaceId", &workspace_id, Kind::Workspace)?];
        for id in &more {
            let ws = rc.local_id_of("moreWorkspaceIds", id, Kind::Workspace)?;
            if !workspaces.contains(&ws) {
                workspaces.push(ws);
            }
        }
        for ws in &workspaces {
            workspaces::require_visible(rc, *ws).await?;
        }
        let administered: bool = sqlx::query_scalar("SELECT $1 <@ admin_workspace_ids()")
            .bind(&workspaces)
            .fetch_one(&mut *rc.db.conn().await?)
            .await?;
        if !administered {
            return Err(AppError::Forbidden(
                "workspaceId: only owners and admins of a workspace may let an agent work there".into(),
            ));
        }
        let token = generate_token();
        let agent = Uuid::now_v7();
        let mut conn = rc.db.conn().await?;
        sqlx::query(
            "INSERT INTO task_agents (id, name, token_hash, created_by) VALUES ($1, $2, $3, current_user_id())",
        )
        .bind(agent)
        .bind(&name)
        .bind(crate::auth::tokens::hash(&token))
        .execute(&mut *conn)
        .await?;
        sqlx::query("INSERT INTO task_agent_workspaces (agent_id, workspace_id) SELECT $1, unnest($2::uuid[])")
            .bind(agent)
            .bind(&workspaces)
            .execute(&mut *conn)
            .await?;
        Ok(token)
    }

    /// Queues a task for agents; in a workspace of another instance, its owner does (COMMAND).
    async fn create_agent_task(&self, ctx: &Context<'_>, input: CreateAgentTaskInput) -> AppResult<AgentTask> {
        let rc = RequestContext::of(ctx);
        let ws = match rc.owner_of("workspaceId", &input.workspace_id, Kind::Workspace)? {
            Owner::Here(ws) => ws,
            Owner::Instance(owner) => {
                let query = format!(
                    "mutation($input: CreateAgentTaskInput!) {{ createAgentTask(input: $input) {{ ...AgentTaskFields }} }} {}",
                    wire::FRAGMENT
                );
                let vars = json!({ "input": input.to_value().into_json().map_err(AppError::internal)? });
                let data = federated::forward(rc, owner, true, &query, vars).await?;
                return owned::<wire::AgentTaskWire>(&data["createAgentTask"]);
            }
        };
        let title = required_text("title", &input.title, 500)?;
        let priority = in_range("priority", input.priority, 5, 1, 10)?;
        let max_attempts = in_range("maxAttempts", input.max_attempts, 3, 1, 100)?;
        let instructions = instructions(input.kind, input.instructions)?;
        let project = input
            .project_id
            .as_ref()
            .map(|p| rc.local_id_of("projectId", p, Kind::Project))
            .transpose()?;
        workspaces::require_visible(rc, ws).await?;
        if let Some(p) = project {
            let in_workspace: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM projects WHERE id = $1 AND workspace_id = $2)")
                    .bind(p)
                    .bind(ws)
                    .fetch_one(&mut *rc.db.conn().await?)
                    .await?;
            if !in_workspace {
                return Err(AppError::BadInput(
                    "projectId: no such project in this workspace".into(),
                ));
            }
        }
        log_peer_as_actor(rc).await?;
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO agent_tasks (id, workspace_id, project_id, title, kind, priority, instructions, max_attempts,
                 created_by, status_reason)
             VALUES ($1, $2, $8, $3, $4, $5, $6, $7, current_user_id(), 'created')",
        )
        .bind(id)
        .bind(ws)
        .bind(title)
        .bind(input.kind.as_db())
        .bind(priority as i16)
        .bind(instructions)
        .bind(max_attempts)
        .bind(project)
        .execute(&mut *rc.db.conn().await?)
        .await
        .map_err(|e| AppError::from(e).forbidden_as("guests cannot create agent tasks"))?;
        require(rc, id).await
    }

    /// Stops a queued or held task for good (CANCELLED); its agent learns
    /// of it at its next call. TASK_NOT_CANCELLABLE once it has ended.
    async fn cancel_agent_task(&self, ctx: &Context<'_>, id: ID) -> AppResult<AgentTask> {
        let rc = RequestContext::of(ctx);
        let task = match writable_task(rc, &id).await? {
            Ok(task) => task,
            Err(owner) => return at_owner(rc, owner, "cancelAgentTask", &id).await,
        };
        log_peer_as_actor(rc).await?;
        let changed: Option<Uuid> = sqlx::query_scalar(
            "UPDATE agent_tasks SET status = 'CANCELLED', status_reason = 'cancelled', finished_at = clock_timestamp()
             WHERE id = $1 AND status IN ('QUEUED', 'ASSIGNED', 'RUNNING') RETURNING id",
        )
        .bind(task.id)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
        if changed.is_none() {
            return Err(AppError::invalid(
                "TASK_NOT_CANCELLABLE",
                format!("id: the task has ended ({})", task.status.as_db()),
            ));
        }
        require(rc, task.id).await
    }

    /// Kills the agent working on task `taskId`: the task is KILLED (not
    /// retried), and the agent is refused (TASK_NOT_HELD, status KILLED) at
    /// its next call, so it stops. Owners and admins of the task's
    /// workspace; TASK_NOT_RUNNING when no agent holds it.
    async fn kill_agent(&self, ctx: &Context<'_>, task_id: ID) -> AppResult<AgentTask> {
        let rc = RequestContext::of(ctx);
        let task = match rc.owner_of("taskId", &task_id, Kind::AgentTask)? {
            Owner::Here(local) => require(rc, local).await?,
            Owner::Instance(owner) => {
                let query = format!(
                    "mutation($id: ID!) {{ killAgent(taskId: $id) {{ ...AgentTaskFields }} }} {}",
                    wire::FRAGMENT
                );
                let data = federated::forward(rc, owner, true, &query, json!({ "id": task_id.as_str() })).await?;
                return owned::<wire::AgentTaskWire>(&data["killAgent"]);
            }
        };
        let ws = crate::graphql::ids::GlobalId::parse(&task.workspace_id)?.local;
        require_admin(rc, ws).await?;
        let killed = kill_held(rc, ws, Some(task.id)).await?;
        if killed.is_empty() {
            return Err(AppError::invalid(
                "TASK_NOT_RUNNING",
                format!("taskId: no agent holds this task ({})", task.status.as_db()),
            ));
        }
        require(rc, task.id).await
    }

    /// Kills every agent working in the workspace: each held task is
    /// KILLED. Returns the tasks killed. Owners and admins of the workspace
    /// (of this instance: a peer's agents are killed one task at a time).
    async fn kill_all_agents(&self, ctx: &Context<'_>, workspace_id: ID) -> AppResult<Vec<AgentTask>> {
        let rc = RequestContext::of(ctx);
        let ws = rc.local_id_of("workspaceId", &workspace_id, Kind::Workspace)?;
        workspaces::require_visible(rc, ws).await?;
        require_admin(rc, ws).await?;
        let mut tasks = Vec::new();
        for id in kill_held(rc, ws, None).await? {
            tasks.push(require(rc, id).await?);
        }
        Ok(tasks)
    }

    /// Queues an ended task again (FAILED, DEAD, CANCELLED or KILLED) with
    /// its attempts counted from zero; it resumes from its last checkpoint.
    /// TASK_NOT_RETRYABLE otherwise.
    async fn retry_agent_task(&self, ctx: &Context<'_>, id: ID) -> AppResult<AgentTask> {
        let rc = RequestContext::of(ctx);
        let task = match writable_task(rc, &id).await? {
            Ok(task) => task,
            Err(owner) => return at_owner(rc, owner, "retryAgentTask", &id).await,
        };
        log_peer_as_actor(rc).await?;
        let changed: Option<Uuid> = sqlx::query_scalar(
            "UPDATE agent_tasks SET status = 'QUEUED', status_reason = 'retried', attempts = 0,
                 agent_id = NULL, heartbeat_at = NULL, run_after = clock_timestamp(), finished_at = NULL
             WHERE id = $1 AND status IN ('FAILED', 'DEAD', 'CANCELLED', 'KILLED') RETURNING id",
        )
        .bind(task.id)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
        if changed.is_none() {
            return Err(AppError::invalid(
                "TASK_NOT_RETRYABLE",
                format!(
                    "id: only an ended task that did not complete is retried; this one is {}",
                    task.status.as_db()
                ),
            ));
        }
        require(rc, task.id).await
    }
}
