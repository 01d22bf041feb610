//! Keyset pagination over 1,000 tasks: every ordering walks every task exactly
//! once, in the order PostgreSQL computes independently, and filters return
//! exactly the rows SQL selects.

use crate::common;

use std::collections::HashSet;

use common::{TestApp, local_id, spawn_app};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

const TASKS: i64 = 1000;

/// One user's workspace holding 1,000 tasks with many ties in every sort key,
/// NULL due dates, and titles with mixed case, non-ASCII and LIKE wildcards;
/// plus another workspace of the same user whose tasks must never show up.
struct Seeded {
    app: TestApp,
    token: String,
    ws: String,
    admin: PgConnection,
}

async fn seed() -> Seeded {
    let app = spawn_app().await;
    let (_, token) = app.user("pager@example.com").await;
    let ws = app.create_workspace(&token, "Big").await;
    let other = app.create_workspace(&token, "Other").await;
    for title in ["alpha 0", "zeta 1", "50% 2"] {
        app.create_task(&token, &other, title).await;
    }
    let mut admin = app.admin().await;
    let inserted = sqlx::query(
        r"INSERT INTO tasks (id, workspace_id, title, status, priority, due_date, created_at, updated_at)
          SELECT gen_random_uuid(), $1,
                 (ARRAY['alpha', 'Alpha', 'beta', 'gamma 50%', 'snake_case', 'Ünïcode', 'zeta',
                        'path\to', 'a_b', 'ab'])[1 + i % 10] || ' ' || (i % 7),
                 (ARRAY['TODO', 'IN_PROGRESS', 'BLOCKED', 'DONE', 'CANCELLED'])[1 + (i / 3) % 5],
                 (i * 7) % 4,
                 CASE WHEN i % 9 = 0 THEN NULL ELSE date '2025-01-01' + (i % 40) END,
                 timestamptz '2025-01-01 00:00:00+00' + (i % 250) * interval '1 second'
                     + (i % 3) * interval '1 microsecond',
                 timestamptz '2025-06-01 00:00:00+00' + (i % 17) * interval '1 millisecond'
          FROM generate_series(1, $2::int) AS i",
    )
    .bind(local_id(&ws))
    .bind(TASKS)
    .execute(&mut admin)
    .await
    .unwrap();
    assert_eq!(inserted.rows_affected(), TASKS as u64);
    Seeded { app, token, ws, admin }
}

const WALK: &str = "query($w: ID!, $f: TaskFilter, $o: TaskOrder, $n: Int, $a: String) {
  tasks(workspaceId: $w, filter: $f, orderBy: $o, first: $n, after: $a) {
    totalCount
    edges { cursor node { id workspace { id } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}";

/// Walks every page; checks each page's shape; returns the task ids in order.
async fn walk(s: &Seeded, filter: Value, order: Value, size: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    let mut total: Option<i64> = None;
    let context = format!("filter {filter}, order {order}, size {size}");
    for page in 0.. {
        assert!(page <= TASKS as usize / size + 1, "{context}: endless walk");
        let d = s
            .app
            .gql_ok(
                &s.token,
                WALK,
                json!({ "w": s.ws, "f": filter, "o": order, "n": size, "a": after }),
            )
            .await;
        let t = &d["tasks"];
        let count = t["totalCount"].as_i64().unwrap();
        assert_eq!(*total.get_or_insert(count), count, "{context}: totalCount moved");
        let edges = t["edges"].as_array().unwrap();
        let info = &t["pageInfo"];
        assert_eq!(info["hasPreviousPage"], page > 0, "{context}, page {page}");
        assert!(edges.len() <= size, "{context}: page {page} too long");
        for e in edges {
            assert_eq!(e["node"]["workspace"]["id"], s.ws.as_str(), "{context}");
            ids.push(local_id(e["node"]["id"].as_str().unwrap()));
        }
        let more = info["hasNextPage"].as_bool().unwrap();
        if edges.is_empty() {
            assert!(info["startCursor"].is_null() && info["endCursor"].is_null());
        } else {
            assert_eq!(info["startCursor"], edges[0]["cursor"], "{context}");
            assert_eq!(info["endCursor"], edges[edges.len() - 1]["cursor"], "{context}");
        }
        // Full pages until the last; the last says so.
        let remaining = count as usize - (ids.len() - edges.len());
        assert_eq!(edges.len(), remaining.min(size), "{context}: page {page}");
        assert_eq!(more, remaining > size, "{context}: hasNextPage on page {page}");
        if !more {
            break;
        }
        after = Some(info["endCursor"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len() as i64, total.unwrap(), "{context}: walked != totalCount");
    let unique: HashSet<&Uuid> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{context}: a task appeared twice");
    ids
}

/// The ids in the order PostgreSQL gives for `ORDER BY <key> <dir>, id <dir>`.
async fn sql_order(s: &mut Seeded, where_sql: &str, key: &str, dir: &str) -> Vec<Uuid> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM tasks WHERE workspace_id = $1 AND ({where_sql}) ORDER BY {key} {dir}, id {dir}"
    )))
    .bind(local_id(&s.ws))
    .fetch_all(&mut s.admin)
    .await
    .unwrap()
}

/// (GraphQL field, independent SQL sort key): text sorts bytewise, so the
/// key is the title's UTF-8 bytes; a missing due date sorts after every date
/// (PostgreSQL's NULL ordering: last ascending, first descending).
const ORDERINGS: &[(&str, &str)] = &[
    ("CREATED_AT", "created_at"),
    ("UPDATED_AT", "updated_at"),
    ("PRIORITY", "priority"),
    ("TITLE", "convert_to(title, 'UTF8')"),
    ("STATUS", "convert_to(status, 'UTF8')"),
    ("DUE_DATE", "due_date"),
];

#[tokio::test]
async fn every_ordering_walks_every_task_once_in_sql_order() {
    let mut s = seed().await;
    // The default ordering is CREATED_AT ascending.
    let default = walk(&s, json!(null), json!(null), 100).await;
    assert_eq!(default, sql_order(&mut s, "true", "created_at", "ASC").await);
    let mut runs = Vec::new();
    for (field, key) in ORDERINGS {
        for dir in ["ASC", "DESC"] {
            let expected = sql_order(&mut s, "true", key, dir).await;
            assert_eq!(expected.len() as i64, TASKS);
            for size in [100, 37] {
                runs.push((*field, dir, size, expected.clone()));
            }
        }
    }
    // The walks are independent: run them side by side.
    let walks = runs
        .iter()
        .map(|(field, dir, size, _)| walk(&s, json!(null), json!({ "field": field, "direction": dir }), *size));
    let results = futures::future::join_all(walks).await;
    for ((field, dir, size, expected), got) in runs.iter().zip(results) {
        assert!(
            &got == expected,
            "{field} {dir} by {size}: first difference at {:?}",
            got.iter().zip(expected).position(|(a, b)| a != b)
        );
    }
    s.app.stop().await;
}

#[tokio::test]
async fn filters_return_exactly_the_rows_sql_selects() {
    let mut s = seed().await;
    // (filter, the same condition in SQL)
    let cases = [
        (json!({}), "true"),
        (
            json!({ "status": ["DONE", "BLOCKED"] }),
            "status IN ('DONE', 'BLOCKED')",
        ),
        (json!({ "status": [] }), "false"),
        (json!({ "priority": ["URGENT", "LOW"] }), "priority IN (3, 0)"),
        (json!({ "priority": ["MEDIUM"] }), "priority = 1"),
        // Search is a case-insensitive substring, wildcards taken literally.
        (json!({ "search": "ALPHA" }), "strpos(lower(title), 'alpha') > 0"),
        (json!({ "search": "50%" }), "strpos(title, '50%') > 0"),
        (json!({ "search": "_" }), "strpos(title, '_') > 0"),
        (json!({ "search": "a_b" }), "strpos(title, 'a_b') > 0"),
        (json!({ "search": "\\" }), r"strpos(title, '\') > 0"),
        (json!({ "search": "%" }), "strpos(title, '%') > 0"),
        (json!({ "search": "no such title" }), "false"),
        (
            json!({ "dueBefore": "2025-01-10", "dueAfter": "2025-01-05" }),
            "due_date < '2025-01-10' AND due_date >= '2025-01-05'",
        ),
        (
            json!({ "status": ["TODO", "DONE"], "priority": ["HIGH", "URGENT"], "search": "a", "dueAfter": "2025-01-20" }),
            "status IN ('TODO', 'DONE') AND priority IN (2, 3) AND strpos(lower(title), 'a') > 0 AND due_date >= '2025-01-20'",
        ),
    ];
    for (filter, condition) in cases {
        let expected = sql_order(&mut s, condition, "created_at", "ASC").await;
        if condition != "false" {
            assert!(!expected.is_empty(), "{condition} selects nothing");
        }
        let got = walk(&s, filter.clone(), json!(null), 100).await;
        assert_eq!(got, expected, "{filter}");
        // The same filter under another ordering selects the same set.
        let by_title = walk(&s, filter.clone(), json!({ "field": "TITLE" }), 100).await;
        assert_eq!(
            by_title,
            sql_order(&mut s, condition, "convert_to(title, 'UTF8')", "ASC").await,
            "{filter} by title"
        );
    }
    s.app.stop().await;
}
