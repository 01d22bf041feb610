//! Domain events across instances (issue 17): a spoke's outbox delivered to
//! a subscribed master as signed EVENTs, and the master's `events`
//! subscription over a real graphql-transport-ws WebSocket (over TLS),
//! against real instances on loopback and real PostgreSQL.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestApp, eventually, local_id, peer, peer_with, post_signed, spawn_config, spawn_instance};
use futures::{SinkExt, StreamExt};
use mosaic::federation::grant::{Resource, Terms};
use mosaic::federation::protocol::{self, DomainEvent, Event};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(40);
const EVENTS: &str = "subscription($scope: InstanceScope, $types: [String!], $after: String) { \
    events(scope: $scope, types: $types, after: $after) { id type at instance { id name } objectId workspaceId changed cursor } }";

/// Waits until `spoke` holds a subscription of `master`'s.
async fn subscribed(spoke: &TestApp, master: &TestApp) {
    let master_id = master.state.instance_id;
    eventually(WAIT, "the master's subscription on the spoke", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM event_subscriptions WHERE peer_id = $1")
            .bind(master_id)
            .fetch_one(&mut spoke.admin().await)
            .await
            .unwrap()
            == 1
    })
    .await;
}

// ---------------------------------------------------------------------------
// A graphql-transport-ws client over TLS
// ---------------------------------------------------------------------------

type Tls = tokio_rustls::client::TlsStream<TcpStream>;
struct Ws(WebSocketStream<Tls>);

impl Ws {
    /// An initialised WebSocket on `app`, authenticated by `token`.
    async fn open(app: &TestApp, token: &str) -> Self {
        let addr = app.base.strip_prefix("https://").expect("an HTTPS instance");
        let config = mosaic::federation::tls::client_config(Some(&common::pki().ca_cert)).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let mut request = format!("wss://{addr}/graphql").into_client_request().unwrap();
        let h = request.headers_mut();
        h.insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
        let mut ws = Ws(ws);
        ws.send(json!({ "type": "connection_init", "payload": {} })).await;
        assert_eq!(ws.message().await.unwrap()["type"], "connection_ack");
        ws
    }

    async fn send(&mut self, message: Value) {
        self.0.send(Message::text(message.to_string())).await.unwrap();
    }

    /// The next protocol message (pings skipped); None when the connection ends.
    async fn message(&mut self) -> Option<Value> {
        loop {
            let received = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("a message in time");
            match received {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["type"] != "ping" {
                        return Some(v);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    async fn subscribe(&mut self, variables: Value) {
        self.send(json!({ "type": "subscribe", "id": "1", "payload": { "query": EVENTS, "variables": variables } }))
            .await;
    }

    /// The next event of the subscription.
    async fn event(&mut self) -> Value {
        let m = self.message().await.expect("the connection is open");
        assert_eq!(m["type"], "next", "{m}");
        assert!(m["payload"]["errors"].is_null(), "{m}");
        m["payload"]["data"]["events"].clone()
    }
}

/// Subscribes `token`'s user on `master` to `variables`' events and waits
/// until the feed is in place (its positions read) and `spokes` hold the
/// master's subscription (asked for by the first feed covering them).
async fn events_on(master: &TestApp, token: &str, variables: Value, spokes: &[&TestApp]) -> Ws {
    let before = master.state.live.event_feed_subscribers();
    let mut ws = tokio::time::timeout(WAIT, Ws::open(master, token))
        .await
        .expect("the WebSocket opens in time");
    ws.subscribe(variables).await;
    let live = master.state.live.clone();
    eventually(WAIT, "the events subscription", || {
        let n = live.event_feed_subscribers();
        async move { n > before }
    })
    .await;
    for spoke in spokes {
        subscribed(spoke, master).await;
    }
    ws
}

/// A master (`master`) and a spoke that granted it `workspace` under `terms`.
struct Pair {
    master: TestApp,
    spoke: TestApp,
    master_token: String,
    spoke_token: String,
    workspace: String,
}

async fn pair(terms: impl FnOnce(Uuid) -> Terms) -> Pair {
    let master = spawn_instance("master").await;
    let spoke = spawn_instance("spoke").await;
    let (_, master_token) = master.user("ada@master.test").await;
    let (_, spoke_token) = spoke.user("bob@spoke.test").await;
    let workspace = spoke.create_workspace(&spoke_token, "Shared").await;
    peer_with(&master, &spoke, terms(local_id(&workspace))).await;
    Pair {
        master,
        spoke,
        master_token,
        spoke_token,
        workspace,
    }
}

fn id_list(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_task_made_on_a_spoke_reaches_the_masters_subscription_through_restarts_once_each() {
    let Pair {
        master,
        spoke,
        master_token,
        spoke_token,
        workspace,
    } = pair(|w| common::grant(&[w], false, None)).await;
    let spoke_id = spoke.state.instance_id.to_string();
    let mut ws = events_on(&master, &master_token, json!({ "scope": { "all": true } }), &[&spoke]).await;

    let started = Instant::now();
    let t1 = spoke.create_task(&spoke_token, &workspace, "First").await;
    let first = ws.event().await;
    let latency = started.elapsed();
    assert_eq!(first["type"], "task.created");
    assert_eq!(first["instance"], json!({ "id": spoke_id, "name": "spoke" }));
    assert_eq!(first["objectId"], t1.as_str());
    assert_eq!(first["workspaceId"], workspace.as_str());
    assert!(latency < Duration::from_secs(5), "took {latency:?}");
    let mut seen = vec![first];

    // What changed, for an update.
    spoke
        .gql_ok(
            &spoke_token,
            "mutation($id: ID!) { updateTask(input: {id: $id, title: \"Renamed\"}) { id } }",
            json!({ "id": t1 }),
        )
        .await;
    let updated = ws.event().await;
    assert_eq!(
        (updated["type"].as_str(), &updated["changed"]),
        (Some("task.updated"), &json!(["title"]))
    );
    seen.push(updated);

    // The spoke restarts: delivery goes on from its outbox.
    let spoke = spawn_config(spoke.stop_for_restart().await).await;
    let t2 = spoke
        .create_task(&spoke_token, &workspace, "After the spoke's restart")
        .await;
    let e = ws.event().await;
    assert_eq!(e["objectId"], t2.as_str());
    seen.push(e);

    // The master goes down; events made meanwhile wait in the spoke's outbox.
    let cursor = seen.last().unwrap()["cursor"].as_str().unwrap().to_string();
    let config = master.stop_for_restart().await;
    assert!(
        ws.message().await.is_none_or(|m| m["type"] != "next"),
        "nothing arrives from a stopped master"
    );
    let t3 = spoke
        .create_task(&spoke_token, &workspace, "While the master is down")
        .await;
    let t4 = spoke.create_task(&spoke_token, &workspace, "Also while down").await;
    let master = spawn_config(config).await;
    // The client reconnects and resumes after the last event it saw.
    let mut ws = events_on(
        &master,
        &master_token,
        json!({ "scope": { "all": true }, "after": cursor }),
        &[&spoke],
    )
    .await;
    let missed = [ws.event().await, ws.event().await];
    assert_eq!(
        missed
            .iter()
            .map(|e| e["objectId"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [t3.as_str(), t4.as_str()]
    );
    seen.extend(missed);
    let t5 = spoke.create_task(&spoke_token, &workspace, "Live again").await;
    let e = ws.event().await;
    assert_eq!(e["objectId"], t5.as_str());
    seen.push(e);

    // Nothing lost, nothing twice: the spoke's ids, in order, once each.
    let ids = id_list(&seen);
    let mut expected: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM event_outbox WHERE id IS NOT NULL AND resource = 'tasks' ORDER BY id")
            .fetch_all(&mut spoke.admin().await)
            .await
            .unwrap();
    expected.dedup();
    assert_eq!(ids, expected);
    let recorded: Vec<i64> = sqlx::query_scalar("SELECT id FROM received_events ORDER BY id")
        .fetch_all(&mut master.admin().await)
        .await
        .unwrap();
    assert_eq!(recorded, expected, "the master recorded each once");

    // The backlog is empty once acknowledged, in the status and the metrics.
    let master_id = master.state.instance_id;
    eventually(WAIT, "the acknowledgement", || async {
        spoke.state.federation.outbox_backlog().await.unwrap().get(&master_id) == Some(&0)
    })
    .await;
    let status = mosaic::federation::health::status(&spoke.state.federation)
        .await
        .unwrap()
        .join("\n");
    assert!(status.contains("outbox_backlog=0"), "{status}");
    let metrics = spoke.get_text("/metrics").await;
    assert!(
        metrics.contains("mosaic_federation_events_delivered_total{peer=\"master\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mosaic_federation_outbox_pending{peer=\"master\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn revocation_stops_delivery_at_once() {
    let Pair {
        master,
        spoke,
        master_token,
        spoke_token,
        workspace,
    } = pair(|w| common::grant(&[w], false, None)).await;
    // A second spoke, still granting, shows the master keeps receiving.
    let other = spawn_instance("other").await;
    let (_, other_token) = other.user("cy@other.test").await;
    let other_ws = other.create_workspace(&other_token, "Other").await;
    peer(&master, &other, &[&other_ws], false).await;
    let mut ws = events_on(
        &master,
        &master_token,
        json!({ "scope": { "all": true } }),
        &[&spoke, &other],
    )
    .await;

    spoke.create_task(&spoke_token, &workspace, "Before").await;
    assert_eq!(ws.event().await["instance"]["name"], "spoke");

    spoke
        .state
        .federation
        .revoke(master.state.instance_id, "test")
        .await
        .unwrap();
    let hidden = spoke
        .create_task(&spoke_token, &workspace, "After the revocation")
        .await;
    let later = other.create_task(&other_token, &other_ws, "From the other peer").await;
    let next = ws.event().await;
    assert_eq!(
        (next["instance"]["name"].as_str(), next["objectId"].as_str()),
        (Some("other"), Some(later.as_str())),
        "the event after the revocation never came"
    );
    // The subscription ended with the grant: the spoke has no one to send it to.
    let mut conn = spoke.admin().await;
    let subscriptions: i64 = sqlx::query_scalar("SELECT count(*) FROM event_subscriptions")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(subscriptions, 0);
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE object_id = $1")
        .bind(local_id(&hidden))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(written, 1, "the event exists; it is just not the master's any more");
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM received_events WHERE object_id = $1")
        .bind(local_id(&hidden))
        .fetch_one(&mut master.admin().await)
        .await
        .unwrap();
    assert_eq!(received, 0);
}

#[tokio::test]
async fn a_grant_without_tasks_never_delivers_task_events() {
    let Pair {
        master,
        spoke,
        master_token,
        spoke_token,
        workspace,
    } = pair(|w| Terms {
        excluded_resources: vec![Resource::Tasks],
        ..common::grant(&[w], false, None)
    })
    .await;
    let mut ws = events_on(&master, &master_token, json!({ "scope": { "all": true } }), &[&spoke]).await;
    // The task's event comes first in the spoke's order; only the project's arrives.
    spoke.create_task(&spoke_token, &workspace, "Not yours").await;
    let project = spoke
        .gql_ok(
            &spoke_token,
            "mutation($w: ID!) { createProject(input: {workspaceId: $w, name: \"Yours\"}) { id } }",
            json!({ "w": workspace }),
        )
        .await["createProject"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let e = ws.event().await;
    assert_eq!(
        (e["type"].as_str(), e["objectId"].as_str()),
        (Some("project.created"), Some(project.as_str()))
    );
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM received_events WHERE type LIKE 'task.%'")
        .fetch_one(&mut master.admin().await)
        .await
        .unwrap();
    assert_eq!(tasks, 0);
}

#[tokio::test]
async fn this_instances_own_events_follow_what_the_subscriber_may_read_and_resume_with_after() {
    let app = spawn_instance("solo").await;
    let (_, ada) = app.user("ada@solo.test").await;
    let (_, eve) = app.user("eve@solo.test").await;
    let mine = app.create_workspace(&ada, "Mine").await;
    let hers = app.create_workspace(&eve, "Hers").await;
    let mut ws = events_on(&app, &ada, json!({ "types": ["task.created"] }), &[]).await;
    app.create_task(&eve, &hers, "Not visible to ada").await;
    let t1 = app.create_task(&ada, &mine, "One").await;
    let first = ws.event().await;
    assert_eq!(
        first["objectId"],
        t1.as_str(),
        "the other workspace's event is not ada's to see"
    );
    assert_eq!(first["instance"]["name"], "solo");
    let cursor = first["cursor"].as_str().unwrap().to_string();
    ws.0.close(None).await.unwrap();
    drop(ws);
    let live = app.state.live.clone();
    eventually(WAIT, "the first feed to end", || {
        let n = live.event_feed_subscribers();
        async move { n == 0 }
    })
    .await;
    let t2 = app.create_task(&ada, &mine, "Two").await;
    let t3 = app.create_task(&ada, &mine, "Three").await;
    let mut ws = events_on(&app, &ada, json!({ "types": ["task.created"], "after": cursor }), &[]).await;
    let resumed = [ws.event().await, ws.event().await];
    assert_eq!(
        resumed
            .iter()
            .map(|e| e["objectId"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [t2.as_str(), t3.as_str()]
    );
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let app = spawn_instance("solo").await;
    let (_, ada) = app.user("ada@solo.test").await;
    for (variables, field) in [
        (json!({ "types": ["task.created", "task.exploded"] }), "types"),
        (json!({ "after": "not a cursor" }), "after"),
        (json!({ "scope": { "instances": ["nowhere"] } }), "scope.instances"),
    ] {
        let mut ws = Ws::open(&app, &ada).await;
        ws.subscribe(variables).await;
        let m = ws.message().await.unwrap();
        let errors = if m["type"] == "error" {
            m["payload"].clone()
        } else {
            m["payload"]["errors"].clone()
        };
        assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT", "{m}");
        assert!(errors[0]["message"].as_str().unwrap().starts_with(field), "{m}");
    }
}

/// A batch from `from` to `to` as a signed EVENT: (status, answer).
async fn send_batch(from: &TestApp, to: &TestApp, events: Vec<DomainEvent>, through: i64) -> (u16, Value) {
    let body = serde_json::to_vec(&Event::Domain { events, through }).unwrap();
    let r = post_signed(from, to, protocol::EVENT_PATH, body).await;
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn hostile_batches_are_refused_or_cut_and_duplicates_processed_once() {
    let Pair { master, spoke, .. } = pair(|w| common::grant(&[w], false, None)).await;
    let me = spoke.state.instance_id;
    let event = |id: i64, instance: Uuid| DomainEvent {
        id,
        instance,
        kind: "task.created".into(),
        workspace: Uuid::new_v4(),
        object: Uuid::new_v4(),
        changed: Vec::new(),
        at: "2026-01-01T00:00:00Z".into(),
    };
    let base = 1_000_000;
    // Over the body limit: refused before it is read.
    let mut huge = event(base, me);
    huge.changed = vec!["x".repeat(60); 5_000];
    let (status, _) = send_batch(&spoke, &master, vec![huge], base).await;
    assert_eq!(status, 413);
    // Over the count limit, or out of order: 400, nothing recorded.
    let many = (1..=protocol::MAX_EVENT_BATCH as i64 + 1)
        .map(|i| event(base + i, me))
        .collect();
    let (status, answer) = send_batch(&spoke, &master, many, base + 1_000).await;
    assert_eq!(
        (status, answer["errors"][0]["extensions"]["code"].as_str()),
        (400, Some("BAD_REQUEST"))
    );
    let (status, _) = send_batch(
        &spoke,
        &master,
        vec![event(base + 2, me), event(base + 1, me)],
        base + 2,
    )
    .await;
    assert_eq!(status, 400);
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM received_events WHERE id >= $1")
            .bind(base)
            .fetch_one(&mut master.admin().await)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 0);
    // An event claiming another instance is dropped; the rest is recorded.
    let batch = vec![event(base + 1, Uuid::new_v4()), event(base + 2, me)];
    let (status, answer) = send_batch(&spoke, &master, batch.clone(), base + 2).await;
    assert_eq!(
        (status, &answer["processed"], &answer["dropped"]),
        (200, &json!(base + 2), &json!(1))
    );
    assert_eq!(count().await, 1);
    // The same batch again: acknowledged, processed no second time.
    let (status, answer) = send_batch(&spoke, &master, batch, base + 2).await;
    assert_eq!((status, &answer["processed"]), (200, &json!(base + 2)));
    assert_eq!(count().await, 1);
}
