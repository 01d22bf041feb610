//! Usage budgets of agent tasks (issue 15): a budget without headroom holds
//! its tasks back (BUDGET_EXCEEDED, visible in GraphQL) and stops an agent
//! after its checkpoint; raising, resetting or a window's reset lets them
//! run, with nothing lost or done twice. Real `mosaic worker` processes, the
//! worker API, GraphQL and `mosaic budget`.

use std::time::{Duration, Instant};

use crate::agent_tasks::{agent_token, call, create, error_code, instance, task, transitions, until, worker};
use crate::common::{self, TestApp, codes};
use serde_json::{Value, json};
use sqlx::PgConnection;

const BUDGET: &str =
    "id projectId userId unit window allocated consumed remaining windowStartedAt resetsAt burnRatePerHour";

fn set_budget_query() -> String {
    format!("mutation($i: SetBudgetInput!) {{ setBudget(input: $i) {{ {BUDGET} }} }}")
}

async fn set_budget(app: &TestApp, token: &str, input: Value) -> Value {
    app.gql_ok(token, &set_budget_query(), json!({ "i": input })).await["setBudget"].clone()
}

async fn budgets(app: &TestApp, token: &str, ws: &str) -> Vec<Value> {
    app.gql_ok(
        token,
        &format!("query($w: ID!) {{ budgets(workspaceId: $w) {{ {BUDGET} }} }}"),
        json!({ "w": ws }),
    )
    .await["budgets"]
        .as_array()
        .unwrap()
        .clone()
}

fn script(steps: Value) -> Value {
    json!({ "steps": steps })
}

/// The budget rows, to show a refusal wrote nothing.
async fn budget_rows(conn: &mut PgConnection) -> String {
    sqlx::query_scalar(
        "SELECT count(*) || ':' || coalesce(md5(string_agg(b::text, '|' ORDER BY b.id)), '') FROM agent_budgets b",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn budget_exhaustion_holds_tasks_back_visibly_and_raising_or_resetting_lets_them_run_once() {
    let (app, token) = instance(|_| {}).await;
    let ws = app.create_workspace(&token, "Crew").await;
    let b = set_budget(
        &app,
        &token,
        json!({ "workspaceId": ws, "unit": "TOKENS", "limit": 15, "window": "DAILY" }),
    )
    .await;
    assert_eq!(
        (b["allocated"].as_f64(), b["remaining"].as_f64()),
        (Some(15.0), Some(15.0))
    );
    assert!(b["resetsAt"].as_str().unwrap().ends_with("T00:00:00Z"), "{b}");
    let steps = |name: &str| {
        script(json!([
            { "usage": { "tokens": 10 } },
            { "checkpoint": { "done": name } },
            { "complete": { "by": name } }
        ]))
    };
    let a = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "a", "kind": "SCRIPT", "instructions": steps("a") }),
    )
    .await;
    let b = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "b", "kind": "SCRIPT", "instructions": steps("b") }),
    )
    .await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let agent = agent_token(&app, &token, &ws, &[]).await;
    let mut w = worker(&app, &agent);
    // a uses 10 of 15 and completes; b's usage takes the budget to 20: the
    // worker is told to stop, checkpoints after that step, and b is queued again.
    until("b is stopped over budget", Duration::from_secs(30), async || {
        let t = task(&app, &token, b).await;
        t["status"] == "QUEUED" && t["attempts"] == 1
    })
    .await;
    assert_eq!(task(&app, &token, a).await["status"], "COMPLETED");
    let held = task(&app, &token, b).await;
    assert_eq!(held["blockedBy"], "BUDGET_EXCEEDED", "{held}");
    assert!(
        held["statusReason"].as_str().unwrap().starts_with("BUDGET_EXCEEDED"),
        "{held}"
    );
    assert_eq!(
        (held["checkpointStep"].as_i64(), &held["checkpoint"]),
        (Some(0), &json!({}))
    );
    assert_eq!(held["usage"]["tokens"], 10);
    let c = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "c", "kind": "SCRIPT", "instructions": steps("c") }),
    )
    .await;
    let c = c["id"].as_str().unwrap().to_string();
    assert_eq!(task(&app, &token, &c).await["blockedBy"], "BUDGET_EXCEEDED");
    // Nothing is claimable: another agent's claim answers at once with none.
    let other = agent_token(&app, &token, &ws, &[]).await;
    let (status, body) = call(&app, &other, "/claim", json!({ "waitMs": 0 })).await;
    assert_eq!(status, 204, "{body}");
    let shown = &budgets(&app, &token, &ws).await[0];
    assert_eq!(
        (shown["consumed"].as_f64(), shown["remaining"].as_f64()),
        (Some(20.0), Some(0.0))
    );
    assert!(shown["burnRatePerHour"].as_f64().unwrap() > 0.0, "{shown}");

    // Raised: the waiting worker is woken, b resumes after its checkpoint, c runs.
    set_budget(
        &app,
        &token,
        json!({ "workspaceId": ws, "unit": "TOKENS", "limit": 40, "window": "DAILY" }),
    )
    .await;
    until("b and c complete", Duration::from_secs(30), async || {
        task(&app, &token, b).await["status"] == "COMPLETED" && task(&app, &token, &c).await["status"] == "COMPLETED"
    })
    .await;
    let done = task(&app, &token, b).await;
    assert_eq!(
        done["usage"]["tokens"], 10,
        "the resumed attempt did not repeat the usage"
    );
    assert_eq!(done["result"], json!({ "by": "b" }));
    assert_eq!(done["blockedBy"], Value::Null);
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
    assert_eq!(budgets(&app, &token, &ws).await[0]["consumed"], 30.0);

    // Exhausted again (a limit under what was used), then reset.
    set_budget(
        &app,
        &token,
        json!({ "workspaceId": ws, "unit": "TOKENS", "limit": 25, "window": "DAILY" }),
    )
    .await;
    let d = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "d", "kind": "SCRIPT", "instructions": steps("d") }),
    )
    .await;
    let d = d["id"].as_str().unwrap().to_string();
    assert_eq!(task(&app, &token, &d).await["blockedBy"], "BUDGET_EXCEEDED");
    let (status, _) = call(&app, &other, "/claim", json!({ "waitMs": 0 })).await;
    assert_eq!(status, 204);
    let reset = app
        .gql_ok(
            &token,
            &format!("mutation($w: ID!) {{ resetBudget(workspaceId: $w, unit: TOKENS) {{ {BUDGET} }} }}"),
            json!({ "w": ws }),
        )
        .await["resetBudget"]
        .clone();
    assert_eq!(
        (reset["consumed"].as_f64(), reset["remaining"].as_f64()),
        (Some(0.0), Some(25.0))
    );
    until("d completes", Duration::from_secs(30), async || {
        task(&app, &token, &d).await["status"] == "COMPLETED"
    })
    .await;
    w.kill().await.unwrap();
    let once: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FILTER (WHERE e.to_status = 'COMPLETED') FROM agent_tasks t
         JOIN agent_task_events e ON e.task_id = t.id GROUP BY t.id, t.status",
    )
    .fetch_all(&mut app.admin().await)
    .await
    .unwrap();
    assert_eq!(once.len(), 4);
    assert!(once.iter().all(|(s, n)| s == "COMPLETED" && *n == 1), "{once:?}");
    app.stop().await;
}

#[tokio::test]
async fn an_agent_over_budget_is_told_to_stop_and_its_checkpoint_queues_the_task_again() {
    let (app, token) = instance(|_| {}).await;
    let ws = app.create_workspace(&token, "Crew").await;
    let project = |name: &str| {
        let (app, token, ws, name) = (&app, &token, &ws, name.to_string());
        async move {
            app.gql_ok(
                token,
                "mutation($w: ID!, $n: String!) { createProject(input: {workspaceId: $w, name: $n}) { id } }",
                json!({ "w": ws, "n": name }),
            )
            .await["createProject"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (tight, roomy) = (project("tight").await, project("roomy").await);
    set_budget(
        &app,
        &token,
        json!({ "workspaceId": ws, "projectId": tight, "unit": "AGENT_MINUTES", "limit": 1, "window": "MONTHLY" }),
    )
    .await;
    let t = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "projectId": tight, "title": "t", "kind": "WORKER", "priority": 9 }),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    let agent = agent_token(&app, &token, &ws, &[]).await;
    let (status, claim) = call(&app, &agent, "/claim", json!({})).await;
    assert_eq!((status, claim["task"]["id"].as_str()), (200, Some(id)));
    let path = |what: &str| format!("/tasks/{id}/{what}");
    let (status, _) = call(&app, &agent, &path("usage"), json!({ "attempt": 1, "agentMs": 30_000 })).await;
    assert_eq!(status, 200, "half a minute of one");
    let (status, _) = call(
        &app,
        &agent,
        &path("checkpoint"),
        json!({ "attempt": 1, "step": 1, "checkpoint": { "n": 1 } }),
    )
    .await;
    assert_eq!(status, 200, "headroom left: the checkpoint is only saved");
    let (status, body) = call(&app, &agent, &path("usage"), json!({ "attempt": 1, "agentMs": 30_000 })).await;
    assert_eq!((status, error_code(&body)), (409, "BUDGET_EXCEEDED"), "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["status"], "RUNNING",
        "still held until its checkpoint"
    );
    let (status, _) = call(&app, &agent, &path("heartbeat"), json!({ "attempt": 1 })).await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &app,
        &agent,
        &path("checkpoint"),
        json!({ "attempt": 1, "step": 2, "checkpoint": { "n": 2 } }),
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "BUDGET_EXCEEDED"), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["status"], "QUEUED");
    let (status, body) = call(&app, &agent, &path("heartbeat"), json!({ "attempt": 1 })).await;
    assert_eq!((status, error_code(&body)), (409, "TASK_NOT_HELD"), "{body}");
    let stopped = task(&app, &token, id).await;
    assert_eq!(
        (stopped["status"].as_str(), stopped["blockedBy"].as_str()),
        (Some("QUEUED"), Some("BUDGET_EXCEEDED"))
    );
    assert_eq!(
        (stopped["checkpoint"].clone(), stopped["checkpointStep"].as_i64()),
        (json!({ "n": 2 }), Some(2))
    );
    let shown = &budgets(&app, &token, &ws).await[0];
    assert_eq!(
        (shown["consumed"].as_f64(), shown["remaining"].as_f64()),
        (Some(1.0), Some(0.0))
    );
    assert_eq!(shown["projectId"].as_str(), Some(tight.as_str()));

    // Only the tight project's tasks are held back: another project's, and
    // one without a project, are claimed (lower priority notwithstanding).
    let free = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "projectId": roomy, "title": "free", "kind": "WORKER", "priority": 1 }),
    )
    .await;
    assert_eq!(free["blockedBy"], Value::Null);
    let (status, claim) = call(&app, &agent, "/claim", json!({})).await;
    assert_eq!((status, &claim["task"]["id"]), (200, &free["id"]), "{claim}");
    let (status, _) = call(&app, &agent, "/claim", json!({})).await;
    assert_eq!(status, 204, "the tight project's task is not claimed");

    // A budget on the user who created it holds back the user's tasks elsewhere too.
    let me = local_user(&app, "owner@example.com").await;
    set_budget(
        &app,
        &token,
        json!({ "workspaceId": ws, "userId": me, "unit": "COST", "limit": 0, "window": "DAILY" }),
    )
    .await;
    let mine = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "projectId": roomy, "title": "mine", "kind": "WORKER" }),
    )
    .await;
    assert_eq!(mine["blockedBy"], "BUDGET_EXCEEDED");
    let (status, _) = call(&app, &agent, "/claim", json!({})).await;
    assert_eq!(status, 204);
    app.stop().await;
}

/// The user's global ID.
async fn local_user(app: &TestApp, email: &str) -> String {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap();
    format!("User:{}:{id}", app.state.instance_id)
}

#[tokio::test]
async fn a_window_reset_lets_held_back_tasks_run_and_windows_step_by_day_and_month() {
    let (app, token) = instance(|_| {}).await;
    let ws = app.create_workspace(&token, "Crew").await;
    let resets = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let resets_text = resets.format(&time::format_description::well_known::Rfc3339).unwrap();
    let b = set_budget(
        &app,
        &token,
        json!({ "workspaceId": ws, "unit": "TOKENS", "limit": 1, "window": "AT", "resetsAt": resets_text }),
    )
    .await;
    assert_eq!(b["remaining"], 1.0);
    // As if agents had used it all.
    sqlx::query("UPDATE agent_budgets SET consumed = 1")
        .execute(&mut app.admin().await)
        .await
        .unwrap();
    let t = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "t", "kind": "WORKER" }),
    )
    .await;
    assert_eq!(t["blockedBy"], "BUDGET_EXCEEDED");
    let agent = agent_token(&app, &token, &ws, &[]).await;
    // A waiting claim looks again when the window resets.
    let asked = Instant::now();
    let (status, claim) = call(&app, &agent, "/claim", json!({ "waitMs": 20_000 })).await;
    let waited = asked.elapsed();
    assert_eq!((status, &claim["task"]["id"]), (200, &t["id"]), "{claim}");
    assert!(time::OffsetDateTime::now_utc() >= resets, "claimed after the reset");
    assert!(
        waited < Duration::from_secs(10),
        "claimed at the reset, not at the wait's end: {waited:?}"
    );
    let shown = &budgets(&app, &token, &ws).await[0];
    assert_eq!(
        (shown["consumed"].as_f64(), shown["resetsAt"].clone()),
        (Some(0.0), Value::Null)
    );

    // A DAILY window whose reset passed (a day gone by) is empty, and its
    // next reset is a day on; the next charge rolls the row forward.
    let b = set_budget(
        &app,
        &token,
        json!({ "workspaceId": ws, "unit": "COST", "limit": 5, "window": "DAILY" }),
    )
    .await;
    let mut admin = app.admin().await;
    sqlx::query(
        "UPDATE agent_budgets SET consumed = 5, resets_at = clock_timestamp() - interval '1 hour',
             window_started_at = clock_timestamp() - interval '25 hours' WHERE unit = 'COST'",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let shown = budgets(&app, &token, &ws)
        .await
        .into_iter()
        .find(|x| x["id"] == b["id"])
        .unwrap();
    assert_eq!(shown["consumed"], 0.0, "{shown}");
    let next = time::OffsetDateTime::parse(
        shown["resetsAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let in_hours = (next - time::OffsetDateTime::now_utc()).whole_minutes() as f64 / 60.0;
    assert!(
        (22.9..=23.1).contains(&in_hours),
        "a day after the passed reset: {in_hours} h"
    );
    let id = t["id"].as_str().unwrap();
    let (status, _) = call(
        &app,
        &agent,
        &format!("/tasks/{id}/usage"),
        json!({ "attempt": 1, "cost": 2 }),
    )
    .await;
    assert_eq!(status, 200);
    let (consumed, resets_at_ok): (i64, bool) = sqlx::query_as(
        "SELECT consumed, resets_at > clock_timestamp() + interval '22 hours' FROM agent_budgets WHERE unit = 'COST'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((consumed, resets_at_ok), (2, true), "rolled, then charged");

    // Day and month steps, in UTC.
    for (kind, at, now, next) in [
        ("DAILY", "2026-01-01 00:00Z", "2026-01-03 05:00Z", "2026-01-04 00:00Z"),
        ("DAILY", "2026-01-01 06:30Z", "2026-01-01 06:30Z", "2026-01-02 06:30Z"),
        ("MONTHLY", "2026-01-15 08:00Z", "2026-03-20 00:00Z", "2026-04-15 08:00Z"),
        ("MONTHLY", "2026-01-15 08:00Z", "2026-03-15 07:00Z", "2026-03-15 08:00Z"),
        ("MONTHLY", "2026-11-01 00:00Z", "2026-12-03 13:00Z", "2027-01-01 00:00Z"),
    ] {
        let got: bool = sqlx::query_scalar(
            "SELECT agent_budget_next_reset($1, $2::timestamptz, $3::timestamptz) = $4::timestamptz",
        )
        .bind(kind)
        .bind(at)
        .bind(now)
        .bind(next)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert!(got, "{kind} from {at} at {now}: {next}");
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_budget_input_is_refused_with_its_own_code_and_writes_nothing() {
    let (app, token) = instance(|_| {}).await;
    let ws = app.create_workspace(&token, "Crew").await;
    let elsewhere = app.create_workspace(&token, "Elsewhere").await;
    let foreign = app
        .gql_ok(
            &token,
            "mutation($w: ID!) { createProject(input: {workspaceId: $w, name: \"p\"}) { id } }",
            json!({ "w": elsewhere }),
        )
        .await["createProject"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, member) = app.user("member@example.com").await;
    app.add_member(&token, &ws, "member@example.com", "MEMBER").await;
    app.user("stranger@example.com").await;
    let stranger = local_user(&app, "stranger@example.com").await;
    let member_id = local_user(&app, "member@example.com").await;
    let mut admin = app.admin().await;
    let before = budget_rows(&mut admin).await;
    let base = json!({ "workspaceId": ws, "unit": "TOKENS", "limit": 10, "window": "DAILY" });
    let with = |patch: Value| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        v
    };
    let past = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for (who, input, code) in [
        (&token, with(json!({ "limit": -1 })), "BUDGET_LIMIT_INVALID"),
        // Units and windows are enums: GraphQL refuses others before anything runs.
        (&token, with(json!({ "unit": "EUROS" })), "GRAPHQL_VALIDATION_FAILED"),
        (&token, with(json!({ "window": "WEEKLY" })), "GRAPHQL_VALIDATION_FAILED"),
        (&token, with(json!({ "window": "AT" })), "BUDGET_RESETS_AT_INVALID"),
        (&token, with(json!({ "resetsAt": past })), "BUDGET_RESETS_AT_INVALID"),
        (&token, with(json!({ "projectId": foreign })), "BUDGET_SCOPE_NOT_FOUND"),
        (&token, with(json!({ "userId": stranger })), "BUDGET_SCOPE_NOT_FOUND"),
        (
            &token,
            with(json!({ "userId": member_id, "projectId": foreign })),
            "BUDGET_SCOPE_AMBIGUOUS",
        ),
        (&token, with(json!({ "workspaceId": foreign })), "BAD_USER_INPUT"),
        (&member, base.clone(), "FORBIDDEN"),
    ] {
        let body = app.gql(who, &set_budget_query(), json!({ "i": input })).await;
        assert_eq!(codes(&body), [code], "{input}: {body}");
    }
    let body = app
        .gql(
            &token,
            "mutation($w: ID!) { resetBudget(workspaceId: $w, unit: COST) { id } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(codes(&body), ["BUDGET_NOT_FOUND"], "{body}");
    assert_eq!(budget_rows(&mut admin).await, before, "refusals wrote nothing");

    // A member reads the budgets; an instance admin who is no member sets them.
    set_budget(&app, &token, base.clone()).await;
    assert_eq!(budgets(&app, &member, &ws).await.len(), 1);
    let (_, operator) = app.user("operator@example.com").await;
    sqlx::query("UPDATE users SET is_admin = true WHERE email = 'operator@example.com'")
        .execute(&mut admin)
        .await
        .unwrap();
    let b = set_budget(&app, &operator, with(json!({ "limit": 99 }))).await;
    assert_eq!(b["allocated"], 99.0);
    assert_eq!(
        budgets(&app, &token, &ws).await.len(),
        1,
        "one budget per scope and unit"
    );
    app.stop().await;
}

#[tokio::test]
async fn mosaic_budget_sets_shows_and_resets_and_refuses_bad_input_by_code() {
    let (app, token) = instance(|_| {}).await;
    let ws = app.create_workspace(&token, "Crew").await;
    let secret = common::test_config(app.database_url.clone())
        .secret_key
        .map(|s| s.0)
        .unwrap_or_default();
    let run = |args: Vec<&str>| {
        let (database, secret) = (app.database_url.clone(), secret.clone());
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mosaic"))
                .arg("budget")
                .args(&args)
                .env_clear()
                .env("DATABASE_URL", database)
                .env("MOSAIC_SECRET_KEY", secret)
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8(out.stdout).unwrap(),
                String::from_utf8(out.stderr).unwrap(),
            )
        }
    };
    let mut admin = app.admin().await;
    let before = budget_rows(&mut admin).await;
    for (args, code) in [
        (
            vec!["--unit", "tokens", "--limit", "-5", "--window", "daily"],
            "BUDGET_LIMIT_INVALID",
        ),
        (
            vec!["--unit", "euros", "--limit", "5", "--window", "daily"],
            "BUDGET_UNIT_UNKNOWN",
        ),
        (
            vec!["--unit", "tokens", "--limit", "5", "--window", "weekly"],
            "BUDGET_WINDOW_UNKNOWN",
        ),
        (
            vec![
                "--unit",
                "tokens",
                "--limit",
                "5",
                "--window",
                "daily",
                "--user",
                "nobody@example.com",
            ],
            "BUDGET_SCOPE_NOT_FOUND",
        ),
        (
            vec![
                "--unit",
                "tokens",
                "--limit",
                "5",
                "--window",
                "at",
                "--resets-at",
                "tomorrow",
            ],
            "BUDGET_RESETS_AT_INVALID",
        ),
    ] {
        let mut all = vec!["set", "--workspace", &ws];
        all.extend(args.iter().copied());
        let (ok, _, stderr) = run(all).await;
        assert!(!ok && stderr.contains(code), "{args:?}: {stderr}");
    }
    assert_eq!(budget_rows(&mut admin).await, before, "refusals wrote nothing");

    let (ok, out, err) = run(vec![
        "set",
        "--workspace",
        &ws,
        "--unit",
        "agent-minutes",
        "--limit",
        "30",
        "--window",
        "monthly",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("workspace  AGENT_MINUTES  MONTHLY  allocated=30 consumed=0 remaining=30"),
        "{out}"
    );
    let shown = budgets(&app, &token, &ws).await;
    assert_eq!((shown.len(), shown[0]["allocated"].as_f64()), (1, Some(30.0)));
    sqlx::query("UPDATE agent_budgets SET consumed = 600000")
        .execute(&mut admin)
        .await
        .unwrap();
    let (ok, out, _) = run(vec!["status", "--workspace", &ws]).await;
    assert!(ok && out.contains("consumed=10 remaining=20"), "{out}");
    let (ok, out, err) = run(vec!["reset", "--workspace", &ws, "--unit", "agent-minutes"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("consumed=0 remaining=30"), "{out}");
    assert_eq!(budgets(&app, &token, &ws).await[0]["consumed"], 0.0);
    app.stop().await;
}
