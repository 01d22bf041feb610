//! The request audit (issue 16): a row for every request a peer makes,
//! allowed, refused (with the precise code, even behind the one answer every
//! unverified request gets) or failed; a full queue drops and counts, never
//! holds a request up; old rows are pruned; admins read it through
//! `federationAudit` and operators through `mosaic audit`.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestApp, code, peer, signed, spawn_instance, spawn_instance_with};
use mosaic::federation::protocol::{COMMAND_PATH, QUERY_PATH};
use serde_json::{Value, json};

const TASKS: &str = "{ tasks(first: 10) { edges { node { title } } } }";
const AUDIT: &str = "query($first: Int, $after: String, $filter: FederationAuditFilter) {
    federationAudit(first: $first, after: $after, filter: $filter) {
        totalCount
        pageInfo { hasNextPage endCursor }
        edges { node { peerId verified verb outcome code rows bytes latencyMs queryHash resources at } }
    } }";

/// How many rows the audit table holds (read as the superuser).
async fn audit_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM federation_audit")
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap()
}

/// Waits until the writer has written `n` rows in all.
async fn until_rows(app: &TestApp, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let have = audit_rows(app).await;
        if have >= n {
            assert_eq!(have, n, "no more rows than requests");
            return;
        }
        assert!(Instant::now() < deadline, "{have} of {n} audit rows written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_token(app: &TestApp) -> String {
    let mut conn = app.admin().await;
    mosaic::auth::users::create(&mut conn, "root@example.com", None, true)
        .await
        .unwrap();
    mosaic::auth::tokens::create(&mut conn, "root@example.com", None)
        .await
        .unwrap()
}

/// Two peered instances: `a` may read one workspace of `b` (with a task).
async fn pair(adjust: impl FnOnce(&mut mosaic::config::Config)) -> (TestApp, TestApp) {
    let (a, b) = tokio::join!(spawn_instance("alpha"), spawn_instance_with("beta", adjust));
    let (_, owner) = b.user("owner@beta.example").await;
    let granted = b.create_workspace(&owner, "granted").await;
    b.create_task(&owner, &granted, "granted task").await;
    peer(&a, &b, &[&granted], false).await;
    (a, b)
}

#[tokio::test]
async fn every_peer_request_is_audited_with_its_outcome_and_precise_code() {
    let (a, b) = pair(|_| {}).await;
    let root = admin_token(&b).await;
    // The CONNECT that made the peering is the first row.
    until_rows(&b, 1).await;

    assert_eq!(signed(&a, &b, QUERY_PATH, TASKS).await.0, 200);
    // Refused after verification: a write on a read-only grant.
    let write = r#"mutation { createWorkspace(input: {name: "x"}) { id } }"#;
    assert_eq!(signed(&a, &b, COMMAND_PATH, write).await.0, 403);
    // Refused before: signed for QUERY, sent to COMMAND. Outside, the same
    // answer as any unverified request; in the audit, the precise reason.
    let body = br#"{"query":"{ tasks { edges { node { id } } } }","variables":{},"envelope":{"visited":[],"exclude":[],"hop_limit":3,"deadline_ms":5000}}"#;
    let header = a
        .state
        .federation
        .sign(b.state.instance_id, QUERY_PATH, body)
        .await
        .unwrap();
    let r = a
        .client
        .post(format!("{}{COMMAND_PATH}", b.base))
        .header("content-type", "application/json")
        .header(mosaic::federation::signing::HEADER, header)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(code(&r.json().await.unwrap()), "UNAUTHENTICATED_PEER");
    // Failed: allowed, but nothing of it could run.
    assert_eq!(signed(&a, &b, QUERY_PATH, "{ noSuchField }").await.0, 200);
    until_rows(&b, 5).await;

    let page = b.gql_ok(&root, AUDIT, json!({ "first": 4 })).await["federationAudit"].clone();
    assert_eq!(page["totalCount"], 5);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let rows: Vec<&Value> = page["edges"].as_array().unwrap().iter().map(|e| &e["node"]).collect();
    let a_id = a.state.instance_id.to_string();
    let summary: Vec<(&str, &str, &str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["verb"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
                r["code"].as_str().unwrap_or("-"),
                r["verified"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("QUERY", "FAILED", "GRAPHQL_VALIDATION_FAILED", true),
            ("COMMAND", "REFUSED", "BAD_SIGNATURE", false),
            ("COMMAND", "REFUSED", "GRANT_DENIED", true),
            ("QUERY", "ALLOWED", "-", true),
        ],
        "newest first"
    );
    assert!(rows.iter().all(|r| r["peerId"] == a_id.as_str()), "{rows:?}");
    let allowed = rows[3];
    assert_eq!(allowed["rows"], 1, "one task: {allowed}");
    assert!(allowed["bytes"].as_i64().unwrap() > 20, "{allowed}");
    assert_eq!(allowed["resources"], json!(["tasks"]));
    assert_eq!(allowed["queryHash"].as_str().unwrap().len(), 64);
    assert_eq!(allowed["queryHash"], mosaic::federation::audit::query_hash(TASKS));
    assert!(rows[1]["queryHash"].is_null(), "an unverified request is not read");
    assert_eq!(rows[2]["resources"], json!(["createWorkspace"]));

    // The next page, and a filter.
    let cursor = page["pageInfo"]["endCursor"].as_str().unwrap();
    let rest = b.gql_ok(&root, AUDIT, json!({ "first": 4, "after": cursor })).await["federationAudit"].clone();
    assert_eq!(rest["edges"][0]["node"]["verb"], "CONNECT");
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
    let refused = b
        .gql_ok(
            &root,
            AUDIT,
            json!({ "filter": { "outcome": "REFUSED", "peerId": a_id } }),
        )
        .await;
    assert_eq!(refused["federationAudit"]["totalCount"], 2);

    // Instance admins only; a bad filter names its field and changes nothing.
    let (_, member) = b.user("member@beta.example").await;
    assert_eq!(code(&b.gql(&member, AUDIT, json!({})).await), "FORBIDDEN");
    let bad = b.gql(&root, AUDIT, json!({ "filter": { "peerId": "nope" } })).await;
    assert_eq!(code(&bad), "BAD_USER_INPUT", "{bad}");
    assert!(bad["errors"][0]["message"].as_str().unwrap().contains("filter.peerId"));

    // The operator's view.
    let url = b.state.config.database_url.clone().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mosaic"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", &url)
            .env("MOSAIC_SECRET_KEY", "audit-cli-secret-key-0123456789abcdef")
            .output()
            .unwrap()
    };
    let listed = cli(&["audit", "list", "--outcome", "refused"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("GRANT_DENIED") && text.contains("(unverified)"), "{text}");
    let bad = cli(&["audit", "list", "--outcome", "maybe"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--outcome"), "{bad:?}");
}

#[tokio::test]
async fn a_full_audit_queue_drops_and_counts_and_never_holds_a_request_up() {
    let (a, b) = pair(|c| c.federation.audit_queue = 2).await;
    until_rows(&b, 1).await;
    // The writer cannot write while the table is locked.
    let mut lock = b.admin().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE federation_audit IN SHARE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    for _ in 0..6 {
        assert_eq!(signed(&a, &b, QUERY_PATH, TASKS).await.0, 200);
    }
    let dropped = b.state.audit.dropped();
    // At most two queued and two being written.
    assert!(dropped >= 2, "dropped {dropped}");
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    until_rows(&b, 1 + 6 - dropped as i64).await;
    let metrics = b.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!("mosaic_federation_audit_dropped_total {dropped}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn audit_rows_past_their_retention_are_pruned() {
    let (a, b) = pair(|_| {}).await;
    assert_eq!(signed(&a, &b, QUERY_PATH, TASKS).await.0, 200);
    until_rows(&b, 2).await;
    sqlx::query(
        "INSERT INTO federation_audit (id, at, verified, verb, outcome, rows, bytes, latency_ms)
         VALUES (gen_random_uuid(), now() - interval '91 days', false, 'QUERY', 'REFUSED', 0, 0, 1)",
    )
    .execute(&mut b.admin().await)
    .await
    .unwrap();
    assert_eq!(mosaic::federation::audit::prune(&b.state.pool, 90).await.unwrap(), 1);
    assert_eq!(audit_rows(&b).await, 2, "only the old row went");
    assert_eq!(mosaic::federation::audit::prune(&b.state.pool, 90).await.unwrap(), 0);
}
