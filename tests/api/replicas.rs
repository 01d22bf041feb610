//! Two replicas of one instance (one database, one secret) behind a real
//! HAProxy on loopback (issue 18): what one replica made works on the
//! other, and a rolling restart of both under a bounded load fails no
//! request. HAProxy comes from Debian (`scripts/deploy-test-env`).

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestApp, spawn_config, test_config};
use mosaic::config::Config;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy in front of the replicas' ports, health-checking `/readyz`
/// every 100 ms (two failures take a replica out: a slow check on a busy
/// machine is not a stopping replica); stopped when dropped. It retries nothing, so a request
/// lost by a replica that stops would show as a failure.
struct Haproxy {
    base: String,
    stats: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    async fn start(ports: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (front, stats) = (free_port(), free_port());
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("    server r{i} 127.0.0.1:{p} check\n"))
            .collect();
        let config = format!(
            "global\n    maxconn 2000\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             \
             frontend mosaic\n    bind 127.0.0.1:{front}\n    default_backend replicas\n\
             frontend stats\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /stats\n\
             backend replicas\n    balance roundrobin\n    option httpchk GET /readyz\n\
             \x20   timeout check 2s\n\
             \x20   default-server inter 100ms fastinter 100ms downinter 100ms fall 2 rise 1\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = tokio::process::Command::new("/usr/sbin/haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy (scripts/deploy-test-env installs it)");
        Self {
            base: format!("http://127.0.0.1:{front}"),
            stats: format!("http://127.0.0.1:{stats}/stats;csv"),
            _child: child,
            _dir: dir,
        }
    }

    /// The status HAProxy gives each replica (UP, DOWN, ...), in order.
    async fn statuses(&self) -> Option<Vec<String>> {
        let csv = reqwest::get(&self.stats).await.ok()?.text().await.ok()?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let status = header.iter().position(|h| *h == "status")?;
        Some(
            lines
                .filter(|l| l.starts_with("replicas,r"))
                .map(|l| l.split(',').nth(status).unwrap_or("").to_string())
                .collect(),
        )
    }

    /// Polls HAProxy's own view until every replica is UP.
    async fn all_up(&self) {
        for _ in 0..600 {
            if self
                .statuses()
                .await
                .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s == "UP"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("replicas never all UP: {:?}", self.statuses().await);
    }
}

/// A replica's configuration: its own fixed port (a restart comes back on
/// it), the shared database and secret, the load balancer's URL as its own.
fn replica_config(database_url: &str, public_url: &str) -> Config {
    let mut config = test_config(database_url.to_string());
    config.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    config.public_url = Some(public_url.to_string());
    // Long enough for HAProxy (two checks 100 ms apart) to take it out first.
    config.shutdown_unready = Duration::from_millis(600);
    config
}

async fn replicas(n: usize) -> (Vec<Config>, Vec<TestApp>, Haproxy) {
    replicas_with(n, |_| {}).await
}

async fn replicas_with(n: usize, adjust: impl Fn(&mut Config)) -> (Vec<Config>, Vec<TestApp>, Haproxy) {
    let database_url = common::fresh_database().await;
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let lb = Haproxy::start(&ports).await;
    let mut configs = Vec::new();
    let mut apps = Vec::new();
    for port in ports {
        let mut config = replica_config(&database_url, &lb.base);
        config.listen = format!("127.0.0.1:{port}").parse().unwrap();
        adjust(&mut config);
        // One at a time: the first start creates the instance.
        apps.push(spawn_config(config.clone()).await);
        configs.push(config);
    }
    lb.all_up().await;
    (configs, apps, lb)
}

async fn me_through(client: &reqwest::Client, base: &str, token: &str) -> Result<Value, String> {
    let r = client
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": "{ me { email } }" }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    match serde_json::from_str::<Value>(&text) {
        Ok(body) if status == 200 && body.get("errors").is_none() => Ok(body),
        _ => Err(format!("{status} {text}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_instance_sessions_and_tokens() {
    let (_, apps, lb) = replicas(2).await;
    let (one, other) = (&apps[0], &apps[1]);
    assert_eq!(one.state.instance_id, other.state.instance_id, "one instance");
    assert_eq!(
        one.state.federation.base_url, lb.base,
        "known by the load balancer's URL"
    );

    // A session made through one replica works on the other.
    let session = one
        .break_glass_session("admin@example.com", "a long break-glass password")
        .await;
    let r = other
        .client
        .post(format!("{}/graphql", other.base))
        .header(reqwest::header::COOKIE, &session.cookie)
        .header("x-mosaic-csrf", &session.csrf)
        .json(&json!({ "query": "{ me { email } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"]["me"]["email"], "admin@example.com", "{body}");

    // A token revoked through one is refused by the other on its next request.
    let (_, token) = one.user("reader@example.com").await;
    assert!(me_through(&other.client, &other.base, &token).await.is_ok());
    let tokens = one.gql_ok(&token, "{ tokens { id } }", json!({})).await;
    let id = tokens["tokens"][0]["id"].as_str().unwrap().to_string();
    let revoked = one
        .gql(
            &token,
            "mutation($id: ID!) { revokeToken(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert!(revoked.get("errors").is_none(), "{revoked}");
    other.caught_up().await;
    let refused = me_through(&other.client, &other.base, &token).await;
    assert!(
        refused.is_err_and(|e| e.starts_with("401")),
        "the other replica refuses it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let (configs, mut apps, lb) = replicas(2).await;
    let (_, token) = apps[0].user("load@example.com").await;
    let client = reqwest::Client::builder().build().unwrap();
    me_through(&client, &lb.base, &token)
        .await
        .expect("served through HAProxy");

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, base, token) = (client.clone(), lb.base.clone(), token.clone());
            let (stop, served) = (stop.clone(), served.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match me_through(&client, &base, &token).await {
                        Ok(_) => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failures.push(e),
                    }
                }
                failures
            })
        })
        .collect();

    for (i, config) in configs.iter().enumerate() {
        let before = served.load(Ordering::SeqCst);
        // SIGTERM's path: unready (HAProxy takes it out), port closed, drain, exit.
        apps.remove(i).stop().await;
        apps.insert(i, spawn_config(config.clone()).await);
        lb.all_up().await;
        assert!(served.load(Ordering::SeqCst) > before, "requests kept being served");
    }
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for worker in load {
        failures.extend(worker.await.unwrap());
    }
    let served = served.load(Ordering::SeqCst);
    println!(
        "rolling restart of 2 replicas: {served} requests served, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// POST /auth/breakglass at one replica; (status, Retry-After).
async fn break_glass(app: &TestApp, email: &str, password: &str) -> (u16, Option<String>) {
    let r = app
        .client
        .post(format!("{}/auth/breakglass", app.base))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_break_glass_throttle_holds_across_replicas() {
    use mosaic::auth::throttle::FREE_ATTEMPTS;
    let (_, apps, _lb) = replicas(2).await;
    let (one, other) = (&apps[0], &apps[1]);
    let password = "the right break-glass password";
    mosaic::auth::breakglass::create_admin(&mut one.admin().await, "root@example.com", password)
        .await
        .unwrap();
    // The free attempts, spread over both replicas.
    for i in 0..FREE_ATTEMPTS {
        let app = if i % 2 == 0 { one } else { other };
        assert_eq!(break_glass(app, "root@example.com", "a wrong password!").await.0, 401);
    }
    // Then even the right password waits, at either replica.
    for app in [one, other] {
        assert_eq!(
            break_glass(app, "ROOT@example.com", password).await,
            (429, Some("1".into()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_limit_holds_across_replicas() {
    let (_, apps, _lb) = replicas_with(2, |c| c.federation.connects_per_minute = 3).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let app = &apps[i % 2];
        let r = app
            .client
            .post(format!("{}{}", app.base, mosaic::federation::protocol::CONNECT_PATH))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    // Three heard (and refused as malformed), then neither replica hears more.
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_statistics_add_up_across_replicas() {
    let (_, apps, _lb) = replicas(2).await;
    let (one, other) = (&apps[0].state.federation, &apps[1].state.federation);
    let peer = common::register_active_peer(&apps[0], "spoke", "https://127.0.0.1:9").await;
    one.stats.record(peer, 10, None, None);
    one.stats
        .record(peer, 30, Some("PEER_TIMEOUT: slow".into()), Some("closed"));
    other.stats.record(peer, 20, None, None);
    // Each replica sees its own counts at once, the other's once it has added them.
    let seen = other.stats.get(&other.pool, peer).await.unwrap();
    assert_eq!((seen.successes, seen.errors), (1, 0));
    one.stats.flush(&one.pool).await.unwrap();
    let seen = other.stats.get(&other.pool, peer).await.unwrap();
    assert_eq!((seen.successes, seen.errors), (2, 1));
    assert_eq!(seen.recent_latency_ms, [10, 30, 20]);
    // The last failure and breaker state travel with the counts (migration 0076).
    assert_eq!(seen.last_error.as_deref(), Some("PEER_TIMEOUT: slow"));
    assert_eq!(seen.breaker.as_deref(), Some("closed"));
    assert!(seen.last_failure.is_some() && seen.breaker_at.is_some());
    other.stats.flush(&other.pool).await.unwrap();
    let seen = one.stats.get(&one.pool, peer).await.unwrap();
    assert_eq!(
        (seen.successes, seen.errors, seen.median_latency_ms()),
        (2, 1, Some(20))
    );
    assert!(seen.last_contact.is_some());
    // A flush adds each count once.
    one.stats.flush(&one.pool).await.unwrap();
    assert_eq!(other.stats.get(&other.pool, peer).await.unwrap().successes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_rate_limit_holds_across_replicas() {
    let (_, apps, lb) = replicas_with(2, |c| {
        // A token every 5 s: none comes back while the test runs.
        c.federation.rate_limit_per_second = 0.2;
        c.federation.rate_limit_burst = 4;
        // They fetch the asking instance's identity (HTTPS, the tests' CA).
        c.federation.ca_file = Some(common::pki().ca_cert.clone());
        c.federation.allowed_peer_networks = common::loopback_networks();
    })
    .await;
    // The replicas serve plain HTTP behind HAProxy here.
    let asking = common::spawn_instance_with("asking", |c| c.federation.allow_http = true).await;
    let (_, owner) = apps[0].user("owner@example.com").await;
    let shared = apps[0].create_workspace(&owner, "shared").await;
    // Peered at the instance's one address, the load balancer's.
    let fed = &asking.state.federation;
    fed.connect(&lb.base, "test").await.expect("CONNECT accepted");
    let terms = common::grant(&[common::local_id(&shared)], false, None);
    apps[0]
        .state
        .federation
        .approve(fed.instance_id, &terms, "test")
        .await
        .unwrap();
    const TASKS: &str = "{ tasks(first: 5) { edges { node { title } } } }";
    use mosaic::federation::protocol::QUERY_PATH;
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(common::signed(&asking, &apps[i % 2], QUERY_PATH, TASKS).await.0);
    }
    // The burst of four is spent across both replicas, then each refuses.
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
}

/// A GraphQL request to this replica itself, not through the load balancer.
async fn gql_at(app: &TestApp, token: &str, query: &str) -> Value {
    app.client
        .post(format!("http://{}/graphql", app.state.config.listen))
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_one_replica_opened_is_open_on_the_other() {
    let (_, apps, _lb) = replicas_with(2, |c| {
        c.federation.breaker_min_requests = 2;
        c.federation.breaker_cooldown = Duration::from_secs(60);
        // One attempt per query: what opens a breaker is counted exactly.
        c.federation.retry_budget_percent = 0;
        c.federation.retry_budget_floor = 0;
        c.federation.allowed_peer_networks = common::loopback_networks();
    })
    .await;
    // A peer nobody answers for (connections refused).
    let down = common::register_active_peer(&apps[0], "down", &format!("https://127.0.0.1:{}", free_port())).await;
    let (_, token) = apps[0].user("ada@example.com").await;
    const QUERY: &str = "{ tasks(scope: {all: true}) { edges { node { id } } } }";
    let breaker_of = |body: &Value| {
        body["extensions"]["federation"]["instances"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["id"] == down.to_string().as_str()))
            .map(|i| i["breaker"].clone())
            .unwrap_or_else(|| panic!("no entry for the peer: {body}"))
    };
    // Its failures open the breaker on the first replica.
    let mut opened = false;
    for _ in 0..10 {
        let body = gql_at(&apps[0], &token, QUERY).await;
        if breaker_of(&body) == "open" {
            opened = true;
            break;
        }
    }
    assert!(opened, "the first replica's breaker opened");
    // Shared (every few seconds in the background; here at once): the
    // second replica refuses without ever having asked the peer.
    for app in &apps {
        app.state.federation.share_breakers(&app.state.pool).await.unwrap();
    }
    let body = gql_at(&apps[1], &token, QUERY).await;
    assert_eq!(breaker_of(&body), "open", "{body}");
    assert_eq!(common::code(&body), "PEER_UNAVAILABLE");
    let metrics = apps[1]
        .client
        .get(format!("http://{}/metrics", apps[1].state.config.listen))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains(r#"mosaic_federation_requests_total{peer="down"}"#),
        "the second replica never asked the peer: {metrics}"
    );
    assert!(
        metrics.contains(r#"mosaic_federation_failures_total{peer="down",code="BREAKER_OPEN"} 1"#),
        "{metrics}"
    );
}
