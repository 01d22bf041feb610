//! Pool hygiene: a pooled connection never carries one request's scope into
//! the next, under heavy interleaving on a tiny pool and connection by
//! connection.

use crate::common;

use std::time::Duration;

use common::{TestApp, code, codes, local_id, spawn_app_with};
use futures::StreamExt;
use mosaic::db::{RequestDb, Scope};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

struct Tenant {
    name: String,
    email: String,
    user_id: Uuid,
    token: String,
    ws: String,
}

impl Tenant {
    fn prefix(&self) -> String {
        format!("{}:", self.name)
    }
}

async fn tenants(app: &TestApp, names: &[&str]) -> Vec<Tenant> {
    let mut out = Vec::new();
    for name in names {
        let email = format!("{name}@example.com");
        let (user_id, token) = app.user(&email).await;
        let ws = app.create_workspace(&token, &format!("{name}'s")).await;
        for j in 0..3 {
            app.create_task(&token, &ws, &format!("{name}:seed-{j}")).await;
        }
        out.push(Tenant {
            name: name.to_string(),
            email,
            user_id,
            token,
            ws,
        });
    }
    out
}

/// A TITLE cursor the server issued, its sort key replaced by text
/// PostgreSQL cannot hold (U+0000): a request using it fails inside its
/// transaction, after the scope was set.
async fn poisoned_cursor(app: &TestApp, token: &str) -> String {
    let d = app
        .gql_ok(
            token,
            "{ tasks(orderBy: {field: TITLE}, first: 1) { pageInfo { endCursor } } }",
            json!({}),
        )
        .await;
    let cursor = d["tasks"]["pageInfo"]["endCursor"].as_str().unwrap();
    common::with_sort_key(app, cursor, json!("a\u{0}b"))
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Me,
    Tasks,
    Create,
    Workspaces,
    RolledBack,
    FailedStatement,
}

const KINDS: [Kind; 6] = [
    Kind::Me,
    Kind::Tasks,
    Kind::Create,
    Kind::Workspaces,
    Kind::RolledBack,
    Kind::FailedStatement,
];

fn request(kind: Kind, t: &Tenant, k: usize, poison: &str) -> (&'static str, Value) {
    match kind {
        Kind::Me => ("{ me { id email } }", json!({})),
        Kind::Tasks => (
            "{ me { email } tasks(first: 100) { totalCount edges { node { title workspace { id } } } } }",
            json!({}),
        ),
        Kind::Create => (
            "mutation($w: ID!, $t: String!) { createTask(input: {workspaceId: $w, title: $t}) { title workspace { id } } }",
            json!({ "w": t.ws, "t": format!("{}new-{k}", t.prefix()) }),
        ),
        Kind::Workspaces => ("{ workspaces { id name members { user { email } } } }", json!({})),
        Kind::RolledBack => (
            "mutation($w: ID!, $t: String!) { a: createTask(input: {workspaceId: $w, title: $t}) { id } b: createTask(input: {workspaceId: $w, title: \"\"}) { id } }",
            json!({ "w": t.ws, "t": format!("{}doomed-{k}", t.prefix()) }),
        ),
        Kind::FailedStatement => (
            "query($a: String) { tasks(orderBy: {field: TITLE}, after: $a) { totalCount } }",
            json!({ "a": poison }),
        ),
    }
}

/// Checks that a response holds only this tenant's data.
fn check(kind: Kind, t: &Tenant, body: &Value) {
    let d = &body["data"];
    let ctx = format!("{kind:?} as {}: {body}", t.name);
    match kind {
        Kind::Me => {
            assert_eq!(d["me"]["email"], t.email.as_str(), "{ctx}");
            assert_eq!(local_id(d["me"]["id"].as_str().unwrap()), t.user_id, "{ctx}");
        }
        Kind::Tasks => {
            assert_eq!(d["me"]["email"], t.email.as_str(), "{ctx}");
            let edges = d["tasks"]["edges"].as_array().expect(&ctx);
            assert!(edges.len() >= 3, "{ctx}");
            assert_eq!(d["tasks"]["totalCount"], edges.len(), "{ctx}");
            for e in edges {
                let title = e["node"]["title"].as_str().unwrap();
                assert!(title.starts_with(&t.prefix()), "{ctx}");
                assert_eq!(e["node"]["workspace"]["id"], t.ws.as_str(), "{ctx}");
            }
        }
        Kind::Create => {
            let title = d["createTask"]["title"].as_str().expect(&ctx);
            assert!(title.starts_with(&t.prefix()), "{ctx}");
            assert_eq!(d["createTask"]["workspace"]["id"], t.ws.as_str(), "{ctx}");
        }
        Kind::Workspaces => {
            let expected = json!([{
                "id": t.ws,
                "name": format!("{}'s", t.name),
                "members": [{ "user": { "email": t.email } }],
            }]);
            assert_eq!(d["workspaces"], expected, "{ctx}");
        }
        Kind::RolledBack | Kind::FailedStatement => {
            assert_eq!(codes(body), ["BAD_USER_INPUT"], "{ctx}");
        }
    }
}

#[tokio::test]
async fn interleaved_requests_on_a_two_connection_pool_see_only_their_own_data() {
    let app = spawn_app_with(|c| c.pool_size = 2).await;
    let tenants = tenants(&app, &["ann", "bob", "cid", "dee", "eve", "fay"]).await;
    // 6 tenants x 6 kinds x 10 rounds, tenants and kinds interleaved so that
    // consecutive requests on a connection belong to different users.
    let plan: Vec<(Kind, usize, usize)> = (0..360)
        .map(|k| (KINDS[(k / tenants.len() + k) % KINDS.len()], k % tenants.len(), k))
        .collect();
    let poison = &poisoned_cursor(&app, &tenants[0].token).await;
    let app = &app;
    let tenants = &tenants;
    let results: Vec<_> = futures::stream::iter(plan.iter().copied())
        .map(|(kind, t, k)| async move {
            let (query, vars) = request(kind, &tenants[t], k, poison);
            (kind, t, app.gql_status(&tenants[t].token, query, vars).await)
        })
        .buffer_unordered(48)
        .collect()
        .await;
    assert_eq!(results.len(), plan.len());
    let mut created = vec![0; tenants.len()];
    for (kind, t, (status, body)) in &results {
        assert_eq!(*status, 200, "{body}");
        check(*kind, &tenants[*t], body);
        if let Kind::Create = kind {
            created[*t] += 1;
        }
    }
    assert!(created.iter().all(|&n| n > 0), "every tenant wrote: {created:?}");

    // In the database: every write landed in its author's workspace, under its
    // author's name, and nothing of the rolled-back requests remains.
    let mut admin = app.admin().await;
    let doomed: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE title LIKE '%:doomed-%'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(doomed, 0);
    for (t, n) in tenants.iter().zip(&created) {
        let (total, misplaced): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE workspace_id <> $2 OR created_by IS DISTINCT FROM $3)
             FROM tasks WHERE starts_with(title, $1)",
        )
        .bind(t.prefix())
        .bind(local_id(&t.ws))
        .bind(t.user_id)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!((total, misplaced), (3 + n, 0), "{}", t.name);
        let other_actors: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM activity_log WHERE workspace_id = $1 AND actor_id IS DISTINCT FROM $2",
        )
        .bind(local_id(&t.ws))
        .bind(t.user_id)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(other_actors, 0, "{}: activity by someone else", t.name);
    }
}

/// What a pooled connection looks like between requests.
#[derive(Debug, PartialEq)]
struct Idle {
    pid: i32,
    role: String,
    user_id: String,
    workspace_ids: String,
    write_workspace_ids: String,
    statement_timeout: String,
    visible_tasks: i64,
    /// Inside a transaction begun before this statement.
    in_transaction: bool,
}

async fn idle_state(pool: &PgPool) -> Idle {
    let mut conn = pool.acquire().await.unwrap();
    let row: (i32, String, String, String, String, String, i64) = sqlx::query_as(
        "SELECT pg_backend_pid(), current_user::text,
                coalesce(current_setting('mosaic.user_id', true), ''),
                coalesce(current_setting('mosaic.workspace_ids', true), ''),
                coalesce(current_setting('mosaic.write_workspace_ids', true), ''),
                current_setting('statement_timeout'),
                (SELECT count(*) FROM tasks)",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    Idle {
        pid: row.0,
        role: row.1,
        user_id: row.2,
        workspace_ids: row.3,
        write_workspace_ids: row.4,
        statement_timeout: row.5,
        visible_tasks: row.6,
        // A savepoint is refused outside a transaction block.
        in_transaction: sqlx::raw_sql("SAVEPOINT probe").execute(&mut *conn).await.is_ok(),
    }
}

/// The clean state: the application role, no scope, nothing visible, the
/// server's default statement timeout.
fn clean(pid: i32, default_timeout: &str) -> Idle {
    Idle {
        pid,
        role: "mosaic_app".into(),
        user_id: String::new(),
        workspace_ids: String::new(),
        write_workspace_ids: String::new(),
        statement_timeout: default_timeout.into(),
        visible_tasks: 0,
        in_transaction: false,
    }
}

async fn default_statement_timeout(app: &TestApp) -> String {
    sqlx::query_scalar("SELECT current_setting('statement_timeout')")
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap()
}

/// The server's own pool, one connection: after committed, rolled-back and
/// failed requests, that connection holds no trace of the request's scope.
#[tokio::test]
async fn the_servers_connection_is_clean_after_every_kind_of_request() {
    let app = spawn_app_with(|c| {
        c.pool_size = 1;
        c.statement_timeout = Duration::from_millis(4321);
    })
    .await;
    let pool = app.state.pool.clone();
    let default_timeout = default_statement_timeout(&app).await;
    assert_ne!(default_timeout, "4321ms");
    let t = &tenants(&app, &["ann"]).await[0];
    let poison = poisoned_cursor(&app, &t.token).await;
    let pid = idle_state(&pool).await.pid;
    for (i, kind) in KINDS.iter().enumerate() {
        let (query, vars) = request(*kind, t, i, &poison);
        let body = app.gql(&t.token, query, vars).await;
        check(*kind, t, &body);
        assert_eq!(idle_state(&pool).await, clean(pid, &default_timeout), "after {kind:?}");
    }
    assert_eq!(pool.size(), 1, "one connection served everything");
    app.stop().await;
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    Commit,
    Rollback,
    /// The request future was dropped (e.g. a timeout) mid-transaction.
    Dropped,
    /// A statement failed, aborting the transaction, then it was rolled back.
    FailedThenRollback,
    /// Dropped while its BEGIN was on the wire (a client gone at that
    /// moment): sqlx before 0.9.1 left the transaction open on the pooled
    /// connection, and the next request ran inside it.
    CancelledWhileBeginning,
}

/// A process stopped (SIGSTOP) until this is dropped.
struct Stopped(nix::unistd::Pid);

impl Stopped {
    fn process(pid: i32) -> Self {
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// A pool configured like the server's (every connection switched to the
/// application role); each way a scoped transaction can end leaves the
/// connection without the scope.
#[tokio::test]
async fn a_scoped_transaction_leaves_no_scope_on_its_pooled_connection() {
    let app = spawn_app_with(|_| {}).await;
    let t = &tenants(&app, &["ann"]).await[0];
    let default_timeout = default_statement_timeout(&app).await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql("SET ROLE mosaic_app").execute(conn).await?;
                Ok(())
            })
        })
        .connect(&app.database_url)
        .await
        .unwrap();
    let pid = idle_state(&pool).await.pid;
    for ending in [
        Ending::Commit,
        Ending::Rollback,
        Ending::Dropped,
        Ending::FailedThenRollback,
        Ending::CancelledWhileBeginning,
    ] {
        // Alternate the two kinds of request transaction: both must leave the connection clean.
        let read_only = matches!(ending, Ending::Rollback | Ending::FailedThenRollback);
        let db = RequestDb::new(
            pool.clone(),
            Scope::user(t.user_id),
            Duration::from_millis(1234),
            read_only,
        );
        if let Ending::CancelledWhileBeginning = ending {
            // The connection's backend is stopped: BEGIN goes out and no
            // answer can come back before the request is dropped.
            let idle = || {
                let n = pool.num_idle();
                async move { n == 1 }
            };
            common::eventually(Duration::from_secs(10), "the connection back in the pool", idle).await;
            let stopped = Stopped::process(pid);
            let mut begin = Box::pin(db.conn());
            for _ in 0..10 {
                assert!(futures::poll!(&mut begin).is_pending());
                tokio::task::yield_now().await;
            }
            drop(begin);
            drop(stopped);
        } else {
            let mut conn = db.conn().await.unwrap();
            let (user, timeout, tasks): (String, String, i64) = sqlx::query_as(
                "SELECT current_setting('mosaic.user_id'), current_setting('statement_timeout'),
                        (SELECT count(*) FROM tasks)",
            )
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            assert_eq!(user, t.user_id.to_string(), "{ending:?}: scope is set inside");
            assert_eq!(timeout, "1234ms", "{ending:?}");
            assert_eq!(tasks, 3, "{ending:?}: the scope shows the user's tasks");
            if let Ending::FailedThenRollback = ending {
                let err = sqlx::query("SELECT 1 / 0").execute(&mut *conn).await;
                assert!(err.is_err());
            }
        }
        match ending {
            Ending::Commit => db.commit().await.unwrap(),
            Ending::Rollback | Ending::FailedThenRollback => db.rollback().await.unwrap(),
            Ending::Dropped | Ending::CancelledWhileBeginning => drop(db),
        }
        assert_eq!(
            idle_state(&pool).await,
            clean(pid, &default_timeout),
            "after {ending:?}"
        );
    }
    pool.close().await;
    // And the server still answers correctly afterwards.
    let body = app.gql(&t.token, "{ me { email } }", json!({})).await;
    assert_eq!(code(&body), "<none>", "{body}");
    app.stop().await;
}
