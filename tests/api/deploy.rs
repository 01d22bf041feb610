//! The deploy files run: `deploy/build-image` builds `mosaic:local` (here from
//! the test build's binary) into the local Docker engine, which runs it with
//! a read-only root file system as its numeric user, on the embedded
//! PostgreSQL in a volume and on the tests' PostgreSQL by `DATABASE_URL`,
//! healthy by its own health check and answering GraphQL; the compose file
//! and the Kubernetes manifests pass their validators. Needs the engine and
//! tools `scripts/docker-test-env` and `scripts/deploy-test-env` install
//! (scripts/test runs both); nothing is pulled and only loopback is used.

use crate::common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::process::Command;
use uuid::Uuid;

const IMAGE: &str = "mosaic:local";
const SECRET_KEY: &str = "deploy-test-secret-key-0123456789abcdef";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} cannot run ({e}); scripts/test installs it"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn docker(args: &[&str]) -> String {
    let out = run("docker", args).await;
    assert!(out.status.success(), "docker {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A container and its volume, removed even when the test fails.
struct Container {
    name: String,
    volume: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f", &self.volume])
            .output();
    }
}

impl Container {
    fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        Self {
            name: format!("mosaic-deploy-test-{id}"),
            volume: format!("mosaic-deploy-test-{id}"),
        }
    }

    /// Polls the health status Docker keeps (bounded) until `healthy`.
    async fn healthy(&self) {
        for _ in 0..360 {
            let state = docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.Health.Status}}",
                &self.name,
            ])
            .await;
            match state.as_str() {
                "running healthy" => return,
                "running starting" => tokio::time::sleep(Duration::from_millis(500)).await,
                other => panic!("{other}: {}", self.logs().await),
            }
        }
        panic!("never healthy: {}", self.logs().await);
    }

    async fn logs(&self) -> String {
        text(&run("docker", &["logs", &self.name]).await)
    }

    /// `mosaic ARGS` inside the container (the CLI on its database).
    async fn mosaic(&self, args: &[&str]) -> String {
        let mut all = vec!["exec", &self.name, "/usr/local/bin/mosaic"];
        all.extend(args);
        docker(&all).await
    }

    /// SIGTERM (docker stop); the exit code.
    async fn stop(&self) -> String {
        docker(&["stop", "-t", "60", &self.name]).await;
        docker(&["inspect", "-f", "{{.State.ExitCode}}", &self.name]).await
    }
}

async fn me(base: &str, token: &str) -> Value {
    mosaic::federation::tls::http_client(None)
        .unwrap()
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": "{ me { email } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A TCP address on loopback for the tests' PostgreSQL: the shared test
/// cluster listens on a Unix socket only, so a relay in this process
/// carries each connection to it.
async fn tcp_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let socket_dir = query
        .split('&')
        .find_map(|p| p.strip_prefix("host="))
        .expect("a socket directory");
    let (server, database) = base.rsplit_once('/').unwrap();
    let port = server.rsplit(':').next().unwrap();
    let socket = PathBuf::from(socket_dir).join(format!(".s.PGSQL.{port}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    let user = server.trim_start_matches("postgres://").split('@').next().unwrap();
    format!("postgres://{user}@{local}/{database}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builds_and_runs_healthy_on_embedded_postgres_and_on_database_url() {
    let built = run("deploy/build-image", &[env!("CARGO_BIN_EXE_mosaic")]).await;
    assert!(built.status.success(), "deploy/build-image: {}", text(&built));
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Config.User}}", IMAGE]).await,
        "10001:10001"
    );
    assert!(
        docker(&["image", "inspect", "-f", "{{json .Config.Healthcheck.Test}}", IMAGE])
            .await
            .contains("healthcheck")
    );

    // Embedded PostgreSQL in the volume, published on loopback only.
    let embedded = Container::new();
    let volume = format!("{}:/var/lib/mosaic", embedded.volume);
    let secret = format!("MOSAIC_SECRET_KEY={SECRET_KEY}");
    docker(&[
        "run",
        "-d",
        "--name",
        &embedded.name,
        "--read-only",
        "-v",
        &volume,
        "-e",
        &secret,
        "-p",
        "127.0.0.1::8080",
        IMAGE,
    ])
    .await;
    embedded.healthy().await;
    let published = docker(&["port", &embedded.name, "8080/tcp"]).await;
    let base = format!("http://{}", published.lines().next().unwrap());
    embedded
        .mosaic(&["user", "create", "--email", "boxed@example.com"])
        .await;
    let token = embedded
        .mosaic(&["token", "create", "--user", "boxed@example.com"])
        .await;
    let body = me(&base, &token).await;
    assert_eq!(body, json!({ "data": { "me": { "email": "boxed@example.com" } } }));
    assert_eq!(embedded.stop().await, "0", "{}", embedded.logs().await);

    // The tests' PostgreSQL by DATABASE_URL; the host's loopback network.
    let database_url = common::fresh_database().await;
    let on_db = Container::new();
    let db = format!("DATABASE_URL={}", tcp_url(&database_url).await);
    let port = free_port();
    let listen = format!("MOSAIC_LISTEN=127.0.0.1:{port}");
    docker(&[
        "run",
        "-d",
        "--name",
        &on_db.name,
        "--read-only",
        "--network",
        "host",
        "-e",
        &secret,
        "-e",
        &db,
        "-e",
        &listen,
        IMAGE,
    ])
    .await;
    on_db.healthy().await;
    let mut admin = sqlx::PgConnection::connect(&database_url).await.unwrap();
    mosaic::auth::users::create(&mut admin, "pooled@example.com", None, false)
        .await
        .unwrap();
    let token = mosaic::auth::tokens::create(&mut admin, "pooled@example.com", None)
        .await
        .unwrap();
    let body = me(&format!("http://127.0.0.1:{port}"), &token).await;
    assert_eq!(body, json!({ "data": { "me": { "email": "pooled@example.com" } } }));
    assert_eq!(on_db.stop().await, "0", "{}", on_db.logs().await);
}

#[tokio::test]
async fn compose_file_and_kubernetes_manifests_pass_their_validators() {
    let compose = Command::new("docker-compose")
        .args(["-f", "deploy/compose.yaml", "config", "-q"])
        .current_dir(repo())
        .env("MOSAIC_SECRET_KEY", SECRET_KEY)
        .env("POSTGRES_PASSWORD", "deploy-test")
        .output()
        .await
        .expect("docker-compose (scripts/deploy-test-env installs it)");
    assert!(compose.status.success(), "{}", text(&compose));
    let missing = Command::new("docker-compose")
        .args(["-f", "deploy/compose.yaml", "config", "-q"])
        .current_dir(repo())
        .env_remove("MOSAIC_SECRET_KEY")
        .env("POSTGRES_PASSWORD", "deploy-test")
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success(), "a missing secret key is refused");
    assert!(text(&missing).contains("MOSAIC_SECRET_KEY"), "{}", text(&missing));

    let mut manifests = Vec::new();
    let mut dirs = vec![repo().join("deploy/k8s")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                manifests.push(path.display().to_string());
            }
        }
    }
    manifests.sort();
    assert!(!manifests.is_empty());
    let mut args = vec!["--strict"];
    args.extend(manifests.iter().map(String::as_str));
    let validated = run("kubernetes-validate", &args).await;
    assert!(validated.status.success(), "{}", text(&validated));
    let all: String = manifests.iter().map(|m| std::fs::read_to_string(m).unwrap()).collect();
    for part in [
        "kind: Deployment",
        "kind: Service",
        "kind: ConfigMap",
        "kind: Secret",
        "kind: PodDisruptionBudget",
        "runAsUser: 10001",
        "readinessProbe",
        "livenessProbe",
        "initContainers",
    ] {
        assert!(all.contains(part), "the manifests have {part}");
    }
}
