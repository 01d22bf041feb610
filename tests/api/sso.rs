//! Single sign-on against a real OpenID provider: the npm package
//! `oidc-provider` (tests/oidc/server.js, installed by scripts/oidc-test-env)
//! with an Authentik-style issuer path and Authentik's claims. Each test
//! starts its own provider on a free loopback port and its own instance.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::oidc::{Provider, free_port, plain_client, settings, user};
use common::{TestApp, spawn_app_with};
use mosaic::config::{GroupRole, OidcSettings};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use uuid::Uuid;

/// A browser: a cookie store, following redirects.
struct Browser {
    jar: Arc<Jar>,
    follow: reqwest::Client,
    /// Same cookies, stops before the redirect back to /auth/callback.
    to_callback: reqwest::Client,
    manual: reqwest::Client,
}

impl Browser {
    fn new() -> Self {
        let jar = Arc::new(Jar::default());
        let stop_at_callback = Policy::custom(|attempt| {
            if attempt.url().path() == "/auth/callback" {
                attempt.stop()
            } else if attempt.previous().len() > 10 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        });
        Self {
            follow: plain_client(Policy::limited(10), Some(jar.clone())),
            to_callback: plain_client(stop_at_callback, Some(jar.clone())),
            manual: plain_client(Policy::none(), Some(jar.clone())),
            jar,
        }
    }

    /// The whole flow: /auth/login → provider → /auth/callback → /graphql.
    async fn login(&self, app: &TestApp) -> reqwest::Response {
        self.follow
            .get(format!("{}/auth/login", app.base))
            .send()
            .await
            .unwrap()
    }

    /// Runs the flow up to the provider's redirect back; returns the callback URL.
    async fn callback_url(&self, app: &TestApp) -> reqwest::Url {
        let r = self
            .to_callback
            .get(format!("{}/auth/login", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "the provider redirects back");
        let location = r.headers()["location"].to_str().unwrap();
        let url = reqwest::Url::parse(location).unwrap();
        assert_eq!(url.path(), "/auth/callback");
        url
    }

    fn cookie(&self, app: &TestApp, name: &str) -> Option<String> {
        let header = self.jar.cookies(&app.base.parse().unwrap())?;
        header
            .to_str()
            .unwrap()
            .split("; ")
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    async fn session(&self, app: &TestApp) -> (u16, Value) {
        let r = self
            .manual
            .get(format!("{}/auth/session", app.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// A GraphQL POST authenticated by the session cookie, with or without the CSRF header.
    async fn gql(&self, app: &TestApp, query: &str, csrf: Option<&str>) -> (u16, Value) {
        let mut req = self
            .manual
            .post(format!("{}/graphql", app.base))
            .json(&json!({ "query": query }));
        if let Some(token) = csrf {
            req = req.header("x-mosaic-csrf", token);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn csrf(&self, app: &TestApp) -> String {
        let (status, body) = self.session(app).await;
        assert_eq!(status, 200, "{body}");
        body["csrfToken"].as_str().unwrap().to_string()
    }
}

/// A provider and an instance configured to use it.
async fn setup(group_roles: Vec<GroupRole>) -> (TestApp, Provider) {
    setup_with(group_roles, OidcSettings::DEFAULT_DISCOVERY_REFRESH).await
}

/// As `setup`, with the given `oidc.discovery_refresh_s`.
async fn setup_with(group_roles: Vec<GroupRole>, discovery_refresh: Duration) -> (TestApp, Provider) {
    let port = free_port();
    let provider = Provider::start(&format!("http://127.0.0.1:{port}/auth/callback")).await;
    let issuer = provider.issuer.clone();
    let app = spawn_app_with(|c| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.oidc = Some(settings(issuer, group_roles, discovery_refresh));
    })
    .await;
    (app, provider)
}

async fn session_count(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(conn)
        .await
        .unwrap()
}

fn error_code(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-mosaic-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn full_login_gives_a_session_that_needs_the_csrf_header() {
    let (app, provider) = setup(vec![]).await;
    let browser = Browser::new();
    let r = browser.login(&app).await;
    assert_eq!(r.status(), 200, "lands on the IDE: {}", r.url());
    assert_eq!(r.url().path(), "/graphql");
    assert!(browser.cookie(&app, "mosaic_session").is_some(), "session cookie set");
    let csrf = browser.csrf(&app).await;
    let (status, body) = browser.gql(&app, "{ me { email name } }", Some(&csrf)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["email"], "alice@example.com");
    assert_eq!(body["data"]["me"]["name"], "Alice");
    // Without the header: refused, whatever the cookie.
    let (status, body) = browser.gql(&app, "{ me { email } }", None).await;
    assert_eq!((status, common::code(&body).as_str()), (403, "CSRF_TOKEN_INVALID"));
    let (status, _) = browser.gql(&app, "{ me { email } }", Some("forged")).await;
    assert_eq!(status, 403);
    // The session is stored by hash only; the cookie is HttpOnly, SameSite=Lax.
    let id = browser.cookie(&app, "mosaic_session").unwrap();
    let mut conn = app.admin().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE id_hash = sha256($1::bytea)")
        .bind(id.as_bytes())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let plain: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE encode(id_hash, 'escape') = $1")
        .bind(&id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(plain, 0);
    // API tokens keep working beside sessions.
    let (_, token) = app.user("script@example.com").await;
    let data = app.gql_ok(&token, "{ me { email } }", json!({})).await;
    assert_eq!(data["me"]["email"], "script@example.com");
    app.stop().await;
    provider.stop().await;
}

#[tokio::test]
async fn set_cookie_attributes_and_logout_at_the_provider() {
    let (app, provider) = setup(vec![]).await;
    let browser = Browser::new();
    let url = browser.callback_url(&app).await;
    let r = browser.manual.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = cookies.iter().find(|c| c.starts_with("mosaic_session=")).unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "plain HTTP here: {session}");
    // The ID token kept for logout is sealed at rest, not the JWT itself.
    let stored: String = sqlx::query_scalar("SELECT id_token FROM sessions")
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap();
    assert!(!stored.contains('.') && !stored.contains("eyJ"), "{stored}");
    let csrf = browser.csrf(&app).await;
    let r = browser
        .manual
        .post(format!("{}/auth/logout", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}session/end", provider.issuer)) && location.contains("id_token_hint=eyJ"),
        "{location}"
    );
    let (status, _) = browser.session(&app).await;
    assert_eq!(status, 401, "the session ended here");
    let (status, _) = browser.gql(&app, "{ me { email } }", Some(&csrf)).await;
    assert_eq!(status, 401);
    app.stop().await;
    provider.stop().await;
}

#[tokio::test]
async fn second_login_updates_claims_and_rotates_the_session() {
    let (app, provider) = setup(vec![]).await;
    let browser = Browser::new();
    assert_eq!(browser.login(&app).await.status(), 200);
    let first = browser.cookie(&app, "mosaic_session").unwrap();
    let mut changed = user(&["staff", "eng"]);
    changed["email"] = json!("alice.smith@example.com");
    changed["name"] = json!("Alice Smith");
    changed["preferred_username"] = json!("asmith");
    provider.control("user", changed).await;
    assert_eq!(browser.login(&app).await.status(), 200);
    let second = browser.cookie(&app, "mosaic_session").unwrap();
    assert_ne!(first, second, "a new session id at login");
    let csrf = browser.csrf(&app).await;
    let (_, body) = browser.gql(&app, "{ me { email name } }", Some(&csrf)).await;
    assert_eq!(body["data"]["me"]["email"], "alice.smith@example.com", "{body}");
    assert_eq!(body["data"]["me"]["name"], "Alice Smith");
    let mut conn = app.admin().await;
    let (users, username, groups): (i64, String, Vec<String>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users), preferred_username, groups FROM user_identities WHERE subject = 'authentik-user-1'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((users, username.as_str()), (1, "asmith"), "same user, updated");
    assert_eq!(groups, vec!["staff", "eng"]);
    let old: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE id_hash = sha256($1::bytea)")
        .bind(first.as_bytes())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(old, 0, "the previous session ended at the new login");
    app.stop().await;
    provider.stop().await;
}

#[tokio::test]
async fn admin_group_makes_instance_admins_and_leaving_it_revokes() {
    let roles = vec![GroupRole::InstanceAdmin {
        group: "mosaic-admins".into(),
    }];
    let (app, provider) = setup(roles).await;
    provider.control("user", user(&["staff", "mosaic-admins"])).await;
    let browser = Browser::new();
    assert_eq!(browser.login(&app).await.status(), 200);
    let csrf = browser.csrf(&app).await;
    let (_, body) = browser.gql(&app, "{ me { isAdmin } }", Some(&csrf)).await;
    assert_eq!(body["data"]["me"]["isAdmin"], true, "{body}");
    provider.control("user", user(&["staff"])).await;
    let other = Browser::new();
    assert_eq!(other.login(&app).await.status(), 200);
    let csrf = other.csrf(&app).await;
    let (_, body) = other.gql(&app, "{ me { isAdmin } }", Some(&csrf)).await;
    assert_eq!(body["data"]["me"]["isAdmin"], false, "{body}");
    app.stop().await;
    provider.stop().await;
}

#[tokio::test]
async fn a_group_grants_a_workspace_role_and_an_unverified_address_is_recorded_as_such() {
    let eng = Uuid::now_v7();
    let roles = vec![GroupRole::Workspace {
        group: "eng".into(),
        workspace: eng,
        role: "MEMBER".into(),
    }];
    let (app, provider) = setup(roles).await;
    let mut conn = app.admin().await;
    let owner = mosaic::auth::users::create(&mut conn, "owner@example.com", None, false)
        .await
        .unwrap();
    sqlx::query("INSERT INTO workspaces (id, name, created_by) VALUES ($1, 'engineering', $2)")
        .bind(eng)
        .bind(owner)
        .execute(&mut conn)
        .await
        .unwrap();
    let mut claims = user(&["staff", "eng"]);
    claims["email_verified"] = json!(false);
    provider.control("user", claims).await;
    let browser = Browser::new();
    assert_eq!(browser.login(&app).await.status(), 200);
    let csrf = browser.csrf(&app).await;
    let (_, body) = browser
        .gql(&app, "{ workspaces { name viewerRole } }", Some(&csrf))
        .await;
    assert_eq!(
        body["data"]["workspaces"],
        json!([{ "name": "engineering", "viewerRole": "MEMBER" }]),
        "{body}"
    );
    let verified: bool = sqlx::query_scalar("SELECT email_verified FROM users WHERE email = 'alice@example.com'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!verified, "the provider did not verify the address");
    // The provider verifies it later: the next login records that.
    provider.control("user", user(&["staff", "eng"])).await;
    assert_eq!(browser.login(&app).await.status(), 200);
    let verified: bool = sqlx::query_scalar("SELECT email_verified FROM users WHERE email = 'alice@example.com'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(verified);
    app.stop().await;
    provider.stop().await;
}

/// Alice's workspaces and roles, by workspace name.
async fn alice_roles(conn: &mut sqlx::PgConnection) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT w.name, m.role FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id \
         JOIN users u ON u.id = m.user_id WHERE u.email = 'alice@example.com' ORDER BY w.name",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn workspace_roles_follow_the_provider_groups_and_leave_hand_given_ones_alone() {
    let (eng, ops, hand) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let map = |group: &str, workspace: Uuid, role: &str| GroupRole::Workspace {
        group: group.into(),
        workspace,
        role: role.into(),
    };
    let roles = vec![
        map("eng", eng, "MEMBER"),
        map("eng-leads", eng, "ADMIN"),
        map("ops", ops, "GUEST"),
    ];
    let (app, provider) = setup(roles).await;
    let mut conn = app.admin().await;
    let owner = mosaic::auth::users::create(&mut conn, "owner@example.com", None, false)
        .await
        .unwrap();
    for (id, name) in [(eng, "eng"), (ops, "ops"), (hand, "hand")] {
        sqlx::query("INSERT INTO workspaces (id, name, created_by) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(owner)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let login_with = |groups: &'static [&'static str]| {
        let (provider, app) = (&provider, &app);
        async move {
            provider.control("user", user(groups)).await;
            assert_eq!(Browser::new().login(app).await.status(), 200, "{groups:?}");
        }
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };

    // The strongest role a group gives wins.
    login_with(&["eng", "eng-leads", "ops"]).await;
    assert_eq!(
        alice_roles(&mut conn).await,
        pairs(&[("eng", "ADMIN"), ("ops", "GUEST")])
    );
    // Someone adds Alice to a workspace by hand.
    sqlx::query(
        "INSERT INTO workspace_members (workspace_id, user_id, role) \
         SELECT $1, id, 'MEMBER' FROM users WHERE email = 'alice@example.com'",
    )
    .bind(hand)
    .execute(&mut conn)
    .await
    .unwrap();
    // She leaves eng-leads and ops: what those gave goes, the hand-given stays.
    login_with(&["eng"]).await;
    assert_eq!(
        alice_roles(&mut conn).await,
        pairs(&[("eng", "MEMBER"), ("hand", "MEMBER")])
    );
    // Her eng role is changed by hand: from then on it is hand-given.
    sqlx::query("UPDATE workspace_members SET role = 'ADMIN' WHERE workspace_id = $1 AND user_id <> $2")
        .bind(eng)
        .bind(owner)
        .execute(&mut conn)
        .await
        .unwrap();
    login_with(&[]).await;
    assert_eq!(
        alice_roles(&mut conn).await,
        pairs(&[("eng", "ADMIN"), ("hand", "MEMBER")])
    );
    app.stop().await;
    provider.stop().await;
}

#[tokio::test]
async fn a_deactivated_user_cannot_sign_in_until_reactivated() {
    let (app, provider) = setup(vec![]).await;
    let mut conn = app.admin().await;
    mosaic::auth::users::create(&mut conn, "root@example.com", None, true)
        .await
        .unwrap();
    let root = mosaic::auth::tokens::create(&mut conn, "root@example.com", None)
        .await
        .unwrap();
    let browser = Browser::new();
    assert_eq!(browser.login(&app).await.status(), 200);
    let csrf = browser.csrf(&app).await;
    let (_, body) = browser.gql(&app, "{ me { id } }", Some(&csrf)).await;
    let alice = body["data"]["me"]["id"].as_str().unwrap().to_string();
    let deactivate = "mutation($u: ID!) { deactivateUser(userId: $u) { id } }";
    app.gql_ok(&root, deactivate, json!({ "u": alice })).await;
    // The open session ended with the deactivation.
    let (status, _) = browser.gql(&app, "{ me { id } }", Some(&csrf)).await;
    assert_eq!(status, 401);
    // A new sign-in is refused with its own code, and opens nothing.
    let r = browser.login(&app).await;
    assert_eq!(r.url().path(), "/auth/callback");
    assert_eq!(
        (r.status().as_u16(), error_code(&r).as_str()),
        (403, "ACCOUNT_DEACTIVATED")
    );
    assert!(r.text().await.unwrap().contains("deactivated"));
    assert_eq!(session_count(&mut conn).await, 0);
    assert_eq!(browser.session(&app).await.0, 401);
    let reactivate = "mutation($u: ID!) { reactivateUser(userId: $u) { id } }";
    app.gql_ok(&root, reactivate, json!({ "u": alice })).await;
    assert_eq!(browser.login(&app).await.status(), 200);
    assert_eq!(session_count(&mut conn).await, 1);
    app.stop().await;
    provider.stop().await;
}

#[tokio::test]
async fn provider_key_rotation_logs_nobody_out() {
    let (app, provider) = setup(vec![]).await;
    let browser = Browser::new();
    assert_eq!(browser.login(&app).await.status(), 200);
    provider.control("rotate", json!({})).await;
    let csrf = browser.csrf(&app).await;
    let (status, _) = browser.gql(&app, "{ me { email } }", Some(&csrf)).await;
    assert_eq!(status, 200, "existing session unaffected");
    let other = Browser::new();
    let r = other.login(&app).await;
    assert_eq!(
        r.status(),
        200,
        "a token signed by the new key is accepted after a JWKS refresh"
    );
    app.stop().await;
    provider.stop().await;
}

#[tokio::test]
async fn wrong_state_is_refused() {
    let (app, provider) = setup(vec![]).await;
    let browser = Browser::new();
    let mut url = browser.callback_url(&app).await;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" { "forged".into() } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let r = browser.manual.get(url.clone()).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), error_code(&r).as_str()),
        (400, "OIDC_STATE_MISMATCH")
    );
    assert!(
        r.text().await.unwrap().contains("OIDC_STATE_MISMATCH"),
        "the page names the code"
    );
    assert_eq!(browser.session(&app).await.0, 401, "no session");
    // The pending login is spent: even the right state now fails.
    let r = browser.manual.get(url).send().await.unwrap();
    assert_eq!(error_code(&r), "OIDC_LOGIN_UNKNOWN");
    app.stop().await;
    provider.stop().await;
}

#[tokio::test]
async fn replayed_code_is_refused() {
    let (app, provider) = setup(vec![]).await;
    let victim = Browser::new();
    let used = victim.callback_url(&app).await;
    let r = victim.manual.get(used.clone()).send().await.unwrap();
    assert_eq!(r.status(), 303, "first use succeeds");
    // The same callback again: the pending login is gone.
    let r = victim.manual.get(used.clone()).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), error_code(&r).as_str()),
        (400, "OIDC_LOGIN_UNKNOWN")
    );
    // An attacker replays the used code inside a login of their own.
    let attacker = Browser::new();
    let own = attacker.callback_url(&app).await;
    let code = used.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let state = own.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let mut replay = own.clone();
    replay
        .query_pairs_mut()
        .clear()
        .append_pair("code", &code)
        .append_pair("state", &state);
    let r = attacker.manual.get(replay).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), error_code(&r).as_str()),
        (400, "OIDC_CODE_REJECTED")
    );
    assert_eq!(attacker.session(&app).await.0, 401, "no session");
    app.stop().await;
    provider.stop().await;
}

/// The provider's next ID token is spoiled in one way; the login must fail with `code`.
async fn refused_token(mode: &str, code: &str) {
    let (app, provider) = setup(vec![]).await;
    provider.control("next-id-token", json!({ "mode": mode })).await;
    let browser = Browser::new();
    let r = browser.login(&app).await;
    assert_eq!(r.url().path(), "/auth/callback");
    assert_eq!((r.status().as_u16(), error_code(&r).as_str()), (401, code), "{mode}");
    assert!(r.text().await.unwrap().contains(code));
    assert!(
        browser.cookie(&app, "mosaic_session").is_none(),
        "{mode}: no session cookie"
    );
    assert_eq!(browser.session(&app).await.0, 401);
    let mut conn = app.admin().await;
    let (users, sessions): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM sessions)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((users, sessions), (0, 0), "{mode}: nothing created");
    // The next (unspoiled) login works: the refusal left nothing behind.
    assert_eq!(browser.login(&app).await.status(), 200);
    app.stop().await;
    provider.stop().await;
}

#[tokio::test]
async fn wrong_nonce_is_refused() {
    refused_token("wrong_nonce", "OIDC_WRONG_NONCE").await;
}

#[tokio::test]
async fn expired_id_token_is_refused() {
    refused_token("expired", "OIDC_TOKEN_EXPIRED").await;
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    refused_token("wrong_audience", "OIDC_WRONG_AUDIENCE").await;
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    refused_token("wrong_issuer", "OIDC_WRONG_ISSUER").await;
}

#[tokio::test]
async fn token_changed_after_signing_is_refused() {
    refused_token("tampered", "OIDC_BAD_SIGNATURE").await;
}

#[tokio::test]
async fn unsigned_token_is_refused() {
    refused_token("alg_none", "OIDC_BAD_SIGNATURE").await;
}

#[tokio::test]
async fn token_signed_by_unknown_key_is_refused() {
    refused_token("unknown_key", "OIDC_UNKNOWN_KEY").await;
}

#[tokio::test]
async fn provider_unreachable_instance_stays_up_and_break_glass_works() {
    let dead = free_port();
    let app = spawn_app_with(|c| {
        c.oidc = Some(settings(
            format!("http://127.0.0.1:{dead}/application/o/mosaic/"),
            vec![],
            OidcSettings::DEFAULT_DISCOVERY_REFRESH,
        ));
    })
    .await;
    let browser = Browser::new();
    let r = browser.login(&app).await;
    assert_eq!(
        (r.status().as_u16(), error_code(&r).as_str()),
        (502, "OIDC_PROVIDER_UNAVAILABLE")
    );
    assert!(r.text().await.unwrap().contains("could not be reached"));
    let r = browser
        .manual
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Break-glass: a local admin with an argon2-hashed password; every use audited.
    let mut conn = app.admin().await;
    mosaic::auth::breakglass::create_admin(&mut conn, "root@example.com", "correct horse battery staple")
        .await
        .unwrap();
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM local_credentials")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"));
    let url = format!("{}/auth/breakglass", app.base);
    let r = browser
        .manual
        .post(&url)
        .json(&json!({ "email": "root@example.com", "password": "wrong password here" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = browser
        .manual
        .post(&url)
        .json(&json!({ "email": "root@example.com", "password": "correct horse battery staple" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let csrf = body["csrfToken"].as_str().unwrap().to_string();
    let (status, body) = browser.gql(&app, "{ me { email isAdmin } }", Some(&csrf)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["isAdmin"], true);
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM auth_audit ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        actions,
        vec!["breakglass_created", "breakglass_login_failed", "breakglass_login"]
    );
    app.stop().await;
}

#[tokio::test]
async fn provider_down_after_start_gives_a_clear_error_and_the_instance_stays_up() {
    // Refresh 0: every login discovers the provider again.
    let (app, provider) = setup_with(vec![], Duration::ZERO).await;
    let issuer = provider.issuer.clone();
    let browser = Browser::new();
    let r = browser.login(&app).await;
    assert_eq!(r.status(), 200, "lands on the IDE: {}", r.url());
    assert_eq!(r.url().path(), "/graphql");
    let csrf = browser.csrf(&app).await;
    provider.stop().await;

    // A new login is refused here, not redirected to the provider that is gone.
    let r = browser
        .manual
        .get(format!("{}/auth/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), error_code(&r).as_str()),
        (502, "OIDC_PROVIDER_UNAVAILABLE")
    );
    assert!(r.headers().get("location").is_none(), "no redirect");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("could not be reached") && page.contains(&issuer),
        "the page names the problem and the provider: {page}"
    );

    // Sessions are server-side: the one already open keeps working.
    let (status, body) = browser.session(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], "alice@example.com");
    let (status, body) = browser.gql(&app, "{ me { email } }", Some(&csrf)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["email"], "alice@example.com");
    let r = browser
        .manual
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Break-glass still works.
    let mut conn = app.admin().await;
    mosaic::auth::breakglass::create_admin(&mut conn, "root@example.com", "correct horse battery staple")
        .await
        .unwrap();
    let admin = Browser::new();
    let r = admin
        .manual
        .post(format!("{}/auth/breakglass", app.base))
        .json(&json!({ "email": "root@example.com", "password": "correct horse battery staple" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let admin_csrf = body["csrfToken"].as_str().unwrap().to_string();
    let (status, body) = admin.gql(&app, "{ me { email isAdmin } }", Some(&admin_csrf)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["email"], "root@example.com");

    // The refused login left nothing: the SSO session and the break-glass one only.
    let sessions: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.method, u.email FROM sessions s JOIN users u ON u.id = s.user_id ORDER BY s.created_at",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let sessions: Vec<(&str, &str)> = sessions.iter().map(|(m, e)| (m.as_str(), e.as_str())).collect();
    assert_eq!(
        sessions,
        vec![("oidc", "alice@example.com"), ("breakglass", "root@example.com")]
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM oidc_logins")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending, 0, "no pending login recorded for the refused one");
    app.stop().await;
}

#[tokio::test]
async fn provider_down_mid_login_is_a_clear_error() {
    let (app, provider) = setup(vec![]).await;
    let browser = Browser::new();
    let url = browser.callback_url(&app).await;
    provider.stop().await;
    // The code cannot be redeemed: the token request finds no provider.
    let r = browser.manual.get(url).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), error_code(&r).as_str()),
        (502, "OIDC_PROVIDER_UNAVAILABLE")
    );
    let session_cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("mosaic_session="));
    assert!(!session_cookie, "no session cookie set");
    let page = r.text().await.unwrap();
    assert!(page.contains("could not be reached"), "{page}");
    assert!(browser.cookie(&app, "mosaic_session").is_none());
    assert_eq!(browser.session(&app).await.0, 401, "no session");
    let mut conn = app.admin().await;
    let (users, sessions): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM sessions)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((users, sessions), (0, 0), "nothing created");
    app.stop().await;
}

/// `application/x-www-form-urlencoded` for one value.
fn form_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text between `start` and the next `end` in `page`.
fn between<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let from = page.find(start).unwrap_or_else(|| panic!("no {start} in {page}")) + start.len();
    &page[from..from + page[from..].find(end).unwrap()]
}

/// The user signs out at the provider: its end-session page, then the
/// confirmation form on it, as in a browser.
async fn sign_out_at_provider(browser: &Browser, provider: &Provider) {
    let r = browser
        .manual
        .get(format!(
            "{}session/end?client_id={}",
            provider.issuer,
            common::oidc::CLIENT_ID
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let action = between(&page, "action=\"", "\"").to_string();
    let xsrf = between(&page, "name=\"xsrf\" value=\"", "\"").to_string();
    let action = if action.starts_with("http") {
        action
    } else {
        format!("{}{action}", provider.base)
    };
    let r = browser
        .manual
        .post(action)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("xsrf={}&logout=yes", form_value(&xsrf)))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
}

async fn post_logout_token(app: &TestApp, body: String) -> (u16, Value) {
    let r = plain_client(Policy::none(), None)
        .post(format!("{}/auth/backchannel-logout", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn signing_out_at_the_provider_ends_that_session_here_through_the_back_channel() {
    let (app, provider) = setup(vec![]).await;
    let (browser, other) = (Browser::new(), Browser::new());
    assert_eq!(browser.login(&app).await.status(), 200);
    assert_eq!(other.login(&app).await.status(), 200);
    let csrf = browser.csrf(&app).await;
    assert_eq!(browser.gql(&app, "{ me { email } }", Some(&csrf)).await.0, 200);
    let mut conn = app.admin().await;
    let sids: Vec<Option<String>> = sqlx::query_scalar("SELECT oidc_sid FROM sessions ORDER BY oidc_sid")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(
        sids.len() == 2 && sids.iter().all(Option::is_some) && sids[0] != sids[1],
        "each session keeps its own provider session id: {sids:?}"
    );

    sign_out_at_provider(&browser, &provider).await;
    // The provider's back-channel call was answered before its own answer.
    assert_eq!(browser.session(&app).await.0, 401, "signed out here too");
    assert_eq!(browser.gql(&app, "{ me { email } }", Some(&csrf)).await.0, 401);
    assert_eq!(
        other.session(&app).await.0,
        200,
        "the same user's other provider session stays"
    );
    let audited: Vec<Value> =
        sqlx::query_scalar("SELECT details FROM auth_audit WHERE action = 'sso_backchannel_logout'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["sessions"], 1);
    app.stop().await;
    provider.stop().await;
}

#[tokio::test]
async fn bad_logout_tokens_are_refused_and_end_nothing() {
    let (app, provider) = setup(vec![]).await;
    let browser = Browser::new();
    assert_eq!(browser.login(&app).await.status(), 200);
    let subject = user(&[])["sub"].as_str().unwrap().to_string();
    for (mode, named) in [
        ("wrong_audience", "aud"),
        ("stale", "iat"),
        ("with_nonce", "nonce"),
        ("no_event", "events"),
        ("unknown_key", "key"),
    ] {
        let token = provider.logout_token(json!({ "sub": subject, "mode": mode })).await;
        let (status, body) = post_logout_token(&app, format!("logout_token={token}")).await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("invalid_request")),
            "{mode}: {body}"
        );
        let why = body["error_description"].as_str().unwrap();
        assert!(why.contains(named), "{mode}: {why}");
        assert_eq!(browser.session(&app).await.0, 200, "{mode}: the session stays");
    }
    // An ID token is not a logout token (it has a nonce and no logout event).
    let mut conn = app.admin().await;
    for body in [
        "",
        "other=1",
        "logout_token=",
        "logout_token=a.b.c",
        "logout_token=%FF%FE",
    ] {
        let (status, reply) = post_logout_token(&app, body.into()).await;
        assert_eq!(
            (status, &reply["error"]),
            (400, &json!("invalid_request")),
            "{body}: {reply}"
        );
    }
    assert_eq!(session_count(&mut conn).await, 1);
    // A valid token for another subject ends nothing; for this one (no sid), all their sessions.
    let token = provider
        .logout_token(json!({ "sub": "someone-else", "mode": "valid" }))
        .await;
    assert_eq!(post_logout_token(&app, format!("logout_token={token}")).await.0, 200);
    assert_eq!(browser.session(&app).await.0, 200);
    let token = provider.logout_token(json!({ "sub": subject, "mode": "valid" })).await;
    assert_eq!(post_logout_token(&app, format!("logout_token={token}")).await.0, 200);
    assert_eq!(browser.session(&app).await.0, 401);
    assert_eq!(session_count(&mut conn).await, 0);
    app.stop().await;
    provider.stop().await;
}
