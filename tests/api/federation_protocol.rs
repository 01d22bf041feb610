//! The peer protocol from the wire: real HTTPS instances on loopback, each
//! with its own database. Requests are crafted as instance A (with A's real
//! signing key) toward instance B, and every refusal is checked for its HTTP
//! status and its `errors[0].extensions.code` (refusals before the signature
//! verifies are all one answer, `UNAUTHENTICATED_PEER`). Each refusal test first shows
//! that the same request, correctly signed, is accepted, so the refusal is
//! caused by the one thing the test changed.

use crate::common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TestApp, code, codes, peer, spawn_instance, spawn_instance_with};
use ed25519_dalek::SigningKey;
use mosaic::federation::document::{self, SignedDocument};
use mosaic::federation::protocol::{self, Actor, Envelope, SubRequest};
use mosaic::federation::signing::{self, SignatureParams};
use mosaic::federation::{keys, now_unix};
use serde_json::{Value, json};
use uuid::Uuid;

const QUERY: &str = protocol::QUERY_PATH;
const COMMAND: &str = protocol::COMMAND_PATH;

const TASKS: &str = "{ tasks(first: 50) { edges { node { title workspace { id } instance { id name } } } } }";
const FEDERATED_TASKS: &str =
    "{ tasks(first: 50, scope: {all: true}) { edges { node { id title instance { id name } } } } }";
const CREATE_TASK: &str =
    "mutation($w: ID!) { createTask(input: {workspaceId: $w, title: \"from a peer\"}) { id title } }";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn id(app: &TestApp) -> Uuid {
    app.state.federation.instance_id
}

/// The envelope of a request that starts at `from` (as `federated::envelope` builds it).
fn envelope(from: &TestApp) -> Envelope {
    Envelope {
        visited: vec![id(from).to_string()],
        exclude: Vec::new(),
        hop_limit: 3,
        deadline_ms: 5_000,
        actor: None,
        traceparent: None,
    }
}

fn body_with(query: &str, variables: Value, envelope: Envelope) -> Vec<u8> {
    serde_json::to_vec(&SubRequest {
        query: query.to_string(),
        variables,
        envelope,
    })
    .unwrap()
}

/// A QUERY body for `tasks` as sent by `from`.
fn tasks_body(from: &TestApp) -> Vec<u8> {
    body_with(TASKS, json!({}), envelope(from))
}

/// POSTs raw bytes with an optional `mosaic-signature` header; (status, JSON body).
async fn post(from: &TestApp, to: &TestApp, path: &str, header: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut request = from
        .client
        .post(format!("{}{path}", to.base))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(h) = header {
        request = request.header(signing::HEADER, h);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("answer is not JSON ({status}): {text}"));
    (status, json)
}

/// Signed the ordinary way: `from`'s current key, a fresh nonce, its lifetime.
async fn send_signed(from: &TestApp, to: &TestApp, path: &str, body: Vec<u8>) -> (u16, Value) {
    let header = from.state.federation.sign(id(to), path, &body).await.unwrap();
    post(from, to, path, Some(&header), body).await
}

/// Signature parameters as `Federation::sign` builds them, for a test to bend.
fn params(from: &TestApp, destination: Uuid, path: &str, body: &[u8], key_id: &str) -> SignatureParams {
    let created = now_unix();
    SignatureParams {
        method: "POST".into(),
        path: path.into(),
        origin: id(from).to_string(),
        destination: destination.to_string(),
        digest: signing::body_digest(body),
        created,
        expires: created + from.state.federation.settings.request_lifetime_s,
        nonce: URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes()),
        key_id: key_id.into(),
    }
}

fn header(p: &SignatureParams, key: &SigningKey) -> String {
    signing::header_value(p, &signing::sign(key, p))
}

#[track_caller]
fn assert_ok(got: &(u16, Value)) {
    assert_eq!(got.0, 200, "expected success, got {}", got.1);
    assert!(got.1.get("errors").is_none(), "unexpected errors: {}", got.1);
    assert!(got.1["data"].is_object(), "no data: {}", got.1);
}

#[track_caller]
fn assert_refused(got: &(u16, Value), status: u16, expected: &str) {
    assert_eq!((got.0, code(&got.1).as_str()), (status, expected), "answer: {}", got.1);
    assert!(
        got.1["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a refusal explains itself: {}",
        got.1
    );
    assert!(got.1.get("data").is_none(), "a refusal carries no data: {}", got.1);
}

/// A refusal before the signature verified: every such refusal is the same
/// answer (401 `UNAUTHENTICATED_PEER`, "signature not accepted"); `why` names
/// the check that refused it, which only the receiver's log shows.
#[track_caller]
fn assert_unauthenticated(got: &(u16, Value), why: &str) {
    assert_eq!(
        got,
        &(
            401,
            json!({ "errors": [{ "message": "signature not accepted", "extensions": { "code": "UNAUTHENTICATED_PEER" } }] })
        ),
        "refused before verification ({why})"
    );
}

/// An instance administrator with an API token (local to this file so it
/// does not depend on helpers other test files may add).
async fn admin_token(app: &TestApp, email: &str) -> String {
    let mut conn = app.admin().await;
    mosaic::auth::users::create(&mut conn, email, None, true).await.unwrap();
    mosaic::auth::tokens::create(&mut conn, email, None).await.unwrap()
}

/// Titles of the task rows in an answer (a peer's `data` or a client's `data`).
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

/// Instance ids of the task rows in a client answer.
fn row_instances(data: &Value) -> Vec<String> {
    data["tasks"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {data}"))
        .iter()
        .map(|e| e["node"]["instance"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// A and B; B has a granted workspace and a private one, one task in each;
/// A holds an active grant on the first.
struct Pair {
    a: TestApp,
    b: TestApp,
    /// Global ID of B's granted workspace.
    granted: String,
}

async fn pair(read_write: bool) -> Pair {
    let (a, b) = tokio::join!(spawn_instance("alpha"), spawn_instance("beta"));
    let (_, owner) = b.user("owner@beta.example").await;
    let granted = b.create_workspace(&owner, "granted").await;
    b.create_task(&owner, &granted, "granted task").await;
    let private = b.create_workspace(&owner, "private").await;
    b.create_task(&owner, &private, "private task").await;
    peer(&a, &b, &[&granted], read_write).await;
    Pair { a, b, granted }
}

fn rotate_sealer(app: &TestApp) -> mosaic::secrets::Sealer {
    mosaic::secrets::Sealer::new(
        app.state.config.secret_key.as_ref().expect("tests configure a secret"),
        "instance-keys",
    )
}

/// Rotates as `mosaic keys rotate` does, behind the instance's back, and
/// waits until the instance heard of it.
async fn rotate(app: &TestApp, grace: time::Duration) -> String {
    let mut conn = app.admin().await;
    let id = keys::rotate(&mut conn, &rotate_sealer(app), grace).await.unwrap();
    app.caught_up().await;
    id
}

async fn well_known(from: &TestApp, of: &TestApp) -> SignedDocument {
    let response = from
        .client
        .get(format!("{}{}", of.base, protocol::WELL_KNOWN_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

// ---------------------------------------------------------------------------
// Signature, key, time window, nonce
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_request_captured_before_a_restart_cannot_be_replayed_after_it() {
    let Pair { a, b, .. } = pair(false).await;
    let (key_id, key) = a.state.federation.keys.current().await.unwrap();
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &key_id);
    let captured = header(&p, &key);
    assert_ok(&post(&a, &b, QUERY, Some(&captured), body.clone()).await);
    assert_refused(
        &post(&a, &b, QUERY, Some(&captured), body.clone()).await,
        401,
        "REPLAYED_NONCE",
    );
    // The nonces are in the database, not in the process: a restart keeps them.
    let config = (*b.state.config).clone();
    b.stop().await;
    let b = common::spawn_config(config).await;
    assert_refused(&post(&a, &b, QUERY, Some(&captured), body).await, 401, "REPLAYED_NONCE");
    // What A signs now is accepted.
    assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
}

/// Two replicas of one instance (one database, one secret): a request one
/// of them received is a replay at the other (issue 18).
#[tokio::test]
async fn a_request_received_by_one_replica_is_refused_by_another() {
    let Pair { a, b, .. } = pair(false).await;
    let replica = common::spawn_config((*b.state.config).clone()).await;
    assert_eq!(replica.state.instance_id, b.state.instance_id, "one instance");
    assert_ne!(replica.base, b.base, "two processes' worth of listeners");
    let (key_id, key) = a.state.federation.keys.current().await.unwrap();
    let body = tasks_body(&a);
    let captured = header(&params(&a, id(&b), QUERY, &body, &key_id), &key);
    assert_ok(&post(&a, &b, QUERY, Some(&captured), body.clone()).await);
    assert_refused(
        &post(&a, &replica, QUERY, Some(&captured), body.clone()).await,
        401,
        "REPLAYED_NONCE",
    );
    // Also the other way round, for a request the replica received first.
    let body = tasks_body(&a);
    let captured = header(&params(&a, id(&b), QUERY, &body, &key_id), &key);
    assert_ok(&post(&a, &replica, QUERY, Some(&captured), body.clone()).await);
    assert_refused(&post(&a, &b, QUERY, Some(&captured), body).await, 401, "REPLAYED_NONCE");
    assert_ok(&send_signed(&a, &replica, QUERY, tasks_body(&a)).await);
}

/// A DISCONNECT one replica received is honoured by the other on the
/// next request it gets (the registry is shared; the change is announced).
#[tokio::test]
async fn a_disconnect_received_by_one_replica_is_honoured_by_another() {
    let Pair { a, b, .. } = pair(false).await;
    let replica = common::spawn_config((*b.state.config).clone()).await;
    assert_ok(&send_signed(&a, &replica, QUERY, tasks_body(&a)).await);
    // A's DISCONNECT goes to the URL it knows B by: the first replica's.
    a.state.federation.revoke(id(&b), "test").await.unwrap();
    b.caught_up().await;
    replica.caught_up().await;
    assert_refused(
        &send_signed(&a, &replica, QUERY, tasks_body(&a)).await,
        403,
        "PEER_NOT_ACTIVE",
    );
    assert_refused(
        &send_signed(&a, &b, QUERY, tasks_body(&a)).await,
        403,
        "PEER_NOT_ACTIVE",
    );
}

/// How many times `app` served its identity document (its own metrics).
async fn documents_served(app: &TestApp) -> u64 {
    let text = app.get_text("/metrics").await;
    let route = format!("route=\"{}\"", protocol::WELL_KNOWN_PATH);
    text.lines()
        .filter(|l| l.starts_with("mosaic_http_requests") && l.contains(&route) && l.contains("status=\"200\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Re-reads of a peer's document are shared by the replicas: one replica's
/// refresh of a stale copy serves the other, and requests naming unknown
/// key ids cause at most ten re-reads a minute whichever replica they reach.
#[tokio::test]
async fn key_refreshes_are_shared_by_replicas() {
    let Pair { a, b, .. } = pair(false).await;
    let replica = common::spawn_config((*b.state.config).clone()).await;
    let start = documents_served(&a).await;
    assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
    assert_eq!(
        documents_served(&a).await,
        start + 1,
        "the first replica re-read A's keys"
    );
    assert_ok(&send_signed(&a, &replica, QUERY, tasks_body(&a)).await);
    assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
    assert_eq!(documents_served(&a).await, start + 1, "and that served both");

    let (_, key) = a.state.federation.keys.current().await.unwrap();
    for i in 0..16 {
        let to = if i % 2 == 0 { &b } else { &replica };
        let body = tasks_body(&a);
        let p = params(&a, id(&b), QUERY, &body, "ed25519:AAAAAAAAAAAAAAAA");
        assert_unauthenticated(&post(&a, to, QUERY, Some(&header(&p, &key)), body).await, "UNKNOWN_KEY");
    }
    assert_eq!(
        documents_served(&a).await,
        start + 1 + 10,
        "ten re-reads for unknown keys in the minute, across both replicas"
    );
}

#[tokio::test]
async fn signed_query_from_an_active_peer_runs_and_every_tampering_is_refused() {
    let Pair { a, b, .. } = pair(false).await;
    let (key_id, key) = a.state.federation.keys.current().await.unwrap();

    // Baseline: correctly signed, through Federation::sign and by hand.
    let ok = send_signed(&a, &b, QUERY, tasks_body(&a)).await;
    assert_ok(&ok);
    assert_eq!(titles(&ok.1["data"]), ["granted task"]);
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &key_id);
    assert_ok(&post(&a, &b, QUERY, Some(&header(&p, &key)), body).await);

    // A flipped byte in the signature.
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &key_id);
    let mut sig = URL_SAFE_NO_PAD.decode(signing::sign(&key, &p)).unwrap();
    sig[0] ^= 0x01;
    let flipped = signing::header_value(&p, &URL_SAFE_NO_PAD.encode(&sig));
    assert_unauthenticated(&post(&a, &b, QUERY, Some(&flipped), body).await, "BAD_SIGNATURE");

    // Signed by a key that is not A's, under A's key id.
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &key_id);
    let impostor = SigningKey::from_bytes(&[42u8; 32]);
    assert_unauthenticated(
        &post(&a, &b, QUERY, Some(&header(&p, &impostor)), body).await,
        "BAD_SIGNATURE",
    );

    // A key id A never published (B re-reads A's document, then gives up).
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, "ed25519:AAAAAAAAAAAAAAAA");
    assert_unauthenticated(&post(&a, &b, QUERY, Some(&header(&p, &key)), body).await, "UNKNOWN_KEY");

    // The path is covered: signed for QUERY, sent to COMMAND.
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &key_id);
    assert_unauthenticated(
        &post(&a, &b, COMMAND, Some(&header(&p, &key)), body).await,
        "BAD_SIGNATURE",
    );

    // Sign one body, send another.
    let signed_body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &signed_body, &key_id);
    let other_body = body_with("{ workspaces { id name } }", json!({}), envelope(&a));
    assert_unauthenticated(
        &post(&a, &b, QUERY, Some(&header(&p, &key)), other_body).await,
        "DIGEST_MISMATCH",
    );

    // Replay: the identical bytes and header twice.
    let body = tasks_body(&a);
    let captured = a.state.federation.sign(id(&b), QUERY, &body).await.unwrap();
    assert_ok(&post(&a, &b, QUERY, Some(&captured), body.clone()).await);
    assert_refused(&post(&a, &b, QUERY, Some(&captured), body).await, 401, "REPLAYED_NONCE");

    // Expired: created and expires in the past, beyond the clock skew.
    let settings = &b.state.federation.settings;
    let body = tasks_body(&a);
    let mut p = params(&a, id(&b), QUERY, &body, &key_id);
    p.created = now_unix() - 3 * settings.request_lifetime_s - 2 * settings.clock_skew_s;
    p.expires = p.created + settings.request_lifetime_s;
    assert!(p.expires + settings.clock_skew_s < now_unix());
    assert_refused(
        &post(&a, &b, QUERY, Some(&header(&p, &key)), body).await,
        401,
        "REQUEST_EXPIRED",
    );

    // Created in the future, beyond the skew.
    let body = tasks_body(&a);
    let mut p = params(&a, id(&b), QUERY, &body, &key_id);
    p.created = now_unix() + 2 * settings.clock_skew_s;
    p.expires = p.created + 10;
    assert_refused(
        &post(&a, &b, QUERY, Some(&header(&p, &key)), body).await,
        401,
        "REQUEST_EXPIRED",
    );

    // A window longer than the receiver allows (though it contains now).
    let body = tasks_body(&a);
    let mut p = params(&a, id(&b), QUERY, &body, &key_id);
    p.expires = p.created + settings.request_lifetime_s + 3600;
    assert_refused(
        &post(&a, &b, QUERY, Some(&header(&p, &key)), body).await,
        401,
        "REQUEST_EXPIRED",
    );

    // No header at all; a header that is not one.
    assert_unauthenticated(&post(&a, &b, QUERY, None, tasks_body(&a)).await, "MALFORMED_SIGNATURE");
    assert_unauthenticated(
        &post(&a, &b, QUERY, Some("garbage"), tasks_body(&a)).await,
        "MALFORMED_SIGNATURE",
    );
    // Well-formed but missing the signature itself.
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &key_id);
    let no_sig = header(&p, &key).replace(", sig=", ", nosig=");
    assert_unauthenticated(&post(&a, &b, QUERY, Some(&no_sig), body).await, "MALFORMED_SIGNATURE");

    // Addressed (and signed) for another instance.
    let body = tasks_body(&a);
    let p = params(&a, Uuid::new_v4(), QUERY, &body, &key_id);
    assert_unauthenticated(
        &post(&a, &b, QUERY, Some(&header(&p, &key)), body).await,
        "WRONG_DESTINATION",
    );

    // After all that, the peering still works.
    assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
}

#[tokio::test]
async fn peer_state_decides_unknown_pending_active_suspended() {
    let (a, b) = tokio::join!(spawn_instance("alpha"), spawn_instance("beta"));
    let (_, owner) = b.user("owner@beta.example").await;
    let ws = b.create_workspace(&owner, "granted").await;
    b.create_task(&owner, &ws, "granted task").await;

    // B never heard of A.
    assert_unauthenticated(&send_signed(&a, &b, QUERY, tasks_body(&a)).await, "UNKNOWN_PEER");

    // A asked (CONNECT); B has not approved yet.
    let record = a.state.federation.connect(&b.base, "test").await.unwrap();
    assert_eq!(record.outbound_state, "requested");
    let at_b = mosaic::federation::registry::get(&b.state.federation.pool, id(&a))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at_b.inbound_state, "pending");
    assert_refused(
        &send_signed(&a, &b, QUERY, tasks_body(&a)).await,
        403,
        "PEER_NOT_ACTIVE",
    );

    // Approved: the same request runs.
    b.state
        .federation
        .approve(id(&a), &common::grant(&[common::local_id(&ws)], false, None), "test")
        .await
        .unwrap();
    let ok = send_signed(&a, &b, QUERY, tasks_body(&a)).await;
    assert_ok(&ok);
    assert_eq!(titles(&ok.1["data"]), ["granted task"]);

    // Suspended.
    b.state.federation.suspend(id(&a), "test").await.unwrap();
    assert_refused(
        &send_signed(&a, &b, QUERY, tasks_body(&a)).await,
        403,
        "PEER_NOT_ACTIVE",
    );
    // A was told (EVENT) and no longer counts B as queryable.
    let at_a = mosaic::federation::registry::get(&a.state.federation.pool, id(&b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at_a.outbound_state, "suspended");

    // Rejected.
    b.state.federation.reject(id(&a), "test").await.unwrap();
    assert_refused(
        &send_signed(&a, &b, QUERY, tasks_body(&a)).await,
        403,
        "PEER_NOT_ACTIVE",
    );
}

// ---------------------------------------------------------------------------
// Key rotation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rotated_key_without_grace_is_refused_and_the_new_key_is_learned() {
    let Pair { a, b, .. } = pair(false).await;
    let (old_id, old_key) = a.state.federation.keys.current().await.unwrap();
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &old_id);
    assert_ok(&post(&a, &b, QUERY, Some(&header(&p, &old_key)), body).await);

    let new_id = rotate(&a, time::Duration::ZERO).await;
    assert_ne!(new_id, old_id);
    let (current_id, _) = a.state.federation.keys.current().await.unwrap();
    assert_eq!(current_id, new_id, "A signs with the new key at once");

    // The new key is unknown to B: B re-reads A's document and accepts it.
    assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
    let at_b = mosaic::federation::registry::get(&b.state.federation.pool, id(&a))
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = at_b.keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, [new_id.as_str()], "A's document no longer lists the old key");

    // The old key: A's document dropped it (valid_until = now(), and the
    // document lists only keys with valid_until > now()), so B's refreshed
    // record does not have it at all: UNKNOWN_KEY, not KEY_EXPIRED.
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &old_id);
    assert_unauthenticated(
        &post(&a, &b, QUERY, Some(&header(&p, &old_key)), body).await,
        "UNKNOWN_KEY",
    );
}

#[tokio::test]
async fn announced_rotation_without_grace_stops_the_old_key_at_once() {
    let Pair { a, b, .. } = pair(false).await;
    let (old_id, old_key) = a.state.federation.keys.current().await.unwrap();
    let new_id = rotate(&a, time::Duration::ZERO).await;
    // What `mosaic keys rotate` does after rotating: a KeysRotated EVENT, signed with the new key.
    assert_eq!(a.state.federation.announce_rotation().await.unwrap(), 1);
    let at_b = mosaic::federation::registry::get(&b.state.federation.pool, id(&a))
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = at_b.keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, [new_id.as_str()], "B re-read A's document on the EVENT");
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &old_id);
    assert_unauthenticated(
        &post(&a, &b, QUERY, Some(&header(&p, &old_key)), body).await,
        "UNKNOWN_KEY",
    );
    assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
}

#[tokio::test]
async fn rotated_key_without_grace_is_refused_even_before_the_peer_saw_the_new_key() {
    let Pair { a, b, .. } = pair(false).await;
    let (old_id, old_key) = a.state.federation.keys.current().await.unwrap();
    // keys::rotate without announce_rotation: as if the announcement did not
    // reach B (it is best-effort: B down, network split, timeout).
    rotate(&a, time::Duration::ZERO).await;
    // Nothing signed with the new key has reached B yet.
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &old_id);
    let got = post(&a, &b, QUERY, Some(&header(&p, &old_key)), body).await;
    assert_eq!(
        got.0, 401,
        "a key retired with no grace must stop verifying at once: {}",
        got.1
    );
    assert_unauthenticated(&got, "UNKNOWN_KEY or KEY_EXPIRED");
}

#[tokio::test]
async fn rotated_key_with_grace_verifies_until_its_expiry_then_key_expired() {
    let Pair { a, b, .. } = pair(false).await;
    let (old_id, old_key) = a.state.federation.keys.current().await.unwrap();
    // A short grace, so its end can be waited for.
    let new_id = rotate(&a, time::Duration::seconds(3)).await;

    // The new key verifies (B learns A's keys: the new one and the old one with its expiry).
    assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
    let at_b = mosaic::federation::registry::get(&b.state.federation.pool, id(&a))
        .await
        .unwrap()
        .unwrap();
    let old = at_b
        .keys
        .iter()
        .find(|k| k.key_id == old_id)
        .expect("B knows the old key");
    let until = old.valid_until.expect("the old key has an expiry");
    assert!(at_b.keys.iter().any(|k| k.key_id == new_id && k.valid_until.is_none()));

    // Within the grace the old key still verifies.
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &old_id);
    assert_ok(&post(&a, &b, QUERY, Some(&header(&p, &old_key)), body).await);

    // After it: B still lists the key, with an expiry in the past.
    while now_unix() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &old_id);
    assert_unauthenticated(
        &post(&a, &b, QUERY, Some(&header(&p, &old_key)), body).await,
        "KEY_EXPIRED",
    );
    assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
}

#[tokio::test]
async fn rotated_key_with_a_long_grace_keeps_verifying() {
    let Pair { a, b, .. } = pair(false).await;
    let (old_id, old_key) = a.state.federation.keys.current().await.unwrap();
    rotate(&a, time::Duration::hours(1)).await;
    // Before B has seen the new key (its record: the old key as current).
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &old_id);
    assert_ok(&post(&a, &b, QUERY, Some(&header(&p, &old_key)), body).await);
    // After B learned the new key (its record: the old key with an expiry).
    assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
    let body = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &body, &old_id);
    assert_ok(&post(&a, &b, QUERY, Some(&header(&p, &old_key)), body).await);
}

// ---------------------------------------------------------------------------
// Hops and cycles
// ---------------------------------------------------------------------------

#[tokio::test]
async fn envelope_past_the_hop_limit_or_through_the_receiver_is_refused() {
    let Pair { a, b, .. } = pair(false).await;
    let me = id(&a).to_string();

    // Two hops before A, limit 3: visited = 3 entries, still allowed.
    let mut e = envelope(&a);
    e.visited = vec![Uuid::new_v4().to_string(), Uuid::new_v4().to_string(), me.clone()];
    assert_ok(&send_signed(&a, &b, QUERY, body_with(TASKS, json!({}), e.clone())).await);

    // The same path with hop_limit 2.
    e.hop_limit = 2;
    assert_refused(
        &send_signed(&a, &b, QUERY, body_with(TASKS, json!({}), e)).await,
        403,
        "HOP_LIMIT_EXCEEDED",
    );

    // The receiver's own limit applies even when the sender allows more.
    let mut e = envelope(&a);
    e.visited = (0..b.state.federation.settings.hop_limit)
        .map(|_| Uuid::new_v4().to_string())
        .chain([me.clone()])
        .collect();
    e.hop_limit = 100;
    assert_refused(
        &send_signed(&a, &b, QUERY, body_with(TASKS, json!({}), e)).await,
        403,
        "HOP_LIMIT_EXCEEDED",
    );

    // B is already on the path.
    let mut e = envelope(&a);
    e.visited = vec![id(&b).to_string(), me.clone()];
    assert_refused(
        &send_signed(&a, &b, QUERY, body_with(TASKS, json!({}), e)).await,
        403,
        "CYCLE_DETECTED",
    );
}

#[tokio::test]
async fn chain_past_the_origin_hop_limit_reports_the_far_instance_as_forbidden() {
    // A (hop limit 1) -> B -> C, and a control origin D (default limit) -> B -> C.
    let (a, b, c, d) = tokio::join!(
        spawn_instance_with("alpha", |c| c.federation.hop_limit = 1),
        spawn_instance("beta"),
        spawn_instance("gamma"),
        spawn_instance("delta"),
    );
    let (_, b_owner) = b.user("owner@beta.example").await;
    let b_ws = b.create_workspace(&b_owner, "b-ws").await;
    b.create_task(&b_owner, &b_ws, "task at beta").await;
    let (_, c_owner) = c.user("owner@gamma.example").await;
    let c_ws = c.create_workspace(&c_owner, "c-ws").await;
    c.create_task(&c_owner, &c_ws, "task at gamma").await;
    let (_, a_user) = a.user("user@alpha.example").await;
    let a_ws = a.create_workspace(&a_user, "a-ws").await;
    a.create_task(&a_user, &a_ws, "task at alpha").await;
    let (_, d_user) = d.user("user@delta.example").await;
    // B lets the reads of A and D go on to C.
    common::peer_forwarding(&a, &b, &[&b_ws]).await;
    common::peer_forwarding(&d, &b, &[&b_ws]).await;
    peer(&b, &c, &[&c_ws], false).await;

    // Control: from D the chain reaches C.
    let body = d.gql(&d_user, FEDERATED_TASKS, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(titles(&body["data"]), ["task at beta", "task at gamma"]);

    // From A (limit 1): B answers; B does not send C a request C would refuse
    // (it would arrive through A and B), and reports C as skipped.
    let body = a.gql(&a_user, FEDERATED_TASKS, json!({})).await;
    assert_eq!(titles(&body["data"]), ["task at alpha", "task at beta"], "{body}");
    assert!(!row_instances(&body["data"]).contains(&id(&c).to_string()));
    let errors = body["errors"].as_array().expect("C's failure is reported");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["extensions"]["code"], "HOP_LIMIT_EXCEEDED", "{body}");
    assert_eq!(errors[0]["extensions"]["instance"], id(&c).to_string(), "{body}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("gamma: ") && message.contains("hop limit"),
        "the message names C and the limit: {message}"
    );
    let summary = &body["extensions"]["federation"];
    assert_eq!(
        (
            &summary["total"],
            &summary["succeeded"],
            &summary["failed"],
            &summary["skipped"]
        ),
        (&json!(3), &json!(2), &json!(0), &json!(1)),
        "{summary}"
    );
    let c_outcome = summary["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id(&c).to_string())
        .expect("C is in the summary");
    assert_eq!(c_outcome["status"], "skipped");

    // What C actually said to B: HOP_LIMIT_EXCEEDED for a path [A, B] with limit 1.
    let mut e = envelope(&b);
    e.visited = vec![id(&a).to_string(), id(&b).to_string()];
    e.hop_limit = 1;
    assert_refused(
        &send_signed(&b, &c, QUERY, body_with(TASKS, json!({}), e)).await,
        403,
        "HOP_LIMIT_EXCEEDED",
    );
}

#[tokio::test]
async fn peered_both_ways_a_federated_query_does_not_loop_or_duplicate() {
    let (a, b) = tokio::join!(spawn_instance("alpha"), spawn_instance("beta"));
    let (_, a_user) = a.user("user@alpha.example").await;
    let a_ws = a.create_workspace(&a_user, "a-ws").await;
    a.create_task(&a_user, &a_ws, "task at alpha 1").await;
    a.create_task(&a_user, &a_ws, "task at alpha 2").await;
    let (_, b_user) = b.user("user@beta.example").await;
    let b_ws = b.create_workspace(&b_user, "b-ws").await;
    b.create_task(&b_user, &b_ws, "task at beta").await;
    peer(&a, &b, &[&b_ws], false).await;
    peer(&b, &a, &[&a_ws], false).await;

    for (from, token) in [(&a, &a_user), (&b, &b_user)] {
        let body = from.gql(token, FEDERATED_TASKS, json!({})).await;
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(
            titles(&body["data"]),
            ["task at alpha 1", "task at alpha 2", "task at beta"],
            "each row once: {body}"
        );
        let mut ids: Vec<&str> = body["data"]["tasks"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        assert_eq!(body["extensions"]["federation"]["total"], 2, "{body}");
        assert_eq!(body["extensions"]["federation"]["succeeded"], 2, "{body}");
    }

    // What stopped the loop: B does not ask A back (A is on the path); had it
    // asked, A would have refused the cycle.
    let mut e = envelope(&b);
    e.visited = vec![id(&a).to_string(), id(&b).to_string()];
    assert_refused(
        &send_signed(&b, &a, QUERY, body_with(TASKS, json!({}), e)).await,
        403,
        "CYCLE_DETECTED",
    );
}

// ---------------------------------------------------------------------------
// Grants
// ---------------------------------------------------------------------------

#[tokio::test]
async fn grant_decides_commands_mutations_and_users() {
    let Pair { a, b, granted } = pair(false).await;
    let vars = json!({ "w": granted });
    let before = b.row_counts().await;

    // A mutation on a read-only grant.
    assert_refused(
        &send_signed(&a, &b, COMMAND, body_with(CREATE_TASK, vars.clone(), envelope(&a))).await,
        403,
        "GRANT_DENIED",
    );
    // A mutation sent as QUERY (whatever the grant).
    assert_refused(
        &send_signed(&a, &b, QUERY, body_with(CREATE_TASK, vars.clone(), envelope(&a))).await,
        400,
        "BAD_REQUEST",
    );
    // A body that is not a SubRequest (signed correctly).
    assert_refused(
        &send_signed(&a, &b, QUERY, br#"{"query": 1}"#.to_vec()).await,
        400,
        "BAD_REQUEST",
    );
    assert_eq!(b.row_counts().await, before, "nothing refused was written");

    // Read-write: the same COMMAND runs (so GRANT_DENIED above was the grant).
    b.state
        .federation
        .approve(
            id(&a),
            &common::grant(&[common::local_id(&granted)], true, None),
            "test",
        )
        .await
        .unwrap();
    let ok = send_signed(&a, &b, COMMAND, body_with(CREATE_TASK, vars.clone(), envelope(&a))).await;
    assert_ok(&ok);
    assert_eq!(ok.1["data"]["createTask"]["title"], "from a peer");
    // Still: a mutation never travels as QUERY.
    assert_refused(
        &send_signed(&a, &b, QUERY, body_with(CREATE_TASK, vars, envelope(&a))).await,
        400,
        "BAD_REQUEST",
    );

    // A grant limited to named users.
    let users = vec!["x@example.com".to_string()];
    b.state
        .federation
        .approve(
            id(&a),
            &common::grant(&[common::local_id(&granted)], false, Some(&users)),
            "test",
        )
        .await
        .unwrap();
    let as_actor = |email: &str| {
        let mut e = envelope(&a);
        e.actor = Some(Actor {
            user: format!("User:{}:{}", id(&a), Uuid::new_v4()),
            email: Some(email.to_string()),
        });
        body_with(TASKS, json!({}), e)
    };
    assert_refused(
        &send_signed(&a, &b, QUERY, as_actor("someone@example.com")).await,
        403,
        "GRANT_DENIED",
    );
    assert_refused(&send_signed(&a, &b, QUERY, tasks_body(&a)).await, 403, "GRANT_DENIED");
    let ok = send_signed(&a, &b, QUERY, as_actor("x@example.com")).await;
    assert_ok(&ok);
    assert_eq!(titles(&ok.1["data"]), ["from a peer", "granted task"]);
    assert_ok(&send_signed(&a, &b, QUERY, as_actor("X@Example.com")).await);
}

#[tokio::test]
async fn subquery_runs_under_the_grant_only() {
    let Pair { a, b, granted } = pair(false).await;

    let ok = send_signed(&a, &b, QUERY, tasks_body(&a)).await;
    assert_ok(&ok);
    assert_eq!(titles(&ok.1["data"]), ["granted task"], "not B's private workspace");
    for edge in ok.1["data"]["tasks"]["edges"].as_array().unwrap() {
        assert_eq!(edge["node"]["workspace"]["id"], granted.as_str());
        assert_eq!(edge["node"]["instance"]["id"], id(&b).to_string());
    }

    let ws = send_signed(
        &a,
        &b,
        QUERY,
        body_with("{ workspaces { id name } }", json!({}), envelope(&a)),
    )
    .await;
    assert_ok(&ws);
    assert_eq!(
        ws.1["data"]["workspaces"],
        json!([{ "id": granted, "name": "granted" }])
    );

    // `me` is a local user's: a peer has none.
    let me = send_signed(&a, &b, QUERY, body_with("{ me { id email } }", json!({}), envelope(&a))).await;
    assert_eq!(me.0, 200, "{}", me.1);
    assert_eq!(codes(&me.1), ["FORBIDDEN"], "{}", me.1);
    assert!(me.1["data"].is_null(), "{}", me.1);

    // Nor the peer administration.
    let peers = send_signed(&a, &b, QUERY, body_with("{ peers { id } }", json!({}), envelope(&a))).await;
    assert_eq!(codes(&peers.1), ["FORBIDDEN"], "{}", peers.1);
}

// ---------------------------------------------------------------------------
// Lifecycle through the admin API
// ---------------------------------------------------------------------------

const PEERS: &str = "{ peers { id name baseUrl inboundState outboundState grant { workspaces readWrite users } keyFingerprints audit { actor action } } }";

fn peer_entry<'v>(peers: &'v Value, of: &TestApp) -> &'v Value {
    peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id(of).to_string())
        .unwrap_or_else(|| panic!("no peer {} in {peers}", id(of)))
}

#[tokio::test]
async fn lifecycle_connect_approve_query_revoke_through_the_admin_api() {
    let (a, b) = tokio::join!(spawn_instance("alpha"), spawn_instance("beta"));
    let a_admin = admin_token(&a, "admin@alpha.example").await;
    let b_admin = admin_token(&b, "admin@beta.example").await;
    let (_, a_user) = a.user("user@alpha.example").await;
    let (_, b_user) = b.user("user@beta.example").await;
    let a_ws = a.create_workspace(&a_user, "a-ws").await;
    a.create_task(&a_user, &a_ws, "task at alpha").await;
    let b_ws = b.create_workspace(&b_user, "b-ws").await;
    b.create_task(&b_user, &b_ws, "task at beta").await;
    let connect = "mutation($u: String!) { connectPeer(url: $u) { id inboundState outboundState } }";
    let approve = "mutation($p: String!, $w: [ID!]!) { approvePeer(input: {peerId: $p, workspaceIds: $w, readWrite: false}) { id inboundState grant { workspaces readWrite users } } }";

    // Non-admins may not look or act.
    assert_eq!(code(&a.gql(&a_user, PEERS, json!({})).await), "FORBIDDEN");
    assert_eq!(
        code(&a.gql(&a_user, connect, json!({ "u": b.base })).await),
        "FORBIDDEN"
    );
    assert!(
        mosaic::federation::registry::list(&a.state.federation.pool)
            .await
            .unwrap()
            .is_empty(),
        "a refused connectPeer did nothing"
    );

    // A's admin connects.
    let d = a.gql_ok(&a_admin, connect, json!({ "u": b.base })).await;
    assert_eq!(d["connectPeer"]["id"], id(&b).to_string());
    assert_eq!(d["connectPeer"]["outboundState"], "requested");
    let d = b.gql_ok(&b_admin, PEERS, json!({})).await;
    let at_b = peer_entry(&d, &a);
    assert_eq!(at_b["inboundState"], "pending", "{at_b}");
    assert_eq!(at_b["name"], "alpha");
    assert_eq!(at_b["baseUrl"], a.base);
    let (a_key, _) = a.state.federation.keys.current().await.unwrap();
    assert_eq!(at_b["keyFingerprints"], json!([a_key]));

    // Pending: a federated query from A does not reach B yet.
    let body = a.gql(&a_user, FEDERATED_TASKS, json!({})).await;
    assert_eq!(titles(&body["data"]), ["task at alpha"], "{body}");

    // B's non-admin may not approve.
    let vars = json!({ "p": id(&a).to_string(), "w": [b_ws] });
    assert_eq!(code(&b.gql(&b_user, approve, vars.clone()).await), "FORBIDDEN");
    assert_eq!(code(&b.gql(&b_user, PEERS, json!({})).await), "FORBIDDEN");

    // B's admin approves; A hears of it.
    let d = b.gql_ok(&b_admin, approve, vars).await;
    assert_eq!(d["approvePeer"]["inboundState"], "active");
    assert_eq!(
        d["approvePeer"]["grant"],
        json!({ "workspaces": [b_ws], "readWrite": false, "users": null })
    );
    let d = a.gql_ok(&a_admin, PEERS, json!({})).await;
    assert_eq!(peer_entry(&d, &b)["outboundState"], "active", "{d}");

    // A federated query from A now includes B's rows.
    let body = a.gql(&a_user, FEDERATED_TASKS, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(titles(&body["data"]), ["task at alpha", "task at beta"]);
    assert!(row_instances(&body["data"]).contains(&id(&b).to_string()));

    // B revokes: A's next federated query has no B rows.
    let d = b
        .gql_ok(
            &b_admin,
            "mutation($p: String!) { revokePeer(peerId: $p) { inboundState outboundState } }",
            json!({ "p": id(&a).to_string() }),
        )
        .await;
    assert_eq!(d["revokePeer"]["inboundState"], "revoked");
    let body = a.gql(&a_user, FEDERATED_TASKS, json!({})).await;
    assert_eq!(titles(&body["data"]), ["task at alpha"], "{body}");
    assert!(!row_instances(&body["data"]).contains(&id(&b).to_string()));
    // B's DISCONNECT reached A, so A does not even ask B (no error for B).
    assert!(body.get("errors").is_none(), "{body}");
    let d = a.gql_ok(&a_admin, PEERS, json!({})).await;
    assert_eq!(peer_entry(&d, &b)["outboundState"], "revoked", "{d}");

    // B's audit trail, with who did what.
    let d = b.gql_ok(&b_admin, PEERS, json!({})).await;
    let audit: Vec<(String, String)> = peer_entry(&d, &a)["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        audit,
        [
            ("connect_received".to_string(), "peer:alpha".to_string()),
            ("approved".to_string(), "admin@beta.example".to_string()),
            ("revoked".to_string(), "admin@beta.example".to_string()),
        ]
    );

    // A signed QUERY from A, straight to B, is refused.
    assert_refused(
        &send_signed(&a, &b, QUERY, tasks_body(&a)).await,
        403,
        "PEER_NOT_ACTIVE",
    );
}

// ---------------------------------------------------------------------------
// Identity document
// ---------------------------------------------------------------------------

#[tokio::test]
async fn well_known_document_verifies_and_lists_rotated_keys() {
    let (a, b) = tokio::join!(spawn_instance("alpha"), spawn_instance("beta"));
    let doc = well_known(&b, &a).await;
    document::verify_document(&doc).expect("the document verifies under its own key");
    let (key_id, key) = a.state.federation.keys.current().await.unwrap();
    let d = &doc.document;
    assert_eq!(d.protocol, document::PROTOCOL);
    assert_eq!(d.instance_id, id(&a).to_string());
    assert_eq!(d.name, "alpha");
    assert_eq!(d.base_url, a.base);
    assert_eq!(doc.key_id, key_id);
    assert_eq!(d.current_key.key_id, key_id);
    assert_eq!(d.current_key.valid_until, None);
    assert_eq!(
        d.current_key.verifying_key(),
        Some(key.verifying_key()),
        "the published key is A's signing key"
    );
    assert!(d.old_keys.is_empty());
    assert_eq!(d.schema_hash, a.state.federation.schema_hash);
    assert_eq!(d.schema_hash.len(), 32);
    assert_eq!(
        d.schema_hash, b.state.federation.schema_hash,
        "same version, same schema"
    );
    for capability in ["connect", "query", "command", "event", "disconnect"] {
        assert!(d.capabilities.iter().any(|c| c == capability), "{capability}");
    }
    assert!((d.issued_at - now_unix()).abs() <= 5);

    // Tampering is detected.
    let mut forged = doc.clone();
    forged.document.base_url = "https://127.0.0.1:1".into();
    assert!(document::verify_document(&forged).is_err());

    // After a rotation with a grace: the new key is current, the old one is
    // listed with its valid_until; the document is signed by the new key.
    let rotated_at = now_unix();
    let new_id = rotate(&a, time::Duration::hours(1)).await;
    let doc = well_known(&b, &a).await;
    document::verify_document(&doc).expect("the rotated document verifies");
    assert_eq!(doc.key_id, new_id);
    assert_eq!(doc.document.current_key.key_id, new_id);
    assert_eq!(doc.document.old_keys.len(), 1);
    let old = &doc.document.old_keys[0];
    assert_eq!(old.key_id, key_id);
    assert_eq!(old.verifying_key(), Some(key.verifying_key()));
    let until = old.valid_until.expect("the old key has an expiry");
    assert!(
        (until - (rotated_at + 3600)).abs() <= 5,
        "valid_until is rotation + grace: {until}"
    );

    // A second rotation without grace: the first retired key stays (its
    // grace runs on), the key just retired is not listed.
    let newest = rotate(&a, time::Duration::ZERO).await;
    let doc = well_known(&b, &a).await;
    document::verify_document(&doc).unwrap();
    assert_eq!(doc.document.current_key.key_id, newest);
    let listed: Vec<&str> = doc.document.old_keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(listed, [key_id.as_str()]);
}

// ---------------------------------------------------------------------------
// CONNECT cannot take over a registered identity
// ---------------------------------------------------------------------------

/// Serves `doc` at `/.well-known/mosaic` over HTTPS (test CA) at `url`.
async fn serve_identity(listener: tokio::net::TcpListener, doc: SignedDocument) {
    let pki = common::pki();
    let tls = mosaic::federation::tls::server_config(&pki.cert, &pki.key).unwrap();
    let router = axum::Router::new().route(
        protocol::WELL_KNOWN_PATH,
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    let listener = listener.into_std().unwrap();
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))
            .unwrap()
            .serve(router.into_make_service())
            .await
            .unwrap();
    });
}

#[tokio::test]
async fn connect_cannot_replace_the_key_of_a_registered_peer() {
    let Pair { a, b, .. } = pair(false).await;
    let registered = mosaic::federation::registry::get(&b.state.federation.pool, id(&a))
        .await
        .unwrap()
        .unwrap();

    // An impostor with its own key and its own HTTPS server claims A's instance id.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let evil_key = SigningKey::from_bytes(&[66u8; 32]);
    let vk = evil_key.verifying_key();
    let evil_key_id = signing::key_id(&vk);
    let forged = document::sign_document(
        document::IdentityDocument {
            protocol: document::PROTOCOL.into(),
            instance_id: id(&a).to_string(),
            name: "alpha".into(),
            base_url: evil_url.clone(),
            current_key: document::PublicKey {
                key_id: evil_key_id.clone(),
                public_key: URL_SAFE_NO_PAD.encode(vk.as_bytes()),
                valid_until: None,
            },
            old_keys: Vec::new(),
            schema_hash: a.state.federation.schema_hash.clone(),
            capabilities: vec!["connect".into(), "query".into()],
            issued_at: now_unix(),
        },
        &evil_key,
    );
    serve_identity(listener, forged.clone()).await;

    let connect = serde_json::to_vec(&protocol::ConnectRequest { identity: forged }).unwrap();
    let p = params(&a, id(&b), protocol::CONNECT_PATH, &connect, &evil_key_id);
    let answer = post(&a, &b, protocol::CONNECT_PATH, Some(&header(&p, &evil_key)), connect).await;
    let after = mosaic::federation::registry::get(&b.state.federation.pool, id(&a))
        .await
        .unwrap()
        .unwrap();
    let query = tasks_body(&a);
    let p = params(&a, id(&b), QUERY, &query, &evil_key_id);
    let stolen = post(&a, &b, QUERY, Some(&header(&p, &evil_key)), query).await;

    let what_happened = format!(
        "CONNECT answered {} {}; B now has A at {} with keys {:?}; impostor's QUERY answered {} {}",
        answer.0,
        answer.1,
        after.base_url,
        after.keys.iter().map(|k| &k.key_id).collect::<Vec<_>>(),
        stolen.0,
        stolen.1
    );
    assert!(
        answer.0 >= 400,
        "a CONNECT for a registered instance id, signed by another key, is refused: {what_happened}"
    );
    assert_eq!(after.base_url, registered.base_url, "the peer's base URL is unchanged");
    assert_eq!(*after.keys, *registered.keys, "the peer's keys are unchanged");
    assert_unauthenticated(&stolen, "UNKNOWN_KEY");
}

/// A peer that only asked to connect to us (our outbound state: none) cannot
/// make us query it by sending decisions we never asked for.
#[tokio::test]
async fn unsolicited_events_cannot_make_us_query_a_peer() {
    use mosaic::federation::protocol::{EVENT_PATH, Event};
    let a = spawn_instance("victim").await;
    let b = spawn_instance("intruder").await;
    // B asks A; A has no request of its own toward B.
    b.state
        .federation
        .connect(&a.base, "test")
        .await
        .expect("CONNECT accepted");
    let outbound = |app: &TestApp, other: Uuid| {
        let pool = app.state.federation.pool.clone();
        async move {
            mosaic::federation::registry::get(&pool, other)
                .await
                .unwrap()
                .unwrap()
                .outbound_state
        }
    };
    let a_id = a.state.instance_id;
    let b_id = b.state.instance_id;
    assert_eq!(outbound(&a, b_id).await, "none");
    for event in [
        Event::Suspended,
        Event::Granted {
            read_write: true,
            workspaces: vec![],
        },
        Event::Rejected,
    ] {
        let err = b
            .state
            .federation
            .send::<_, serde_json::Value>(a_id, &a.base, EVENT_PATH, &event, Duration::from_secs(5))
            .await
            .expect_err("A refuses decisions about a request it never made");
        assert_eq!(
            err.refusal.as_deref(),
            Some("BAD_REQUEST"),
            "{event:?}: {}",
            err.message
        );
        assert_eq!(outbound(&a, b_id).await, "none", "{event:?} changed nothing");
    }
}

/// Two requests of one peer admitted at once (migration 0085): the one
/// that read the clock first but reached the bucket second is not refused
/// for the time between, since a bucket never refills backwards.
#[tokio::test]
async fn overlapping_admissions_never_refill_a_bucket_backwards() {
    let b = spawn_instance("beta").await;
    let origin = Uuid::new_v4().to_string();
    let keep_until = now_unix() + 60;
    // Two tokens, refilled at 100,000 a second: a millisecond backwards costs a hundred.
    // "new", or the refusal's outcome (SQLSTATE MSADM, the outcome as its message).
    let admit = async |conn: &mut sqlx::PgConnection, nonce: &str| -> String {
        let admitted = sqlx::query("SELECT admit_peer_request_or_refuse($1, $2, $3, 100000, 2)")
            .bind(&origin)
            .bind(nonce)
            .bind(keep_until)
            .execute(conn)
            .await;
        match admitted {
            Ok(_) => "new".into(),
            Err(e) => match e.as_database_error() {
                Some(db) if db.code().as_deref() == Some("MSADM") => db.message().to_string(),
                _ => panic!("{e}"),
            },
        }
    };
    let (mut first, mut second) = (b.admin().await, b.admin().await);
    sqlx::raw_sql("BEGIN").execute(&mut first).await.unwrap();
    assert_eq!(admit(&mut first, "n0").await, "new");
    // The second reads the clock, then waits for the first's lock on the bucket.
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut second)
        .await
        .unwrap();
    let watch = sqlx::PgPool::connect(&b.database_url).await.unwrap();
    let first_moves_on = async {
        common::eventually(
            Duration::from_secs(10),
            "the second admission waits on the bucket",
            || {
                let watch = watch.clone();
                async move {
                    sqlx::query_scalar::<_, Option<String>>(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                    )
                    .bind(pid)
                    .fetch_one(&watch)
                    .await
                    .unwrap()
                    .as_deref()
                        == Some("Lock")
                }
            },
        )
        .await;
        // The first moves the bucket's time past the second's reading, and commits.
        assert_eq!(admit(&mut first, "n2").await, "new");
        sqlx::raw_sql("COMMIT").execute(&mut first).await.unwrap();
    };
    let (second_outcome, ()) = tokio::join!(admit(&mut second, "n1"), first_moves_on);
    assert_eq!(second_outcome, "new", "a token was left");
}

/// The replay cache's room for a peer covers what its rate limit lets it
/// send while a nonce is kept: at the default limit (200/s) the default
/// room (10,000) would refuse a peer within its rate after 50 s.
#[tokio::test]
async fn a_peer_within_its_rate_limit_always_has_room_for_its_nonces() {
    let (a, b) = tokio::join!(
        spawn_instance("alpha"),
        spawn_instance_with("beta", |c| {
            c.federation.nonces_per_peer = 5;
            c.federation.rate_limit_per_second = 1000.0;
            c.federation.rate_limit_burst = 50;
        }),
    );
    let (_, owner) = b.user("owner@beta.example").await;
    let granted = b.create_workspace(&owner, "granted").await;
    peer(&a, &b, &[&granted], false).await;
    let held = b.state.federation.replay.len();
    for _ in 0..20 {
        assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
    }
    assert_eq!(b.state.federation.replay.len(), held + 20, "every nonce is held");
}

#[tokio::test]
async fn a_peer_over_its_rate_limit_gets_429_and_others_are_unaffected() {
    let (a, b, c) = tokio::join!(
        spawn_instance("alpha"),
        spawn_instance_with("beta", |c| {
            // A token every 5 s: the burst is spent long before one comes back.
            c.federation.rate_limit_per_second = 0.2;
            c.federation.rate_limit_burst = 3;
        }),
        spawn_instance("gamma"),
    );
    let (_, owner) = b.user("owner@beta.example").await;
    let granted = b.create_workspace(&owner, "granted").await;
    b.create_task(&owner, &granted, "granted task").await;
    peer(&a, &b, &[&granted], false).await;
    // Gamma's grant sets its own limit: a burst of five, not the instance's three.
    let own = mosaic::federation::grant::Terms {
        rate_limit: Some(mosaic::federation::grant::RateLimit {
            per_second: 0.2,
            burst: 5,
        }),
        ..common::grant(&[common::local_id(&granted)], false, None)
    };
    common::peer_with(&c, &b, own).await;

    // The burst, then 429 with when to come back.
    for _ in 0..3 {
        assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
    }
    let refused = common::post_signed(&a, &b, QUERY, tasks_body(&a)).await;
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(code(&answer), "RATE_LIMITED", "{answer}");
    let wait = answer["errors"][0]["extensions"]["retryAfterMs"].as_u64().unwrap();
    assert!(
        (1..=5000).contains(&wait),
        "a token at 0.2/s is at most 5 s away: {wait}"
    );
    assert_eq!(
        retry_after,
        wait.div_ceil(1000),
        "Retry-After is the wait in whole seconds"
    );

    // Another peer has its own bucket, and here its grant's own size.
    assert_ok(&send_signed(&c, &b, QUERY, tasks_body(&c)).await);
    // A replayed request spends no token, and is refused as a replay.
    let body = tasks_body(&c);
    let captured = c.state.federation.sign(id(&b), QUERY, &body).await.unwrap();
    assert_ok(&post(&c, &b, QUERY, Some(&captured), body.clone()).await);
    for _ in 0..3 {
        assert_refused(
            &post(&c, &b, QUERY, Some(&captured), body.clone()).await,
            401,
            "REPLAYED_NONCE",
        );
    }
    for _ in 0..3 {
        assert_ok(&send_signed(&c, &b, QUERY, tasks_body(&c)).await);
    }
    assert_refused(&send_signed(&c, &b, QUERY, tasks_body(&c)).await, 429, "RATE_LIMITED");

    // Waiting as told is enough.
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_ok(&send_signed(&a, &b, QUERY, tasks_body(&a)).await);
    assert_refused(&send_signed(&a, &b, QUERY, tasks_body(&a)).await, 429, "RATE_LIMITED");
}
