//! The queue as agents see it (the worker API, `docs/WORKER_API.md`):
//! claim, heartbeat, checkpoint, usage, complete, fail. Each call is one
//! transaction in the agent's scope (`mosaic.agent_id`), so the policies of
//! migration 0063 let it touch only queued tasks of its workspaces and the
//! tasks it holds; every refusal has its own code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::config::AgentTaskSettings;
use crate::live::Live;

/// A refusal of the worker API: its HTTP status, code and message, and the
/// task's status where that is what the agent must know.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub task_status: Option<String>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            task_status: None,
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_USER_INPUT", message)
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            // A statement or lock timeout (the claim's lock waits at most as long).
            && matches!(db.code().as_deref(), Some("57014" | "55P03"))
        {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TIMEOUT",
                "the database did not answer in time",
            );
        }
        tracing::error!(error = %e, "worker API");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "internal error",
        )
    }
}

/// A task handed to an agent.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub title: String,
    pub kind: String,
    pub priority: i16,
    pub instructions: Value,
    pub attempt: i32,
    pub max_attempts: i32,
    pub checkpoint: Option<Value>,
    pub checkpoint_step: Option<i32>,
}

enum Attempt {
    Claimed(Claimed),
    /// Nothing claimable now: whether the cap was the reason, and when the
    /// next delayed retry becomes claimable.
    Nothing {
        at_cap: bool,
        next_due: Option<Duration>,
    },
}

/// The delay before retry number `attempt` (1 for the first): doubling from
/// `base`, at most `max`, of which a random half (jitter) so that tasks
/// failed together do not return together.
pub fn backoff(attempt: i32, base: Duration, max: Duration, unit_random: f64) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempt.clamp(1, 31).saturating_sub(1).min(30));
    let full = doubled.min(max);
    full.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
}

/// What an agent's call changes on a task it holds.
pub enum Report {
    Heartbeat,
    Checkpoint { step: Option<i32>, checkpoint: Value },
    Usage { tokens: i64, cost: i64, agent_ms: i64 },
    Complete { result: Value },
    Fail { error: String },
}

pub struct Queue {
    pool: PgPool,
    settings: AgentTaskSettings,
    statement_timeout: Duration,
    live: Arc<Live>,
}

impl Queue {
    pub fn new(pool: PgPool, settings: AgentTaskSettings, statement_timeout: Duration, live: Arc<Live>) -> Self {
        Self {
            pool,
            settings,
            statement_timeout,
            live,
        }
    }

    pub fn settings(&self) -> &AgentTaskSettings {
        &self.settings
    }

    /// The agent an agent token names, if it is valid.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Uuid>, Refusal> {
        Ok(sqlx::query_scalar("SELECT authenticate_task_agent($1)")
            .bind(crate::auth::tokens::hash(token))
            .fetch_one(&self.pool)
            .await?)
    }

    /// A transaction in `agent`'s scope. The values are written into the
    /// text: a UUID and a number only.
    async fn begin(&self, agent: Uuid) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool
            .begin_with(AssertSqlSafe(format!(
                "BEGIN; SELECT set_config('mosaic.agent_id', '{agent}', true), \
                 set_config('statement_timeout', '{}', true)",
                self.statement_timeout.as_millis()
            )))
            .await
    }

    /// The next task for `agent`, waiting up to `wait` (capped by
    /// `max_claim_wait`) for one: woken by the listener when work is queued
    /// or a slot frees, or when a delayed retry falls due. None when the
    /// wait ends with nothing to do; AGENT_LIMIT_REACHED when it ends with
    /// the instance at its cap.
    pub async fn claim(&self, agent: Uuid, wait: Duration) -> Result<Option<Claimed>, Refusal> {
        let deadline = Instant::now() + wait.min(self.settings.max_claim_wait);
        let closing = self.live.closing();
        tokio::pin!(closing);
        loop {
            let wake = self.live.agent_task_queue().clone();
            let woken = wake.notified();
            tokio::pin!(woken);
            // Registered before looking, so an announcement made meanwhile is not lost.
            woken.as_mut().enable();
            let (at_cap, next_due) = match self.try_claim(agent).await? {
                Attempt::Claimed(task) => return Ok(Some(task)),
                Attempt::Nothing { at_cap, next_due } => (at_cap, next_due),
            };
            let now = Instant::now();
            if now >= deadline {
                if at_cap {
                    return Err(Refusal::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "AGENT_LIMIT_REACHED",
                        format!(
                            "this instance already runs {} agent tasks, its limit (agent_tasks.max_running); try again later",
                            self.settings.max_running
                        ),
                    ));
                }
                return Ok(None);
            }
            let mut until = deadline;
            if let Some(due) = next_due {
                until = until.min(now + due);
            }
            if !*self.live.listening().borrow() {
                // Announcements are not heard now: look again soon instead.
                until = until.min(now + Duration::from_millis(500));
            }
            let _waiting = self.live.agent_claim_waits();
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(until.into()) => {}
                () = &mut closing => return Ok(None),
            }
        }
    }

    /// One look, one round trip: `agent_task_claim` (migration 0065) picks
    /// and claims under the lock that keeps the cap, fair across workspaces,
    /// then by priority and age.
    async fn try_claim(&self, agent: Uuid) -> Result<Attempt, Refusal> {
        let r = sqlx::query("SELECT * FROM agent_task_claim($1, $2, $3)")
            .bind(agent)
            .bind(self.settings.max_running as i64)
            .bind(self.statement_timeout.as_millis().min(i32::MAX as u128) as i32)
            .fetch_one(&self.pool)
            .await?;
        let Some(id) = r.try_get::<Option<Uuid>, _>("id")? else {
            let due_ms: Option<f64> = r.try_get("next_due_ms")?;
            return Ok(Attempt::Nothing {
                at_cap: r.try_get("at_cap")?,
                next_due: due_ms.map(|ms| Duration::from_millis(ms.max(1.0) as u64)),
            });
        };
        Ok(Attempt::Claimed(Claimed {
            id,
            workspace_id: r.try_get("workspace_id")?,
            title: r.try_get("title")?,
            kind: r.try_get("kind")?,
            priority: r.try_get("priority")?,
            instructions: r.try_get("instructions")?,
            attempt: r.try_get("attempts")?,
            max_attempts: r.try_get("max_attempts")?,
            checkpoint: r.try_get("checkpoint")?,
            checkpoint_step: r.try_get("checkpoint_step")?,
        }))
    }

    /// Applies an agent's report on task `task` of attempt `attempt`, which
    /// it must hold; returns the task's status after it.
    pub async fn report(&self, agent: Uuid, task: Uuid, attempt: i32, report: Report) -> Result<String, Refusal> {
        if let Report::Checkpoint { checkpoint: v, .. } | Report::Complete { result: v } = &report {
            let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
            if size > self.settings.max_checkpoint_bytes {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "CHECKPOINT_TOO_LARGE",
                    format!(
                        "{size} bytes of JSON, more than the limit of {} (agent_tasks.max_checkpoint_bytes)",
                        self.settings.max_checkpoint_bytes
                    ),
                ));
            }
        }
        let mut tx = self.begin(agent).await?;
        const HELD: &str = "WHERE id = $1 AND attempts = $2 AND agent_id = current_agent_id()
                            AND status IN ('ASSIGNED', 'RUNNING')";
        const RUNNING: &str = "status = 'RUNNING',
            status_reason = CASE WHEN status = 'ASSIGNED' THEN 'started' ELSE status_reason END,
            heartbeat_at = clock_timestamp()";
        let sql = match &report {
            Report::Heartbeat => {
                format!("UPDATE agent_tasks SET {RUNNING} {HELD} RETURNING status, attempts, max_attempts")
            }
            Report::Checkpoint { .. } => format!(
                "UPDATE agent_tasks SET {RUNNING}, checkpoint = $3, checkpoint_step = $4 {HELD}
                 RETURNING status, attempts, max_attempts"
            ),
            Report::Usage { .. } => format!(
                "UPDATE agent_tasks SET {RUNNING}, usage_tokens = usage_tokens + $3, usage_cost = usage_cost + $4,
                     usage_agent_ms = usage_agent_ms + $5 {HELD} RETURNING status, attempts, max_attempts"
            ),
            Report::Complete { .. } => format!(
                "UPDATE agent_tasks SET status = 'COMPLETED', status_reason = 'completed', result = $3,
                     finished_at = clock_timestamp() {HELD} RETURNING status, attempts, max_attempts"
            ),
            Report::Fail { .. } => format!(
                "UPDATE agent_tasks SET status = 'FAILED', status_reason = $3, error = $3 {HELD}
                 RETURNING status, attempts, max_attempts"
            ),
        };
        let query = sqlx::query(AssertSqlSafe(sql)).bind(task).bind(attempt);
        let query = match &report {
            Report::Heartbeat => query,
            Report::Checkpoint { step, checkpoint } => query.bind(checkpoint).bind(step),
            Report::Usage { tokens, cost, agent_ms } => query.bind(tokens).bind(cost).bind(agent_ms),
            Report::Complete { result } => query.bind(result),
            Report::Fail { error } => query.bind(error),
        };
        let Some(row) = query.fetch_optional(&mut *tx).await? else {
            return Err(self.why_not_held(&mut tx, task).await?);
        };
        let mut status: String = row.try_get("status")?;
        let mut over_budget = false;
        match &report {
            Report::Fail { .. } => {
                let (attempts, max): (i32, i32) = (row.try_get("attempts")?, row.try_get("max_attempts")?);
                status = self.after_failure(&mut tx, task, attempts, max).await?;
            }
            Report::Usage { tokens, cost, agent_ms } => {
                over_budget = sqlx::query_scalar("SELECT agent_budget_charge($1, $2, $3, $4)")
                    .bind(task)
                    .bind(tokens)
                    .bind(cost)
                    .bind(agent_ms)
                    .fetch_one(&mut *tx)
                    .await?;
            }
            Report::Checkpoint { .. } => {
                over_budget = self.stop_if_over_budget(&mut tx, task).await?;
                if over_budget {
                    status = "QUEUED".into();
                }
            }
            Report::Heartbeat | Report::Complete { .. } => {}
        }
        tx.commit().await?;
        if over_budget {
            return Err(Refusal {
                task_status: Some(status.clone()),
                ..Refusal::new(
                    StatusCode::CONFLICT,
                    "BUDGET_EXCEEDED",
                    if status == "QUEUED" {
                        "a budget covering this task has no headroom: the checkpoint is saved and the task \
                         is queued again, to resume from it once the budget allows; stop working on it"
                    } else {
                        "a budget covering this task has no headroom (the usage is counted): save a \
                         checkpoint now, then stop"
                    },
                )
            });
        }
        Ok(status)
    }

    /// After a checkpoint: a task that a budget without headroom covers goes
    /// back to the queue (to resume from this checkpoint), without counting
    /// as a failure. Whether it did.
    async fn stop_if_over_budget(&self, tx: &mut Transaction<'static, Postgres>, task: Uuid) -> Result<bool, Refusal> {
        let stopped: Option<Uuid> = sqlx::query_scalar(
            "UPDATE agent_tasks SET status = 'QUEUED', agent_id = NULL, heartbeat_at = NULL,
                 run_after = clock_timestamp(),
                 status_reason = 'BUDGET_EXCEEDED: stopped after its checkpoint; resumes when its budget has headroom'
             WHERE id = $1 AND agent_budget_exhausted(workspace_id, project_id, created_by)
             RETURNING id",
        )
        .bind(task)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(stopped.is_some())
    }

    /// A failed attempt: queued again after a backoff, or DEAD after the last.
    async fn after_failure(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        task: Uuid,
        attempts: i32,
        max: i32,
    ) -> Result<String, Refusal> {
        if attempts >= max {
            sqlx::query(
                "UPDATE agent_tasks SET status = 'DEAD', status_reason = $2, finished_at = clock_timestamp()
                 WHERE id = $1",
            )
            .bind(task)
            .bind(format!("failed on its last attempt ({attempts} of {max})"))
            .execute(&mut **tx)
            .await?;
            return Ok("DEAD".into());
        }
        let delay = backoff(
            attempts,
            self.settings.retry_base,
            self.settings.retry_max,
            rand::random::<f64>(),
        );
        sqlx::query(
            "UPDATE agent_tasks SET status = 'QUEUED', agent_id = NULL, heartbeat_at = NULL,
                 run_after = clock_timestamp() + $2 * interval '1 millisecond', status_reason = $3
             WHERE id = $1",
        )
        .bind(task)
        .bind(delay.as_millis() as f64)
        .bind(format!("retry {} of {max} in {} ms", attempts + 1, delay.as_millis()))
        .execute(&mut **tx)
        .await?;
        Ok("QUEUED".into())
    }

    /// Why an agent's report on `task` changed nothing.
    async fn why_not_held(&self, tx: &mut Transaction<'static, Postgres>, task: Uuid) -> Result<Refusal, Refusal> {
        let row: Option<(String, Option<bool>)> =
            sqlx::query_as("SELECT status, agent_id = current_agent_id() FROM agent_tasks WHERE id = $1")
                .bind(task)
                .fetch_optional(&mut **tx)
                .await?;
        Ok(match row {
            None => Refusal::new(
                StatusCode::NOT_FOUND,
                "TASK_NOT_FOUND",
                "no such task in the workspaces this agent serves",
            ),
            Some((status, Some(true))) if status == "COMPLETED" => Refusal {
                task_status: Some(status),
                ..Refusal::new(
                    StatusCode::CONFLICT,
                    "TASK_ALREADY_COMPLETED",
                    "this task was completed already; the first completion stands",
                )
            },
            Some((status, Some(false))) => Refusal {
                task_status: Some(status),
                ..Refusal::new(
                    StatusCode::FORBIDDEN,
                    "AGENT_TASK_NOT_YOURS",
                    "this task is held by another agent",
                )
            },
            Some((status, _)) => Refusal {
                message: format!(
                    "this agent does not hold this task (attempt) any more; it is {status}: stop working on it"
                ),
                task_status: Some(status),
                ..Refusal::new(StatusCode::CONFLICT, "TASK_NOT_HELD", "")
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, base, max, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(4, base, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(4, base, max, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(30, base, max, 1.0), max);
        assert_eq!(backoff(1000, base, max, 0.0), max / 2);
        assert!(backoff(3, base, max, 0.5) > backoff(3, base, max, 0.0));
    }
}
