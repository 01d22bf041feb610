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

/// A driver the test talks to while it runs: it prints `{"waiting": step}`
/// and waits for `go` on its stdin; its last line is its observations.
struct Conversation {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stdin: tokio::process::ChildStdin,
    stderr: tokio::task::JoinHandle<String>,
    deadline: Instant,
}

impl Conversation {
    fn start(dir: &Path, chromium: &Path, script: &str, args: &[&str], timeout: Duration) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(dir)
            .env("PUPPETEER_EXECUTABLE_PATH", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("node runs tests/browser/{script}: {e}"));
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let stdin = child.stdin.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        Self {
            child,
            lines,
            stdin,
            stderr,
            deadline: Instant::now() + timeout,
        }
    }

    /// The driver's next line (JSON), or its failure report.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout_at(self.deadline.into(), self.lines.next_line()).await;
        match line {
            Ok(Ok(Some(line))) => serde_json::from_str(&line).unwrap_or_else(|_| panic!("the driver printed {line:?}")),
            Ok(_) => {
                let status = self.child.wait().await.unwrap();
                let stderr = (&mut self.stderr).await.unwrap();
                panic!("the browser run ended ({status}) early:\n{stderr}")
            }
            Err(_) => panic!("the browser run did not finish in time"),
        }
    }

    /// Waits until the driver reaches `step`.
    async fn at(&mut self, step: &str) {
        let line = self.next().await;
        assert_eq!(line, json!({ "waiting": step }), "the driver's handshake");
    }

    async fn go(&mut self) {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(b"go\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Its observations, once it exits successfully.
    async fn finish(mut self) -> Value {
        let seen = self.next().await;
        let status = tokio::time::timeout_at(self.deadline.into(), self.child.wait())
            .await
            .expect("the driver exits")
            .unwrap();
        assert!(
            status.success(),
            "the browser run failed ({status}):\n{}",
            self.stderr.await.unwrap()
        );
        seen
    }
}

/// Requests to the spoke the audit holds, of one verb.
async fn audited(app: &common::TestApp, verb: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM federation_audit WHERE verb = $1")
        .bind(verb)
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap()
}

/// The federation console (issue 16), in Chromium against two real
/// instances over HTTPS. The spoke's admin, in the spoke's console:
/// connects to the master; (the master connects back, so the spoke holds
/// its request) approves it with a scope made in the form (tasks only, at
/// most 2 rows), after the form refused to send contradictions; the
/// master's federated query gets only that; the audit shows the request;
/// revoking (confirmed) cuts the master off. Nothing in the page is loaded
/// from elsewhere, breaks the content security policy or throws.
#[tokio::test]
async fn the_federation_console_connects_approves_audits_and_revokes_in_chromium() {
    use mosaic::federation::protocol::QUERY_PATH;

    let (dir, chromium) = prerequisites();
    let (spoke, master) = tokio::join!(common::spawn_instance("spoke"), common::spawn_instance("master"));
    let admin = "admin@spoke.example";
    let session = spoke.break_glass_session(admin, "a long break-glass password").await;
    let token = mosaic::auth::tokens::create(&mut spoke.admin().await, admin, None)
        .await
        .unwrap();
    let ws = spoke.create_workspace(&token, "shared").await;
    for title in ["one", "two", "three"] {
        spoke.create_task(&token, &ws, title).await;
    }
    let (_, reader) = master.user("reader@master.example").await;
    let cookie = |name: &str| {
        session
            .set_cookies
            .iter()
            .find_map(|c| c.strip_prefix(&format!("{name}=")))
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("no {name} cookie: {:?}", session.set_cookies))
            .to_string()
    };
    let master_id = master.state.instance_id.to_string();
    let started = Instant::now();
    let mut driver = Conversation::start(
        &dir,
        &chromium,
        "console.js",
        &[
            &spoke.base,
            &cookie("mosaic_session"),
            &cookie("mosaic_csrf"),
            &master.base,
            &master_id,
            &ws,
        ],
        Duration::from_secs(120),
    );

    driver.at("connected").await;
    // The page's CONNECT reached the master, which now holds the spoke's request.
    let at_master = mosaic::federation::registry::get(&master.state.federation.pool, spoke.state.instance_id)
        .await
        .unwrap()
        .expect("the master knows the spoke");
    assert_eq!(at_master.inbound_state, "pending");
    let back = master
        .state
        .federation
        .connect(&spoke.base, "test")
        .await
        .expect("the master's CONNECT");
    assert_eq!(back.outbound_state, "requested");
    driver.go().await;

    driver.at("approved").await;
    // The scope the form made is the spoke's grant.
    let granted = mosaic::federation::registry::get(&spoke.state.federation.pool, master.state.instance_id)
        .await
        .unwrap()
        .unwrap()
        .terms();
    assert_eq!(granted.workspaces, [common::local_id(&ws)]);
    assert_eq!(
        granted.resources,
        Some(vec![mosaic::federation::grant::Resource::Tasks])
    );
    assert_eq!(granted.max_rows_per_query, Some(2));
    let tasks = "{ tasks(scope: {all: true}, first: 10) { edges { node { title instance { name } } } } }";
    // Enough other requests that the audit has a second page.
    for _ in 0..20 {
        let (status, _) = common::signed(
            &master,
            &spoke,
            QUERY_PATH,
            "{ tasks(first: 1) { edges { node { title } } } }",
        )
        .await;
        assert_eq!(status, 200);
    }
    let answer = master.gql_ok(&reader, tasks, json!({})).await;
    let from_spoke: Vec<&Value> = answer["tasks"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node"]["instance"]["name"] == "spoke")
        .collect();
    assert_eq!(from_spoke.len(), 2, "the grant's row cap: {answer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while audited(&spoke, "QUERY").await < 21 {
        assert!(Instant::now() < deadline, "the audit rows were not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver.go().await;

    let seen = driver.finish().await;
    eprintln!("browser run: {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("observed: {seen:#}");

    assert_eq!(seen["signedOut"]["status"], 401, "{seen}");
    assert!(
        seen["signedOut"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("administrator")),
        "{seen}"
    );
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["initialPeers"], 0, "{seen}");
    // Connected: the row names the master, its key and the request.
    let connected = &seen["connected"];
    assert_eq!(connected["name"], "master", "{seen}");
    assert_eq!(connected["baseUrl"], master.base, "{seen}");
    assert_eq!(connected["inbound"], "none", "{seen}");
    let key = master
        .state
        .federation
        .identity()
        .await
        .unwrap()
        .document
        .current_key
        .key_id;
    assert_eq!(connected["keys"], key, "{seen}");
    assert_eq!(seen["connectResult"], "master: requested", "{seen}");
    assert!(
        seen["refusedConnect"]
            .as_str()
            .is_some_and(|r| r.starts_with("BAD_USER_INPUT: url: plain http to peers is refused")),
        "{seen}"
    );
    assert_eq!(seen["pending"]["inbound"], "pending", "{seen}");
    assert!(
        seen["pending"]["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("approve")),
        "{seen}"
    );

    // The form refused what the server would, field by field, and sent nothing.
    let form = &seen["form"];
    assert_eq!(
        form["fresh"],
        json!({ "submitDisabled": true, "problemFields": ["workspaceIds"] }),
        "{seen}"
    );
    assert_eq!(
        form["noResource"],
        json!({ "submitDisabled": true, "problemFields": ["resources"] }),
        "{seen}"
    );
    assert_eq!(
        form["excludeIncluded"],
        json!({ "disabled": true, "checked": false }),
        "{seen}"
    );
    assert_eq!(
        form["forcedContradiction"]["submitDisabled"], true,
        "a resource both included and excluded: {seen}"
    );
    assert!(
        form["forcedContradiction"]["problemFields"]
            .as_array()
            .unwrap()
            .contains(&json!("excludedResources")),
        "{seen}"
    );
    assert_eq!(
        form["mutationsAfterForcedSubmit"],
        json!(["connectPeer", "connectPeer"]),
        "nothing sent: {seen}"
    );
    assert_eq!(
        form["zeroRows"],
        json!({ "submitDisabled": true, "problemFields": ["maxRowsPerQuery"] }),
        "{seen}"
    );
    assert_eq!(
        form["valid"],
        json!({ "submitDisabled": false, "problemFields": [] }),
        "{seen}"
    );

    // Approved with that scope: the page says so.
    assert_eq!(seen["approved"]["inbound"], "active", "{seen}");
    assert_eq!(seen["approved"]["outbound"], "requested", "{seen}");
    assert_eq!(
        seen["approved"]["grant"], "shared; reads tasks; read-only; max 2 rows",
        "{seen}"
    );
    assert_eq!(seen["formHidden"], true, "{seen}");

    // The audit, filtered to the master's allowed requests: newest first,
    // the federated query (2 rows), then the 20 signed ones.
    let audit = seen["audit"].as_array().unwrap();
    assert_eq!(audit.len(), 20, "one page: {seen}");
    assert_eq!(audit[0]["peer"], "master", "{seen}");
    assert_eq!(audit[0]["verb"], "QUERY", "{seen}");
    assert_eq!(audit[0]["outcome"], "ALLOWED", "{seen}");
    assert_eq!(audit[0]["rows"], "2", "{seen}");
    assert!(
        audit[1..].iter().all(|r| r["verb"] == "QUERY" && r["rows"] == "1"),
        "{seen}"
    );
    // Everything (the master's CONNECT too) takes a second page.
    let total = audited(&spoke, "QUERY").await + audited(&spoke, "CONNECT").await;
    assert_eq!(
        seen["paging"],
        json!({ "firstPage": 20, "more": true, "afterMore": total, "count": format!("{total} of {total}") }),
        "{seen}"
    );

    // Edited: the form showed the grant as it was, and saved the change.
    assert_eq!(
        seen["editForm"],
        json!({
            "title": "Edit the grant of master",
            "submit": "Save the grant",
            "workspaces": [ws],
            "resourcesMode": "only",
            "resources": ["tasks"],
            "excluded": [],
            "maxRows": "2",
            "valid": "true",
        }),
        "{seen}"
    );
    assert_eq!(
        seen["edited"]["grant"], "shared; reads tasks; read-only; max 3 rows",
        "{seen}"
    );

    // Revoked after a confirmation (nothing sent before it), both ways.
    assert!(
        seen["confirm"]["text"].as_str().is_some_and(|t| t.contains("master")),
        "{seen}"
    );
    assert_eq!(
        seen["confirm"]["mutations"],
        json!(["connectPeer", "connectPeer", "approvePeer", "setPeerGrant"]),
        "{seen}"
    );
    assert_eq!(seen["revoked"]["inbound"], "revoked", "{seen}");
    assert_eq!(seen["revoked"]["outbound"], "revoked", "{seen}");
    assert_eq!(
        seen["mutations"],
        json!([
            "connectPeer",
            "connectPeer",
            "approvePeer",
            "setPeerGrant",
            "revokePeer"
        ]),
        "{seen}"
    );

    // The master is cut off: its merged view leaves the spoke out, and a
    // request it signs anyway is refused.
    let answer = master.gql_ok(&reader, tasks, json!({})).await;
    assert!(
        answer["tasks"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["node"]["instance"]["name"] != "spoke"),
        "{answer}"
    );
    let (status, body) = common::signed(&master, &spoke, QUERY_PATH, "{ tasks { edges { node { title } } } }").await;
    assert_eq!(
        (status, common::code(&body).as_str()),
        (403, "PEER_NOT_ACTIVE"),
        "{body}"
    );

    assert_eq!(seen["pageErrors"], json!([]), "{seen}");
    assert_eq!(seen["cspViolations"], json!([]), "{seen}");
    assert_eq!(seen["externalRequests"], json!([]), "{seen}");
    spoke.stop().await;
    master.stop().await;
}
