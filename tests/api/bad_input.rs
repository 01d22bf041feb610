//! Bad input: every malformed or invalid request gets one precise error code
//! and changes nothing in the database.

use crate::common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{TestApp, codes, fingerprint, local_id, spawn_app, spawn_app_with, with_sort_key};
use serde_json::{Value, json};
use uuid::Uuid;

/// Asserts that `body` carries no data: `data` absent or null, or every
/// top-level field null.
fn assert_no_data(context: &str, body: &Value) {
    match &body["data"] {
        Value::Null => {}
        Value::Object(fields) => assert!(fields.values().all(Value::is_null), "{context}: data came back: {body}"),
        other => panic!("{context}: unexpected data {other}"),
    }
}

/// Sends a request that must be refused: every error carries `expected`, no
/// data comes back, and the database (row counts and content) is unchanged.
async fn refused(app: &TestApp, token: &str, query: &str, vars: Value, expected: &str) -> Value {
    let body = changes_nothing(app, token, query, vars.clone(), expected).await;
    assert_no_data(&format!("{query} {vars}"), &body);
    body
}

/// Sends a request that must fail with only `expected` errors and leave the
/// database (row counts and content) exactly as it was.
async fn changes_nothing(app: &TestApp, token: &str, query: &str, vars: Value, expected: &str) -> Value {
    let mut admin = app.admin().await;
    let counts = app.row_counts().await;
    let before = fingerprint(&mut admin).await;
    let (status, body) = app.gql_status(token, query, vars.clone()).await;
    let context = format!("{query} {vars}");
    assert_eq!(status, 200, "{context}: {body}");
    let got = codes(&body);
    assert!(!got.is_empty(), "{context}: expected {expected}, got {body}");
    assert!(
        got.iter().all(|c| c == expected),
        "{context}: expected only {expected}, got {body}"
    );
    assert_eq!(app.row_counts().await, counts, "{context}: row counts");
    assert_eq!(fingerprint(&mut admin).await, before, "{context}: content");
    body
}

fn message(body: &Value) -> String {
    body["errors"][0]["message"].as_str().unwrap_or_default().to_string()
}

/// A user who owns a workspace with one task.
struct Owner {
    token: String,
    ws: String,
    task: String,
}

async fn owner(app: &TestApp, email: &str) -> Owner {
    let (_, token) = app.user(email).await;
    let ws = app.create_workspace(&token, "Home").await;
    let task = app.create_task(&token, &ws, "existing").await;
    Owner { token, ws, task }
}

#[tokio::test]
async fn malformed_json_bodies_get_400_bad_request() {
    let app = spawn_app().await;
    let (_, token) = app.user("a@example.com").await;
    let counts = app.row_counts().await;
    let mut admin = app.admin().await;
    let before = fingerprint(&mut admin).await;
    for raw in [
        // A would-be mutation, cut off before the closing brace.
        r#"{"query": "mutation { createWorkspace(input: {name: \"x\"}) { id } }""#,
        r#"{"query": mutation { createWorkspace(input: {name: "x"}) { id } } }"#,
        "not json at all",
        r#"{"query": 42}"#,
        r#"{"query": "{ me { id } }", "variables": "not an object"}"#,
        "",
    ] {
        let r = app
            .client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{raw}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(codes(&body), ["BAD_REQUEST"], "{raw}: {body}");
        assert!(body.get("data").is_none(), "{raw}: {body}");
    }
    assert_eq!(app.row_counts().await, counts);
    assert_eq!(fingerprint(&mut admin).await, before);
    app.stop().await;
}

#[tokio::test]
async fn malformed_graphql_is_parse_failed() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    for query in [
        "{ me { id }",
        "mutation { createWorkspace(input: {name: \"x\"}) { id }",
        "mutation { createTask(input: {workspaceId: \"x\" title: }) { id } }",
        "{ me { id } } }",
        "querry { me { id } }",
        "",
    ] {
        refused(&app, &o.token, query, json!({}), "GRAPHQL_PARSE_FAILED").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_fields_are_validation_failed() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    let ws = json!({ "w": o.ws });
    for (query, vars) in [
        ("{ me { id shoeSize } }", json!({})),
        ("{ nope }", json!({})),
        ("mutation { launchRockets }", json!({})),
        (
            "mutation($w: ID!) { createTask(input: {workspaceId: $w, title: \"t\"}) { id bogus } }",
            ws.clone(),
        ),
        (
            "mutation($w: ID!) { createTask(input: {workspaceId: $w, title: \"t\", colour: \"red\"}) { id } }",
            ws.clone(),
        ),
        (
            "mutation { createWorkspace(input: {name: \"x\"}) { id secrets { id } } }",
            json!({}),
        ),
    ] {
        refused(&app, &o.token, query, vars, "GRAPHQL_VALIDATION_FAILED").await;
    }
    app.stop().await;
}

/// A value of the wrong type, literal or in a variable, is refused while the
/// document is validated, before anything runs: GRAPHQL_VALIDATION_FAILED.
#[tokio::test]
async fn wrong_variable_and_argument_types_are_validation_failed() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    let create = "mutation($w: ID!, $p: TaskPriority) { createTask(input: {workspaceId: $w, title: \"t\", priority: $p}) { id } }";
    for (query, vars) in [
        (
            "query($n: Int) { tasks(first: $n) { totalCount } }",
            json!({ "n": "ten" }),
        ),
        ("{ tasks(first: \"ten\") { totalCount } }", json!({})),
        (
            "query($n: Int) { tasks(first: $n) { totalCount } }",
            json!({ "n": 1.5 }),
        ),
        (
            "query($n: String) { tasks(first: $n) { totalCount } }",
            json!({ "n": "10" }),
        ),
        ("{ tasks(first: 2147483648) { totalCount } }", json!({})),
        (create, json!({ "w": o.ws, "p": "SUPER" })),
        (create, json!({ "w": o.ws, "p": 3 })),
        (
            "mutation($n: String!) { createWorkspace(input: {name: $n}) { id } }",
            json!({ "n": 5 }),
        ),
        (
            "query($o: TaskOrder) { tasks(orderBy: $o) { totalCount } }",
            json!({ "o": { "field": "NOPE" } }),
        ),
    ] {
        refused(&app, &o.token, query, vars, "GRAPHQL_VALIDATION_FAILED").await;
    }
    app.stop().await;
}

/// A required variable that is not given is refused before anything runs,
/// with the same code wherever the variable is used.
#[tokio::test]
async fn missing_required_variables_are_validation_failed_wherever_used() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    for query in [
        "query($n: Int!) { tasks(first: $n) { totalCount } }",
        "mutation($n: String!) { createWorkspace(input: {name: $n}) { id } }",
        "mutation($t: String!, $w: ID!) { createTask(input: {workspaceId: $w, title: $t}) { id } }",
    ] {
        refused(&app, &o.token, query, json!({ "w": o.ws }), "GRAPHQL_VALIDATION_FAILED").await;
    }
    app.stop().await;
}

/// Custom scalars (Date) are parsed when the field runs, not while the
/// document is validated, so an unparseable date is BAD_USER_INPUT.
#[tokio::test]
async fn unparseable_dates_are_bad_user_input() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    for (query, vars) in [
        (
            "mutation($w: ID!, $d: Date) { createTask(input: {workspaceId: $w, title: \"t\", dueDate: $d}) { id } }",
            json!({ "w": o.ws, "d": "2024-13-45" }),
        ),
        (
            "mutation($t: ID!, $d: Date) { updateTask(input: {id: $t, dueDate: $d}) { id } }",
            json!({ "t": o.task, "d": "tomorrow" }),
        ),
        (
            "query($d: Date) { tasks(filter: {dueBefore: $d}) { totalCount } }",
            json!({ "d": "31/12/2024" }),
        ),
    ] {
        refused(&app, &o.token, query, vars, "BAD_USER_INPUT").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn ids_of_another_type_are_bad_user_input() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    let task = json!({ "x": o.task });
    let body = refused(
        &app,
        &o.token,
        "query($x: ID!) { tasks(workspaceId: $x) { totalCount } }",
        task.clone(),
        "BAD_USER_INPUT",
    )
    .await;
    assert!(
        message(&body).contains("is a Task ID where a Workspace ID is expected"),
        "{body}"
    );
    for (query, vars) in [
        ("query($x: ID!) { workspace(id: $x) { id } }", task.clone()),
        ("query($x: ID!) { projects(workspaceId: $x) { id } }", task.clone()),
        (
            "mutation($x: ID!) { createTask(input: {workspaceId: $x, title: \"t\"}) { id } }",
            task.clone(),
        ),
        ("mutation($x: ID!) { deleteWorkspace(id: $x) }", task.clone()),
        (
            "mutation($x: ID!) { updateTask(input: {id: $x, title: \"t\"}) { id } }",
            json!({ "x": o.ws }),
        ),
        ("mutation($x: ID!) { deleteTask(id: $x) }", json!({ "x": o.ws })),
        ("mutation($x: ID!) { deleteTask(id: $x) }", json!({ "x": "not-an-id" })),
        (
            "mutation($x: ID!) { deleteTask(id: $x) }",
            json!({ "x": format!("Robot:{}:{}", Uuid::new_v4(), local_id(&o.task)) }),
        ),
    ] {
        refused(&app, &o.token, query, vars, "BAD_USER_INPUT").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn ids_naming_another_instance_are_bad_user_input() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    // The same objects, but claimed to live on some other instance.
    let other = Uuid::new_v4();
    let elsewhere = |global: &str| {
        let kind = global.split(':').next().unwrap();
        format!("{kind}:{other}:{}", local_id(global))
    };
    let (ws, task) = (elsewhere(&o.ws), elsewhere(&o.task));
    let body = refused(
        &app,
        &o.token,
        "query($w: ID!) { workspace(id: $w) { id } }",
        json!({ "w": ws }),
        "BAD_USER_INPUT",
    )
    .await;
    assert!(message(&body).contains(&other.to_string()), "{body}");
    for (query, vars) in [
        ("query($x: ID!) { node(id: $x) { id } }", json!({ "x": task })),
        (
            "query($w: ID!) { tasks(workspaceId: $w) { totalCount } }",
            json!({ "w": ws }),
        ),
        (
            "mutation($w: ID!) { createTask(input: {workspaceId: $w, title: \"t\"}) { id } }",
            json!({ "w": ws }),
        ),
        (
            "mutation($w: ID!) { updateWorkspace(input: {id: $w, name: \"n\"}) { id } }",
            json!({ "w": ws }),
        ),
        ("mutation($w: ID!) { deleteWorkspace(id: $w) }", json!({ "w": ws })),
        ("mutation($t: ID!) { deleteTask(id: $t) }", json!({ "t": task })),
    ] {
        refused(&app, &o.token, query, vars, "BAD_USER_INPUT").await;
    }
    // The genuine IDs of the same objects work: only the instance part was wrong.
    let d = app
        .gql_ok(
            &o.token,
            "query($w: ID!, $t: ID!) { workspace(id: $w) { name } node(id: $t) { id } }",
            json!({ "w": o.ws, "t": o.task }),
        )
        .await;
    assert_eq!(d["workspace"]["name"], "Home");
    assert_eq!(d["node"]["id"], o.task);
    app.stop().await;
}

#[tokio::test]
async fn queries_over_the_depth_limit_are_too_complex() {
    let app = spawn_app_with(|c| c.limits.max_depth = 4).await;
    let o = owner(&app, "a@example.com").await;
    // Depth 4 (tasks > edges > node > id) is within the limit.
    app.gql_ok(&o.token, "{ tasks { edges { node { id } } } }", json!({}))
        .await;
    let body = refused(
        &app,
        &o.token,
        "{ tasks { edges { node { workspace { id } } } } }",
        json!({}),
        "QUERY_TOO_COMPLEX",
    )
    .await;
    assert!(message(&body).contains("depth"), "{body}");
    // A mutation over the limit is refused before it runs: nothing is created.
    refused(
        &app,
        &o.token,
        "mutation($w: ID!) { createTask(input: {workspaceId: $w, title: \"deep\"}) { workspace { projects { workspace { id } } } } }",
        json!({ "w": o.ws }),
        "QUERY_TOO_COMPLEX",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn queries_over_the_complexity_limit_are_too_complex() {
    let app = spawn_app_with(|c| c.limits.max_complexity = 10).await;
    let o = owner(&app, "a@example.com").await;
    app.gql_ok(&o.token, "{ me { id email } }", json!({})).await;
    // `first` multiplies the cost of what is selected below `tasks`.
    app.gql_ok(&o.token, "{ tasks(first: 2) { edges { node { id } } } }", json!({}))
        .await;
    let body = refused(
        &app,
        &o.token,
        "{ tasks(first: 5) { edges { node { id } } } }",
        json!({}),
        "QUERY_TOO_COMPLEX",
    )
    .await;
    assert!(message(&body).contains("complexity"), "{body}");
    let create = |fields: &str| {
        format!("mutation($w: ID!) {{ createTask(input: {{workspaceId: $w, title: \"costly\"}}) {{ {fields} }} }}")
    };
    refused(
        &app,
        &o.token,
        &create("id title description status priority dueDate createdAt updatedAt instance { id name }"),
        json!({ "w": o.ws }),
        "QUERY_TOO_COMPLEX",
    )
    .await;
    // The same mutation, selecting less, is within the limit.
    app.gql_ok(&o.token, &create("id title"), json!({ "w": o.ws })).await;
    app.stop().await;
}

#[tokio::test]
async fn queries_over_the_alias_limit_are_too_complex() {
    let app = spawn_app_with(|c| c.limits.max_aliases = 2).await;
    let o = owner(&app, "a@example.com").await;
    app.gql_ok(&o.token, "{ a: me { id } b: me { id } }", json!({})).await;
    let body = refused(
        &app,
        &o.token,
        "{ a: me { id } b: me { id } c: me { id } }",
        json!({}),
        "QUERY_TOO_COMPLEX",
    )
    .await;
    assert!(message(&body).contains("aliases"), "{body}");
    // Aliases inside fragments and nested selections count too.
    refused(
        &app,
        &o.token,
        "{ me { ...F } } fragment F on User { a: id b: email c: name }",
        json!({}),
        "QUERY_TOO_COMPLEX",
    )
    .await;
    refused(
        &app,
        &o.token,
        "{ x: tasks { edges { n: node { t: title } } } }",
        json!({}),
        "QUERY_TOO_COMPLEX",
    )
    .await;
    refused(
        &app,
        &o.token,
        "mutation { a: createWorkspace(input: {name: \"a\"}) { id } b: createWorkspace(input: {name: \"b\"}) { id } c: createWorkspace(input: {name: \"c\"}) { id } }",
        json!({}),
        "QUERY_TOO_COMPLEX",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn page_sizes_above_the_maximum_or_negative_are_bad_user_input() {
    let app = spawn_app_with(|c| c.limits.max_page_size = 10).await;
    let o = owner(&app, "a@example.com").await;
    let q = "query($n: Int) { tasks(first: $n) { totalCount edges { node { id } } } }";
    let d = app.gql_ok(&o.token, q, json!({ "n": 10 })).await;
    assert_eq!(d["tasks"]["totalCount"], 1);
    for n in [11, 1000, -1, i32::MIN] {
        let body = refused(&app, &o.token, q, json!({ "n": n }), "BAD_USER_INPUT").await;
        assert!(message(&body).contains("first"), "{body}");
    }
    let a = "query($w: ID!, $n: Int!) { activity(workspaceId: $w, first: $n) { action } }";
    app.gql_ok(&o.token, a, json!({ "w": o.ws, "n": 10 })).await;
    for n in [11, -1] {
        refused(&app, &o.token, a, json!({ "w": o.ws, "n": n }), "BAD_USER_INPUT").await;
    }
    app.stop().await;
}

const PAGE: &str = "query($o: TaskOrder, $a: String) { tasks(orderBy: $o, first: 1, after: $a) { edges { node { title } } pageInfo { endCursor } } }";

async fn first_cursor(app: &TestApp, token: &str, order: Value) -> String {
    let d = app.gql_ok(token, PAGE, json!({ "o": order, "a": null })).await;
    d["tasks"]["pageInfo"]["endCursor"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn cursors_of_another_ordering_or_garbage_are_bad_user_input() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    app.create_task(&o.token, &o.ws, "second").await;
    let title = json!({ "field": "TITLE" });
    let cursor = first_cursor(&app, &o.token, title.clone()).await;
    // The cursor resumes the ordering it came from.
    let d = app.gql_ok(&o.token, PAGE, json!({ "o": title, "a": cursor })).await;
    assert_eq!(d["tasks"]["edges"][0]["node"]["title"], "second");
    for order in [
        json!({ "field": "PRIORITY" }),
        json!({ "field": "TITLE", "direction": "DESC" }),
        json!(null),
    ] {
        let body = refused(
            &app,
            &o.token,
            PAGE,
            json!({ "o": order, "a": cursor }),
            "BAD_USER_INPUT",
        )
        .await;
        assert!(message(&body).contains("after"), "{body}");
    }
    let priority = json!({ "field": "PRIORITY" });
    let p_cursor = first_cursor(&app, &o.token, priority.clone()).await;
    for garbage in [
        "garbage".to_string(),
        String::new(),
        "!!!".to_string(),
        URL_SAFE_NO_PAD.encode("not json"),
        URL_SAFE_NO_PAD.encode(r#"{"o":"PRIORITY:ASC"}"#),
        with_sort_key(&app, &p_cursor, json!("abc")),
        with_sort_key(&app, &p_cursor, json!(null)),
        with_sort_key(&app, &p_cursor, json!("1.5")),
    ] {
        refused(
            &app,
            &o.token,
            PAGE,
            json!({ "o": priority, "a": garbage }),
            "BAD_USER_INPUT",
        )
        .await;
    }
    let d_cursor = first_cursor(&app, &o.token, json!({ "field": "DUE_DATE" })).await;
    refused(
        &app,
        &o.token,
        PAGE,
        json!({ "o": { "field": "DUE_DATE" }, "a": with_sort_key(&app, &d_cursor, json!("not a date")) }),
        "BAD_USER_INPUT",
    )
    .await;
    app.stop().await;
}

/// A tampered cursor whose sort key overflows the key's type is the client's
/// fault, like any other tampered cursor.
#[tokio::test]
async fn cursor_keys_out_of_range_are_bad_user_input() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    let priority = json!({ "field": "PRIORITY" });
    let cursor = first_cursor(&app, &o.token, priority.clone()).await;
    for key in ["99999", "-40000"] {
        refused(
            &app,
            &o.token,
            PAGE,
            json!({ "o": priority, "a": with_sort_key(&app, &cursor, json!(key)) }),
            "BAD_USER_INPUT",
        )
        .await;
    }
    app.stop().await;
}

/// PostgreSQL text cannot hold U+0000; input containing it is bad input, not
/// an internal error.
#[tokio::test]
async fn nul_characters_in_text_input_are_bad_user_input() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    for (query, vars) in [
        (
            "mutation($w: ID!, $t: String!) { createTask(input: {workspaceId: $w, title: $t}) { id } }",
            json!({ "w": o.ws, "t": "a\u{0}b" }),
        ),
        (
            "mutation($n: String!) { createWorkspace(input: {name: $n}) { id } }",
            json!({ "n": "a\u{0}b" }),
        ),
        (
            "query($s: String) { tasks(filter: {search: $s}) { totalCount } }",
            json!({ "s": "a\u{0}b" }),
        ),
    ] {
        refused(&app, &o.token, query, vars, "BAD_USER_INPUT").await;
    }
    let title = json!({ "field": "TITLE" });
    let cursor = first_cursor(&app, &o.token, title.clone()).await;
    refused(
        &app,
        &o.token,
        PAGE,
        json!({ "o": title, "a": with_sort_key(&app, &cursor, json!("a\u{0}b")) }),
        "BAD_USER_INPUT",
    )
    .await;
    app.stop().await;
}

/// Two-part mutations whose second part fails; each first part alone writes.
struct RollbackCase {
    what: &'static str,
    query: String,
    vars: Value,
    code: &'static str,
}

const CREATE_A: &str = "a: createTask(input: {workspaceId: $a, title: \"first half\"}) { id }";

async fn rollback_cases(app: &TestApp) -> (String, String, Vec<RollbackCase>) {
    let a = owner(app, "a@example.com").await;
    let (_, b_token) = app.user("b@example.com").await;
    let guest_ws = app.create_workspace(&b_token, "B, a guest of it").await;
    app.add_member(&b_token, &guest_ws, "a@example.com", "GUEST").await;
    let hidden_ws = app.create_workspace(&b_token, "B's own").await;
    let (outsider, _) = app.user("outsider@example.com").await;
    let instance = a.ws.split(':').nth(1).unwrap();
    let outsider = format!("User:{instance}:{outsider}");
    let doomed = app.create_task(&a.token, &a.ws, "doomed").await;
    let two_tasks = format!(
        "mutation($a: ID!, $b: ID!) {{ {CREATE_A} b: createTask(input: {{workspaceId: $b, title: \"x\"}}) {{ id }} }}"
    );
    let cases = vec![
        RollbackCase {
            what: "createTask, then createTask where a guest",
            query: two_tasks.clone(),
            vars: json!({ "a": a.ws, "b": guest_ws }),
            code: "FORBIDDEN",
        },
        RollbackCase {
            what: "createTask, then createTask in an invisible workspace",
            query: two_tasks,
            vars: json!({ "a": a.ws, "b": hidden_ws }),
            code: "NOT_FOUND",
        },
        RollbackCase {
            what: "createWorkspace, then createTask with an empty title",
            query: "mutation($a: ID!) { w: createWorkspace(input: {name: \"first half\"}) { id } t: createTask(input: {workspaceId: $a, title: \"\"}) { id } }".into(),
            vars: json!({ "a": a.ws }),
            code: "BAD_USER_INPUT",
        },
        RollbackCase {
            what: "createProject and updateTask, then an assignee who is not a member",
            query: "mutation($a: ID!, $t: ID!, $u: ID!) { p: createProject(input: {workspaceId: $a, name: \"first half\"}) { id } s: updateTask(input: {id: $t, status: DONE}) { id } x: updateTask(input: {id: $t, assigneeId: $u}) { id } }".into(),
            vars: json!({ "a": a.ws, "t": a.task, "u": outsider }),
            code: "BAD_USER_INPUT",
        },
        RollbackCase {
            what: "deleteTask, then deleteWorkspace where a guest",
            query: "mutation($t: ID!, $b: ID!) { d: deleteTask(id: $t) x: deleteWorkspace(id: $b) }"
                .into(),
            vars: json!({ "t": doomed, "b": guest_ws }),
            code: "FORBIDDEN",
        },
    ];
    (a.token, a.ws, cases)
}

/// No partial writes: when a later mutation of a request fails, the earlier
/// ones are rolled back with it.
#[tokio::test]
async fn a_failing_mutation_rolls_back_the_whole_request() {
    let app = spawn_app().await;
    let (token, ws, cases) = rollback_cases(&app).await;
    for case in &cases {
        let body = changes_nothing(&app, &token, &case.query, case.vars.clone(), case.code).await;
        assert_eq!(codes(&body).len(), 1, "{}: {body}", case.what);
    }
    // Each first half on its own does write: the rollbacks above were real.
    let doomed = cases[4].vars["t"].clone();
    let mut admin = app.admin().await;
    for (query, vars) in [
        (format!("mutation($a: ID!) {{ {CREATE_A} }}"), json!({ "a": ws })),
        (
            "mutation { w: createWorkspace(input: {name: \"first half\"}) { id } }".to_string(),
            json!({}),
        ),
        (
            "mutation($t: ID!) { d: deleteTask(id: $t) }".to_string(),
            json!({ "t": doomed }),
        ),
    ] {
        let before = fingerprint(&mut admin).await;
        app.gql_ok(&token, &query, vars).await;
        assert_ne!(fingerprint(&mut admin).await, before, "{query}");
    }
    app.stop().await;
}

/// A rolled-back request must not report the results of its rolled-back
/// mutations: the IDs it would return name objects that do not exist.
#[tokio::test]
async fn a_rolled_back_request_returns_no_data_for_its_mutations() {
    let app = spawn_app().await;
    let (token, _, cases) = rollback_cases(&app).await;
    for case in &cases {
        refused(&app, &token, &case.query, case.vars.clone(), case.code).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn empty_names_and_titles_are_bad_user_input() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    let project = app
        .gql_ok(
            &o.token,
            "mutation($w: ID!) { createProject(input: {workspaceId: $w, name: \"P\"}) { id } }",
            json!({ "w": o.ws }),
        )
        .await["createProject"]["id"]
        .clone();
    for blank in ["", "   ", "\t\n"] {
        for (query, vars) in [
            (
                "mutation($w: ID!, $s: String!) { createTask(input: {workspaceId: $w, title: $s}) { id } }",
                json!({ "w": o.ws, "s": blank }),
            ),
            (
                "mutation($t: ID!, $s: String!) { updateTask(input: {id: $t, title: $s}) { id } }",
                json!({ "t": o.task, "s": blank }),
            ),
            (
                "mutation($s: String!) { createWorkspace(input: {name: $s}) { id } }",
                json!({ "s": blank }),
            ),
            (
                "mutation($w: ID!, $s: String!) { updateWorkspace(input: {id: $w, name: $s}) { id } }",
                json!({ "w": o.ws, "s": blank }),
            ),
            (
                "mutation($w: ID!, $s: String!) { createProject(input: {workspaceId: $w, name: $s}) { id } }",
                json!({ "w": o.ws, "s": blank }),
            ),
            (
                "mutation($p: ID!, $s: String!) { updateProject(input: {id: $p, name: $s}) { id } }",
                json!({ "p": project, "s": blank }),
            ),
        ] {
            let body = refused(&app, &o.token, query, vars, "BAD_USER_INPUT").await;
            assert!(message(&body).contains("must not be empty"), "{body}");
        }
    }
    let long = "x".repeat(501);
    refused(
        &app,
        &o.token,
        "mutation($w: ID!, $s: String!) { createTask(input: {workspaceId: $w, title: $s}) { id } }",
        json!({ "w": o.ws, "s": long }),
        "BAD_USER_INPUT",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn assignees_who_are_not_members_are_bad_user_input() {
    let app = spawn_app().await;
    let o = owner(&app, "a@example.com").await;
    let instance = o.ws.split(':').nth(1).unwrap().to_string();
    let (stranger, _) = app.user("stranger@example.com").await;
    let (member, _) = app.user("member@example.com").await;
    app.add_member(&o.token, &o.ws, "member@example.com", "MEMBER").await;
    let user = |id: Uuid| format!("User:{instance}:{id}");
    let create =
        "mutation($w: ID!, $u: ID!) { createTask(input: {workspaceId: $w, title: \"t\", assigneeId: $u}) { id } }";
    let update = "mutation($t: ID!, $u: ID!) { updateTask(input: {id: $t, assigneeId: $u}) { id } }";
    for assignee in [user(stranger), user(Uuid::new_v4())] {
        for (query, vars) in [
            (create, json!({ "w": o.ws, "u": assignee })),
            (update, json!({ "t": o.task, "u": assignee })),
        ] {
            let body = refused(&app, &o.token, query, vars, "BAD_USER_INPUT").await;
            assert!(message(&body).contains("assigneeId"), "{body}");
        }
    }
    // A Workspace ID as assignee is refused for its type.
    refused(
        &app,
        &o.token,
        create,
        json!({ "w": o.ws, "u": o.ws }),
        "BAD_USER_INPUT",
    )
    .await;
    // A member can be assigned.
    let d = app
        .gql_ok(
            &o.token,
            "mutation($t: ID!, $u: ID!) { updateTask(input: {id: $t, assigneeId: $u}) { assignee { email } } }",
            json!({ "t": o.task, "u": user(member) }),
        )
        .await;
    assert_eq!(d["updateTask"]["assignee"]["email"], "member@example.com");
    app.stop().await;
}
