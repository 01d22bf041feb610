//! GraphQL over HTTP (https://graphql.github.io/graphql-over-http/draft/) at
//! `/graphql`, over real HTTPS: GET queries, media type negotiation, status
//! codes, request shapes refused, cookie safety and the conformance audits of
//! the npm package graphql-http (tests/http_conformance, installed by
//! scripts/test).

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{TestApp, code, fingerprint, spawn_instance, spawn_instance_with};
use reqwest::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use serde_json::{Value, json};

const RESPONSE_JSON: &str = "application/graphql-response+json";
const CREATE: &str = "mutation { createWorkspace(input: {name: \"made\"}) { id } }";

/// Bound on the whole audit run (about 70 requests on loopback).
const AUDIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Every audit of graphql-http passes: no MUST (error), SHOULD (warn) or MAY
/// (notice) fails.
#[tokio::test]
async fn graphql_http_conformance_audits_all_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http_conformance");
    assert!(
        dir.join("node_modules/graphql-http").is_dir(),
        "tests/http_conformance/node_modules is missing: run scripts/test (or npm ci there)"
    );
    let app = spawn_instance("audited").await;
    let (_, token) = app.user("auditor@example.com").await;
    let run = tokio::process::Command::new("node")
        .arg("audit.js")
        .arg(format!("{}/graphql", app.base))
        .arg(&token)
        .current_dir(&dir)
        // The instance's certificate is signed by the tests' own CA; node
        // trusts it in addition to its usual roots.
        .env("NODE_EXTRA_CA_CERTS", &common::pki().ca_cert)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(AUDIT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the audits did not finish within {AUDIT_TIMEOUT:?}"))
        .expect("node runs tests/http_conformance/audit.js");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "audit.js failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("audit.js printed no JSON summary ({e}):\n{stdout}\n{stderr}"));
    eprintln!("conformance: {summary:#}");
    assert_eq!(summary["failed"], serde_json::json!([]), "failing audits: {summary:#}");
    let total = summary["total"].as_u64().unwrap();
    assert!(total >= 60, "graphql-http 1.23.1 has 61 audits: {summary}");
    let ok: u64 = ["MUST", "SHOULD", "MAY"]
        .iter()
        .map(|level| summary["levels"][level]["ok"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        ok, total,
        "every audit is one of MUST, SHOULD, MAY and passed: {summary}"
    );
    app.stop().await;
}

/// A response's status, Content-Type (without parameters) and body text.
async fn answer(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let media = r
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().trim().to_string())
        .unwrap_or_default();
    (status, media, r.text().await.unwrap())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// GET /graphql with these query parameters, a token and an Accept header.
async fn get(app: &TestApp, token: &str, params: &[(&str, &str)], accept: &str) -> reqwest::Response {
    let url = reqwest::Url::parse_with_params(&format!("{}/graphql", app.base), params).unwrap();
    app.client
        .get(url)
        .bearer_auth(token)
        .header(ACCEPT, accept)
        .send()
        .await
        .unwrap()
}

/// POST /graphql with a token, a Content-Type (none when `None`), an Accept header and a body.
async fn post(app: &TestApp, token: &str, content_type: Option<&str>, accept: &str, body: String) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(token)
        .header(ACCEPT, accept)
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    request.send().await.unwrap()
}

async fn workspaces(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM workspaces")
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn get_runs_queries_with_variables_and_never_mutations() {
    let app = spawn_instance("getter").await;
    let (_, token) = app.user("g@example.com").await;
    let query = "query Me($n: String!) { __type(name: $n) { name } me { email } }";
    let vars = r#"{"n":"User"}"#;
    for accept in [RESPONSE_JSON, "application/json", "*/*"] {
        let (status, media, text) = answer(
            get(
                &app,
                &token,
                &[("query", query), ("variables", vars), ("operationName", "Me")],
                accept,
            )
            .await,
        )
        .await;
        let expected = if accept == RESPONSE_JSON {
            RESPONSE_JSON
        } else {
            "application/json"
        };
        assert_eq!((status, media.as_str()), (200, expected), "Accept: {accept}: {text}");
        let body = json_of(&text);
        assert_eq!(body["data"]["me"]["email"], "g@example.com", "{body}");
        assert_eq!(body["data"]["__type"]["name"], "User", "{body}");
        assert!(body.get("errors").is_none(), "{body}");
    }
    // A mutation, alone or chosen by operationName among queries, is refused
    // with 405 before it runs, whatever the client accepts.
    let before = fingerprint(&mut app.admin().await).await;
    let chosen = format!(
        "query Q {{ me {{ id }} }} {}",
        CREATE.replacen("mutation", "mutation M", 1)
    );
    for (params, accept) in [
        (vec![("query", CREATE)], RESPONSE_JSON),
        (vec![("query", CREATE)], "application/json"),
        (vec![("query", chosen.as_str()), ("operationName", "M")], "*/*"),
    ] {
        let r = get(&app, &token, &params, accept).await;
        let allow = r.headers().get(ALLOW).map(|v| v.to_str().unwrap().to_string());
        let (status, _, text) = answer(r).await;
        assert_eq!(status, 405, "{params:?} {accept}: {text}");
        assert_eq!(allow.as_deref(), Some("POST"));
        assert_eq!(code(&json_of(&text)), "METHOD_NOT_ALLOWED");
    }
    assert_eq!(fingerprint(&mut app.admin().await).await, before, "a GET changed data");
    // The query of the same document still runs over GET.
    let (status, _, text) = answer(get(&app, &token, &[("query", &chosen), ("operationName", "Q")], "*/*").await).await;
    assert_eq!(status, 200, "{text}");
    assert!(json_of(&text)["data"]["me"]["id"].is_string(), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn a_browser_get_gets_the_ide_and_a_client_without_html_does_not() {
    let app = spawn_instance("browsed").await;
    let (_, token) = app.user("b@example.com").await;
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    // A browser opening /graphql, with or without a query in the URL, and a
    // client that accepts anything and asks nothing, get the page.
    for (params, accept) in [
        (vec![], browser),
        (vec![("query", "{ me { id } }")], browser),
        (vec![("query", CREATE)], browser),
        (vec![], "*/*"),
    ] {
        let (status, media, text) = answer(get(&app, "", &params, accept).await).await;
        assert_eq!((status, media.as_str()), (200, "text/html"), "{params:?} {accept}");
        assert!(text.contains("<html") && text.contains("Mosaic"), "not the IDE page");
    }
    assert_eq!(workspaces(&app).await, 0, "the page ran nothing");
    // A client that wants JSON without a query is told the query is missing.
    let (status, media, text) = answer(get(&app, &token, &[], "application/json").await).await;
    assert_eq!((status, media.as_str()), (400, "application/json"), "{text}");
    assert_eq!(code(&json_of(&text)), "BAD_REQUEST");
    // Nothing acceptable: 406.
    let (status, _, text) = answer(get(&app, &token, &[("query", "{ me { id } }")], "image/png").await).await;
    assert_eq!(status, 406, "{text}");
    assert_eq!(code(&json_of(&text)), "NOT_ACCEPTABLE");
    app.stop().await;
}

/// With `application/graphql-response+json`, a request that fails before
/// execution is 400 without `data`; with `application/json` the same
/// response comes with 200. Execution errors beside data are 294 (the
/// draft's partial success) for the former.
/// An answer's fields come in the order the query asked for them (the
/// GraphQL spec's serialized map ordering), not sorted.
#[tokio::test]
async fn answers_keep_the_order_the_query_asked() {
    let app = spawn_instance("ordered").await;
    let (_, token) = app.user("o@example.com").await;
    let body = json!({ "query": "{ me { id email } __typename }" }).to_string();
    let (status, _, text) = answer(post(&app, &token, Some("application/json"), "application/json", body).await).await;
    assert_eq!(status, 200, "{text}");
    let at = |name: &str| {
        text.find(&format!("\"{name}\""))
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert!(at("me") < at("__typename"), "{text}");
    assert!(at("id") < at("email"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn request_errors_are_400_without_data_for_graphql_response_json() {
    let app = spawn_instance("statuses").await;
    let (_, token) = app.user("s@example.com").await;
    let cases = [
        ("parse", json!({ "query": "{ me { id }" }), "GRAPHQL_PARSE_FAILED"),
        (
            "validation",
            json!({ "query": "{ me { shoeSize } }" }),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "coercion: wrong type",
            json!({ "query": "query($n: Int) { tasks(first: $n) { totalCount } }", "variables": { "n": "ten" } }),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "coercion: null for a non-null variable",
            json!({ "query": "query($n: String!) { __type(name: $n) { name } }", "variables": { "n": null } }),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "coercion: required variable missing",
            json!({ "query": "mutation($n: String!) { createWorkspace(input: {name: $n}) { id } }" }),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "unknown operation",
            json!({ "query": "query A { me { id } }", "operationName": "B" }),
            "BAD_USER_INPUT",
        ),
        (
            "operation not chosen",
            json!({ "query": "query A { me { id } } query B { me { id } }" }),
            "BAD_USER_INPUT",
        ),
    ];
    let before = fingerprint(&mut app.admin().await).await;
    for (case, request, expected) in &cases {
        let r = post(
            &app,
            &token,
            Some("application/json"),
            RESPONSE_JSON,
            request.to_string(),
        )
        .await;
        let (status, media, text) = answer(r).await;
        assert_eq!((status, media.as_str()), (400, RESPONSE_JSON), "{case}: {text}");
        let body = json_of(&text);
        assert!(body.get("data").is_none(), "{case}: {body}");
        assert_eq!(code(&body), *expected, "{case}: {body}");
        let r = post(
            &app,
            &token,
            Some("application/json"),
            "application/json",
            request.to_string(),
        )
        .await;
        let (status, media, text) = answer(r).await;
        assert_eq!((status, media.as_str()), (200, "application/json"), "{case}: {text}");
        assert_eq!(code(&json_of(&text)), *expected, "{case}: {text}");
    }
    assert_eq!(
        fingerprint(&mut app.admin().await).await,
        before,
        "a refused request changed data"
    );
    // Success: 200 under both types; an execution error beside data: 294
    // (graphql-response+json) or 200 (json), with the data.
    let ok = json!({ "query": "{ me { email } }" }).to_string();
    let (status, media, _) = answer(post(&app, &token, Some("application/json"), RESPONSE_JSON, ok).await).await;
    assert_eq!((status, media.as_str()), (200, RESPONSE_JSON));
    let partial = json!({ "query": "{ me { email } workspace(id: \"not-an-id\") { id } }" }).to_string();
    for (accept, expected) in [(RESPONSE_JSON, 294), ("application/json", 200)] {
        let (status, _, text) =
            answer(post(&app, &token, Some("application/json"), accept, partial.clone()).await).await;
        let body = json_of(&text);
        assert_eq!(status, expected, "{accept}: {body}");
        assert_eq!(body["data"]["me"]["email"], "s@example.com", "{body}");
        assert!(body["errors"].as_array().is_some_and(|e| !e.is_empty()), "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn posts_need_a_json_content_type_and_a_query() {
    let app = spawn_instance("posted").await;
    let (_, token) = app.user("p@example.com").await;
    let create = json!({ "query": CREATE }).to_string();
    let before = fingerprint(&mut app.admin().await).await;
    // No Content-Type, or one Mosaic does not take: 415, nothing runs. Forms
    // and text/plain are what a cross-site page can post without CORS.
    for content_type in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        Some("application/graphql"),
        Some("application/json; charset=latin1"),
    ] {
        let (status, _, text) = answer(post(&app, &token, content_type, "*/*", create.clone()).await).await;
        assert_eq!(status, 415, "{content_type:?}: {text}");
        assert_eq!(code(&json_of(&text)), "UNSUPPORTED_MEDIA_TYPE", "{content_type:?}");
    }
    // A form-encoded GraphQL request is refused too, not read as parameters.
    let form = format!(
        "query={}",
        "mutation%20%7B%20createWorkspace(input%3A%20%7Bname%3A%20%22made%22%7D)%20%7B%20id%20%7D%20%7D"
    );
    let (status, _, _) = answer(post(&app, &token, Some("application/x-www-form-urlencoded"), "*/*", form).await).await;
    assert_eq!(status, 415);
    // Missing or mistyped parameters, malformed JSON: 400 BAD_REQUEST, no data.
    for body in [
        "",
        "{",
        "[]",
        r#"{"notquery":"{ me { id } }"}"#,
        r#"{"query":{"obj":"ect"}}"#,
        r#"{"query":"{ me { id } }","operationName":0}"#,
        r#"{"query":"{ me { id } }","variables":"{}"}"#,
        r#"{"query":"{ me { id } }","extensions":[1]}"#,
    ] {
        for accept in [RESPONSE_JSON, "application/json"] {
            let (status, _, text) =
                answer(post(&app, &token, Some("application/json"), accept, body.into()).await).await;
            assert_eq!(status, 400, "{body} {accept}: {text}");
            let answer = json_of(&text);
            assert_eq!(code(&answer), "BAD_REQUEST", "{body}: {answer}");
            assert!(answer.get("data").is_none());
        }
    }
    assert_eq!(fingerprint(&mut app.admin().await).await, before);
    // Charset parameters and null optional parameters are fine.
    let ok = r#"{"query":"{ me { email } }","operationName":null,"variables":null,"extensions":{"some":"value"}}"#;
    let (status, _, text) = answer(
        post(
            &app,
            &token,
            Some("Application/JSON; charset=UTF-8"),
            "application/json; charset=utf-8",
            ok.into(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text)["data"]["me"]["email"], "p@example.com");
    // Other methods: 405 naming the methods served.
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::PATCH] {
        let r = app
            .client
            .request(method.clone(), format!("{}/graphql", app.base))
            .bearer_auth(&token)
            .json(&json!({ "query": CREATE }))
            .send()
            .await
            .unwrap();
        let allow = r.headers().get(ALLOW).map(|v| v.to_str().unwrap().to_string());
        let (status, _, text) = answer(r).await;
        assert_eq!(
            (status, allow.as_deref()),
            (405, Some("GET, HEAD, POST")),
            "{method}: {text}"
        );
        assert_eq!(code(&json_of(&text)), "METHOD_NOT_ALLOWED", "{method}");
    }
    // Nothing acceptable to answer with: 406, nothing runs.
    let (status, _, text) =
        answer(post(&app, &token, Some("application/json"), "text/html", create.clone()).await).await;
    assert_eq!(status, 406, "{text}");
    assert_eq!(workspaces(&app).await, 0);
    app.stop().await;
}

/// A session cookie alone authenticates nothing at /graphql: a POST needs the
/// CSRF header, and a GET (which the browser sends with the cookie from any
/// page) needs it too and never runs a mutation.
#[tokio::test]
async fn cookie_requests_need_the_csrf_header_and_get_never_writes() {
    let app = spawn_instance("cookies").await;
    let s = app
        .break_glass_session("root@example.com", "correct horse battery staple")
        .await;
    let url = format!("{}/graphql", app.base);
    let send = |request: reqwest::RequestBuilder| async move { answer(request.send().await.unwrap()).await };
    let create = json!({ "query": CREATE });
    let (status, _, text) = send(app.client.post(&url).header("cookie", &s.cookie).json(&create)).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(code(&json_of(&text)), "CSRF_TOKEN_INVALID");
    let (status, _, text) = send(
        app.client
            .post(&url)
            .header("cookie", &s.cookie)
            .header("x-mosaic-csrf", "not-the-token")
            .json(&create),
    )
    .await;
    assert_eq!((status, code(&json_of(&text)).as_str()), (403, "CSRF_TOKEN_INVALID"));
    // A form post with the cookie and even the right header is refused for its type.
    let (status, _, _) = send(
        app.client
            .post(&url)
            .header("cookie", &s.cookie)
            .header("x-mosaic-csrf", &s.csrf)
            .header(CONTENT_TYPE, "text/plain")
            .body(create.to_string()),
    )
    .await;
    assert_eq!(status, 415);
    let get = |csrf: Option<&str>, query: &str| {
        let url = reqwest::Url::parse_with_params(&url, [("query", query)]).unwrap();
        let mut request = app
            .client
            .get(url)
            .header("cookie", &s.cookie)
            .header(ACCEPT, "application/json");
        if let Some(csrf) = csrf {
            request = request.header("x-mosaic-csrf", csrf);
        }
        send(request)
    };
    let (status, _, text) = get(None, "{ me { email } }").await;
    assert_eq!(
        (status, code(&json_of(&text)).as_str()),
        (403, "CSRF_TOKEN_INVALID"),
        "{text}"
    );
    let (status, _, text) = get(Some(&s.csrf), CREATE).await;
    assert_eq!(status, 405, "{text}");
    assert_eq!(workspaces(&app).await, 0, "no cookie request wrote anything");
    let (status, _, text) = get(Some(&s.csrf), "{ me { email } }").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text)["data"]["me"]["email"], "root@example.com");
    // With the header, a POST does write: the checks above could see it.
    let (status, _, text) = send(
        app.client
            .post(&url)
            .header("cookie", &s.cookie)
            .header("x-mosaic-csrf", &s.csrf)
            .json(&create),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(workspaces(&app).await, 1);
    app.stop().await;
}

/// A GET's query string is bounded like a POST body (`limits.max_body_bytes`,
/// at most 32 KiB): 414, nothing runs; the same request fits in a POST.
#[tokio::test]
async fn an_oversized_get_query_string_is_refused() {
    let app = spawn_instance_with("bounded", |c| c.limits.max_body_bytes = 4096).await;
    let (_, token) = app.user("l@example.com").await;
    let padding = " ".repeat(5000);
    let query = format!("{{ me {{ email }} }}{padding}");
    let (status, _, text) = answer(get(&app, &token, &[("query", &query)], "application/json").await).await;
    assert_eq!(status, 414, "{text}");
    assert_eq!(code(&json_of(&text)), "URI_TOO_LONG");
    let (status, _, text) = answer(get(&app, &token, &[("query", "{ me { email } }")], "application/json").await).await;
    assert_eq!(status, 200, "{text}");
    app.stop().await;
    // With the default body limit (256 KiB) the 32 KiB cap holds.
    let app = spawn_instance("capped").await;
    let (_, token) = app.user("l@example.com").await;
    let query = format!("{{ me {{ email }} }}{}", " ".repeat(40 * 1024));
    let (status, _, text) = answer(get(&app, &token, &[("query", &query)], "application/json").await).await;
    assert_eq!(status, 414, "{text}");
    let (status, _, text) = answer(
        post(
            &app,
            &token,
            Some("application/json"),
            "application/json",
            json!({ "query": query }).to_string(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    app.stop().await;
}
