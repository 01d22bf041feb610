//! Attacks a client (not a peer) can make on a running instance, each driven
//! the way an attacker would (raw sockets, raw SQL as the request role, real
//! agent containers), one section per item of issue 10.

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestApp, memory_kib, spawn_app_with, spawn_instance_with};
use mosaic::config::Config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

// ---------------------------------------------------------------------------
// Item 8: connections are bounded in time and number.
// ---------------------------------------------------------------------------

fn short_timeouts(c: &mut Config) {
    c.limits.header_read_timeout = Duration::from_millis(500);
    c.limits.idle_timeout = Duration::from_millis(800);
    c.limits.tls_handshake_timeout = Duration::from_millis(500);
}

/// How long the server may take past a timeout to actually close (its close
/// grace of one second, plus scheduling).
const CLOSE_SLACK: Duration = Duration::from_millis(2500);

fn server_addr(app: &TestApp) -> SocketAddr {
    let url = app.base.split("://").nth(1).unwrap();
    url.parse().unwrap()
}

/// A TCP connection to the instance from the given loopback address.
async fn connect_from(app: &TestApp, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(server_addr(app)).await.expect("TCP connect")
}

/// Reads (discarding) until the server closes the connection; the time it
/// took, or None if it was still open after `limit`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_to_end)
        .await
        .ok()
        .map(|()| start.elapsed())
}

/// `GET /healthz` over a fresh connection from `from`; the status line, or None
/// if the server closed the connection without answering.
async fn healthz_from(app: &TestApp, from: &str) -> Option<String> {
    let mut stream = connect_from(app, from).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: mosaic\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .map(str::to_string)
}

/// A TLS client trusting the test CA, offering only `alpn`.
fn tls_connector(alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut config = mosaic::federation::tls::client_config(Some(&common::pki().ca_cert)).unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn silent_and_half_sent_plain_connections_are_closed_by_the_server() {
    let app = spawn_app_with(short_timeouts).await;
    let bound = app.state.config.limits.idle_timeout + CLOSE_SLACK;
    let opened = Instant::now();

    // Connects and says nothing.
    let mut silent = connect_from(&app, "127.0.0.1").await;
    // Sends the start of a request head, then nothing.
    let mut half = connect_from(&app, "127.0.0.1").await;
    half.write_all(b"POST /graphql HTTP/1.1\r\nHost: mosaic\r\nContent-Ty")
        .await
        .unwrap();
    // Sends one request, keeps the connection, never sends another.
    let mut kept = connect_from(&app, "127.0.0.1").await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: mosaic\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    for (what, stream) in [
        ("silent", &mut silent),
        ("half-sent head", &mut half),
        ("idle keep-alive", &mut kept),
    ] {
        let closed = closed_within(stream, bound).await;
        assert!(closed.is_some(), "{what} connection still open after {bound:?}");
        eprintln!(
            "{what} connection closed by the server {:?} after it opened",
            opened.elapsed()
        );
    }
    assert!(opened.elapsed() < bound, "all closed within {bound:?}");
    assert_eq!(
        healthz_from(&app, "127.0.0.1").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    app.stop().await;
}

#[tokio::test]
async fn silent_tls_connections_are_closed_by_the_server() {
    let app = spawn_instance_with("tls", short_timeouts).await;
    let limits = &app.state.config.limits;

    // TCP only: the TLS handshake never starts.
    let mut no_handshake = connect_from(&app, "127.0.0.1").await;
    let took = closed_within(&mut no_handshake, limits.tls_handshake_timeout + CLOSE_SLACK).await;
    assert!(took.is_some(), "a connection without a TLS handshake stayed open");
    eprintln!("no handshake: closed after {:?}", took.unwrap());

    // A complete handshake, then silence, over HTTP/1.1 and over HTTP/2.
    for alpn in [b"http/1.1".to_vec(), b"h2".to_vec()] {
        let connector = tls_connector(&alpn);
        let tcp = connect_from(&app, "127.0.0.1").await;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn.as_slice()));
        let took = closed_within(&mut tls, limits.idle_timeout + CLOSE_SLACK).await;
        let alpn = String::from_utf8_lossy(&alpn).to_string();
        assert!(took.is_some(), "a silent TLS connection ({alpn}) stayed open");
        eprintln!("silent TLS ({alpn}): closed after {:?}", took.unwrap());
    }
    app.stop().await;
}

#[tokio::test]
async fn connection_caps_hold_per_address_and_in_total() {
    let app = spawn_app_with(|c| {
        c.limits.max_connections_per_address = 4;
        c.limits.max_connections = 8;
        c.limits.idle_timeout = Duration::from_secs(60);
        c.limits.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let quick = Duration::from_secs(2);

    let mut first: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        first.push(connect_from(&app, "127.0.0.1").await);
    }
    // One more from the same address is closed at once, long before any timeout.
    let mut over = connect_from(&app, "127.0.0.1").await;
    assert!(
        closed_within(&mut over, quick).await.is_some(),
        "per-address cap not enforced"
    );
    // The four admitted ones are still open.
    for stream in &mut first {
        assert!(closed_within(stream, Duration::from_millis(100)).await.is_none());
    }
    // Another address is still served.
    assert_eq!(
        healthz_from(&app, "127.0.0.2").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );

    // Four more from a third address fill the total of eight; a ninth is closed.
    let mut second: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        second.push(connect_from(&app, "127.0.0.3").await);
    }
    for stream in &mut second {
        assert!(closed_within(stream, Duration::from_millis(100)).await.is_none());
    }
    let mut ninth = connect_from(&app, "127.0.0.4").await;
    assert!(
        closed_within(&mut ninth, quick).await.is_some(),
        "total cap not enforced"
    );

    // Once the first address lets go, others are served again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if healthz_from(&app, "127.0.0.4").await.as_deref() == Some("HTTP/1.1 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_half_sent_requests_from_one_address_is_capped_and_memory_stays_bounded() {
    const FLOOD: usize = 1000;
    const CAP: usize = 16;
    let app = spawn_app_with(|c| {
        c.limits.max_connections_per_address = CAP;
        c.limits.max_connections = 256;
        c.limits.idle_timeout = Duration::from_secs(60);
        c.limits.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    assert_eq!(
        healthz_from(&app, "127.0.0.2").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let (rss_before, hwm_before) = memory_kib();

    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let mut stream = connect_from(&app, "127.0.0.1").await;
        // A long, never-finished head: each header line promises more.
        let _ = stream
            .write_all(b"POST /graphql HTTP/1.1\r\nHost: mosaic\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
            .await;
        flood.push(stream);
    }
    // Another address is served throughout.
    assert_eq!(
        healthz_from(&app, "127.0.0.2").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );

    let checks = flood
        .into_iter()
        .map(|mut s| tokio::spawn(async move { closed_within(&mut s, Duration::from_secs(3)).await.is_none() }));
    let still_open = futures::future::join_all(checks)
        .await
        .into_iter()
        .filter(|open| *open.as_ref().unwrap())
        .count();
    let (rss_after, hwm_after) = memory_kib();
    eprintln!(
        "flood of {FLOOD} half-sent requests: {still_open} left open; VmRSS {rss_before} -> {rss_after} KiB, \
         VmHWM {hwm_before} -> {hwm_after} KiB"
    );
    assert_eq!(still_open, CAP, "only the per-address cap stays open");
    assert!(
        hwm_after.saturating_sub(hwm_before) < 16 * 1024,
        "peak memory grew by {} KiB",
        hwm_after - hwm_before
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Item 16: an agent cannot set cookies or security policy on Mosaic's origin.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn agent_answers_set_no_cookie_and_no_origin_policy() {
    let app = spawn_app_with(|c| {
        c.agents.image = "mosaic-test-agent:latest".into();
        c.agents.start_timeout = Duration::from_secs(20);
    })
    .await;
    let _cleanup = common::Cleanup(app.state.instance_id);
    let (_, token) = app.user("mallory@example.com").await;

    // The image's /cgi-bin/hostile (scripts/docker-test-env) answers with
    // cookies, HSTS, CSP, CORS, Clear-Site-Data and more.
    let answer = app
        .client
        .get(format!("{}/agent/cgi-bin/hostile", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        200,
        "run `bash scripts/docker-test-env` (image revision 7)"
    );
    let headers = answer.headers().clone();
    let body = answer.text().await.unwrap();
    assert!(body.contains("<script>"), "the agent's content itself passes: {body}");
    for dropped in [
        "set-cookie",
        "set-cookie2",
        "strict-transport-security",
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "clear-site-data",
        "service-worker-allowed",
        "refresh",
        "link",
    ] {
        assert!(!headers.contains_key(dropped), "{dropped} passed through: {headers:?}");
    }
    // Content headers pass; Mosaic's own policy replaces the agent's.
    assert_eq!(headers["content-type"], "text/html");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["etag"], "\"agent-etag\"");
    let csp: Vec<_> = headers.get_all("content-security-policy").iter().collect();
    assert_eq!(csp.len(), 1, "{csp:?}");
    let csp = csp[0].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("sandbox"), "{csp}");
    assert!(!csp.contains("script-src *"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Item 15: the request role holds only what requests need.
// ---------------------------------------------------------------------------

/// An error's text must say the privilege is missing.
fn assert_denied<T: std::fmt::Debug>(what: &str, result: Result<T, sqlx::Error>) {
    let err = result.expect_err(what);
    assert!(err.to_string().contains("permission denied"), "{what}: {err}");
}

#[tokio::test]
async fn the_request_role_cannot_read_private_keys_or_call_tenant_wide_functions() {
    use sqlx::Connection;
    let a = spawn_instance_with("alpha", |_| {}).await;
    let b = spawn_instance_with("beta", |_| {}).await;
    let (alice_id, alice) = a.user("alice@example.com").await;
    let (bob_id, bob) = a.user("bob@example.com").await;
    let ws_alice = a.create_workspace(&alice, "Alice's secret workspace").await;
    a.create_workspace(&bob, "Bob's").await;

    let mut conn = sqlx::PgConnection::connect(&a.database_url).await.unwrap();
    sqlx::raw_sql("SET ROLE mosaic_app").execute(&mut conn).await.unwrap();

    // The sealed private key is out of reach; the public halves are not.
    assert_denied(
        "private key",
        sqlx::query_scalar::<_, Vec<u8>>("SELECT private_key_sealed FROM instance_keys")
            .fetch_all(&mut conn)
            .await,
    );
    assert_denied(
        "whole key rows",
        sqlx::query("SELECT * FROM instance_keys").fetch_all(&mut conn).await,
    );
    let public: Vec<Vec<u8>> = sqlx::query_scalar("SELECT public_key FROM instance_keys")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(public.len(), 1);
    assert_denied(
        "instance identity",
        sqlx::query("SELECT * FROM instance_identity")
            .fetch_all(&mut conn)
            .await,
    );

    // Definer functions requests never call are not callable, in or out of a scope.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('mosaic.user_id', $1, true)")
        .bind(bob_id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    for call in [
        "SELECT workspace_ids_named('Alice''s secret workspace')",
        "SELECT admin_require()",
        "SELECT admin_audit(gen_random_uuid(), 'x')",
        "SELECT admin_keep_one(gen_random_uuid())",
    ] {
        let mut savepoint = tx.begin().await.unwrap();
        assert_denied(call, sqlx::query(call).fetch_all(&mut *savepoint).await);
        savepoint.rollback().await.unwrap();
    }
    // Those that stay callable answer only within the caller's scope: Bob
    // learns nothing of Alice's membership of her workspace.
    let role: Option<String> = sqlx::query_scalar("SELECT workspace_role($1, $2)")
        .bind(common::local_id(&ws_alice))
        .bind(alice_id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(role, None, "another tenant's membership leaked");
    tx.rollback().await.unwrap();

    // No definer function is executable by PUBLIC.
    let mut admin = a.admin().await;
    let public_definers: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef
           AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                            WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(public_definers.is_empty(), "executable by PUBLIC: {public_definers:?}");

    // The instance still signs with its key: a signed CONNECT and the approval
    // travel between the two instances, and Alice still works in her workspace.
    common::peer(&b, &a, &[&ws_alice], false).await;
    a.create_task(&alice, &ws_alice, "still works").await;
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------
// Item 12: invitations tell nothing about accounts and need the invitee's consent.
// ---------------------------------------------------------------------------

const INVITE: &str = "mutation($w: ID!, $e: String!, $r: WorkspaceRole!) { inviteWorkspaceMember(input: {workspaceId: $w, email: $e, role: $r}) { id workspaceId workspaceName email role status createdAt expiresAt } }";
const MY_INVITATIONS: &str = "{ myInvitations { id workspaceName email role status } }";
const ACCEPT: &str = "mutation($i: ID!) { acceptInvitation(id: $i) { id name viewerRole } }";

/// The answer with what differs by nature (IDs, addresses, times) blanked.
fn shape(mut answer: serde_json::Value) -> serde_json::Value {
    for field in ["id", "email", "createdAt", "expiresAt"] {
        assert!(answer[field].is_string(), "{field} in {answer}");
        answer[field] = serde_json::Value::Null;
    }
    answer
}

#[tokio::test]
async fn invitations_reveal_nothing_about_accounts_and_add_no_one_without_consent() {
    use serde_json::json;
    let app = common::spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (bob_id, bob) = app.user("bob@example.com").await;
    let (_, carol) = app.user("carol@example.com").await;
    let ws = app.create_workspace(&alice, "Alice's").await;

    // An address with an account and one without get the same answer.
    let (status_bob, to_bob) = app
        .gql_status(
            &alice,
            INVITE,
            json!({ "w": ws, "e": "Bob@Example.com", "r": "MEMBER" }),
        )
        .await;
    let (status_ghost, to_ghost) = app
        .gql_status(
            &alice,
            INVITE,
            json!({ "w": ws, "e": "ghost@example.com", "r": "MEMBER" }),
        )
        .await;
    assert_eq!((status_bob, status_ghost), (200, 200));
    let (to_bob, to_ghost) = (
        to_bob["data"]["inviteWorkspaceMember"].clone(),
        to_ghost["data"]["inviteWorkspaceMember"].clone(),
    );
    assert_eq!(to_bob["email"], "bob@example.com");
    assert_eq!(shape(to_bob.clone()), shape(to_ghost.clone()));
    assert_eq!(to_bob["status"], "PENDING");

    // Bob is not a member until he accepts; others cannot answer for him.
    let mut admin = app.admin().await;
    let is_member = |user: uuid::Uuid| {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = $1 AND user_id = $2)",
        )
        .bind(common::local_id(&ws))
        .bind(user)
    };
    assert!(!is_member(bob_id).fetch_one(&mut admin).await.unwrap());
    assert_eq!(
        app.gql_ok(&bob, "{ workspaces { id } }", json!({})).await["workspaces"],
        json!([])
    );
    assert_eq!(
        app.gql_ok(&carol, MY_INVITATIONS, json!({})).await["myInvitations"],
        json!([])
    );
    let before = common::fingerprint(&mut admin).await;
    let stolen = app.gql(&carol, ACCEPT, json!({ "i": to_bob["id"] })).await;
    assert_eq!(common::code(&stolen), "NOT_FOUND", "{stolen}");
    assert_eq!(common::fingerprint(&mut admin).await, before);

    // Bob sees his invitation and accepts it: now, and only now, a member.
    let mine = app.gql_ok(&bob, MY_INVITATIONS, json!({})).await;
    assert_eq!(
        mine["myInvitations"],
        json!([{ "id": to_bob["id"], "workspaceName": "Alice's", "email": "bob@example.com", "role": "MEMBER", "status": "PENDING" }])
    );
    let joined = app.gql_ok(&bob, ACCEPT, json!({ "i": to_bob["id"] })).await;
    assert_eq!(joined["acceptInvitation"]["viewerRole"], "MEMBER");
    assert!(is_member(bob_id).fetch_one(&mut admin).await.unwrap());
    let again = app.gql(&bob, ACCEPT, json!({ "i": to_bob["id"] })).await;
    assert_eq!(common::code(&again), "NOT_FOUND", "{again}");

    // The address without an account: whoever signs up with it (verified) may answer.
    let (ghost_id, ghost) = app.user("ghost@example.com").await;
    sqlx::query("UPDATE users SET email_verified = false WHERE id = $1")
        .bind(ghost_id)
        .execute(&mut admin)
        .await
        .unwrap();
    app.caught_up().await;
    assert_eq!(
        app.gql_ok(&ghost, MY_INVITATIONS, json!({})).await["myInvitations"],
        json!([]),
        "an unverified address proves nothing"
    );
    sqlx::query("UPDATE users SET email_verified = true WHERE id = $1")
        .bind(ghost_id)
        .execute(&mut admin)
        .await
        .unwrap();
    app.caught_up().await;
    app.gql_ok(
        &ghost,
        "mutation($i: ID!) { declineInvitation(id: $i) }",
        json!({ "i": to_ghost["id"] }),
    )
    .await;
    assert!(!is_member(ghost_id).fetch_one(&mut admin).await.unwrap());

    // A revoked invitation cannot be accepted.
    let (_, dave) = app.user("dave@example.com").await;
    let to_dave = app
        .gql_ok(
            &alice,
            INVITE,
            json!({ "w": ws, "e": "dave@example.com", "r": "GUEST" }),
        )
        .await["inviteWorkspaceMember"]["id"]
        .clone();
    app.gql_ok(
        &alice,
        "mutation($i: ID!) { revokeInvitation(id: $i) { status } }",
        json!({ "i": to_dave }),
    )
    .await;
    let late = app.gql(&dave, ACCEPT, json!({ "i": to_dave })).await;
    assert_eq!(common::code(&late), "NOT_FOUND", "{late}");

    // The admin sees how each invitation ended; a mere member sees none of it.
    let listed = app
        .gql_ok(
            &alice,
            "query($w: ID!) { workspace(id: $w) { invitations { email status } } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(
        listed["workspace"]["invitations"],
        json!([
            { "email": "dave@example.com", "status": "REVOKED" },
            { "email": "ghost@example.com", "status": "DECLINED" },
            { "email": "bob@example.com", "status": "ACCEPTED" },
        ])
    );
    let peek = app
        .gql(
            &bob,
            "query($w: ID!) { workspace(id: $w) { invitations { email } } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(common::code(&peek), "FORBIDDEN", "{peek}");

    // Bad input is refused naming the field, and changes nothing.
    let erin = app
        .gql_ok(
            &alice,
            INVITE,
            json!({ "w": ws, "e": "erin@example.com", "r": "MEMBER" }),
        )
        .await["inviteWorkspaceMember"]["id"]
        .clone();
    let long = format!("{}@example.com", "a".repeat(250));
    for (vars, code, field) in [
        (
            json!({ "w": ws, "e": "not-an-address", "r": "MEMBER" }),
            "BAD_USER_INPUT",
            "email",
        ),
        (json!({ "w": ws, "e": "  ", "r": "MEMBER" }), "BAD_USER_INPUT", "email"),
        (
            json!({ "w": ws, "e": "a\u{0}@example.com", "r": "MEMBER" }),
            "BAD_USER_INPUT",
            "email",
        ),
        (json!({ "w": ws, "e": long, "r": "MEMBER" }), "BAD_USER_INPUT", "email"),
        (
            json!({ "w": ws, "e": "bob@example.com", "r": "GUEST" }),
            "CONFLICT",
            "email",
        ),
        (
            json!({ "w": ws, "e": "ERIN@example.com", "r": "GUEST" }),
            "CONFLICT",
            "email",
        ),
        (
            json!({ "w": "Workspace:nope", "e": "x@example.com", "r": "MEMBER" }),
            "BAD_USER_INPUT",
            "workspaceId",
        ),
    ] {
        app.assert_refused(&alice, INVITE, vars, code, field).await;
    }
    app.assert_refused(&bob, ACCEPT, json!({ "i": "not-an-id" }), "BAD_USER_INPUT", "id")
        .await;
    app.gql_ok(
        &alice,
        "mutation($i: ID!) { revokeInvitation(id: $i) { status } }",
        json!({ "i": erin }),
    )
    .await;

    // Bounded: at most 100 pending invitations per workspace.
    let mut sent = 0;
    let refused = loop {
        let body = app
            .gql(
                &alice,
                INVITE,
                json!({ "w": ws, "e": format!("n{sent}@example.com"), "r": "GUEST" }),
            )
            .await;
        if body.get("errors").is_some() {
            break body;
        }
        sent += 1;
        assert!(sent <= 100, "more than 100 pending invitations accepted");
    };
    assert_eq!((sent, common::code(&refused).as_str()), (100, "CONFLICT"), "{refused}");
    app.stop().await;
}
