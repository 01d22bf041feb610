//! The `mosaic` binary end to end: embedded PostgreSQL lifecycle, operator
//! commands, and how startup failures are reported.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_mosaic");
/// Every command below needs a secret key; this one protects nothing.
const SECRET_KEY: &str = "cli-test-secret-key-0123456789abcdef";

/// The binary with a clean environment (nothing of the caller's
/// `DATABASE_URL`, `MOSAIC_*` or `RUST_LOG` leaks in) and a secret key.
fn mosaic(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MOSAIC_SECRET_KEY", SECRET_KEY)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let out = tokio::time::timeout(Duration::from_secs(120), mosaic(args, env).output())
        .await
        .expect("command finished in time")
        .expect("command ran");
    ran(out)
}

fn ran(out: std::process::Output) -> Ran {
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `mosaic admin create --email EMAIL` with `input` written to its stdin
/// (which is then closed).
async fn admin_create(env: &[(&str, &str)], email: &str, input: &str) -> Ran {
    let mut child = mosaic(&["admin", "create", "--email", email], env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("command ran");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("command finished in time")
        .expect("command ran");
    ran(out)
}

/// A fresh data directory with a short path (the cluster's Unix socket lives
/// in it). If a test fails with the embedded cluster still running, dropping
/// this stops it.
struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("mos").tempdir_in("/tmp").unwrap();
        // As root, PostgreSQL runs as `postgres`, which must reach the directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn data_str(&self) -> String {
        self.data().to_str().unwrap().to_string()
    }

    fn postmaster_pid(&self) -> PathBuf {
        self.data().join("postgres/data/postmaster.pid")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(self.postmaster_pid())
            && let Some(pid) = text.lines().next().and_then(|l| l.trim().parse().ok())
        {
            // Fast shutdown of a cluster a failed test left behind.
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
    }
}

fn http_client() -> reqwest::Client {
    mosaic::federation::tls::http_client(None).expect("HTTP client")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `mosaic serve`; SIGTERMed if a test fails while it runs.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    async fn start(dir: &DataDir, name: &str) -> Self {
        Self::start_with(dir, name, &[], true).await
    }

    /// `serve` with `env` added and, unless `with_key`, no MOSAIC_SECRET_KEY.
    async fn start_with(dir: &DataDir, name: &str, env: &[(&str, &str)], with_key: bool) -> Self {
        let addr = env
            .iter()
            .find(|(k, _)| *k == "MOSAIC_LISTEN")
            .map_or_else(|| format!("127.0.0.1:{}", free_port()), |(_, v)| v.to_string());
        let log = dir.dir.path().join(format!("{name}.log"));
        let mut vars = vec![("MOSAIC_DATA_DIR", dir.data_str()), ("MOSAIC_LISTEN", addr.clone())];
        vars.extend(
            env.iter()
                .filter(|(k, _)| *k != "MOSAIC_LISTEN")
                .map(|(k, v)| (*k, v.to_string())),
        );
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut command = mosaic(&["serve"], &vars);
        if !with_key {
            command.env_remove("MOSAIC_SECRET_KEY");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            base: format!("http://{addr}"),
            log,
        };
        server.wait_ready().await;
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls /readyz (bounded) until the server and its database answer.
    async fn wait_ready(&mut self) {
        let client = http_client();
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited early ({status}): {}", self.log());
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("serve never became ready: {}", self.log());
    }

    async fn gql(&self, token: &str, query: &str) -> Value {
        http_client()
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST /auth/breakglass`; on success also the `Cookie` header to send
    /// and the CSRF token.
    async fn breakglass(&self, email: &str, password: &str) -> (u16, Option<(String, String)>) {
        let r = http_client()
            .post(format!("{}/auth/breakglass", self.base))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let cookie = r
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let body: Value = r.json().await.unwrap();
        if status != 200 {
            assert_eq!(cookie, "", "no cookie when refused: {body}");
            return (status, None);
        }
        assert!(cookie.contains("mosaic_session="), "{cookie}");
        let csrf = body["csrfToken"].as_str().expect("csrfToken").to_string();
        assert!(!csrf.is_empty(), "{body}");
        (status, Some((cookie, csrf)))
    }

    /// A GraphQL POST authenticated by a session cookie and its CSRF token.
    async fn session_gql(&self, session: &(String, String), query: &str) -> Value {
        let (status, body) = self.session_gql_status(session, query).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn session_gql_status(&self, (cookie, csrf): &(String, String), query: &str) -> (u16, Value) {
        let r = http_client()
            .post(format!("{}/graphql", self.base))
            .header(reqwest::header::COOKIE, cookie)
            .header("x-mosaic-csrf", csrf)
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// SIGTERM, then the exit code.
    async fn terminate(mut self) -> Option<i32> {
        let pid = Pid::from_raw(self.child.id().unwrap() as i32);
        kill(pid, Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("serve exits after SIGTERM")
            .unwrap();
        status.code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let (Ok(None), Some(pid)) = (self.child.try_wait(), self.child.id()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            // Bounded wait so the embedded cluster is stopped before the
            // data directory is removed.
            for _ in 0..300 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[tokio::test]
async fn embedded_mode_creates_serves_stops_and_reuses_its_cluster() {
    let dir = DataDir::new();
    let env = [("MOSAIC_DATA_DIR", dir.data_str())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let created = run(&["user", "create", "--email", "cli@example.com"], &env).await;
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let user_id: Uuid = created.stdout.trim_end().parse().expect("prints the user id");
    assert_eq!(created.stdout, format!("{user_id}\n"));
    assert!(dir.data().join("postgres/data/PG_VERSION").is_file());
    assert!(
        !dir.postmaster_pid().exists(),
        "the command stops the cluster it started"
    );

    let issued = run(&["token", "create", "--user", "cli@example.com"], &env).await;
    assert_eq!(issued.code, Some(0), "{}", issued.stderr);
    assert_eq!(issued.stdout.lines().count(), 1, "{:?}", issued.stdout);
    let token = issued.stdout.strip_suffix('\n').expect("one line").to_string();
    assert!(!token.is_empty() && !token.contains(char::is_whitespace), "{token:?}");
    assert!(!dir.postmaster_pid().exists());

    // First run: the token works, and something is written.
    let server = Server::start(&dir, "first").await;
    let body = server
        .gql(&token, "mutation { createWorkspace(input: {name: \"kept\"}) { id } }")
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let body = server.gql(&token, "{ me { email id instance { id } } }").await;
    assert_eq!(body["data"]["me"]["email"], "cli@example.com", "{body}");
    assert!(
        body["data"]["me"]["id"]
            .as_str()
            .unwrap()
            .ends_with(&user_id.to_string())
    );
    let instance = body["data"]["me"]["instance"]["id"].clone();
    assert!(dir.postmaster_pid().exists(), "serve runs the cluster");
    let log = server.log.clone();
    assert_eq!(server.terminate().await, Some(0), "{}", read(&log));
    assert!(!dir.postmaster_pid().exists(), "SIGTERM stops the embedded PostgreSQL");

    // Second run on the same directory: same instance, same data, same token.
    let server = Server::start(&dir, "second").await;
    let body = server
        .gql(&token, "{ me { email instance { id } } workspaces { name } }")
        .await;
    assert_eq!(body["data"]["me"]["email"], "cli@example.com", "{body}");
    assert_eq!(body["data"]["me"]["instance"]["id"], instance);
    assert_eq!(body["data"]["workspaces"], json!([{ "name": "kept" }]));
    // A CLI command while serve holds the cluster uses it and leaves it running.
    let second = run(&["token", "create", "--user", "cli@example.com"], &env).await;
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    let second = second.stdout.trim_end();
    assert_ne!(second, token);
    let body = server.gql(second, "{ me { email } }").await;
    assert_eq!(body["data"]["me"]["email"], "cli@example.com", "{body}");
    assert!(dir.postmaster_pid().exists());
    let log = server.log.clone();
    assert_eq!(server.terminate().await, Some(0), "{}", read(&log));
    assert!(!dir.postmaster_pid().exists());
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Asserts a failed command: non-zero (or exactly `code`), nothing on stdout,
/// and one line on stderr containing each of `names`.
fn assert_fails(ran: &Ran, code: Option<i32>, names: &[&str]) {
    assert_ne!(ran.code, Some(0), "{}", ran.stdout);
    assert!(ran.code.is_some(), "exited by signal");
    if code.is_some() {
        assert_eq!(ran.code, code, "{}", ran.stderr);
    }
    assert_eq!(ran.stdout, "", "nothing on stdout");
    assert_eq!(ran.stderr.lines().count(), 1, "{:?}", ran.stderr);
    for name in names {
        assert!(ran.stderr.contains(name), "{name} in {:?}", ran.stderr);
    }
}

#[tokio::test]
async fn missing_postgres_binaries_are_reported_naming_mosaic_pg_bin() {
    let dir = DataDir::new();
    let data = dir.data_str();
    for args in [
        &["serve"][..],
        &["migrate"],
        &["user", "create", "--email", "x@example.com"],
    ] {
        let ran = run(args, &[("MOSAIC_DATA_DIR", &data), ("MOSAIC_PG_BIN", "/nonexistent")]).await;
        assert_fails(&ran, None, &["MOSAIC_PG_BIN"]);
    }
    assert!(!dir.data().exists(), "nothing was created");
}

#[tokio::test]
async fn invalid_configuration_exits_2_naming_the_field() {
    let dir = DataDir::new();
    let data = dir.data_str();
    let toml = dir.dir.path().join("m.toml");
    std::fs::write(&toml, "[limits]\nmax_dept = 7\n").unwrap();
    let toml = toml.to_str().unwrap();
    let bad_toml = dir.dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "[limits]\nmax_depth = = 7\n").unwrap();
    let bad_toml = bad_toml.to_str().unwrap();
    for (args, var, value, names) in [
        (
            &["serve"][..],
            "MOSAIC_LISTEN",
            "nonsense",
            &["listen", "MOSAIC_LISTEN"][..],
        ),
        (
            &["serve"],
            "MOSAIC_MAX_DEPTH",
            "1",
            &["limits.max_depth", "MOSAIC_MAX_DEPTH"],
        ),
        (&["serve"], "MOSAIC_DB_POOL_SIZE", "0", &["db.pool_size"]),
        (&["serve"], "DATABASE_URL", "mysql://x", &["database_url"]),
        (&["serve"], "MOSAIC_CONFIG", bad_toml, &["line 2, column"]),
        (
            &["serve"],
            "MOSAIC_CONFIG",
            toml,
            &["limits.max_dept", "unknown setting"],
        ),
        (
            &["user", "create", "--email", "x@example.com"],
            "MOSAIC_LISTEN",
            "nonsense",
            &["listen"],
        ),
    ] {
        let ran = run(args, &[("MOSAIC_DATA_DIR", &data), (var, value)]).await;
        assert_fails(&ran, Some(2), names);
    }
    assert!(!dir.data().exists(), "nothing was created");
}

#[tokio::test]
async fn token_create_for_an_unknown_user_names_user() {
    let url = common::fresh_database().await;
    let env = [("DATABASE_URL", url.as_str())];
    let ran = run(&["token", "create", "--user", "nobody@example.com"], &env).await;
    assert_fails(&ran, None, &["--user"]);
    let ran = run(
        &["token", "create", "--user", "nobody@example.com", "--expires", "5y"],
        &env,
    )
    .await;
    assert_fails(&ran, None, &["--expires"]);
    // No token was stored.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(tokens, 0);
}

#[tokio::test]
async fn user_create_twice_with_one_email_names_email() {
    let url = common::fresh_database().await;
    let env = [("DATABASE_URL", url.as_str())];
    let first = run(&["user", "create", "--email", "dup@example.com"], &env).await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    for email in ["dup@example.com", "Dup@Example.COM"] {
        let ran = run(&["user", "create", "--email", email], &env).await;
        assert_fails(&ran, None, &["--email"]);
    }
    let ran = run(&["user", "create", "--email", "not-an-address"], &env).await;
    assert_fails(&ran, None, &["--email"]);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let users: Vec<String> = sqlx::query_scalar("SELECT email FROM users")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(users, ["dup@example.com"]);
}

/// Neither output of a command carries any of `secrets`.
fn assert_not_echoed(ran: &Ran, secrets: &[&str]) {
    for secret in secrets {
        assert!(!ran.stdout.contains(secret), "{secret:?} on stdout");
        assert!(!ran.stderr.contains(secret), "{secret:?} on stderr");
    }
}

#[tokio::test]
async fn admin_create_makes_a_break_glass_admin_refuses_bad_input_and_resets_the_password() {
    const EMAIL: &str = "root@example.com";
    let first = "first Correct-Horse 1";
    // Exactly the minimum length; `short` is one character less.
    let reset = "Reset-Pw-12!";
    let short = "Short-Pw-11";
    let other = "valid Password For Nobody";
    assert_eq!(reset.chars().count(), mosaic::auth::breakglass::MIN_PASSWORD_CHARS);
    assert_eq!(short.chars().count(), mosaic::auth::breakglass::MIN_PASSWORD_CHARS - 1);
    let dir = DataDir::new();
    let data = dir.data_str();
    let env = [("MOSAIC_DATA_DIR", data.as_str())];

    let created = admin_create(&env, EMAIL, &format!("{first}\n")).await;
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let admin_id: Uuid = created.stdout.trim_end().parse().expect("prints the user id");
    assert_eq!(created.stdout, format!("{admin_id}\n"));
    assert_not_echoed(&created, &[first]);
    assert!(
        !dir.postmaster_pid().exists(),
        "the command stops the cluster it started"
    );

    // Refused input names what is wrong; nothing is created or changed
    // (checked below through the server).
    for (email, input, names) in [
        (EMAIL, format!("{short}\n"), &["password", "12"][..]),
        ("short@example.com", format!("{short}\n"), &["password", "12"]),
        ("empty@example.com", String::new(), &["password"]),
        ("not-an-address", format!("{other}\n"), &["--email", "not-an-address"]),
    ] {
        let ran = admin_create(&env, email, &input).await;
        assert_fails(&ran, None, names);
        assert_not_echoed(&ran, &[short, other]);
        assert!(!dir.postmaster_pid().exists());
    }

    let server = Server::start(&dir, "serve").await;
    // The refused reset left the first password in place.
    let (status, session) = server.breakglass(EMAIL, first).await;
    assert_eq!(status, 200);
    let session = session.unwrap();
    let body = server
        .session_gql(&session, "{ me { id email isAdmin } users { email isAdmin } }")
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["me"]["email"], EMAIL, "{body}");
    assert_eq!(body["data"]["me"]["isAdmin"], true, "{body}");
    let me_id = body["data"]["me"]["id"].as_str().unwrap();
    assert!(me_id.ends_with(&admin_id.to_string()), "{me_id} is {admin_id}");
    assert_eq!(
        body["data"]["users"],
        json!([{ "email": EMAIL, "isAdmin": true }]),
        "no other user was created"
    );
    for (email, password) in [
        (EMAIL, "wrong Correct-Horse 1"),
        (EMAIL, short),
        ("short@example.com", short),
        ("empty@example.com", ""),
        ("not-an-address", other),
    ] {
        let (status, _) = server.breakglass(email, password).await;
        assert_eq!(status, 401, "{email} / {password:?}");
    }

    // A reset while serve holds the cluster (password without a newline).
    let ran = admin_create(&env, EMAIL, reset).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout, format!("{admin_id}\n"), "the same user");
    assert_not_echoed(&ran, &[reset]);
    assert!(dir.postmaster_pid().exists(), "serve's cluster is left running");
    assert!(ran.stderr.contains("sessions have ended"), "{}", ran.stderr);
    let (status, _) = server.session_gql_status(&session, "{ me { email } }").await;
    assert_eq!(status, 401, "a reset ends the sessions opened with the old password");
    let (status, _) = server.breakglass(EMAIL, first).await;
    assert_eq!(status, 401, "the old password is refused");
    let (status, session) = server.breakglass(EMAIL, reset).await;
    assert_eq!(status, 200, "the new password is accepted");
    let body = server
        .session_gql(&session.unwrap(), "{ me { email isAdmin } users { email } }")
        .await;
    assert_eq!(body["data"]["me"], json!({ "email": EMAIL, "isAdmin": true }), "{body}");
    assert_eq!(body["data"]["users"], json!([{ "email": EMAIL }]), "{body}");

    let log = server.log();
    for password in [first, reset, short, other] {
        assert!(!log.contains(password), "{password:?} in the server log");
    }
    let log = server.log.clone();
    assert_eq!(server.terminate().await, Some(0), "{}", read(&log));
    assert!(!dir.postmaster_pid().exists());
}

/// `run` without MOSAIC_SECRET_KEY in the environment.
async fn run_without_key(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut command = mosaic(args, env);
    command.env_remove("MOSAIC_SECRET_KEY");
    let out = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("command finished in time")
        .expect("command ran");
    ran(out)
}

/// The README's one-instance commands, twice: with no key given, the first
/// start makes one in the data directory (0600) and every later start and
/// command uses it; a key that does not fit says what to do and leaves no
/// PostgreSQL running.
#[tokio::test]
async fn serve_without_a_key_makes_one_in_the_data_dir_and_starts_again_with_it() {
    let dir = DataDir::new();
    let data = dir.data_str();
    let key_file = dir.data().join("secret.key");

    let server = Server::start_with(&dir, "first", &[], false).await;
    let mode = std::fs::metadata(&key_file).expect("the key file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the owner reads the key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(key.trim().len() >= 32);
    assert!(!server.log().contains(key.trim()), "the key is not logged");
    assert!(server.log().contains("back this file up"), "{}", server.log());
    let log = server.log.clone();
    assert_eq!(server.terminate().await, Some(0), "{}", read(&log));
    assert!(!dir.postmaster_pid().exists());

    // Operator commands need no key; those that unseal use the file.
    let env = [("MOSAIC_DATA_DIR", data.as_str())];
    let created = run_without_key(&["user", "create", "--email", "you@example.com", "--admin"], &env).await;
    assert_eq!(created.code, Some(0), "{}", created.stderr);
    let issued = run_without_key(
        &["token", "create", "--user", "you@example.com", "--expires", "30d"],
        &env,
    )
    .await;
    assert_eq!(issued.code, Some(0), "{}", issued.stderr);
    let token = issued.stdout.trim_end().to_string();
    let peers = run_without_key(&["peer", "list"], &env).await;
    assert_eq!(peers.code, Some(0), "{}", peers.stderr);
    assert_eq!(peers.stdout, "");
    assert!(peers.stderr.contains("no peers yet"), "{}", peers.stderr);

    // The second start, exactly as the first (a host name for the address too).
    let port = free_port();
    let listen = format!("localhost:{port}");
    let server = Server::start_with(&dir, "second", &[("MOSAIC_LISTEN", &listen)], false).await;
    assert!(
        server.log().contains(&format!("http://127.0.0.1:{port}")),
        "{}",
        server.log()
    );
    let body = server.gql(&token, "{ me { email } }").await;
    assert_eq!(body["data"]["me"]["email"], "you@example.com", "{body}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key, "the key is kept");
    let log = server.log.clone();
    assert_eq!(server.terminate().await, Some(0), "{}", read(&log));

    // A key given in the environment wins over the file; this one does not fit.
    let wrong = run(
        &["serve"],
        &[("MOSAIC_DATA_DIR", &data), ("MOSAIC_LISTEN", "127.0.0.1:0")],
    )
    .await;
    assert_fails(&wrong, None, &["does not open", "secret.key", "first started with"]);
    assert!(
        !dir.postmaster_pid().exists(),
        "the failed start stopped its PostgreSQL"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
}

#[tokio::test]
async fn a_port_in_use_starts_no_database() {
    let dir = DataDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let ran = run(
        &["serve"],
        &[("MOSAIC_DATA_DIR", &dir.data_str()), ("MOSAIC_LISTEN", &addr)],
    )
    .await;
    assert_fails(&ran, None, &["listen", &addr]);
    assert!(!dir.data().join("postgres").exists(), "no cluster was made or started");
}

/// A cluster left running (here: started and abandoned by this test) is
/// adopted by `serve` and stopped when it exits.
#[tokio::test]
async fn serve_stops_a_cluster_it_adopted() {
    let dir = DataDir::new();
    let pg = mosaic::db::EmbeddedPostgres::start(&dir.data()).expect("cluster starts");
    std::mem::forget(pg);
    assert!(dir.postmaster_pid().exists());
    let server = Server::start(&dir, "adopting").await;
    let log = server.log.clone();
    assert_eq!(server.terminate().await, Some(0), "{}", read(&log));
    assert!(!dir.postmaster_pid().exists(), "serve stopped the cluster it adopted");
}

#[tokio::test]
async fn tokens_and_users_are_listed_and_revoked_from_the_cli() {
    let url = common::fresh_database().await;
    let env = [("DATABASE_URL", url.as_str())];
    for email in ["alice@example.com", "bob@example.com"] {
        let ran = run(&["user", "create", "--email", email], &env).await;
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    }
    let users = run(&["user", "list"], &env).await;
    assert_eq!(users.code, Some(0), "{}", users.stderr);
    let listed: Vec<&str> = users.stdout.lines().collect();
    assert_eq!(listed.len(), 2, "{}", users.stdout);
    assert!(listed[0].contains("alice@example.com") && listed[1].contains("bob@example.com"));

    let none = run(&["token", "list"], &env).await;
    assert_eq!((none.code, none.stdout.as_str()), (Some(0), ""));
    assert!(none.stderr.contains("no tokens"), "{}", none.stderr);

    let issued = run(
        &["token", "create", "--user", "alice@example.com", "--name", "laptop"],
        &env,
    )
    .await;
    assert_eq!(issued.code, Some(0), "{}", issued.stderr);
    let token = issued.stdout.trim_end();
    let forever = run(
        &["token", "create", "--user", "bob@example.com", "--expires", "never"],
        &env,
    )
    .await;
    assert_eq!(forever.code, Some(0), "{}", forever.stderr);

    let listed = run(&["token", "list", "--user", "alice@example.com"], &env).await;
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert_eq!(listed.stdout.lines().count(), 1, "{}", listed.stdout);
    let line = listed.stdout.lines().next().unwrap();
    assert!(
        line.contains("alice@example.com") && line.contains("name=\"laptop\""),
        "{line}"
    );
    let in_90_days = (time::OffsetDateTime::now_utc() + time::Duration::days(90))
        .date()
        .to_string();
    assert!(
        line.contains(&format!("expires={in_90_days}")),
        "expires by default: {line}"
    );
    assert!(line.contains("last-used=never"), "{line}");
    assert!(!listed.stdout.contains(token), "the secret is never listed");
    let bobs = run(&["token", "list", "--user", "bob@example.com"], &env).await;
    assert!(bobs.stdout.contains("expires=never"), "{}", bobs.stdout);

    let id = line.split_whitespace().next().unwrap();
    let revoked = run(&["token", "revoke", id], &env).await;
    assert_eq!(revoked.code, Some(0), "{}", revoked.stderr);
    assert!(revoked.stderr.contains("revoked"), "{}", revoked.stderr);
    let again = run(&["token", "revoke", id], &env).await;
    assert_fails(&again, None, &["ID", id]);
    let nonsense = run(&["token", "revoke", "nonsense"], &env).await;
    assert_fails(&nonsense, None, &["ID", "nonsense"]);
    let listed = run(&["token", "list", "--user", "alice@example.com"], &env).await;
    assert_eq!(listed.stdout, "");

    // A deactivated user gets no token.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    sqlx::query("UPDATE users SET deactivated_at = now() WHERE email = 'bob@example.com'")
        .execute(&mut conn)
        .await
        .unwrap();
    let refused = run(&["token", "create", "--user", "bob@example.com"], &env).await;
    assert_fails(&refused, None, &["--user", "deactivated"]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1, "only bob's earlier token");
    let users = run(&["user", "list"], &env).await;
    assert!(
        users
            .stdout
            .lines()
            .any(|l| l.contains("bob@example.com") && l.contains("deactivated")),
        "{}",
        users.stdout
    );
}

#[tokio::test]
async fn read_only_commands_on_a_mistyped_data_dir_create_nothing() {
    let dir = DataDir::new();
    let data = dir.data_str();
    for args in [
        &["user", "list"][..],
        &["token", "list"],
        &["token", "create", "--user", "x@example.com"],
        &["token", "revoke", "7c1b0c6e-6d0a-4a53-9d7e-0b1f2e3d4c5b"],
        &["peer", "list"],
        &["keys", "rotate"],
    ] {
        let ran = run(args, &[("MOSAIC_DATA_DIR", &data)]).await;
        assert_fails(&ran, None, &["MOSAIC_DATA_DIR", &data]);
    }
    assert!(!dir.data().exists(), "nothing was created");
}

#[tokio::test]
async fn commands_say_what_they_did_and_why_they_failed() {
    let url = common::fresh_database().await;
    let env = [("DATABASE_URL", url.as_str())];
    let migrated = run(&["migrate"], &env).await;
    assert_eq!((migrated.code, migrated.stdout.as_str()), (Some(0), ""));
    assert!(migrated.stderr.contains("up to date"), "{}", migrated.stderr);

    // An unreachable database: its cause is said once.
    let down = "postgres://postgres@127.0.0.1:1/mosaic";
    let ran = run(&["user", "list"], &[("DATABASE_URL", down)]).await;
    assert_fails(&ran, None, &["refused"]);
    assert_eq!(ran.stderr.matches("refused").count(), 1, "{}", ran.stderr);

    // `peer connect` to a port that answers plain HTTP.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = plain.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = plain.accept().await {
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    // Loopback peers are refused unless allowed (federation.allowed_peer_networks).
    let loopback = [env[0], ("MOSAIC_ALLOWED_PEER_NETWORKS", "127.0.0.0/8")];
    let ran = run(&["peer", "connect", &format!("https://127.0.0.1:{port}")], &loopback).await;
    assert_fails(&ran, None, &["does not speak TLS", &port.to_string()]);
    assert!(!ran.stderr.contains("InvalidContentType"), "{}", ran.stderr);
}

#[tokio::test]
async fn help_describes_every_argument_and_where_the_settings_are() {
    let serve = run(&["serve", "--help"], &[]).await;
    assert_eq!(serve.code, Some(0));
    for needle in [
        "MOSAIC_SECRET_KEY",
        "secret.key",
        "Configuration",
        "MOSAIC_DATA_DIR",
        "MOSAIC_LISTEN",
    ] {
        assert!(
            serve.stdout.contains(needle),
            "{needle} in serve --help:\n{}",
            serve.stdout
        );
    }
    for args in [
        &["serve"][..],
        &["migrate"],
        &["user", "create"],
        &["user", "list"],
        &["admin", "create"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["schema", "print"],
        &["peer", "connect"],
        &["peer", "list"],
        &["peer", "approve"],
        &["peer", "grant", "show"],
        &["peer", "grant", "set"],
        &["peer", "reject"],
        &["peer", "suspend"],
        &["peer", "revoke"],
        &["keys", "rotate"],
        &["demo"],
    ] {
        let mut with_help = args.to_vec();
        with_help.push("-h");
        let help = run(&with_help, &[]).await;
        assert_eq!(help.code, Some(0), "{args:?}: {}", help.stderr);
        let mut in_list = false;
        for line in help.stdout.lines() {
            if line == "Arguments:" || line == "Options:" {
                in_list = true;
                continue;
            }
            if line.is_empty() || !line.starts_with(' ') {
                in_list = false;
                continue;
            }
            let entry = line.trim_start();
            if in_list && (entry.starts_with('-') || entry.starts_with('<')) {
                assert!(
                    entry.contains("  "),
                    "{args:?}: no description for `{entry}`:\n{}",
                    help.stdout
                );
            }
        }
    }
}

/// Without a Docker engine, `serve` says once, in plain words, that agents
/// are off, and keeps serving.
#[tokio::test]
async fn no_docker_engine_is_said_once_plainly() {
    let dir = DataDir::new();
    let env = [
        ("MOSAIC_AGENTS_DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("MOSAIC_AGENTS_REAPER_INTERVAL_MS", "20"),
    ];
    let server = Server::start_with(&dir, "no-docker", &env, true).await;
    const SAID: &str = "agents are off";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !server.log().contains(SAID) {
        assert!(std::time::Instant::now() < deadline, "never said: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Many reaper periods pass while a command runs against the instance.
    let users = run(&["user", "list"], &[("MOSAIC_DATA_DIR", &dir.data_str())]).await;
    assert_eq!(users.code, Some(0), "{}", users.stderr);
    let log = server.log();
    assert_eq!(log.matches(SAID).count(), 1, "{log}");
    assert!(!log.contains("cannot reconcile"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes in a log file: {log:?}");
    let path = server.log.clone();
    assert_eq!(server.terminate().await, Some(0), "{}", read(&path));
}

/// `mosaic healthcheck` with the settings a container passes `serve`: the
/// listen address (an unspecified one means loopback), TLS under the public
/// URL's host name, the CA to trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_zero_only_while_ready() {
    let pki = common::pki();
    let mut app = common::spawn_instance_with("healthy", |c| {
        c.shutdown_unready = Duration::from_secs(2);
    })
    .await;
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let listen = format!("0.0.0.0:{port}");
    let (cert, key, ca) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
        pki.ca_cert.display().to_string(),
    );
    let tls = [
        ("MOSAIC_LISTEN", listen.as_str()),
        ("MOSAIC_TLS_CERT", cert.as_str()),
        ("MOSAIC_TLS_KEY", key.as_str()),
        ("MOSAIC_PEER_CA", ca.as_str()),
        ("MOSAIC_PUBLIC_URL", "https://localhost:443"),
    ];
    let ok = run(&["healthcheck"], &tls).await;
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    assert_eq!((ok.stdout.as_str(), ok.stderr.as_str()), ("", ""));

    let plain = run(&["healthcheck"], &[("MOSAIC_LISTEN", listen.as_str())]).await;
    assert_eq!(plain.code, Some(1), "plain HTTP to a TLS port is not healthy");
    let by_address = run(&["healthcheck"], &tls[..4]).await;
    assert_eq!(
        by_address.code,
        Some(0),
        "127.0.0.1 is in the test certificate: {}",
        by_address.stderr
    );
    let untrusted = run(&["healthcheck"], &tls[..3]).await;
    assert_eq!(untrusted.code, Some(1), "the certificate's CA is not trusted");

    app.signal_stop();
    let stopping = run(&["healthcheck"], &tls).await;
    assert_eq!(stopping.code, Some(1));
    assert!(stopping.stderr.contains("503"), "{}", stopping.stderr);
    app.stop().await;
    let gone = run(&["healthcheck", "--timeout", "2"], &tls).await;
    assert_eq!(gone.code, Some(1));
    assert!(gone.stderr.contains("/readyz"), "{}", gone.stderr);
}
