//! Graceful shutdown of a replica: once signalled it answers `/readyz` 503
//! while still serving, then closes its port, and every request in flight
//! (and every execution whose client left) finishes before the pool closes.

use crate::common;

use std::time::Duration;

use common::{TestApp, spawn_app_with};
use serde_json::json;
use sqlx::Connection;

const LIST: &str = "{ tasks(first: 10) { totalCount edges { node { title } } } }";

/// An admin transaction holding `tasks` locked: requests touching it wait
/// until it ends (dropped, it rolls back).
async fn lock_tasks(app: &TestApp) -> sqlx::PgConnection {
    let mut conn = app.admin().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Polls `/readyz` until it answers 503; every answer before is 200.
async fn until_unready(app: &TestApp) {
    loop {
        let r = app.client.get(format!("{}/readyz", app.base)).send().await;
        let status = r.expect("the port is open while not ready").status().as_u16();
        if status == 503 {
            return;
        }
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the instance's port refuses connections.
async fn until_closed(app: &TestApp) {
    let addr = app.base.trim_start_matches("http://").to_string();
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_unready_then_finishes_requests_in_flight() {
    let mut app = spawn_app_with(|c| c.shutdown_unready = Duration::from_millis(1500)).await;
    let (_, token) = app.user("drain@example.com").await;
    let ws = app.create_workspace(&token, "drain").await;
    app.create_task(&token, &ws, "before the signal").await;
    let lock = lock_tasks(&app).await;
    let in_flight: Vec<_> = (0..6)
        .map(|_| {
            let (client, url, token) = (app.client.clone(), format!("{}/graphql", app.base), token.clone());
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({ "query": LIST }))
                    .send()
                    .await
                    .expect("an answer, not a dropped connection");
                (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
            })
        })
        .collect();
    app.state.lifecycle.running(6).await;

    app.signal_stop();
    until_unready(&app).await;
    until_closed(&app).await;
    assert_eq!(app.state.lifecycle.executions(), 6, "still waiting on the lock");
    lock.close().await.unwrap();
    for request in in_flight {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(body["data"]["tasks"]["totalCount"], 1, "{body}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_pool_only_after_executions_whose_client_left() {
    // One pooled connection: the first mutation holds it (waiting on the
    // lock), the second waits for it in the pool, where closing the pool
    // would fail it.
    let mut app = spawn_app_with(|c| c.pool_size = 1).await;
    let (_, token) = app.user("left@example.com").await;
    let ws = app.create_workspace(&token, "left").await;
    app.gql_ok(&token, LIST, json!({})).await; // the token is cached: the mutations need no connection to authenticate
    let lock = lock_tasks(&app).await;
    let create = "mutation($w: ID!, $t: String!) { createTask(input: {workspaceId: $w, title: $t}) { id } }";
    let clients: Vec<_> = ["left one", "left two"]
        .into_iter()
        .map(|title| {
            let (client, url, token) = (app.client.clone(), format!("{}/graphql", app.base), token.clone());
            let body = json!({ "query": create, "variables": { "w": ws, "t": title } });
            tokio::spawn(async move { client.post(url).bearer_auth(token).json(&body).send().await })
        })
        .collect();
    app.state.lifecycle.running(2).await;
    for client in clients {
        client.abort(); // the client hangs up
    }

    app.signal_stop();
    until_closed(&app).await;
    lock.close().await.unwrap();
    let database_url = app.database_url.clone();
    app.stop().await;
    let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM tasks ORDER BY title")
        .fetch_all(&mut sqlx::PgConnection::connect(&database_url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(titles, ["left one", "left two"]);
}
