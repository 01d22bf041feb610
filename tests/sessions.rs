//! Browser sessions apart from how they were opened: cookie attributes over
//! HTTPS, and expiry. Sessions here are opened by a break-glass
//! administrator, which needs no identity provider.

mod common;

use common::{TestApp, code, spawn_app_with, spawn_instance};
use serde_json::{Value, json};

const EMAIL: &str = "root@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// Signs in; returns the Set-Cookie headers, the `Cookie` header to send and the CSRF token.
async fn sign_in(app: &TestApp) -> (Vec<String>, String, String) {
    let mut conn = app.admin().await;
    mosaic::auth::breakglass::create_admin(&mut conn, EMAIL, PASSWORD)
        .await
        .unwrap();
    let r = app
        .client
        .post(format!("{}/auth/breakglass", app.base))
        .json(&json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let cookie = set
        .iter()
        .map(|c| c.split(';').next().unwrap())
        .collect::<Vec<_>>()
        .join("; ");
    let csrf = r.json::<Value>().await.unwrap()["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();
    (set, cookie, csrf)
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
    let r = app
        .client
        .get(format!("{}/auth/session", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
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
