//! The first hour with Mosaic (issue 12): the IDE's introspection under the
//! default limits, API token management, and the IDE without single sign-on.

use crate::common;

use std::path::Path;

use common::{code, spawn_app};
use serde_json::json;

/// The introspection query graphql-js (ide/node_modules/graphql, the one
/// GraphiQL uses) builds, with every option GraphiQL may turn on.
fn graphiql_introspection_query() -> String {
    let ide = Path::new(env!("CARGO_MANIFEST_DIR")).join("ide");
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(
            "process.stdout.write(require('graphql').getIntrospectionQuery({ descriptions: true, \
             schemaDescription: true, inputValueDeprecation: true, specifiedByUrl: true, \
             directiveIsRepeatable: true, oneOf: true }))",
        )
        .current_dir(&ide)
        .output()
        .expect("node runs (the IDE's packages are installed with npm ci --prefix ide)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let query = String::from_utf8(out.stdout).unwrap();
    assert!(
        query.contains("__schema") && query.contains("fragment TypeRef"),
        "{query}"
    );
    query
}

/// `{ me { ... } }` nested to exactly `depth` fields through workspaces' projects.
fn deep_data(depth: usize) -> String {
    assert!(depth >= 2);
    // me { id } is depth 2; each `workspaces { projects { workspace {` adds levels.
    let mut open = String::from("workspaces { ");
    let mut close = String::from("}");
    for i in 2..depth {
        if i % 2 == 0 {
            open.push_str("projects { ");
        } else {
            open.push_str("workspace { ");
        }
        close.push('}');
    }
    format!("{open}id {close}")
}

#[tokio::test]
async fn graphiql_introspection_passes_the_default_limits_but_data_stays_limited() {
    let app = spawn_app().await;
    assert_eq!(app.state.config.limits.max_depth, 12);
    let (_, token) = app.user("intro@example.com").await;
    let introspection = graphiql_introspection_query();

    let (status, body) = app.gql_status(&token, &introspection, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().expect("types");
    assert!(types.iter().any(|t| t["name"] == "Task"), "{body}");
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "QueryRoot");

    // `__type` is introspection too.
    let deep_type = format!(
        "{{ __type(name: \"Task\") {{ fields {{ type {{ {} name {} }} }} }} }}",
        "ofType { ".repeat(11),
        "} ".repeat(11)
    );
    let body = app.gql_ok(&token, &deep_type, json!({})).await;
    assert_eq!(
        body["__type"]["fields"].as_array().map(|f| !f.is_empty()),
        Some(true),
        "{body}"
    );

    // Data at the limit passes, one deeper is refused, as before.
    let body = app.gql(&token, &format!("{{ {} }}", deep_data(12)), json!({})).await;
    assert!(body["errors"].is_null(), "depth 12 is allowed: {body}");
    let body = app.gql(&token, &format!("{{ {} }}", deep_data(13)), json!({})).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("depth 13"),
        "{body}"
    );

    // Introspection beside deep data does not lift the limit on the data.
    let mixed = format!("{{ __schema {{ queryType {{ name }} }} {} }}", deep_data(13));
    let body = app.gql(&token, &mixed, json!({})).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(body["data"].is_null(), "{body}");
    // Nor does a fragment hiding data inside an introspection-looking document.
    let spread = format!(
        "query {{ ...D __schema {{ types {{ name }} }} }} fragment D on QueryRoot {{ {} }}",
        deep_data(13)
    );
    let body = app.gql(&token, &spread, json!({})).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");

    // Introspection has bounds of its own: depth ...
    let mut too_deep = String::from("{ __schema { types { fields { type {");
    for _ in 0..18 {
        too_deep.push_str(" ofType {");
    }
    too_deep.push_str(" name");
    too_deep.push_str(&" }".repeat(18 + 4));
    too_deep.push_str(" }");
    let body = app.gql(&token, &too_deep, json!({})).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("introspection depth"),
        "{body}"
    );
    // ... size (fragments spread many times count each time) ...
    let fan_out = format!(
        "{{ __schema {{ types {{ ...F ...F ...F ...F }} }} }} fragment F on __Type {{ {} }}",
        (0..300).map(|i| format!("f{i}: name")).collect::<Vec<_>>().join(" ")
    );
    let body = app.gql(&token, &fan_out, json!({})).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    // ... and aliases count as everywhere else.
    let aliased = format!(
        "{{ __schema {{ {} }} }}",
        (0..31)
            .map(|i| format!("a{i}: queryType {{ name }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let body = app.gql(&token, &aliased, json!({})).await;
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("aliases"),
        "{body}"
    );
    // A fragment cycle is refused by validation, not looped over.
    let cycle = "{ __schema { types { ...A } } } fragment A on __Type { ofType { ...B } } fragment B on __Type { ofType { ...A } }";
    let body = app.gql(&token, cycle, json!({})).await;
    assert!(
        body["data"].is_null() && !body["errors"].as_array().unwrap().is_empty(),
        "{body}"
    );
    app.stop().await;
}

const TOKENS: &str =
    "query($all: Boolean! = false) { tokens(all: $all) { id name userEmail createdAt expiresAt lastUsedAt } }";

#[tokio::test]
async fn tokens_are_listed_revoked_and_their_last_use_recorded_once_a_minute() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let mut conn = app.admin().await;
    let admin = {
        mosaic::auth::users::create(&mut conn, "root@example.com", None, true)
            .await
            .unwrap();
        mosaic::auth::tokens::create_named(&mut conn, "root@example.com", "ops", None)
            .await
            .unwrap()
    };
    let second = mosaic::auth::tokens::create_named(&mut conn, "alice@example.com", "laptop", None)
        .await
        .unwrap();

    let body = app.gql_ok(&alice, TOKENS, json!({})).await;
    let mine = body["tokens"].as_array().unwrap_or_else(|| panic!("{body}")).clone();
    assert_eq!(mine.len(), 2, "{body}");
    assert!(
        mine.iter().all(|t| t["userEmail"] == "alice@example.com"),
        "only her own: {body}"
    );
    assert_eq!(mine[0]["name"], "laptop", "newest first: {body}");
    assert!(
        !body.to_string().contains(&alice) && !body.to_string().contains(&second),
        "no secret is listed"
    );
    // The request just made recorded her token's use (it had none).
    let used = mine
        .iter()
        .find(|t| t["name"] == "")
        .unwrap_or_else(|| panic!("{body}"));
    assert!(used["lastUsedAt"].is_string(), "{body}");
    assert!(mine[0]["lastUsedAt"].is_null(), "the unused one: {body}");

    // Last use is written at most once a minute.
    let before: Option<time::OffsetDateTime> = sqlx::query_scalar(
        "SELECT last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE u.email = 'bob@example.com'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(before.is_none());
    app.gql_ok(&bob, "{ me { id } }", json!({})).await;
    app.gql_ok(&bob, "{ me { id } }", json!({})).await;
    let (first, xmin_after_first): (Option<time::OffsetDateTime>, String) = sqlx::query_as(
        "SELECT last_used_at, t.xmin::text FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE u.email = 'bob@example.com'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(first.is_some());
    app.gql_ok(&bob, "{ me { id } }", json!({})).await;
    let (again, xmin_again): (Option<time::OffsetDateTime>, String) = sqlx::query_as(
        "SELECT last_used_at, t.xmin::text FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE u.email = 'bob@example.com'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (again, xmin_again),
        (first, xmin_after_first),
        "no write within the minute"
    );
    // Over a minute later, the next use is written again.
    sqlx::query("UPDATE api_tokens SET last_used_at = now() - interval '2 minutes' WHERE user_id = (SELECT id FROM users WHERE email = 'bob@example.com')")
        .execute(&mut conn)
        .await
        .unwrap();
    app.caught_up().await;
    app.gql_ok(&bob, "{ me { id } }", json!({})).await;
    let later: Option<time::OffsetDateTime> = sqlx::query_scalar(
        "SELECT last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE u.email = 'bob@example.com'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(later > first, "{later:?} after {first:?}");

    // Everyone's tokens: instance administrators only.
    let body = app.gql(&alice, TOKENS, json!({ "all": true })).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = app.gql_ok(&admin, TOKENS, json!({ "all": true })).await;
    let all = body["tokens"].as_array().unwrap();
    assert_eq!(all.len(), 4, "{body}");
    let bobs_id = all.iter().find(|t| t["userEmail"] == "bob@example.com").unwrap()["id"].clone();

    // Alice cannot revoke Bob's token (nor learn that it exists), nor revoke nonsense.
    const REVOKE: &str = "mutation($id: ID!) { revokeToken(id: $id) }";
    let body = app.gql(&alice, REVOKE, json!({ "id": bobs_id })).await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let body = app.gql(&alice, REVOKE, json!({ "id": "not-a-token" })).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    app.gql_ok(&bob, "{ me { id } }", json!({})).await;

    // She revokes her own: it stops working at once, the other one still works.
    let laptop = mine[0]["id"].clone();
    let body = app.gql_ok(&alice, REVOKE, json!({ "id": laptop })).await;
    assert_eq!(body["revokeToken"], true);
    let (status, body) = app.gql_status(&second, "{ me { id } }", json!({})).await;
    assert_eq!((status, code(&body).as_str()), (401, "UNAUTHENTICATED"), "{body}");
    app.gql_ok(&alice, "{ me { id } }", json!({})).await;
    let body = app.gql(&alice, REVOKE, json!({ "id": laptop })).await;
    assert_eq!(code(&body), "NOT_FOUND", "revoked once: {body}");

    // An administrator revokes Bob's.
    let body = app.gql_ok(&admin, REVOKE, json!({ "id": bobs_id })).await;
    assert_eq!(body["revokeToken"], true);
    let (status, _) = app.gql_status(&bob, "{ me { id } }", json!({})).await;
    assert_eq!(status, 401);
    let audit: Vec<(String, String)> =
        sqlx::query_as("SELECT email, action FROM auth_audit WHERE action = 'token_revoked' ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        audit,
        [
            ("alice@example.com".to_string(), "token_revoked".to_string()),
            ("bob@example.com".to_string(), "token_revoked".to_string())
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn tokens_for_deactivated_users_are_refused_and_new_ones_expire() {
    let app = spawn_app().await;
    let mut conn = app.admin().await;
    mosaic::auth::users::create(&mut conn, "gone@example.com", None, false)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET deactivated_at = now() WHERE email = 'gone@example.com'")
        .execute(&mut conn)
        .await
        .unwrap();
    let e = mosaic::auth::tokens::create(&mut conn, "gone@example.com", None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("deactivated"), "{e}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing stored");
    let now = time::OffsetDateTime::now_utc();
    let default = mosaic::auth::tokens::expiry(None, now)
        .unwrap()
        .expect("tokens expire by default");
    assert_eq!(default - now, mosaic::auth::tokens::DEFAULT_LIFETIME);
    app.stop().await;
}

#[tokio::test]
async fn without_single_sign_on_the_ide_offers_no_sign_in_but_says_where_tokens_come_from() {
    let app = spawn_app().await;
    let page = app.get_text("/graphql").await;
    assert!(page.contains("var SSO = false;"), "{page}");
    assert!(page.contains("mosaic token create"), "{page}");
    let r = app.client.get(format!("{}/auth/login", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("Try again"),
        "no loop back to a sign-in that cannot work: {body}"
    );
    assert!(
        body.contains("mosaic token create") && body.contains("href=\"/graphql\""),
        "{body}"
    );
    app.stop().await;
}

#[test]
fn the_demo_directory_is_ignored_by_git() {
    let ignore = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "/.mosaic-demo"), "{ignore}");
}
