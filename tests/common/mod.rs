//! Test harness: each test gets its own database on a real PostgreSQL and a
//! real instance serving HTTP on a free loopback port, started by the same
//! `Application::build` the binary uses.
#![allow(dead_code)]

use std::sync::OnceLock;

use mosaic::app::Application;
use mosaic::config::Config;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The PostgreSQL server tests use: `DATABASE_URL` if set, else a private
/// cluster under the target directory shared by all test processes.
fn server_url(database: &str) -> String {
    static EMBEDDED: OnceLock<String> = OnceLock::new();
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let (base, query) = url
            .split_once('?')
            .map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
        let (server, _) = base
            .rsplit_once('/')
            .expect("DATABASE_URL has a database path");
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

/// A fresh, empty database; returns its URL.
pub async fn fresh_database() -> String {
    let name = format!("t_{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&server_url("postgres"))
        .await
        .expect("connect to test server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    server_url(&name)
}

pub fn test_config(database_url: String) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(database_url),
        instance_name: "test".into(),
        ..Config::default()
    }
}

pub struct TestApp {
    pub base: String,
    pub database_url: String,
    pub client: reqwest::Client,
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
    let app = Application::build(config)
        .await
        .expect("application builds");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        database_url,
        client: reqwest::Client::new(),
        stop: Some(stop),
        served: Some(served),
    }
}

impl TestApp {
    /// An administrative connection to this instance's database (bypasses RLS).
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
        let token = mosaic::auth::tokens::create(&mut conn, email, None)
            .await
            .unwrap();
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

    pub async fn add_member(&self, token: &str, workspace: &str, email: &str, role: &str) {
        self.gql_ok(
            token,
            "mutation($w: ID!, $e: String!, $r: WorkspaceRole!) { addWorkspaceMember(input: {workspaceId: $w, email: $e, role: $r}) { role } }",
            json!({ "w": workspace, "e": email, "r": role }),
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
        for table in [
            "users",
            "api_tokens",
            "workspaces",
            "workspace_members",
            "teams",
            "team_members",
            "projects",
            "tasks",
            "events",
            "activity_log",
        ] {
            let n: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            out.push((table.to_string(), n));
        }
        out
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
    }
}

pub fn code(body: &Value) -> String {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}
