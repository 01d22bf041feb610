//! Test harness: each test gets its own database on a real PostgreSQL and a
//! real instance serving HTTP on a free loopback port, started by the same
//! `Application::build` the binary uses.
#![allow(dead_code)]

/// The test OpenID provider (tests/oidc) for the sign-in tests; `dead_code`
/// is allowed above for it too, as binaries without sign-in leave it unused.
pub mod oidc;

use std::sync::OnceLock;

use mosaic::app::Application;
use mosaic::config::Config;
use mosaic::federation::grant::Terms;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The PostgreSQL server tests use: `DATABASE_URL` if set, else a private
/// cluster under the target directory shared by all test processes.
fn server_url(database: &str) -> String {
    static EMBEDDED: OnceLock<String> = OnceLock::new();
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let (base, query) = url.split_once('?').map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
        let (server, _) = base.rsplit_once('/').expect("DATABASE_URL has a database path");
        return match query {
            Some(q) => format!("{server}/{database}?{q}"),
            None => format!("{server}/{database}"),
        };
    }
    let template = EMBEDDED.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pg");
        // Left running for the next test process; .ci/run stops it.
        let pg = mosaic::db::EmbeddedPostgres::start(&dir).expect("test PostgreSQL cluster");
        let url = pg.url("DBNAME");
        std::mem::forget(pg);
        url
    });
    template.replace("DBNAME", database)
}

/// A fresh, empty database; returns its URL. Its name carries this test
/// process's id, so that the databases of test processes that have ended can
/// be dropped: the shared cluster would otherwise grow by every test's
/// database for the whole run (a full run filled the disk once).
pub async fn fresh_database() -> String {
    let name = format!("t_{}_{}", std::process::id(), Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&server_url("postgres"))
        .await
        .expect("connect to test server");
    if std::env::var_os("DATABASE_URL").is_none() {
        // Only in the private cluster: a given server may be shared with
        // other machines, whose process ids mean nothing here.
        drop_databases_of_ended_processes(&mut conn).await;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    server_url(&name)
}

/// Drops the test databases whose process is gone (another process may be
/// dropping the same one: failures are ignored, the next test retries).
async fn drop_databases_of_ended_processes(conn: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(r"SELECT datname::text FROM pg_database WHERE datname LIKE 't\_%\_%'")
        .fetch_all(&mut *conn)
        .await
        .expect("list test databases");
    for name in names {
        let Some(pid) = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut *conn).await;
        }
    }
}

pub fn test_config(database_url: String) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(database_url),
        instance_name: "test".into(),
        secret_key: Some(mosaic::secrets::Secret(
            "test-secret-key-that-is-long-enough-0123456789".into(),
        )),
        ..Config::default()
    };
    // No model unless a test asks for one (knowledge_search.rs): loading it
    // costs an instance ~90 MB and a second, and starts the embedding worker.
    config.knowledge.model_dir = "/nonexistent/mosaic-test-no-model".into();
    config
}

/// Tables of tenant data (api_tokens aside: authenticating may touch it).
pub const TENANT_TABLES: [&str; 16] = [
    "users",
    "workspaces",
    "workspace_members",
    "teams",
    "team_members",
    "projects",
    "tasks",
    "events",
    "activity_log",
    "workspace_invitations",
    "knowledge_entries",
    "knowledge_versions",
    "knowledge_tags",
    "knowledge_entry_tags",
    "knowledge_links",
    "knowledge_embeddings",
];

pub struct TestApp {
    pub base: String,
    pub database_url: String,
    pub client: reqwest::Client,
    /// The running application's shared state (its federation service among it).
    pub state: mosaic::http::AppState,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(fresh_database().await);
    adjust(&mut config);
    spawn_config(config).await
}

pub async fn spawn_config(config: Config) -> TestApp {
    let database_url = config.database_url.clone().unwrap_or_default();
    let app = Application::build(config).await.expect("application builds");
    let base = app.base_url().to_string();
    let state = app.state.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        database_url,
        client: mosaic::federation::tls::http_client(Some(&pki().ca_cert)).expect("test HTTP client"),
        state,
        stop: Some(stop),
        served: Some(served),
    }
}

/// A CA and a loopback server certificate, generated once per test process.
pub fn pki() -> &'static mosaic::federation::tls::LocalPki {
    static PKI: OnceLock<mosaic::federation::tls::LocalPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("pki")
            .join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        mosaic::federation::tls::local_pki(&dir).expect("test certificates")
    })
}

/// A named instance serving HTTPS with the test CA, trusting that CA for peers.
pub async fn spawn_instance(name: &str) -> TestApp {
    spawn_instance_with(name, |_| {}).await
}

pub async fn spawn_instance_with(name: &str, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let pki = pki();
    let mut config = test_config(fresh_database().await);
    config.instance_name = name.to_string();
    config.tls = Some(mosaic::config::TlsFiles {
        cert_file: pki.cert.clone(),
        key_file: pki.key.clone(),
    });
    config.federation.ca_file = Some(pki.ca_cert.clone());
    // Test instances are peers on loopback.
    config.federation.allowed_peer_networks = loopback_networks();
    adjust(&mut config);
    spawn_config(config).await
}

/// Loopback, which peers may be reached at only when configured.
pub fn loopback_networks() -> Vec<mosaic::config::IpNet> {
    mosaic::config::parse_networks("127.0.0.0/8, ::1/128").unwrap()
}

/// `asking` connects to `asked` (signed CONNECT over HTTPS), and `asked`
/// grants it the given workspaces (global IDs), through the same service
/// calls the admin API and CLI use.
pub async fn peer(asking: &TestApp, asked: &TestApp, workspaces: &[&str], read_write: bool) {
    let ids: Vec<Uuid> = workspaces.iter().map(|w| local_id(w)).collect();
    peer_with(asking, asked, grant(&ids, read_write, None)).await
}

/// `peer`, letting `asking`'s reads go on to `asked`'s own peers.
pub async fn peer_forwarding(asking: &TestApp, asked: &TestApp, workspaces: &[&str]) {
    let ids: Vec<Uuid> = workspaces.iter().map(|w| local_id(w)).collect();
    let terms = Terms {
        forward: true,
        ..grant(&ids, false, None)
    };
    peer_with(asking, asked, terms).await
}

/// The terms of a grant of `workspaces` (local ids), not forwarding.
pub fn grant(workspaces: &[Uuid], read_write: bool, users: Option<&[String]>) -> Terms {
    Terms {
        workspaces: workspaces.to_vec(),
        read_write,
        users: users.map(<[String]>::to_vec),
        forward: false,
        ..Terms::default()
    }
}

/// `peer` with the grant's terms given.
pub async fn peer_with(asking: &TestApp, asked: &TestApp, terms: Terms) {
    let fed = &asking.state.federation;
    let record = fed.connect(&asked.base, "test").await.expect("CONNECT accepted");
    assert_eq!(record.outbound_state, "requested");
    asked
        .state
        .federation
        .approve(fed.instance_id, &terms, "test")
        .await
        .expect("approval");
    let now = mosaic::federation::registry::get(&fed.pool, asked.state.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.outbound_state, "active", "the approval reached the asking instance");
}

/// POSTs `body` from `from` to `to`'s `path`, signed for `to`'s instance
/// with `from`'s current key.
pub async fn post_signed(from: &TestApp, to: &TestApp, path: &str, body: Vec<u8>) -> reqwest::Response {
    let header = from
        .state
        .federation
        .sign(to.state.instance_id, path, &body)
        .await
        .unwrap();
    from.client
        .post(format!("{}{path}", to.base))
        .header("content-type", "application/json")
        .header(mosaic::federation::signing::HEADER, header)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A QUERY or COMMAND (`path`) of `document` from `from`, signed for `to`;
/// (status, JSON answer).
pub async fn signed(from: &TestApp, to: &TestApp, path: &str, document: &str) -> (u16, Value) {
    use mosaic::federation::protocol::{Envelope, SubRequest};
    let body = serde_json::to_vec(&SubRequest {
        query: document.into(),
        variables: json!({}),
        envelope: Envelope {
            visited: vec![from.state.instance_id.to_string()],
            exclude: Vec::new(),
            hop_limit: 3,
            deadline_ms: 5_000,
            actor: None,
            traceparent: None,
        },
    })
    .unwrap();
    let r = post_signed(from, to, path, body).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Registers a peer at `url` on `app` as one it may query (outbound active),
/// as CONNECT and approval would, for peers that are test servers rather
/// than instances. Returns its instance id.
pub async fn register_active_peer(app: &TestApp, name: &str, url: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO peers (id, name, base_url, keys, outbound_state) VALUES ($1, $2, $3, '[]'::jsonb, 'active')",
    )
    .bind(id)
    .bind(name)
    .bind(url)
    .execute(&mut app.admin().await)
    .await
    .unwrap();
    app.caught_up().await;
    id
}

/// A browser session opened at `/auth/breakglass`.
pub struct BreakGlassSession {
    /// The `Set-Cookie` headers of the answer.
    pub set_cookies: Vec<String>,
    /// The `Cookie` header to send with later requests.
    pub cookie: String,
    pub csrf: String,
    /// The answer's body (`user`, `csrfToken`).
    pub body: Value,
}

impl TestApp {
    /// Creates the break-glass administrator `email` and signs in as them.
    pub async fn break_glass_session(&self, email: &str, password: &str) -> BreakGlassSession {
        mosaic::auth::breakglass::create_admin(&mut self.admin().await, email, password)
            .await
            .unwrap();
        self.break_glass_sign_in(email, password).await
    }

    /// Signs in at `/auth/breakglass` (the account exists); must succeed.
    pub async fn break_glass_sign_in(&self, email: &str, password: &str) -> BreakGlassSession {
        let r = self
            .client
            .post(format!("{}/auth/breakglass", self.base))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "break-glass sign-in of {email}");
        let set_cookies: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let cookie = set_cookies
            .iter()
            .map(|c| c.split(';').next().unwrap())
            .collect::<Vec<_>>()
            .join("; ");
        let body: Value = r.json().await.unwrap();
        let csrf = body["csrfToken"].as_str().expect("a CSRF token").to_string();
        BreakGlassSession {
            set_cookies,
            cookie,
            csrf,
            body,
        }
    }

    /// Sends a request that must fail with `code` alone, naming `field` in
    /// its message, returning no data and changing nothing.
    pub async fn assert_refused(&self, token: &str, query: &str, vars: Value, code: &str, field: &str) {
        let mut admin = self.admin().await;
        let before = fingerprint(&mut admin).await;
        let body = self.gql(token, query, vars.clone()).await;
        assert_eq!(codes(&body), [code], "{vars}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(field), "{vars}: the message names {field}: {message}");
        match &body["data"] {
            Value::Null => {}
            Value::Object(d) => assert!(d.values().all(Value::is_null), "{vars}: data came back: {body}"),
            other => panic!("{other}"),
        }
        assert_eq!(
            fingerprint(&mut admin).await,
            before,
            "{vars}: refused but changed data"
        );
    }

    /// An administrative connection to this instance's database (bypasses RLS).
    /// Waits until the instance has heard every change committed so far (a
    /// change made behind its back, as the CLI or another replica would make
    /// it, reaches its caches by notification a moment after the commit).
    pub async fn caught_up(&self) {
        self.state
            .live
            .caught_up(&self.state.pool)
            .await
            .expect("the listener catches up");
    }

    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.database_url)
            .await
            .expect("admin connection")
    }

    /// Creates a user and a token for them; returns (user id, token).
    pub async fn user(&self, email: &str) -> (Uuid, String) {
        let mut conn = self.admin().await;
        let id = mosaic::auth::users::create(&mut conn, email, None, false)
            .await
            .unwrap();
        let token = mosaic::auth::tokens::create(&mut conn, email, None).await.unwrap();
        (id, token)
    }

    /// POSTs a GraphQL request; returns (HTTP status, body).
    pub async fn gql_status(&self, token: &str, query: &str, variables: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        self.gql_status(token, query, variables).await.1
    }

    /// GET `path` (e.g. `/metrics`) on this app; the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        let r = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// Like `gql`, but fails the test on any error.
    pub async fn gql_ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    pub async fn create_workspace(&self, token: &str, name: &str) -> String {
        let d = self
            .gql_ok(
                token,
                "mutation($n: String!) { createWorkspace(input: {name: $n}) { id } }",
                json!({ "n": name }),
            )
            .await;
        d["createWorkspace"]["id"].as_str().unwrap().to_string()
    }

    /// Makes the user with `email` a member: invited by `token`'s user, accepted by them.
    pub async fn add_member(&self, token: &str, workspace: &str, email: &str, role: &str) {
        let invitation = self
            .gql_ok(
                token,
                "mutation($w: ID!, $e: String!, $r: WorkspaceRole!) { inviteWorkspaceMember(input: {workspaceId: $w, email: $e, role: $r}) { id } }",
                json!({ "w": workspace, "e": email, "r": role }),
            )
            .await["inviteWorkspaceMember"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let invitee = mosaic::auth::tokens::create(&mut self.admin().await, email, None)
            .await
            .unwrap();
        self.gql_ok(
            &invitee,
            "mutation($i: ID!) { acceptInvitation(id: $i) { id } }",
            json!({ "i": invitation }),
        )
        .await;
    }

    pub async fn create_task(&self, token: &str, workspace: &str, title: &str) -> String {
        let d = self
            .gql_ok(
                token,
                "mutation($w: ID!, $t: String!) { createTask(input: {workspaceId: $w, title: $t, priority: HIGH}) { id } }",
                json!({ "w": workspace, "t": title }),
            )
            .await;
        d["createTask"]["id"].as_str().unwrap().to_string()
    }

    /// Row counts of every tenant table, to prove a refused request changed nothing.
    pub async fn row_counts(&self) -> Vec<(String, i64)> {
        let mut conn = self.admin().await;
        let mut out = Vec::new();
        for table in std::iter::once("api_tokens").chain(TENANT_TABLES) {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            out.push((table.to_string(), n));
        }
        out
    }

    /// Sends the instance its shutdown signal (as SIGTERM would); `stop` awaits the end.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn stop(mut self) {
        self.signal_stop();
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
    }

    /// Stops the instance and gives back its configuration, bound to the
    /// port it had: `spawn_config` starts it again on the same database at
    /// the same URL, which its peers know it by.
    pub async fn stop_for_restart(self) -> Config {
        let mut config = (*self.state.config).clone();
        config.listen = self
            .base
            .rsplit_once("://")
            .map_or(self.base.as_str(), |(_, a)| a)
            .parse()
            .expect("the base URL is an address");
        self.stop().await;
        config
    }
}

/// (VmRSS, VmHWM) of this process, in KiB: the server runs in it, so peak
/// memory tests read these before and after.
pub fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn code(body: &Value) -> String {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

// ---------------------------------------------------------------------------
// Helpers for bad_input, pagination, pool_hygiene and roles.
// ---------------------------------------------------------------------------

/// Every error code in a response, in order (empty when there are no errors).
pub fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["extensions"]["code"].as_str().unwrap_or("<none>").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Every error of a response as (code, instance), in order; `<none>` for what is absent.
pub fn errors(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["extensions"]["code"].as_str().unwrap_or("<none>").to_string(),
                e["extensions"]["instance"].as_str().unwrap_or("<none>").to_string(),
            )
        })
        .collect()
}

/// The local UUID inside a global ID (`Type:instance:uuid`).
pub fn local_id(global: &str) -> Uuid {
    global
        .rsplit(':')
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("'{global}' is not a global ID"))
}

/// A digest of the whole content of every tenant table (not just row counts),
/// so a refused update is seen to have changed nothing. `api_tokens` is left
/// out: authenticating a request may touch a token's `last_used_at`.
pub async fn fingerprint(conn: &mut PgConnection) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for table in TENANT_TABLES {
        let digest: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {table} x"
        )))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        out.push((table.to_string(), digest));
    }
    out
}

/// Removes every container and network labelled with the instance, even
/// when the test fails half-way.
pub struct Cleanup(pub Uuid);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let label = format!("label=mosaic.instance={}", self.0);
        for (list, remove) in [
            (vec!["ps", "-aq", "--filter", &label], vec!["rm", "-f"]),
            (vec!["network", "ls", "-q", "--filter", &label], vec!["network", "rm"]),
        ] {
            let Ok(out) = std::process::Command::new("docker").args(&list).output() else {
                continue;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker").args(&remove).args(&ids).output();
            }
        }
    }
}

/// A cursor `app` issued, with its sort key replaced and sealed again with
/// `app`'s own key, so what is tested is how the key itself is checked.
pub fn with_sort_key(app: &TestApp, cursor: &str, key: Value) -> String {
    use base64::Engine;
    let body = cursor.split_once('.').map_or(cursor, |(body, _mac)| body);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).unwrap();
    let mut c: Value = serde_json::from_slice(&bytes).unwrap();
    c["k"] = key;
    app.state.executor.cursor_key.seal(&serde_json::from_value(c).unwrap())
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn eventually<F, Fut>(limit: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
