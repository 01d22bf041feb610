//! The worker API (`docs/WORKER_API.md`): what agents call, with their
//! agent token, to claim tasks and report on the ones they hold. Bodies
//! are JSON; every refusal is `{"errors": [{"message", "extensions":
//! {"code", "status"?}}]}` with its own code. The queue's rules are in
//! `agent_tasks::queue`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{AppState, error_response_with};
use crate::agent_tasks::mutations::TOKEN_PREFIX;
use crate::agent_tasks::queue::{Claimed, Queue, Refusal, Report};
use crate::graphql::ids::{GlobalId, Kind};

/// The longest error text a failure report may carry.
const MAX_ERROR_CHARS: usize = 2000;
/// The most usage one report may add, per counter.
const MAX_USAGE: i64 = 1_000_000_000;

fn refuse(r: Refusal) -> Response {
    let mut extensions = serde_json::Map::new();
    if let Some(status) = &r.task_status {
        extensions.insert("status".into(), json!(status));
    }
    let mut response = error_response_with(r.status, r.code, r.message, extensions);
    if r.status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn queue(state: &AppState) -> Queue {
    Queue::new(
        state.pool.clone(),
        state.config.agent_tasks.clone(),
        state.config.statement_timeout,
        state.live.clone(),
    )
}

/// The agent behind the request's agent token.
async fn agent(queue: &Queue, pool: &sqlx::PgPool, headers: &HeaderMap) -> Result<Uuid, Refusal> {
    let unauthenticated = |m: &str| Refusal::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", m);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(TOKEN_PREFIX))
        .ok_or_else(|| unauthenticated("send Authorization: Bearer <agent token> (createAgentToken)"))?;
    if let Some(agent) = queue.authenticate(token).await? {
        return Ok(agent);
    }
    let revoked: bool = sqlx::query_scalar("SELECT agent_token_revoked($1)")
        .bind(crate::auth::tokens::hash(token))
        .fetch_one(pool)
        .await?;
    Err(if revoked {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "AGENT_TOKEN_REVOKED",
            "this agent token was revoked (revokeAgentToken): stop",
        )
    } else {
        unauthenticated("unknown agent token")
    })
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| Refusal::bad(format!("body: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClaimBody {
    #[serde(default)]
    wait_ms: u64,
}

fn claimed(state: &AppState, task: Claimed, heartbeat: Duration) -> Value {
    let id = |kind, local| GlobalId::new(kind, state.instance_id, local).to_id().0;
    json!({
        "task": {
            "id": id(Kind::AgentTask, task.id),
            "workspaceId": id(Kind::Workspace, task.workspace_id),
            "title": task.title,
            "kind": task.kind,
            "priority": task.priority,
            "instructions": task.instructions,
            "attempt": task.attempt,
            "maxAttempts": task.max_attempts,
            "checkpoint": task.checkpoint,
            "checkpointStep": task.checkpoint_step,
        },
        "heartbeatIntervalMs": (heartbeat / 3).as_millis() as u64,
    })
}

/// `POST /worker/claim {"waitMs"}`: 200 with a task, 204 when the wait
/// ends with none, 429 AGENT_LIMIT_REACHED when it ends at the cap.
pub async fn claim(State(state): State<AppState>, headers: HeaderMap, bytes: Bytes) -> Response {
    let queue = queue(&state);
    let done = async {
        let agent = agent(&queue, &state.pool, &headers).await?;
        let b: ClaimBody = if bytes.is_empty() {
            ClaimBody { wait_ms: 0 }
        } else {
            body(&bytes)?
        };
        queue.claim(agent, Duration::from_millis(b.wait_ms)).await
    };
    match done.await {
        Ok(Some(task)) => Json(claimed(&state, task, queue.settings().heartbeat_timeout)).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => refuse(r),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Held {
    attempt: i32,
    #[serde(default)]
    step: Option<i32>,
    #[serde(default)]
    checkpoint: Option<Value>,
    #[serde(default)]
    tokens: Option<i64>,
    #[serde(default)]
    cost: Option<i64>,
    #[serde(default)]
    agent_ms: Option<i64>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

/// What the body of `what` must hold.
fn report_of(what: &str, b: Held) -> Result<Report, Refusal> {
    let usage = |field: &str, v: Option<i64>| match v.unwrap_or(0) {
        n if (0..=MAX_USAGE).contains(&n) => Ok(n),
        _ => Err(Refusal::bad(format!("{field}: a whole number from 0 to {MAX_USAGE}"))),
    };
    Ok(match what {
        "heartbeat" => Report::Heartbeat,
        "checkpoint" => Report::Checkpoint {
            step: match b.step {
                Some(s) if s < 0 => return Err(Refusal::bad("step: not negative")),
                s => s,
            },
            checkpoint: b.checkpoint.ok_or_else(|| Refusal::bad("checkpoint: required"))?,
        },
        "usage" => Report::Usage {
            tokens: usage("tokens", b.tokens)?,
            cost: usage("cost", b.cost)?,
            agent_ms: usage("agentMs", b.agent_ms)?,
        },
        "complete" => Report::Complete {
            result: b.result.unwrap_or(Value::Null),
        },
        "fail" => {
            let error = b.error.ok_or_else(|| Refusal::bad("error: required"))?;
            if error.chars().count() > MAX_ERROR_CHARS || error.contains('\0') {
                return Err(Refusal::bad(format!(
                    "error: at most {MAX_ERROR_CHARS} characters, no NUL"
                )));
            }
            Report::Fail { error }
        }
        _ => {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such worker call (heartbeat, checkpoint, usage, complete, fail)",
            ));
        }
    })
}

/// `POST /worker/tasks/{id}/{heartbeat|checkpoint|usage|complete|fail}`:
/// 200 `{"status"}` (the task's status after it).
pub async fn report(
    State(state): State<AppState>,
    Path((id, what)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let queue = queue(&state);
    let done = async {
        let agent = agent(&queue, &state.pool, &headers).await?;
        let task = GlobalId::local(&id, Kind::AgentTask, state.instance_id).map_err(|e| Refusal::bad(e.message()))?;
        let held: Held = body(&bytes)?;
        let attempt = held.attempt;
        let report = report_of(&what, held)?;
        queue.report(agent, task, attempt, report).await
    };
    match done.await {
        Ok(status) => Json(json!({ "status": status })).into_response(),
        Err(r) => refuse(r),
    }
}
