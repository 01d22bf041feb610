//! Instance administration of users (list, make and unmake administrators,
//! deactivate and reactivate), and who a federated query names as its actor:
//! only a verified e-mail address reaches a peer, so a grant limited to named
//! users is never matched by an address nobody vouched for.

use crate::common;

use common::{TestApp, code, codes, fingerprint, spawn_app, spawn_instance};
use serde_json::{Value, json};
use uuid::Uuid;

const USERS: &str = "{ users { id email isAdmin emailVerified deactivatedAt } }";
const SET_ADMIN: &str = "mutation($u: ID!, $a: Boolean!) { setUserAdmin(userId: $u, admin: $a) { id isAdmin } }";
const DEACTIVATE: &str = "mutation($u: ID!) { deactivateUser(userId: $u) { id deactivatedAt } }";
const REACTIVATE: &str = "mutation($u: ID!) { reactivateUser(userId: $u) { id deactivatedAt } }";

async fn admin_token(app: &TestApp, email: &str) -> (Uuid, String) {
    let mut conn = app.admin().await;
    let id = mosaic::auth::users::create(&mut conn, email, None, true).await.unwrap();
    (id, mosaic::auth::tokens::create(&mut conn, email, None).await.unwrap())
}

fn user_id(app: &TestApp, id: Uuid) -> String {
    format!("User:{}:{id}", app.state.instance_id)
}

async fn audit(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT action, email FROM auth_audit ORDER BY id")
        .fetch_all(&mut app.admin().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn admins_list_users_and_others_are_refused() {
    let app = spawn_app().await;
    let (_, admin) = admin_token(&app, "root@example.com").await;
    let (bob, bob_token) = app.user("bob@example.com").await;
    let data = app.gql_ok(&admin, USERS, json!({})).await;
    assert_eq!(
        data["users"],
        json!([
            { "id": user_id(&app, bob), "email": "bob@example.com", "isAdmin": false,
              "emailVerified": true, "deactivatedAt": null },
            { "id": data["users"][1]["id"], "email": "root@example.com", "isAdmin": true,
              "emailVerified": true, "deactivatedAt": null },
        ])
    );
    let body = app.gql(&bob_token, USERS, json!({})).await;
    assert_eq!(codes(&body), ["FORBIDDEN"], "{body}");
    assert!(body["data"].is_null());
    // The definer function checks again: a non-admin scope gets nothing even in SQL.
    let mut conn = app.admin().await;
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    sqlx::query("SET LOCAL ROLE mosaic_app")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('mosaic.user_id', $1, true)")
        .bind(bob.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let e = sqlx::query("SELECT * FROM admin_users()")
        .fetch_all(&mut *tx)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only instance administrators"), "{e}");
    app.stop().await;
}

#[tokio::test]
async fn making_and_unmaking_admins_keeps_one_and_is_audited() {
    let app = spawn_app().await;
    let (root, admin) = admin_token(&app, "root@example.com").await;
    let (bob, bob_token) = app.user("bob@example.com").await;
    // The only admin cannot step down: nobody could undo it.
    let before = fingerprint(&mut app.admin().await).await;
    let body = app
        .gql(&admin, SET_ADMIN, json!({ "u": user_id(&app, root), "a": false }))
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("last active instance administrator")
    );
    let body = app.gql(&admin, DEACTIVATE, json!({ "u": user_id(&app, root) })).await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(fingerprint(&mut app.admin().await).await, before, "nothing changed");

    let data = app
        .gql_ok(&admin, SET_ADMIN, json!({ "u": user_id(&app, bob), "a": true }))
        .await;
    assert_eq!(data["setUserAdmin"]["isAdmin"], true);
    // Bob now administers: he may list peers and demote root.
    app.gql_ok(&bob_token, "{ peers { id } }", json!({})).await;
    let data = app
        .gql_ok(&bob_token, SET_ADMIN, json!({ "u": user_id(&app, root), "a": false }))
        .await;
    assert_eq!(data["setUserAdmin"]["isAdmin"], false);
    let body = app.gql(&admin, USERS, json!({})).await;
    assert_eq!(codes(&body), ["FORBIDDEN"], "root is no longer an admin: {body}");
    assert_eq!(
        audit(&app).await,
        [
            ("admin_granted".to_string(), "bob@example.com".to_string()),
            ("admin_revoked".to_string(), "root@example.com".to_string())
        ]
    );
    // Bad targets: unknown user, another instance's user, another type.
    let unknown = user_id(&app, Uuid::now_v7());
    let body = app.gql(&bob_token, SET_ADMIN, json!({ "u": unknown, "a": true })).await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let foreign = format!("User:{}:{bob}", Uuid::now_v7());
    let body = app.gql(&bob_token, DEACTIVATE, json!({ "u": foreign })).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    let ws = app.create_workspace(&bob_token, "w").await;
    let body = app.gql(&bob_token, DEACTIVATE, json!({ "u": ws })).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_deactivated_user_is_refused_everywhere_until_reactivated() {
    let app = spawn_app().await;
    let (_, admin) = admin_token(&app, "root@example.com").await;
    let (bob, bob_token) = app.user("bob@example.com").await;
    let ws = app.create_workspace(&bob_token, "bob's").await;
    app.create_task(&bob_token, &ws, "kept").await;
    // Bob also has a break-glass session open.
    let session = app
        .break_glass_session("carol@example.com", "correct horse battery staple")
        .await;
    let (cookie, csrf) = (session.cookie, session.csrf);
    let mut conn = app.admin().await;
    let carol: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'carol@example.com'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let login = |email: &'static str| {
        app.client
            .post(format!("{}/auth/breakglass", app.base))
            .json(&json!({ "email": email, "password": "correct horse battery staple" }))
            .send()
    };
    let with_session = || {
        app.client
            .post(format!("{}/graphql", app.base))
            .header("cookie", &cookie)
            .header("x-mosaic-csrf", &csrf)
            .json(&json!({ "query": "{ me { email } }" }))
            .send()
    };
    assert_eq!(with_session().await.unwrap().status(), 200);

    let data = app.gql_ok(&admin, DEACTIVATE, json!({ "u": user_id(&app, bob) })).await;
    assert!(data["deactivateUser"]["deactivatedAt"].is_string(), "{data}");
    app.gql_ok(&admin, DEACTIVATE, json!({ "u": user_id(&app, carol) }))
        .await;
    let (status, body) = app.gql_status(&bob_token, "{ me { email } }", json!({})).await;
    assert_eq!((status, code(&body).as_str()), (403, "ACCOUNT_DEACTIVATED"), "{body}");
    let r = with_session().await.unwrap();
    assert_eq!(r.status(), 401, "the session ended at deactivation");
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    assert_eq!(
        login("carol@example.com").await.unwrap().status(),
        401,
        "no new session either"
    );
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(tasks, 1, "the data stays");

    let data = app.gql_ok(&admin, REACTIVATE, json!({ "u": user_id(&app, bob) })).await;
    assert!(data["reactivateUser"]["deactivatedAt"].is_null());
    let data = app
        .gql_ok(&bob_token, "{ tasks { edges { node { title } } } }", json!({}))
        .await;
    assert_eq!(data["tasks"]["edges"][0]["node"]["title"], "kept");
    let actions: Vec<String> = audit(&app).await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        actions,
        [
            "breakglass_created",
            "breakglass_login",
            "user_deactivated",
            "user_deactivated",
            "breakglass_login_failed",
            "user_reactivated"
        ]
    );
    app.stop().await;
}

/// The master reports the peer's refusal as its own error for that instance.
#[track_caller]
fn assert_grant_denied(body: &Value, peer: &TestApp) {
    assert_eq!(codes(body), ["PEER_FORBIDDEN"], "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["instance"],
        peer.state.instance_id.to_string()
    );
    assert_eq!(body["errors"][0]["extensions"]["peerCode"], "GRANT_DENIED", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("the grant does not cover this user"), "{message}");
}

/// A user of `home` queries `work`, whose grant names remote users.
#[tokio::test]
async fn only_a_verified_address_is_named_to_peers() {
    let work = spawn_instance("work").await;
    let home = spawn_instance("home").await;
    let (_, work_admin) = admin_token(&work, "admin@work.example").await;
    let shared = work.create_workspace(&work_admin, "shared").await;
    work.create_task(&work_admin, &shared, "work task").await;
    let (ada, ada_token) = home.user("ada@example.org").await;
    common::peer(&home, &work, &[&shared], false).await;
    let home_id = home.state.instance_id;
    let grant = |users: Vec<String>| {
        let fed = work.state.federation.clone();
        let ws = common::local_id(&shared);
        async move {
            fed.approve(home_id, &common::grant(&[ws], false, Some(&users)), "test")
                .await
                .unwrap()
        }
    };
    let query = "{ tasks(scope: {all: true}) { edges { node { title } } } }";
    let titles = |body: &Value| -> Vec<String> {
        body["data"]["tasks"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["title"].as_str().unwrap().to_string())
            .collect()
    };
    let home_db = home.database_url.clone();
    let set_verified = |verified: bool| {
        let url = home_db.clone();
        async move {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
            sqlx::query("UPDATE users SET email_verified = $1 WHERE id = $2")
                .bind(verified)
                .bind(ada)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    };

    // Named by address, and the address is verified: work answers.
    grant(vec!["Ada@Example.org".into()]).await;
    let body = home.gql(&ada_token, query, json!({})).await;
    assert_eq!(titles(&body), ["work task"], "{body}");

    // The same address, unverified: home does not name it, work refuses.
    set_verified(false).await;
    home.caught_up().await;
    let body = home.gql(&ada_token, query, json!({})).await;
    assert_eq!(titles(&body), Vec::<String>::new(), "{body}");
    assert_grant_denied(&body, &work);

    // Named by global User ID: the address does not matter.
    grant(vec![user_id(&home, ada)]).await;
    let body = home.gql(&ada_token, query, json!({})).await;
    assert_eq!(titles(&body), ["work task"], "{body}");

    // Someone else of home, even verified, is not covered by Ada's ID.
    let (_, eve_token) = home.user("eve@example.org").await;
    let body = home.gql(&eve_token, query, json!({})).await;
    assert_grant_denied(&body, &work);
    set_verified(true).await;
    home.caught_up().await;

    // A grant's user list is checked when it is given.
    let e = work
        .state
        .federation
        .approve(
            home_id,
            &common::grant(&[common::local_id(&shared)], false, Some(&["not an address".into()])),
            "test",
        )
        .await
        .unwrap_err();
    assert!(format!("{e:#}").starts_with("users:"), "{e:#}");
    home.stop().await;
    work.stop().await;
}

#[tokio::test]
async fn users_come_in_pages_by_email_and_can_be_searched() {
    let app = spawn_app().await;
    let (_, admin) = admin_token(&app, "root@example.com").await;
    let mut conn = app.admin().await;
    for (email, name) in [
        ("ann@example.com", "Ann"),
        ("bob@example.com", "Robert"),
        ("cy@example.org", "Bobby Cy"),
        ("dee@example.com", "Dee"),
    ] {
        mosaic::auth::users::create(&mut conn, email, Some(name), false)
            .await
            .unwrap();
    }
    let page = |vars: Value| {
        let (app, admin) = (&app, &admin);
        async move {
            let q = "query($s: String, $f: Int, $a: String) { users(search: $s, first: $f, after: $a) { email } }";
            let data = app.gql_ok(admin, q, vars).await;
            data["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(json!({ "f": 2 })).await, ["ann@example.com", "bob@example.com"]);
    assert_eq!(
        page(json!({ "f": 2, "a": "bob@example.com" })).await,
        ["cy@example.org", "dee@example.com"]
    );
    assert_eq!(page(json!({ "a": "dee@example.com" })).await, ["root@example.com"]);
    // By e-mail or name, ignoring case.
    assert_eq!(page(json!({ "s": "BOB" })).await, ["bob@example.com", "cy@example.org"]);
    assert_eq!(page(json!({ "s": "example.org" })).await, ["cy@example.org"]);
    assert!(page(json!({ "s": "nobody" })).await.is_empty());
    for bad in [json!({ "f": -1 }), json!({ "f": 100_000 }), json!({ "s": "a\u{0}b" })] {
        let body = app
            .gql(
                &admin,
                "query($s: String, $f: Int) { users(search: $s, first: $f) { email } }",
                bad.clone(),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{bad}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn admins_read_the_authentication_audit_newest_first_and_others_are_refused() {
    const GLASS: &str = "glass@example.com";
    const PASSWORD: &str = "correct horse battery staple";
    const AUDIT: &str = "query($a: String, $e: String, $f: Int, $b: ID) { \
        authAudit(action: $a, email: $e, first: $f, before: $b) { id action email userId details } }";
    let app = spawn_app().await;
    let (root, admin) = admin_token(&app, "root@example.com").await;
    let (bob, bob_token) = app.user("bob@example.com").await;
    let mut conn = app.admin().await;
    let (glass, _) = mosaic::auth::breakglass::create_admin(&mut conn, GLASS, PASSWORD)
        .await
        .unwrap();
    for password in ["not the password", PASSWORD] {
        app.client
            .post(format!("{}/auth/breakglass", app.base))
            .json(&json!({ "email": GLASS, "password": password }))
            .send()
            .await
            .unwrap();
    }
    let bob_id = user_id(&app, bob);
    app.gql_ok(&admin, DEACTIVATE, json!({ "u": bob_id })).await;
    app.gql_ok(&admin, REACTIVATE, json!({ "u": bob_id })).await;

    let read = |vars: Value| {
        let app = &app;
        let admin = &admin;
        async move {
            app.gql_ok(admin, AUDIT, vars).await["authAudit"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let all = read(json!({})).await;
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "user_reactivated",
            "user_deactivated",
            "breakglass_login",
            "breakglass_login_failed",
            "breakglass_created"
        ]
    );
    assert_eq!(all[0]["userId"], bob_id.as_str());
    assert_eq!(all[0]["details"]["by"], root.to_string(), "who did it");
    assert_eq!(all[2]["userId"], user_id(&app, glass).as_str());
    // Pages: `before` continues where the last page ended.
    let first = read(json!({ "f": 2 })).await;
    assert_eq!(first, all[..2]);
    let next = read(json!({ "f": 2, "b": first[1]["id"] })).await;
    assert_eq!(next, all[2..4]);
    // Filters by exact action, and by address ignoring case.
    let failed = read(json!({ "a": "breakglass_login_failed" })).await;
    assert_eq!((failed.len(), &failed[0]["email"]), (1, &json!(GLASS)));
    let glass_events = read(json!({ "e": "GLASS@example.com" })).await;
    assert_eq!(glass_events, all[2..5]);
    for bad in [
        json!({ "f": -1 }),
        json!({ "f": 100_000 }),
        json!({ "b": "x" }),
        json!({ "a": "a\u{0}" }),
    ] {
        let body = app.gql(&admin, AUDIT, bad.clone()).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{bad}: {body}");
    }
    let body = app.gql(&bob_token, AUDIT, json!({})).await;
    assert_eq!(
        (codes(&body), &body["data"]),
        (vec!["FORBIDDEN".to_string()], &Value::Null),
        "{body}"
    );
    app.stop().await;
}
