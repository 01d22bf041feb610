//! The caller's own agent container (status, start, stop, secrets) and the
//! instance administrators' view of every agent and of the agent configuration.
//! Secret values go in and never come out.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::containers::store;
use crate::error::AppError;
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AgentStatus {
    Stopped,
    Starting,
    Running,
    Failed,
}

impl AgentStatus {
    fn from_db(s: &str) -> Self {
        match s {
            "STARTING" => Self::Starting,
            "RUNNING" => Self::Running,
            "FAILED" => Self::Failed,
            _ => Self::Stopped,
        }
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Agent {
    pub status: AgentStatus,
    pub started_at: Option<OffsetDateTime>,
    pub stopped_at: Option<OffsetDateTime>,
    pub last_active_at: Option<OffsetDateTime>,
    /// The configuration version the container was built from (null: none built yet).
    pub config_version: Option<i64>,
    /// The version of the current configuration; a container on an older one is restarted.
    pub desired_config_version: i64,
    pub idle_timeout_seconds: i32,
    pub last_error: Option<String>,
    /// Names of the secrets set for this agent (never their values).
    pub secret_names: Vec<String>,
}

/// One agent of the instance, for its administrators.
#[derive(SimpleObject, Clone, Debug)]
pub struct AgentOverview {
    pub user_id: ID,
    pub email: String,
    pub container_name: String,
    pub status: AgentStatus,
    pub started_at: Option<OffsetDateTime>,
    pub stopped_at: Option<OffsetDateTime>,
    pub last_active_at: Option<OffsetDateTime>,
    pub config_version: Option<i64>,
    pub desired_config_version: i64,
    pub last_error: Option<String>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct AgentSecretInfo {
    pub name: String,
    pub updated_at: OffsetDateTime,
}

/// The instance's agent configuration (stored in PostgreSQL).
#[derive(SimpleObject, Clone, Debug)]
pub struct AgentConfig {
    pub image: String,
    pub command: Option<Vec<String>>,
    /// Environment variables every agent gets (not secret).
    pub env: async_graphql::Json<serde_json::Value>,
    pub port: i32,
    pub health_path: String,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
    pub read_only_rootfs: bool,
    pub idle_timeout_seconds: i32,
    pub version: i64,
    pub updated_at: OffsetDateTime,
}

/// Changes to the agent configuration; omitted fields stay as they are.
/// Any change bumps the version, and running agents are restarted on it.
#[derive(InputObject, Clone, Debug)]
pub struct UpdateAgentConfigInput {
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    /// Replaces the whole environment object: `{"NAME": "value"}`.
    pub env: Option<async_graphql::Json<serde_json::Value>>,
    pub port: Option<i32>,
    pub health_path: Option<String>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub read_only_rootfs: Option<bool>,
    pub idle_timeout_seconds: Option<i32>,
}

fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

async fn load_agent(rc: &RequestContext, user_id: Uuid) -> async_graphql::Result<Agent> {
    let mut conn = rc.db.conn().await.map_err(AppError::from)?;
    let row = sqlx::query(
        "SELECT a.status, a.started_at, a.stopped_at, a.last_active_at, a.running_version, a.last_error,
                greatest(a.settings_version, c.version) AS desired,
                coalesce(a.idle_timeout_s, c.idle_timeout_s) AS idle
         FROM agent_config c LEFT JOIN agents a ON a.user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(AppError::from)?;
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM agent_secrets WHERE user_id = $1 ORDER BY name")
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(AppError::from)?;
    let status: Option<String> = row.try_get("status").map_err(AppError::from)?;
    let db_active: Option<OffsetDateTime> = row.try_get("last_active_at").map_err(AppError::from)?;
    let memory_active = rc.agents.last_active(user_id);
    let desired: Option<i64> = row.try_get("desired").map_err(AppError::from)?;
    Ok(Agent {
        status: AgentStatus::from_db(status.as_deref().unwrap_or("STOPPED")),
        started_at: row.try_get("started_at").map_err(AppError::from)?,
        stopped_at: row.try_get("stopped_at").map_err(AppError::from)?,
        last_active_at: db_active.max(memory_active),
        config_version: row.try_get("running_version").map_err(AppError::from)?,
        desired_config_version: desired.unwrap_or_default(),
        idle_timeout_seconds: row.try_get("idle").map_err(AppError::from)?,
        last_error: row.try_get("last_error").map_err(AppError::from)?,
        secret_names: names,
    })
}

async fn load_config(rc: &RequestContext) -> async_graphql::Result<AgentConfig> {
    let mut conn = rc.db.conn().await.map_err(AppError::from)?;
    let r = sqlx::query("SELECT * FROM agent_config")
        .fetch_one(&mut *conn)
        .await
        .map_err(AppError::from)?;
    let get = |e: sqlx::Error| async_graphql::Error::from(AppError::from(e));
    Ok(AgentConfig {
        image: r.try_get("image").map_err(get)?,
        command: r.try_get("command").map_err(get)?,
        env: async_graphql::Json(r.try_get("env").map_err(get)?),
        port: r.try_get("port").map_err(get)?,
        health_path: r.try_get("health_path").map_err(get)?,
        memory_bytes: r.try_get("memory_bytes").map_err(get)?,
        nano_cpus: r.try_get("nano_cpus").map_err(get)?,
        pids_limit: r.try_get("pids_limit").map_err(get)?,
        read_only_rootfs: r.try_get("read_only_rootfs").map_err(get)?,
        idle_timeout_seconds: r.try_get("idle_timeout_s").map_err(get)?,
        version: r.try_get("version").map_err(get)?,
        updated_at: r.try_get("updated_at").map_err(get)?,
    })
}

#[derive(Default)]
pub struct AgentQuery;

#[Object]
impl AgentQuery {
    /// Your agent container: its status and timings.
    async fn my_agent(&self, ctx: &Context<'_>) -> async_graphql::Result<Agent> {
        let rc = RequestContext::of(ctx);
        let user = rc.user()?;
        load_agent(rc, user.user_id).await
    }

    /// Every agent of this instance (instance administrators only).
    async fn agents(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AgentOverview>> {
        let rc = RequestContext::of(ctx);
        rc.admin()?;
        let mut conn = rc.db.conn().await.map_err(AppError::from)?;
        let rows = store::overview(&mut *conn).await.map_err(AppError::from)?;
        Ok(rows
            .into_iter()
            .map(|r| AgentOverview {
                user_id: rc.global_id(Kind::User, r.user_id),
                email: r.email,
                container_name: r.container_name,
                status: AgentStatus::from_db(&r.status),
                started_at: r.started_at,
                stopped_at: r.stopped_at,
                last_active_at: r.last_active_at,
                config_version: r.running_version,
                desired_config_version: r.desired_version,
                last_error: r.last_error,
            })
            .collect())
    }

    /// The instance's agent configuration (instance administrators only).
    async fn agent_config(&self, ctx: &Context<'_>) -> async_graphql::Result<AgentConfig> {
        let rc = RequestContext::of(ctx);
        rc.admin()?;
        load_config(rc).await
    }

    /// The last lines of a user's agent output (instance administrators only).
    async fn agent_logs(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        #[graphql(default = 100)] tail: i32,
    ) -> async_graphql::Result<Vec<String>> {
        let rc = RequestContext::of(ctx);
        rc.admin()?;
        let user = rc.local_id(&user_id, Kind::User)?;
        let svc = &rc.agents;
        let lines = tail.clamp(1, 10_000) as usize;
        Ok(svc.lifecycle.logs_tail(&svc.container_name(user), lines).await?)
    }
}

#[derive(Default)]
pub struct AgentMutation;

#[Object]
impl AgentMutation {
    /// Starts your agent (if it is not running) and waits until it is healthy.
    async fn start_my_agent(&self, ctx: &Context<'_>) -> async_graphql::Result<Agent> {
        let rc = RequestContext::of(ctx);
        let user = rc.user()?.user_id;
        rc.agents.ensure_running(user).await?;
        load_agent(rc, user).await
    }

    /// Stops your agent; the next request to it starts it again.
    async fn stop_my_agent(&self, ctx: &Context<'_>) -> async_graphql::Result<Agent> {
        let rc = RequestContext::of(ctx);
        let user = rc.user()?.user_id;
        rc.agents.stop(user).await?;
        load_agent(rc, user).await
    }

    /// Stores a secret (e.g. a provider API key) for your agent, sealed; it is
    /// given to your container as the environment variable `name` and never
    /// shown again. A running agent is restarted with it.
    async fn set_my_agent_secret(
        &self,
        ctx: &Context<'_>,
        name: String,
        value: String,
    ) -> async_graphql::Result<AgentSecretInfo> {
        let rc = RequestContext::of(ctx);
        let user = rc.user()?.user_id;
        if !env_name_ok(&name) {
            return Err(AppError::BadInput(
                "name must be 1-64 characters of A-Z, a-z, 0-9 and '_', not starting with a digit".into(),
            )
            .into());
        }
        if value.len() > 16 * 1024 || value.contains('\0') {
            return Err(AppError::BadInput("value must be at most 16 KiB, without NUL characters".into()).into());
        }
        let svc = &rc.agents;
        let sealed = svc.seal_secret(user, &name, &value);
        let mut conn = rc.db.conn().await.map_err(AppError::from)?;
        store::ensure_row(&mut conn, user, &svc.container_name(user))
            .await
            .map_err(AppError::from)?;
        let updated_at: OffsetDateTime = sqlx::query_scalar(
            "INSERT INTO agent_secrets (user_id, name, sealed) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, name) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()
             RETURNING updated_at",
        )
        .bind(user)
        .bind(&name)
        .bind(sealed)
        .fetch_one(&mut *conn)
        .await
        .map_err(AppError::from)?;
        Ok(AgentSecretInfo { name, updated_at })
    }

    /// Removes one of your agent's secrets; true if it existed.
    async fn delete_my_agent_secret(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<bool> {
        let rc = RequestContext::of(ctx);
        let user = rc.user()?.user_id;
        let mut conn = rc.db.conn().await.map_err(AppError::from)?;
        let done = sqlx::query("DELETE FROM agent_secrets WHERE user_id = $1 AND name = $2")
            .bind(user)
            .bind(&name)
            .execute(&mut *conn)
            .await
            .map_err(AppError::from)?;
        Ok(done.rows_affected() > 0)
    }

    /// Your agent's own settings: extra environment variables (replacing the
    /// previous set; not secret, use `setMyAgentSecret` for keys) and an idle
    /// timeout no longer than the instance's. A change restarts a running agent.
    async fn update_my_agent_settings(
        &self,
        ctx: &Context<'_>,
        env: Option<async_graphql::Json<serde_json::Value>>,
        idle_timeout_seconds: Option<i32>,
    ) -> async_graphql::Result<Agent> {
        let rc = RequestContext::of(ctx);
        let user = rc.user()?.user_id;
        if let Some(env) = &env {
            let Some(map) = env.0.as_object() else {
                return Err(AppError::BadInput("env must be an object of NAME: value".into()).into());
            };
            if let Some(bad) = map.keys().find(|k| !env_name_ok(k)) {
                return Err(AppError::BadInput(format!("env: '{bad}' is not a valid variable name")).into());
            }
        }
        let svc = &rc.agents;
        {
            let mut conn = rc.db.conn().await.map_err(AppError::from)?;
            if let Some(idle) = idle_timeout_seconds {
                let max: i32 = sqlx::query_scalar("SELECT idle_timeout_s FROM agent_config")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(AppError::from)?;
                if !(1..=max).contains(&idle) {
                    return Err(AppError::BadInput(format!("idleTimeoutSeconds must be within 1..={max}")).into());
                }
            }
            store::ensure_row(&mut conn, user, &svc.container_name(user))
                .await
                .map_err(AppError::from)?;
            sqlx::query(
                "UPDATE agents SET env = coalesce($2, env), idle_timeout_s = coalesce($3, idle_timeout_s)
                 WHERE user_id = $1",
            )
            .bind(user)
            .bind(env.as_ref().map(|e| &e.0))
            .bind(idle_timeout_seconds)
            .execute(&mut *conn)
            .await
            .map_err(AppError::from)?;
        }
        load_agent(rc, user).await
    }

    /// Changes the instance's agent configuration (instance administrators only).
    async fn update_agent_config(
        &self,
        ctx: &Context<'_>,
        input: UpdateAgentConfigInput,
    ) -> async_graphql::Result<AgentConfig> {
        let rc = RequestContext::of(ctx);
        rc.admin()?;
        if let Some(env) = &input.env {
            let Some(map) = env.0.as_object() else {
                return Err(AppError::BadInput("env must be an object of NAME: value".into()).into());
            };
            if let Some(bad) = map.keys().find(|k| !env_name_ok(k)) {
                return Err(AppError::BadInput(format!("env: '{bad}' is not a valid variable name")).into());
            }
        }
        {
            let mut conn = rc.db.conn().await.map_err(AppError::from)?;
            let updated = sqlx::query(
                "UPDATE agent_config SET
                    image = coalesce($1, image),
                    command = CASE WHEN $2 THEN $3 ELSE command END,
                    env = coalesce($4, env),
                    port = coalesce($5, port),
                    health_path = coalesce($6, health_path),
                    memory_bytes = coalesce($7, memory_bytes),
                    nano_cpus = coalesce($8, nano_cpus),
                    pids_limit = coalesce($9, pids_limit),
                    read_only_rootfs = coalesce($10, read_only_rootfs),
                    idle_timeout_s = coalesce($11, idle_timeout_s)",
            )
            .bind(input.image.as_deref())
            .bind(input.command.is_some())
            .bind(input.command.as_ref())
            .bind(input.env.as_ref().map(|e| &e.0))
            .bind(input.port)
            .bind(input.health_path.as_deref())
            .bind(input.memory_bytes)
            .bind(input.nano_cpus)
            .bind(input.pids_limit)
            .bind(input.read_only_rootfs)
            .bind(input.idle_timeout_seconds)
            .execute(&mut *conn)
            .await
            .map_err(AppError::from)?;
            if updated.rows_affected() != 1 {
                return Err(AppError::Forbidden("only instance administrators may do this".into()).into());
            }
        }
        load_config(rc).await
    }
}
