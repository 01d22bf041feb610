//! Agent orchestration (issue 15): agent tasks through GraphQL, the worker
//! API's refusals, and real `mosaic worker` processes working a real
//! instance's queue: 1,000 tasks across four workers and two workspaces, a
//! worker killed mid-task, and the instance restarted mid-run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common;

use common::{TestApp, codes, local_id, spawn_instance_with};
use serde_json::{Value, json};
use sqlx::PgConnection;
use tokio::process::{Child, Command};
use uuid::Uuid;

pub(crate) const TASK: &str =
    "id status priority attempts checkpoint checkpointStep result error statusReason blockedBy
    usage { tokens } events { fromStatus toStatus actor actorId at }";

pub(crate) fn create_task_query() -> String {
    format!("mutation($i: CreateAgentTaskInput!) {{ createAgentTask(input: $i) {{ {TASK} }} }}")
}

const TOKEN: &str = "mutation($w: ID!, $m: [ID!]) { createAgentToken(workspaceId: $w, moreWorkspaceIds: $m) }";

pub(crate) async fn agent_token(app: &TestApp, token: &str, ws: &str, more: &[&str]) -> String {
    app.gql_ok(token, TOKEN, json!({ "w": ws, "m": more })).await["createAgentToken"]
        .as_str()
        .unwrap()
        .to_string()
}

pub(crate) async fn create(app: &TestApp, token: &str, input: Value) -> Value {
    app.gql_ok(token, &create_task_query(), json!({ "i": input })).await["createAgentTask"].clone()
}

pub(crate) async fn task(app: &TestApp, token: &str, id: &str) -> Value {
    app.gql_ok(
        token,
        &format!("query($id: ID!) {{ node(id: $id) {{ ... on AgentTask {{ {TASK} }} }} }}"),
        json!({ "id": id }),
    )
    .await["node"]
        .clone()
}

/// A worker API call: (HTTP status, body).
pub(crate) async fn call(app: &TestApp, agent: &str, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(format!("{}/worker{path}", app.base))
        .bearer_auth(agent)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

pub(crate) fn transitions(task: &Value) -> Vec<String> {
    task["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}>{}",
                e["fromStatus"].as_str().unwrap_or("-"),
                e["toStatus"].as_str().unwrap()
            )
        })
        .collect()
}

/// The agent tables, to show a refused call changed nothing (an agent's
/// last use aside).
async fn agent_rows(conn: &mut PgConnection) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "(SELECT id, name, token_hash, created_by, revoked_at FROM task_agents)",
        "task_agent_workspaces",
        "agent_tasks",
        "agent_task_events",
    ] {
        let digest: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {table} x"
        )))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        out.push(format!("{table} {digest}"));
    }
    out
}

/// Polls `check` until it holds, at most `limit`: for state that only the
/// API can show (other processes change it).
pub(crate) async fn until<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut check: F) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(app: &TestApp, token: &str, status: &str) -> i64 {
    app.gql_ok(
        token,
        "query($s: [AgentTaskStatus!]) { agentTasks(filter: {status: $s}, first: 0) { totalCount } }",
        json!({ "s": [status] }),
    )
    .await["agentTasks"]["totalCount"]
        .as_i64()
        .unwrap()
}

/// A `mosaic worker` process for `agent` against `app`.
pub(crate) fn worker(app: &TestApp, agent: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(["worker", "--url", &app.base, "--ca-file"])
        .arg(&common::pki().ca_cert)
        .env_clear()
        .env("MOSAIC_AGENT_TOKEN", agent)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("mosaic worker starts")
}

pub(crate) async fn instance(adjust: impl FnOnce(&mut mosaic::config::Config)) -> (TestApp, String) {
    let app = spawn_instance_with("orchestra", adjust).await;
    let (_, token) = app.user("owner@example.com").await;
    (app, token)
}

#[tokio::test]
async fn agent_tasks_are_created_listed_cancelled_and_retried_and_bad_input_is_refused() {
    let (app, token) = instance(|_| {}).await;
    let ws = app.create_workspace(&token, "Crew").await;
    let other = app.create_workspace(&token, "Other").await;
    let steps = json!({ "steps": [{ "checkpoint": { "n": 1 } }, { "complete": { "ok": true } }] });
    let t = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "script", "kind": "SCRIPT", "priority": 7, "instructions": steps, "maxAttempts": 2 }),
    )
    .await;
    assert_eq!(
        (t["status"].as_str(), t["priority"].as_i64(), t["attempts"].as_i64()),
        (Some("QUEUED"), Some(7), Some(0))
    );
    assert_eq!(transitions(&t), ["->QUEUED"]);
    assert_eq!(t["events"][0]["actor"], "USER");
    // A SCRIPT's instructions may come as a JSON string too.
    create(
        &app,
        &token,
        json!({ "workspaceId": other, "title": "as text", "kind": "SCRIPT", "instructions": steps.to_string() }),
    )
    .await;
    create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "review", "kind": "REVIEWER" }),
    )
    .await;

    let list = "query($w: ID, $f: AgentTaskFilter, $n: Int, $a: String) { agentTasks(workspaceId: $w, filter: $f, first: $n, after: $a) {
        totalCount edges { cursor node { id title kind } } pageInfo { hasNextPage endCursor } } }";
    let all = app.gql_ok(&token, list, json!({ "n": 2 })).await["agentTasks"].clone();
    assert_eq!(all["totalCount"], 3);
    assert_eq!(all["pageInfo"]["hasNextPage"], true);
    let rest = app
        .gql_ok(&token, list, json!({ "n": 2, "a": all["pageInfo"]["endCursor"] }))
        .await["agentTasks"]
        .clone();
    assert_eq!(rest["edges"][0]["node"]["title"], "review");
    let in_ws = app
        .gql_ok(&token, list, json!({ "w": ws, "f": { "kind": ["SCRIPT"] } }))
        .await;
    assert_eq!(in_ws["agentTasks"]["totalCount"], 1);
    assert_eq!(in_ws["agentTasks"]["edges"][0]["node"]["id"], t["id"]);

    // Bad input: its own code, nothing written.
    let mut admin = app.admin().await;
    let before = agent_rows(&mut admin).await;
    let big = json!({ "steps": [{ "checkpoint": { "pad": "x".repeat(70_000) } }] });
    for (input, code, says) in [
        (
            json!({ "workspaceId": ws, "title": "p", "kind": "WORKER", "priority": 11 }),
            "BAD_USER_INPUT",
            "priority",
        ),
        (
            json!({ "workspaceId": ws, "title": "p", "kind": "WORKER", "maxAttempts": 0 }),
            "BAD_USER_INPUT",
            "maxAttempts",
        ),
        (
            json!({ "workspaceId": ws, "title": "  ", "kind": "WORKER" }),
            "BAD_USER_INPUT",
            "title",
        ),
        (
            json!({ "workspaceId": ws, "title": "s", "kind": "SCRIPT", "instructions": { "steps": [{ "dance": 1 }] } }),
            "BAD_USER_INPUT",
            "instructions",
        ),
        (
            json!({ "workspaceId": ws, "title": "s", "kind": "SCRIPT", "instructions": big }),
            "INSTRUCTIONS_TOO_LARGE",
            "instructions",
        ),
        (
            json!({ "workspaceId": t["id"], "title": "s", "kind": "WORKER" }),
            "BAD_USER_INPUT",
            "workspaceId",
        ),
    ] {
        let body = app.gql(&token, &create_task_query(), json!({ "i": input })).await;
        assert_eq!(codes(&body), [code], "{input}: {body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains(says), "{body}");
    }
    assert_eq!(agent_rows(&mut admin).await, before, "refusals changed nothing");
    // A guest may read but not create; a member may not make agent tokens.
    let (_, guest) = app.user("guest@example.com").await;
    let (_, member) = app.user("member@example.com").await;
    app.add_member(&token, &ws, "guest@example.com", "GUEST").await;
    app.add_member(&token, &ws, "member@example.com", "MEMBER").await;
    let before = agent_rows(&mut admin).await;
    let body = app
        .gql(
            &guest,
            &create_task_query(),
            json!({ "i": { "workspaceId": ws, "title": "g", "kind": "WORKER" } }),
        )
        .await;
    assert_eq!(codes(&body), ["FORBIDDEN"], "{body}");
    let body = app.gql(&member, TOKEN, json!({ "w": ws })).await;
    assert_eq!(codes(&body), ["FORBIDDEN"], "{body}");
    let body = app.gql(&token, TOKEN, json!({ "w": ws, "m": [t["id"]] })).await;
    assert_eq!(codes(&body), ["BAD_USER_INPUT"], "{body}");
    let body = app
        .gql(
            &guest,
            "mutation($id: ID!) { cancelAgentTask(id: $id) { id } }",
            json!({ "id": t["id"] }),
        )
        .await;
    assert_eq!(codes(&body), ["FORBIDDEN"], "{body}");
    assert_eq!(agent_rows(&mut admin).await, before, "refusals changed nothing");
    assert_eq!(task(&app, &guest, t["id"].as_str().unwrap()).await["status"], "QUEUED");

    // Cancel, then cancel again; retry, then retry again.
    let cancel = "mutation($id: ID!) { cancelAgentTask(id: $id) { status events { fromStatus toStatus } } }";
    let retry = "mutation($id: ID!) { retryAgentTask(id: $id) { status attempts } }";
    let early = app.gql(&token, retry, json!({ "id": t["id"] })).await;
    assert_eq!(
        codes(&early),
        ["TASK_NOT_RETRYABLE"],
        "a queued task is not retried: {early}"
    );
    let c = app.gql_ok(&token, cancel, json!({ "id": t["id"] })).await["cancelAgentTask"].clone();
    assert_eq!(c["status"], "CANCELLED");
    let again = app.gql(&token, cancel, json!({ "id": t["id"] })).await;
    assert_eq!(codes(&again), ["TASK_NOT_CANCELLABLE"], "{again}");
    let r = app.gql_ok(&token, retry, json!({ "id": t["id"] })).await["retryAgentTask"].clone();
    assert_eq!(r["status"], "QUEUED");
    let again = app.gql(&token, retry, json!({ "id": t["id"] })).await;
    assert_eq!(codes(&again), ["TASK_NOT_RETRYABLE"], "{again}");
    let t = task(&app, &token, t["id"].as_str().unwrap()).await;
    assert_eq!(transitions(&t), ["->QUEUED", "QUEUED>CANCELLED", "CANCELLED>QUEUED"]);

    // The log is append-only for the request role.
    let changed = sqlx::query("SET ROLE mosaic_app; UPDATE agent_task_events SET reason = 'x'")
        .execute(&mut admin)
        .await;
    assert!(changed.is_err(), "the request role cannot change the log");
    app.stop().await;
}

#[tokio::test]
async fn the_worker_api_answers_each_refusal_with_its_own_code() {
    let (app, token) = instance(|c| {
        c.agent_tasks.max_running = 1;
        c.agent_tasks.max_checkpoint_bytes = 1024;
        c.agent_tasks.retry_base = Duration::from_millis(1);
        c.agent_tasks.retry_max = Duration::from_millis(2);
    })
    .await;
    let ws = app.create_workspace(&token, "Crew").await;
    let elsewhere = app.create_workspace(&token, "Elsewhere").await;
    let a = agent_token(&app, &token, &ws, &[]).await;
    let b = agent_token(&app, &token, &ws, &[]).await;
    let stranger = agent_token(&app, &token, &elsewhere, &[]).await;

    let (status, body) = call(&app, "mosaic_agent_nope", "/claim", json!({})).await;
    assert_eq!((status, error_code(&body)), (401, "UNAUTHENTICATED"));
    let (status, _) = call(&app, &a, "/claim", json!({})).await;
    assert_eq!(status, 204, "nothing queued");

    let t = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "one", "kind": "WORKER", "maxAttempts": 2 }),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    let (status, claim) = call(&app, &a, "/claim", json!({ "waitMs": 0 })).await;
    assert_eq!(status, 200, "{claim}");
    assert_eq!(
        (claim["task"]["id"].as_str(), claim["task"]["attempt"].as_i64()),
        (Some(id), Some(1))
    );
    let hb = json!({ "attempt": 1 });
    let (status, body) = call(&app, &a, &format!("/tasks/{id}/heartbeat"), hb.clone()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("RUNNING")));

    // At the cap (1): another claim waits, then 429; queued work stays queued.
    create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "two", "kind": "WORKER" }),
    )
    .await;
    let (status, body) = call(&app, &b, "/claim", json!({ "waitMs": 0 })).await;
    assert_eq!((status, error_code(&body)), (429, "AGENT_LIMIT_REACHED"), "{body}");
    assert_eq!(count(&app, &token, "QUEUED").await, 1);

    let mut admin = app.admin().await;
    let before = agent_rows(&mut admin).await;
    let cp = |pad: usize| json!({ "attempt": 1, "step": 0, "checkpoint": { "pad": "x".repeat(pad) } });
    let (status, body) = call(&app, &a, &format!("/tasks/{id}/checkpoint"), cp(2000)).await;
    assert_eq!((status, error_code(&body)), (413, "CHECKPOINT_TOO_LARGE"), "{body}");
    let (status, body) = call(&app, &b, &format!("/tasks/{id}/heartbeat"), hb.clone()).await;
    assert_eq!((status, error_code(&body)), (403, "AGENT_TASK_NOT_YOURS"), "{body}");
    let (status, body) = call(&app, &stranger, &format!("/tasks/{id}/complete"), hb.clone()).await;
    assert_eq!((status, error_code(&body)), (404, "TASK_NOT_FOUND"), "{body}");
    let (status, body) = call(&app, &a, &format!("/tasks/{id}/heartbeat"), json!({ "attempt": 7 })).await;
    assert_eq!((status, error_code(&body)), (409, "TASK_NOT_HELD"), "{body}");
    let (status, body) = call(
        &app,
        &a,
        &format!("/tasks/{id}/usage"),
        json!({ "attempt": 1, "tokens": -1 }),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "BAD_USER_INPUT"), "{body}");
    let (status, body) = call(&app, &a, &format!("/tasks/{id}/explode"), hb.clone()).await;
    assert_eq!((status, error_code(&body)), (404, "NOT_FOUND"), "{body}");
    assert_eq!(agent_rows(&mut admin).await, before, "refusals changed nothing");

    let (status, _) = call(&app, &a, &format!("/tasks/{id}/checkpoint"), cp(10)).await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &app,
        &a,
        &format!("/tasks/{id}/usage"),
        json!({ "attempt": 1, "tokens": 10, "cost": 2 }),
    )
    .await;
    assert_eq!(status, 200);
    // The first attempt fails: queued again after its (tiny) backoff.
    let (status, body) = call(
        &app,
        &a,
        &format!("/tasks/{id}/fail"),
        json!({ "attempt": 1, "error": "flaky" }),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("QUEUED")), "{body}");
    // A waiting claim is handed the next task; the retried one comes first (older).
    let (status, claim) = call(&app, &b, "/claim", json!({ "waitMs": 5000 })).await;
    assert_eq!(status, 200, "{claim}");
    assert_eq!(
        (claim["task"]["id"].as_str(), claim["task"]["attempt"].as_i64()),
        (Some(id), Some(2))
    );
    assert_eq!(
        claim["task"]["checkpointStep"], 0,
        "the checkpoint travels with the task"
    );
    let (status, body) = call(
        &app,
        &b,
        &format!("/tasks/{id}/complete"),
        json!({ "attempt": 2, "result": { "ok": 1 } }),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("COMPLETED")));
    let (status, body) = call(
        &app,
        &b,
        &format!("/tasks/{id}/complete"),
        json!({ "attempt": 2, "result": { "ok": 2 } }),
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "TASK_ALREADY_COMPLETED"), "{body}");
    let (status, body) = call(&app, &a, &format!("/tasks/{id}/complete"), hb.clone()).await;
    assert_eq!((status, error_code(&body)), (403, "AGENT_TASK_NOT_YOURS"), "{body}");
    let done = task(&app, &token, id).await;
    assert_eq!(done["result"], json!({ "ok": 1 }), "the first completion stands");
    assert_eq!(done["usage"]["tokens"], 10);
    assert_eq!(done["error"], "flaky");
    assert_eq!(
        transitions(&done),
        [
            "->QUEUED",
            "QUEUED>ASSIGNED",
            "ASSIGNED>RUNNING",
            "RUNNING>FAILED",
            "FAILED>QUEUED",
            "QUEUED>ASSIGNED",
            "ASSIGNED>COMPLETED"
        ]
    );

    // A last attempt that fails is DEAD.
    let (status, claim) = call(&app, &a, "/claim", json!({ "waitMs": 0 })).await;
    assert_eq!(status, 200, "{claim}");
    let two = claim["task"]["id"].as_str().unwrap().to_string();
    let t2 = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "last", "kind": "WORKER", "maxAttempts": 1 }),
    )
    .await;
    let (status, body) = call(&app, &a, &format!("/tasks/{two}/complete"), json!({ "attempt": 1 })).await;
    assert_eq!(status, 200, "{body}");
    let (_, claim) = call(&app, &a, "/claim", json!({ "waitMs": 0 })).await;
    assert_eq!(claim["task"]["id"], t2["id"]);
    let (_, body) = call(
        &app,
        &a,
        &format!("/tasks/{}/fail", t2["id"].as_str().unwrap()),
        json!({ "attempt": 1, "error": "no" }),
    )
    .await;
    assert_eq!(body["status"], "DEAD");

    // An idle agent's claim is woken by the queueing of work, not by its wait's end.
    let waiting = {
        let (client, base, a) = (app.client.clone(), app.base.clone(), a.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .post(format!("{base}/worker/claim"))
                .bearer_auth(&a)
                .json(&json!({ "waitMs": 20_000 }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap(), started)
        })
    };
    // The claim is waiting once it has looked and found nothing: make the task after that.
    until("the claim waits", Duration::from_secs(10), async || {
        app.state.live.agent_claims_waiting() == 1
    })
    .await;
    let queued_at = Instant::now();
    let t3 = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "wake", "kind": "WORKER" }),
    )
    .await;
    let (status, body, started) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["id"], t3["id"]);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "woken by the notification, not the wait's end: {waited:?}"
    );
    eprintln!("enqueue to claimed: {:?}", queued_at.elapsed());
    app.stop().await;
}

/// Creates `n` SCRIPT tasks in `ws` with `steps`, 25 a request; priority
/// cycles through 1..=10.
async fn create_many(app: &TestApp, token: &str, ws: &str, n: usize, steps: &Value) {
    for start in (0..n).step_by(25) {
        let batch: Vec<usize> = (start..(start + 25).min(n)).collect();
        let params: Vec<String> = batch.iter().map(|i| format!("$i{i}: CreateAgentTaskInput!")).collect();
        let fields: Vec<String> = batch
            .iter()
            .map(|i| format!("t{i}: createAgentTask(input: $i{i}) {{ id }}"))
            .collect();
        let vars: serde_json::Map<String, Value> = batch
            .iter()
            .map(|i| {
                let input = json!({ "workspaceId": ws, "title": format!("task {i}"), "kind": "SCRIPT",
                    "priority": i % 10 + 1, "instructions": steps });
                (format!("i{i}"), input)
            })
            .collect();
        let query = format!("mutation({}) {{ {} }}", params.join(", "), fields.join(" "));
        app.gql_ok(token, &query, Value::Object(vars)).await;
    }
}

/// Tasks completed more or less than once, by the log (should be none).
async fn not_completed_once(conn: &mut PgConnection) -> Vec<(Uuid, i64)> {
    sqlx::query_as(
        "SELECT t.id, count(e.id) FROM agent_tasks t
         LEFT JOIN agent_task_events e ON e.task_id = t.id AND e.to_status = 'COMPLETED'
         GROUP BY t.id HAVING count(e.id) <> 1",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_thousand_tasks_across_four_workers_and_two_workspaces_complete_exactly_once() {
    let (app, token) = instance(|_| {}).await;
    let ws = [
        app.create_workspace(&token, "North").await,
        app.create_workspace(&token, "South").await,
    ];
    let steps = json!({ "steps": [{ "checkpoint": { "half": true } }, { "usage": { "tokens": 1 } }, { "complete": { "done": true } }] });
    for w in &ws {
        create_many(&app, &token, w, 500, &steps).await;
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let agent = agent_token(&app, &token, &ws[0], &[&ws[1]]).await;
        workers.push(worker(&app, &agent));
    }
    until("1,000 tasks completed", Duration::from_secs(240), async || {
        count(&app, &token, "COMPLETED").await == 1000
    })
    .await;
    let took = started.elapsed();
    eprintln!(
        "1,000 tasks, 4 workers: {took:?} ({:.0} tasks/s)",
        1000.0 / took.as_secs_f64()
    );
    for mut w in workers {
        w.kill().await.unwrap();
    }

    let mut admin = app.admin().await;
    assert_eq!(
        not_completed_once(&mut admin).await,
        [],
        "each task completed exactly once"
    );
    let (attempts, tokens): (i64, i64) = sqlx::query_as(
        "SELECT sum(attempts)::int8, sum(usage_tokens)::int8 FROM agent_tasks WHERE status = 'COMPLETED'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((attempts, tokens), (1000, 1000), "one attempt each, each step once");
    // Every agent worked for both workspaces.
    let spread: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT actor_id, count(DISTINCT workspace_id), count(*) FROM agent_task_events
         WHERE to_status = 'ASSIGNED' GROUP BY actor_id",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(spread.len(), 4, "{spread:?}");
    assert!(spread.iter().all(|(_, w, n)| *w == 2 && *n > 50), "{spread:?}");
    // Claims in order: within a workspace, higher priority first; across
    // them, neither waits for the other.
    let claims: Vec<(Uuid, i16)> = sqlx::query_as(
        "SELECT e.workspace_id, t.priority FROM agent_task_events e JOIN agent_tasks t ON t.id = e.task_id
         WHERE e.to_status = 'ASSIGNED' ORDER BY e.id",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let mut last: HashMap<Uuid, i16> = HashMap::new();
    for (w, p) in &claims {
        let before = last.insert(*w, *p).unwrap_or(10);
        assert!(
            *p <= before,
            "a lower priority was claimed before a higher one in its workspace"
        );
    }
    // Neither workspace waits for the other: every stretch of 100 claims
    // (while both have work) serves both.
    let north = local_id(&ws[0]);
    for window in claims[..800].windows(100).step_by(50) {
        let n = window.iter().filter(|(w, _)| *w == north).count();
        assert!((25..=75).contains(&n), "{n} of 100 claims for one workspace");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_task_of_a_killed_worker_resumes_from_its_checkpoint_on_another_and_completes_once() {
    let (app, token) = instance(|c| {
        c.agent_tasks.heartbeat_timeout = Duration::from_millis(1000);
        c.agent_tasks.reaper_interval = Duration::from_millis(100);
    })
    .await;
    let ws = app.create_workspace(&token, "Crew").await;
    let steps = json!({ "steps": [
        { "usage": { "tokens": 10 } },
        { "checkpoint": { "phase": "first half" } },
        { "sleep_ms": 3000 },
        { "usage": { "tokens": 1 } },
        { "complete": { "done": true } }
    ]});
    let t = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "long", "kind": "SCRIPT", "instructions": steps }),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    let first_agent = agent_token(&app, &token, &ws, &[]).await;
    let mut first = worker(&app, &first_agent);
    until("the first worker checkpoints", Duration::from_secs(30), async || {
        !task(&app, &token, id).await["checkpoint"].is_null()
    })
    .await;
    first.kill().await.unwrap();
    let second_agent = agent_token(&app, &token, &ws, &[]).await;
    let mut second = worker(&app, &second_agent);
    until("the task completes", Duration::from_secs(30), async || {
        task(&app, &token, id).await["status"] == "COMPLETED"
    })
    .await;
    second.kill().await.unwrap();
    let done = task(&app, &token, id).await;
    assert_eq!(done["attempts"], 2);
    assert_eq!(
        done["usage"]["tokens"], 11,
        "the resumed attempt started after the checkpoint's step"
    );
    assert_eq!(done["checkpoint"], json!({ "phase": "first half" }));
    assert_eq!(done["checkpointStep"], 1);
    assert_eq!(done["result"], json!({ "done": true }));
    assert_eq!(
        transitions(&done),
        [
            "->QUEUED",
            "QUEUED>ASSIGNED",
            "ASSIGNED>RUNNING",
            "RUNNING>QUEUED",
            "QUEUED>ASSIGNED",
            "ASSIGNED>RUNNING",
            "RUNNING>COMPLETED"
        ]
    );
    assert_eq!(done["events"][3]["actor"], "SYSTEM", "the reaper returned it");
    let holders: Vec<Option<Uuid>> =
        sqlx::query_scalar("SELECT actor_id FROM agent_task_events WHERE to_status = 'ASSIGNED' ORDER BY id")
            .fetch_all(&mut app.admin().await)
            .await
            .unwrap();
    assert_eq!(holders.len(), 2);
    assert_ne!(holders[0], holders[1], "another agent resumed it");
    assert_eq!(not_completed_once(&mut app.admin().await).await, []);
    app.stop().await;
}

#[tokio::test]
async fn restarting_mosaic_mid_run_loses_nothing_and_does_nothing_twice() {
    let settings = |c: &mut mosaic::config::Config| {
        c.agent_tasks.heartbeat_timeout = Duration::from_secs(5);
        c.agent_tasks.reaper_interval = Duration::from_millis(200);
    };
    let (app, token) = instance(settings).await;
    let ws = app.create_workspace(&token, "Crew").await;
    let steps = json!({ "steps": [{ "checkpoint": { "a": 1 } }, { "sleep_ms": 50 }, { "complete": { "ok": true } }] });
    create_many(&app, &token, &ws, 60, &steps).await;
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(worker(&app, &agent_token(&app, &token, &ws, &[]).await));
    }
    until("some tasks complete", Duration::from_secs(60), async || {
        count(&app, &token, "COMPLETED").await >= 10
    })
    .await;
    let (database, listen) = (
        app.database_url.clone(),
        app.base.rsplit(':').next().unwrap().to_string(),
    );
    app.stop().await;
    let app = spawn_instance_with("orchestra", |c| {
        settings(c);
        c.database_url = Some(database);
        c.listen = format!("127.0.0.1:{listen}").parse().unwrap();
    })
    .await;
    until(
        "every task completes after the restart",
        Duration::from_secs(120),
        async || count(&app, &token, "COMPLETED").await == 60,
    )
    .await;
    for mut w in workers {
        w.kill().await.unwrap();
    }
    let mut admin = app.admin().await;
    assert_eq!(
        not_completed_once(&mut admin).await,
        [],
        "nothing lost, nothing completed twice"
    );
    let ended: Vec<String> = sqlx::query_scalar("SELECT DISTINCT status FROM agent_tasks")
        .fetch_all(&mut admin)
        .await
        .unwrap();
    assert_eq!(ended, ["COMPLETED"]);
    app.stop().await;
}

#[tokio::test]
async fn kill_and_kill_all_stop_the_agents_and_leave_their_tasks_killed() {
    let (app, token) = instance(|c| {
        c.agent_tasks.heartbeat_timeout = Duration::from_millis(1500);
    })
    .await;
    let ws = app.create_workspace(&token, "Crew").await;
    let (_, member) = app.user("member@example.com").await;
    app.add_member(&token, &ws, "member@example.com", "MEMBER").await;
    let kill = "mutation($id: ID!) { killAgent(taskId: $id) { status statusReason events { toStatus actor } } }";
    let kill_all = "mutation($w: ID!) { killAllAgents(workspaceId: $w) { id status } }";

    // A real worker on an endless task is killed; it stops and takes the next task.
    let endless = json!({ "steps": [{ "checkpoint": { "at": 0 } }, { "sleep_ms": 600000 }, { "complete": {} }] });
    let t = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "endless", "kind": "SCRIPT", "instructions": endless }),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    let body = app.gql(&token, kill, json!({ "id": id })).await;
    assert_eq!(
        codes(&body),
        ["TASK_NOT_RUNNING"],
        "nothing holds a queued task: {body}"
    );
    let agent = agent_token(&app, &token, &ws, &[]).await;
    let mut w = worker(&app, &agent);
    until("the worker runs the task", Duration::from_secs(30), async || {
        !task(&app, &token, id).await["checkpoint"].is_null()
    })
    .await;
    let body = app.gql(&member, kill, json!({ "id": id })).await;
    assert_eq!(codes(&body), ["FORBIDDEN"], "members may not kill: {body}");
    let killed = app.gql_ok(&token, kill, json!({ "id": id })).await["killAgent"].clone();
    assert_eq!(killed["status"], "KILLED");
    assert_eq!(killed["events"].as_array().unwrap().last().unwrap()["actor"], "USER");
    let quick = json!({ "steps": [{ "complete": { "next": true } }] });
    let next = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "next", "kind": "SCRIPT", "instructions": quick }),
    )
    .await;
    until(
        "the killed worker moves on to the next task",
        Duration::from_secs(30),
        async || task(&app, &token, next["id"].as_str().unwrap()).await["status"] == "COMPLETED",
    )
    .await;
    w.kill().await.unwrap();
    assert_eq!(
        task(&app, &token, id).await["status"],
        "KILLED",
        "a killed task is not retried"
    );

    // Kill-all: every held task of the workspace, and nothing else.
    let (a, b) = (
        agent_token(&app, &token, &ws, &[]).await,
        agent_token(&app, &token, &ws, &[]).await,
    );
    for _ in 0..3 {
        create(
            &app,
            &token,
            json!({ "workspaceId": ws, "title": "w", "kind": "WORKER" }),
        )
        .await;
    }
    let mut held = Vec::new();
    for agent in [&a, &b] {
        let (status, claim) = call(&app, agent, "/claim", json!({})).await;
        assert_eq!(status, 200, "{claim}");
        held.push(claim["task"]["id"].as_str().unwrap().to_string());
    }
    let body = app.gql(&member, kill_all, json!({ "w": ws })).await;
    assert_eq!(codes(&body), ["FORBIDDEN"], "{body}");
    let all = app.gql_ok(&token, kill_all, json!({ "w": ws })).await["killAllAgents"].clone();
    let mut ids: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    held.sort();
    assert_eq!(ids, held);
    assert_eq!(count(&app, &token, "QUEUED").await, 1, "the queued task stays queued");
    let (status, body) = call(
        &app,
        &a,
        &format!("/tasks/{}/heartbeat", held[0]),
        json!({ "attempt": 1 }),
    )
    .await;
    let refused = (
        status,
        error_code(&body).to_string(),
        body["errors"][0]["extensions"]["status"].clone(),
    );
    assert!(
        refused == (409, "TASK_NOT_HELD".into(), json!("KILLED"))
            || refused == (403, "AGENT_TASK_NOT_YOURS".into(), json!("KILLED")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_attempt_waits_out_its_backoff_and_a_waiting_claim_gets_it_when_due() {
    let (app, token) = instance(|c| {
        c.agent_tasks.retry_base = Duration::from_millis(600);
        c.agent_tasks.retry_max = Duration::from_secs(60);
    })
    .await;
    let ws = app.create_workspace(&token, "Crew").await;
    let agent = agent_token(&app, &token, &ws, &[]).await;
    let t = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "flaky", "kind": "WORKER", "maxAttempts": 3 }),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    call(&app, &agent, "/claim", json!({})).await;
    let failed_at = Instant::now();
    let (_, body) = call(
        &app,
        &agent,
        &format!("/tasks/{id}/fail"),
        json!({ "attempt": 1, "error": "e" }),
    )
    .await;
    assert_eq!(body["status"], "QUEUED");
    let reason = task(&app, &token, id).await["statusReason"]
        .as_str()
        .unwrap()
        .to_string();
    let delay: u64 = reason
        .strip_prefix("retry 2 of 3 in ")
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(
        (300..=600).contains(&delay),
        "half to all of the base delay: {delay} ms"
    );
    let (status, _) = call(&app, &agent, "/claim", json!({ "waitMs": 0 })).await;
    assert_eq!(status, 204, "not claimable before its delay");
    let (status, claim) = call(&app, &agent, "/claim", json!({ "waitMs": 10_000 })).await;
    let waited = failed_at.elapsed();
    assert_eq!(status, 200, "{claim}");
    assert_eq!(claim["task"]["attempt"], 2);
    assert!(
        waited >= Duration::from_millis(delay),
        "claimed after its delay: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "claimed when due, not at the wait's end: {waited:?}"
    );
    // The second failure doubles the base delay.
    let (_, body) = call(
        &app,
        &agent,
        &format!("/tasks/{id}/fail"),
        json!({ "attempt": 2, "error": "e" }),
    )
    .await;
    assert_eq!(body["status"], "QUEUED");
    let reason = task(&app, &token, id).await["statusReason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.starts_with("retry 3 of 3 in "), "{reason}");
    let delay: u64 = reason[16..reason.len() - 3].parse().unwrap();
    assert!((600..=1200).contains(&delay), "{delay}");
    app.stop().await;
}

/// A master creates, watches, cancels, retries and kills agent tasks in a
/// peer's workspace through its owner (COMMAND under a read-write grant);
/// under a read-only grant it only watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_creates_watches_and_kills_agent_tasks_in_a_peers_workspace() {
    let (home, bravo, charlie) = tokio::join!(
        common::spawn_instance("home"),
        common::spawn_instance("bravo"),
        common::spawn_instance("charlie")
    );
    let (_, ann) = home.user("ann@home.example").await;
    let (_, bob) = bravo.user("bob@bravo.example").await;
    let (_, carl) = charlie.user("carl@charlie.example").await;
    let bravo_ws = bravo.create_workspace(&bob, "bravo crew").await;
    let charlie_ws = charlie.create_workspace(&carl, "charlie crew").await;
    common::peer(&home, &bravo, &[&bravo_ws], true).await;
    common::peer(&home, &charlie, &[&charlie_ws], false).await;
    let bravo_id = bravo.state.instance_id.to_string();

    let steps = json!({ "steps": [{ "complete": {} }] });
    let t = create(
        &home,
        &ann,
        json!({ "workspaceId": bravo_ws, "title": "remote", "kind": "SCRIPT", "instructions": steps, "priority": 9 }),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_string();
    assert!(id.starts_with(&format!("AgentTask:{bravo_id}:")), "{id}");
    assert_eq!(
        (t["status"].as_str(), t["priority"].as_i64()),
        (Some("QUEUED"), Some(9))
    );
    let here: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_tasks")
        .fetch_one(&mut home.admin().await)
        .await
        .unwrap();
    assert_eq!(here, 0, "nothing is stored at home");
    assert_eq!(task(&bravo, &bob, &id).await["status"], "QUEUED", "the owner holds it");

    // Watched from home (node at the owner, with its events), changed at the owner.
    let cancel = "mutation($id: ID!) { cancelAgentTask(id: $id) { status instance { id } } }";
    let c = home.gql_ok(&ann, cancel, json!({ "id": id })).await["cancelAgentTask"].clone();
    assert_eq!(c, json!({ "status": "CANCELLED", "instance": { "id": bravo_id } }));
    let retry = "mutation($id: ID!) { retryAgentTask(id: $id) { status } }";
    assert_eq!(
        home.gql_ok(&ann, retry, json!({ "id": id })).await["retryAgentTask"]["status"],
        "QUEUED"
    );
    let agent = agent_token(&bravo, &bob, &bravo_ws, &[]).await;
    let (status, claim) = call(&bravo, &agent, "/claim", json!({})).await;
    assert_eq!((status, claim["task"]["id"].as_str()), (200, Some(id.as_str())));
    let kill = "mutation($id: ID!) { killAgent(taskId: $id) { status } }";
    assert_eq!(
        home.gql_ok(&ann, kill, json!({ "id": id })).await["killAgent"]["status"],
        "KILLED"
    );
    let watched = task(&home, &ann, &id).await;
    assert_eq!(
        transitions(&watched),
        [
            "->QUEUED",
            "QUEUED>CANCELLED",
            "CANCELLED>QUEUED",
            "QUEUED>ASSIGNED",
            "ASSIGNED>KILLED"
        ]
    );
    // The master's COMMANDs are logged as the master, the claim as the agent.
    let home_id = home.state.instance_id.to_string();
    let actors: Vec<(&str, &str)> = watched["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["actorId"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(actors[0], ("PEER", home_id.as_str()), "created by home: {watched}");
    assert_eq!(actors[1], ("PEER", home_id.as_str()));
    assert_eq!(actors[2], ("PEER", home_id.as_str()));
    assert_eq!(actors[3].0, "AGENT");
    assert_eq!(actors[4], ("PEER", home_id.as_str()), "killed by home");
    let (status, body) = call(
        &bravo,
        &agent,
        &format!("/tasks/{id}/heartbeat"),
        json!({ "attempt": 1 }),
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "TASK_NOT_HELD"), "{body}");

    // One list over every instance, in the global order, paged.
    let home_ws = home.create_workspace(&ann, "home crew").await;
    for (app, tok, ws) in [
        (&home, &ann, &home_ws),
        (&charlie, &carl, &charlie_ws),
        (&bravo, &bob, &bravo_ws),
    ] {
        create(
            app,
            tok,
            json!({ "workspaceId": ws, "title": "listed", "kind": "WORKER" }),
        )
        .await;
    }
    let list = "query($a: String) { agentTasks(scope: {all: true}, first: 2, after: $a) {
        totalCount edges { node { id createdAt instance { name } } } pageInfo { hasNextPage endCursor } } }";
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let full = home.gql(&ann, list, json!({ "a": after })).await;
        assert!(full.get("errors").is_none(), "{full}");
        assert_eq!(full["extensions"]["federation"]["succeeded"], 3, "{full}");
        let page = full["data"]["agentTasks"].clone();
        assert_eq!(page["totalCount"], 4, "{page}");
        for e in page["edges"].as_array().unwrap() {
            seen.push((
                e["node"]["createdAt"].as_str().unwrap().to_string(),
                e["node"]["instance"]["name"].as_str().unwrap().to_string(),
            ));
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    let names: Vec<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        ["bravo", "home", "charlie", "bravo"],
        "oldest first across instances"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);

    // Read-only grant: watching only.
    let body = home
        .gql(
            &ann,
            &create_task_query(),
            json!({ "i": { "workspaceId": charlie_ws, "title": "no", "kind": "WORKER" } }),
        )
        .await;
    assert_eq!(codes(&body), ["PEER_FORBIDDEN"], "{body}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_tasks")
        .fetch_one(&mut charlie.admin().await)
        .await
        .unwrap();
    assert_eq!(n, 1, "only its own listed task");
    for app in [home, bravo, charlie] {
        app.stop().await;
    }
}

#[tokio::test]
async fn agent_tokens_are_listed_without_secrets_and_a_revoked_one_is_refused_and_loses_its_task() {
    let (app, token) = instance(|_| {}).await;
    let ws = app.create_workspace(&token, "Crew").await;
    let first = agent_token(&app, &token, &ws, &[]).await;
    let second = agent_token(&app, &token, &ws, &[]).await;
    let list = "query($w: ID!, $r: Boolean) { agentTokens(workspaceId: $w, includeRevoked: $r) {
        id name workspaceIds kinds container createdBy createdAt lastSeenAt revokedAt } }";
    let tokens = app.gql_ok(&token, list, json!({ "w": ws })).await["agentTokens"].clone();
    assert_eq!(tokens.as_array().unwrap().len(), 2, "{tokens}");
    assert!(
        !tokens.to_string().contains("mosaic_agent_"),
        "never a secret: {tokens}"
    );
    assert_eq!(tokens[0]["workspaceIds"], json!([ws]));
    assert_eq!(
        (&tokens[0]["kinds"], &tokens[0]["container"]),
        (&Value::Null, &json!(false))
    );
    let first_id = tokens[1]["id"].as_str().unwrap().to_string();

    // Others see nothing and revoke nothing.
    let (_, stranger) = app.user("stranger@example.com").await;
    assert_eq!(
        codes(&app.gql(&stranger, list, json!({ "w": ws })).await),
        ["NOT_FOUND"]
    );
    let revoke = "mutation($id: ID!) { revokeAgentToken(id: $id) }";
    let before = agent_rows(&mut app.admin().await).await;
    assert_eq!(
        codes(&app.gql(&stranger, revoke, json!({ "id": first_id })).await),
        ["NOT_FOUND"]
    );
    assert_eq!(
        codes(&app.gql(&token, revoke, json!({ "id": "nope" })).await),
        ["BAD_USER_INPUT"]
    );
    assert_eq!(
        agent_rows(&mut app.admin().await).await,
        before,
        "refusals change nothing"
    );

    let steps = json!({ "steps": [{ "complete": { "ok": true } }] });
    let t = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "held", "kind": "SCRIPT", "instructions": steps }),
    )
    .await;
    let id = t["id"].as_str().unwrap().to_string();
    let (status, claim) = call(&app, &first, "/claim", json!({})).await;
    assert_eq!((status, claim["task"]["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(
        app.gql_ok(&token, revoke, json!({ "id": first_id })).await["revokeAgentToken"],
        true
    );

    let (status, body) = call(&app, &first, &format!("/tasks/{id}/heartbeat"), json!({ "attempt": 1 })).await;
    assert_eq!((status, error_code(&body)), (401, "AGENT_TOKEN_REVOKED"), "{body}");
    let (status, body) = call(&app, &first, "/claim", json!({})).await;
    assert_eq!((status, error_code(&body)), (401, "AGENT_TOKEN_REVOKED"), "{body}");
    let (status, body) = call(&app, "mosaic_agent_unknown", "/claim", json!({})).await;
    assert_eq!((status, error_code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    let requeued = task(&app, &token, &id).await;
    assert_eq!(
        requeued["status"], "QUEUED",
        "its task was queued again at once: {requeued}"
    );
    assert_eq!(requeued["statusReason"], "its agent token was revoked");
    assert_eq!(transitions(&requeued).last().unwrap(), "ASSIGNED>QUEUED");
    let (status, claim) = call(&app, &second, "/claim", json!({})).await;
    assert_eq!((status, claim["task"]["attempt"].as_i64()), (200, Some(2)));

    let live = app.gql_ok(&token, list, json!({ "w": ws })).await["agentTokens"].clone();
    assert_eq!(live.as_array().unwrap().len(), 1, "revoked ones are left out: {live}");
    let all = app.gql_ok(&token, list, json!({ "w": ws, "r": true })).await["agentTokens"].clone();
    let revoked = all
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == first_id.as_str())
        .unwrap();
    assert!(revoked["revokedAt"].is_string(), "{revoked}");
    let at = revoked["revokedAt"].clone();
    assert_eq!(
        app.gql_ok(&token, revoke, json!({ "id": first_id })).await["revokeAgentToken"],
        true
    );
    let again = app.gql_ok(&token, list, json!({ "w": ws, "r": true })).await["agentTokens"].clone();
    let revoked = again
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == first_id.as_str())
        .unwrap();
    assert_eq!(revoked["revokedAt"], at, "revoking again changes nothing");
    app.stop().await;
}
