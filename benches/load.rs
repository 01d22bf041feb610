//! Load benchmarks against the release binary, driven by `wrk`.
//!
//! `cargo bench --bench load` (or `scripts/bench`, which installs wrk):
//! 1. one instance, `tasks(first: 50)` for one user over 10,000 seeded tasks,
//!    at 1, 8 and 64 connections;
//! 2. a master fanning out `tasks(scope: {all: true}, first: 50)` to 1, 3 and
//!    10 spokes over HTTPS, beside the same query sent directly to the
//!    slowest spoke, all in one run so the master's overhead is a difference;
//!    with the master's CPU time per request (with BENCH_BASELINE, run by that
//!    binary too, first);
//! 3. `demo`: the demo's chain home → work → hq, each instance directly and
//!    the federated query through home, at 1 and 8 connections, with each
//!    instance's CPU time per request (and the rest of the machine's); round trips
//!    to PostgreSQL per local request (counted by a relay on its socket) and
//!    PostgreSQL's own time for the same statements (pgbench). With
//!    BENCH_BASELINE=<another mosaic binary>, the chain runs with that binary
//!    too, in the same run, for a before/after.
//!
//! 4. (`governance`) the same chain twice, once with the serving side's rate
//!    limits and request audit on, once with both off, federated runs
//!    interleaved, medians and the on/off ratio (issue 16);
//! 5. (`knowledge-federated`) `searchKnowledge(mode: HYBRID, scope: {all: true})`
//!    over three instances of 10,000 entries each (the installed model
//!    embeds the query; the entries' vectors are generated), beside the same
//!    search sent directly to the slowest of them, at 1 and 8 connections.
//! 6. (`events`) a master subscribed to one spoke's domain events, its
//!    `events` subscription open over a WebSocket: BENCH_EVENTS tasks
//!    (default 1,000) created on the spoke through GraphQL at BENCH_EVENT_RATE
//!    a second (default 100), latency from the mutation's answer (its commit)
//!    to the event on the master's subscription, p50/p99; then as many tasks
//!    written on the spoke in one transaction, and the events per second
//!    through the master until the last one arrives (issue 17).
//!
//! 6. (`flapping`) a master with three spokes, federated `tasks(first: 50)`:
//!    p50/p99 with all three healthy, then with one flapping (a TCP proxy in
//!    front of it that alternately forwards and refuses, cutting open
//!    connections, every BENCH_FLAP_MS, default 1000), and the ratio (issue 17).
//!
//! Each instance is a `mosaic serve` child process with its own database on
//! one private PostgreSQL cluster. Set BENCH_SECONDS to change the run length.

#[path = "support/relay.rs"]
mod relay;
#[path = "support/sample.rs"]
#[allow(dead_code)]
mod sample;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

const SECRET: &str = "benchmark-secret-key-0123456789abcdef";

struct Instance {
    name: String,
    /// The binary it runs (this build's, or BENCH_BASELINE).
    bin: PathBuf,
    port: u16,
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

fn mosaic(bin: &Path, env: &[(&str, String)], args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn,rustls=error")
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

    /// Starts an instance of this build on a fresh database with `tasks`
    /// seeded tasks for its user. Its peers' rate limit is far above any
    /// rate here: the default (200/s per peer) would cap what is measured
    /// and stall requests a second on Retry-After (`governance` measures the
    /// limit itself).
    async fn start(&self, name: &str, tasks: usize) -> Instance {
        self.start_with(
            Path::new(env!("CARGO_BIN_EXE_mosaic")),
            "",
            name,
            tasks,
            0,
            None,
            &[UNLIMITED_PEERS],
        )
        .await
    }

    /// Lets PostgreSQL settle after instances were set up, so the first run
    /// does not pay for their aftermath: each database vacuumed and
    /// analysed (nothing left for autovacuum), then a checkpoint.
    async fn settle(&self, instances: &[&Instance]) {
        for i in instances {
            let mut conn = sqlx::PgConnection::connect(&i.database_url).await.unwrap();
            sqlx::raw_sql("VACUUM (ANALYZE)").execute(&mut conn).await.unwrap();
        }
        let mut admin = sqlx::PgConnection::connect(&self.pg_template.replace("DBNAME", "postgres"))
            .await
            .unwrap();
        sqlx::raw_sql("CHECKPOINT").execute(&mut admin).await.unwrap();
    }

    /// Starts `bin` as instance `name` (its database tagged `set`, with
    /// `tasks` tasks and `entries` knowledge entries), reaching PostgreSQL
    /// through `relay` if given, served with the settings `extra` besides.
    #[allow(clippy::too_many_arguments)]
    async fn start_with(
        &self,
        bin: &Path,
        set: &str,
        name: &str,
        tasks: usize,
        entries: usize,
        relay: Option<&relay::Relay>,
        extra: &[(&str, &str)],
    ) -> Instance {
        let db = format!("bench_{}{}_{}", name, set, std::process::id());
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
        mosaic(bin, &env, &["user", "create", "--email", &email, "--admin"]);
        let token = mosaic(bin, &env, &["token", "create", "--user", &email]);
        seed(&database_url, &email, name, tasks).await;
        if entries > 0 {
            seed_knowledge(&database_url, &email, entries).await;
        }
        let served_url = match relay {
            Some(r) => with_socket_dir(&database_url, &r.dir),
            None => database_url.clone(),
        };
        let child = Command::new(bin)
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("DATABASE_URL", &served_url)
            .envs(extra.iter().copied())
            .env("RUST_LOG", "warn,rustls=error")
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
            bin: bin.to_path_buf(),
            port,
            url,
            database_url,
            token,
            child,
        }
    }

    /// `asking` connects to `asked` (CLI, signed CONNECT), `asked` grants its
    /// workspace, and lets reads go on to its own peers if `forward`.
    fn peer(&self, asking: &Instance, asked: &Instance, forward: bool) {
        let asking_env = self.env(&asking.name, asking.port, &asking.database_url);
        let asked_env = self.env(&asked.name, asked.port, &asked.database_url);
        mosaic(&asking.bin, &asking_env, &["peer", "connect", &asked.url]);
        let listing = mosaic(&asked.bin, &asked_env, &["peer", "list"]);
        let id = listing
            .lines()
            .find(|l| l.contains(&format!(" {} ", asking.name)))
            .and_then(|l| l.split_whitespace().next())
            .expect("the asking instance is listed")
            .to_string();
        let mut approve = vec!["peer", "approve", &id, "--workspace", &asked.name];
        if forward {
            approve.push("--forward");
        }
        mosaic(&asked.bin, &asked_env, &approve);
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

    /// Runs wrk.
    fn wrk(&self, i: &Instance, query: &str, connections: u32) -> Run {
        self.wrk_for(i, query, connections, self.seconds)
    }

    /// `wrk` for `seconds`.
    fn wrk_for(&self, i: &Instance, query: &str, connections: u32, seconds: u64) -> Run {
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

/// One wrk run: requests/s, p50 and p99 in ms, requests completed.
#[derive(Clone, Copy)]
struct Run {
    rps: f64,
    p50: f64,
    p99: f64,
    requests: u64,
}

fn parse_wrk(text: &str) -> Run {
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
    let mut run = Run {
        rps: f64::NAN,
        p50: f64::NAN,
        p99: f64::NAN,
        requests: 0,
    };
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["Requests/sec:", v] => run.rps = v.parse().unwrap_or(f64::NAN),
            ["50%", v] => run.p50 = ms(v),
            ["99%", v] => run.p99 = ms(v),
            [n, "requests", "in", ..] => run.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    run
}

/// A transaction acting as the user with `email` (whose id comes with it),
/// for seeding rows the policies let that user write.
async fn as_user(database_url: &str, email: &str) -> (sqlx::PgConnection, uuid::Uuid) {
    let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
    let user: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT set_config('mosaic.user_id', $1, true)")
        .bind(user.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    (conn, user)
}

async fn seed(database_url: &str, email: &str, workspace: &str, tasks: usize) {
    let (mut tx, user) = as_user(database_url, email).await;
    sqlx::query("INSERT INTO workspaces (id, name, created_by) VALUES (gen_random_uuid(), $1, $2)")
        .bind(workspace)
        .bind(user)
        .execute(&mut tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO tasks (id, workspace_id, title, priority, created_by, created_at)
         SELECT gen_random_uuid(), w.id, 'task ' || g, (g % 4)::smallint, $1, now() - g * interval '1 second'
         FROM workspaces w, generate_series(1, $2) g",
    )
    .bind(user)
    .bind(tasks as i32)
    .execute(&mut tx)
    .await
    .unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut tx).await.unwrap();
}

/// `entries` published knowledge entries in the user's workspace, their
/// words drawn from a small vocabulary so a two-word search matches a few
/// hundred of them (and ranks them by how often the words occur), each with
/// a stored vector (generated: semantic search costs the same whatever the
/// vectors say), which the instance loads when it starts.
async fn seed_knowledge(database_url: &str, email: &str, entries: usize) {
    let (mut tx, user) = as_user(database_url, email).await;
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
    .execute(&mut tx)
    .await
    .unwrap();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM knowledge_entries")
        .fetch_all(&mut tx)
        .await
        .unwrap();
    let mut rng = sample::XorShift(0x9E37_79B9_7F4A_7C15 ^ entries as u64);
    let vectors: Vec<Vec<u8>> = ids
        .iter()
        .map(|_| mosaic::embedding::vectors::encode(&rng.unit_vector(384)))
        .collect();
    sqlx::query(
        "INSERT INTO knowledge_embeddings (entry_id, workspace_id, model, vector, content_sha256)
         SELECT e.id, e.workspace_id, $3, v.vector, sha256(convert_to(knowledge_embedding_text(e.title, e.content), 'UTF8'))
         FROM unnest($1::uuid[], $2::bytea[]) AS v(id, vector) JOIN knowledge_entries e ON e.id = v.id",
    )
    .bind(&ids)
    .bind(&vectors)
    .bind(mosaic::knowledge::embeddings::model_name())
    .execute(&mut tx)
    .await
    .unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut tx).await.unwrap();
}

/// A search that answers 20 hits (the probe measures real work).
fn assert_twenty_hits(body: &Value) {
    let hits = body["data"]["searchKnowledge"].as_array().map_or(0, Vec::len);
    assert_eq!(hits, 20, "{body}");
}

fn row(label: &str, r: Run) {
    println!(
        "{label:<44} {:>10.1} req/s   p50 {:>8.2} ms   p99 {:>8.2} ms",
        r.rps, r.p50, r.p99
    );
}

/// A process's CPU time (user + system) so far, in seconds.
fn cpu_seconds(child: &Child) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as f64;
    ticks as f64 / per_second
}

/// The CPU time every core of the machine spent busy so far, in seconds.
fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: u64 = cpu
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as f64;
    busy as f64 / per_second
}

/// `url` with its Unix socket directory (`host=`) replaced.
fn with_socket_dir(url: &str, dir: &Path) -> String {
    let mut parsed = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "host" {
                dir.display().to_string()
            } else {
                v.to_string()
            };
            (k.to_string(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// The socket file of a URL's server (`host=` directory and port), if it names one.
/// The median of `f` over `runs` (an odd number of them).
fn median<T>(runs: &[T], f: impl Fn(&T) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn socket_file(url: &str) -> Option<PathBuf> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let dir = parsed.query_pairs().find(|(k, _)| k == "host")?.1.to_string();
    Some(Path::new(&dir).join(format!(".s.PGSQL.{}", parsed.port().unwrap_or(5432))))
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

    if which.is_empty() || which == "governance" {
        governance(&bench).await;
    }

    if which.is_empty() || which == "flapping" {
        flapping(&bench).await;
    }

    if which.is_empty() || which == "events" {
        events(&bench).await;
    }

    if which.is_empty() || which == "knowledge-federated" {
        let entries = 10_000;
        println!(
            "\n== knowledge search: HYBRID over 3 instances of {entries} entries, fused, beside the slowest alone, {seconds} s per run =="
        );
        let mut instances = Vec::new();
        let bin = Path::new(env!("CARGO_BIN_EXE_mosaic"));
        for name in ["khome", "kpeer1", "kpeer2"] {
            instances.push(bench.start_with(bin, "", name, 0, entries, None, &[]).await);
        }
        bench.peer(&instances[0], &instances[1], false);
        bench.peer(&instances[0], &instances[2], false);
        let search = |scope: &str| {
            format!(
                "{{ searchKnowledge(query: \"orbit launch\", mode: HYBRID, first: 20{scope}) {{ rank score snippet entry {{ id title instance {{ name }} }} }} }}"
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
        assert!(
            body["extensions"].get("searchKnowledge").is_none(),
            "answered in HYBRID, with the model (scripts/install-model): {body}"
        );
        // The slowest instance alone, by a short probe of each.
        let mut slowest = (0usize, 0.0f64);
        for (n, i) in instances.iter().enumerate() {
            assert_twenty_hits(&bench.check(i, &local).await);
            let p50 = bench.wrk_for(i, &local, 1, 2).p50;
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
                f.p50 - d.p50,
                f.p50 / d.p50,
                f.p99 - d.p99
            );
        }
    }

    if which.is_empty() || which == "federation" {
        if let Ok(baseline) = std::env::var("BENCH_BASELINE") {
            fan_out(&bench, Path::new(&baseline), "_base", "baseline (BENCH_BASELINE)").await;
        }
        fan_out(&bench, Path::new(env!("CARGO_BIN_EXE_mosaic")), "", "this build").await;
        return demo_or_not(&bench, &which).await;
    }
    demo_or_not(&bench, &which).await;
}

/// A master fanning out to 1, 3 and 10 spokes, all run by `bin` (their
/// databases tagged `set`), beside the slowest spoke asked directly.
async fn fan_out(bench: &Bench, bin: &Path, set: &str, label: &str) {
    let seconds = bench.seconds;
    println!("\n== fan-out, {label}: tasks(scope: {{all: true}}, first: 50), 8 connections, {seconds} s per run ==");
    let master = bench
        .start_with(bin, set, "master", 1_000, 0, None, &[UNLIMITED_PEERS])
        .await;
    let mut spokes = Vec::new();
    for i in 0..10 {
        spokes.push(
            bench
                .start_with(bin, set, &format!("spoke{i}"), 1_000, 0, None, &[UNLIMITED_PEERS])
                .await,
        );
    }
    let mut peered = 0;
    let mut results = Vec::new();
    for n in [1usize, 3, 10] {
        while peered < n {
            bench.peer(&master, &spokes[peered], false);
            peered += 1;
        }
        let body = bench.check(&master, FEDERATED).await;
        let total = body["extensions"]["federation"]["succeeded"].as_u64().unwrap_or(0);
        assert_eq!(total as usize, n + 1, "every spoke answered: {body}");
        let cpu = cpu_seconds(&master.child);
        let r = bench.wrk(&master, FEDERATED, 8);
        let cpu_ms = (cpu_seconds(&master.child) - cpu) * 1000.0 / r.requests.max(1) as f64;
        row(&format!("master, {n} spoke(s)"), r);
        println!("{:<44} {cpu_ms:>10.3} ms of master CPU per request", "");
        results.push((n, r, cpu_ms));
    }
    // The slowest spoke, by a short probe of each, then the full run.
    let mut slowest = (0usize, 0.0f64);
    for (i, s) in spokes.iter().enumerate() {
        let p50 = bench.wrk_for(s, LOCAL, 8, 2).p50;
        if p50 > slowest.1 {
            slowest = (i, p50);
        }
    }
    let direct = bench.wrk(&spokes[slowest.0], LOCAL, 8);
    row(&format!("direct to slowest spoke ({})", spokes[slowest.0].name), direct);
    let one_spoke_cpu = results[0].2;
    for (n, r, cpu_ms) in results {
        println!(
            "master overhead, {n:>2} spoke(s): p50 +{:.2} ms ({:.2}x), p99 +{:.2} ms, throughput {:.2}x of direct, CPU per request {:.2}x of 1 spoke",
            r.p50 - direct.p50,
            r.p50 / direct.p50,
            r.p99 - direct.p99,
            r.rps / direct.rps,
            cpu_ms / one_spoke_cpu
        );
    }
    drop((master, spokes));
}

/// The same selection for the local and the federated query.
const LOCAL: &str = "{ tasks(first: 50) { edges { cursor node { id title priority createdAt instance { name } } } pageInfo { hasNextPage endCursor } } }";
const FEDERATED: &str = "{ tasks(scope: {all: true}, first: 50) { edges { cursor node { id title priority createdAt instance { name } } } pageInfo { hasNextPage endCursor } } }";

/// Issue 16: what governance on the serving side (rate limits, the request
/// audit) costs a federated read. Four demo chains home -> work -> hq: both
/// on (limits too high to refuse anything: the bucket is still taken on
/// every request), both off, and each alone; runs interleaved, medians of 5.
async fn governance(bench: &Bench) {
    let seconds = bench.seconds;
    println!(
        "\n== governance: federated tasks(first: 50) through home, rate limits and audit on vs off (and each alone), {seconds} s per run, 5 runs each, interleaved =="
    );
    let bin = Path::new(env!("CARGO_BIN_EXE_mosaic"));
    let (limits_on, limits_off) = (UNLIMITED_PEERS, ("MOSAIC_PEER_RATE_LIMIT_PER_SECOND", "0"));
    let audit_off = ("MOSAIC_FEDERATION_AUDIT_QUEUE", "0");
    type Settings<'a> = &'a [(&'a str, &'a str)];
    let sets: [(&str, &str, Settings); 4] = [
        ("_gov", "both on", &[limits_on]),
        ("_ungov", "both off", &[limits_off, audit_off]),
        ("_limits", "limits only", &[limits_on, audit_off]),
        ("_audit", "audit only", &[limits_off]),
    ];
    let mut chains = Vec::new();
    for (set, _, extra) in sets {
        let hq = bench.start_with(bin, set, "hq", 1_000, 0, None, extra).await;
        let work = bench.start_with(bin, set, "work", 1_000, 0, None, extra).await;
        let home = bench.start_with(bin, set, "home", 1_000, 0, None, extra).await;
        bench.peer(&work, &hq, true);
        bench.peer(&home, &work, true);
        let body = bench.check(&home, FEDERATED).await;
        assert_eq!(
            body["extensions"]["federation"]["succeeded"].as_u64(),
            Some(3),
            "{body}"
        );
        chains.push([home, work, hq]);
    }
    bench.settle(&chains.iter().flatten().collect::<Vec<_>>()).await;
    for connections in [1u32, 8] {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); sets.len()];
        for _ in 0..5 {
            for (k, chain) in chains.iter().enumerate() {
                runs[k].push(bench.wrk(&chain[0], FEDERATED, connections));
            }
        }
        let off_rps = median(&runs[1], |r| r.rps);
        for (k, (_, label, _)) in sets.iter().enumerate() {
            let (rps, p50) = (median(&runs[k], |r| r.rps), median(&runs[k], |r| r.p50));
            println!(
                "{connections} connection(s), {label:<11}: {rps:.1} req/s p50 {p50:.2} ms; /both off {:.3}{}",
                rps / off_rps,
                if k == 0 { " (aim: above 0.95)" } else { "" }
            );
        }
    }
    let hq_dbs: Vec<String> = ["_gov", "_ungov"]
        .iter()
        .map(|set| format!("bench_hq{set}_{}", std::process::id()))
        .collect();
    drop(chains);
    scope_policies(bench, &hq_dbs[0], &hq_dbs[1]).await;
}

/// What the grant scope's RESTRICTIVE policies (migration 0075) cost a
/// peer's page: pgbench runs the page with a peer's settings on `with`, and
/// on `without` after its restrictive policies are dropped (a thrown-away
/// bench database), interleaved, medians of 5.
async fn scope_policies(bench: &Bench, with: &str, without: &str) {
    let Some(socket) = socket_file(&bench.pg_template) else {
        println!("(the scope policies' cost needs the benches' own cluster: unset DATABASE_URL)");
        return;
    };
    let url = |db: &str| bench.pg_template.replace("DBNAME", db);
    let mut admin = sqlx::PgConnection::connect(&url(without)).await.unwrap();
    sqlx::raw_sql(
        "DO $$ DECLARE p record; BEGIN
           FOR p IN SELECT policyname, tablename FROM pg_policies WHERE permissive = 'RESTRICTIVE' LOOP
             EXECUTE format('DROP POLICY %I ON %I', p.policyname, p.tablename);
           END LOOP; END $$",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let mut scripts = Vec::new();
    for db in [with, without] {
        let (_, workspace) = owner_and_workspace(&url(db)).await;
        let script = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n{};\n{PAGE_STATEMENT};\nROLLBACK;\n",
            peer_scope_sql(workspace)
        );
        // The peer sees the page (the policies let its grant through).
        let mut conn = sqlx::PgConnection::connect(&url(db)).await.unwrap();
        sqlx::raw_sql("SET ROLE mosaic_app").execute(&mut conn).await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(peer_scope_sql(workspace)))
            .execute(&mut *tx)
            .await
            .unwrap();
        let rows = sqlx::raw_sql(PAGE_STATEMENT).fetch_all(&mut *tx).await.unwrap().len();
        assert_eq!(rows, 51, "the peer's page on {db}");
        scripts.push((db, script));
    }
    println!(
        "\n== the grant scope's restrictive policies on a peer's page (pgbench, 1 client, {} s per run, 5 runs each, interleaved) ==",
        bench.seconds
    );
    let mut runs: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (k, (db, script)) in scripts.iter().enumerate() {
            runs[k].push(pgbench(bench, &socket, db, script));
        }
    }
    let (with_tps, without_tps) = (median(&runs[0], |r| r.0), median(&runs[1], |r| r.0));
    let (with_ms, without_ms) = (median(&runs[0], |r| r.1), median(&runs[1], |r| r.1));
    println!(
        "with the policies {with_tps:.0} tps ({with_ms:.3} ms), without {without_tps:.0} tps ({without_ms:.3} ms): with/without throughput {:.3}",
        with_tps / without_tps
    );
}

/// Issue 17: a federated read's latency at a master with three spokes, all
/// healthy, then with one flapping, in one run.
async fn flapping(bench: &Bench) {
    let seconds = bench.seconds;
    let period = Duration::from_millis(
        std::env::var("BENCH_FLAP_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000),
    );
    println!(
        "\n== flapping: federated tasks(first: 50) at a master with 3 spokes, healthy vs one flapping every {} ms, {seconds} s per phase, 8 connections ==",
        period.as_millis()
    );
    let bin = Path::new(env!("CARGO_BIN_EXE_mosaic"));
    let master = bench.start("fmaster", 1_000).await;
    let steady1 = bench.start("fsteady1", 1_000).await;
    let steady2 = bench.start("fsteady2", 1_000).await;
    // The flapping spoke is known to its peers at the proxy's address.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("https://127.0.0.1:{}", proxy.local_addr().unwrap().port());
    let mut flaky = bench
        .start_with(bin, "", "fflaky", 1_000, 0, None, &[("MOSAIC_PUBLIC_URL", &proxy_url)])
        .await;
    let flap = Flapper::start(proxy, ([127, 0, 0, 1], flaky.port).into(), period);
    flaky.url = proxy_url;
    for spoke in [&steady1, &steady2, &flaky] {
        bench.peer(&master, spoke, false);
    }
    bench.settle(&[&master, &steady1, &steady2, &flaky]).await;
    let body = bench.check(&master, FEDERATED).await;
    assert_eq!(
        body["extensions"]["federation"]["succeeded"].as_u64(),
        Some(4),
        "the master and its three spokes answered: {body}"
    );
    let healthy = tokio::task::block_in_place(|| bench.wrk(&master, FEDERATED, 8));
    row("all three spokes healthy", healthy);
    flap.flapping(true);
    let flapping = tokio::task::block_in_place(|| bench.wrk(&master, FEDERATED, 8));
    flap.flapping(false);
    row("one of three flapping", flapping);
    println!(
        "flapping/healthy: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x",
        flapping.p50 / healthy.p50,
        flapping.p99 / healthy.p99,
        flapping.rps / healthy.rps
    );
}

/// A TCP proxy to `target` that, while flapping, alternates every `period`
/// between forwarding and refusing (new connections closed at once, open
/// ones cut): a peer that goes down and comes back, over and over.
struct Flapper {
    flapping: tokio::sync::watch::Sender<bool>,
}

impl Flapper {
    fn start(listener: tokio::net::TcpListener, target: std::net::SocketAddr, period: Duration) -> Self {
        let (up_tx, up) = tokio::sync::watch::channel(true);
        let (flapping, flapping_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                // Up while not flapping; while flapping, the other state.
                let up = !*flapping_rx.borrow() || !*up_tx.borrow();
                up_tx.send_replace(up);
            }
        });
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut up = up.clone();
                if !*up.borrow() {
                    continue; // dropped: closed at once
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = up.wait_for(|u| !*u) => {}
                    }
                });
            }
        });
        Self { flapping }
    }

    fn flapping(&self, on: bool) {
        self.flapping.send_replace(on);
    }
}

async fn demo_or_not(bench: &Bench, which: &str) {
    if !(which.is_empty() || which == "demo") {
        return;
    }
    let this = PathBuf::from(env!("CARGO_BIN_EXE_mosaic"));
    // The peer rate limit stays on (its bucket is taken per request) but
    // above what the chain can ask: the default, 200/s, would cap the
    // federated throughput this measures.
    if let Ok(baseline) = std::env::var("BENCH_BASELINE") {
        demo_chain(
            bench,
            Path::new(&baseline),
            "_base",
            "baseline (BENCH_BASELINE)",
            &[UNLIMITED_PEERS],
        )
        .await;
    }
    demo_chain(bench, &this, "", "this build", &[UNLIMITED_PEERS]).await;
}

/// The demo's chain home → work → hq, 1,000 tasks each, run by `bin`.
async fn demo_chain(bench: &Bench, bin: &Path, set: &str, label: &str, extra: &[(&str, &str)]) {
    let seconds = bench.seconds;
    println!(
        "\n== demo chain home -> work -> hq, {label}: tasks(first: 50) directly and through home (scope all), {seconds} s per run =="
    );
    let hq = bench.start_with(bin, set, "hq", 1_000, 0, None, extra).await;
    let work = bench.start_with(bin, set, "work", 1_000, 0, None, extra).await;
    let home = bench.start_with(bin, set, "home", 1_000, 0, None, extra).await;
    bench.peer(&work, &hq, true);
    bench.peer(&home, &work, true);
    let body = bench.check(&home, FEDERATED).await;
    let answered = body["extensions"]["federation"]["succeeded"].as_u64().unwrap_or(0);
    assert_eq!(answered, 3, "home, work and hq answered: {body}");
    bench.settle(&[&hq, &work, &home]).await;
    let mut slowest = [None::<Run>; 2];
    let mut federated = [None::<Run>; 2];
    for (k, c) in [1u32, 8].into_iter().enumerate() {
        for i in [&hq, &work, &home] {
            let cpu = cpu_seconds(&i.child);
            let r = bench.wrk(i, LOCAL, c);
            row(&format!("{} directly, {c} connection(s)", i.name), r);
            println!(
                "{:<44} CPU per request: {} {:.2} ms",
                "",
                i.name,
                (cpu_seconds(&i.child) - cpu) * 1000.0 / r.requests.max(1) as f64
            );
            let worse = match slowest[k] {
                None => true,
                // At one connection the slowest is the highest p50; at eight, the lowest throughput.
                Some(s) => (c == 1 && r.p50 > s.p50) || (c > 1 && r.rps < s.rps),
            };
            if worse {
                slowest[k] = Some(r);
            }
        }
        let before = [&home, &work, &hq].map(|i| cpu_seconds(&i.child));
        let machine = machine_cpu_seconds();
        let r = bench.wrk(&home, FEDERATED, c);
        row(&format!("federated through home, {c} connection(s)"), r);
        let per_request = |spent: f64| spent * 1000.0 / r.requests.max(1) as f64;
        let spent = [&home, &work, &hq].map(|i| cpu_seconds(&i.child));
        let instances: f64 = spent.iter().zip(&before).map(|(a, b)| a - b).sum();
        println!(
            "{:<44} CPU per request: home {:.2} ms, work {:.2} ms, hq {:.2} ms, the rest (PostgreSQL, wrk) {:.2} ms",
            "",
            per_request(spent[0] - before[0]),
            per_request(spent[1] - before[1]),
            per_request(spent[2] - before[2]),
            per_request(machine_cpu_seconds() - machine - instances),
        );
        federated[k] = Some(r);
    }
    let (s1, f1, s8, f8) = (
        slowest[0].unwrap(),
        federated[0].unwrap(),
        slowest[1].unwrap(),
        federated[1].unwrap(),
    );
    println!(
        "federated, 1 connection: p50 +{:.2} ms over the slowest direct p50 (goal: at most +1 ms)",
        f1.p50 - s1.p50
    );
    println!(
        "federated, 8 connections: {:.2}x the slowest direct throughput (goal: at least 0.25x)",
        f8.rps / s8.rps
    );
    drop((hq, work, home));
    local_costs(bench, bin, set).await;
}

/// Round trips to PostgreSQL per local request, and PostgreSQL's own time
/// for the statements of that request sent by pgbench.
async fn local_costs(bench: &Bench, bin: &Path, set: &str) {
    let Some(socket) = socket_file(&bench.pg_template) else {
        println!("(round trips and pgbench need the benches' own cluster: unset DATABASE_URL)");
        return;
    };
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench/relay{set}"));
    let relay = relay::Relay::start(&socket, &tmp);
    let counted = bench.start_with(bin, set, "counted", 1_000, 0, Some(&relay), &[]).await;
    bench.settle(&[&counted]).await;
    for _ in 0..50 {
        bench.check(&counted, LOCAL).await;
    }
    let requests = 500u64;
    let before = relay.round_trips();
    for _ in 0..requests {
        bench.check(&counted, LOCAL).await;
    }
    let per_request = (relay.round_trips() - before) as f64 / requests as f64;
    println!(
        "local tasks(first: 50), one client: {per_request:.2} round trips to PostgreSQL per request (goal: at most 2 on the request path)"
    );
    let one = bench.wrk(&counted, LOCAL, 1);
    drop(counted);
    let (tps, latency) = pgbench_page(bench, &socket, set).await;
    row("the same instance, directly, 1 connection (relay)", one);
    println!(
        "pgbench, the same statements, 1 client: {tps:.0} transactions/s, {latency:.3} ms average; the instance's p50 is {:.1}x (goal: at most 3x)",
        one.p50 / latency
    );
}

/// A peer rate limit no bench reaches.
const UNLIMITED_PEERS: (&str, &str) = ("MOSAIC_PEER_RATE_LIMIT_PER_SECOND", "100000");

/// The statement `tasks(first: 50)` runs (tasks::page without a cursor); the
/// bench selects neither project nor assignee, so neither is joined.
const PAGE_STATEMENT: &str = "SELECT t.id, t.title, t.description, t.status, t.priority, t.due_date, t.created_at, t.updated_at, t.workspace_id, t.project_id, w.name AS w_name, w.created_at AS w_created_at, w.updated_at AS w_updated_at FROM (SELECT * FROM tasks t WHERE true ORDER BY t.created_at ASC, t.id ASC LIMIT 51) t JOIN workspaces w ON w.id = t.workspace_id ORDER BY t.created_at ASC, t.id ASC";

/// The seeded user and workspace of a bench database.
async fn owner_and_workspace(url: &str) -> (uuid::Uuid, uuid::Uuid) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as("SELECT created_by, id FROM workspaces LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// pgbench running what `tasks(first: 50)` sends (the page in the
/// request's read-only transaction with its scope) on the database of the
/// instance `counted` of `set`; returns (tps, ms average).
async fn pgbench_page(bench: &Bench, socket: &Path, set: &str) -> (f64, f64) {
    let db = format!("bench_counted{}_{}", set, std::process::id());
    let (user, workspace) = owner_and_workspace(&bench.pg_template.replace("DBNAME", &db)).await;
    let script = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SELECT set_config('mosaic.user_id', '{user}', true), set_config('mosaic.workspace_ids', '{{{workspace}}}', true), set_config('mosaic.write_workspace_ids', '{{{workspace}}}', true), set_config('statement_timeout', '30000', true);
{PAGE_STATEMENT};
ROLLBACK;
"
    );
    pgbench(bench, socket, &db, &script)
}

/// The peer settings a granted peer's request sets (db::scope), for `workspace`.
fn peer_scope_sql(workspace: uuid::Uuid) -> String {
    let resources: Vec<&str> = mosaic::federation::grant::Resource::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    format!(
        "SELECT set_config('mosaic.user_id', '', true), set_config('mosaic.workspace_ids', '{{{workspace}}}', true), set_config('mosaic.write_workspace_ids', '{{}}', true), set_config('statement_timeout', '30000', true), set_config('mosaic.resources', '{{{}}}', true), set_config('mosaic.write_resources', '{{}}', true), set_config('mosaic.peer_id', '{}', true), set_config('mosaic.remote_actor', '', true)",
        resources.join(","),
        uuid::Uuid::new_v4()
    )
}

/// pgbench, one client, `bench.seconds`, running `script` on `db` as the
/// application's role; returns (tps, ms average).
fn pgbench(bench: &Bench, socket: &Path, db: &str, script: &str) -> (f64, f64) {
    let url = bench.pg_template.replace("DBNAME", db);
    let file = std::env::temp_dir().join(format!("mosaic-pgbench-{}.sql", std::process::id()));
    std::fs::write(&file, script).unwrap();
    let parsed = reqwest::Url::parse(&url).unwrap();
    let bin = mosaic::db::embedded::locate_binaries().unwrap().join("pgbench");
    let out = Command::new(bin)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            "1",
            "-T",
            &bench.seconds.to_string(),
            "-f",
        ])
        .arg(&file)
        .arg("-h")
        .arg(socket.parent().unwrap())
        .args([
            "-p",
            &parsed.port().unwrap_or(5432).to_string(),
            "-U",
            parsed.username(),
            db,
        ])
        // As the application's role, so the policies apply as they do to a request.
        .env("PGOPTIONS", "-c role=mosaic_app")
        .output()
        .expect("pgbench runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "pgbench: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let number = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(f64::NAN)
    };
    (number("tps = "), number("latency average = "))
}

/// A graphql-transport-ws connection over TLS, subscribed to `query`.
async fn subscription(
    bench: &Bench,
    i: &Instance,
    query: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let config = mosaic::federation::tls::client_config(Some(Path::new(&bench.pki.ca_cert))).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", i.port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut request = format!("wss://127.0.0.1:{}/graphql", i.port)
        .into_client_request()
        .unwrap();
    let h = request.headers_mut();
    h.insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    h.insert("authorization", format!("Bearer {}", i.token).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    for m in [
        json!({ "type": "connection_init", "payload": {} }),
        json!({ "type": "subscribe", "id": "1", "payload": { "query": query } }),
    ] {
        ws.send(Message::text(m.to_string())).await.unwrap();
    }
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && t.contains("connection_ack")
        {
            break;
        }
    }
    ws
}

/// Issue 17: commit on a spoke → the event on a master's `events` subscription.
async fn events(bench: &Bench) {
    use futures::StreamExt;
    use std::collections::HashMap;
    use tokio_tungstenite::tungstenite::Message;
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let rate: f64 = std::env::var("BENCH_EVENT_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0);
    println!("\n== events: {n} tasks created on a spoke at {rate}/s, commit → the master's events subscription ==");
    let master = bench.start("emaster", 0).await;
    let spoke = bench.start("espoke", 0).await;
    bench.peer(&master, &spoke, false);
    let workspace = bench.check(&spoke, "{ workspaces { id } }").await["data"]["workspaces"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ws = subscription(
        bench,
        &master,
        "subscription { events(scope: {all: true}, types: [\"task.created\"]) { objectId } }",
    )
    .await;
    // The master subscribes when its client first asks; wait until the spoke holds it.
    let mut db = sqlx::PgConnection::connect(&spoke.database_url).await.unwrap();
    let started = Instant::now();
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM event_subscriptions")
        .fetch_one(&mut db)
        .await
        .unwrap()
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the master never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(ws.for_each(move |m| {
        let arrived_tx = arrived_tx.clone();
        async move {
            if let Ok(Message::Text(t)) = m
                && let Ok(v) = serde_json::from_str::<Value>(&t)
                && let Some(id) = v["payload"]["data"]["events"]["objectId"].as_str()
            {
                let _ = arrived_tx.send((id.to_string(), Instant::now()));
            }
        }
    }));
    // Warm-up: tasks until one arrives, so the subscription is in place before the first measured commit.
    let create = |title: String| {
        let (http, url, token, workspace) = (
            bench.http.clone(),
            spoke.url.clone(),
            spoke.token.clone(),
            workspace.clone(),
        );
        async move {
            let body: Value = http
                .post(format!("{url}/graphql"))
                .bearer_auth(token)
                .json(&json!({ "query": "mutation($w: ID!, $t: String!) { createTask(input: {workspaceId: $w, title: $t}) { id } }",
                               "variables": { "w": workspace, "t": title } }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["data"]["createTask"]["id"].as_str().expect("created").to_string()
        }
    };
    loop {
        create("warm-up".into()).await;
        if tokio::time::timeout(Duration::from_secs(2), arrived.recv())
            .await
            .is_ok()
        {
            break;
        }
    }
    while arrived.try_recv().is_ok() {}
    let (committed_tx, mut committed) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for k in 0..n {
        tick.tick().await;
        let (created, committed_tx) = (create(format!("event {k}")), committed_tx.clone());
        tokio::spawn(async move {
            let id = created.await;
            let _ = committed_tx.send((id, Instant::now()));
        });
    }
    drop(committed_tx);
    let mut commits = HashMap::new();
    while let Some((id, at)) = committed.recv().await {
        commits.insert(id, at);
    }
    let mut arrivals = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while arrivals.len() < n {
        match tokio::time::timeout_at(deadline.into(), arrived.recv()).await {
            Ok(Some((id, at))) => {
                arrivals.insert(id, at);
            }
            _ => break,
        }
    }
    let mut latencies: Vec<f64> = commits
        .iter()
        .filter_map(|(id, c)| {
            arrivals
                .get(id)
                .map(|a| a.saturating_duration_since(*c).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "  delivered {}/{n}; commit → subscription latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );

    // Throughput: n tasks in one transaction, all at once through the pipeline.
    let (mut tx, user) = as_user(&spoke.database_url, &format!("user@{}.example", spoke.name)).await;
    let written = Instant::now();
    sqlx::query(
        "INSERT INTO tasks (id, workspace_id, title, created_by) \
         SELECT gen_random_uuid(), w.id, 'bulk ' || g, $1 FROM workspaces w, generate_series(1, $2) g",
    )
    .bind(user)
    .bind(n as i32)
    .execute(&mut tx)
    .await
    .unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut tx).await.unwrap();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = written;
    while got < n {
        match tokio::time::timeout_at(deadline.into(), arrived.recv()).await {
            Ok(Some((_, at))) => {
                got += 1;
                last = at;
            }
            _ => break,
        }
    }
    let took = last.saturating_duration_since(written).as_secs_f64();
    println!(
        "  {got}/{n} events of one transaction through the master in {:.2} s: {:.0} events/s",
        took,
        got as f64 / took
    );
    let db = spoke.database_url.clone();
    drop((master, spoke));
    outbox_write_cost(bench, &db).await;
}

/// What the outbox trigger costs a write: pgbench creating one task per
/// transaction as its owner, with `tasks_outbox` enabled and disabled in
/// turn on the same (stopped) instance's database, medians of 3.
async fn outbox_write_cost(bench: &Bench, url: &str) {
    let Some(socket) = socket_file(&bench.pg_template) else {
        println!("  (the outbox's write cost needs the benches' own cluster: unset DATABASE_URL)");
        return;
    };
    let (user, workspace) = owner_and_workspace(url).await;
    let script = format!(
        "BEGIN;
SELECT set_config('mosaic.user_id', '{user}', true), set_config('mosaic.workspace_ids', '{{}}', true), set_config('mosaic.write_workspace_ids', '{{}}', true);
INSERT INTO tasks (id, workspace_id, title, created_by) VALUES (gen_random_uuid(), '{workspace}', 'pgbench', '{user}');
COMMIT;
"
    );
    let db = reqwest::Url::parse(url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let mut runs: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        for (k, toggle) in ["ENABLE", "DISABLE"].iter().enumerate() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE tasks {toggle} TRIGGER tasks_outbox"
            )))
            .execute(&mut admin)
            .await
            .unwrap();
            runs[k].push(pgbench(bench, &socket, &db, &script));
        }
    }
    let (on, off) = (median(&runs[0], |r| r.1), median(&runs[1], |r| r.1));
    println!(
        "  createTask's statements (pgbench, 1 client, medians of 3): with the outbox trigger {on:.3} ms ({:.0} tps), without {off:.3} ms ({:.0} tps): +{:.3} ms per write",
        median(&runs[0], |r| r.0),
        median(&runs[1], |r| r.0),
        on - off
    );
}
