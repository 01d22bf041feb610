//! Sign-in in a real browser: headless Chromium (the Debian package), driven
//! by tests/browser/login.js (puppeteer-core), goes from the GraphQL IDE at
//! `/graphql` through `/auth/login`, the OpenID provider (tests/oidc) and
//! `/auth/callback` back to the IDE, runs the IDE's default query with the
//! session, and signs out at the provider. scripts/browser-test-env installs
//! Chromium and the driver; scripts/oidc-test-env the provider.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::oidc::{Provider, free_port, settings};
use common::spawn_app_with;
use mosaic::config::OidcSettings;
use serde_json::{Value, json};
use uuid::Uuid;

/// Bound on the whole browser run (the driver bounds each of its waits itself).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(60);
const INSTALL: &str = "run scripts/browser-test-env first (installs Chromium and tests/browser/node_modules)";

/// The driver's directory and the Chromium it will launch; fails (never skips)
/// when either is missing.
fn prerequisites() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/puppeteer-core").is_dir(),
        "tests/browser/node_modules/puppeteer-core is missing: {INSTALL}"
    );
    let chromium = std::env::var_os("PUPPETEER_EXECUTABLE_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(chromium.is_file(), "no Chromium at {}: {INSTALL}", chromium.display());
    (dir, chromium)
}

#[tokio::test]
async fn sign_in_to_the_ide_run_a_query_and_sign_out_in_chromium() {
    let (dir, chromium) = prerequisites();
    // The instance listens on the port its redirect URI names.
    let port = free_port();
    let provider = Provider::start(&format!("http://127.0.0.1:{port}/auth/callback")).await;
    let issuer = provider.issuer.clone();
    let app = spawn_app_with(|c| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.oidc = Some(settings(
            issuer.clone(),
            vec![],
            OidcSettings::DEFAULT_DISCOVERY_REFRESH,
        ));
    })
    .await;
    assert_eq!(app.base, format!("http://127.0.0.1:{port}"));

    let started = Instant::now();
    let run = tokio::process::Command::new("node")
        .arg("login.js")
        .arg(&app.base)
        .arg(&issuer)
        .current_dir(&dir)
        .env("PUPPETEER_EXECUTABLE_PATH", &chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DRIVER_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the browser run did not finish within {DRIVER_TIMEOUT:?}"))
        .expect("node runs tests/browser/login.js");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser run failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    eprintln!("browser run: {:.1} s", started.elapsed().as_secs_f64());
    let seen: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the driver printed no JSON line:\n{stdout}\n{stderr}"));
    eprintln!("observed: {seen:#}");

    // Signed out: the IDE offers to sign in, and its query gets no data.
    assert_eq!(
        seen["signedOut"]["signinHref"], "/auth/login?return_to=%2Fgraphql",
        "{seen}"
    );
    assert_eq!(seen["signedOut"]["signoutShown"], false, "{seen}");
    assert_eq!(
        seen["signedOut"]["query"],
        json!({ "status": 401, "code": "UNAUTHENTICATED", "csrfHeaderSent": false, "paneHasEmail": false }),
        "{seen}"
    );

    // The whole flow, through the provider and back to the IDE.
    let chain: Vec<&str> = seen["login"]["redirects"]
        .as_array()
        .unwrap_or_else(|| panic!("no redirect chain: {seen}"))
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(chain[0].starts_with(&format!("{}/auth/login", app.base)), "{chain:#?}");
    let at_provider = chain
        .iter()
        .position(|u| u.starts_with(&format!("{issuer}auth")))
        .unwrap_or_else(|| panic!("never at the provider: {chain:#?}"));
    let at_callback = chain
        .iter()
        .position(|u| u.starts_with(&format!("{}/auth/callback?", app.base)))
        .unwrap_or_else(|| panic!("never back at /auth/callback: {chain:#?}"));
    assert!(at_provider < at_callback, "{chain:#?}");
    assert_eq!(
        at_callback,
        chain.len() - 1,
        "the callback redirects to the IDE: {chain:#?}"
    );
    assert_eq!(seen["login"]["landedOn"], format!("{}/graphql", app.base));
    assert_eq!(seen["login"]["landedStatus"], 200);

    // Signed in: the IDE names the user and its query returns her data, sent
    // with the session cookie and the CSRF header (no token).
    assert_eq!(
        seen["signedIn"]["sessionText"],
        "signed in as alice@example.com Sign out"
    );
    assert_eq!(seen["signedIn"]["status"], "requests use your session");
    assert_eq!(seen["signedIn"]["signinShown"], false);
    let page_cookies: Vec<&str> = seen["signedIn"]["documentCookies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        page_cookies.contains(&"mosaic_csrf") && !page_cookies.contains(&"mosaic_session"),
        "the session cookie is HttpOnly, the CSRF cookie is not: {page_cookies:?}"
    );
    let query = &seen["signedIn"]["query"];
    assert_eq!(query["status"], 200, "{query}");
    assert_eq!(query["email"], "alice@example.com", "{query}");
    assert_eq!(query["errors"], Value::Null, "{query}");
    assert_eq!(query["csrfHeaderSent"], true, "{query}");
    assert_eq!(query["authorizationSent"], false, "{query}");
    assert_eq!(query["paneHasEmail"], true, "{query}");

    // Signed out at the provider, with the ID token as hint (else its page is an error).
    let logout = &seen["logout"];
    assert_eq!(logout["status"], 200, "{logout}");
    assert_eq!(logout["contentType"], "application/json", "{logout}");
    assert!(
        logout["landedOn"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{issuer}session/end?")) && u.contains("id_token_hint=")),
        "{logout}"
    );
    assert_eq!(logout["landedThroughRedirects"], 0, "{logout}");
    assert_eq!(
        logout["landedStatus"], 200,
        "the provider accepted the logout request: {logout}"
    );
    assert_eq!(
        seen["afterLogout"],
        json!({ "sessionStatus": 401, "signoutShown": false, "cookies": [] }),
        "{seen}"
    );
    assert_eq!(seen["pageErrors"], json!([]), "uncaught errors in the pages: {seen}");
    assert_eq!(seen["cspViolations"], json!([]), "{seen}");
    // Mosaic's pages reference nothing outside the instance (the provider's
    // sign-out page asks for a web font, which the browser cannot resolve).
    let external = seen["externalRequests"].as_array().expect("externalRequests");
    assert!(
        !external
            .iter()
            .any(|r| r["from"].as_str().is_none_or(|page| page.starts_with(&app.base))),
        "requests that left the instance from its pages: {external:#?}"
    );

    // Server side: one user, one session opened by the sign-in and ended by the sign-out.
    let mut conn = app.admin().await;
    let (users, sessions): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM sessions)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((users, sessions), (1, 0), "one user, and no session left open");
    let audit: Vec<(String, Option<Uuid>)> = sqlx::query_as("SELECT action, user_id FROM auth_audit ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["sso_login", "logout"], "{audit:?}");
    let alice: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'alice@example.com'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(audit.iter().all(|(_, u)| *u == Some(alice)), "{audit:?}");

    app.stop().await;
    provider.stop().await;
}

/// The IDE of an instance without single sign-on (issue 12): it offers no
/// sign-in but says where a token comes from, and with a token GraphiQL's own
/// introspection query passes the default limits, so the docs pane lists the
/// schema's types.
#[tokio::test]
async fn the_docs_pane_loads_the_schema_under_the_default_limits_in_chromium() {
    let (dir, chromium) = prerequisites();
    let app = common::spawn_app().await;
    assert_eq!(app.state.config.limits.max_depth, 12, "the default limits");
    let (_, token) = app.user("docs@example.com").await;
    let run = tokio::process::Command::new("node")
        .arg("docs.js")
        .arg(&app.base)
        .arg(&token)
        .current_dir(&dir)
        .env("PUPPETEER_EXECUTABLE_PATH", &chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DRIVER_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the browser run did not finish within {DRIVER_TIMEOUT:?}"))
        .expect("node runs tests/browser/docs.js");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser run failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let seen: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the driver printed no JSON line:\n{stdout}\n{stderr}"));
    eprintln!("observed: {seen:#}");
    assert_eq!(seen["signinShown"], false, "no sign-in without SSO: {seen}");
    assert!(
        seen["hint"].as_str().is_some_and(|h| h.contains("mosaic token create")),
        "{seen}"
    );
    assert_eq!(seen["introspection"]["status"], 200, "{seen}");
    assert_eq!(seen["introspection"]["errors"], Value::Null, "{seen}");
    assert_eq!(seen["introspection"]["queryType"], "QueryRoot", "{seen}");
    assert_eq!(seen["docsError"], json!([]), "{seen}");
    // The root types, then all the schema's types.
    let types: Vec<&str> = seen["rootTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types[..2], ["QueryRoot", "MutationRoot"], "{seen}");
    for name in ["Task", "Workspace", "ApiToken"] {
        assert!(types.contains(&name), "{name} in the docs pane: {types:?}");
    }
    let fields: Vec<&str> = seen["queryFields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields listed: {seen}"))
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for field in ["me", "workspaces", "tasks", "tokens"] {
        assert!(fields.contains(&field), "{field} in the docs pane: {fields:?}");
    }
    assert_eq!(seen["pageErrors"], json!([]), "{seen}");
    assert_eq!(seen["cspViolations"], json!([]), "{seen}");
    app.stop().await;
}

/// The knowledge graph page (issue 14): signed out it is refused (401, no
/// single sign-on here); with a session it draws every entry the user may
/// see of the workspace (not archived ones, not another author's draft),
/// one painted node each, and clicking a node shows its entry.
#[tokio::test]
async fn the_knowledge_graph_page_draws_the_workspace_in_chromium() {
    let (dir, chromium) = prerequisites();
    let app = common::spawn_app().await;
    let session = app
        .break_glass_session("graph@example.com", "a long break-glass password")
        .await;
    let token = mosaic::auth::tokens::create(&mut app.admin().await, "graph@example.com", None)
        .await
        .unwrap();
    let ws = app.create_workspace(&token, "graph").await;
    let (_, other) = app.user("other@example.com").await;
    app.add_member(&token, &ws, "other@example.com", "MEMBER").await;
    let create = "mutation($i: CreateKnowledgeEntryInput!) { createKnowledgeEntry(input: $i) { id } }";
    for (title, content, status, author) in [
        ("Alpha", "see [[Beta]] and [[Gamma]]", "PUBLISHED", &token),
        ("Beta", "back to [[Alpha]]", "PUBLISHED", &token),
        ("Gamma", "**bold** gamma", "PUBLISHED", &token),
        ("Delta", "links [[Alpha]] and [[nowhere]]", "PUBLISHED", &token),
        ("Epsilon", "an orphan", "PUBLISHED", &token),
        ("Retired", "[[Alpha]]", "ARCHIVED", &token),
        ("Someone's draft", "[[Alpha]]", "DRAFT", &other),
    ] {
        let input = json!({ "workspaceId": ws, "title": title, "content": content, "status": status });
        app.gql_ok(author, create, json!({ "i": input })).await;
    }
    let cookie = |name: &str| {
        session
            .set_cookies
            .iter()
            .find_map(|c| c.strip_prefix(&format!("{name}=")))
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("no {name} cookie: {:?}", session.set_cookies))
            .to_string()
    };
    let run = tokio::process::Command::new("node")
        .arg("graph.js")
        .arg(&app.base)
        .arg(cookie("mosaic_session"))
        .arg(cookie("mosaic_csrf"))
        .arg(&ws)
        .current_dir(&dir)
        .env("PUPPETEER_EXECUTABLE_PATH", &chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DRIVER_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the browser run did not finish within {DRIVER_TIMEOUT:?}"))
        .expect("node runs tests/browser/graph.js");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser run failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let seen: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the driver printed no JSON line:\n{stdout}\n{stderr}"));
    eprintln!("observed: {seen:#}");

    assert_eq!(seen["signedOut"]["status"], 401, "{seen}");
    assert!(
        seen["signedOut"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("signed-in")),
        "{seen}"
    );
    assert_eq!(seen["status"], 200, "{seen}");
    let graph = &seen["graph"];
    assert_eq!(graph["picked"], ws, "{seen}");
    // Alpha, Beta, Gamma, Delta, Epsilon; edges Alpha→Beta, Alpha→Gamma, Beta→Alpha, Delta→Alpha.
    assert_eq!(graph["nodes"], 5, "{seen}");
    assert_eq!(graph["drawnNodes"], 5, "every node painted: {seen}");
    assert_eq!(graph["edges"], 4, "{seen}");
    assert_eq!(graph["canvases"].as_u64().map(|n| n >= 1), Some(true), "{seen}");
    let clicked = seen["clickedNode"].as_str().unwrap();
    assert_eq!(seen["clicked"]["title"], clicked, "{seen}");
    assert!(
        seen["clicked"]["contentHtml"].as_str().unwrap().contains("<p>"),
        "{seen}"
    );
    assert_eq!(seen["pageErrors"], json!([]), "{seen}");
    assert_eq!(seen["cspViolations"], json!([]), "{seen}");
    assert_eq!(seen["externalRequests"], json!([]), "{seen}");
    app.stop().await;
}
