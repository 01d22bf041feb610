//! Load benchmarks against the release binary, driven by `wrk`.
//!
//! `cargo bench --bench load` (or `scripts/bench`, which installs wrk):
//! 1. one instance, `tasks(first: 50)` for one user over 10,000 seeded tasks,
//!    at 1, 8 and 64 connections;
//! 2. a master fanning out `tasks(scope: {all: true}, first: 50)` to 1, 3 and
//!    10 spokes over HTTPS, beside the same query sent directly to the
//!    slowest spoke, all in one run so the master's overhead is a difference.
//!
//! 3. (`knowledge-federated`) `searchKnowledge(mode: TEXT, scope: {all: true})`
//!    over three instances of 10,000 entries each, beside the same search
//!    sent directly to the slowest of them, at 1 and 8 connections.
//!
//! Each instance is a `mosaic serve` child process with its own database on
//! one private PostgreSQL cluster. Set BENCH_SECONDS to change the run length.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

const SECRET: &str = "benchmark-secret-key-0123456789abcdef";

struct Instance {
    name: String,
    url: String,
    database_url: String,
    token: String,
    child: Child,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn mosaic(env: &[(&str, String)], args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mosaic");
    assert!(
        out.status.success(),
        "mosaic {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Bench {
    pg_template: String,
    pki: mosaic::federation::tls::LocalPki,
    http: reqwest::Client,
    seconds: u64,
}

impl Bench {
    fn env(&self, name: &str, port: u16, database_url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", database_url.to_string()),
            ("MOSAIC_LISTEN", format!("127.0.0.1:{port}")),
            ("MOSAIC_INSTANCE_NAME", name.to_string()),
            ("MOSAIC_SECRET_KEY", SECRET.to_string()),
            ("MOSAIC_TLS_CERT", self.pki.cert.display().to_string()),
            ("MOSAIC_TLS_KEY", self.pki.key.display().to_string()),
            ("MOSAIC_PEER_CA", self.pki.ca_cert.display().to_string()),
            // Every instance is on loopback, which peers may use only when allowed.
            ("MOSAIC_ALLOWED_PEER_NETWORKS", "127.0.0.0/8".to_string()),
            ("MOSAIC_DB_POOL_SIZE", "20".to_string()),
            ("MOSAIC_MAX_PAGE_SIZE", "100".to_string()),
        ]
    }

    /// Starts an instance on a fresh database with `tasks` seeded tasks for its user.
    async fn start(&self, name: &str, tasks: usize) -> Instance {
        let db = format!("bench_{}_{}", name, std::process::id());
        let mut admin = sqlx::PgConnection::connect(&self.pg_template.replace("DBNAME", "postgres"))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let database_url = self.pg_template.replace("DBNAME", &db);
        let port = free_port();
        let env = self.env(name, port, &database_url);
        let email = format!("user@{name}.example");
        mosaic(&env, &["user", "create", "--email", &email, "--admin"]);
        let token = mosaic(&env, &["token", "create", "--user", &email]);
        seed(&database_url, &email, name, tasks).await;
        let child = Command::new(env!("CARGO_BIN_EXE_mosaic"))
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("https://127.0.0.1:{port}");
        let started = Instant::now();
        while self
            .http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .map(|r| r.status().is_success())
            .ok()
            != Some(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name} did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Instance {
            name: name.to_string(),
            url,
            database_url,
            token,
            child,
        }
    }

    /// `asking` connects to `asked` (CLI, signed CONNECT), `asked` grants its workspace.
    fn peer(&self, asking: &Instance, asked: &Instance) {
        let port = |i: &Instance| i.url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        let asking_env = self.env(&asking.name, port(asking), &asking.database_url);
        let asked_env = self.env(&asked.name, port(asked), &asked.database_url);
        mosaic(&asking_env, &["peer", "connect", &asked.url]);
        let listing = mosaic(&asked_env, &["peer", "list"]);
        let id = listing
            .lines()
            .find(|l| l.contains(&format!(" {} ", asking.name)))
            .and_then(|l| l.split_whitespace().next())
            .expect("the asking instance is listed")
            .to_string();
        mosaic(&asked_env, &["peer", "approve", &id, "--workspace", &asked.name]);
    }

    async fn check(&self, i: &Instance, query: &str) -> Value {
        let body: Value = self
            .http
            .post(format!("{}/graphql", i.url))
            .bearer_auth(&i.token)
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body.get("errors").is_none(), "benchmark query fails: {body}");
        body
    }

    /// Runs wrk; returns (requests/s, p50 ms, p99 ms).
    fn wrk(&self, i: &Instance, query: &str, connections: u32) -> (f64, f64, f64) {
        self.wrk_for(i, query, connections, self.seconds)
    }

    /// `wrk` for `seconds`.
    fn wrk_for(&self, i: &Instance, query: &str, connections: u32, seconds: u64) -> (f64, f64, f64) {
        let script = std::env::temp_dir().join(format!("mosaic-wrk-{}.lua", std::process::id()));
        let body = serde_json::to_string(&json!({ "query": query })).unwrap();
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.body = {}\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {}\"\n",
                lua_string(&body),
                i.token
            ),
        )
        .unwrap();
        let threads = connections.min(2).to_string();
        let out = Command::new("wrk")
            .args([
                "-t",
                &threads,
                "-c",
                &connections.to_string(),
                "-d",
                &format!("{seconds}s"),
                "--latency",
                "-s",
            ])
            .arg(&script)
            .arg(format!("{}/graphql", i.url))
            .output()
            .expect("wrk is installed (apt-get install wrk, or scripts/bench)");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(!text.contains("Non-2xx"), "errors under load:\n{text}");
        parse_wrk(&text)
    }
}

fn lua_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn parse_wrk(text: &str) -> (f64, f64, f64) {
    let ms = |v: &str| -> f64 {
        let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = n.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => f64::NAN,
        }
    };
    let mut rps = f64::NAN;
    let (mut p50, mut p99) = (f64::NAN, f64::NAN);
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().unwrap_or(f64::NAN),
            ["50%", v] => p50 = ms(v),
            ["99%", v] => p99 = ms(v),
            _ => {}
        }
    }
    (rps, p50, p99)
}

async fn seed(database_url: &str, email: &str, workspace: &str, tasks: usize) {
    let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
    let user: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('mosaic.user_id', $1, true)")
        .bind(user.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO workspaces (id, name, created_by) VALUES (gen_random_uuid(), $1, $2)")
        .bind(workspace)
        .bind(user)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO tasks (id, workspace_id, title, priority, created_by, created_at)
         SELECT gen_random_uuid(), w.id, 'task ' || g, (g % 4)::smallint, $1, now() - g * interval '1 second'
         FROM workspaces w, generate_series(1, $2) g",
    )
    .bind(user)
    .bind(tasks as i32)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// `entries` published knowledge entries in the user's workspace, their
/// words drawn from a small vocabulary so a two-word search matches a few
/// hundred of them (and ranks them by how often the words occur).
async fn seed_knowledge(database_url: &str, email: &str, entries: usize) {
    let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
    let user: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('mosaic.user_id', $1, true)")
        .bind(user.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO knowledge_entries (id, workspace_id, slug, title, content, status, author_id, created_by, updated_by)
         SELECT gen_random_uuid(), w.id, 'entry-' || g, 'Entry ' || g || ' on ' || v[1 + g % 7],
                'Notes on ' || v[1 + g % 7] || ' and ' || v[1 + (g / 7) % 11] || ', ' || v[1 + (g / 77) % 13]
                || '. ' || repeat('Further words about the ' || v[1 + g % 5] || ' design. ', 1 + g % 9),
                'PUBLISHED', $1, $1, $1
         FROM workspaces w, generate_series(1, $2) g,
              (SELECT ARRAY['orbit', 'launch', 'antenna', 'budget', 'hiring', 'roadmap', 'telemetry',
                            'payload', 'ground', 'review', 'incident', 'security', 'release'] AS v) words",
    )
    .bind(user)
    .bind(entries as i32)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// A search that answers 20 hits (the probe measures real work).
fn assert_twenty_hits(body: &Value) {
    let hits = body["data"]["searchKnowledge"].as_array().map_or(0, Vec::len);
    assert_eq!(hits, 20, "{body}");
}

fn row(label: &str, (rps, p50, p99): (f64, f64, f64)) {
    println!("{label:<44} {rps:>10.1} req/s   p50 {p50:>8.2} ms   p99 {p99:>8.2} ms");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / test harness probes
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    mosaic::federation::tls::install_crypto_provider();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench");
    std::fs::create_dir_all(&tmp).unwrap();
    let pg_template = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let (base, _) = url.rsplit_once('/').expect("DATABASE_URL has a database");
            format!("{base}/DBNAME")
        }
        Err(_) => {
            let pg = mosaic::db::EmbeddedPostgres::start(&tmp.join("pg")).expect("private PostgreSQL");
            let url = pg.url("DBNAME");
            std::mem::forget(pg); // stopped by scripts/bench; reused by the next run
            url
        }
    };
    let pki = mosaic::federation::tls::local_pki(&tmp.join("pki")).unwrap();
    let http = mosaic::federation::tls::http_client(Some(Path::new(&pki.ca_cert))).unwrap();
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let bench = Bench {
        pg_template,
        pki,
        http,
        seconds,
    };
    let which = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();

    if which.is_empty() || which == "single" {
        println!("\n== one instance: tasks(first: 50) over 10,000 tasks, {seconds} s per run ==");
        let one = bench.start("single", 10_000).await;
        let q = "{ tasks(first: 50) { edges { cursor node { id title priority createdAt workspace { id } } } pageInfo { hasNextPage endCursor } } }";
        bench.check(&one, q).await;
        for c in [1, 8, 64] {
            row(&format!("{c} connection(s)"), bench.wrk(&one, q, c));
        }
    }

    if which.is_empty() || which == "knowledge-federated" {
        let entries = 10_000;
        println!(
            "\n== knowledge search: TEXT over 3 instances of {entries} entries, fused, beside the slowest alone, {seconds} s per run =="
        );
        let mut instances = Vec::new();
        for name in ["khome", "kpeer1", "kpeer2"] {
            let i = bench.start(name, 0).await;
            seed_knowledge(&i.database_url, &format!("user@{name}.example"), entries).await;
            instances.push(i);
        }
        bench.peer(&instances[0], &instances[1]);
        bench.peer(&instances[0], &instances[2]);
        let search = |scope: &str| {
            format!(
                "{{ searchKnowledge(query: \"orbit launch\", mode: TEXT, first: 20{scope}) {{ rank score snippet entry {{ id title instance {{ name }} }} }} }}"
            )
        };
        let fed = search(", scope: {all: true}");
        let local = search("");
        let body = bench.check(&instances[0], &fed).await;
        assert_eq!(
            body["extensions"]["federation"]["succeeded"], 3,
            "every instance answered: {body}"
        );
        let names: std::collections::BTreeSet<&str> = body["data"]["searchKnowledge"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["entry"]["instance"]["name"].as_str())
            .collect();
        assert_eq!(names.len(), 3, "hits from every instance: {body}");
        // The slowest instance alone, by a short probe of each.
        let mut slowest = (0usize, 0.0f64);
        for (n, i) in instances.iter().enumerate() {
            assert_twenty_hits(&bench.check(i, &local).await);
            let (_, p50, _) = bench.wrk_for(i, &local, 1, 2);
            if p50 > slowest.1 {
                slowest = (n, p50);
            }
        }
        for c in [1, 8] {
            let f = bench.wrk(&instances[0], &fed, c);
            row(&format!("federated, 3 instances, {c} connection(s)"), f);
            let d = bench.wrk(&instances[slowest.0], &local, c);
            row(
                &format!("{} alone (slowest), {c} connection(s)", instances[slowest.0].name),
                d,
            );
            println!(
                "federation overhead, {c} connection(s): p50 +{:.2} ms ({:.2}x), p99 +{:.2} ms",
                f.1 - d.1,
                f.1 / d.1,
                f.2 - d.2
            );
        }
    }

    if which.is_empty() || which == "federation" {
        println!("\n== fan-out: tasks(scope: {{all: true}}, first: 50), 8 connections, {seconds} s per run ==");
        let master = bench.start("master", 1_000).await;
        let mut spokes = Vec::new();
        for i in 0..10 {
            spokes.push(bench.start(&format!("spoke{i}"), 1_000).await);
        }
        let fed = "{ tasks(scope: {all: true}, first: 50) { edges { cursor node { id title instance { name } } } pageInfo { hasNextPage endCursor } } }";
        let local = "{ tasks(first: 50) { edges { cursor node { id title instance { name } } } pageInfo { hasNextPage endCursor } } }";
        let mut peered = 0;
        let mut results = Vec::new();
        for n in [1usize, 3, 10] {
            while peered < n {
                bench.peer(&master, &spokes[peered]);
                peered += 1;
            }
            let body = bench.check(&master, fed).await;
            let total = body["extensions"]["federation"]["succeeded"].as_u64().unwrap_or(0);
            assert_eq!(total as usize, n + 1, "every spoke answered: {body}");
            let r = bench.wrk(&master, fed, 8);
            row(&format!("master, {n} spoke(s)"), r);
            results.push((n, r));
        }
        // The slowest spoke, by a short probe of each, then the full run.
        let saved = bench.seconds;
        let probe = Bench { seconds: 2, ..bench };
        let mut slowest = (0usize, 0.0f64);
        for (i, s) in spokes.iter().enumerate() {
            let (_, p50, _) = probe.wrk(s, local, 8);
            if p50 > slowest.1 {
                slowest = (i, p50);
            }
        }
        let bench = Bench {
            seconds: saved,
            ..probe
        };
        let direct = bench.wrk(&spokes[slowest.0], local, 8);
        row(&format!("direct to slowest spoke ({})", spokes[slowest.0].name), direct);
        for (n, (rps, p50, p99)) in results {
            println!(
                "master overhead, {n:>2} spoke(s): p50 +{:.2} ms ({:.2}x), p99 +{:.2} ms, throughput {:.2}x of direct",
                p50 - direct.1,
                p50 / direct.1,
                p99 - direct.2,
                rps / direct.0
            );
        }
    }
}
