//! Agent tokens after they are made (`createAgentToken`): the owners and
//! admins of a workspace list the agents that serve it and revoke them,
//! through migration 0064's definers, which never return a token's hash.
//! A revoked agent's held tasks go back to the queue at once, its container
//! (if Mosaic started one) is stopped, and its next worker call is refused
//! (401 AGENT_TOKEN_REVOKED).

use async_graphql::{ErrorExtensions, ID, SimpleObject};
use time::OffsetDateTime;
use uuid::Uuid;

use super::AgentTaskKind;
use super::dispatch::StartRefusal;
use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;
use crate::workspaces;

/// An agent and its token (never the secret).
#[derive(SimpleObject, Clone, Debug)]
pub struct AgentToken {
    /// The agent's id (a UUID), as events name it (`actorId`).
    pub id: ID,
    pub name: String,
    /// The workspaces it takes work from.
    pub workspace_ids: Vec<ID>,
    /// The kinds it takes; null: every kind.
    pub kinds: Option<Vec<AgentTaskKind>>,
    /// Whether Mosaic started it in a container (`agent_tasks.container_profiles`).
    pub container: bool,
    /// The user who made it; null for a container agent.
    pub created_by: Option<ID>,
    pub created_at: OffsetDateTime,
    /// Its last call (recorded at most once a minute).
    pub last_seen_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

type Row = (
    Uuid,
    String,
    Option<Vec<String>>,
    bool,
    Option<Uuid>,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    Option<Vec<Uuid>>,
);

/// `agentTokens` (its resolver is `AgentTaskQuery`'s).
pub(super) async fn list(
    rc: &RequestContext,
    workspace_id: ID,
    include_revoked: Option<bool>,
    first: Option<i32>,
) -> AppResult<Vec<AgentToken>> {
    rc.user()?;
    let ws = rc.local_id_of("workspaceId", &workspace_id, Kind::Workspace)?;
    let first = rc.page_size(first)?;
    workspaces::require_visible(rc, ws).await?;
    let mut conn = rc.db.conn().await?;
    let admin: bool = sqlx::query_scalar("SELECT $1 = ANY (admin_workspace_ids())")
        .bind(ws)
        .fetch_one(&mut *conn)
        .await?;
    if !admin {
        return Err(AppError::Forbidden(
            "only owners and admins of the workspace see its agent tokens".into(),
        ));
    }
    let rows: Vec<Row> = sqlx::query_as("SELECT * FROM agent_tokens_of($1, $2, $3)")
        .bind(ws)
        .bind(include_revoked.unwrap_or(false))
        .bind(first as i32)
        .fetch_all(&mut *conn)
        .await?;
    drop(conn);
    rows.into_iter()
        .map(
            |(id, name, kinds, container, created_by, created_at, last_seen_at, revoked_at, workspaces)| {
                Ok(AgentToken {
                    id: ID(id.to_string()),
                    name,
                    workspace_ids: workspaces
                        .unwrap_or_default()
                        .into_iter()
                        .map(|w| rc.global_id(Kind::Workspace, w))
                        .collect(),
                    kinds: kinds
                        .map(|k| k.iter().map(|s| AgentTaskKind::from_db(s)).collect::<AppResult<_>>())
                        .transpose()?,
                    container,
                    created_by: created_by.map(|u| rc.global_id(Kind::User, u)),
                    created_at,
                    last_seen_at,
                    revoked_at,
                })
            },
        )
        .collect()
}

/// `startAgent` (its resolver is `AgentTaskMutation`'s).
pub(super) async fn start(rc: &RequestContext, workspace_id: ID, kind: AgentTaskKind) -> async_graphql::Result<ID> {
    rc.user()?;
    let ws = rc.local_id_of("workspaceId", &workspace_id, Kind::Workspace)?;
    workspaces::require_visible(rc, ws).await?;
    super::mutations::require_admin(rc, ws).await?;
    let dispatcher = super::dispatch::of(rc.instance_id)
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("no dispatcher for this instance")))?;
    match dispatcher.start_explicitly(ws, kind.as_db()).await {
            Ok(agent) => Ok(ID(agent.to_string())),
            Err(StartRefusal::NoProfile) => Err(AppError::invalid(
                "AGENT_PROFILE_MISSING",
                format!("kind: no agent profile for {} (agent_tasks.container_profiles)", kind.as_db()),
            )
            .into()),
            Err(StartRefusal::AtCap(cap)) => Err(AppError::Limit {
                code: "AGENT_LIMIT_REACHED",
                message: format!(
                    "this instance already runs {cap} container agents, its limit (agent_tasks.max_running); try again later"
                ),
            }
            .into()),
            Err(StartRefusal::Failed(e)) => {
                tracing::warn!(error = %e, "an explicitly started container agent did not start");
                Err(async_graphql::Error::new(format!("the agent did not start: {e}"))
                    .extend_with(|_, ext| ext.set("code", "AGENT_START_FAILED")))
            }
        }
}

/// `revokeAgentToken` (its resolver is `AgentTaskMutation`'s).
pub(super) async fn revoke(rc: &RequestContext, id: ID) -> AppResult<bool> {
    rc.user()?;
    let agent: Uuid = id
        .parse()
        .map_err(|_| AppError::BadInput("id: an agent token's id (a UUID)".into()))?;
    let revoked: Option<(Option<OffsetDateTime>, bool, i32)> = sqlx::query_as("SELECT * FROM agent_token_revoke($1)")
        .bind(agent)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
    let Some((_, container, _)) = revoked else {
        return Err(AppError::NotFound("agent token".into()));
    };
    if container {
        super::dispatch::stop_agent_container(&rc.agents, agent);
    }
    Ok(true)
}
