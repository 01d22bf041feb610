//! The HTTP surface: health, readiness, metrics, request ids, body limit, auth.

use crate::common;

use common::{code, spawn_app, spawn_app_with};
use serde_json::json;

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let app = spawn_app().await;
    let r = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"), "request id is returned");
    let r = app.client.get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, token) = app.user("m@example.com").await;
    app.gql(&token, "{ me { id } }", json!({})).await;
    app.gql(&token, "{ nope }", json!({})).await;
    let text = app.get_text("/metrics").await;
    assert!(
        text.contains("mosaic_http_requests_total{method=\"POST\",route=\"/graphql\",status=\"200\"} 2"),
        "{text}"
    );
    assert!(text.contains("mosaic_http_request_duration_seconds_bucket"), "{text}");
    assert!(
        text.contains("mosaic_graphql_errors_total{code=\"GRAPHQL_VALIDATION_FAILED\"} 1"),
        "{text}"
    );
    assert!(text.contains("mosaic_db_pool_connections"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn ide_is_served_without_authentication() {
    let app = spawn_app().await;
    let r = app.client.get(format!("{}/graphql", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Mosaic"));
    app.stop().await;
}

#[tokio::test]
async fn missing_unknown_and_expired_tokens_get_unauthenticated_and_no_data() {
    let app = spawn_app().await;
    let (_, token) = app.user("a@example.com").await;
    let url = format!("{}/graphql", app.base);
    let q = json!({ "query": "{ me { id email } }" });
    let r = app.client.post(&url).json(&q).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code(&body), "UNAUTHENTICATED");
    assert!(body.get("data").is_none());
    let (status, body) = app
        .gql_status("mosaic_not-a-real-token", "{ me { id } }", json!({}))
        .await;
    assert_eq!((status, code(&body).as_str()), (401, "UNAUTHENTICATED"));
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("unknown token"));
    // Expire the token and try again.
    let mut conn = app.admin().await;
    sqlx::query("UPDATE api_tokens SET expires_at = now() - interval '1 second'")
        .execute(&mut conn)
        .await
        .unwrap();
    app.caught_up().await;
    let (status, body) = app.gql_status(&token, "{ me { id } }", json!({})).await;
    assert_eq!(status, 401);
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn oversized_body_gets_413_and_writes_nothing() {
    let app = spawn_app_with(|c| c.limits.max_body_bytes = 4096).await;
    let (_, token) = app.user("a@example.com").await;
    let before = app.row_counts().await;
    let huge = "x".repeat(10_000);
    let q = json!({ "query": "mutation($n: String!) { createWorkspace(input: {name: $n}) { id } }", "variables": { "n": huge } });
    let r = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(&token)
        .json(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code(&body), "PAYLOAD_TOO_LARGE");
    assert_eq!(app.row_counts().await, before);
    app.stop().await;
}
