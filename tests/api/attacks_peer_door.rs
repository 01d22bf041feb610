//! Attacks on the peer protocol's door (issue 10, items 2, 4, 5, 6, 9, 13),
//! each driven the way an attacker would: a hostile peer is a real HTTPS
//! server in this test (the test CA, on loopback) that speaks
//! `peers/PROTOCOL.md` with its own ed25519 key, against real instances.
//! Flood tests measure this process's memory (the instances run in it).

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TestApp, code, local_id, memory_kib, spawn_instance, spawn_instance_with};
use ed25519_dalek::SigningKey;
use mosaic::federation::document::{self, IdentityDocument, PublicKey, SignedDocument};
use mosaic::federation::protocol::{self, Envelope, Event, SubRequest};
use mosaic::federation::registry;
use mosaic::federation::signing::{self, SignatureParams};
use mosaic::federation::{keys, now_unix};
use serde_json::{Value, json};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The hostile peer
// ---------------------------------------------------------------------------

/// An instance of the attacker's: an id, a key, an HTTPS address on loopback.
struct Hostile {
    id: Uuid,
    key: SigningKey,
    url: String,
    listener: Option<std::net::TcpListener>,
}

fn random_seed() -> [u8; 32] {
    [Uuid::new_v4().into_bytes(), Uuid::new_v4().into_bytes()]
        .concat()
        .try_into()
        .unwrap()
}

fn public_key(key: &SigningKey, valid_until: Option<i64>) -> PublicKey {
    let vk = key.verifying_key();
    PublicKey {
        key_id: signing::key_id(&vk),
        public_key: URL_SAFE_NO_PAD.encode(vk.as_bytes()),
        valid_until,
    }
}

/// A signed identity document for `id`, signed with `key`.
fn document_of(id: Uuid, key: &SigningKey, name: &str, base_url: &str, old_keys: Vec<PublicKey>) -> SignedDocument {
    document::sign_document(
        IdentityDocument {
            protocol: document::PROTOCOL.into(),
            instance_id: id.to_string(),
            name: name.into(),
            base_url: base_url.into(),
            current_key: public_key(key, None),
            old_keys,
            schema_hash: "0".repeat(32),
            capabilities: vec!["connect".into(), "query".into()],
            issued_at: now_unix(),
        },
        key,
    )
}

/// A loopback listener for a server of the attacker's, and its HTTPS URL.
fn listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    (listener, url)
}

/// Serves `router` over HTTPS with the test CA's certificate.
fn serve_tls(listener: std::net::TcpListener, router: Router) {
    let pki = common::pki();
    let tls = mosaic::federation::tls::server_config(&pki.cert, &pki.key).unwrap();
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))
            .unwrap()
            .serve(router.into_make_service())
            .await
            .unwrap();
    });
}

/// A router answering `/.well-known/mosaic` with `doc`.
fn identity_route(doc: SignedDocument) -> Router {
    Router::new().route(
        protocol::WELL_KNOWN_PATH,
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    )
}

impl Hostile {
    fn new() -> Self {
        let (listener, url) = listener();
        Self {
            id: Uuid::new_v4(),
            key: SigningKey::from_bytes(&random_seed()),
            url,
            listener: Some(listener),
        }
    }

    fn document(&self) -> SignedDocument {
        document_of(self.id, &self.key, "hostile", &self.url, Vec::new())
    }

    /// Serves `router` at this peer's URL.
    fn serve(&mut self, router: Router) {
        serve_tls(self.listener.take().expect("served once"), router);
    }

    /// Serves its identity document and accepts every message (an EVENT
    /// `granted` from an approval, for one).
    fn serve_plain(&mut self) {
        let router = identity_route(self.document()).route(
            protocol::EVENT_PATH,
            post(|| async { axum::Json(json!({ "ok": true })) }),
        );
        self.serve(router);
    }

    fn params(&self, to: Uuid, path: &str, body: &[u8], key: &SigningKey) -> SignatureParams {
        let created = now_unix();
        SignatureParams {
            method: "POST".into(),
            path: path.into(),
            origin: self.id.to_string(),
            destination: to.to_string(),
            digest: signing::body_digest(body),
            created,
            expires: created + 60,
            nonce: URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes()),
            key_id: signing::key_id(&key.verifying_key()),
        }
    }

    /// A `Mosaic-Signature` header for `body`, signed with its key.
    fn sign(&self, to: &TestApp, path: &str, body: &[u8]) -> String {
        let p = self.params(to.state.instance_id, path, body, &self.key);
        signing::header_value(&p, &signing::sign(&self.key, &p))
    }

    /// Sends CONNECT with `identity`, signed with `key`.
    async fn connect_as(&self, to: &TestApp, identity: SignedDocument, key: &SigningKey) -> (u16, String) {
        let body = serde_json::to_vec(&protocol::ConnectRequest { identity }).unwrap();
        let p = self.params(to.state.instance_id, protocol::CONNECT_PATH, &body, key);
        let header = signing::header_value(&p, &signing::sign(key, &p));
        post_raw(to, protocol::CONNECT_PATH, Some(&header), body).await
    }

    /// CONNECT with its own document.
    async fn connect(&self, to: &TestApp) -> (u16, String) {
        self.connect_as(to, self.document(), &self.key).await
    }

    async fn event(&self, to: &TestApp, event: &Event) -> (u16, String) {
        let body = serde_json::to_vec(event).unwrap();
        let header = self.sign(to, protocol::EVENT_PATH, &body);
        post_raw(to, protocol::EVENT_PATH, Some(&header), body).await
    }
}

/// POSTs raw bytes to an instance; (status, body text).
async fn post_raw(to: &TestApp, path: &str, header: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut request = to
        .client
        .post(format!("{}{path}", to.base))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(h) = header {
        request = request.header(signing::HEADER, h);
    }
    let response = request.send().await.expect("request sent");
    (response.status().as_u16(), response.text().await.unwrap())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

async fn admin_token(app: &TestApp, email: &str) -> String {
    let mut conn = app.admin().await;
    mosaic::auth::users::create(&mut conn, email, None, true).await.unwrap();
    mosaic::auth::tokens::create(&mut conn, email, None).await.unwrap()
}

async fn peer_row(app: &TestApp, id: Uuid) -> Option<registry::PeerRecord> {
    registry::get(&app.state.federation.pool, id).await.unwrap()
}

async fn audit_count(app: &TestApp, id: Uuid) -> usize {
    registry::audit_log(&app.state.federation.pool, id).await.unwrap().len()
}

/// A workspace of `app` with an owner: (global ID, local id).
async fn workspace(app: &TestApp) -> (String, Uuid) {
    let (_, owner) = app
        .user(&format!("owner-{}@example.test", Uuid::new_v4().simple()))
        .await;
    let global = app.create_workspace(&owner, "shared").await;
    let local = local_id(&global);
    (global, local)
}

/// Polls `condition` every 20 ms until it holds, at most `limit`.
async fn until(limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "condition not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the wall clock's next whole second; returns it.
async fn next_second() -> i64 {
    let now = now_unix();
    until(Duration::from_secs(2), || now_unix() > now).await;
    now_unix()
}

// ---------------------------------------------------------------------------
// Item 2: answers have a size bound
// ---------------------------------------------------------------------------

const FORTY_EIGHT_MIB: usize = 48 * 1024 * 1024;

/// A peer answering every QUERY with 48 MiB of valid JSON, streamed.
fn huge_answer() -> axum::response::Response {
    const CHUNK: usize = 64 * 1024;
    let head = br#"{"data":{"tasks":null},"padding":""#.to_vec();
    let chunks = FORTY_EIGHT_MIB / CHUNK;
    let body = futures::stream::iter((0..=chunks + 1).map(move |i| {
        let bytes = if i == 0 {
            head.clone()
        } else if i <= chunks {
            vec![b'x'; CHUNK]
        } else {
            b"\"}".to_vec()
        };
        Ok::<_, std::io::Error>(axum::body::Bytes::from(bytes))
    }));
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(body))
        .unwrap()
}

#[tokio::test]
async fn huge_answers_are_cut_at_the_limit_and_the_other_rows_still_arrive() {
    let (master, beta) = tokio::join!(spawn_instance("master"), spawn_instance("beta"));
    let (_, owner) = beta.user("owner@beta.example").await;
    let shared = beta.create_workspace(&owner, "shared").await;
    beta.create_task(&owner, &shared, "beta task").await;
    common::peer(&master, &beta, &[&shared], false).await;

    // The hostile peer grants the master at once and answers with 48 MiB.
    let mut hostile = Hostile::new();
    let router = identity_route(hostile.document())
        .route(
            protocol::CONNECT_PATH,
            post(|| async { axum::Json(json!({ "state": "active" })) }),
        )
        .route(protocol::QUERY_PATH, post(|| async { huge_answer() }));
    hostile.serve(router);
    let record = master.state.federation.connect(&hostile.url, "test").await.unwrap();
    assert_eq!(record.outbound_state, "active");

    let (_, user) = master.user("user@master.example").await;
    let before = memory_kib();
    for _ in 0..2 {
        let answer = master
            .gql(
                &user,
                "{ tasks(first: 10, scope: {all: true}) { edges { node { title } } } }",
                json!({}),
            )
            .await;
        let titles: Vec<&str> = answer["data"]["tasks"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("rows arrive: {answer}"))
            .iter()
            .map(|e| e["node"]["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, ["beta task"], "{answer}");
        let errors = answer["errors"].as_array().unwrap();
        let failed: Vec<&Value> = errors
            .iter()
            .filter(|e| e["extensions"]["instance"] == hostile.id.to_string())
            .collect();
        assert_eq!(failed.len(), 1, "{answer}");
        assert_eq!(failed[0]["extensions"]["code"], "PEER_BAD_RESPONSE", "{answer}");
        let message = failed[0]["message"].as_str().unwrap();
        assert!(message.contains("exceeds 8388608 bytes"), "{message}");
    }
    let after = memory_kib();
    let grew_hwm = after.1.saturating_sub(before.1) / 1024;
    let grew_rss = after.0.saturating_sub(before.0) / 1024;
    println!(
        "two 48 MiB answers: VmRSS {} -> {} KiB (+{grew_rss} MiB), VmHWM {} -> {} KiB (+{grew_hwm} MiB)",
        before.0, after.0, before.1, after.1
    );
    assert!(grew_hwm < 40, "peak memory grew by {grew_hwm} MiB");
    assert!(grew_rss < 40, "resident memory grew by {grew_rss} MiB");
}

// ---------------------------------------------------------------------------
// Item 4: a retired key cannot take the peering over
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_retired_key_cannot_take_the_peering_over() {
    let (a, b) = tokio::join!(spawn_instance("alpha"), spawn_instance("beta"));
    let (_, owner) = b.user("owner@beta.example").await;
    let shared = b.create_workspace(&owner, "shared").await;
    b.create_task(&owner, &shared, "beta task").await;
    common::peer(&a, &b, &[&shared], false).await;
    let a_id = a.state.instance_id;

    // A rotates (the old key keeps a week of grace) and B learns the new key.
    let (old_key_id, old_key) = a.state.federation.keys.current().await.unwrap();
    let sealer = mosaic::secrets::Sealer::new(a.state.config.secret_key.as_ref().unwrap(), "instance-keys");
    keys::rotate(&mut a.admin().await, &sealer, time::Duration::days(7))
        .await
        .unwrap();
    a.caught_up().await;
    a.state.federation.announce_rotation().await.unwrap();
    let registered = peer_row(&b, a_id).await.unwrap();
    let stored_old = registered.keys.iter().find(|k| k.key_id == old_key_id).unwrap().clone();
    assert!(stored_old.valid_until.is_some(), "B holds the old key as retired");

    // The attacker holds A's retired key and its own server.
    let (listener, evil_url) = listener();
    let forged = document_of(a_id, &old_key, "alpha", &evil_url, Vec::new());
    serve_tls(listener, identity_route(forged.clone()));
    let attacker = Hostile {
        id: a_id,
        key: old_key.clone(),
        url: evil_url.clone(),
        listener: None,
    };
    let (status, body) = attacker.connect_as(&b, forged, &old_key).await;
    let after = peer_row(&b, a_id).await.unwrap();
    assert_eq!(status, 401, "a CONNECT with a retired key is refused: {body}");
    assert_eq!(after.base_url, registered.base_url, "base URL unchanged");
    assert_eq!(after.pending_base_url, None);
    assert_eq!(*after.keys, *registered.keys, "keys unchanged, expiry kept");

    // The real A still queries B with its current key.
    let query = SubRequest {
        query: "{ tasks(first: 5) { edges { node { title } } } }".into(),
        variables: json!({}),
        envelope: Envelope {
            visited: vec![a_id.to_string()],
            hop_limit: 3,
            deadline_ms: 5_000,
            ..Envelope::default()
        },
    };
    let answer: Value = a
        .state
        .federation
        .send(
            b.state.instance_id,
            &b.base,
            protocol::QUERY_PATH,
            &query,
            Duration::from_secs(5),
        )
        .await
        .expect("A is not locked out");
    assert_eq!(answer["data"]["tasks"]["edges"][0]["node"]["title"], "beta task");
}

#[tokio::test]
async fn a_new_name_or_base_url_of_an_approved_peer_waits_for_the_admin() {
    let b = spawn_instance("beta").await;
    let mut hostile = Hostile::new();
    hostile.serve_plain();
    assert_eq!(hostile.connect(&b).await.0, 200);
    let (ws_global, ws) = workspace(&b).await;
    b.state
        .federation
        .approve(hostile.id, &common::grant(&[ws], false, None), "test")
        .await
        .unwrap();

    // The approved peer announces another name and URL (which serves it).
    let (listener, moved_url) = listener();
    let moved = document_of(hostile.id, &hostile.key, "renamed", &moved_url, Vec::new());
    serve_tls(listener, identity_route(moved.clone()));
    let (status, body) = hostile.connect_as(&b, moved, &hostile.key).await;
    assert_eq!(status, 200, "{body}");
    let row = peer_row(&b, hostile.id).await.unwrap();
    assert_eq!(
        (row.name.as_str(), row.base_url.as_str()),
        ("hostile", hostile.url.as_str())
    );
    assert_eq!(row.pending_name.as_deref(), Some("renamed"));
    assert_eq!(row.pending_base_url.as_deref(), Some(moved_url.as_str()));

    // The admin sees it in the listing and applies it by approving again.
    let admin = admin_token(&b, "admin@beta.example").await;
    let listing = b
        .gql_ok(
            &admin,
            "{ peers { id name baseUrl pendingName pendingBaseUrl } }",
            json!({}),
        )
        .await;
    assert_eq!(listing["peers"][0]["pendingName"], "renamed", "{listing}");
    assert_eq!(listing["peers"][0]["pendingBaseUrl"], moved_url.as_str(), "{listing}");
    let approved = b
        .gql_ok(
            &admin,
            "mutation($p: String!, $w: [ID!]!) { approvePeer(input: {peerId: $p, workspaceIds: $w}) { name baseUrl pendingName pendingBaseUrl } }",
            json!({ "p": hostile.id.to_string(), "w": [ws_global] }),
        )
        .await;
    assert_eq!(
        approved["approvePeer"],
        json!({ "name": "renamed", "baseUrl": moved_url, "pendingName": null, "pendingBaseUrl": null })
    );
}

// ---------------------------------------------------------------------------
// Item 5: anonymous CONNECT is no amplifier
// ---------------------------------------------------------------------------

/// Serves 32 MiB of junk as the identity document, streamed.
fn huge_document() -> axum::response::Response {
    let body = futures::stream::iter(
        (0..512).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 64 * 1024]))),
    );
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(body))
        .unwrap()
}

#[tokio::test]
async fn identity_documents_are_read_only_up_to_their_bound() {
    let b = spawn_instance("beta").await;
    let mut hostiles: Vec<Hostile> = (0..4).map(|_| Hostile::new()).collect();
    for h in &mut hostiles {
        h.serve(Router::new().route(protocol::WELL_KNOWN_PATH, get(|| async { huge_document() })));
    }
    let before = memory_kib();
    let answers = futures::future::join_all(hostiles.iter().map(|h| h.connect(&b))).await;
    let after = memory_kib();
    for ((status, body), h) in answers.iter().zip(&hostiles) {
        assert_eq!(*status, 400, "{body}");
        assert_eq!(code(&json_of(body)), "BAD_REQUEST", "{body}");
        assert!(peer_row(&b, h.id).await.is_none(), "nothing recorded");
    }
    let grew_hwm = after.1.saturating_sub(before.1) / 1024;
    println!(
        "four 32 MiB documents: VmRSS {} -> {} KiB, VmHWM {} -> {} KiB (+{grew_hwm} MiB)",
        before.0, after.0, before.1, after.1
    );
    assert!(grew_hwm < 24, "peak memory grew by {grew_hwm} MiB");
}

/// A plain TCP listener that counts connections (and closes them).
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, count)
}

#[tokio::test]
async fn connect_refuses_loopback_unless_allowed_before_connecting() {
    // B allows no private networks (the default).
    let b = spawn_instance_with("beta", |c| c.federation.allowed_peer_networks = Vec::new()).await;
    let (port, connections) = counting_listener().await;
    for base_url in [
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
        format!("https://[::ffff:127.0.0.1]:{port}"),
    ] {
        let h = Hostile::new();
        let doc = document_of(h.id, &h.key, "prober", &base_url, Vec::new());
        let (status, body) = h.connect_as(&b, doc, &h.key).await;
        assert_eq!(status, 400, "{base_url}: {body}");
        assert_eq!(code(&json_of(&body)), "BAD_REQUEST", "{body}");
        assert!(peer_row(&b, h.id).await.is_none());
        // An admin cannot be made to connect there either.
        let err = b.state.federation.connect(&base_url, "test").await.unwrap_err();
        assert!(format!("{err:#}").contains("allowed_peer_networks"), "{err:#}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0, "no connection was attempted");
}

#[tokio::test]
async fn connect_failures_answer_alike_whatever_listens() {
    let b = spawn_instance("beta").await;
    // A closed port, a plain TCP listener, and an HTTPS server without a document.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (plain, _) = counting_listener().await;
    let (tls_listener, tls_url) = listener();
    serve_tls(tls_listener, Router::new());
    let mut answers = Vec::new();
    for base_url in [
        format!("https://127.0.0.1:{closed}"),
        format!("https://127.0.0.1:{plain}"),
        tls_url,
    ] {
        let h = Hostile::new();
        let doc = document_of(h.id, &h.key, "prober", &base_url, Vec::new());
        let (status, body) = h.connect_as(&b, doc, &h.key).await;
        answers.push((status, body));
    }
    assert_eq!(answers[0].0, 400, "{}", answers[0].1);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:#?}");
}

#[tokio::test]
async fn connect_is_limited_per_source_address() {
    let b = spawn_instance_with("beta", |c| c.federation.connects_per_minute = 3).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(post_raw(&b, protocol::CONNECT_PATH, None, b"{}".to_vec()).await.0);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
}

#[tokio::test]
async fn pending_peers_are_capped_and_admins_delete_them() {
    let b = spawn_instance_with("beta", |c| c.federation.max_pending_peers = 2).await;
    let mut hostiles: Vec<Hostile> = (0..3).map(|_| Hostile::new()).collect();
    for h in &mut hostiles {
        h.serve_plain();
    }
    assert_eq!(hostiles[0].connect(&b).await.0, 200);
    assert_eq!(hostiles[1].connect(&b).await.0, 200);
    let (status, body) = hostiles[2].connect(&b).await;
    assert_eq!(
        (status, code(&json_of(&body)).as_str()),
        (503, "SERVICE_UNAVAILABLE"),
        "{body}"
    );
    assert!(peer_row(&b, hostiles[2].id).await.is_none());
    // A pending peer asking again is not a new one.
    assert_eq!(hostiles[0].connect(&b).await.0, 200);

    // The admin deletes a pending request (audited); an approved peer stays.
    let admin = admin_token(&b, "admin@beta.example").await;
    let (_, ws) = workspace(&b).await;
    b.state
        .federation
        .approve(hostiles[1].id, &common::grant(&[ws], false, None), "test")
        .await
        .unwrap();
    let delete = "mutation($p: String!) { deletePeer(peerId: $p) { id name } }";
    let deleted = b
        .gql_ok(&admin, delete, json!({ "p": hostiles[0].id.to_string() }))
        .await;
    assert_eq!(deleted["deletePeer"]["id"], hostiles[0].id.to_string());
    assert!(peer_row(&b, hostiles[0].id).await.is_none());
    let audit = registry::audit_log(&b.state.federation.pool, hostiles[0].id)
        .await
        .unwrap();
    assert_eq!(audit.last().unwrap().action, "deleted");
    assert_eq!(audit.last().unwrap().actor, "admin@beta.example");
    let refused = b.gql(&admin, delete, json!({ "p": hostiles[1].id.to_string() })).await;
    assert_eq!(code(&refused), "BAD_USER_INPUT", "{refused}");
    assert!(peer_row(&b, hostiles[1].id).await.is_some());
    let (_, user) = b.user("user@beta.example").await;
    let forbidden = b.gql(&user, delete, json!({ "p": hostiles[1].id.to_string() })).await;
    assert!(forbidden["errors"].is_array(), "admins only: {forbidden}");
    assert!(peer_row(&b, hostiles[1].id).await.is_some());
    // With room again, the third is heard.
    assert_eq!(hostiles[2].connect(&b).await.0, 200);
}

#[tokio::test]
async fn text_fields_are_bounded_where_they_enter() {
    let b = spawn_instance("beta").await;
    // A 180 KiB name.
    let mut big = Hostile::new();
    let doc = document_of(big.id, &big.key, &"n".repeat(180 * 1024), &big.url, Vec::new());
    big.serve(identity_route(doc.clone()));
    let (status, body) = big.connect_as(&b, doc, &big.key).await;
    assert_eq!((status, code(&json_of(&body)).as_str()), (400, "BAD_REQUEST"), "{body}");
    assert!(
        json_of(&body)["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("name")
    );
    assert!(peer_row(&b, big.id).await.is_none());

    // DISCONNECT reasons: long or with control characters are refused, unrecorded.
    let mut h = Hostile::new();
    h.serve_plain();
    assert_eq!(h.connect(&b).await.0, 200);
    let audit_before = audit_count(&b, h.id).await;
    for reason in ["r".repeat(100 * 1024), "line\nbreak".into(), "x".repeat(501)] {
        let body = serde_json::to_vec(&json!({ "reason": reason })).unwrap();
        let header = h.sign(&b, protocol::DISCONNECT_PATH, &body);
        let (status, answer) = post_raw(&b, protocol::DISCONNECT_PATH, Some(&header), body).await;
        assert_eq!(
            (status, code(&json_of(&answer)).as_str()),
            (400, "BAD_REQUEST"),
            "{answer}"
        );
    }
    assert_eq!(audit_count(&b, h.id).await, audit_before, "nothing recorded");
    assert_eq!(peer_row(&b, h.id).await.unwrap().inbound_state, "pending");
    // A reason within bounds is recorded.
    let body = serde_json::to_vec(&json!({ "reason": "x".repeat(500) })).unwrap();
    let header = h.sign(&b, protocol::DISCONNECT_PATH, &body);
    assert_eq!(
        post_raw(&b, protocol::DISCONNECT_PATH, Some(&header), body).await.0,
        200
    );
    assert_eq!(audit_count(&b, h.id).await, audit_before + 1);
}

// ---------------------------------------------------------------------------
// Item 6: the replay cache is bounded, and only live peerings send messages
// ---------------------------------------------------------------------------

#[tokio::test]
async fn nonces_are_bounded_in_size_and_number_per_peer() {
    let b = spawn_instance_with("beta", |c| c.federation.nonces_per_peer = 20).await;
    let mut h = Hostile::new();
    h.serve_plain();
    assert_eq!(h.connect(&b).await.0, 200, "a pending peer");
    let cache = &b.state.federation.replay;
    let held = cache.len();

    // 200 KiB nonces: refused before they reach the cache.
    let body = serde_json::to_vec(&Event::KeysRotated).unwrap();
    let before = memory_kib();
    for _ in 0..200 {
        let mut p = h.params(b.state.instance_id, protocol::EVENT_PATH, &body, &h.key);
        p.nonce = URL_SAFE_NO_PAD.encode(random_seed()).repeat(200 * 1024 / 43);
        let header = signing::header_value(&p, &signing::sign(&h.key, &p));
        let (status, answer) = post_raw(&b, protocol::EVENT_PATH, Some(&header), body.clone()).await;
        assert_eq!(status, 401, "{answer}");
    }
    let after = memory_kib();
    let grew = after.0.saturating_sub(before.0) / 1024;
    println!(
        "200 EVENTs with 200 KiB nonces: VmRSS {} -> {} KiB (+{grew} MiB), VmHWM {} -> {} KiB; cache {held} -> {}",
        before.0,
        after.0,
        before.1,
        after.1,
        cache.len()
    );
    assert_eq!(cache.len(), held, "no oversized nonce was kept");
    assert!(grew < 32, "resident memory grew by {grew} MiB");

    // Well-formed nonces: at most nonces_per_peer held; then refused, none evicted.
    let mut accepted = 0;
    let mut refused = Vec::new();
    for _ in 0..30 {
        match h.event(&b, &Event::KeysRotated).await {
            (200, _) => accepted += 1,
            (status, answer) => refused.push((status, code(&json_of(&answer)))),
        }
    }
    assert_eq!(held + accepted, 20, "the peer's share of the cache is full");
    assert!(
        refused.iter().all(|r| *r == (503, "SERVICE_UNAVAILABLE".to_string())),
        "{refused:?}"
    );
    assert_eq!(cache.len(), 20);
}

#[tokio::test]
async fn a_peer_without_a_live_peering_may_send_nothing_but_connect() {
    let b = spawn_instance("beta").await;
    let mut h = Hostile::new();
    h.serve_plain();
    assert_eq!(h.connect(&b).await.0, 200);
    b.state.federation.revoke(h.id, "test").await.unwrap();
    let held = b.state.federation.replay.len();
    let audit_before = audit_count(&b, h.id).await;
    let (status, body) = h.event(&b, &Event::KeysRotated).await;
    assert_eq!(
        (status, code(&json_of(&body)).as_str()),
        (403, "PEER_NOT_ACTIVE"),
        "{body}"
    );
    let disconnect = serde_json::to_vec(&json!({ "reason": "again" })).unwrap();
    let header = h.sign(&b, protocol::DISCONNECT_PATH, &disconnect);
    let (status, body) = post_raw(&b, protocol::DISCONNECT_PATH, Some(&header), disconnect).await;
    assert_eq!(
        (status, code(&json_of(&body)).as_str()),
        (403, "PEER_NOT_ACTIVE"),
        "{body}"
    );
    assert_eq!(
        b.state.federation.replay.len(),
        held,
        "nothing entered the replay cache"
    );
    assert_eq!(audit_count(&b, h.id).await, audit_before, "nothing was audited");
    // CONNECT is still heard: it asks again.
    assert_eq!(h.connect(&b).await.0, 200);
    assert_eq!(peer_row(&b, h.id).await.unwrap().inbound_state, "pending");
}

// ---------------------------------------------------------------------------
// Item 9: refusals before verification look alike; /metrics can be closed
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_refusal_before_verification_is_the_same_answer() {
    let b = spawn_instance("beta").await;
    let mut h = Hostile::new();
    // Its document lists a retired key whose grace is over.
    let expired = SigningKey::from_bytes(&random_seed());
    let doc = document_of(
        h.id,
        &h.key,
        "hostile",
        &h.url,
        vec![public_key(&expired, Some(now_unix() - 10))],
    );
    h.serve(identity_route(doc.clone()));
    assert_eq!(h.connect_as(&b, doc, &h.key).await.0, 200, "registered (pending)");
    let stranger = Hostile::new();
    let other_key = SigningKey::from_bytes(&random_seed());
    let body = serde_json::to_vec(&Event::KeysRotated).unwrap();
    let path = protocol::EVENT_PATH;
    let to = b.state.instance_id;
    let signed = |who: &Hostile, key: &SigningKey, edit: &dyn Fn(&mut SignatureParams)| {
        let mut p = who.params(to, path, &body, key);
        edit(&mut p);
        signing::header_value(&p, &signing::sign(key, &p))
    };
    let good = signed(&h, &h.key, &|_| {});
    let cases: Vec<(&str, Option<String>, Vec<u8>)> = vec![
        ("no header", None, body.clone()),
        ("unparsable header", Some("origin=".into()), body.clone()),
        (
            "unknown peer",
            Some(signed(&stranger, &stranger.key, &|_| {})),
            body.clone(),
        ),
        ("unknown key", Some(signed(&h, &other_key, &|_| {})), body.clone()),
        ("expired key", Some(signed(&h, &expired, &|_| {})), body.clone()),
        (
            "sig not 64 bytes",
            Some(good.replace("sig=\"", "sig=\"A")),
            body.clone(),
        ),
        (
            "digest mismatch",
            Some(good.clone()),
            b"{\"kind\":\"rejected\"}".to_vec(),
        ),
        (
            "wrong destination",
            Some(signed(&h, &h.key, &|p| p.destination = Uuid::new_v4().to_string())),
            body.clone(),
        ),
        (
            "origin not an id",
            Some(signed(&h, &h.key, &|p| p.origin = "not-an-id".into())),
            body.clone(),
        ),
    ];
    let mut answers = Vec::new();
    for (what, header, body) in cases {
        let response = {
            let mut r = b
                .client
                .post(format!("{}{path}", b.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            if let Some(h) = &header {
                r = r.header(signing::HEADER, h);
            }
            r.send().await.unwrap()
        };
        let status = response.status().as_u16();
        let www = response.headers().get("www-authenticate").cloned();
        let text = response.text().await.unwrap();
        answers.push((what, status, www, text));
    }
    // A bad signature: flip the last character of a good one.
    let flipped = {
        let at = good.rfind('"').unwrap() - 1;
        let mut bytes = good.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let (status, text) = post_raw(&b, path, Some(&flipped), body.clone()).await;
    answers.push(("flipped signature", status, answers[0].2.clone(), text));
    // CONNECT refused before its signature verifies looks the same.
    let (status, text) = post_raw(&b, protocol::CONNECT_PATH, None, b"{}".to_vec()).await;
    answers.push(("malformed CONNECT", status, answers[0].2.clone(), text));

    let first = &answers[0];
    assert_eq!(first.1, 401);
    assert_eq!(
        json_of(&first.3),
        json!({ "errors": [{ "message": "signature not accepted", "extensions": { "code": "UNAUTHENTICATED_PEER" } }] })
    );
    for a in &answers {
        assert_eq!((a.1, &a.2, &a.3), (first.1, &first.2, &first.3), "{}", a.0);
    }
    // The same request, correctly signed, is accepted.
    assert_eq!(post_raw(&b, path, Some(&good), body).await.0, 200);
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let token = "metrics-token-0123456789abcdef";
    let b = spawn_instance_with("beta", |c| {
        c.metrics_token = Some(mosaic::secrets::Secret(token.into()));
    })
    .await;
    let get_metrics = |auth: Option<&str>| {
        let mut r = b.client.get(format!("{}/metrics", b.base));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get_metrics(None).await, 401);
    assert_eq!(get_metrics(Some("Bearer wrong")).await, 401);
    assert_eq!(get_metrics(Some(&format!("Bearer {token}x"))).await, 401);
    assert_eq!(get_metrics(Some(&format!("Bearer {token}"))).await, 200);
}

// ---------------------------------------------------------------------------
// Item 13: a captured COMMAND cannot run twice just after its window
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_captured_command_cannot_run_twice_after_a_slow_key_refresh() {
    // No clock skew, and every request re-reads the sender's keys.
    let b = spawn_instance_with("beta", |c| {
        c.federation.clock_skew_s = 0;
        c.federation.key_refresh = Duration::ZERO;
    })
    .await;
    let mut h = Hostile::new();
    // Its identity document answers slowly when asked to.
    let slow = Arc::new(AtomicBool::new(false));
    let doc = h.document();
    let slow_flag = slow.clone();
    let router = Router::new()
        .route(
            protocol::WELL_KNOWN_PATH,
            get(move || {
                let doc = doc.clone();
                let slow = slow_flag.swap(false, Ordering::SeqCst);
                async move {
                    if slow {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    axum::Json(doc)
                }
            }),
        )
        .route(
            protocol::EVENT_PATH,
            post(|| async { axum::Json(json!({ "ok": true })) }),
        );
    h.serve(router);
    assert_eq!(h.connect(&b).await.0, 200);
    let (ws_global, ws) = workspace(&b).await;
    b.state
        .federation
        .approve(h.id, &common::grant(&[ws], true, None), "test")
        .await
        .unwrap();

    let command = serde_json::to_vec(&SubRequest {
        query: "mutation($w: ID!) { createTask(input: {workspaceId: $w, title: \"once\"}) { id } }".into(),
        variables: json!({ "w": ws_global }),
        envelope: Envelope {
            visited: vec![h.id.to_string()],
            hop_limit: 3,
            deadline_ms: 5_000,
            ..Envelope::default()
        },
    })
    .unwrap();
    // Captured: valid through second t + 1.
    let t = next_second().await;
    let mut p = h.params(b.state.instance_id, protocol::COMMAND_PATH, &command, &h.key);
    p.created = t - 1;
    p.expires = t + 1;
    let captured = signing::header_value(&p, &signing::sign(&h.key, &p));
    let (status, answer) = post_raw(&b, protocol::COMMAND_PATH, Some(&captured), command.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(json_of(&answer)["errors"].is_null(), "{answer}");

    // The replay arrives in the window's last second and its key refresh is slow ...
    assert_eq!(next_second().await, t + 1, "the test fell behind the clock");
    slow.store(true, Ordering::SeqCst);
    let replay = {
        let (b_client, url) = (b.client.clone(), format!("{}{}", b.base, protocol::COMMAND_PATH));
        let (captured, command) = (captured.clone(), command.clone());
        tokio::spawn(async move {
            let r = b_client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(signing::HEADER, captured)
                .body(command)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    // ... while a later request, after the window, makes the cache forget it.
    until(Duration::from_secs(2), || !slow.load(Ordering::SeqCst)).await;
    assert_eq!(next_second().await, t + 2, "the test fell behind the clock");
    assert_eq!(h.event(&b, &Event::KeysRotated).await.0, 200);
    let (status, answer) = replay.await.unwrap();

    let mut conn = b.admin().await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE title = 'once'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(runs, 1, "the command ran once; the replay answered {status} {answer}");
    assert_eq!(
        (status, code(&json_of(&answer)).as_str()),
        (401, "REQUEST_EXPIRED"),
        "{answer}"
    );
}
