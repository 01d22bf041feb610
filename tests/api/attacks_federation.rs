//! Attacks from a malicious or compromised peer on what a federated request
//! carries: who it acts for, how far it travels, and what its answer claims
//! (issue 10, items 1, 3, 7, 10, 11 and 14). The hostile peer is either a
//! real instance whose signing key crafts the requests (a compromised peer)
//! or a small HTTPS server in the test speaking the protocol.

use crate::common;

use common::{TestApp, code, codes, peer_with, spawn_instance, spawn_instance_with};
use mosaic::federation::grant::Terms;
use mosaic::federation::protocol::{self, Actor, Envelope, SubRequest};
use serde_json::{Value, json};
use uuid::Uuid;

fn id(app: &TestApp) -> Uuid {
    app.state.federation.instance_id
}

/// Signs `body` as `from` (its real key) and POSTs it to `to`.
async fn send_signed(
    from: &TestApp,
    to: &TestApp,
    path: &str,
    query: &str,
    variables: Value,
    envelope: Envelope,
) -> (u16, Value) {
    let body = serde_json::to_vec(&SubRequest {
        query: query.into(),
        variables,
        envelope,
    })
    .unwrap();
    let response = common::post_signed(from, to, path, body).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

fn envelope_from(from: &TestApp, actor: Option<Actor>) -> Envelope {
    Envelope {
        visited: vec![id(from).to_string()],
        exclude: Vec::new(),
        hop_limit: 3,
        deadline_ms: 5_000,
        actor,
        traceparent: None,
    }
}

fn titles(data: &Value) -> Vec<String> {
    let mut out: Vec<String> = data["tasks"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {data}"))
        .iter()
        .map(|e| e["node"]["title"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// mallory → work → hq. hq grants work one workspace, read-write, limited to
/// work's user alice; work grants mallory one workspace with the given terms.
struct Chain {
    mallory: TestApp,
    work: TestApp,
    hq: TestApp,
    /// alice's global User ID on work.
    alice: String,
    hq_task: String,
    work_ws: String,
}

impl Chain {
    /// A request mallory signs and sends to work, naming `actor`.
    async fn mallory_sends(&self, path: &str, query: &str, variables: Value, actor: Option<Actor>) -> (u16, Value) {
        let envelope = envelope_from(&self.mallory, actor);
        send_signed(&self.mallory, &self.work, path, query, variables, envelope).await
    }
}

async fn chain(read_write: bool, forward: bool) -> Chain {
    let (mallory, work, hq) = tokio::join!(spawn_instance("mallory"), spawn_instance("work"), spawn_instance("hq"));
    let (alice_id, _) = work.user("alice@work.example").await;
    let alice = format!("User:{}:{alice_id}", id(&work));
    let (_, work_token) = work.user("owner@work.example").await;
    let work_ws = work.create_workspace(&work_token, "work shared").await;
    work.create_task(&work_token, &work_ws, "work task").await;
    let (_, hq_token) = hq.user("owner@hq.example").await;
    let hq_ws = hq.create_workspace(&hq_token, "hq secrets").await;
    let hq_task = hq.create_task(&hq_token, &hq_ws, "hq task").await;
    peer_with(
        &work,
        &hq,
        Terms {
            users: Some(vec![alice.clone()]),
            forward: true,
            ..common::grant(&[common::local_id(&hq_ws)], true, None)
        },
    )
    .await;
    peer_with(
        &mallory,
        &work,
        Terms {
            forward,
            ..common::grant(&[common::local_id(&work_ws)], read_write, None)
        },
    )
    .await;
    Chain {
        mallory,
        work,
        hq,
        alice,
        hq_task,
        work_ws,
    }
}

async fn hq_title(hq: &TestApp, task: &str) -> String {
    sqlx::query_scalar("SELECT title FROM tasks WHERE id = $1")
        .bind(common::local_id(task))
        .fetch_one(&mut hq.admin().await)
        .await
        .unwrap()
}

const ALL_TASKS: &str = "{ tasks(first: 50, scope: {all: true}) { edges { node { title instance { name } } } } }";

/// Item 1: a peer names a user of the instance it talks to; that instance
/// must not vouch for them onward (hq's grant is limited to that user).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_cannot_act_as_a_user_of_the_instance_it_talks_to() {
    let c = chain(true, true).await;
    let alice = Actor {
        user: c.alice.clone(),
        email: Some("alice@work.example".into()),
    };
    // Read: refused at work, which is the only instance that may name alice.
    let (status, body) = c
        .mallory_sends(protocol::QUERY_PATH, ALL_TASKS, json!({}), Some(alice.clone()))
        .await;
    assert_eq!((status, code(&body).as_str()), (400, "BAD_REQUEST"), "{body}");
    assert!(body.get("data").is_none(), "{body}");

    // Write: the same claim on a COMMAND to hq's task through work.
    let update = "mutation($id: ID!) { updateTask(input: {id: $id, title: \"owned\"}) { title } }";
    let (status, body) = c
        .mallory_sends(protocol::COMMAND_PATH, update, json!({ "id": c.hq_task }), Some(alice))
        .await;
    assert_eq!((status, code(&body).as_str()), (400, "BAD_REQUEST"), "{body}");
    assert_eq!(hq_title(&c.hq, &c.hq_task).await, "hq task");
}

/// Item 1: mallory's own user, relayed by work, is vouched for by nobody:
/// hq's grant limited to alice does not cover it, and no write is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relayed_actor_satisfies_no_grant_and_writes_never_travel_on() {
    let c = chain(true, true).await;
    let mine = Actor {
        user: format!("User:{}:{}", id(&c.mallory), Uuid::new_v4()),
        email: Some("alice@work.example".into()),
    };
    let (status, body) = c
        .mallory_sends(protocol::QUERY_PATH, ALL_TASKS, json!({}), Some(mine.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(titles(&body["data"]), ["work task"], "no hq rows: {body}");
    let hq = id(&c.hq).to_string();
    let refused: Vec<(&str, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["extensions"]["instance"].as_str().unwrap(),
                e["extensions"]["peerCode"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(refused, [(hq.as_str(), "GRANT_DENIED")], "{body}");

    let update = "mutation($id: ID!) { updateTask(input: {id: $id, title: \"owned\"}) { title } }";
    let (status, body) = c
        .mallory_sends(protocol::COMMAND_PATH, update, json!({ "id": c.hq_task }), Some(mine))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(codes(&body), ["FORBIDDEN"], "{body}");
    assert_eq!(hq_title(&c.hq, &c.hq_task).await, "hq task");
}

/// Item 1: without the grant's forward option (the default), a peer's
/// request reaches this instance only: no rows, names or ids of its peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_reaches_no_further_unless_its_grant_says_so() {
    let c = chain(false, false).await;
    let (status, body) = c.mallory_sends(protocol::QUERY_PATH, ALL_TASKS, json!({}), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(titles(&body["data"]), ["work task"], "{body}");
    assert!(body.get("errors").is_none(), "hq is not even named: {body}");
    assert!(
        !body.to_string().contains(&id(&c.hq).to_string()),
        "nothing reveals hq: {body}"
    );
    // By id or by name, hq stays out of reach.
    let (_, body) = c
        .mallory_sends(
            protocol::QUERY_PATH,
            "query($id: ID!) { node(id: $id) { id } }",
            json!({ "id": c.hq_task }),
            None,
        )
        .await;
    assert_eq!(codes(&body), ["FORBIDDEN"], "{body}");
    let (_, body) = c
        .mallory_sends(
            protocol::QUERY_PATH,
            "{ tasks(scope: {instances: [\"hq\"]}) { edges { node { title } } } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(titles(&body["data"]), Vec::<String>::new(), "{body}");
    assert_eq!(codes(&body), ["UNKNOWN_INSTANCE"], "{body}");
    // Work's own workspace stays readable.
    let (_, body) = c
        .mallory_sends(
            protocol::QUERY_PATH,
            "query($w: ID!) { workspace(id: $w) { name } }",
            json!({ "w": c.work_ws }),
            None,
        )
        .await;
    assert_eq!(body["data"]["workspace"]["name"], "work shared", "{body}");
}

/// A hostile peer: an HTTPS server (the test CA's certificate) that answers
/// every QUERY with what `answer` makes of the request, registered on
/// `master` as an active peer named `name`. Returns its instance id.
async fn hostile_peer(
    master: &TestApp,
    name: &str,
    answer: impl Fn(&SubRequest) -> Value + Clone + Send + Sync + 'static,
) -> (Uuid, tokio::task::AbortHandle) {
    hostile_peer_async(master, name, move |request| {
        let answer = answer.clone();
        async move { answer(&request) }
    })
    .await
}

/// `hostile_peer` whose answer may take its time.
async fn hostile_peer_async<F>(
    master: &TestApp,
    name: &str,
    answer: impl Fn(SubRequest) -> F + Clone + Send + Sync + 'static,
) -> (Uuid, tokio::task::AbortHandle)
where
    F: std::future::Future<Output = Value> + Send + 'static,
{
    let pki = common::pki();
    let tls = mosaic::federation::tls::server_config(&pki.cert, &pki.key).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let router = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let answer = answer.clone();
        async move {
            let request: SubRequest = serde_json::from_slice(&body).unwrap();
            axum::Json(answer(request).await)
        }
    });
    let server = tokio::spawn(async move {
        let _ = axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))
            .unwrap()
            .serve(router.into_make_service())
            .await;
    });
    let id = common::register_active_peer(master, name, &url).await;
    (id, server.abort_handle())
}

/// A task row as a peer's answer carries it.
fn task_edge(id: &str, instance: &str, title: &str) -> Value {
    let ws = format!("Workspace:{instance}:{}", Uuid::new_v4());
    json!({ "cursor": Uuid::new_v4().to_string(), "node": {
        "id": id, "title": title, "description": null, "status": "TODO", "priority": "HIGH",
        "dueDate": null, "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
        "instance": { "id": instance, "name": "whoever" },
        "workspace": { "id": ws, "name": "w", "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z" },
        "project": null, "assignee": null } })
}

fn instances_of(body: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = body["data"]["tasks"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks: {body}"))
        .iter()
        .map(|e| {
            (
                e["node"]["title"].as_str().unwrap().to_string(),
                e["node"]["instance"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Item 3: rows that claim this instance's own ids (with false titles) or
/// another peer's are dropped and the peer reported; its own rows stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_claiming_other_instances_never_reach_the_merged_view() {
    let (master, honest) = tokio::join!(spawn_instance("master"), spawn_instance("honest"));
    let (_, token) = master.user("ann@master.example").await;
    let ws = master.create_workspace(&token, "mine").await;
    let own_task = master.create_task(&token, &ws, "my task").await;
    let (_, h_token) = honest.user("owner@honest.example").await;
    let h_ws = honest.create_workspace(&h_token, "shared").await;
    let h_task = honest.create_task(&h_token, &h_ws, "honest task").await;
    common::peer(&master, &honest, &[&h_ws], false).await;
    let me = id(&master).to_string();
    let other = id(&honest).to_string();
    let slot: std::sync::Arc<std::sync::OnceLock<Uuid>> = Default::default();
    let (evil, _server) = hostile_peer(&master, "evil", {
        let (me, other, slot) = (me.clone(), other.clone(), slot.clone());
        move |_request: &SubRequest| {
            let evil = slot.get().unwrap().to_string();
            json!({ "data": { "tasks": {
                "edges": [
                    task_edge(&format!("Task:{evil}:{}", Uuid::new_v4()), &evil, "evil's own task"),
                    task_edge(&own_task, &me, "forged copy of my task"),
                    task_edge(&h_task, &other, "forged copy of honest's task"),
                    task_edge(&format!("Task:{evil}:{}", Uuid::new_v4()), &me, "evil row dressed as mine"),
                ],
                "pageInfo": { "hasNextPage": false } } },
                // It even claims to have reached the others on this request.
                "extensions": { "federation": { "instances": [
                    { "id": me, "name": "master", "status": "succeeded" },
                    { "id": other, "name": "honest", "status": "succeeded" } ] } } })
        }
    })
    .await;
    slot.set(evil).unwrap();

    let body = master
        .gql(
            &token,
            "{ tasks(first: 50, scope: {all: true}) { edges { node { title instance { id } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        instances_of(&body),
        {
            let mut v = vec![
                ("evil's own task".to_string(), evil.to_string()),
                ("honest task".to_string(), other.clone()),
                ("my task".to_string(), me.clone()),
            ];
            v.sort();
            v
        },
        "{body}"
    );
    let errors: Vec<(String, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["extensions"]["code"].as_str().unwrap().to_string(),
                e["extensions"]["instance"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(errors, [("PEER_BAD_RESPONSE".to_string(), evil.to_string())], "{body}");
    let summary = &body["extensions"]["federation"];
    assert_eq!(
        summary["total"], 3,
        "evil cannot report for master or honest: {summary}"
    );
}

/// Item 3: a `node` answer must be the object asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_answer_must_carry_the_id_asked_for() {
    let master = spawn_instance("master").await;
    let (_, token) = master.user("ann@master.example").await;
    let ws = master.create_workspace(&token, "mine").await;
    let own_task = master.create_task(&token, &ws, "my task").await;
    let slot: std::sync::Arc<std::sync::OnceLock<Uuid>> = Default::default();
    let (evil, _server) = hostile_peer(&master, "evil", {
        let slot = slot.clone();
        move |_request: &SubRequest| {
            let evil = slot.get().unwrap();
            json!({ "data": { "node": {
                "__typename": "Task",
                "id": format!("Task:{evil}:{}", Uuid::new_v4()),
                "title": "not what you asked for", "description": null, "status": "TODO", "priority": "HIGH",
                "dueDate": null, "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
                "instance": { "id": evil.to_string(), "name": "evil" },
                "workspace": { "id": format!("Workspace:{evil}:{}", Uuid::new_v4()), "name": "w",
                    "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z" },
                "project": null, "assignee": null } } })
        }
    })
    .await;
    slot.set(evil).unwrap();
    let asked = format!("Task:{evil}:{}", Uuid::new_v4());
    let body = master
        .gql(
            &token,
            "query($id: ID!) { node(id: $id) { id ... on Task { title } } }",
            json!({ "id": asked }),
        )
        .await;
    assert!(body["data"]["node"].is_null(), "{body}");
    assert_eq!(codes(&body), ["PEER_BAD_RESPONSE"], "{body}");
    // And our own id stays ours: the peer is never asked for it.
    let body = master
        .gql(
            &token,
            "query($id: ID!) { node(id: $id) { id ... on Task { title } } }",
            json!({ "id": own_task }),
        )
        .await;
    assert_eq!(body["data"]["node"]["title"], "my task", "{body}");
}

/// Item 14: a peer that says it has more but gives nothing cannot keep a
/// client paging forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_with_no_rows_is_exhausted_whatever_it_claims() {
    let master = spawn_instance("master").await;
    let (_, token) = master.user("ann@master.example").await;
    let ws = master.create_workspace(&token, "mine").await;
    for i in 0..3 {
        master.create_task(&token, &ws, &format!("task {i}")).await;
    }
    let (_evil, _server) = hostile_peer(
        &master,
        "evil",
        |_request: &SubRequest| json!({ "data": { "tasks": { "edges": [], "pageInfo": { "hasNextPage": true } } } }),
    )
    .await;
    let query = "query($after: String) { tasks(first: 2, after: $after, scope: {all: true}) {
        edges { node { title } } pageInfo { hasNextPage endCursor } } }";
    let mut after = Value::Null;
    let mut seen = Vec::new();
    let mut finished = false;
    for _ in 0..5 {
        let body = master.gql(&token, query, json!({ "after": after })).await;
        let tasks = &body["data"]["tasks"];
        for e in tasks["edges"].as_array().unwrap() {
            seen.push(e["node"]["title"].as_str().unwrap().to_string());
        }
        if tasks["pageInfo"]["hasNextPage"] == false {
            finished = true;
            break;
        }
        after = tasks["pageInfo"]["endCursor"].clone();
    }
    assert!(finished, "paging never ended");
    assert_eq!(seen, ["task 0", "task 1", "task 2"]);
}

/// A peer asked again for more of a page (it held more than its share)
/// cannot slip rows in: a second answer out of place loses the peer all
/// its rows, and says so, while the other sources' rows stay in order.
/// Asked for more, it is asked from its own last row, for what the page
/// can still take.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_answer_out_of_place_drops_the_peers_rows() {
    let master = spawn_instance("master").await;
    let (_, token) = master.user("ann@master.example").await;
    let ws = master.create_workspace(&token, "mine").await;
    for i in 0..3 {
        master.create_task(&token, &ws, &format!("m{i}")).await;
    }
    let (_quiet, _q) = hostile_peer(
        &master,
        "quiet",
        |_request: &SubRequest| json!({ "data": { "tasks": { "edges": [], "pageInfo": { "hasNextPage": false } } } }),
    )
    .await;
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(Value, Value)>>> = Default::default();
    let slot: std::sync::Arc<std::sync::OnceLock<Uuid>> = Default::default();
    let (evil, _e) = hostile_peer(&master, "evil", {
        let (seen, slot) = (seen.clone(), slot.clone());
        move |request: &SubRequest| {
            let evil = slot.get().unwrap().to_string();
            let (first, after) = (request.variables["first"].clone(), request.variables["after"].clone());
            seen.lock().unwrap().push((first.clone(), after.clone()));
            // Each time from "a00", whatever position it was asked from.
            let edges: Vec<Value> = (0..first.as_u64().unwrap())
                .map(|i| task_edge(&format!("Task:{evil}:{}", Uuid::new_v4()), &evil, &format!("a{i:02}")))
                .collect();
            json!({ "data": { "tasks": { "edges": edges, "pageInfo": { "hasNextPage": true } } } })
        }
    })
    .await;
    slot.set(evil).unwrap();
    let body = master
        .gql(
            &token,
            "{ tasks(first: 20, orderBy: {field: TITLE, direction: ASC}, scope: {all: true}) { edges { node { title } } } }",
            json!({}),
        )
        .await;
    let titles: Vec<&str> = body["data"]["tasks"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["m0", "m1", "m2"], "{body}");
    let error = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["extensions"]["instance"] == evil.to_string())
        .unwrap_or_else(|| panic!("evil is reported: {body}"));
    assert_eq!(error["extensions"]["code"], "PEER_BAD_RESPONSE", "{body}");
    assert!(error["message"].as_str().unwrap().contains("out of order"), "{body}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "asked twice: {seen:?}");
    assert_eq!(seen[0], (json!(14), Value::Null), "its share of 20 among three");
    let second = &seen[1];
    assert_eq!(
        second.0,
        json!(6),
        "what the page can still take from it: 20 less its 14"
    );
    assert!(second.1.is_string(), "from its last row: {seen:?}");
}

/// Item 7: an anonymous CONNECT naming itself like an active peer does not
/// make that name ambiguous, before or after it is rejected; and no second
/// active peer may take the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_cannot_be_squatted() {
    let (master, hq, squatter) = tokio::join!(spawn_instance("master"), spawn_instance("hq"), spawn_instance("hq"));
    let (_, token) = master.user("ann@master.example").await;
    let (_, hq_token) = hq.user("owner@hq.example").await;
    let hq_ws = hq.create_workspace(&hq_token, "hq ws").await;
    hq.create_task(&hq_token, &hq_ws, "hq task").await;
    common::peer(&master, &hq, &[&hq_ws], false).await;
    let named = "{ tasks(scope: {instances: [\"hq\"]}) { edges { node { title instance { id } } } } }";
    let check = |body: Value| {
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(titles(&body["data"]), ["hq task"], "{body}");
    };
    check(master.gql(&token, named, json!({})).await);
    // The squatter asks to connect: a pending peer called hq.
    let _ = squatter.state.federation.connect(&master.base, "squatter").await;
    let pending = mosaic::federation::registry::get(&master.state.federation.pool, id(&squatter))
        .await
        .unwrap()
        .expect("the squatter is registered");
    assert_eq!(
        (pending.name.as_str(), pending.inbound_state.as_str()),
        ("hq", "pending")
    );
    check(master.gql(&token, named, json!({})).await);
    master.state.federation.reject(id(&squatter), "test").await.unwrap();
    check(master.gql(&token, named, json!({})).await);
    // Our admin cannot make it a second active "hq" either.
    let err = master
        .state
        .federation
        .connect(&squatter.base, "admin")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unique"), "{err}");
    check(master.gql(&token, named, json!({})).await);
}

/// Issue 12: every id handed out is usable where it was handed out. From
/// home (home → work → hq, work forwarding home's reads), hq's objects are
/// listed, fetched by id and named in scopes through work; writes to them
/// are refused at once, since a COMMAND never travels on a peer's behalf.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_and_names_behind_a_peer_are_routed_through_it() {
    let (home, work, hq) = tokio::join!(spawn_instance("home"), spawn_instance("work"), spawn_instance("hq"));
    let (_, token) = home.user("ann@home.example").await;
    let (_, w_token) = work.user("owner@work.example").await;
    let w_ws = work.create_workspace(&w_token, "work ws").await;
    work.create_task(&w_token, &w_ws, "work task").await;
    let (_, hq_token) = hq.user("owner@hq.example").await;
    let hq_ws = hq.create_workspace(&hq_token, "hq ws").await;
    hq.create_task(&hq_token, &hq_ws, "hq task").await;
    common::peer(&work, &hq, &[&hq_ws], false).await;
    common::peer_forwarding(&home, &work, &[&w_ws]).await;

    let listed = home.gql_ok(&token, ALL_TASKS_WITH_IDS, json!({})).await;
    let hq_task = listed["tasks"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"]["title"] == "hq task")
        .unwrap_or_else(|| panic!("hq's task is listed through work: {listed}"))["node"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let node = home
        .gql_ok(
            &token,
            "query($id: ID!) { node(id: $id) { id ... on Task { title instance { name } workspace { name } } } }",
            json!({ "id": hq_task }),
        )
        .await;
    assert_eq!(node["node"]["id"], hq_task.as_str(), "{node}");
    assert_eq!(node["node"]["title"], "hq task", "{node}");
    assert_eq!(node["node"]["instance"]["name"], "hq", "{node}");
    let ws = home
        .gql_ok(
            &token,
            "query($id: ID!) { workspace(id: $id) { name } }",
            json!({ "id": hq_ws }),
        )
        .await;
    assert_eq!(ws["workspace"]["name"], "hq ws", "{ws}");

    // Named: hq is reached through work, and work's own rows are not asked for.
    let named = home
        .gql(
            &token,
            "{ tasks(scope: {instances: [\"hq\", \"nowhere\"]}) { edges { node { title } } } }",
            json!({}),
        )
        .await;
    assert_eq!(titles(&named["data"]), ["hq task"], "{named}");
    let errors: Vec<(&str, &str)> = named["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["extensions"]["code"].as_str().unwrap(),
                e["extensions"]["instance"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(errors, [("UNKNOWN_INSTANCE", "nowhere")], "{named}");

    // Writes are not relayed: refused here, nothing sent, hq unchanged.
    let update = home
        .gql(
            &token,
            "mutation($id: ID!) { updateTask(input: {id: $id, title: \"changed\"}) { title } }",
            json!({ "id": hq_task }),
        )
        .await;
    assert_eq!(codes(&update), ["BAD_USER_INPUT"], "{update}");
    assert!(
        update["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("direct peers"),
        "{update}"
    );
    assert_eq!(hq_title(&hq, &hq_task).await, "hq task");
}

const ALL_TASKS_WITH_IDS: &str = "{ tasks(first: 50, scope: {all: true}) { edges { node { id title } } } }";

/// Item 10: a cursor is the last row's place in the global order (ordering,
/// sort key, instance, id), the same small value whatever the number of
/// sources, sealed with a MAC; forged, foreign and oversized cursors are
/// refused, and a peer's rows must come after the position it was asked
/// to resume from.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cursors_are_small_sealed_positions_that_do_not_amplify() {
    use mosaic::graphql::pagination::{Cursor, CursorKey, MAX_CURSOR_BYTES};
    use std::sync::{Arc, Mutex, OnceLock};
    let master = spawn_instance("master").await;
    let (_, token) = master.user("ann@master.example").await;
    let ws = master.create_workspace(&token, "mine").await;
    for i in 0..3 {
        master.create_task(&token, &ws, &format!("task {i}")).await;
    }
    // A peer whose rows carry 10 KiB cursors of its own, and that answers
    // every page with the same rows, whatever position it is asked for.
    let evil_id = Arc::new(OnceLock::<String>::new());
    let asked_after = Arc::new(Mutex::new(Vec::<Value>::new()));
    let (evil, _server) = hostile_peer(&master, "evil", {
        let (evil_id, asked_after) = (evil_id.clone(), asked_after.clone());
        move |request: &SubRequest| {
            asked_after.lock().unwrap().push(request.variables["after"].clone());
            let me = evil_id.get().cloned().unwrap_or_default();
            let edges: Vec<Value> = ["evil a", "evil b"]
                .iter()
                .map(|title| {
                    let mut edge = task_edge(&format!("Task:{me}:{}", Uuid::new_v4()), &me, title);
                    edge["cursor"] = json!("c".repeat(10 * 1024));
                    edge
                })
                .collect();
            json!({ "data": { "tasks": { "edges": edges, "pageInfo": { "hasNextPage": false } } } })
        }
    })
    .await;
    evil_id.set(evil.to_string()).unwrap();
    let query = "query($after: String) { tasks(first: 2, after: $after, orderBy: {field: TITLE}, scope: {all: true}) {
        edges { cursor node { title } } pageInfo { hasNextPage endCursor } } }";
    let body = master.gql(&token, query, json!({ "after": null })).await;
    let edges = body["data"]["tasks"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    let titles: Vec<&str> = edges.iter().map(|e| e["node"]["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["evil a", "evil b"], "{body}");
    for e in edges {
        assert!(e["cursor"].as_str().unwrap().len() < 256, "{e}");
    }
    // The next page: the peer gets the position plain and answers the same
    // rows again, which come before it, so its page is not used.
    let end = body["data"]["tasks"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_string();
    let body = master.gql(&token, query, json!({ "after": end })).await;
    let titles: Vec<&str> = body["data"]["tasks"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| e["node"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["task 0", "task 1"], "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "PEER_BAD_RESPONSE", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["instance"], evil.to_string(), "{body}");
    let plain = asked_after.lock().unwrap().last().cloned().unwrap();
    let (body_part, _mac) = end.split_once('.').expect("sealed");
    assert_eq!(plain, json!(body_part), "peers receive the position without our MAC");
    // Refused: oversized, unsealed, sealed by another instance's key, altered.
    let position: Cursor = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body_part).unwrap(),
    )
    .unwrap();
    let foreign = CursorKey::new(&mosaic::secrets::Secret("another instance's secret key".into()));
    let moved = Cursor {
        k: Some("a".into()),
        ..position.clone()
    };
    let (_, mac) = end.split_once('.').unwrap();
    for after in [
        "x".repeat(MAX_CURSOR_BYTES + 1),
        position.plain(),
        foreign.seal(&position),
        format!("{}.{mac}", moved.plain()),
    ] {
        let body = master.gql(&token, query, json!({ "after": after })).await;
        assert_eq!(codes(&body), ["BAD_USER_INPUT"], "{body}");
        assert!(body["data"].is_null(), "{body}");
    }
}

/// QUERYs `app` answered with 200.
fn queries_answered(app: &TestApp) -> u64 {
    app.state
        .metrics
        .http_requests
        .get_or_create(&mosaic::metrics::HttpLabels {
            method: "POST".into(),
            route: protocol::QUERY_PATH.into(),
            status: 200,
        })
        .get()
}

/// `n` aliases of `field`.
fn aliased(n: usize, field: &str) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("a{i}: {field}")).collect();
    format!("{{ {} }}", fields.join(" "))
}

/// Item 11: nested lists of remote workspaces travel in the scoped
/// subquery: one per peer and alias, not one per workspace and field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_fields_of_remote_workspaces_come_in_one_subquery() {
    let (master, work) = tokio::join!(spawn_instance("master"), spawn_instance("work"));
    let (_, master_token) = master.user("ann@master.example").await;
    let (_, token) = work.user("bob@work.example").await;
    let mut workspaces = Vec::new();
    for i in 0..5 {
        let ws = work.create_workspace(&token, &format!("w{i}")).await;
        for (mutation, name) in [("createProject", format!("p{i}")), ("createTeam", format!("t{i}"))] {
            let query = format!(
                "mutation($w: ID!, $n: String!) {{ {mutation}(input: {{workspaceId: $w, name: $n}}) {{ id }} }}"
            );
            work.gql_ok(&token, &query, json!({ "w": ws, "n": name })).await;
        }
        workspaces.push(ws);
    }
    let granted: Vec<&str> = workspaces.iter().map(String::as_str).collect();
    common::peer(&master, &work, &granted, false).await;
    let before = queries_answered(&work);
    let query = aliased(
        3,
        "workspaces(scope: {all: true}) { name members { role } projects { name } teams { name } }",
    );
    let body = master.gql(&master_token, &query, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(queries_answered(&work) - before, 3, "one subquery per alias");
    for alias in ["a0", "a1", "a2"] {
        let list = body["data"][alias].as_array().unwrap();
        assert_eq!(list.len(), 5, "{body}");
        for (i, w) in list.iter().enumerate() {
            assert_eq!(w["name"], format!("w{i}"));
            assert_eq!(w["projects"], json!([{ "name": format!("p{i}") }]), "{w}");
            assert_eq!(w["teams"], json!([{ "name": format!("t{i}") }]), "{w}");
            assert_eq!(w["members"], json!([{ "role": "OWNER" }]), "{w}");
        }
    }
    // Nested fields of one remote workspace reached through many rows ask
    // its owner once.
    for i in 0..5 {
        work.create_task(&token, &workspaces[0], &format!("task {i}")).await;
    }
    let before = queries_answered(&work);
    let body = master
        .gql_ok(
            &master_token,
            "{ tasks(first: 10, scope: {all: true}) { edges { node { workspace { members { role } } } } } }",
            json!({}),
        )
        .await;
    let edges = body["tasks"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 5, "{body}");
    assert_eq!(
        queries_answered(&work) - before,
        2,
        "the list, then the workspace's members once"
    );
}

/// Item 11: one request sends at most `federation.max_subrequests` signed
/// requests and at most `max_parallel_subrequests` at once; the rest are
/// refused with SUBREQUEST_LIMIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subrequests_are_bounded_in_number_and_in_flight() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let master = spawn_instance_with("master", |c| {
        c.federation.max_subrequests = 8;
        c.federation.max_parallel_subrequests = 2;
    })
    .await;
    let (_, token) = master.user("ann@master.example").await;
    let received = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let (in_flight, _) = tokio::sync::watch::channel(0usize);
    let (evil, _server) = hostile_peer_async(&master, "evil", {
        let (received, most_at_once, in_flight) = (received.clone(), most_at_once.clone(), in_flight.clone());
        move |_request| {
            let (received, most_at_once, in_flight) = (received.clone(), most_at_once.clone(), in_flight.clone());
            async move {
                received.fetch_add(1, Ordering::SeqCst);
                in_flight.send_modify(|n| *n += 1);
                most_at_once.fetch_max(*in_flight.borrow(), Ordering::SeqCst);
                // Held until a third request overlaps it, which the bound
                // must prevent, or for a while.
                let mut rx = in_flight.subscribe();
                let _ = tokio::time::timeout(std::time::Duration::from_millis(300), rx.wait_for(|n| *n > 2)).await;
                in_flight.send_modify(|n| *n -= 1);
                json!({ "data": { "tasks": { "edges": [], "pageInfo": { "hasNextPage": false } } } })
            }
        }
    })
    .await;
    let tasks = "tasks(first: 5, scope: {all: true}) { edges { node { title } } }";
    let body = master.gql(&token, &aliased(6, tasks), json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(received.load(Ordering::SeqCst), 6);
    assert_eq!(
        most_at_once.load(Ordering::SeqCst),
        2,
        "two in flight at once, never more"
    );
    received.store(0, Ordering::SeqCst);
    let body = master.gql(&token, &aliased(10, tasks), json!({})).await;
    assert_eq!(received.load(Ordering::SeqCst), 8, "{body}");
    let refused: Vec<&Value> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["extensions"]["code"] == "SUBREQUEST_LIMIT")
        .collect();
    assert_eq!(refused.len(), 1, "said once per instance: {body}");
    assert_eq!(refused[0]["extensions"]["instance"], evil.to_string());
    assert_eq!(body["data"]["a9"]["edges"], json!([]), "the other rows stay: {body}");
}

/// Item 11: fields that may send a subrequest count in the complexity
/// limit, so nesting them under a long list is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_fields_count_in_the_complexity_limit() {
    let master = spawn_instance("master").await;
    let (_, token) = master.user("ann@master.example").await;
    let nested = "{ tasks(first: 100, scope: {all: true}) { edges { node { workspace {
        members { role } projects { name } teams { name } events(first: 20) { edges { node { title } } } } } } } }";
    let body = master.gql(&token, nested, json!({})).await;
    assert_eq!(codes(&body), ["QUERY_TOO_COMPLEX"], "{body}");
    // The same rows without the fields that would forward are fine.
    let flat = "{ tasks(first: 100, scope: {all: true}) { edges { node { workspace { name } } } } }";
    master.gql_ok(&token, flat, json!({})).await;
}

/// Issue 11: a peer's rows are read by their wire types: a field the
/// fragment selects but the answer lacks is refused, not defaulted (the
/// page is unusable), and a row with a nested object of another instance
/// is dropped (provenance), while the peer's other rows stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_answer_missing_a_field_is_refused_not_defaulted() {
    let master = spawn_instance("master").await;
    let (_, token) = master.user("ann@master.example").await;
    let ws = master.create_workspace(&token, "mine").await;
    master.create_task(&token, &ws, "my task").await;
    let me = id(&master).to_string();
    type Spoil = fn(&mut Value, &str);
    let cases: [(&str, Spoil, &str); 4] = [
        (
            "statusless",
            |node, _| {
                node.as_object_mut().unwrap().remove("status");
            },
            "status",
        ),
        (
            "lacking",
            |node, _| {
                node.as_object_mut().unwrap().remove("description");
            },
            "description",
        ),
        (
            "wsless",
            |node, _| {
                node.as_object_mut().unwrap().remove("workspace");
            },
            "workspace",
        ),
        (
            "foreign",
            |node, me| node["workspace"]["id"] = json!(format!("Workspace:{me}:{}", Uuid::new_v4())),
            "does not speak for",
        ),
    ];
    let mut expected = Vec::new();
    let mut kept = vec![("my task".to_string(), me.clone())];
    for (name, spoil, why) in cases {
        let slot: std::sync::Arc<std::sync::OnceLock<Uuid>> = Default::default();
        let (evil, _server) = hostile_peer(&master, name, {
            let (slot, me) = (slot.clone(), me.clone());
            move |_request: &SubRequest| {
                let evil = slot.get().unwrap().to_string();
                let mut spoiled = task_edge(&format!("Task:{evil}:{}", Uuid::new_v4()), &evil, "spoiled");
                spoil(&mut spoiled["node"], &me);
                json!({ "data": { "tasks": {
                    "edges": [task_edge(&format!("Task:{evil}:{}", Uuid::new_v4()), &evil, "fine"), spoiled],
                    "pageInfo": { "hasNextPage": false } } } })
            }
        })
        .await;
        slot.set(evil).unwrap();
        expected.push((evil.to_string(), why));
        if name == "foreign" {
            kept.push(("fine".to_string(), evil.to_string()));
        }
    }
    let body = master
        .gql(
            &token,
            "{ tasks(first: 50, scope: {all: true}) { edges { node { title status description workspace { name } instance { id } } } } }",
            json!({}),
        )
        .await;
    kept.sort();
    assert_eq!(instances_of(&body), kept, "{body}");
    for (evil, why) in expected {
        let error = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["extensions"]["instance"] == evil.as_str())
            .unwrap_or_else(|| panic!("{evil} reported: {body}"));
        assert_eq!(error["extensions"]["code"], "PEER_BAD_RESPONSE", "{body}");
        assert!(error["message"].as_str().unwrap().contains(why), "{why}: {body}");
    }
}

/// The fields a query's `TaskFields` fragment selects at its top level.
fn task_fields_asked(query: &str) -> Vec<String> {
    let document = async_graphql::parser::parse_query(query).unwrap();
    let fragment = &document.fragments[&async_graphql::Name::new("TaskFields")];
    fragment
        .node
        .selection_set
        .node
        .items
        .iter()
        .filter_map(|item| match &item.node {
            async_graphql::parser::types::Selection::Field(f) => Some(f.node.name.node.to_string()),
            _ => None,
        })
        .collect()
}

/// A task's optional parts (status to assignee) are asked of a peer only
/// when the client selects them (directly or through a fragment) or the
/// page is ordered by them, and a part asked for must then be in the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_is_asked_only_for_the_parts_of_a_task_the_client_selects() {
    let master = spawn_instance("master").await;
    let (_, token) = master.user("ann@master.example").await;
    let asked: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let slot: std::sync::Arc<std::sync::OnceLock<Uuid>> = Default::default();
    let (peer, _server) = hostile_peer(&master, "peer", {
        let (asked, slot) = (asked.clone(), slot.clone());
        move |request: &SubRequest| {
            asked.lock().unwrap().push(request.query.clone());
            let peer = slot.get().unwrap().to_string();
            // Every part, whatever was asked: what was not asked is not used.
            json!({ "data": { "tasks": {
                "edges": [task_edge(&format!("Task:{peer}:{}", Uuid::new_v4()), &peer, "theirs")],
                "pageInfo": { "hasNextPage": false } } } })
        }
    })
    .await;
    slot.set(peer).unwrap();
    let parts = [
        "status",
        "priority",
        "dueDate",
        "updatedAt",
        "workspace",
        "description",
        "project",
        "assignee",
    ];
    for (order, selection, wanted) in [
        ("", "title", &[][..]),
        ("", "title description", &["description"][..]),
        ("", "title status dueDate", &["status", "dueDate"][..]),
        ("", "title workspace { name }", &["workspace"][..]),
        (
            "",
            "title project { name } assignee { email }",
            &["project", "assignee"][..],
        ),
        ("", "...T", &["assignee"][..]),
        (
            "",
            "title ... on Task { description project { id } updatedAt }",
            &["description", "project", "updatedAt"][..],
        ),
        // The key a page is ordered by is asked too: the merge compares it.
        ("orderBy: {field: UPDATED_AT}", "title", &["updatedAt"][..]),
        (
            "orderBy: {field: STATUS, direction: DESC}",
            "priority",
            &["status", "priority"][..],
        ),
        ("orderBy: {field: PRIORITY}", "priority", &["priority"][..]),
        ("orderBy: {field: DUE_DATE}", "id", &["dueDate"][..]),
        ("orderBy: {field: TITLE}", "id", &[][..]),
    ] {
        let fragment = if selection == "...T" {
            "fragment T on Task { assignee { name } }"
        } else {
            ""
        };
        let query = format!(
            "{{ tasks(first: 5, scope: {{all: true}} {order}) {{ edges {{ cursor node {{ {selection} }} }} }} }} {fragment}"
        );
        let body = master.gql(&token, &query, json!({})).await;
        assert_eq!(common::errors(&body), [], "{selection}: {body}");
        assert_eq!(
            body["data"]["tasks"]["edges"].as_array().map(Vec::len),
            Some(1),
            "{body}"
        );
        let subquery = asked.lock().unwrap().pop().expect("the peer was asked");
        let fields = task_fields_asked(&subquery);
        for part in parts {
            assert_eq!(
                fields.iter().any(|f| f == part),
                wanted.contains(&part),
                "{order} {selection}: {part} in {subquery}"
            );
        }
        // What a task cannot be without is always asked.
        for always in ["id", "title", "createdAt", "instance"] {
            assert!(
                fields.iter().any(|f| f == always),
                "{selection}: {always} in {subquery}"
            );
        }
    }
}
