//! `mosaic demo`, the README's run command, end to end: three instances come
//! up with HTTPS between them, demo.json names them, a federated query from
//! home reaches all three (hq through work), Ctrl-C stops everything, and a
//! second run reuses the data.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts the demo and waits (bounded) for its `ready` line.
async fn start(port_base: u16, dir: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(["demo", "--port-base", &port_base.to_string(), "--data-dir"])
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("mosaic demo starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "ready" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the demo printed ready");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

async fn stop(mut child: Child) {
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "Ctrl-C stops the demo cleanly: {status}");
}

/// A free run of three consecutive ports on loopback.
fn port_base() -> u16 {
    loop {
        let base = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base < 65000 && (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

async fn federated_titles(demo: &Value) -> (Vec<(String, String)>, Value) {
    let home = demo["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "home")
        .unwrap();
    let ca = std::fs::read(demo["ca_cert"].as_str().unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let body: Value = client
        .post(home["graphql"].as_str().unwrap())
        .bearer_auth(home["token"].as_str().unwrap())
        .json(&json!({ "query": "{ tasks(scope: {all: true}, first: 100, orderBy: {field: TITLE}) { edges { node { title instance { name } } } totalCount } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = body["data"]["tasks"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| {
            let n = &e["node"];
            (
                n["instance"]["name"].as_str().unwrap().to_string(),
                n["title"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (rows, body)
}

#[tokio::test]
async fn demo_federates_three_instances_and_reuses_its_data() {
    mosaic::federation::tls::install_crypto_provider();
    let dir = tempfile::Builder::new().prefix("md").tempdir_in("/tmp").unwrap();
    // The embedded clusters run as the postgres user when we are root.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = port_base();

    let child = start(base, dir.path()).await;
    let demo: Value = serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
    let names: Vec<&str> = demo["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hq", "work", "home"]);
    for (i, instance) in demo["instances"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            instance["url"],
            format!("https://127.0.0.1:{}", base + i as u16),
            "HTTPS on N, N+1, N+2"
        );
    }
    let (rows, body) = federated_titles(&demo).await;
    let mut per_instance = std::collections::BTreeMap::new();
    for (instance, _) in &rows {
        *per_instance.entry(instance.clone()).or_insert(0) += 1;
    }
    assert_eq!(
        per_instance,
        [("home".to_string(), 3), ("hq".to_string(), 3), ("work".to_string(), 3)].into(),
        "home sees its own, work's and (two hops away) hq's tasks: {body}"
    );
    assert_eq!(body["extensions"]["federation"]["succeeded"], 3, "{body}");
    let titles: Vec<&String> = rows.iter().map(|(_, t)| t).collect();
    let mut sorted = titles.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(titles, sorted, "one global order");
    stop(child).await;

    // Second run: same data (nothing seeded twice), the same tokens (none
    // minted), still federated.
    let child = start(base, dir.path()).await;
    let again: Value = serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
    let tokens = |d: &Value| -> Vec<String> {
        d["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["token"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(tokens(&again), tokens(&demo), "a second run mints no token");
    let (rows_again, body) = federated_titles(&again).await;
    assert_eq!(rows_again, rows, "the second run reuses the data: {body}");
    stop(child).await;
}

/// A port in use (the second instance's) stops the demo with a message
/// naming it, and the instance that had started stops its PostgreSQL again.
#[tokio::test]
async fn a_port_in_use_stops_the_demo_and_leaves_no_database_running() {
    let dir = tempfile::Builder::new().prefix("md").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = port_base();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    // Standard error is a pipe here, like a log file: not a terminal.
    let run = Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(["demo", "--port-base", &base.to_string(), "--data-dir"])
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", base + 1)),
        "names the port: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "no colour codes in a log file: {stderr:?}");
    let hq = dir.path().join("hq/postgres/data");
    assert!(hq.join("PG_VERSION").is_file(), "hq had started");
    assert!(
        !hq.join("postmaster.pid").exists(),
        "and its PostgreSQL was stopped again"
    );
    assert!(
        !dir.path().join("work/postgres").exists(),
        "the instance whose port was taken started no database"
    );
}
