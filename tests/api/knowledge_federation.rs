//! The knowledge base across instances (issue 14): three real instances,
//! each its own database, peered through signed CONNECT and approval.
//! Merged lists are checked against an order computed here from every
//! instance's database; fused search against each instance's own ranking;
//! grants, drafts, a stopped peer, and reads and writes at the owner.

use crate::common;

use std::collections::BTreeMap;

use common::{TestApp, codes, fingerprint, local_id, peer, spawn_instance};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

const CREATE: &str = "mutation($i: CreateKnowledgeEntryInput!) { createKnowledgeEntry(input: $i) { id } }";
const LIST: &str = "query($o: KnowledgeEntryOrder, $n: Int, $a: String) {
    knowledgeEntries(scope: {all: true}, orderBy: $o, first: $n, after: $a) {
        totalCount edges { node { id title instance { id name } } } pageInfo { hasNextPage endCursor } } }";
const SEARCH: &str = "query($q: String!, $w: ID, $n: Int, $s: InstanceScope) {
    searchKnowledge(query: $q, mode: TEXT, workspaceId: $w, first: $n, scope: $s) {
        rank score snippet entry { id title instance { id name } } } }";

/// Creates an entry; returns its global ID.
async fn create(app: &TestApp, token: &str, ws: &str, title: &str, content: &str, status: &str) -> String {
    let input = json!({ "workspaceId": ws, "title": title, "content": content, "status": status, "tags": ["shared"] });
    app.gql_ok(token, CREATE, json!({ "i": input })).await["createKnowledgeEntry"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An entry as its owner's database holds it.
#[derive(Clone, Debug)]
struct Row {
    id: String,
    local: Uuid,
    instance: String,
    title: String,
    updated: OffsetDateTime,
}

/// Published entries of `workspaces` in `app`'s database, read as superuser.
async fn published(app: &TestApp, workspaces: &[&str]) -> Vec<Row> {
    let instance = app.state.instance_id.to_string();
    let ids: Vec<Uuid> = workspaces.iter().map(|w| local_id(w)).collect();
    let rows: Vec<(Uuid, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT id, title, updated_at FROM knowledge_entries WHERE workspace_id = ANY($1) AND status = 'PUBLISHED'",
    )
    .bind(ids)
    .fetch_all(&mut app.admin().await)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(local, title, updated)| Row {
            id: format!("KnowledgeEntry:{instance}:{local}"),
            local,
            instance: instance.clone(),
            title,
            updated,
        })
        .collect()
}

fn edges(body: &Value) -> Vec<Value> {
    body["data"]["knowledgeEntries"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

fn ids(nodes: &[Value]) -> Vec<String> {
    nodes.iter().map(|n| n["id"].as_str().unwrap().to_string()).collect()
}

/// Every page of the merged list, `size` at a time.
async fn page_through(app: &TestApp, token: &str, order: &str, size: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = Value::Null;
    for _ in 0..100 {
        let body = app.gql(token, LIST, json!({ "o": order, "n": size, "a": after })).await;
        assert!(body.get("errors").is_none(), "{body}");
        out.extend(edges(&body));
        let info = &body["data"]["knowledgeEntries"]["pageInfo"];
        if info["hasNextPage"] != true {
            return out;
        }
        after = info["endCursor"].clone();
    }
    panic!("paging never ended");
}

/// An instance's own ranking for `query`, asked there by one of its users.
async fn own_ranking(app: &TestApp, token: &str, ws: &str, query: &str) -> Vec<String> {
    let d = app.gql_ok(token, SEARCH, json!({ "q": query, "w": ws, "n": 50 })).await;
    ids(d["searchKnowledge"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["entry"].clone())
        .collect::<Vec<_>>()
        .as_slice())
}

struct World {
    home: TestApp,
    bravo: TestApp,
    charlie: TestApp,
    /// ann, on home.
    token: String,
    home_ws: String,
    /// bob, author on bravo; beth, a plain member of bravo's shared workspace.
    bob: String,
    beth: String,
    bravo_ws: String,
    bravo_private: String,
    carl: String,
    charlie_ws: String,
    /// bob's draft in the shared workspace, and an entry outside the grant.
    draft: String,
    ungranted: String,
}

/// home peers with bravo (read-write, one of its two workspaces) and
/// charlie (read-only); each holds entries about orbits among others.
async fn world() -> World {
    let (home, bravo, charlie) = tokio::join!(
        spawn_instance("home"),
        spawn_instance("bravo"),
        spawn_instance("charlie")
    );
    let (_, token) = home.user("ann@home.example").await;
    let (_, bob) = bravo.user("bob@bravo.example").await;
    let (_, beth) = bravo.user("beth@bravo.example").await;
    let (_, carl) = charlie.user("carl@charlie.example").await;
    let home_ws = home.create_workspace(&token, "home notes").await;
    let bravo_ws = bravo.create_workspace(&bob, "bravo shared").await;
    bravo.add_member(&bob, &bravo_ws, "beth@bravo.example", "MEMBER").await;
    let bravo_private = bravo.create_workspace(&bob, "bravo private").await;
    let charlie_ws = charlie.create_workspace(&carl, "charlie notes").await;

    // Titles repeat across instances, so the order's tie-breaks matter.
    for (app, tok, ws, name) in [
        (&home, &token, &home_ws, "home"),
        (&bravo, &bob, &bravo_ws, "bravo"),
        (&charlie, &carl, &charlie_ws, "charlie"),
    ] {
        create(
            app,
            tok,
            ws,
            "Orbit mechanics",
            &format!("orbit orbit orbit at {name}"),
            "PUBLISHED",
        )
        .await;
        create(
            app,
            tok,
            ws,
            "Launch windows",
            &format!("an orbit is reached from {name}"),
            "PUBLISHED",
        )
        .await;
        create(
            app,
            tok,
            ws,
            &format!("Ground station {name}"),
            "antennas, no spaceflight words",
            "PUBLISHED",
        )
        .await;
        create(app, tok, ws, "Retired", "orbit decay", "ARCHIVED").await;
    }
    create(
        &bravo,
        &bob,
        &bravo_ws,
        "apogee",
        "[[Orbit mechanics]] orbit",
        "PUBLISHED",
    )
    .await;
    let draft = create(
        &bravo,
        &bob,
        &bravo_ws,
        "Orbit draft of bob",
        "orbit secret draft",
        "DRAFT",
    )
    .await;
    let ungranted = create(
        &bravo,
        &bob,
        &bravo_private,
        "Orbit private",
        "orbit orbit private",
        "PUBLISHED",
    )
    .await;
    peer(&home, &bravo, &[&bravo_ws], true).await;
    peer(&home, &charlie, &[&charlie_ws], false).await;
    World {
        home,
        bravo,
        charlie,
        token,
        home_ws,
        bob,
        beth,
        bravo_ws,
        bravo_private,
        carl,
        charlie_ws,
        draft,
        ungranted,
    }
}

/// `knowledgeEntries(scope: {all: true})` gives every published entry the
/// grants expose, in the global order (the field, then instance id, then
/// id), each once however it is paged, with the total; `searchKnowledge`
/// fuses the three rankings by rank. Drafts and ungranted workspaces never
/// appear. With a peer stopped, both answer from the rest and name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_and_search_merge_three_instances() {
    let w = world().await;
    let mut rows = published(&w.home, &[&w.home_ws]).await;
    rows.extend(published(&w.bravo, &[&w.bravo_ws]).await);
    rows.extend(published(&w.charlie, &[&w.charlie_ws]).await);
    assert_eq!(rows.len(), 10);

    // Written independently of KnowledgeEntryOrder::compare.
    let mut by_title = rows.clone();
    by_title
        .sort_by(|a, b| (a.title.as_bytes(), &a.instance, a.local).cmp(&(b.title.as_bytes(), &b.instance, b.local)));
    let mut by_updated = rows.clone();
    by_updated.sort_by(|a, b| (b.updated, &b.instance, b.local).cmp(&(a.updated, &a.instance, a.local)));
    for (order, expected) in [("TITLE_ASC", &by_title), ("UPDATED_AT_DESC", &by_updated)] {
        let want: Vec<String> = expected.iter().map(|r| r.id.clone()).collect();
        let body = w.home.gql(&w.token, LIST, json!({ "o": order, "n": 100 })).await;
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(ids(&edges(&body)), want, "{order}");
        assert_eq!(body["data"]["knowledgeEntries"]["totalCount"], 10, "{order}");
        for size in [1, 3, 4] {
            assert_eq!(
                ids(&page_through(&w.home, &w.token, order, size).await),
                want,
                "{order} by {size}"
            );
        }
        let fed = &body["extensions"]["federation"];
        assert_eq!(
            (fed["total"].as_u64(), fed["succeeded"].as_u64()),
            (Some(3), Some(3)),
            "{fed}"
        );
    }
    // Each row names the instance its ID names.
    let names: BTreeMap<String, String> = [&w.home, &w.bravo, &w.charlie]
        .iter()
        .map(|a| (a.state.instance_id.to_string(), a.state.instance.name.clone()))
        .collect();
    for node in page_through(&w.home, &w.token, "TITLE_ASC", 100).await {
        let id = node["id"].as_str().unwrap();
        let instance = node["instance"]["id"].as_str().unwrap();
        assert!(id.starts_with(&format!("KnowledgeEntry:{instance}:")), "{node}");
        assert_eq!(
            node["instance"]["name"].as_str(),
            names.get(instance).map(String::as_str)
        );
        assert_ne!(id, w.draft);
        assert_ne!(id, w.ungranted);
    }

    // Search: each instance's ranking (bravo's as a plain member sees it,
    // as the grant does: no draft of bob's), fused rank by rank, ties by
    // instance name (bravo, charlie, home).
    let rankings = [
        ("bravo", own_ranking(&w.bravo, &w.beth, &w.bravo_ws, "orbit").await),
        (
            "charlie",
            own_ranking(&w.charlie, &w.carl, &w.charlie_ws, "orbit").await,
        ),
        ("home", own_ranking(&w.home, &w.token, &w.home_ws, "orbit").await),
    ];
    assert_eq!(rankings.each_ref().map(|(_, r)| r.len()), [3, 2, 2], "{rankings:?}");
    let mut fused = Vec::new();
    for rank in 0..3 {
        for (_, ranking) in &rankings {
            if let Some(id) = ranking.get(rank) {
                fused.push(id.clone());
            }
        }
    }
    let body = w
        .home
        .gql(&w.token, SEARCH, json!({ "q": "orbit", "n": 20, "s": { "all": true } }))
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let hits = body["data"]["searchKnowledge"].as_array().unwrap().clone();
    let got: Vec<String> = hits
        .iter()
        .map(|h| h["entry"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, fused, "{body}");
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(h["rank"], i + 1);
        let instance = h["entry"]["instance"]["id"].as_str().unwrap();
        assert!(h["entry"]["id"].as_str().unwrap().contains(instance), "{h}");
        assert!(h["snippet"].as_str().unwrap().contains("<mark>"), "{h}");
    }
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert_eq!(scores[0], 1.0 / 61.0);
    assert!(scores.windows(2).all(|s| s[0] >= s[1]), "{scores:?}");
    assert!(!got.contains(&w.draft) && !got.contains(&w.ungranted));
    // `first` cuts the fused list, not each instance's.
    let body = w
        .home
        .gql(&w.token, SEARCH, json!({ "q": "orbit", "n": 4, "s": { "all": true } }))
        .await;
    let got: Vec<&str> = body["data"]["searchKnowledge"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["entry"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, fused[..4].iter().map(String::as_str).collect::<Vec<_>>());
    // A workspace of bravo named: bravo alone answers, with its own ranking.
    let body = w
        .home
        .gql(&w.token, SEARCH, json!({ "q": "orbit", "w": w.bravo_ws, "n": 20 }))
        .await;
    let got: Vec<String> = body["data"]["searchKnowledge"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|h| h["entry"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, rankings[0].1, "{body}");
    // The ungranted workspace, named: bravo refuses it, nothing is shown.
    let bravo_id = w.bravo.state.instance_id.to_string();
    let body = w
        .home
        .gql(&w.token, SEARCH, json!({ "q": "orbit", "w": w.bravo_private, "n": 20 }))
        .await;
    assert_eq!(body["data"]["searchKnowledge"], json!([]), "{body}");
    assert_eq!(
        common::errors(&body),
        [("PEER_BAD_RESPONSE".to_string(), bravo_id)],
        "{body}"
    );
    assert_eq!(body["errors"][0]["extensions"]["peerCode"], "UNKNOWN_WORKSPACE");
    assert!(!body.to_string().contains("Orbit private"), "{body}");

    // charlie stops: both answer from the rest and report charlie failed.
    let charlie_id = w.charlie.state.instance_id.to_string();
    w.charlie.stop().await;
    let body = w.home.gql(&w.token, LIST, json!({ "o": "TITLE_ASC", "n": 100 })).await;
    let want: Vec<String> = by_title
        .iter()
        .filter(|r| r.instance != charlie_id)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(ids(&edges(&body)), want, "{body}");
    assert_eq!(body["data"]["knowledgeEntries"]["totalCount"], 7, "{body}");
    assert_eq!(
        common::errors(&body),
        [("PEER_UNAVAILABLE".to_string(), charlie_id.clone())],
        "{body}"
    );
    let body = w
        .home
        .gql(&w.token, SEARCH, json!({ "q": "orbit", "n": 20, "s": { "all": true } }))
        .await;
    let got: Vec<String> = body["data"]["searchKnowledge"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|h| h["entry"]["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = fused.iter().filter(|id| !id.contains(&charlie_id)).cloned().collect();
    assert_eq!(got, want, "{body}");
    assert_eq!(
        common::errors(&body),
        [("PEER_UNAVAILABLE".to_string(), charlie_id.clone())],
        "{body}"
    );
    let fed = &body["extensions"]["federation"];
    assert_eq!(
        (fed["succeeded"].as_u64(), fed["failed"].as_u64()),
        (Some(2), Some(1)),
        "{fed}"
    );
    let failed: Vec<&Value> = fed["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], charlie_id);
}

const NODE: &str = "query($id: ID!) { node(id: $id) { id ... on KnowledgeEntry {
    title status tags contentHtml instance { id name } workspace { id name }
    backlinks { id title } outgoingLinks { id title }
    versions(first: 5) { totalCount edges { node { number title } } }
    diff(from: 1, to: 2) { unified } } } }";
const UPDATE: &str = "mutation($i: UpdateKnowledgeEntryInput!) { updateKnowledgeEntry(input: $i) {
    id title content instance { id } versions(first: 5) { totalCount } } }";
const ARCHIVE: &str = "mutation($id: ID!) { archiveKnowledgeEntry(id: $id) { id status } }";

async fn title_in_db(app: &TestApp, id: &str) -> Option<(String, String)> {
    sqlx::query_as("SELECT title, status FROM knowledge_entries WHERE id = $1")
        .bind(local_id(id))
        .fetch_optional(&mut app.admin().await)
        .await
        .unwrap()
}

/// `node(id:)` of an entry of a peer is answered by its owner, nested
/// fields included; outside the grant, or another author's draft, it is
/// null. Writes go to the owner as COMMAND under a read-write grant and are
/// refused (PEER_FORBIDDEN, nothing changed anywhere) under a read-only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_entries_are_read_and_written_at_their_owner() {
    let w = world().await;
    let bravo_id = w.bravo.state.instance_id.to_string();
    let charlie_id = w.charlie.state.instance_id.to_string();
    let linked = create(&w.bravo, &w.bob, &w.bravo_ws, "Perigee", "see [[apogee]]", "PUBLISHED").await;
    let apogee: String = sqlx::query_scalar("SELECT id::text FROM knowledge_entries WHERE slug = 'apogee'")
        .fetch_one(&mut w.bravo.admin().await)
        .await
        .unwrap();
    let apogee = format!("KnowledgeEntry:{bravo_id}:{apogee}");
    w.bravo
        .gql_ok(
            &w.bob,
            UPDATE,
            json!({ "i": { "id": apogee, "content": "[[Orbit mechanics]] and <script>x()</script>" } }),
        )
        .await;
    let home_counts = w.home.row_counts().await;
    let home_tenant = fingerprint(&mut w.home.admin().await).await;

    let d = w.home.gql_ok(&w.token, NODE, json!({ "id": apogee })).await;
    let n = &d["node"];
    assert_eq!(n["id"], apogee);
    assert_eq!(n["title"], "apogee");
    assert_eq!(n["instance"]["id"], bravo_id);
    assert_eq!(n["workspace"]["id"], w.bravo_ws);
    assert_eq!(n["tags"], json!(["shared"]));
    let html = n["contentHtml"].as_str().unwrap();
    assert!(html.contains("wikilink") && !html.contains("<script"), "{html}");
    assert_eq!(n["backlinks"], json!([{ "id": linked, "title": "Perigee" }]));
    assert_eq!(n["outgoingLinks"][0]["title"], "Orbit mechanics");
    assert_eq!(n["versions"]["totalCount"], 2);
    assert_eq!(n["versions"]["edges"][0]["node"]["number"], 2);
    assert!(
        n["diff"]["unified"].as_str().unwrap().contains("+[[Orbit mechanics]]"),
        "{n}"
    );
    let draft_slug: String = sqlx::query_scalar("SELECT slug FROM knowledge_entries WHERE id = $1")
        .bind(local_id(&w.draft))
        .fetch_one(&mut w.bravo.admin().await)
        .await
        .unwrap();
    // By slug in the peer's workspace: asked of the owner too.
    let by_slug =
        "query($w: ID!, $s: String!) { knowledgeEntry(workspaceId: $w, slug: $s) { id tags instance { id } } }";
    let d = w
        .home
        .gql_ok(&w.token, by_slug, json!({ "w": w.bravo_ws, "s": "apogee" }))
        .await;
    assert_eq!(
        d["knowledgeEntry"],
        json!({ "id": apogee, "tags": ["shared"], "instance": { "id": bravo_id } })
    );
    let d = w
        .home
        .gql_ok(&w.token, by_slug, json!({ "w": w.bravo_ws, "s": draft_slug }))
        .await;
    assert!(d["knowledgeEntry"].is_null(), "bob's draft: {d}");
    for hidden in [&w.draft, &w.ungranted] {
        let d = w.home.gql_ok(&w.token, NODE, json!({ "id": hidden })).await;
        assert!(d["node"].is_null(), "{hidden}: {d}");
    }
    // bob's draft is bob's alone: not even another member of his workspace sees it.
    let d = w.bravo.gql_ok(&w.beth, NODE, json!({ "id": w.draft })).await;
    assert!(d["node"].is_null(), "{d}");

    // Read-write grant: the owner changes its entry, as a new version.
    let d = w
        .home
        .gql_ok(
            &w.token,
            UPDATE,
            json!({ "i": { "id": apogee, "title": "Apogee (edited at home)" } }),
        )
        .await;
    let u = &d["updateKnowledgeEntry"];
    assert_eq!(u["id"], apogee);
    assert_eq!(u["title"], "Apogee (edited at home)");
    assert_eq!(
        u["content"], "[[Orbit mechanics]] and <script>x()</script>",
        "content kept"
    );
    assert_eq!(u["instance"]["id"], bravo_id);
    assert_eq!(u["versions"]["totalCount"], 3);
    assert_eq!(
        title_in_db(&w.bravo, &apogee).await,
        Some(("Apogee (edited at home)".into(), "PUBLISHED".into()))
    );
    let d = w.home.gql_ok(&w.token, ARCHIVE, json!({ "id": linked })).await;
    assert_eq!(d["archiveKnowledgeEntry"]["status"], "ARCHIVED");
    assert_eq!(title_in_db(&w.bravo, &linked).await.unwrap().1, "ARCHIVED");
    // Bad input is refused by the owner, naming the field, changing nothing.
    let before = fingerprint(&mut w.bravo.admin().await).await;
    let body = w
        .home
        .gql(&w.token, UPDATE, json!({ "i": { "id": apogee, "title": "" } }))
        .await;
    assert_eq!(codes(&body).len(), 1, "{body}");
    assert!(
        body["errors"][0]["extensions"]["peerCode"].is_string(),
        "the owner's own code: {body}"
    );
    assert_eq!(fingerprint(&mut w.bravo.admin().await).await, before);

    // Read-only grant: refused, nothing changes on charlie.
    let charlie_entry = published(&w.charlie, &[&w.charlie_ws]).await[0].id.clone();
    let before = fingerprint(&mut w.charlie.admin().await).await;
    for (query, vars) in [
        (
            UPDATE,
            json!({ "i": { "id": charlie_entry, "title": "should not happen" } }),
        ),
        (ARCHIVE, json!({ "id": charlie_entry })),
    ] {
        let body = w.home.gql(&w.token, query, vars).await;
        assert_eq!(
            common::errors(&body),
            [("PEER_FORBIDDEN".to_string(), charlie_id.clone())],
            "{body}"
        );
    }
    assert_eq!(fingerprint(&mut w.charlie.admin().await).await, before);
    // Reading through it still works.
    let d = w
        .home
        .gql_ok(
            &w.token,
            "query($id: ID!) { node(id: $id) { ... on KnowledgeEntry { title instance { id } } } }",
            json!({ "id": charlie_entry }),
        )
        .await;
    assert_eq!(d["node"]["instance"]["id"], charlie_id);

    // home stored none of it.
    assert_eq!(w.home.row_counts().await, home_counts);
    assert_eq!(fingerprint(&mut w.home.admin().await).await, home_tenant);
}
