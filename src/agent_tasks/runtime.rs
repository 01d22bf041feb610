//! `mosaic worker`: the reference agent. It speaks the worker API
//! (`docs/WORKER_API.md`) to one instance with one agent token: waits for a
//! task (long-poll claim), keeps a heartbeat while it works, and follows a
//! SCRIPT task's steps, resuming after the step of its last checkpoint. A
//! call that cannot reach the instance is sent again until it can (the
//! instance may be restarting); a refusal that says the task is no longer
//! this agent's stops the work on it, and so does BUDGET_EXCEEDED, after a
//! checkpoint.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Steps one script may have.
pub const MAX_STEPS: usize = 1000;
/// The longest `sleep_ms` step.
pub const MAX_SLEEP_MS: u64 = 600_000;
/// How long a claim waits for work at the instance.
const CLAIM_WAIT_MS: u64 = 20_000;

/// One step of a SCRIPT task.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Save this JSON as the task's checkpoint (a resumed task starts after it).
    Checkpoint(Value),
    SleepMs(u64),
    Usage {
        tokens: i64,
        cost: i64,
        agent_ms: i64,
    },
    /// Report the attempt failed, with this reason.
    Fail(String),
    /// Complete the task with this result.
    Complete(Value),
}

/// A SCRIPT task's instructions: `{"steps": [{"checkpoint": {...}}, {"sleep_ms": 300},
/// {"usage": {"tokens": 10}}, {"fail": "why"}, {"complete": {...}}]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub steps: Vec<Step>,
}

impl Script {
    pub fn parse(v: &Value) -> Result<Self, String> {
        let steps = v
            .get("steps")
            .and_then(Value::as_array)
            .ok_or("a SCRIPT task needs {\"steps\": [...]}")?;
        if steps.len() > MAX_STEPS {
            return Err(format!("at most {MAX_STEPS} steps"));
        }
        let steps = steps
            .iter()
            .enumerate()
            .map(|(i, s)| Self::step(s).map_err(|e| format!("steps[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { steps })
    }

    fn step(s: &Value) -> Result<Step, String> {
        let Some((name, arg)) = s.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) else {
            return Err("a step is an object with one key".into());
        };
        let count = |field: &str| -> Result<i64, String> {
            match arg.get(field) {
                None => Ok(0),
                Some(v) => v
                    .as_i64()
                    .filter(|n| (0..=1_000_000_000).contains(n))
                    .ok_or(format!("usage.{field} is a whole number from 0 to 10^9")),
            }
        };
        Ok(match name.as_str() {
            "checkpoint" => Step::Checkpoint(arg.clone()),
            "sleep_ms" => Step::SleepMs(
                arg.as_u64()
                    .filter(|n| *n <= MAX_SLEEP_MS)
                    .ok_or(format!("sleep_ms is a whole number up to {MAX_SLEEP_MS}"))?,
            ),
            "usage" if arg.is_object() => Step::Usage {
                tokens: count("tokens")?,
                cost: count("cost")?,
                agent_ms: count("agent_ms")?,
            },
            "fail" => Step::Fail(arg.as_str().ok_or("fail takes the reason, a string")?.to_string()),
            "complete" => Step::Complete(arg.clone()),
            other => {
                return Err(format!(
                    "unknown step '{other}' (checkpoint, sleep_ms, usage, fail, complete)"
                ));
            }
        })
    }
}

/// Where and as whom the worker runs.
pub struct WorkerOptions {
    pub url: String,
    pub token: String,
    /// A CA to trust besides the system's (an instance with a private CA).
    pub ca_file: Option<PathBuf>,
    /// Exit when a claim's wait ends with no work.
    pub exit_when_idle: bool,
}

/// An answer of the instance: its status and JSON body.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// POSTs until the instance answers (it may be restarting); gives up
    /// only when `stop` turns true.
    async fn post(&self, path: &str, body: &Value, stop: &mut watch::Receiver<bool>) -> Option<Answer> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let request = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(body)
                .send();
            let sent = tokio::select! {
                sent = request => sent,
                _ = stop.wait_for(|s| *s) => return None,
            };
            match sent {
                Ok(r) => {
                    let status = r.status();
                    let body = r.json().await.unwrap_or(Value::Null);
                    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                        tracing::warn!(%status, %body, path, "the instance failed; trying again");
                    } else {
                        return Some(Answer { status, body });
                    }
                }
                Err(e) => tracing::debug!(error = %e, path, "the instance cannot be reached; trying again"),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// How work on one task ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done,
    /// The task is not this agent's any more (requeued, cancelled, ...).
    Lost(String),
    /// A budget covering the task has no headroom (BUDGET_EXCEEDED).
    OverBudget,
    Stopped,
}

/// Runs until `stop` resolves: claims, works, reports.
pub async fn run(options: WorkerOptions, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let http = crate::federation::tls::http_client(options.ca_file.as_deref()).context("--ca-file")?;
    let client = Client {
        http,
        base: options.url.trim_end_matches('/').to_string(),
        token: options.token.clone(),
    };
    let (stop_tx, mut stopping) = watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        stop_tx.send_replace(true);
    });
    while !*stopping.borrow() {
        let claim = json!({ "waitMs": CLAIM_WAIT_MS });
        let Some(answer) = client.post("/worker/claim", &claim, &mut stopping).await else {
            break;
        };
        match answer.status {
            StatusCode::OK => {
                let outcome = work(&client, &answer.body, &mut stopping).await;
                tracing::info!(task = %answer.body["task"]["id"], ?outcome, "task ended");
            }
            StatusCode::NO_CONTENT if options.exit_when_idle => {
                tracing::info!("no work: exiting (--exit-when-idle)");
                break;
            }
            StatusCode::NO_CONTENT => {}
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                tokio::select! {
                    _ = stopping.wait_for(|s| *s) => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            status => anyhow::bail!("the instance refused this agent ({status}): {}", answer.body),
        }
    }
    Ok(())
}

/// Works on one claimed task until it is done, lost or the worker stops.
async fn work(client: &Client, claim: &Value, stopping: &mut watch::Receiver<bool>) -> Outcome {
    let task = &claim["task"];
    let id = task["id"].as_str().unwrap_or_default().to_string();
    let attempt = task["attempt"].as_i64().unwrap_or(0);
    let path = |what: &str| format!("/worker/tasks/{id}/{what}");
    let interval = Duration::from_millis(claim["heartbeatIntervalMs"].as_u64().unwrap_or(10_000).max(10));
    // The heartbeat runs beside the steps; a refusal of it ends the work.
    let (lost_tx, mut lost) = watch::channel(None::<String>);
    let heartbeat = {
        let (client, path, mut stopping) = (
            Client {
                http: client.http.clone(),
                base: client.base.clone(),
                token: client.token.clone(),
            },
            path("heartbeat"),
            stopping.clone(),
        );
        tokio::spawn(async move {
            loop {
                match client.post(&path, &json!({ "attempt": attempt }), &mut stopping).await {
                    None => return,
                    Some(a) if a.status.is_success() => {}
                    Some(a) => {
                        lost_tx.send_replace(Some(a.code().to_string()));
                        return;
                    }
                }
                tokio::time::sleep(interval).await;
            }
        })
    };
    let mut stop = stopping.clone();
    let steps = async {
        if task["kind"] != "SCRIPT" {
            let body = json!({ "attempt": attempt, "error": "the reference agent runs SCRIPT tasks only" });
            return report(client, &path("fail"), body, stopping).await;
        }
        let script = match Script::parse(&task["instructions"]) {
            Ok(s) => s,
            Err(e) => {
                return report(
                    client,
                    &path("fail"),
                    json!({ "attempt": attempt, "error": e }),
                    stopping,
                )
                .await;
            }
        };
        let start = task["checkpointStep"].as_u64().map_or(0, |s| s as usize + 1);
        let mut last_checkpoint = match &task["checkpoint"] {
            Value::Null => json!({}),
            v => v.clone(),
        };
        for (i, step) in script.steps.iter().enumerate().skip(start) {
            let (what, body) = match step {
                Step::SleepMs(ms) => {
                    tokio::time::sleep(Duration::from_millis(*ms)).await;
                    continue;
                }
                Step::Checkpoint(v) => {
                    last_checkpoint = v.clone();
                    ("checkpoint", json!({ "attempt": attempt, "step": i, "checkpoint": v }))
                }
                Step::Usage { tokens, cost, agent_ms } => (
                    "usage",
                    json!({ "attempt": attempt, "tokens": tokens, "cost": cost, "agentMs": agent_ms }),
                ),
                Step::Fail(why) => ("fail", json!({ "attempt": attempt, "error": why })),
                Step::Complete(v) => ("complete", json!({ "attempt": attempt, "result": v })),
            };
            let mut outcome = report(client, &path(what), body, stopping).await;
            if let (Outcome::OverBudget, Step::Usage { .. }) = (&outcome, step) {
                // Told to stop: a checkpoint after this step (so its usage is
                // not reported twice), which queues the task again. Accepted
                // instead, the budget has room again and the work goes on.
                let body = json!({ "attempt": attempt, "step": i, "checkpoint": last_checkpoint });
                outcome = report(client, &path("checkpoint"), body, stopping).await;
            }
            if outcome != Outcome::Done || matches!(step, Step::Fail(_) | Step::Complete(_)) {
                return outcome;
            }
        }
        report(
            client,
            &path("complete"),
            json!({ "attempt": attempt, "result": null }),
            stopping,
        )
        .await
    };
    let outcome = tokio::select! {
        outcome = steps => outcome,
        // Stopped mid-step (SIGTERM): the task goes back to the queue when
        // the instance sees this agent gone.
        _ = stop.wait_for(|s| *s) => Outcome::Stopped,
        why = lost.wait_for(Option::is_some) => Outcome::Lost(why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default()),
    };
    heartbeat.abort();
    outcome
}

/// Sends one report; a completion already recorded counts as done.
async fn report(client: &Client, path: &str, body: Value, stopping: &mut watch::Receiver<bool>) -> Outcome {
    match client.post(path, &body, stopping).await {
        None => Outcome::Stopped,
        Some(a) if a.status.is_success() => Outcome::Done,
        Some(a) if a.code() == "TASK_ALREADY_COMPLETED" => Outcome::Done,
        Some(a) if a.code() == "BUDGET_EXCEEDED" => Outcome::OverBudget,
        Some(a) => Outcome::Lost(format!("{} {}", a.status, a.body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_every_step_and_refuse_what_they_cannot_follow() {
        let s = Script::parse(&json!({ "steps": [
            { "checkpoint": { "n": 1 } }, { "sleep_ms": 300 }, { "usage": { "tokens": 10 } },
            { "fail": "why" }, { "complete": { "ok": true } }
        ]}))
        .unwrap();
        assert_eq!(
            s.steps,
            vec![
                Step::Checkpoint(json!({ "n": 1 })),
                Step::SleepMs(300),
                Step::Usage {
                    tokens: 10,
                    cost: 0,
                    agent_ms: 0
                },
                Step::Fail("why".into()),
                Step::Complete(json!({ "ok": true })),
            ]
        );
        for (bad, says) in [
            (json!({}), "steps"),
            (json!({ "steps": [{ "dance": 1 }] }), "steps[0]: unknown step 'dance'"),
            (json!({ "steps": [{ "sleep_ms": -1 }] }), "sleep_ms"),
            (json!({ "steps": [{ "sleep_ms": 1, "fail": "x" }] }), "one key"),
            (json!({ "steps": [{ "usage": { "tokens": -5 } }] }), "usage.tokens"),
            (json!({ "steps": [{ "fail": 3 }] }), "fail takes"),
        ] {
            let e = Script::parse(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = json!({ "steps": vec![json!({ "sleep_ms": 0 }); MAX_STEPS + 1] });
        assert!(Script::parse(&long).unwrap_err().contains("at most"));
    }
}
