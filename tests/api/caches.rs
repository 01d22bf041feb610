//! The request path's caches (tokens, peers, the current key) are correct by
//! invalidation: a change is heard through the instance's LISTEN connection.
//! While that connection is away a change could go unheard, so the caches
//! must hold nothing then, and work again once it is back.

use serde_json::json;

use crate::common::{self, spawn_app};

const ME: &str = "{ me { email } }";

#[tokio::test]
async fn a_token_revoked_while_the_listener_is_away_is_refused() {
    let app = spawn_app().await;
    let (_, token) = app.user("cached@example.com").await;
    // Twice: the second answer comes from the cache.
    app.gql_ok(&token, ME, json!({})).await;
    app.gql_ok(&token, ME, json!({})).await;

    let mut listening = app.state.live.listening();
    assert!(*listening.borrow(), "the listener is up after start");
    let mut admin = app.admin().await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%') k",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(killed, 1, "one listening connection per instance");
    listening.wait_for(|l| !*l).await.unwrap();

    // Revoked behind the instance's back while nobody hears it.
    sqlx::query("DELETE FROM api_tokens").execute(&mut admin).await.unwrap();
    let (status, body) = app.gql_status(&token, ME, json!({})).await;
    assert_eq!(status, 401, "a revoked token is refused at once: {body}");

    // Back: a new token is cached again, and a revocation is heard again.
    listening.wait_for(|l| *l).await.unwrap();
    let (_, fresh) = app.user("fresh@example.com").await;
    app.gql_ok(&fresh, ME, json!({})).await;
    app.gql_ok(&fresh, ME, json!({})).await;
    sqlx::query("DELETE FROM api_tokens").execute(&mut admin).await.unwrap();
    app.caught_up().await;
    let (status, body) = app.gql_status(&fresh, ME, json!({})).await;
    assert_eq!(status, 401, "heard after the reconnect: {body}");
    assert_eq!(common::code(&body), "UNAUTHENTICATED", "{body}");
}
