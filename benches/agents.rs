//! Agent container latency through the proxy (`GET /agent/`), against the
//! real Docker engine and the local image from scripts/docker-test-env:
//!
//! * cold: no container at all → first proxied answer (create, start, health);
//! * restart: container stopped (idle) → first proxied answer;
//! * warm: the agent runs → one proxied request.
//!
//! Medians over repeated runs are printed. `AGENT_BENCH_RUNS` (default 10)
//! and `AGENT_BENCH_WARM` (default 300) set the repetitions.

use std::time::{Duration, Instant};

use mosaic::app::Application;
use mosaic::config::Config;
use sqlx::Connection;

#[path = "support/db.rs"]
mod db;
#[path = "support/stats.rs"]
mod stats;
use stats::{env_usize, summary};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

async fn run() {
    mosaic::federation::tls::install_crypto_provider();
    let database_url = db::fresh_database("bench_agents").await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(database_url.clone()),
        secret_key: Some(mosaic::secrets::Secret(
            "bench-secret-key-that-is-long-enough-0123456789".into(),
        )),
        ..Config::default()
    };
    config.agents.image = "mosaic-test-agent:latest".into();
    config.agents.idle_timeout = Duration::from_secs(3600);
    let app = Application::build(config).await.expect("instance builds");
    let base = app.base_url().to_string();
    let agents = app.state.agents.clone();
    if let Err(e) = agents.lifecycle.ping().await {
        panic!("{}: run `bash scripts/docker-test-env` first", e.message());
    }
    tokio::spawn(app.run(std::future::pending()));

    let mut conn = sqlx::PgConnection::connect(&database_url).await.unwrap();
    let email = "bench@example.com";
    let user = mosaic::auth::users::create(&mut conn, email, None, false)
        .await
        .unwrap();
    let token = mosaic::auth::tokens::create(&mut conn, email, None).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{base}/agent/");
    let get = || async {
        let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert!(r.status().is_success(), "proxied answer {}", r.status());
        r.bytes().await.unwrap();
    };

    let runs = env_usize("AGENT_BENCH_RUNS", 10);
    let name = agents.container_name(user);
    let mut cold = Vec::new();
    let mut restart = Vec::new();
    for _ in 0..runs {
        agents.lifecycle.remove(&name).await.unwrap();
        agents.forget(user);
        let t = Instant::now();
        get().await;
        cold.push(t.elapsed());

        agents.stop(user).await.unwrap();
        let t = Instant::now();
        get().await;
        restart.push(t.elapsed());
    }
    let mut warm = Vec::new();
    for _ in 0..env_usize("AGENT_BENCH_WARM", 300) {
        let t = Instant::now();
        get().await;
        warm.push(t.elapsed());
    }
    summary("agents/cold", cold);
    summary("agents/restart", restart);
    summary("agents/warm", warm);

    agents.lifecycle.remove(&name).await.unwrap();
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", &agents.lifecycle.network_name()])
        .output();
}
