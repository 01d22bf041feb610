//! Browser sessions apart from how they were opened: cookie attributes over
//! HTTPS, and expiry. Sessions here are opened by a break-glass
//! administrator, which needs no identity provider.

use crate::common;

use common::{TestApp, code, spawn_app_with, spawn_instance};
use serde_json::{Value, json};

const EMAIL: &str = "root@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// Signs in; returns the Set-Cookie headers, the `Cookie` header to send and the CSRF token.
async fn sign_in(app: &TestApp) -> (Vec<String>, String, String) {
    let s = app.break_glass_session(EMAIL, PASSWORD).await;
    (s.set_cookies, s.cookie, s.csrf)
}

/// The status of `GET /auth/session` with this `Cookie` header.
async fn session_status(app: &TestApp, cookie: &str) -> u16 {
    app.client
        .get(format!("{}/auth/session", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn me(app: &TestApp, cookie: &str, csrf: &str) -> (u16, Value) {
    let r = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("cookie", cookie)
        .header("x-mosaic-csrf", csrf)
        .json(&json!({ "query": "{ me { email } }" }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn over_https_both_cookies_are_secure_and_only_the_session_is_http_only() {
    let app = spawn_instance("secure").await;
    assert!(app.base.starts_with("https://"));
    let (set, cookie, csrf) = sign_in(&app).await;
    let find = |name: &str| set.iter().find(|c| c.starts_with(&format!("{name}="))).unwrap().clone();
    let (session, token) = (find("mosaic_session"), find("mosaic_csrf"));
    let ttl = app.state.config.session_ttl.as_secs();
    for c in [&session, &token] {
        assert!(c.contains("; Secure"), "{c}");
        assert!(c.contains("; SameSite=Lax") && c.contains("; Path=/"), "{c}");
        assert!(c.contains(&format!("; Max-Age={ttl}")), "{c}");
    }
    assert!(session.contains("; HttpOnly"), "{session}");
    assert!(!token.contains("HttpOnly"), "the page reads the CSRF cookie: {token}");
    assert_eq!(me(&app, &cookie, &csrf).await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_session_is_refused_and_says_so() {
    let app = spawn_app_with(|c| c.session_ttl = std::time::Duration::from_secs(600)).await;
    let (set, cookie, csrf) = sign_in(&app).await;
    assert!(set.iter().any(|c| c.contains("Max-Age=600")), "{set:?}");
    let (status, body) = me(&app, &cookie, &csrf).await;
    assert_eq!((status, body["data"]["me"]["email"].as_str()), (200, Some(EMAIL)));
    // The session's time runs out (as if 600 s had passed).
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(&mut app.admin().await)
        .await
        .unwrap();
    let (status, body) = me(&app, &cookie, &csrf).await;
    assert_eq!((status, code(&body).as_str()), (401, "UNAUTHENTICATED"), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("session expired")
    );
    assert_eq!(session_status(&app, &cookie).await, 401);
    app.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_and_answers_scripts_with_json() {
    let app = spawn_app_with(|_| {}).await;
    let (_, cookie, csrf) = sign_in(&app).await;
    let logout = |accept: &'static str| {
        app.client
            .post(format!("{}/auth/logout", app.base))
            .header("cookie", &cookie)
            .header("accept", accept)
            .send()
    };
    let r = logout("application/json").await.unwrap();
    assert_eq!(r.status(), 200);
    let cleared: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    for name in ["mosaic_session=;", "mosaic_csrf=;"] {
        assert!(
            cleared.iter().any(|c| c.starts_with(name) && c.contains("Max-Age=0")),
            "{name} cleared: {cleared:?}"
        );
    }
    // No provider here: back to the IDE.
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "redirect": "/graphql" }));
    assert_eq!(me(&app, &cookie, &csrf).await.0, 401, "the session ended");
    // A browser form gets a redirect.
    let r = logout("text/html").await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/graphql");
    app.stop().await;
}

/// One break-glass attempt: status, `Retry-After`, error code, whether a session cookie came back.
async fn attempt(app: &TestApp, email: &str, password: &str) -> (u16, Option<String>, String, bool) {
    let r = app
        .client
        .post(format!("{}/auth/breakglass", app.base))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let cookie = r.headers().get("set-cookie").is_some();
    let body: Value = r.json().await.unwrap();
    let code = body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (status, retry, code, cookie)
}

#[tokio::test]
async fn password_guessing_is_throttled_per_address_and_a_known_address_looks_like_an_unknown_one() {
    use mosaic::auth::throttle::FREE_ATTEMPTS;
    let app = spawn_app_with(|_| {}).await;
    let mut conn = app.admin().await;
    for email in [EMAIL, "other@example.com"] {
        mosaic::auth::breakglass::create_admin(&mut conn, email, PASSWORD)
            .await
            .unwrap();
    }
    for email in [EMAIL, "nobody@example.com"] {
        for i in 0..FREE_ATTEMPTS {
            let r = attempt(&app, email, "wrong password!").await;
            assert_eq!(r, (401, None, "UNAUTHENTICATED".into(), false), "{email} attempt {i}");
        }
        // Now even the right password waits, unchecked, and says for how long.
        let r = attempt(&app, &email.to_uppercase(), PASSWORD).await;
        assert_eq!(r, (429, Some("1".into()), "TOO_MANY_ATTEMPTS".into(), false), "{email}");
    }
    // Another address is not held back by them.
    assert_eq!(attempt(&app, "other@example.com", PASSWORD).await.0, 200);
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT coalesce(email, ''), action FROM auth_audit ORDER BY at, id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let failed = |e: &str| {
        rows.iter()
            .filter(|(m, a)| m == e && a == "breakglass_login_failed")
            .count()
    };
    // Each checked attempt is audited; throttled ones were not checked.
    assert_eq!((failed(EMAIL), failed("nobody@example.com")), (5, 5));
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(sessions, 1, "only other@ signed in");
    app.stop().await;
}

#[tokio::test]
async fn parallel_guesses_cannot_slip_past_the_throttle() {
    use mosaic::auth::throttle::FREE_ATTEMPTS;
    let app = spawn_app_with(|_| {}).await;
    let guesses = (0..20).map(|i| {
        let app = &app;
        async move { attempt(app, EMAIL, &format!("guess number {i}")).await.0 }
    });
    let mut statuses = futures::future::join_all(guesses).await;
    statuses.sort();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (checked, throttled),
        (FREE_ATTEMPTS as usize, 20 - FREE_ATTEMPTS as usize),
        "{statuses:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_or_oversized_break_glass_requests_get_bad_request() {
    let app = spawn_app_with(|_| {}).await;
    let send = |body: String| {
        let app = &app;
        async move {
            let r = app
                .client
                .post(format!("{}/auth/breakglass", app.base))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let long = "x".repeat(400);
    for body in [
        "{".to_string(),
        json!({ "email": EMAIL }).to_string(),
        json!({ "email": EMAIL, "password": 5 }).to_string(),
        json!({ "email": format!("{long}@example.com"), "password": PASSWORD }).to_string(),
        json!({ "email": EMAIL, "password": "y".repeat(2000) }).to_string(),
    ] {
        let (status, body_json) = send(body.clone()).await;
        assert_eq!(
            (status, code(&body_json)),
            (400, "BAD_REQUEST".to_string()),
            "{body}: {body_json}"
        );
    }
    let mut conn = app.admin().await;
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM auth_audit")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(audited, 0, "refused unread, so nothing was checked");
    app.stop().await;
}

/// A GraphQL POST with a session's cookie and CSRF header.
async fn with_session(app: &TestApp, s: &common::BreakGlassSession, query: &str, variables: Value) -> (u16, Value) {
    let r = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("cookie", &s.cookie)
        .header("x-mosaic-csrf", &s.csrf)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

const MY_SESSIONS: &str = "{ mySessions { id method current expiresAt lastSeenAt } }";

#[tokio::test]
async fn people_see_their_sessions_and_end_them_but_nobody_elses() {
    let app = spawn_app_with(|_| {}).await;
    let laptop = app.break_glass_session(EMAIL, PASSWORD).await;
    let phone = app.break_glass_sign_in(EMAIL, PASSWORD).await;
    let other = app.break_glass_session("other@example.com", PASSWORD).await;
    let token = mosaic::auth::tokens::create(&mut app.admin().await, EMAIL, None)
        .await
        .unwrap();

    let (status, body) = with_session(&app, &laptop, MY_SESSIONS, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let mine = body["data"]["mySessions"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 2, "only my own: {body}");
    assert!(
        mine.iter()
            .all(|s| s["method"] == "BREAK_GLASS" && s["expiresAt"].is_string())
    );
    let current: Vec<bool> = mine.iter().map(|s| s["current"].as_bool().unwrap()).collect();
    assert_eq!(current, [false, true], "newest first; the laptop's is the current one");
    let (phone_id, laptop_id) = (mine[0]["id"].clone(), mine[1]["id"].clone());
    // With a token, none is current.
    let data = app.gql_ok(&token, MY_SESSIONS, json!({})).await;
    assert!(
        data["mySessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["current"] == false)
    );

    // Someone else's session cannot be ended, nor found; bad ids are bad input.
    let (_, other_list) = with_session(&app, &other, MY_SESSIONS, json!({})).await;
    let other_id = other_list["data"]["mySessions"][0]["id"].clone();
    let end = "mutation($id: ID!) { endMySession(id: $id) }";
    let body = app.gql(&token, end, json!({ "id": other_id })).await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let body = app.gql(&token, end, json!({ "id": "not-a-session" })).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(with_session(&app, &other, MY_SESSIONS, json!({})).await.0, 200);

    // Sign out everywhere else: the phone's session ends, the laptop's stays.
    let (_, body) = with_session(&app, &laptop, "mutation { endMyOtherSessions }", json!({})).await;
    assert_eq!(body["data"]["endMyOtherSessions"], 1, "{body}");
    assert_eq!(with_session(&app, &phone, MY_SESSIONS, json!({})).await.0, 401);
    let (_, body) = with_session(&app, &laptop, MY_SESSIONS, json!({})).await;
    let left = &body["data"]["mySessions"];
    assert_eq!(
        (left.as_array().map(Vec::len), &left[0]["id"], &left[0]["current"]),
        (Some(1), &laptop_id, &json!(true)),
        "{body}"
    );
    let body = app.gql(&token, end, json!({ "id": phone_id })).await;
    assert_eq!(code(&body), "NOT_FOUND", "already ended: {body}");
    // Ending the current one signs out.
    let (_, body) = with_session(&app, &laptop, end, json!({ "id": laptop_id })).await;
    assert_eq!(body["data"]["endMySession"], true, "{body}");
    assert_eq!(with_session(&app, &laptop, MY_SESSIONS, json!({})).await.0, 401);
    assert_eq!(
        with_session(&app, &other, MY_SESSIONS, json!({})).await.0,
        200,
        "others untouched"
    );

    let audited: Vec<Value> =
        sqlx::query_scalar("SELECT details FROM auth_audit WHERE action = 'sessions_ended' AND email = $1 ORDER BY id")
            .bind(EMAIL)
            .fetch_all(&mut app.admin().await)
            .await
            .unwrap();
    assert_eq!(
        audited,
        [
            json!({ "sessions": 1, "by": "self" }),
            json!({ "sessions": 1, "by": "self" })
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_session_unused_for_the_idle_timeout_ends_and_use_keeps_it_alive() {
    let app = spawn_app_with(|c| c.session_idle_timeout = std::time::Duration::from_secs(1800)).await;
    let (_, cookie, csrf) = sign_in(&app).await;
    let mut conn = app.admin().await;
    let set_last_seen = |minutes: i32| {
        sqlx::query("UPDATE sessions SET last_seen_at = now() - make_interval(mins => $1)").bind(minutes)
    };
    let seen_within_a_minute = "SELECT last_seen_at > now() - interval '1 minute' FROM sessions";
    // Last used 20 minutes ago: still on, and this use is recorded.
    set_last_seen(20).execute(&mut conn).await.unwrap();
    assert_eq!(me(&app, &cookie, &csrf).await.0, 200);
    let fresh: bool = sqlx::query_scalar(seen_within_a_minute)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(fresh, "use moves last_seen_at");
    let (_, body) = me(&app, &cookie, &csrf).await;
    assert_eq!(body["data"]["me"]["email"], EMAIL);
    // Unused for 31 minutes: ended, and it says why; using it does not revive it.
    set_last_seen(31).execute(&mut conn).await.unwrap();
    let (status, body) = me(&app, &cookie, &csrf).await;
    assert_eq!((status, code(&body).as_str()), (401, "UNAUTHENTICATED"), "{body}");
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("inactivity"),
        "{body}"
    );
    let fresh: bool = sqlx::query_scalar(seen_within_a_minute)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!fresh, "an idle session is not marked as used");
    assert_eq!(session_status(&app, &cookie).await, 401);
    app.stop().await;
}

#[tokio::test]
async fn with_no_idle_timeout_only_the_fixed_expiry_ends_a_session() {
    let app = spawn_app_with(|c| c.session_idle_timeout = std::time::Duration::ZERO).await;
    let (_, cookie, csrf) = sign_in(&app).await;
    sqlx::query("UPDATE sessions SET last_seen_at = now() - interval '7 hours'")
        .execute(&mut app.admin().await)
        .await
        .unwrap();
    assert_eq!(me(&app, &cookie, &csrf).await.0, 200);
    app.stop().await;
}
