//! The GraphQL IDE at `GET /graphql`: GraphiQL served entirely by this
//! instance (no CDN), from assets embedded at build time.

use crate::common;

use common::spawn_app;

/// The `/graphql/ide/...` URLs the page references (query strings removed).
fn asset_paths(html: &str) -> Vec<String> {
    let mut paths: Vec<String> = html
        .match_indices("/graphql/ide/")
        .map(|(at, _)| {
            let rest = &html[at..];
            let end = rest
                .find(|c: char| c == '"' || c == '\'' || c.is_whitespace())
                .unwrap_or(rest.len());
            let url = &rest[..end];
            url.split('?').next().unwrap().to_string()
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

#[tokio::test]
async fn ide_page_and_its_assets_are_served_offline() {
    let app = spawn_app().await;
    let r = app.client.get(format!("{}/graphql", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the IDE page must not reference any external URL:\n{html}"
    );

    let paths = asset_paths(&html);
    assert!(
        !paths.is_empty(),
        "the IDE assets were not embedded at build time: run `npm ci --prefix ide` and rebuild\n{html}"
    );
    for name in ["graphiql.min.js", "graphiql.min.css", "react.production.min.js"] {
        assert!(
            paths.iter().any(|p| p.ends_with(name)),
            "{name} is not referenced: {paths:?}"
        );
    }
    for path in &paths {
        let r = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
        let expected = if path.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        assert!(content_type.starts_with(expected), "{path}: {content_type}");
        let cache = r.headers()[reqwest::header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .to_string();
        assert!(cache.contains("max-age="), "{path}: {cache}");
        let body = r.bytes().await.unwrap();
        assert!(body.len() > 10_000, "{path} is only {} bytes", body.len());
    }

    let r = app
        .client
        .get(format!("{}/graphql/ide/no-such-file.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn assets_are_gzipped_for_clients_that_accept_it() {
    use std::io::Read;
    let app = spawn_app().await;
    let url = format!("{}/graphql/ide/graphiql.min.js", app.base);
    let plain = app.client.get(&url).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["vary"], "accept-encoding");
    let plain = plain.bytes().await.unwrap();
    let r = app
        .client
        .get(&url)
        .header("accept-encoding", "br, gzip;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["vary"], "accept-encoding");
    let gz = r.bytes().await.unwrap();
    assert!(
        gz.len() * 2 < plain.len(),
        "{} gzipped vs {} bytes",
        gz.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert!(unzipped == plain, "gzip holds the same bytes");
    let refused = app
        .client
        .get(&url)
        .header("accept-encoding", "gzip;q=0")
        .send()
        .await
        .unwrap();
    assert!(refused.headers().get("content-encoding").is_none());
    app.stop().await;
}

/// The knowledge graph page is served like the IDE, but only to a signed-in
/// session: signed out it is 401 here (no single sign-on) and a redirect to
/// sign in where single sign-on is configured. Its script and drawing
/// library come from this instance; it allows no inline script.
#[tokio::test]
async fn the_knowledge_graph_page_needs_a_session_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let url = format!("{}/knowledge/graph", app.base);
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()[reqwest::header::CACHE_CONTROL], "no-store");
    let session = app
        .break_glass_session("kg@example.com", "a long break-glass password")
        .await;
    // Another instance's or a made-up session is no session.
    let r = get_with_cookie(&app, &url, "mosaic_session=made-up").await;
    assert_eq!(r.status(), 401);
    let r = get_with_cookie(&app, &url, &session.cookie).await;
    assert_eq!(r.status(), 200);
    let policy = csp(&r);
    assert!(policy.contains("script-src 'self';"), "{policy}");
    let html = r.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    assert!(!html.contains("ASSETS_VERSION"), "asset URLs carry the version: {html}");
    assert_eq!(asset_paths(&html), ["/graphql/ide/force-graph.min.js"]);
    for path in ["/graphql/ide/force-graph.min.js", "/knowledge/graph/graph.js"] {
        let r = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/javascript"), "{path}: {content_type}");
        assert!(r.text().await.unwrap().len() > 1000, "{path}");
    }
    app.stop().await;

    redirects_to_sign_in("/knowledge/graph", "/auth/login?return_to=%2Fknowledge%2Fgraph").await;
}

/// The federation console is served like the knowledge graph page, to an
/// instance administrator's session: signed out 401 here (a redirect to sign
/// in with single sign-on), 403 with a note for a signed-in non-admin. Its
/// one script comes from this instance; it allows no inline script.
#[tokio::test]
async fn the_federation_console_is_for_administrators_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let url = format!("{}/admin/federation", app.base);
    let r = app.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()[reqwest::header::CACHE_CONTROL], "no-store");
    assert!(r.text().await.unwrap().contains("id=\"signed-out\""));
    let admin = app
        .break_glass_session("fed@example.com", "a long break-glass password")
        .await;
    // A signed-in user who is not (any longer) an administrator.
    let user = {
        let mut conn = app.admin().await;
        mosaic::auth::breakglass::create_admin(&mut conn, "plain@example.com", "another long password")
            .await
            .unwrap();
        let session = app
            .break_glass_sign_in("plain@example.com", "another long password")
            .await;
        sqlx::query("UPDATE users SET is_admin = false WHERE email = 'plain@example.com'")
            .execute(&mut conn)
            .await
            .unwrap();
        session
    };
    let r = get_with_cookie(&app, &url, &user.cookie).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()[reqwest::header::CACHE_CONTROL], "no-store");
    assert!(r.text().await.unwrap().contains("id=\"not-admin\""));
    // The API agrees: only administrators read the peers.
    let r = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("cookie", &user.cookie)
        .header("x-mosaic-csrf", &user.csrf)
        .json(&serde_json::json!({ "query": "{ peers { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(common::code(&r.json().await.unwrap()), "FORBIDDEN");

    let r = get_with_cookie(&app, &url, &admin.cookie).await;
    assert_eq!(r.status(), 200);
    let policy = csp(&r);
    assert!(
        policy.contains("script-src 'self';") && policy.contains("connect-src 'self';"),
        "{policy}"
    );
    assert_eq!(r.headers()[reqwest::header::CACHE_CONTROL], "no-store");
    let html = r.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    assert!(!html.contains("<script>"), "no inline script: {html}");
    let scripts: Vec<&str> = html
        .match_indices("<script src=\"")
        .map(|(at, m)| {
            let rest = &html[at + m.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert_eq!(scripts, ["/admin/federation/console.js"]);
    let r = app
        .client
        .get(format!("{}/admin/federation/console.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/javascript"), "{content_type}");
    assert_eq!(r.headers()[reqwest::header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let script = r.text().await.unwrap();
    assert!(!script.contains("innerHTML"), "server data is set as text only");
    app.stop().await;

    redirects_to_sign_in("/admin/federation", "/auth/login?return_to=%2Fadmin%2Ffederation").await;
}

/// With single sign-on configured, a signed-out `GET path` is sent to sign in
/// (303 to `location`).
async fn redirects_to_sign_in(path: &str, location: &str) {
    let port = common::oidc::free_port();
    let provider = common::oidc::Provider::start(&format!("http://127.0.0.1:{port}/auth/callback")).await;
    let issuer = provider.issuer.clone();
    let app = common::spawn_app_with(|c| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.oidc = Some(common::oidc::settings(
            issuer,
            vec![],
            mosaic::config::OidcSettings::DEFAULT_DISCOVERY_REFRESH,
        ));
    })
    .await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(format!("{}{path}", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 303, "{path}");
    assert_eq!(r.headers()[reqwest::header::LOCATION], location, "{path}");
    app.stop().await;
    provider.stop().await;
}

/// GET `url` of `app` with the session `cookie`.
async fn get_with_cookie(app: &common::TestApp, url: &str, cookie: &str) -> reqwest::Response {
    app.client.get(url).header("cookie", cookie).send().await.unwrap()
}

/// The answer's Content-Security-Policy.
fn csp(r: &reqwest::Response) -> String {
    r.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string()
}
