//! Issue 17: the client side of federation under failing peers: the
//! circuit breaker per peer, retries of reads (budget, deadline,
//! `Retry-After`), `PEER_RATE_LIMITED`, the per-instance report with
//! required peers, and the `mosaic_federation_*` metrics. Failing peers are
//! real HTTPS servers the test scripts; healthy ones are real instances.

use crate::common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{TestApp, errors, spawn_instance, spawn_instance_with};
use serde_json::{Value, json};
use uuid::Uuid;

/// What a scripted peer answers.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// One task of its own.
    Row,
    /// No rows.
    Empty,
    /// 503 Service Unavailable.
    Unavailable,
    /// 503 after this long.
    SlowUnavailable(Duration),
    /// 429 with `Retry-After` in seconds.
    RateLimited(u64),
}

/// A peer that is an HTTPS server (the test CA's certificate) answering
/// from a script: each request takes the next answer, the last one stays.
struct ScriptedPeer {
    id: Uuid,
    hits: Arc<AtomicUsize>,
    /// Seconds its clock is ahead, as its identity document's `Date` says.
    skew: Arc<AtomicI64>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    server: tokio::task::AbortHandle,
}

impl Drop for ScriptedPeer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ScriptedPeer {
    async fn start(master: &TestApp, name: &str, script: &[Answer]) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new(VecDeque::from(script.to_vec())));
        let me: Arc<OnceLock<Uuid>> = Default::default();
        let skew = Arc::new(AtomicI64::new(0));
        let pki = common::pki();
        let tls = mosaic::federation::tls::server_config(&pki.cert, &pki.key).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let key = ed25519_dalek::SigningKey::from_bytes(
            &Uuid::new_v4().as_u128().to_le_bytes().repeat(2).try_into().unwrap(),
        );
        let identity = {
            let (me, skew, url, name) = (me.clone(), skew.clone(), url.clone(), name.to_string());
            move || {
                let (me, skew, url, name, key) = (me.clone(), skew.clone(), url.clone(), name.clone(), key.clone());
                async move { identity(*me.get().unwrap(), &key, &name, &url, skew.load(Ordering::SeqCst)) }
            }
        };
        let router = axum::Router::new()
            .route(
                mosaic::federation::protocol::WELL_KNOWN_PATH,
                axum::routing::get(identity),
            )
            .fallback({
                let (hits, script, me) = (hits.clone(), script.clone(), me.clone());
                move || {
                    let (hits, script, me) = (hits.clone(), script.clone(), me.clone());
                    async move {
                        use axum::response::IntoResponse;
                        hits.fetch_add(1, Ordering::SeqCst);
                        let answer = {
                            let mut script = script.lock().unwrap();
                            if script.len() > 1 {
                                script.pop_front().unwrap()
                            } else {
                                script[0]
                            }
                        };
                        let unavailable = || {
                            (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                axum::Json(json!({ "errors": [{ "message": "down" }] })),
                            )
                                .into_response()
                        };
                        match answer {
                            Answer::Row => axum::Json(page(&[task_edge(*me.get().unwrap())])).into_response(),
                            Answer::Empty => axum::Json(page(&[])).into_response(),
                            Answer::Unavailable => unavailable(),
                            Answer::SlowUnavailable(after) => {
                                tokio::time::sleep(after).await;
                                unavailable()
                            }
                            Answer::RateLimited(seconds) => (
                                axum::http::StatusCode::TOO_MANY_REQUESTS,
                                [(axum::http::header::RETRY_AFTER, seconds.to_string())],
                                axum::Json(json!({ "errors": [{ "message": "slow down",
                                "extensions": { "code": "RATE_LIMITED" } }] })),
                            )
                                .into_response(),
                        }
                    }
                }
            });
        let server = tokio::spawn(async move {
            let _ = axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))
                .unwrap()
                .serve(router.into_make_service())
                .await;
        });
        let id = common::register_active_peer(master, name, &url).await;
        me.set(id).unwrap();
        Self {
            id,
            hits,
            skew,
            script,
            server: server.abort_handle(),
        }
    }

    fn answer(&self, script: &[Answer]) {
        *self.script.lock().unwrap() = VecDeque::from(script.to_vec());
    }

    fn skew_clock(&self, seconds: i64) {
        self.skew.store(seconds, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A signed identity document of `id` at `url`, with a `Date` header
/// `skew` seconds off.
fn identity(id: Uuid, key: &ed25519_dalek::SigningKey, name: &str, url: &str, skew: i64) -> axum::response::Response {
    use axum::response::IntoResponse;
    use base64::Engine;
    use mosaic::federation::{document, signing};
    let vk = key.verifying_key();
    let doc = document::sign_document(
        document::IdentityDocument {
            protocol: document::PROTOCOL.into(),
            instance_id: id.to_string(),
            name: name.into(),
            base_url: url.into(),
            current_key: document::PublicKey {
                key_id: signing::key_id(&vk),
                public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vk.as_bytes()),
                valid_until: None,
            },
            old_keys: Vec::new(),
            schema_hash: "0".repeat(32),
            capabilities: vec!["connect".into(), "query".into()],
            issued_at: mosaic::federation::now_unix(),
        },
        key,
    );
    let (now, off) = (std::time::SystemTime::now(), Duration::from_secs(skew.unsigned_abs()));
    let date = if skew < 0 { now - off } else { now + off };
    (
        [(axum::http::header::DATE, httpdate::fmt_http_date(date))],
        axum::Json(doc),
    )
        .into_response()
}

fn page(edges: &[Value]) -> Value {
    json!({ "data": { "tasks": { "edges": edges, "pageInfo": { "hasNextPage": false } } } })
}

/// A task row of `instance`, as a peer's answer carries it.
fn task_edge(instance: Uuid) -> Value {
    let ws = format!("Workspace:{instance}:{}", Uuid::new_v4());
    json!({ "cursor": Uuid::new_v4().to_string(), "node": {
        "id": format!("Task:{instance}:{}", Uuid::new_v4()), "title": "scripted task", "description": null,
        "status": "TODO", "priority": "HIGH", "dueDate": null,
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
        "instance": { "id": instance.to_string(), "name": "scripted" },
        "workspace": { "id": ws, "name": "w", "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z" },
        "project": null, "assignee": null } })
}

const ALL_TASKS: &str = "{ tasks(first: 50, scope: {all: true}) { edges { node { title instance { id } } } } }";

/// A master with a user, and a healthy instance peered with it holding one task.
async fn master_and_healthy(adjust: impl FnOnce(&mut mosaic::config::Config)) -> (TestApp, TestApp, String) {
    let (master, healthy) = tokio::join!(spawn_instance_with("master", adjust), spawn_instance("healthy"));
    let (_, token) = master.user("ann@master.example").await;
    let (_, h_token) = healthy.user("hal@healthy.example").await;
    let ws = healthy.create_workspace(&h_token, "shared").await;
    healthy.create_task(&h_token, &ws, "healthy task").await;
    common::peer(&master, &healthy, &[&ws], false).await;
    (master, healthy, token)
}

/// The instance's entry in `extensions.federation.instances`.
fn entry(body: &Value, id: impl ToString) -> Value {
    let id = id.to_string();
    body["extensions"]["federation"]["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no federation report: {body}"))
        .iter()
        .find(|i| i["id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in the report: {body}"))
}

/// Instance ids of the rows.
fn row_instances(body: &Value) -> Vec<String> {
    let mut out: Vec<String> = body["data"]["tasks"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks: {body}"))
        .iter()
        .map(|e| e["node"]["instance"]["id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// The value of one sample in `/metrics` (0 when absent).
async fn metric(app: &TestApp, sample: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn no_retries(c: &mut mosaic::config::Config) {
    c.federation.retry_budget_floor = 0;
    c.federation.retry_budget_percent = 0;
}

/// A peer that fails opens its breaker after `breaker_min_requests`; while
/// open the master answers at once, without asking it, with
/// PEER_UNAVAILABLE and the breaker's state, and the healthy peer's rows;
/// after the cooldown one probe goes, and its success closes the breaker.
/// The metrics say the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flapping_peer_opens_its_breaker_and_a_probe_closes_it() {
    let (master, healthy, token) = master_and_healthy(|c| {
        no_retries(c);
        c.federation.breaker_min_requests = 3;
        c.federation.breaker_failure_percent = 50;
        c.federation.breaker_cooldown = Duration::from_millis(1500);
    })
    .await;
    let flaky = ScriptedPeer::start(&master, "flaky", &[Answer::Unavailable]).await;
    let healthy_id = healthy.state.instance_id.to_string();

    for _ in 0..3 {
        let body = master.gql(&token, ALL_TASKS, json!({})).await;
        assert_eq!(
            errors(&body),
            [("PEER_UNAVAILABLE".into(), flaky.id.to_string())],
            "{body}"
        );
        assert!(entry(&body, flaky.id).get("breaker").is_none(), "{body}");
    }
    assert_eq!(flaky.hits(), 3);
    assert_eq!(
        metric(&master, r#"mosaic_federation_breaker_state{peer="flaky"}"#).await,
        2.0
    );

    // Open: answered at once, the peer not asked, the healthy rows there.
    let started = Instant::now();
    let body = master.gql(&token, ALL_TASKS, json!({})).await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(flaky.hits(), 3, "an open breaker does not ask the peer");
    assert_eq!(
        errors(&body),
        [("PEER_UNAVAILABLE".into(), flaky.id.to_string())],
        "{body}"
    );
    let flaky_entry = entry(&body, flaky.id);
    assert_eq!(flaky_entry["breaker"], "open", "{body}");
    assert_eq!(flaky_entry["status"], "failed", "{body}");
    assert_eq!(flaky_entry["errorCode"], "PEER_UNAVAILABLE", "{body}");
    assert!(row_instances(&body).contains(&healthy_id), "{body}");
    assert_eq!(
        metric(
            &master,
            r#"mosaic_federation_failures_total{peer="flaky",code="BREAKER_OPEN"}"#
        )
        .await,
        1.0
    );

    // The peer recovers: after the cooldown a probe closes the breaker.
    flaky.answer(&[Answer::Row]);
    let until = Instant::now() + Duration::from_secs(15);
    let recovered = loop {
        let body = master.gql(&token, ALL_TASKS, json!({})).await;
        if entry(&body, flaky.id)["status"] == "succeeded" {
            break body;
        }
        assert!(Instant::now() < until, "the breaker never closed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(flaky.hits(), 4, "one probe");
    assert!(row_instances(&recovered).contains(&flaky.id.to_string()), "{recovered}");
    assert_eq!(
        metric(&master, r#"mosaic_federation_breaker_state{peer="flaky"}"#).await,
        0.0
    );
    let body = master.gql(&token, ALL_TASKS, json!({})).await;
    assert_eq!(errors(&body), [], "{body}");
    assert_eq!(flaky.hits(), 5, "closed: every request asks it again");

    // The metrics of both peers.
    assert!(metric(&master, r#"mosaic_federation_requests_total{peer="healthy"}"#).await >= 6.0);
    assert_eq!(
        metric(&master, r#"mosaic_federation_requests_total{peer="flaky"}"#).await,
        5.0
    );
    assert_eq!(
        metric(
            &master,
            r#"mosaic_federation_failures_total{peer="flaky",code="PEER_UNAVAILABLE"}"#
        )
        .await,
        3.0
    );
    assert!(metric(&master, r#"mosaic_federation_received_bytes_total{peer="healthy"}"#).await > 100.0);
    assert!(
        metric(
            &master,
            r#"mosaic_federation_request_duration_seconds_count{peer="healthy"}"#
        )
        .await
            >= 6.0
    );
    assert_eq!(
        metric(&master, r#"mosaic_federation_breaker_state{peer="healthy"}"#).await,
        0.0
    );
}

/// p99 of the healthy peer's latency (as the report gives it) over `n`
/// queries.
async fn healthy_p99(master: &TestApp, token: &str, healthy: &str, n: usize) -> u64 {
    let mut latencies = Vec::new();
    for _ in 0..n {
        let body = master.gql(token, ALL_TASKS, json!({})).await;
        latencies.push(entry(&body, healthy)["latencyMs"].as_u64().unwrap());
    }
    latencies.sort_unstable();
    latencies[(n * 99 / 100).min(n - 1)]
}

/// While one peer flaps (slow failures, then the breaker), the healthy
/// peer's p99 latency stays where it was with all peers healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_healthy_peers_p99_does_not_rise_while_one_flaps() {
    let (master, healthy, token) = master_and_healthy(|c| {
        c.federation.breaker_min_requests = 3;
        c.federation.breaker_cooldown = Duration::from_millis(300);
    })
    .await;
    let flaky = ScriptedPeer::start(&master, "flaky", &[Answer::Row]).await;
    let healthy_id = healthy.state.instance_id.to_string();
    let before = healthy_p99(&master, &token, &healthy_id, 30).await;
    flaky.answer(&[Answer::SlowUnavailable(Duration::from_millis(200))]);
    let flapping = healthy_p99(&master, &token, &healthy_id, 30).await;
    assert!(
        flaky.hits() > 30,
        "the flapping peer was asked (probes): {}",
        flaky.hits()
    );
    assert!(
        flapping <= before * 3 + 50,
        "healthy p99 {before} ms with all healthy, {flapping} ms while one flaps"
    );
}

/// A read that fails once with 503 is asked again (a fresh signed request)
/// and its rows arrive; the retry is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_that_fails_once_is_retried_and_its_rows_arrive() {
    let (master, _healthy, token) = master_and_healthy(|_| {}).await;
    let peer = ScriptedPeer::start(&master, "wobbly", &[Answer::Unavailable, Answer::Row]).await;
    let body = master.gql(&token, ALL_TASKS, json!({})).await;
    assert_eq!(errors(&body), [], "{body}");
    assert!(row_instances(&body).contains(&peer.id.to_string()), "{body}");
    assert_eq!(peer.hits(), 2);
    assert_eq!(
        metric(&master, r#"mosaic_federation_retries_total{peer="wobbly"}"#).await,
        1.0
    );
}

/// Retries stop at the budget (floor 1, no share: one retry in the window,
/// then none) and where the deadline leaves no room for another attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_stop_at_the_budget_and_at_the_deadline() {
    let master = spawn_instance_with("master", |c| {
        c.federation.retry_budget_floor = 1;
        c.federation.retry_budget_percent = 0;
        c.federation.deadline = Duration::from_secs(1);
    })
    .await;
    let (_, token) = master.user("ann@master.example").await;
    let down = ScriptedPeer::start(&master, "down", &[Answer::Unavailable]).await;
    let body = master.gql(&token, ALL_TASKS, json!({})).await;
    assert_eq!(
        errors(&body),
        [("PEER_UNAVAILABLE".into(), down.id.to_string())],
        "{body}"
    );
    assert_eq!(down.hits(), 2, "one retry");
    master.gql(&token, ALL_TASKS, json!({})).await;
    assert_eq!(down.hits(), 3, "the budget is spent: no retry");
    drop(down);

    // A fresh master: the budget allows, the deadline does not.
    // (2 s leave 1.75 s for the peer; 1.65 s leave no room for a retry.)
    let master = spawn_instance_with("master", |c| c.federation.deadline = Duration::from_secs(2)).await;
    let (_, token) = master.user("ann@master.example").await;
    let slow = ScriptedPeer::start(&master, "slow", &[Answer::SlowUnavailable(Duration::from_millis(1650))]).await;
    let body = master.gql(&token, ALL_TASKS, json!({})).await;
    let errs = errors(&body);
    assert_eq!(errs.len(), 1, "{body}");
    assert!(
        ["PEER_UNAVAILABLE", "PEER_TIMEOUT"].contains(&errs[0].0.as_str()),
        "{body}"
    );
    assert_eq!(slow.hits(), 1, "no room for another attempt before the deadline");
}

/// A COMMAND is never retried, even when the failure is transient.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_is_never_retried() {
    let master = spawn_instance("master").await;
    let (_, token) = master.user("ann@master.example").await;
    let down = ScriptedPeer::start(&master, "down", &[Answer::Unavailable]).await;
    let body = master
        .gql(
            &token,
            "mutation($id: ID!) { deleteTask(id: $id) }",
            json!({ "id": format!("Task:{}:{}", down.id, Uuid::new_v4()) }),
        )
        .await;
    assert_eq!(common::code(&body), "PEER_UNAVAILABLE", "{body}");
    assert_eq!(down.hits(), 1, "a write is sent once");
}

/// A peer answering 429 fails with PEER_RATE_LIMITED and the time it gave
/// (in errors[] and in the report); it is retried only when Retry-After fits
/// in the deadline, and 429s never open its breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limited_peers_are_retried_within_the_deadline_and_never_open_the_breaker() {
    let master = spawn_instance_with("master", |c| {
        c.federation.deadline = Duration::from_secs(3);
        c.federation.breaker_min_requests = 2;
        c.federation.retry_budget_floor = 100;
    })
    .await;
    let (_, token) = master.user("ann@master.example").await;
    let limited = ScriptedPeer::start(&master, "limited", &[Answer::RateLimited(30)]).await;
    for round in 1..=3 {
        let started = Instant::now();
        let body = master.gql(&token, ALL_TASKS, json!({})).await;
        assert!(started.elapsed() < Duration::from_secs(2), "not waited for");
        assert_eq!(
            errors(&body),
            [("PEER_RATE_LIMITED".into(), limited.id.to_string())],
            "{body}"
        );
        let error = &body["errors"][0]["extensions"];
        assert_eq!(error["retryAfterMs"], 30_000, "{body}");
        assert_eq!(error["peerCode"], "RATE_LIMITED", "{body}");
        let e = entry(&body, limited.id);
        assert_eq!(
            (&e["status"], &e["errorCode"], &e["retryAfterMs"]),
            (&json!("failed"), &json!("PEER_RATE_LIMITED"), &json!(30_000)),
            "{body}"
        );
        assert!(e.get("breaker").is_none(), "{body}");
        assert_eq!(
            limited.hits(),
            round,
            "30 s is beyond the deadline: not retried, and the breaker stays closed"
        );
    }
    assert_eq!(
        metric(&master, r#"mosaic_federation_rate_limited_total{peer="limited"}"#).await,
        3.0
    );

    // Retry-After: 1 fits in the deadline: waited for, then answered.
    limited.answer(&[Answer::RateLimited(1), Answer::Row]);
    let started = Instant::now();
    let body = master.gql(&token, ALL_TASKS, json!({})).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was honoured");
    assert_eq!(errors(&body), [], "{body}");
    assert_eq!(row_instances(&body), [limited.id.to_string()], "{body}");
    assert_eq!(limited.hits(), 5);
}

/// A peer's 429 to a forwarded `node(id:)` read or to a COMMAND (a write
/// on its object) reaches the client as PEER_RATE_LIMITED with
/// `retryAfterMs` from its `Retry-After`, as a fanned-out read's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_reads_and_commands_that_a_peer_rate_limits_say_when_to_retry() {
    let master = spawn_instance("master").await;
    let (_, token) = master.user("ann@master.example").await;
    let limited = ScriptedPeer::start(&master, "limited", &[Answer::RateLimited(30)]).await;
    let task = format!("Task:{}:{}", limited.id, Uuid::new_v4());
    let cases = [
        ("query($id: ID!) { node(id: $id) { id } }", json!({ "id": task })),
        (
            "mutation($id: ID!) { updateTask(input: {id: $id, title: \"renamed\"}) { id } }",
            json!({ "id": task }),
        ),
    ];
    for (round, (query, variables)) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let body = master.gql(&token, query, variables).await;
        assert!(started.elapsed() < Duration::from_secs(2), "not waited for: {body}");
        let error = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["extensions"]["code"] == "PEER_RATE_LIMITED")
            .unwrap_or_else(|| panic!("{query}: no PEER_RATE_LIMITED: {body}"));
        assert_eq!(error["extensions"]["instance"], limited.id.to_string(), "{body}");
        assert_eq!(error["extensions"]["retryAfterMs"], 30_000, "{body}");
        assert_eq!(error["extensions"]["peerCode"], "RATE_LIMITED", "{body}");
        assert_eq!(limited.hits(), round + 1, "asked once, not retried beyond the deadline");
    }
}

/// `extensions.federation` counts add up to the total, a peer without rows
/// is successful, and a peer listed in `federation.required_peers` that
/// fails fails the whole query (data null, REQUIRED_PEER_FAILED).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_add_up_and_a_required_peer_that_fails_fails_the_query() {
    let (master, healthy, token) = master_and_healthy(|c| {
        no_retries(c);
        c.federation.required_peers = vec!["needed".into()];
    })
    .await;
    let empty = ScriptedPeer::start(&master, "empty", &[Answer::Empty]).await;
    let down = ScriptedPeer::start(&master, "down", &[Answer::Unavailable]).await;
    let needed = ScriptedPeer::start(&master, "needed", &[Answer::Row]).await;

    let body = master.gql(&token, ALL_TASKS, json!({})).await;
    let fed = &body["extensions"]["federation"];
    let counts: Vec<u64> = ["succeeded", "partial", "skipped", "failed"]
        .iter()
        .map(|k| fed[k].as_u64().unwrap_or_else(|| panic!("{k}: {fed}")))
        .collect();
    assert_eq!(counts, [4, 0, 0, 1], "{fed}");
    assert_eq!(fed["total"], counts.iter().sum::<u64>(), "{fed}");
    assert_eq!(
        entry(&body, empty.id)["status"],
        "succeeded",
        "no rows is a success: {fed}"
    );
    assert_eq!(entry(&body, down.id)["errorCode"], "PEER_UNAVAILABLE", "{fed}");
    assert!(entry(&body, healthy.state.instance_id)["latencyMs"].is_u64(), "{fed}");
    assert_eq!(row_instances(&body).len(), 2, "healthy's and needed's: {body}");

    needed.answer(&[Answer::Unavailable]);
    let body = master.gql(&token, ALL_TASKS, json!({})).await;
    assert_eq!(body["data"], Value::Null, "{body}");
    let codes = errors(&body);
    assert!(
        codes.contains(&("REQUIRED_PEER_FAILED".into(), needed.id.to_string())),
        "{body}"
    );
    let required = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["extensions"]["code"] == "REQUIRED_PEER_FAILED")
        .unwrap();
    assert!(required["message"].as_str().unwrap().contains("needed"), "{body}");
    assert_eq!(required["extensions"]["peerCode"], "PEER_UNAVAILABLE", "{body}");

    // Without the required peer in the scope, its failure costs nothing.
    let body = master
        .gql(
            &token,
            "{ tasks(first: 50, scope: {instances: [\"healthy\", \"down\"]}) { edges { node { title } } } }",
            json!({}),
        )
        .await;
    assert!(body["data"]["tasks"]["edges"].is_array(), "{body}");
}

/// `mosaic federation status` and `mosaic doctor` against an instance with
/// a healthy peer, one that is down and one whose clock is 10 minutes ahead:
/// status shows each peer's states and last failure (flushed by the
/// server); doctor names the two that are wrong, says what to fix and exits
/// non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_and_doctor_show_a_peer_down_and_a_skewed_clock() {
    let (master, _healthy, token) = master_and_healthy(|_| {}).await;
    let skewed = ScriptedPeer::start(&master, "skewed", &[Answer::Row]).await;
    skewed.skew_clock(600);
    let down = ScriptedPeer::start(&master, "down", &[Answer::Unavailable]).await;
    master.gql(&token, ALL_TASKS, json!({})).await;
    drop(down);
    // What the server flushes every few seconds, now.
    master.state.federation.stats.flush(&master.state.pool).await.unwrap();

    let pki = common::pki();
    let ca = pki.ca_cert.to_str().unwrap();
    let env = [
        ("DATABASE_URL", master.database_url.as_str()),
        ("MOSAIC_SECRET_KEY", "test-secret-key-that-is-long-enough-0123456789"),
        ("MOSAIC_INSTANCE_NAME", "master"),
        ("MOSAIC_PEER_CA", ca),
        ("MOSAIC_ALLOWED_PEER_NETWORKS", "127.0.0.0/8, ::1/128"),
    ];
    let run = |args: &'static [&'static str]| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mosaic"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };

    let (code, out, err) = run(&["federation", "status"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    let block = |name: &str| {
        let i = lines
            .iter()
            .position(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}: {out}"));
        format!("{}\n{}", lines[i], lines[i + 1])
    };
    let down_block = block("down");
    assert!(down_block.contains("outbound=active"), "{down_block}");
    assert!(down_block.contains("errors=1"), "{down_block}");
    assert!(down_block.contains("(PEER_UNAVAILABLE: "), "{down_block}");
    assert!(down_block.contains("last_success=never"), "{down_block}");
    let healthy_block = block("healthy");
    assert!(healthy_block.contains(" errors=0"), "{healthy_block}");
    assert!(
        healthy_block.contains("(current)"),
        "its key fingerprint: {healthy_block}"
    );
    assert!(healthy_block.contains("last_failure=never"), "{healthy_block}");
    assert!(healthy_block.contains("breaker=closed"), "{healthy_block}");

    let (code, out, err) = run(&["doctor"]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    let line = |what: &str| {
        out.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what}: {out}"))
            .to_string()
    };
    assert!(line("peer healthy").starts_with("ok"), "{out}");
    assert!(line("peer healthy").contains("protocol mosaic/1"), "{out}");
    let down_line = line("peer down");
    assert!(
        down_line.starts_with("FAIL") && down_line.contains("unreachable"),
        "{out}"
    );
    let skewed_line = line("peer skewed");
    assert!(skewed_line.starts_with("FAIL"), "{out}");
    assert!(
        skewed_line.contains("ahead") && skewed_line.contains("fix the clock"),
        "{out}"
    );
    assert!(line("database").starts_with("ok"), "{out}");
    assert!(err.contains("2 problem(s) to fix"), "{err}");
}
