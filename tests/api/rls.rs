//! Tenant isolation by Row-Level Security, through GraphQL and in raw SQL.

use crate::common;

use common::{code, spawn_app};
use serde_json::json;
use sqlx::Connection;

/// Every query and mutation of one user against another's workspace returns
/// nothing, NOT_FOUND or FORBIDDEN, and changes nothing.
#[tokio::test]
async fn users_cannot_reach_each_others_workspaces() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (bob_id, bob) = app.user("bob@example.com").await;
    let ws_a = app.create_workspace(&alice, "Alice's").await;
    let ws_b = app.create_workspace(&bob, "Bob's").await;
    let task_a = app.create_task(&alice, &ws_a, "secret plan").await;
    let project_a = app
        .gql_ok(
            &alice,
            "mutation($w: ID!) { createProject(input: {workspaceId: $w, name: \"P\"}) { id } }",
            json!({ "w": ws_a }),
        )
        .await["createProject"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.create_task(&bob, &ws_b, "bob's task").await;

    // Reads: nothing of Alice's is visible to Bob.
    let d = app
        .gql_ok(&bob, "query($w: ID!, $t: ID!, $p: ID!) { workspaces { name } workspace(id: $w) { id } node(id: $t) { id } p: node(id: $p) { id } projects(workspaceId: $w) { id } tasks { totalCount edges { node { title } } } wt: tasks(workspaceId: $w) { totalCount } activity(workspaceId: $w) { action } }", json!({ "w": ws_a, "t": task_a, "p": project_a }))
        .await;
    assert_eq!(d["workspaces"], json!([{ "name": "Bob's" }]));
    assert!(d["workspace"].is_null() && d["node"].is_null() && d["p"].is_null());
    assert_eq!(d["projects"], json!([]));
    assert_eq!(d["tasks"]["totalCount"], 1);
    assert_eq!(d["tasks"]["edges"][0]["node"]["title"], "bob's task");
    assert_eq!(d["wt"]["totalCount"], 0);
    assert_eq!(d["activity"], json!([]));
    let alice_user = app.gql_ok(&alice, "{ me { id } }", json!({})).await["me"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        app.gql_ok(
            &bob,
            "query($u: ID!) { node(id: $u) { id } }",
            json!({ "u": alice_user })
        )
        .await["node"]
            .is_null()
    );

    // Writes: each refused, nothing changed.
    let before = app.row_counts().await;
    let attempts = [
        (
            "mutation($w: ID!) { updateWorkspace(input: {id: $w, name: \"mine\"}) { id } }",
            json!({ "w": ws_a }),
        ),
        ("mutation($w: ID!) { deleteWorkspace(id: $w) }", json!({ "w": ws_a })),
        (
            "mutation($w: ID!) { inviteWorkspaceMember(input: {workspaceId: $w, email: \"bob@example.com\", role: OWNER}) { role } }",
            json!({ "w": ws_a }),
        ),
        (
            "mutation($w: ID!) { createProject(input: {workspaceId: $w, name: \"x\"}) { id } }",
            json!({ "w": ws_a }),
        ),
        (
            "mutation($p: ID!) { updateProject(input: {id: $p, name: \"x\"}) { id } }",
            json!({ "p": project_a }),
        ),
        ("mutation($p: ID!) { deleteProject(id: $p) }", json!({ "p": project_a })),
        (
            "mutation($w: ID!) { createTask(input: {workspaceId: $w, title: \"x\"}) { id } }",
            json!({ "w": ws_a }),
        ),
        (
            "mutation($t: ID!) { updateTask(input: {id: $t, title: \"x\"}) { id } }",
            json!({ "t": task_a }),
        ),
        ("mutation($t: ID!) { deleteTask(id: $t) }", json!({ "t": task_a })),
    ];
    for (query, vars) in attempts {
        let body = app.gql(&bob, query, vars).await;
        let c = code(&body);
        assert!(c == "NOT_FOUND" || c == "FORBIDDEN", "{query}: {body}");
    }
    // Bob cannot add himself, and cannot remove Alice.
    let alice_member = json!({ "w": ws_a, "u": alice_user });
    let body = app
        .gql(
            &bob,
            "mutation($w: ID!, $u: ID!) { removeWorkspaceMember(input: {workspaceId: $w, userId: $u}) }",
            alice_member,
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    assert_eq!(app.row_counts().await, before);
    let bob_global = app.gql_ok(&bob, "{ me { id } }", json!({})).await["me"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(bob_global.ends_with(&bob_id.to_string()));
    app.stop().await;
}

/// Raw SQL as the application role: outside the scope nothing is visible,
/// and with no scope set nothing at all.
#[tokio::test]
async fn raw_sql_as_the_application_role_sees_only_its_scope() {
    let app = spawn_app().await;
    let (alice_id, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let ws_a = app.create_workspace(&alice, "A").await;
    let ws_b = app.create_workspace(&bob, "B").await;
    app.create_task(&alice, &ws_a, "a1").await;
    app.create_task(&bob, &ws_b, "b1").await;

    let mut conn = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
    sqlx::raw_sql("SET ROLE mosaic_app").execute(&mut conn).await.unwrap();
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(role, "mosaic_app");
    let denied = sqlx::query("SELECT count(*) FROM api_tokens")
        .fetch_one(&mut conn)
        .await
        .unwrap_err();
    assert!(
        denied.to_string().contains("permission denied"),
        "token hashes are never readable: {denied}"
    );
    for table in [
        "users",
        "workspaces",
        "workspace_members",
        "projects",
        "tasks",
        "activity_log",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} visible with no scope");
    }
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('mosaic.user_id', $1, true)")
        .bind(alice_id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM tasks")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(titles, vec!["a1".to_string()]);
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM workspaces")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(names, vec!["A".to_string()]);
    // A write into another workspace is refused by policy.
    let err =
        sqlx::query("INSERT INTO tasks (id, workspace_id, title) SELECT gen_random_uuid(), id, 'x' FROM workspaces")
            .execute(&mut *tx)
            .await;
    assert_eq!(
        err.unwrap().rows_affected(),
        1,
        "only the visible workspace is a target"
    );
    tx.rollback().await.unwrap();
    // The scope was transaction-local: gone now.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // Every tenant table has RLS enabled and forced, and the app role owns nothing.
    let mut admin = app.admin().await;
    let unforced: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
         AND relname NOT IN ('instance_identity', '_sqlx_migrations', 'instance_keys', 'peers', 'peer_audit') AND NOT (relrowsecurity AND relforcerowsecurity)",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(unforced.is_empty(), "tables without forced RLS: {unforced:?}");
    let owned: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relowner = 'mosaic_app'::regrole")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(owned, 0);
    let bypass: bool = sqlx::query_scalar("SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = 'mosaic_app'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!bypass);
    app.stop().await;
}

#[tokio::test]
async fn guests_read_but_cannot_write() {
    let app = spawn_app().await;
    let (_, owner) = app.user("owner@example.com").await;
    let (_, guest) = app.user("guest@example.com").await;
    let ws = app.create_workspace(&owner, "W").await;
    let task = app.create_task(&owner, &ws, "t").await;
    app.add_member(&owner, &ws, "guest@example.com", "GUEST").await;
    let d = app
        .gql_ok(
            &guest,
            "query($w: ID!) { tasks(workspaceId: $w) { totalCount } workspace(id: $w) { viewerRole } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(d["tasks"]["totalCount"], 1);
    assert_eq!(d["workspace"]["viewerRole"], "GUEST");
    let before = app.row_counts().await;
    for (q, v) in [
        (
            "mutation($w: ID!) { createTask(input: {workspaceId: $w, title: \"x\"}) { id } }",
            json!({ "w": ws }),
        ),
        (
            "mutation($t: ID!) { updateTask(input: {id: $t, status: DONE}) { id } }",
            json!({ "t": task }),
        ),
        ("mutation($t: ID!) { deleteTask(id: $t) }", json!({ "t": task })),
        (
            "mutation($w: ID!) { createProject(input: {workspaceId: $w, name: \"x\"}) { id } }",
            json!({ "w": ws }),
        ),
        (
            "mutation($w: ID!) { inviteWorkspaceMember(input: {workspaceId: $w, email: \"owner@example.com\", role: GUEST}) { role } }",
            json!({ "w": ws }),
        ),
    ] {
        let body = app.gql(&guest, q, v).await;
        assert_eq!(code(&body), "FORBIDDEN", "{q}: {body}");
    }
    assert_eq!(app.row_counts().await, before);
    app.stop().await;
}

/// A policy calls the functions that read the scope (the caller's
/// workspaces, user, agent) in a scalar subquery, which PostgreSQL evaluates
/// once per statement; called bare, they ran once per row filtered (a page
/// of tasks ran the membership query once per task scanned).
#[tokio::test]
async fn policies_read_the_scope_once_per_statement() {
    let app = spawn_app().await;
    let (alice_id, alice) = app.user("alice@example.com").await;
    let ws = app.create_workspace(&alice, "A").await;
    for i in 0..3 {
        app.create_task(&alice, &ws, &format!("t{i}")).await;
    }
    let mut admin = app.admin().await;
    let policies: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT polrelid::regclass::text, polname::text,
                coalesce(pg_get_expr(polqual, polrelid), '') || ' ' || coalesce(pg_get_expr(polwithcheck, polrelid), '')
         FROM pg_policy",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(policies.len() > 50, "the policies were read: {}", policies.len());
    let per_row: Vec<String> = policies
        .iter()
        .filter(|(_, _, text)| bare_scope_call(text))
        .map(|(table, name, text)| format!("{table}.{name}: {text}"))
        .collect();
    assert!(
        per_row.is_empty(),
        "policies calling a scope function per row: {per_row:#?}"
    );

    // And the plan of a page shows it: the filter compares with the
    // InitPlan's value, never calls the function.
    let mut tx = admin.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL ROLE mosaic_app; SELECT set_config('mosaic.user_id', '{alice_id}', true)"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN SELECT id FROM tasks ORDER BY created_at, id LIMIT 2")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("InitPlan"), "{plan}");
    assert!(!plan.contains("readable_workspace_ids"), "{plan}");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 3, "the policy still lets the member see her tasks");
    tx.rollback().await.unwrap();
    app.stop().await;
}

/// Whether a policy's text calls an argumentless function (one that can
/// only read the scope) other than as `( SELECT f() AS f)`.
fn bare_scope_call(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices("()").any(|(end, _)| {
        let start = text[..end]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        start < end && !bytes[start].is_ascii_digit() && !text[..start].ends_with("SELECT ")
    })
}
