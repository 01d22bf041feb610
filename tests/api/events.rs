//! Events (calendar entries) through GraphQL: the mutations, `Workspace.events`
//! with its [from, to) window and keyset pagination, refused input, and
//! isolation between workspaces. Who may write per role is in tests/roles.rs;
//! events of a peer's workspace in tests/federation_merge.rs.

use crate::common;

use common::{TestApp, codes, fingerprint, local_id, spawn_app};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

const CREATE: &str = "mutation($i: CreateEventInput!) { createEvent(input: $i) {
    id title description startsAt endsAt location createdAt
    createdBy { email } workspace { id } instance { id name } } }";
const UPDATE: &str = "mutation($i: UpdateEventInput!) { updateEvent(input: $i) {
    id title description startsAt endsAt location } }";
const DELETE: &str = "mutation($id: ID!) { deleteEvent(id: $id) }";
const NODE: &str = "query($id: ID!) { node(id: $id) { id ... on Event { title startsAt workspace { id } } } }";
const LIST: &str = "query($w: ID!, $from: DateTime, $to: DateTime, $n: Int, $a: String) {
  workspace(id: $w) { events(from: $from, to: $to, first: $n, after: $a) {
    totalCount edges { cursor node { id title } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }";

fn event_input(ws: &str, title: &str, starts_at: &str, ends_at: &str) -> Value {
    json!({ "workspaceId": ws, "title": title, "startsAt": starts_at, "endsAt": ends_at })
}

async fn create_event(app: &TestApp, token: &str, ws: &str, title: &str, starts_at: &str, ends_at: &str) -> String {
    let d = app
        .gql_ok(
            token,
            CREATE,
            json!({ "i": event_input(ws, title, starts_at, ends_at) }),
        )
        .await;
    d["createEvent"]["id"].as_str().unwrap().to_string()
}

/// The titles `events` lists in one page (no paging).
async fn titles(app: &TestApp, token: &str, ws: &str, from: Option<&str>, to: Option<&str>) -> Vec<String> {
    let d = app
        .gql_ok(token, LIST, json!({ "w": ws, "from": from, "to": to, "n": 100 }))
        .await;
    let events = &d["workspace"]["events"];
    let titles: Vec<String> = events["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events["totalCount"], titles.len(), "totalCount of {from:?}..{to:?}");
    titles
}

#[tokio::test]
async fn an_event_is_created_read_updated_and_deleted() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let ws = app.create_workspace(&alice, "Team").await;
    let instance = app.state.instance_id.to_string();

    let mut input = event_input(
        &ws,
        "  Planning  ",
        "2030-03-01T10:00:00+01:00",
        "2030-03-01T11:30:00+01:00",
    );
    input["description"] = json!("Quarterly planning");
    input["location"] = json!("Room 4");
    let d = app.gql_ok(&alice, CREATE, json!({ "i": input })).await;
    let e = &d["createEvent"];
    let id = e["id"].as_str().unwrap().to_string();
    assert!(id.starts_with(&format!("Event:{instance}:")), "{id}");
    assert_eq!(e["title"], "Planning", "the title is stored trimmed");
    assert_eq!(e["description"], "Quarterly planning");
    assert_eq!(e["startsAt"], "2030-03-01T09:00:00Z", "times come back in UTC");
    assert_eq!(e["endsAt"], "2030-03-01T10:30:00Z");
    assert_eq!(e["location"], "Room 4");
    assert_eq!(e["createdBy"]["email"], "alice@example.com");
    assert_eq!(e["workspace"]["id"], ws);
    assert_eq!(e["instance"], json!({ "id": instance, "name": "test" }));

    // node(id:) and the workspace's list both show it.
    let d = app.gql_ok(&alice, NODE, json!({ "id": id })).await;
    assert_eq!(
        d["node"],
        json!({ "id": id, "title": "Planning", "startsAt": "2030-03-01T09:00:00Z", "workspace": { "id": ws } })
    );
    assert_eq!(titles(&app, &alice, &ws, None, None).await, ["Planning"]);

    // Only the fields given change; null clears description and location.
    let d = app
        .gql_ok(
            &alice,
            UPDATE,
            json!({ "i": { "id": id, "title": "Planning (moved)" } }),
        )
        .await;
    assert_eq!(
        d["updateEvent"],
        json!({ "id": id, "title": "Planning (moved)", "description": "Quarterly planning",
                "startsAt": "2030-03-01T09:00:00Z", "endsAt": "2030-03-01T10:30:00Z", "location": "Room 4" })
    );
    let d = app
        .gql_ok(
            &alice,
            UPDATE,
            json!({ "i": { "id": id, "endsAt": "2030-03-01T12:00:00Z", "location": null, "description": null } }),
        )
        .await;
    assert_eq!(
        d["updateEvent"],
        json!({ "id": id, "title": "Planning (moved)", "description": null,
                "startsAt": "2030-03-01T09:00:00Z", "endsAt": "2030-03-01T12:00:00Z", "location": null })
    );
    // An event without duration is allowed.
    let d = app
        .gql_ok(
            &alice,
            UPDATE,
            json!({ "i": { "id": id, "startsAt": "2030-03-01T12:00:00Z" } }),
        )
        .await;
    assert_eq!(d["updateEvent"]["startsAt"], d["updateEvent"]["endsAt"]);

    let d = app.gql_ok(&alice, DELETE, json!({ "id": id })).await;
    assert_eq!(d["deleteEvent"], id);
    assert!(app.gql_ok(&alice, NODE, json!({ "id": id })).await["node"].is_null());
    assert!(titles(&app, &alice, &ws, None, None).await.is_empty());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap();
    assert_eq!(left, 0);

    // The activity log's triggers recorded each change, by Alice.
    let d = app
        .gql_ok(
            &alice,
            "query($w: ID!) { activity(workspaceId: $w) { action entityType entityId } }",
            json!({ "w": ws }),
        )
        .await;
    let on_event: Vec<&str> = d["activity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["entityType"] == "events" && a["entityId"] == local_id(&id).to_string())
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(on_event, ["delete", "update", "update", "update", "insert"]);
    app.stop().await;
}

/// (startsAt, id, title) of every event of a workspace, from the database.
async fn stored(app: &TestApp, ws: &str) -> Vec<(OffsetDateTime, Uuid, OffsetDateTime, String)> {
    sqlx::query_as("SELECT starts_at, id, ends_at, title FROM events WHERE workspace_id = $1")
        .bind(local_id(ws))
        .fetch_all(&mut app.admin().await)
        .await
        .unwrap()
}

/// Walks `events` page by page; returns the ids in the order served.
async fn walk(app: &TestApp, token: &str, ws: &str, from: Option<&str>, to: Option<&str>, n: usize) -> Vec<Uuid> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let d = app
            .gql_ok(
                token,
                LIST,
                json!({ "w": ws, "from": from, "to": to, "n": n, "a": after }),
            )
            .await;
        let c = &d["workspace"]["events"];
        let edges = c["edges"].as_array().unwrap();
        let info = &c["pageInfo"];
        assert!(edges.len() <= n);
        assert_eq!(info["hasPreviousPage"], after.is_some());
        if let Some(last) = edges.last() {
            assert_eq!(info["endCursor"], last["cursor"]);
            assert_eq!(info["startCursor"], edges[0]["cursor"]);
        }
        seen.extend(edges.iter().map(|e| local_id(e["node"]["id"].as_str().unwrap())));
        if info["hasNextPage"] == false {
            return seen;
        }
        assert_eq!(edges.len(), n, "a page short of `first` yet hasNextPage");
        after = Some(info["endCursor"].as_str().unwrap().to_string());
        assert!(seen.len() <= 1000, "paging does not end");
    }
}

/// Whether [s, e] overlaps [from, to): an event with duration when it starts
/// before `to` and ends after `from`; one without when it lies in [from, to).
fn overlaps(s: OffsetDateTime, e: OffsetDateTime, from: Option<OffsetDateTime>, to: Option<OffsetDateTime>) -> bool {
    let before_to = to.is_none_or(|t| s < t);
    if s == e {
        before_to && from.is_none_or(|f| s >= f)
    } else {
        before_to && from.is_none_or(|f| e > f)
    }
}

fn at(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339).unwrap()
}

/// Many events with ties in startsAt (broken by id) and microsecond steps,
/// some without duration: every page size walks every event once, in order,
/// with and without a window.
#[tokio::test]
async fn pages_walk_every_event_once_by_start_then_id() {
    let app = spawn_app().await;
    let (_, token) = app.user("pager@example.com").await;
    let ws = app.create_workspace(&token, "Calendar").await;
    let other = app.create_workspace(&token, "Other").await;
    create_event(
        &app,
        &token,
        &other,
        "elsewhere",
        "2030-01-01T09:00:00Z",
        "2030-01-01T10:00:00Z",
    )
    .await;
    // Random ids (not creation order) so the tie-break by id is really tested.
    sqlx::query(
        "INSERT INTO events (id, workspace_id, title, starts_at, ends_at)
         SELECT gen_random_uuid(), $1, 'e' || i,
                timestamptz '2030-01-01 08:00:00+00' + (i % 12) * interval '30 minutes'
                    + (i % 2) * interval '1 microsecond',
                timestamptz '2030-01-01 08:00:00+00' + (i % 12) * interval '30 minutes'
                    + (i % 2) * interval '1 microsecond' + (i % 4) * interval '45 minutes'
         FROM generate_series(1, 75) AS i",
    )
    .bind(local_id(&ws))
    .execute(&mut app.admin().await)
    .await
    .unwrap();
    let mut all = stored(&app, &ws).await;
    all.sort_by_key(|(s, id, _, _)| (*s, *id));
    assert_eq!(all.len(), 75);

    for n in [1, 7, 75, 100] {
        let expected: Vec<Uuid> = all.iter().map(|r| r.1).collect();
        assert_eq!(walk(&app, &token, &ws, None, None, n).await, expected, "first: {n}");
    }
    for (from, to) in [
        (Some("2030-01-01T09:00:00Z"), Some("2030-01-01T10:30:00Z")),
        (Some("2030-01-01T10:00:00.000001Z"), None),
        (None, Some("2030-01-01T09:00:00.000001Z")),
        (Some("2030-01-01T13:30:00Z"), Some("2030-01-01T13:30:00.000001Z")),
    ] {
        let expected: Vec<Uuid> = all
            .iter()
            .filter(|(s, _, e, _)| overlaps(*s, *e, from.map(at), to.map(at)))
            .map(|r| r.1)
            .collect();
        assert!(!expected.is_empty(), "{from:?}..{to:?} selects something");
        assert!(expected.len() < all.len(), "{from:?}..{to:?} leaves something out");
        assert_eq!(walk(&app, &token, &ws, from, to, 4).await, expected, "{from:?}..{to:?}");
    }

    // first: 0 shows whether there is anything, and nothing else.
    let d = app.gql_ok(&token, LIST, json!({ "w": ws, "n": 0 })).await;
    let c = &d["workspace"]["events"];
    assert_eq!(c["edges"], json!([]));
    assert_eq!(c["pageInfo"]["hasNextPage"], true);
    assert_eq!(c["totalCount"], 75);
    app.stop().await;
}

/// The window is half-open, bounds with any offset mean the same instant,
/// and an event without duration counts where it lies.
#[tokio::test]
async fn the_window_selects_events_overlapping_from_to() {
    let app = spawn_app().await;
    let (_, token) = app.user("cal@example.com").await;
    let ws = app.create_workspace(&token, "Calendar").await;
    for (title, s, e) in [
        ("ends at from", "2030-01-01T08:00:00Z", "2030-01-01T09:00:00Z"),
        ("inside", "2030-01-01T09:00:00Z", "2030-01-01T10:00:00Z"),
        ("instant inside", "2030-01-01T09:30:00Z", "2030-01-01T09:30:00Z"),
        ("instant at from", "2030-01-01T09:00:00Z", "2030-01-01T09:00:00Z"),
        ("spans it", "2030-01-01T07:00:00Z", "2030-01-01T12:00:00Z"),
        ("starts at to", "2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z"),
        ("instant at to", "2030-01-01T10:00:00Z", "2030-01-01T10:00:00Z"),
    ] {
        create_event(&app, &token, &ws, title, s, e).await;
    }
    // Ordered by start, ties by id (creation order here: ids are UUIDv7).
    assert_eq!(
        titles(
            &app,
            &token,
            &ws,
            Some("2030-01-01T09:00:00Z"),
            Some("2030-01-01T10:00:00Z")
        )
        .await,
        ["spans it", "inside", "instant at from", "instant inside"]
    );
    // The same instants, written with another offset.
    assert_eq!(
        titles(
            &app,
            &token,
            &ws,
            Some("2030-01-01T10:00:00+01:00"),
            Some("2030-01-01T05:00:00-05:00")
        )
        .await,
        ["spans it", "inside", "instant at from", "instant inside"]
    );
    assert_eq!(
        titles(&app, &token, &ws, Some("2030-01-01T10:00:00Z"), None).await,
        ["spans it", "starts at to", "instant at to"]
    );
    assert_eq!(
        titles(&app, &token, &ws, None, Some("2030-01-01T08:00:00Z")).await,
        ["spans it"]
    );
    assert!(
        titles(
            &app,
            &token,
            &ws,
            Some("2030-01-01T12:00:00Z"),
            Some("2030-01-02T00:00:00Z")
        )
        .await
        .is_empty()
    );
    assert_eq!(titles(&app, &token, &ws, None, None).await.len(), 7);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.user("careful@example.com").await;
    let ws = app.create_workspace(&token, "W").await;
    let task = app.create_task(&token, &ws, "a task").await;
    let event = create_event(
        &app,
        &token,
        &ws,
        "kept",
        "2030-01-01T09:00:00Z",
        "2030-01-01T10:00:00Z",
    )
    .await;
    let (s, e) = ("2030-02-01T09:00:00Z", "2030-02-01T10:00:00Z");
    let with = |key: &str, value: Value| {
        let mut i = event_input(&ws, "ok", s, e);
        i[key] = value;
        json!({ "i": i })
    };

    // createEvent
    for (vars, field) in [
        (with("title", json!("")), "title"),
        (with("title", json!(" \t\n ")), "title"),
        (with("title", json!("x".repeat(501))), "title"),
        (with("title", json!("a\u{0}b")), "title"),
        (with("description", json!("a\u{0}b")), "description"),
        (with("description", json!("d".repeat(100_001))), "description"),
        (with("location", json!("a\u{0}b")), "location"),
        (with("location", json!("l".repeat(501))), "location"),
        (with("endsAt", json!("2030-02-01T08:59:59.999999Z")), "endsAt"),
        // Scalars are parsed by async-graphql, whose message names the type
        // and the input object ("DateTime" ... "CreateEventInput"), not the field.
        (with("startsAt", json!("tomorrow")), "DateTime"),
        (with("workspaceId", json!(task)), "workspaceId"),
        (with("workspaceId", json!("nope")), "workspaceId"),
    ] {
        app.assert_refused(&token, CREATE, vars, "BAD_USER_INPUT", field).await;
    }
    // updateEvent: one bound given must still fit the stored other.
    for (input, field) in [
        (json!({ "id": event }), "nothing to update"),
        (json!({ "id": event, "title": "   " }), "title"),
        (json!({ "id": event, "title": "x".repeat(501) }), "title"),
        (json!({ "id": event, "location": "a\u{0}b" }), "location"),
        (
            json!({ "id": event, "startsAt": "2030-01-01T10:00:00.000001Z" }),
            "endsAt",
        ),
        (json!({ "id": event, "endsAt": "2030-01-01T08:59:59Z" }), "endsAt"),
        (
            json!({ "id": event, "startsAt": "2030-01-02T00:00:00Z", "endsAt": "2030-01-01T00:00:00Z" }),
            "endsAt",
        ),
        (json!({ "id": task, "title": "x" }), "id"),
        (json!({ "id": ws, "title": "x" }), "id"),
    ] {
        app.assert_refused(&token, UPDATE, json!({ "i": input }), "BAD_USER_INPUT", field)
            .await;
    }

    // deleteEvent
    for id in [task.as_str(), ws.as_str(), "Event:nope"] {
        app.assert_refused(&token, DELETE, json!({ "id": id }), "BAD_USER_INPUT", "id")
            .await;
    }

    // Workspace.events
    let task_cursor = app
        .gql_ok(&token, "{ tasks(first: 1) { pageInfo { endCursor } } }", json!({}))
        .await["tasks"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({ "o": "STARTS_AT:ASC", "k": "soon", "i": Uuid::nil() }).to_string())
    };
    for (vars, field) in [
        (json!({ "from": s, "to": s }), "from"),
        (json!({ "from": e, "to": s }), "from"),
        (json!({ "to": "31/12/2030" }), "DateTime"),
        (json!({ "n": -1 }), "first"),
        (json!({ "n": 101 }), "first"),
        (json!({ "a": "garbage" }), "after"),
        (json!({ "a": task_cursor }), "after"),
        (json!({ "a": forged }), "after"),
    ] {
        let mut vars = vars;
        vars["w"] = json!(ws);
        app.assert_refused(&token, LIST, vars, "BAD_USER_INPUT", field).await;
    }

    // All or nothing: a request whose last write fails keeps none of its writes.
    app.assert_refused(
        &token,
        "mutation($i: CreateEventInput!, $u: UpdateEventInput!, $bad: UpdateEventInput!) {
           a: createEvent(input: $i) { id } b: updateEvent(input: $u) { id } c: updateEvent(input: $bad) { id } }",
        json!({
            "i": event_input(&ws, "new", s, e),
            "u": { "id": event, "title": "changed" },
            "bad": { "id": event, "endsAt": "2000-01-01T00:00:00Z" },
        }),
        "BAD_USER_INPUT",
        "endsAt",
    )
    .await;
    let d = app.gql_ok(&token, NODE, json!({ "id": event })).await;
    assert_eq!(d["node"]["title"], "kept");
    assert_eq!(titles(&app, &token, &ws, None, None).await, ["kept"]);

    // Exactly at the limits, the input is accepted.
    let mut at_limits = event_input(&ws, &"x".repeat(500), s, s);
    at_limits["location"] = json!("l".repeat(500));
    at_limits["description"] = json!("d".repeat(100_000));
    let d = app.gql_ok(&token, CREATE, json!({ "i": at_limits })).await;
    assert_eq!(d["createEvent"]["title"].as_str().unwrap().len(), 500);
    app.stop().await;
}

/// A user of another workspace sees none of its events, by any path, and
/// cannot change them; a guest of the workspace reads them.
#[tokio::test]
async fn events_stay_inside_their_workspace() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let (_, gina) = app.user("gina@example.com").await;
    let ws_a = app.create_workspace(&alice, "Alice's").await;
    let ws_b = app.create_workspace(&bob, "Bob's").await;
    app.add_member(&alice, &ws_a, "gina@example.com", "GUEST").await;
    let secret = create_event(
        &app,
        &alice,
        &ws_a,
        "secret",
        "2030-01-01T09:00:00Z",
        "2030-01-01T10:00:00Z",
    )
    .await;
    create_event(
        &app,
        &bob,
        &ws_b,
        "bob's",
        "2030-01-01T09:00:00Z",
        "2030-01-01T10:00:00Z",
    )
    .await;

    let d = app
        .gql_ok(
            &bob,
            "query($w: ID!, $e: ID!) { node(id: $e) { id } workspace(id: $w) { events { totalCount } }
               workspaces { name events { totalCount edges { node { title } } } } }",
            json!({ "w": ws_a, "e": secret }),
        )
        .await;
    assert!(d["node"].is_null() && d["workspace"].is_null(), "{d}");
    assert_eq!(
        d["workspaces"],
        json!([{ "name": "Bob's", "events": { "totalCount": 1, "edges": [{ "node": { "title": "bob's" } }] } }])
    );

    let mut admin = app.admin().await;
    let before = fingerprint(&mut admin).await;
    for (query, vars) in [
        (
            CREATE,
            json!({ "i": event_input(&ws_a, "intruder", "2030-01-01T09:00:00Z", "2030-01-01T10:00:00Z") }),
        ),
        (UPDATE, json!({ "i": { "id": secret, "title": "mine" } })),
        (DELETE, json!({ "id": secret })),
    ] {
        let body = app.gql(&bob, query, vars).await;
        assert_eq!(codes(&body), ["NOT_FOUND"], "{query}: {body}");
        assert!(body["data"].is_null(), "{body}");
    }
    assert_eq!(fingerprint(&mut admin).await, before, "refused but changed data");

    // The guest reads Alice's events (and sees who made them), but not Bob's.
    let d = app
        .gql_ok(
            &gina,
            "query($e: ID!) { node(id: $e) { ... on Event { title createdBy { email } } }
               workspaces { name events { edges { node { title } } } } }",
            json!({ "e": secret }),
        )
        .await;
    assert_eq!(
        d["node"],
        json!({ "title": "secret", "createdBy": { "email": "alice@example.com" } })
    );
    assert_eq!(
        d["workspaces"],
        json!([{ "name": "Alice's", "events": { "edges": [{ "node": { "title": "secret" } }] } }])
    );
    app.stop().await;
}
