//! The agent task queue through the worker API (issue 15), against a real
//! instance and PostgreSQL:
//!
//! * claims (against `mosaic serve` processes): 1, 4 and 16 agents each claim and complete tasks from a queue
//!   of queued tasks: claims per second, claim latency p50/p99;
//! * enqueue → claimed/running for an idle agent (its claim long-polls);
//! * a missed heartbeat → the task running again on another agent, beyond
//!   the heartbeat timeout itself.
//!
//! `AGENT_TASK_BENCH_TASKS` (default 2000) tasks per claim run,
//! `AGENT_TASK_BENCH_RUNS` (default 50) for the latencies. With
//! `BENCH_BASELINE=<another mosaic binary>`, the claims run first against
//! that binary (`mosaic serve`, its own database), in the same run, for a
//! before/after.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mosaic::app::Application;
use mosaic::config::Config;
use serde_json::{Value, json};
use sqlx::Connection;

#[path = "support/db.rs"]
mod db;
#[path = "support/stats.rs"]
mod stats;
use stats::{env_usize, summary};

const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1000);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 of `samples`, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| ms(samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]);
    (at(0.50), at(0.99))
}

struct Bench {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Bench {
    async fn gql(&self, query: &str, variables: Value) -> Value {
        let r: Value = self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(r.get("errors").is_none(), "{r}");
        r["data"].clone()
    }

    async fn worker(&self, agent: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/worker{path}", self.base))
            .bearer_auth(agent)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn agent(&self, ws: &str) -> String {
        self.gql(
            "mutation($w: ID!) { createAgentToken(workspaceId: $w) }",
            json!({ "w": ws }),
        )
        .await["createAgentToken"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn enqueue(&self, ws: &str) -> String {
        self.gql(
            "mutation($w: ID!) { createAgentTask(input: {workspaceId: $w, title: \"t\", kind: WORKER}) { id } }",
            json!({ "w": ws }),
        )
        .await["createAgentTask"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

async fn run() {
    mosaic::federation::tls::install_crypto_provider();
    let database_url = db::fresh_database("bench_agent_tasks").await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(database_url.clone()),
        secret_key: Some(mosaic::secrets::Secret(
            "bench-secret-key-that-is-long-enough-0123456789".into(),
        )),
        ..Config::default()
    };
    config.knowledge.model_dir = "/nonexistent/mosaic-bench-no-model".into();
    config.pool_size = 40;
    config.agent_tasks.max_running = 10_000;
    config.agent_tasks.heartbeat_timeout = HEARTBEAT_TIMEOUT;
    config.agent_tasks.reaper_interval = Duration::from_millis(100);
    let app = Application::build(config).await.expect("instance builds");
    let base = app.base_url().to_string();
    let live = app.state.live.clone();
    tokio::spawn(app.run(std::future::pending()));

    let mut admin = sqlx::PgConnection::connect(&database_url).await.unwrap();
    let email = "bench@example.com";
    mosaic::auth::users::create(&mut admin, email, None, false)
        .await
        .unwrap();
    let token = mosaic::auth::tokens::create(&mut admin, email, None).await.unwrap();
    let bench = Bench {
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        base,
        token,
    };
    let ws = bench
        .gql(
            "mutation { createWorkspace(input: {name: \"bench\"}) { id } }",
            json!({}),
        )
        .await["createWorkspace"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tasks = env_usize("AGENT_TASK_BENCH_TASKS", 2000);
    let runs = env_usize("AGENT_TASK_BENCH_RUNS", 50);

    // Claims against `mosaic serve` processes: the baseline's, then this build's.
    let mut binaries: Vec<(String, PathBuf)> = Vec::new();
    if let Ok(baseline) = std::env::var("BENCH_BASELINE") {
        binaries.push(("before (BENCH_BASELINE)".into(), baseline.into()));
    }
    binaries.push(("this build".into(), env!("CARGO_BIN_EXE_mosaic").into()));
    for (name, bin) in binaries {
        let served = Served::start(&bin).await;
        println!("{name}: {}", bin.display());
        claims(&served.bench, &served.database_url, tasks).await;
    }

    // Enqueue → claimed → running, for an agent waiting in a long poll.
    let idle = bench.agent(&ws).await;
    let (mut claimed, mut running) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (http, base, agent) = (bench.http.clone(), bench.base.clone(), idle.clone());
        let waiting = tokio::spawn(async move {
            let b = Bench {
                http,
                base,
                token: String::new(),
            };
            let (status, claim) = b.worker(&agent, "/claim", json!({ "waitMs": 20_000 })).await;
            assert_eq!(status, 200, "{claim}");
            let at = Instant::now();
            let id = claim["task"]["id"].as_str().unwrap().to_string();
            let (status, _) = b
                .worker(&agent, &format!("/tasks/{id}/heartbeat"), json!({ "attempt": 1 }))
                .await;
            assert_eq!(status, 200);
            (at, Instant::now(), id, b, agent)
        });
        // Enqueue once the claim has looked and waits.
        while live.agent_claims_waiting() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t0 = Instant::now();
        bench.enqueue(&ws).await;
        let (at_claim, at_running, id, b, agent) = waiting.await.unwrap();
        claimed.push(at_claim - t0);
        running.push(at_running - t0);
        b.worker(&agent, &format!("/tasks/{id}/complete"), json!({ "attempt": 1 }))
            .await;
    }
    let (c50, c99) = percentiles(claimed);
    let (r50, r99) = percentiles(running);
    println!("enqueue → claimed (idle agent, createAgentTask included): p50={c50:.3} ms p99={c99:.3} ms");
    println!("enqueue → running (after its first heartbeat):            p50={r50:.3} ms p99={r99:.3} ms");

    // A missed heartbeat → running again on another agent.
    let (lost, rescuer) = (bench.agent(&ws).await, bench.agent(&ws).await);
    let mut again = Vec::new();
    for _ in 0..runs.min(10) {
        bench.enqueue(&ws).await;
        let (status, claim) = bench.worker(&lost, "/claim", json!({ "waitMs": 0 })).await;
        assert_eq!(status, 200, "{claim}");
        let id = claim["task"]["id"].as_str().unwrap().to_string();
        let attempt = claim["task"]["attempt"].as_i64().unwrap();
        bench
            .worker(&lost, &format!("/tasks/{id}/heartbeat"), json!({ "attempt": attempt }))
            .await;
        let silent_from = Instant::now();
        let (status, claim) = bench.worker(&rescuer, "/claim", json!({ "waitMs": 20_000 })).await;
        assert_eq!(status, 200, "{claim}");
        assert_eq!(claim["task"]["id"].as_str(), Some(id.as_str()));
        let attempt = claim["task"]["attempt"].as_i64().unwrap();
        bench
            .worker(
                &rescuer,
                &format!("/tasks/{id}/heartbeat"),
                json!({ "attempt": attempt }),
            )
            .await;
        again.push(silent_from.elapsed().saturating_sub(HEARTBEAT_TIMEOUT));
        bench
            .worker(
                &rescuer,
                &format!("/tasks/{id}/complete"),
                json!({ "attempt": attempt }),
            )
            .await;
    }
    println!(
        "missed heartbeat → running again on another agent, beyond the {} ms timeout (reaper every 100 ms):",
        HEARTBEAT_TIMEOUT.as_millis()
    );
    summary("recovery", again);
}

/// Claims per second and claim latency at 1, 4 and 16 agents, each agent
/// claiming and completing in a loop until the queue is empty.
async fn claims(bench: &Bench, database_url: &str, tasks: usize) {
    let mut admin = sqlx::PgConnection::connect(database_url).await.unwrap();
    let ws = bench
        .gql(
            "mutation { createWorkspace(input: {name: \"claims\"}) { id } }",
            json!({}),
        )
        .await["createWorkspace"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ws_uuid = ws.rsplit(':').next().unwrap().to_string();
    println!("agent task queue ({tasks} queued tasks per row; each agent claims and completes in a loop)");
    for agents in [1usize, 4, 16] {
        sqlx::query(
            "INSERT INTO agent_tasks (id, workspace_id, title, kind, priority)
             SELECT gen_random_uuid(), $1::uuid, 'bench ' || i, 'WORKER', 1 + i % 10 FROM generate_series(1, $2) i",
        )
        .bind(&ws_uuid)
        .bind(tasks as i32)
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query("VACUUM ANALYZE agent_tasks")
            .execute(&mut admin)
            .await
            .unwrap();
        let mut tokens = Vec::new();
        for _ in 0..agents {
            tokens.push(bench.agent(&ws).await);
        }
        let started = Instant::now();
        let mut loops = Vec::new();
        for agent in tokens {
            let (http, base) = (bench.http.clone(), bench.base.clone());
            loops.push(tokio::spawn(async move {
                let b = Bench {
                    http,
                    base,
                    token: String::new(),
                };
                let mut latencies = Vec::new();
                loop {
                    let t = Instant::now();
                    let (status, claim) = b.worker(&agent, "/claim", json!({ "waitMs": 0 })).await;
                    if status == 204 {
                        return latencies;
                    }
                    assert_eq!(status, 200, "{claim}");
                    latencies.push(t.elapsed());
                    let id = claim["task"]["id"].as_str().unwrap().to_string();
                    let (status, body) = b
                        .worker(&agent, &format!("/tasks/{id}/complete"), json!({ "attempt": 1 }))
                        .await;
                    assert_eq!(status, 200, "{body}");
                }
            }));
        }
        let mut latencies = Vec::new();
        for l in loops {
            latencies.extend(l.await.unwrap());
        }
        let took = started.elapsed();
        assert_eq!(latencies.len(), tasks);
        let (p50, p99) = percentiles(latencies);
        println!(
            "{agents:>2} agents: {:>7.0} claims/s (each with its completion)  claim p50={p50:>7.3} ms  p99={p99:>7.3} ms",
            tasks as f64 / took.as_secs_f64()
        );
    }
}

/// A mosaic binary serving its own database, over HTTP on loopback.
struct Served {
    bench: Bench,
    database_url: String,
    child: std::process::Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    async fn start(bin: &Path) -> Self {
        let database_url = db::fresh_database("bench_agent_tasks_served").await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = [
            ("DATABASE_URL", database_url.clone()),
            ("MOSAIC_LISTEN", format!("127.0.0.1:{port}")),
            (
                "MOSAIC_SECRET_KEY",
                "bench-secret-key-that-is-long-enough-0123456789".into(),
            ),
            (
                "MOSAIC_KNOWLEDGE_MODEL_DIR",
                "/nonexistent/mosaic-bench-no-model".into(),
            ),
            ("MOSAIC_DB_POOL_SIZE", "40".into()),
            ("MOSAIC_AGENT_TASKS_MAX_RUNNING", "10000".into()),
            ("RUST_LOG", "warn".into()),
        ];
        let cli = |args: &[&str]| {
            let out = std::process::Command::new(bin)
                .args(args)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let email = "bench@example.com";
        cli(&["user", "create", "--email", email]);
        let token = cli(&["token", "create", "--user", email]);
        let child = std::process::Command::new(bin)
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let started = Instant::now();
        while http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .ok()
            != Some(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} did not become ready",
                bin.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            bench: Bench { http, base, token },
            database_url,
            child,
        }
    }
}
