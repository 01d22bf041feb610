//! GraphQL subscriptions (issue 11): `taskChanged` over a real WebSocket
//! (graphql-transport-ws) and a real SSE stream, against a real instance and
//! PostgreSQL, its events coming from LISTEN/NOTIFY.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestApp, memory_kib, spawn_app, spawn_app_with};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const SUB: &str =
    "subscription($w: ID!) { taskChanged(workspaceId: $w) { kind taskId task { id title workspace { id } } } }";
const WAIT: Duration = Duration::from_secs(15);

/// Polls `condition` until it holds, failing the test after `WAIT`.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the instance holds `n` task change subscriptions.
async fn subscribers(app: &TestApp, n: usize) {
    let live = app.state.live.clone();
    wait_until(&format!("{n} subscribers"), || live.task_change_subscribers() == n).await;
}

// ---------------------------------------------------------------------------
// A graphql-transport-ws client
// ---------------------------------------------------------------------------

struct Ws(WebSocketStream<TcpStream>);

#[derive(Debug)]
enum Incoming {
    Message(Value),
    /// A close frame's code and reason; (0, "") when the connection just ended.
    Closed(u16, String),
}

fn ws_request(app: &TestApp, headers: &[(&str, &str)]) -> tungstenite::handshake::client::Request {
    let addr = app.base.strip_prefix("http://").expect("a plain HTTP test app");
    let mut request = format!("ws://{addr}/graphql").into_client_request().unwrap();
    let h = request.headers_mut();
    for (name, value) in headers {
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request
}

async fn connect(app: &TestApp, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
    let stream = TcpStream::connect(app.base.strip_prefix("http://").unwrap())
        .await
        .unwrap();
    connect_on(app, stream, headers).await
}

async fn connect_on(app: &TestApp, stream: TcpStream, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
    let mut all = vec![("sec-websocket-protocol", "graphql-transport-ws")];
    all.extend_from_slice(headers);
    let (ws, response) = tokio_tungstenite::client_async(ws_request(app, &all), stream).await?;
    assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
    Ok(Ws(ws))
}

/// The HTTP status and body of a refused upgrade.
fn refused(result: Result<Ws, tungstenite::Error>) -> (u16, Value) {
    match result {
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(body).unwrap_or(Value::Null),
            )
        }
        Err(e) => panic!("refused without an HTTP answer: {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

impl Ws {
    async fn send(&mut self, message: Value) {
        self.0.send(Message::text(message.to_string())).await.unwrap();
    }

    /// The next protocol message (the server's keep-alive pings skipped), or the close.
    async fn next(&mut self) -> Incoming {
        loop {
            let received = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("a message in time");
            match received {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["type"] != "ping" {
                        return Incoming::Message(v);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or(Incoming::Closed(0, String::new()), |f| {
                        Incoming::Closed(f.code.into(), f.reason.to_string())
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Incoming::Closed(0, String::new()),
            }
        }
    }

    async fn message(&mut self) -> Value {
        match self.next().await {
            Incoming::Message(v) => v,
            closed => panic!("expected a message, got {closed:?}"),
        }
    }

    async fn closed(&mut self) -> (u16, String) {
        match self.next().await {
            Incoming::Closed(code, reason) => (code, reason),
            message => panic!("expected the close, got {message:?}"),
        }
    }

    async fn init(&mut self, payload: Value) {
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        assert_eq!(self.message().await, json!({ "type": "connection_ack" }));
    }

    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "type": "subscribe", "id": id, "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next result of subscription `id`.
    async fn next_of(&mut self, id: &str) -> Value {
        let m = self.message().await;
        assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("next"), Some(id)), "{m}");
        m["payload"].clone()
    }

    /// The errors `error` refuses subscription `id` with.
    async fn error_of(&mut self, id: &str) -> Value {
        let m = self.message().await;
        assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("error"), Some(id)), "{m}");
        m["payload"].clone()
    }
}

/// A WebSocket authenticated by `token` in the upgrade, initialised.
async fn ws_for(app: &TestApp, token: &str) -> Ws {
    let bearer = format!("Bearer {token}");
    let mut ws = connect(app, &[("authorization", &bearer)]).await.unwrap();
    ws.init(json!({})).await;
    ws
}

// ---------------------------------------------------------------------------
// An SSE client (GraphQL over SSE, distinct connections)
// ---------------------------------------------------------------------------

struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: String,
}

async fn sse(app: &TestApp, token: &str, query: &str, variables: Value) -> Sse {
    let response = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    Sse {
        body: response.bytes_stream().boxed(),
        buffer: String::new(),
    }
}

impl Sse {
    /// The next event's name and data (comments skipped); `None` when the stream ends.
    async fn event(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !name.is_empty() {
                    return Some((name, data));
                }
                continue;
            }
            match tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event in time")
            {
                Some(Ok(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Some(Err(_)) | None => return None,
            }
        }
    }

    async fn next(&mut self) -> Value {
        let (name, data) = self.event().await.expect("an event");
        assert_eq!(name, "next", "{data}");
        serde_json::from_str(&data).unwrap()
    }
}

// ---------------------------------------------------------------------------
// Helpers on tasks
// ---------------------------------------------------------------------------

async fn rename_task(app: &TestApp, token: &str, task: &str, title: &str) {
    app.gql_ok(
        token,
        "mutation($i: ID!, $t: String!) { updateTask(input: {id: $i, title: $t}) { id } }",
        json!({ "i": task, "t": title }),
    )
    .await;
}

async fn delete_task(app: &TestApp, token: &str, task: &str) {
    app.gql_ok(token, "mutation($i: ID!) { deleteTask(id: $i) }", json!({ "i": task }))
        .await;
}

/// Creates, renames and deletes a task at once; returns its id.
async fn create_update_delete(app: &TestApp, token: &str, workspace: &str) -> String {
    let task = app.create_task(token, workspace, "first").await;
    rename_task(app, token, &task, "renamed").await;
    delete_task(app, token, &task).await;
    task
}

/// Checks the three changes `create_update_delete` makes, in order. Each
/// shows the task as it was when delivered: possibly already renamed or gone.
fn assert_three_changes(results: &[Value], task: &str, workspace: &str) {
    let changes: Vec<&Value> = results.iter().map(|r| &r["data"]["taskChanged"]).collect();
    assert_eq!(changes.len(), 3);
    let titles = [&["first", "renamed"][..], &["renamed"], &[]];
    for ((change, kind), titles) in changes.iter().zip(["CREATED", "UPDATED", "DELETED"]).zip(titles) {
        assert_eq!(change["kind"], kind, "{change}");
        assert_eq!(change["taskId"], task, "{change}");
        match &change["task"] {
            Value::Null => {}
            t => {
                assert!(titles.contains(&t["title"].as_str().unwrap()), "{change}");
                assert_eq!(t["workspace"]["id"], workspace);
            }
        }
    }
    assert_eq!(changes[2]["task"], Value::Null, "a deleted task is null");
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_websocket_subscriber_sees_creation_update_and_deletion_in_order_and_an_outsider_nothing() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let ws_id = app.create_workspace(&alice, "Alice's").await;
    let bobs = app.create_workspace(&bob, "Bob's").await;

    let mut watcher = ws_for(&app, &alice).await;
    watcher.subscribe("a", SUB, json!({ "w": ws_id })).await;
    // Bob cannot read Alice's workspace: refused as reading it is (NOT_FOUND).
    let mut outsider = ws_for(&app, &bob).await;
    outsider.subscribe("x", SUB, json!({ "w": ws_id })).await;
    let errors = outsider.error_of("x").await;
    assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{errors}");
    // Bob watches his own workspace: Alice's changes never reach him.
    outsider.subscribe("b", SUB, json!({ "w": bobs })).await;
    subscribers(&app, 2).await;

    // One change at a time: each shows the task as that change left it.
    let task = app.create_task(&alice, &ws_id, "first").await;
    let created = watcher.next_of("a").await;
    rename_task(&app, &alice, &task, "renamed").await;
    let updated = watcher.next_of("a").await;
    delete_task(&app, &alice, &task).await;
    let deleted = watcher.next_of("a").await;
    let changes: Vec<&Value> = [&created, &updated, &deleted]
        .into_iter()
        .map(|r| &r["data"]["taskChanged"])
        .collect();
    assert_eq!(
        changes.iter().map(|c| c["kind"].as_str().unwrap()).collect::<Vec<_>>(),
        ["CREATED", "UPDATED", "DELETED"]
    );
    assert!(changes.iter().all(|c| c["taskId"] == task), "{changes:?}");
    assert_eq!(changes[0]["task"]["title"], "first");
    assert_eq!(changes[0]["task"]["workspace"]["id"], ws_id);
    assert_eq!(changes[1]["task"]["title"], "renamed");
    assert_eq!(changes[2]["task"], Value::Null);

    // Changes in quick succession arrive all, in order.
    let task = create_update_delete(&app, &alice, &ws_id).await;
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(watcher.next_of("a").await);
    }
    assert_three_changes(&results, &task, &ws_id);

    // A change of Bob's own comes to him first: nothing of Alice's came before it.
    let own = app.create_task(&bob, &bobs, "bob's").await;
    let change = outsider.next_of("b").await;
    assert_eq!(change["data"]["taskChanged"]["taskId"], own, "{change}");
    assert_eq!(change["data"]["taskChanged"]["kind"], "CREATED");

    // `complete` ends a subscription and gives its place back.
    watcher.send(json!({ "type": "complete", "id": "a" })).await;
    subscribers(&app, 1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_member_removed_from_the_workspace_is_told_and_sees_no_more() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let ws_id = app.create_workspace(&alice, "W").await;
    app.add_member(&alice, &ws_id, "bob@example.com", "GUEST").await;
    let mut ws = ws_for(&app, &bob).await;
    ws.subscribe("1", SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 1).await;
    let task = app.create_task(&alice, &ws_id, "seen").await;
    let seen = ws.next_of("1").await;
    assert_eq!(seen["data"]["taskChanged"]["task"]["title"], "seen", "{seen}");

    let bob_global = app.gql_ok(&bob, "{ me { id } }", json!({})).await["me"]["id"].clone();
    app.gql_ok(
        &alice,
        "mutation($w: ID!, $u: ID!) { removeWorkspaceMember(input: {workspaceId: $w, userId: $u}) }",
        json!({ "w": ws_id, "u": bob_global }),
    )
    .await;
    rename_task(&app, &alice, &task, "secret").await;
    let m = ws.message().await;
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("error"), Some("1")),
        "{m}"
    );
    assert_eq!(m["payload"][0]["extensions"]["code"], "NOT_FOUND", "{m}");
    assert!(!m.to_string().contains("secret"), "{m}");
    subscribers(&app, 0).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_ids_and_operations_get_clear_codes() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let ws_id = app.create_workspace(&alice, "W").await;
    let task = app.create_task(&alice, &ws_id, "t").await;
    let mut ws = ws_for(&app, &alice).await;
    for (id, workspace) in [("1", "not-an-id"), ("2", task.as_str())] {
        ws.subscribe(id, SUB, json!({ "w": workspace })).await;
        let errors = ws.error_of(id).await;
        assert_eq!(
            errors[0]["extensions"]["code"], "BAD_USER_INPUT",
            "{workspace}: {errors}"
        );
        assert!(
            errors[0]["message"].as_str().unwrap().contains("workspaceId"),
            "{errors}"
        );
    }
    ws.subscribe("3", "query { me { id } }", json!({})).await;
    assert_eq!(ws.error_of("3").await[0]["extensions"]["code"], "BAD_REQUEST");
    ws.subscribe("4", "subscription { taskChanged }", json!({})).await;
    assert_eq!(
        ws.error_of("4").await[0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    // The same id twice while the first runs: closed, as the protocol says.
    ws.subscribe("5", SUB, json!({ "w": ws_id })).await;
    ws.subscribe("5", SUB, json!({ "w": ws_id })).await;
    assert_eq!(ws.closed().await.0, 4409);
    // Not a protocol message.
    let mut ws = ws_for(&app, &alice).await;
    ws.send(json!({ "type": "start", "id": "1" })).await;
    assert_eq!(ws.closed().await.0, 4400);
    subscribers(&app, 0).await;
    app.stop().await;
}

#[tokio::test]
async fn tokens_in_connection_init_work_and_wrong_or_missing_ones_are_refused() {
    let app = spawn_app_with(|c| c.limits.header_read_timeout = Duration::from_secs(2)).await;
    let (_, alice) = app.user("alice@example.com").await;
    let ws_id = app.create_workspace(&alice, "W").await;

    let mut ws = connect(&app, &[]).await.unwrap();
    ws.init(json!({ "authorization": format!("Bearer {alice}") })).await;
    ws.subscribe("1", SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 1).await;
    let task = app.create_task(&alice, &ws_id, "first").await;
    assert_eq!(ws.next_of("1").await["data"]["taskChanged"]["taskId"], task);

    for payload in [
        json!({ "authorization": "Bearer not-a-token" }),
        json!({ "authorization": alice }),
        json!({}),
        Value::Null,
    ] {
        let mut ws = connect(&app, &[]).await.unwrap();
        ws.send(json!({ "type": "connection_init", "payload": payload })).await;
        let (code, reason) = ws.closed().await;
        assert_eq!(code, 4403, "{payload}: {reason}");
    }
    // Subscribing before connection_init.
    let mut ws = connect(&app, &[]).await.unwrap();
    ws.subscribe("1", SUB, json!({ "w": ws_id })).await;
    assert_eq!(ws.closed().await.0, 4401);
    // Never initialising: closed after limits.header_read_timeout.
    let mut ws = connect(&app, &[]).await.unwrap();
    assert_eq!(ws.closed().await.0, 4408);
    // A wrong token in the upgrade is refused before it.
    let (status, body) = refused(connect(&app, &[("authorization", "Bearer wrong")]).await);
    assert_eq!((status, common::code(&body).as_str()), (401, "UNAUTHENTICATED"));
    // No subprotocol: not a GraphQL WebSocket.
    let stream = TcpStream::connect(app.base.strip_prefix("http://").unwrap())
        .await
        .unwrap();
    let plain = tokio_tungstenite::client_async(ws_request(&app, &[]), stream).await;
    let Err(tungstenite::Error::Http(response)) = plain else {
        panic!("a WebSocket without the subprotocol was accepted")
    };
    assert_eq!(response.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn a_session_cookie_upgrade_must_come_from_the_instances_own_origin() {
    let app = spawn_app().await;
    let session = app
        .break_glass_session("root@example.com", "a-long-break-glass-password")
        .await;
    let ws_id = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("cookie", &session.cookie)
        .header("x-mosaic-csrf", &session.csrf)
        .json(&json!({ "query": "mutation { createWorkspace(input: {name: \"W\"}) { id } }" }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["data"]["createWorkspace"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    for origin in [Some("http://evil.example"), Some("http://127.0.0.1:1"), None] {
        let mut headers = vec![("cookie", session.cookie.as_str())];
        headers.extend(origin.map(|o| ("origin", o)));
        let (status, body) = refused(connect(&app, &headers).await);
        assert_eq!(
            (status, common::code(&body).as_str()),
            (403, "ORIGIN_NOT_ALLOWED"),
            "{origin:?}"
        );
    }
    let mut ws = connect(&app, &[("cookie", &session.cookie), ("origin", &app.base)])
        .await
        .unwrap();
    ws.init(json!({})).await;
    ws.subscribe("1", SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 1).await;
    let token = mosaic::auth::tokens::create(&mut app.admin().await, "root@example.com", None)
        .await
        .unwrap();
    let task = app.create_task(&token, &ws_id, "t").await;
    assert_eq!(ws.next_of("1").await["data"]["taskChanged"]["taskId"], task);
    app.stop().await;
}

#[tokio::test]
async fn an_sse_subscriber_sees_the_same_changes() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let ws_id = app.create_workspace(&alice, "W").await;

    let mut refused = sse(&app, &bob, SUB, json!({ "w": ws_id })).await;
    let errors = refused.next().await;
    assert_eq!(common::code(&errors), "NOT_FOUND", "{errors}");
    assert_eq!(refused.event().await.map(|e| e.0).as_deref(), Some("complete"));

    let mut events = sse(&app, &alice, SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 1).await;
    let task = create_update_delete(&app, &alice, &ws_id).await;
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(events.next().await);
    }
    assert_three_changes(&results, &task, &ws_id);

    // A query is not served as a stream.
    let mut query = sse(&app, &alice, "query { me { id } }", json!({})).await;
    assert_eq!(common::code(&query.next().await), "BAD_REQUEST");
    drop(events);
    subscribers(&app, 0).await;
    app.stop().await;
}

#[tokio::test]
async fn per_user_limits_refuse_the_next_subscription_and_connection_with_their_codes() {
    let app = spawn_app_with(|c| {
        c.limits.max_subscriptions_per_user = 2;
        c.limits.max_ws_connections_per_user = 2;
    })
    .await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let ws_id = app.create_workspace(&alice, "W").await;
    let bobs = app.create_workspace(&bob, "B").await;

    let mut first = ws_for(&app, &alice).await;
    first.subscribe("1", SUB, json!({ "w": ws_id })).await;
    let mut second = ws_for(&app, &alice).await;
    second.subscribe("2", SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 2).await;
    // The third subscription, on either connection or over SSE.
    first.subscribe("3", SUB, json!({ "w": ws_id })).await;
    let errors = first.error_of("3").await;
    assert_eq!(errors[0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS", "{errors}");
    let mut over_sse = sse(&app, &alice, SUB, json!({ "w": ws_id })).await;
    assert_eq!(common::code(&over_sse.next().await), "TOO_MANY_SUBSCRIPTIONS");
    // The third connection, authenticated in the upgrade or in connection_init.
    let bearer = format!("Bearer {alice}");
    let (status, body) = refused(connect(&app, &[("authorization", &bearer)]).await);
    assert_eq!((status, common::code(&body).as_str()), (429, "TOO_MANY_CONNECTIONS"));
    let mut third = connect(&app, &[]).await.unwrap();
    third
        .send(json!({ "type": "connection_init", "payload": { "authorization": bearer } }))
        .await;
    let (code, reason) = third.closed().await;
    assert_eq!(code, 1013);
    assert!(reason.starts_with("TOO_MANY_CONNECTIONS"), "{reason}");
    // Limits are per user: Bob is served.
    let mut bobs_ws = ws_for(&app, &bob).await;
    bobs_ws.subscribe("1", SUB, json!({ "w": bobs })).await;
    subscribers(&app, 3).await;
    // Places come back: a completed subscription, a closed connection.
    first.send(json!({ "type": "complete", "id": "1" })).await;
    subscribers(&app, 2).await;
    first.subscribe("4", SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 3).await;
    drop(second);
    subscribers(&app, 2).await;
    let mut again = ws_for(&app, &alice).await;
    again.subscribe("5", SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 3).await;
    let task = app.create_task(&alice, &ws_id, "t").await;
    assert_eq!(again.next_of("5").await["data"]["taskChanged"]["taskId"], task);
    assert_eq!(first.next_of("4").await["data"]["taskChanged"]["taskId"], task);
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_cut_off_and_memory_stays_bounded() {
    const MAX_CHANGES: usize = 2000;
    let app = spawn_app_with(|c| {
        c.limits.subscription_send_timeout = Duration::from_secs(2);
        c.limits.subscription_buffer = 64;
    })
    .await;
    let (_, alice) = app.user("alice@example.com").await;
    let ws_id = app.create_workspace(&alice, "W").await;
    let task = app.create_task(&alice, &ws_id, "t").await;

    // A small receive window, and then no reading at all.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(app.base.strip_prefix("http://").unwrap().parse().unwrap())
        .await
        .unwrap();
    let bearer = format!("Bearer {alice}");
    let mut slow = connect_on(&app, stream, &[("authorization", &bearer)]).await.unwrap();
    slow.init(json!({})).await;
    slow.subscribe(
        "1",
        "subscription($w: ID!) { taskChanged(workspaceId: $w) { kind task { description } } }",
        json!({ "w": ws_id }),
    )
    .await;
    // A reader that keeps up, throughout.
    let mut reader = sse(&app, &alice, SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 2).await;

    let (rss_before, hwm_before) = memory_kib();
    let description = "x".repeat(50_000);
    let mut changes = 0;
    while app.state.live.task_change_subscribers() == 2 {
        assert!(changes < MAX_CHANGES, "the silent subscriber was never cut off");
        app.gql_ok(
            &alice,
            "mutation($i: ID!, $d: String) { updateTask(input: {id: $i, description: $d}) { id } }",
            json!({ "i": task, "d": format!("{changes}{description}") }),
        )
        .await;
        changes += 1;
        assert_eq!(reader.next().await["data"]["taskChanged"]["kind"], "UPDATED");
    }
    let (rss_after, hwm_after) = memory_kib();
    eprintln!(
        "silent subscriber cut off after {changes} changes of ~50 KB; VmRSS {rss_before} -> {rss_after} KiB, \
         VmHWM {hwm_before} -> {hwm_after} KiB"
    );
    // What the silent client finally reads: part of the changes, then the end.
    let mut delivered = 0;
    loop {
        match slow.next().await {
            Incoming::Message(m) if m["type"] == "next" => delivered += 1,
            Incoming::Message(m) => panic!("{m}"),
            Incoming::Closed(..) => break,
        }
    }
    assert!(delivered < changes, "{delivered} of {changes} delivered");
    assert!(
        hwm_after.saturating_sub(hwm_before) < 32 * 1024,
        "peak memory grew by {} KiB",
        hwm_after - hwm_before
    );
    // The reader that kept up is still served.
    rename_task(&app, &alice, &task, "after").await;
    assert_eq!(reader.next().await["data"]["taskChanged"]["task"]["title"], "after");
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_further_behind_than_the_buffer_is_told_and_ended() {
    // Far more than the socket buffers hold, while the client does not read.
    const CHANGES: usize = 200;
    let app = spawn_app_with(|c| {
        c.limits.subscription_send_timeout = Duration::from_secs(120);
        c.limits.subscription_buffer = 4;
    })
    .await;
    let (_, alice) = app.user("alice@example.com").await;
    let ws_id = app.create_workspace(&alice, "W").await;
    let task = app.create_task(&alice, &ws_id, "t").await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(app.base.strip_prefix("http://").unwrap().parse().unwrap())
        .await
        .unwrap();
    let bearer = format!("Bearer {alice}");
    let mut ws = connect_on(&app, stream, &[("authorization", &bearer)]).await.unwrap();
    ws.init(json!({})).await;
    ws.subscribe(
        "1",
        "subscription($w: ID!) { taskChanged(workspaceId: $w) { task { description } } }",
        json!({ "w": ws_id }),
    )
    .await;
    subscribers(&app, 1).await;
    let description = "x".repeat(50_000);
    for i in 0..CHANGES {
        app.gql_ok(
            &alice,
            "mutation($i: ID!, $d: String) { updateTask(input: {id: $i, description: $d}) { id } }",
            json!({ "i": task, "d": format!("{i}{description}") }),
        )
        .await;
    }
    // Reading again: what was sent before it fell behind, then the refusal.
    let mut delivered = 0;
    let last = loop {
        let m = ws.message().await;
        if m["type"] != "next" || m["payload"]["errors"].is_array() {
            break m;
        }
        delivered += 1;
    };
    assert!(delivered < CHANGES, "{delivered}");
    assert_eq!(last["id"], "1", "{last}");
    assert!(last["payload"].to_string().contains("SUBSCRIBER_TOO_SLOW"), "{last}");
    subscribers(&app, 0).await;
    // The connection stays: a new subscription is served.
    ws.subscribe("2", SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 1).await;
    rename_task(&app, &alice, &task, "again").await;
    assert_eq!(ws.next_of("2").await["data"]["taskChanged"]["task"]["title"], "again");
    app.stop().await;
}

#[tokio::test]
async fn idle_subscriptions_get_keep_alives() {
    let app = spawn_app_with(|c| c.limits.subscription_keepalive = Duration::from_millis(200)).await;
    let (_, alice) = app.user("alice@example.com").await;
    let ws_id = app.create_workspace(&alice, "W").await;
    let mut ws = ws_for(&app, &alice).await;
    ws.subscribe("1", SUB, json!({ "w": ws_id })).await;
    let ping = tokio::time::timeout(WAIT, ws.0.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ping.to_text().unwrap(), r#"{"type":"ping"}"#);
    // A pong is not required, and the subscription goes on.
    let task = app.create_task(&alice, &ws_id, "t").await;
    assert_eq!(ws.next_of("1").await["data"]["taskChanged"]["taskId"], task);

    let mut events = sse(&app, &alice, SUB, json!({ "w": ws_id })).await;
    let chunk = tokio::time::timeout(WAIT, events.body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&chunk[..], b":\n\n", "an SSE comment");
    app.stop().await;
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_and_ends_event_streams() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let ws_id = app.create_workspace(&alice, "W").await;
    let mut ws = ws_for(&app, &alice).await;
    ws.subscribe("1", SUB, json!({ "w": ws_id })).await;
    let mut events = sse(&app, &alice, SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 2).await;

    let stopping = tokio::spawn(app.stop());
    assert_eq!(ws.closed().await.0, 1001);
    assert_eq!(events.event().await, None, "the event stream ends");
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown finishes")
        .unwrap();
}

#[tokio::test]
async fn changes_keep_coming_after_the_listener_connection_is_lost() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let ws_id = app.create_workspace(&alice, "W").await;
    let mut ws = ws_for(&app, &alice).await;
    ws.subscribe("1", SUB, json!({ "w": ws_id })).await;
    subscribers(&app, 1).await;

    let listening = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %mosaic_task_changes%' AND datname = current_database()";
    let mut admin = app.admin().await;
    let pids: Vec<i32> = sqlx::query_scalar(listening).fetch_all(&mut admin).await.unwrap();
    assert_eq!(pids.len(), 1, "one listening connection per instance");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pids[0])
        .execute(&mut admin)
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let now: Vec<i32> = sqlx::query_scalar(listening).fetch_all(&mut admin).await.unwrap();
        if now.len() == 1 && now[0] != pids[0] {
            break;
        }
        assert!(Instant::now() < deadline, "the listener did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let task = app.create_task(&alice, &ws_id, "after").await;
    assert_eq!(ws.next_of("1").await["data"]["taskChanged"]["taskId"], task);
    app.stop().await;
}

const AGENT_SUB: &str = "subscription($w: ID!, $t: ID) { agentTaskEvents(workspaceId: $w, taskId: $t) {
    taskId event { fromStatus toStatus actor reason } task { id status } } }";

async fn worker_call(app: &TestApp, agent: &str, path: &str, body: Value) -> Value {
    let r = app
        .client
        .post(format!("{}/worker{path}", app.base))
        .bearer_auth(agent)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// (taskId, "from>to", actor) of an `agentTaskEvents` result.
fn agent_event(result: &Value) -> (String, String, String) {
    let e = &result["data"]["agentTaskEvents"];
    (
        e["taskId"].as_str().unwrap().to_string(),
        format!(
            "{}>{}",
            e["event"]["fromStatus"].as_str().unwrap_or("-"),
            e["event"]["toStatus"].as_str().unwrap()
        ),
        e["event"]["actor"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn agent_task_events_reach_readers_of_the_workspace_in_order_and_a_task_s_subscriber_only_its_own() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let ws_id = app.create_workspace(&alice, "Alice's").await;
    let bobs = app.create_workspace(&bob, "Bob's").await;
    let create = "mutation($i: CreateAgentTaskInput!) { createAgentTask(input: $i) { id } }";
    let steps = json!({ "steps": [{ "complete": {} }] });
    let mut tasks = Vec::new();
    for priority in [10, 1] {
        let input = json!({ "workspaceId": ws_id, "title": "t", "kind": "SCRIPT", "instructions": steps, "priority": priority });
        let t = app.gql_ok(&alice, create, json!({ "i": input })).await;
        tasks.push(t["createAgentTask"]["id"].as_str().unwrap().to_string());
    }
    let bobs_task = app
        .gql_ok(
            &bob,
            create,
            json!({ "i": { "workspaceId": bobs, "title": "b", "kind": "SCRIPT", "instructions": steps } }),
        )
        .await["createAgentTask"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut watcher = ws_for(&app, &alice).await;
    watcher.subscribe("all", AGENT_SUB, json!({ "w": ws_id })).await;
    watcher
        .subscribe("one", AGENT_SUB, json!({ "w": ws_id, "t": tasks[1] }))
        .await;
    // Bob reads neither Alice's workspace nor, through his own, her task.
    let mut outsider = ws_for(&app, &bob).await;
    outsider.subscribe("x", AGENT_SUB, json!({ "w": ws_id })).await;
    assert_eq!(outsider.error_of("x").await[0]["extensions"]["code"], "NOT_FOUND");
    outsider
        .subscribe("y", AGENT_SUB, json!({ "w": bobs, "t": tasks[0] }))
        .await;
    assert_eq!(outsider.error_of("y").await[0]["extensions"]["code"], "NOT_FOUND");
    outsider.subscribe("z", AGENT_SUB, json!({ "w": "nope" })).await;
    assert_eq!(outsider.error_of("z").await[0]["extensions"]["code"], "BAD_USER_INPUT");
    let live = app.state.live.clone();
    wait_until("two agent task event subscribers", || {
        live.agent_task_event_subscribers() == 2
    })
    .await;

    // An agent works the first task; Bob's task changes too; Alice cancels the second.
    let agent = app
        .gql_ok(
            &alice,
            "mutation($w: ID!) { createAgentToken(workspaceId: $w) }",
            json!({ "w": ws_id }),
        )
        .await["createAgentToken"]
        .as_str()
        .unwrap()
        .to_string();
    let claim = worker_call(&app, &agent, "/claim", json!({})).await;
    assert_eq!(claim["task"]["id"], tasks[0].as_str());
    let path = |what: &str| format!("/tasks/{}/{what}", tasks[0]);
    worker_call(&app, &agent, &path("heartbeat"), json!({ "attempt": 1 })).await;
    app.gql_ok(
        &bob,
        "mutation($id: ID!) { cancelAgentTask(id: $id) { id } }",
        json!({ "id": bobs_task }),
    )
    .await;
    worker_call(
        &app,
        &agent,
        &path("complete"),
        json!({ "attempt": 1, "result": { "ok": 1 } }),
    )
    .await;
    app.gql_ok(
        &alice,
        "mutation($id: ID!) { cancelAgentTask(id: $id) { id } }",
        json!({ "id": tasks[1] }),
    )
    .await;

    // Five results over one connection: the two subscriptions' interleave.
    let (mut seen, mut ones) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let m = watcher.message().await;
        assert_eq!(m["type"], "next", "{m}");
        match m["id"].as_str() {
            Some("all") => seen.push(agent_event(&m["payload"])),
            Some("one") => ones.push(m["payload"].clone()),
            _ => panic!("{m}"),
        }
    }
    let s = |t: &str, change: &str, actor: &str| (t.to_string(), change.to_string(), actor.to_string());
    assert_eq!(
        seen,
        [
            s(&tasks[0], "QUEUED>ASSIGNED", "AGENT"),
            s(&tasks[0], "ASSIGNED>RUNNING", "AGENT"),
            s(&tasks[0], "RUNNING>COMPLETED", "AGENT"),
            s(&tasks[1], "QUEUED>CANCELLED", "USER"),
        ],
        "in the order logged, nothing of Bob's"
    );
    // The task's subscriber got only its task's event.
    assert_eq!(ones.len(), 1);
    let own = &ones[0];
    assert_eq!(agent_event(own), s(&tasks[1], "QUEUED>CANCELLED", "USER"));
    assert_eq!(own["data"]["agentTaskEvents"]["task"]["status"], "CANCELLED");
    assert_eq!(own["data"]["agentTaskEvents"]["event"]["reason"], "cancelled");

    watcher.send(json!({ "type": "complete", "id": "all" })).await;
    wait_until("one subscriber left", || live.agent_task_event_subscribers() == 1).await;
    app.stop().await;
}
