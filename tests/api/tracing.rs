//! One trace across hops: three `mosaic serve` processes chained master →
//! spoke → spoke export their spans over OTLP/HTTP to a receiver this test
//! runs; one federated query's spans share one trace id, each hop's server
//! span is a child of the caller's client span, and each span names its
//! instance. Processes, not in-process instances: the exporter (like the
//! logger) is one per process, and its service name is the instance's.

use crate::common::{self, TestApp, spawn_instance};

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use mosaic::federation::protocol::{self, Envelope, SubRequest};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const SECRET: &str = "tracing-test-secret-key-0123456789abcdef";

#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
}

/// A small OTLP/HTTP receiver: `POST /v1/traces` (protobuf), spans kept.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| async move {
            let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
            let mut kept = kept.lock().unwrap();
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                        any_value::Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                    kept.push(Received {
                        service: service.clone(),
                        name: span.name,
                        kind: span.kind,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent: span.parent_span_id,
                    });
                }
            }
            (
                [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

/// A `mosaic serve` process on a fresh database, with a user, a token and
/// a workspace named after the instance holding one task.
struct Process {
    name: String,
    url: String,
    env: Vec<(&'static str, String)>,
    token: String,
    /// Killed when dropped.
    _child: Child,
}

impl Process {
    async fn start(name: &str, otlp: &str) -> Self {
        let pki = common::pki();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = vec![
            ("DATABASE_URL", common::fresh_database().await),
            ("MOSAIC_LISTEN", format!("127.0.0.1:{port}")),
            ("MOSAIC_INSTANCE_NAME", name.to_string()),
            ("MOSAIC_SECRET_KEY", SECRET.to_string()),
            ("MOSAIC_TLS_CERT", pki.cert.display().to_string()),
            ("MOSAIC_TLS_KEY", pki.key.display().to_string()),
            ("MOSAIC_PEER_CA", pki.ca_cert.display().to_string()),
            ("MOSAIC_ALLOWED_PEER_NETWORKS", "127.0.0.0/8".to_string()),
        ];
        let email = format!("user@{name}.example");
        mosaic(&env, &["user", "create", "--email", &email, "--admin"]).await;
        let token = mosaic(&env, &["token", "create", "--user", &email]).await;
        let child = Command::new(env!("CARGO_BIN_EXE_mosaic"))
            .arg("serve")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("MOSAIC_OTLP_ENDPOINT", otlp)
            // Short batches, so the test waits little for the spans.
            .env("MOSAIC_OTLP_EXPORT_INTERVAL_MS", "100")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let process = Self {
            name: name.to_string(),
            url: format!("https://127.0.0.1:{port}"),
            env,
            token,
            _child: child,
        };
        process.wait_ready().await;
        let ws = process
            .gql(
                "mutation($n: String!) { createWorkspace(input: {name: $n}) { id } }",
                json!({ "n": name }),
            )
            .await["data"]["createWorkspace"]["id"]
            .clone();
        process
            .gql(
                "mutation($w: ID!, $t: String!) { createTask(input: {workspaceId: $w, title: $t}) { id } }",
                json!({ "w": ws, "t": format!("task of {name}") }),
            )
            .await;
        process
    }

    async fn wait_ready(&self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "{} never became ready", self.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn gql(&self, query: &str, variables: Value) -> Value {
        let body: Value = client()
            .post(format!("{}/graphql", self.url))
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body.get("errors").is_none(), "{}: {body}", self.name);
        body
    }

    /// `self` connects to `asked` (CLI, signed CONNECT); `asked` grants its
    /// workspace, and lets reads go on if `forward`.
    async fn connect_to(&self, asked: &Process, forward: bool) {
        mosaic(&self.env, &["peer", "connect", &asked.url]).await;
        let listing = mosaic(&asked.env, &["peer", "list"]).await;
        let id = listing
            .lines()
            .find(|l| l.contains(&format!(" {} ", self.name)))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{} lists {}: {listing}", asked.name, self.name))
            .to_string();
        let mut approve = vec!["peer", "approve", &id, "--workspace", &asked.name];
        if forward {
            approve.push("--forward");
        }
        mosaic(&asked.env, &approve).await;
    }
}

fn client() -> reqwest::Client {
    mosaic::federation::tls::http_client(Some(&common::pki().ca_cert)).unwrap()
}

/// Runs a `mosaic` command (no span export) and returns its output.
async fn mosaic(env: &[(&str, String)], args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_mosaic"))
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn")
            .output(),
    )
    .await
    .expect("the command finished in time")
    .unwrap();
    assert!(
        out.status.success(),
        "mosaic {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn one_trace_follows_a_query_through_three_instances() {
    let (otlp, spans) = receiver().await;
    let (master, spoke, far) = tokio::join!(
        Process::start("master", &otlp),
        Process::start("spoke", &otlp),
        Process::start("far", &otlp),
    );
    // master asks spoke, which forwards reads to far.
    spoke.connect_to(&far, false).await;
    master.connect_to(&spoke, true).await;

    let body = master
        .gql(
            "{ tasks(scope: {all: true}, first: 50) { edges { node { title instance { name } } } } }",
            Value::Null,
        )
        .await;
    let mut titles: Vec<&str> = body["data"]["tasks"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["title"].as_str().unwrap())
        .collect();
    titles.sort();
    assert_eq!(titles, ["task of far", "task of master", "task of spoke"], "{body}");

    // The spans of the federated query: a QUERY call from each asking
    // instance, a QUERY served by each asked one, and the master's request.
    let find = |all: &[Received], service: &str, name: &str, kind: SpanKind| {
        all.iter()
            .find(|s| s.service == service && s.name == name && s.kind == kind as i32)
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (master_call, spoke_server, spoke_call, far_server) = loop {
        let all = spans.lock().unwrap().clone();
        let found = (
            find(&all, "master", "QUERY", SpanKind::Client),
            find(&all, "spoke", "QUERY", SpanKind::Server),
            find(&all, "spoke", "QUERY", SpanKind::Client),
            find(&all, "far", "QUERY", SpanKind::Server),
        );
        if let (Some(a), Some(b), Some(c), Some(d)) = found {
            break (a, b, c, d);
        }
        assert!(Instant::now() < deadline, "the hops' spans never all arrived: {all:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let all = spans.lock().unwrap().clone();
    let master_request = all
        .iter()
        .find(|s| s.span_id == master_call.parent)
        .expect("the master's call has its request span as parent");
    assert_eq!(
        (master_request.service.as_str(), master_request.name.as_str()),
        ("master", "POST /graphql")
    );
    assert_eq!(master_request.kind, SpanKind::Server as i32);
    assert!(master_request.parent.is_empty(), "the request begins the trace");

    let trace = &master_request.trace_id;
    assert_eq!(trace.len(), 16);
    for s in [&master_call, &spoke_server, &spoke_call, &far_server] {
        assert_eq!(&s.trace_id, trace, "one trace id: {s:?}");
    }
    assert_eq!(
        spoke_server.parent, master_call.span_id,
        "spoke continues master's call"
    );
    assert_eq!(
        spoke_call.parent, spoke_server.span_id,
        "spoke's call is inside its request"
    );
    assert_eq!(far_server.parent, spoke_call.span_id, "far continues spoke's call");

    // Every span of that trace is one of the five, and no hop began another
    // trace for it (the peer door's HTTP span is not exported).
    let in_trace: Vec<&Received> = all.iter().filter(|s| &s.trace_id == trace).collect();
    assert_eq!(in_trace.len(), 5, "{in_trace:#?}");
    let services: HashMap<&str, usize> = in_trace.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.service.as_str()).or_default() += 1;
        m
    });
    assert_eq!(services, HashMap::from([("master", 2), ("spoke", 2), ("far", 1)]));
}

/// A signed QUERY whose envelope carries `traceparent`.
fn query_with(from: &TestApp, traceparent: &str) -> Vec<u8> {
    serde_json::to_vec(&SubRequest {
        query: "{ workspaces { name } }".into(),
        variables: Value::Null,
        envelope: Envelope {
            visited: vec![from.state.instance_id.to_string()],
            hop_limit: 3,
            deadline_ms: 5_000,
            traceparent: Some(traceparent.into()),
            ..Envelope::default()
        },
    })
    .unwrap()
}

#[tokio::test]
async fn a_malformed_traceparent_is_ignored_and_the_query_answered() {
    let asked = spawn_instance("asked").await;
    let asking = spawn_instance("asking").await;
    let (_, token) = asked.user("owner@asked.example").await;
    let ws = asked.create_workspace(&token, "Shared").await;
    common::peer(&asking, &asked, &[&ws], false).await;
    let long = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(10_000));
    for traceparent in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "garbage",
        "",
        long.as_str(),
    ] {
        let r = common::post_signed(&asking, &asked, protocol::QUERY_PATH, query_with(&asking, traceparent)).await;
        assert_eq!(r.status(), 200, "{traceparent:.60}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["data"]["workspaces"], json!([{ "name": "Shared" }]), "{body}");
    }
}
