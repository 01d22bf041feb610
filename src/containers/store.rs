//! The agent tables. Everything about one user runs in a transaction scoped
//! to that user (`mosaic.user_id`), so RLS lets it touch only that user's
//! rows; the instance-wide listing goes through the `agents_overview()`
//! definer function.

use sqlx::{PgPool, Postgres, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::AgentError;
use super::lifecycle::{ContainerSpec, Observed};
use crate::config::AgentSettings;
use crate::secrets::Sealer;

/// A transaction acting as `user_id`.
pub async fn scoped(pool: &PgPool, user_id: Uuid) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('mosaic.user_id', $1, true)")
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

pub async fn seed_config(pool: &PgPool, settings: &AgentSettings) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT agent_config_seed($1, $2, $3)")
        .bind(&settings.image)
        .bind(i32::from(settings.port))
        .bind(settings.idle_timeout.as_secs().min(i32::MAX as u64) as i32)
        .execute(pool)
        .await?;
    Ok(())
}

/// The associated data a secret is sealed with: it cannot be moved to another user or name.
pub fn secret_context(user_id: Uuid, name: &str) -> Vec<u8> {
    format!("agent-secret:{user_id}:{name}").into_bytes()
}

/// Makes sure the user has an agent row (in the caller's scoped transaction).
pub async fn ensure_row(conn: &mut sqlx::PgConnection, user_id: Uuid, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO agents (user_id, container_name) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING")
        .bind(user_id)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// The user's effective configuration version; None before the user's first start.
pub async fn desired_version(pool: &PgPool, user_id: Uuid) -> Result<Option<i64>, AgentError> {
    let mut tx = scoped(pool, user_id).await?;
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT greatest(a.settings_version, c.version) FROM agents a CROSS JOIN agent_config c WHERE a.user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(v)
}

/// Who manages a user's agent now: the replica holding its lease, if the lease is live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    This,
    Other,
    Nobody,
}

/// What a request needs to know before it uses a user's agent.
pub struct Managed {
    pub manager: Manager,
    /// The effective configuration version; None before the user's first start.
    pub desired_version: Option<i64>,
    /// The published port of a running container built from `desired_version`.
    pub current_port: Option<u16>,
}

/// The user's agent as `replica` sees it (one query).
pub async fn managed(pool: &PgPool, user_id: Uuid, replica: Uuid) -> Result<Managed, AgentError> {
    let mut tx = scoped(pool, user_id).await?;
    let row: Option<(i64, Option<Uuid>, bool, Option<i32>)> = sqlx::query_as(
        "SELECT greatest(a.settings_version, c.version), a.managed_by, coalesce(a.lease_until > now(), false),
                CASE WHEN a.status = 'RUNNING' AND a.running_version = greatest(a.settings_version, c.version)
                     THEN a.host_port END
         FROM agents a CROSS JOIN agent_config c WHERE a.user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(match row {
        None => Managed {
            manager: Manager::Nobody,
            desired_version: None,
            current_port: None,
        },
        Some((desired, holder, live, port)) => Managed {
            manager: match holder {
                Some(h) if live && h == replica => Manager::This,
                Some(_) if live => Manager::Other,
                _ => Manager::Nobody,
            },
            desired_version: Some(desired),
            current_port: port.and_then(|p| u16::try_from(p).ok()),
        },
    })
}

/// The outcome of asking for a user's agent lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// This replica held it and still does, for `ttl` more.
    Renewed,
    /// This replica holds it now; before, nobody did (or a lapsed holder).
    Taken,
    /// Another replica holds it.
    Refused,
}

/// Takes or renews the lease on the user's agent for `ttl` (creating the
/// agent row if needed), unless another replica holds a live one.
pub async fn lease(
    pool: &PgPool,
    user_id: Uuid,
    container_name: &str,
    replica: Uuid,
    ttl: std::time::Duration,
) -> Result<Lease, AgentError> {
    let mut tx = scoped(pool, user_id).await?;
    ensure_row(&mut tx, user_id, container_name).await?;
    let renewed: Option<bool> = sqlx::query_scalar(
        "WITH before AS (
             SELECT managed_by = $2 AND lease_until > now() AS held FROM agents WHERE user_id = $1 FOR UPDATE
         )
         UPDATE agents a SET managed_by = $2, lease_until = now() + make_interval(secs => $3)
         FROM before
         WHERE a.user_id = $1 AND (a.managed_by IS NULL OR a.managed_by = $2 OR a.lease_until <= now())
         RETURNING coalesce(before.held, false)",
    )
    .bind(user_id)
    .bind(replica)
    .bind(ttl.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(match renewed {
        Some(true) => Lease::Renewed,
        Some(false) => Lease::Taken,
        None => Lease::Refused,
    })
}

/// Lets the lease go: `replica`'s only, or whoever holds it (None: the agent
/// was stopped on purpose, so nobody manages it any more).
pub async fn release(pool: &PgPool, user_id: Uuid, replica: Option<Uuid>) -> Result<(), AgentError> {
    let mut tx = scoped(pool, user_id).await?;
    sqlx::query(
        "UPDATE agents SET managed_by = NULL, lease_until = NULL
         WHERE user_id = $1 AND managed_by IS NOT NULL AND ($2::uuid IS NULL OR managed_by = $2)",
    )
    .bind(user_id)
    .bind(replica)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub struct Desired {
    pub spec: ContainerSpec,
    pub health_path: String,
}

/// Builds the user's container spec: instance config, the user's settings,
/// and the user's secrets, opened.
pub async fn desired(pool: &PgPool, sealer: &Sealer, user_id: Uuid, name: &str) -> Result<Desired, AgentError> {
    let mut tx = scoped(pool, user_id).await?;
    ensure_row(&mut tx, user_id, name).await?;
    let row = sqlx::query(
        "SELECT c.image, c.command, c.env AS c_env, c.port, c.health_path, c.memory_bytes, c.nano_cpus,
                c.pids_limit, c.read_only_rootfs, a.env AS a_env,
                greatest(a.settings_version, c.version) AS version
         FROM agents a CROSS JOIN agent_config c WHERE a.user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    let secrets: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT name, sealed FROM agent_secrets WHERE user_id = $1 ORDER BY name")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;

    let mut env: Vec<String> = Vec::new();
    for column in ["c_env", "a_env"] {
        let map: serde_json::Value = row.try_get(column)?;
        if let Some(map) = map.as_object() {
            for (k, v) in map {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                env.push(format!("{k}={v}"));
            }
        }
    }
    for (secret_name, sealed) in secrets {
        match sealer.open(&sealed, &secret_context(user_id, &secret_name)) {
            Ok(value) => env.push(format!("{secret_name}={}", String::from_utf8_lossy(&value))),
            // Never the value; the name is enough to act on.
            Err(_) => tracing::error!(user = %user_id, secret = %secret_name, "cannot open an agent secret; left out"),
        }
    }
    env.push(format!("MOSAIC_AGENT_USER={user_id}"));
    let port: i32 = row.try_get("port")?;
    Ok(Desired {
        spec: ContainerSpec {
            name: name.to_string(),
            user_id,
            version: row.try_get("version")?,
            image: row.try_get("image")?,
            command: row.try_get("command")?,
            env,
            port: u16::try_from(port).unwrap_or(8080),
            memory_bytes: row.try_get("memory_bytes")?,
            nano_cpus: row.try_get("nano_cpus")?,
            pids_limit: row.try_get("pids_limit")?,
            read_only_rootfs: row.try_get("read_only_rootfs")?,
        },
        health_path: row.try_get("health_path")?,
    })
}

pub async fn record_running(pool: &PgPool, user_id: Uuid, o: &Observed, version: i64) -> Result<(), AgentError> {
    let mut tx = scoped(pool, user_id).await?;
    sqlx::query(
        "UPDATE agents SET status = 'RUNNING', container_id = $2, host_port = $3, running_version = $4,
                started_at = coalesce($5, now()), last_active_at = now(), last_error = NULL
         WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(&o.id)
    .bind(o.host_port.map(i32::from))
    .bind(version)
    .bind(o.started_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn record_stopped(
    pool: &PgPool,
    user_id: Uuid,
    last_active: Option<OffsetDateTime>,
) -> Result<(), AgentError> {
    let mut tx = scoped(pool, user_id).await?;
    sqlx::query(
        "UPDATE agents SET status = 'STOPPED', host_port = NULL, stopped_at = now(),
                last_active_at = greatest(last_active_at, $2)
         WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(last_active)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A failed start; `status` None leaves the status as it was (engine unreachable).
pub async fn record_error(pool: &PgPool, user_id: Uuid, status: Option<&str>, message: &str) -> Result<(), AgentError> {
    let mut tx = scoped(pool, user_id).await?;
    sqlx::query("UPDATE agents SET status = coalesce($2, status), last_error = $3 WHERE user_id = $1")
        .bind(user_id)
        .bind(status)
        .bind(message)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn record_activity(pool: &PgPool, user_id: Uuid, at: OffsetDateTime) -> Result<(), AgentError> {
    let mut tx = scoped(pool, user_id).await?;
    sqlx::query("UPDATE agents SET last_active_at = greatest(last_active_at, $2) WHERE user_id = $1")
        .bind(user_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Reconciliation: what the engine says about a known container.
pub async fn record_adopted(pool: &PgPool, user_id: Uuid, o: Option<&Observed>) -> Result<(), AgentError> {
    let mut tx = scoped(pool, user_id).await?;
    match o {
        Some(o) if o.running => {
            sqlx::query(
                "UPDATE agents SET status = 'RUNNING', container_id = $2, host_port = $3, running_version = $4,
                        started_at = coalesce($5, started_at), last_active_at = coalesce(last_active_at, now())
                 WHERE user_id = $1",
            )
            .bind(user_id)
            .bind(&o.id)
            .bind(o.host_port.map(i32::from))
            .bind(o.version)
            .bind(o.started_at)
            .execute(&mut *tx)
            .await?;
        }
        Some(o) => {
            sqlx::query(
                "UPDATE agents SET status = 'STOPPED', container_id = $2, host_port = NULL, running_version = $3,
                        stopped_at = coalesce(stopped_at, now())
                 WHERE user_id = $1",
            )
            .bind(user_id)
            .bind(&o.id)
            .bind(o.version)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query(
                "UPDATE agents SET status = 'STOPPED', container_id = NULL, host_port = NULL, running_version = NULL,
                        stopped_at = CASE WHEN status = 'STOPPED' THEN stopped_at ELSE now() END,
                        managed_by = NULL, lease_until = NULL
                 WHERE user_id = $1",
            )
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// One agent of the instance, as `agents_overview()` lists it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OverviewRow {
    pub user_id: Uuid,
    pub email: String,
    pub container_name: String,
    pub container_id: Option<String>,
    pub status: String,
    pub host_port: Option<i32>,
    pub running_version: Option<i64>,
    pub desired_version: i64,
    pub idle_timeout_s: i32,
    pub started_at: Option<OffsetDateTime>,
    pub stopped_at: Option<OffsetDateTime>,
    pub last_active_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    /// The replica holding the lease, and whether the lease is still live.
    pub managed_by: Option<Uuid>,
    pub lease_live: bool,
}

pub async fn overview(conn: impl sqlx::PgExecutor<'_>) -> Result<Vec<OverviewRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM agents_overview()").fetch_all(conn).await
}
