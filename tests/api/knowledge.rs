//! The knowledge base on one instance (issue 14): entries, wiki links that
//! resolve later, versions and diffs, tags, full-text search with its
//! precision on a generated labelled corpus, the graph, refused input, safe
//! HTML, and isolation (another workspace's entries and another author's
//! drafts never show, through any field).

use crate::common;

use common::{TestApp, code, codes, spawn_app, spawn_app_with};
use serde_json::{Value, json};

const ENTRY_FIELDS: &str = "id slug title content status tags instance { id name }";

fn create_query() -> String {
    format!("mutation($i: CreateKnowledgeEntryInput!) {{ createKnowledgeEntry(input: $i) {{ {ENTRY_FIELDS} }} }}")
}

fn update_query() -> String {
    format!("mutation($i: UpdateKnowledgeEntryInput!) {{ updateKnowledgeEntry(input: $i) {{ {ENTRY_FIELDS} }} }}")
}

const ENTRY: &str = "query($w: ID!, $s: String!) { knowledgeEntry(workspaceId: $w, slug: $s) {
    id slug title status contentHtml outgoingLinks { slug } backlinks { slug }
    links { target label entry { slug } } } }";
const LIST: &str = "query($w: ID!, $f: KnowledgeFilter, $o: KnowledgeEntryOrder, $n: Int, $a: String) {
    knowledgeEntries(workspaceId: $w, filter: $f, orderBy: $o, first: $n, after: $a) {
        totalCount edges { cursor node { slug title } } pageInfo { hasNextPage endCursor } } }";
const SEARCH: &str = "query($q: String!, $m: KnowledgeSearchMode, $w: ID, $f: KnowledgeFilter, $n: Int) {
    searchKnowledge(query: $q, mode: $m, workspaceId: $w, filter: $f, first: $n) {
        score rank snippet entry { slug title } } }";
const BROKEN: &str = "query($w: ID!) { knowledgeBrokenLinks(workspaceId: $w) { target label source { slug } } }";
const GRAPH: &str = "query($w: ID!, $a: String, $d: Int, $l: Int) {
    knowledgeGraph(workspaceId: $w, around: $a, depth: $d, limit: $l) {
        nodes { id slug degree } edges { source target } orphans truncated } }";
const STATS: &str = "query($w: ID!) { knowledgeGraphStats(workspaceId: $w) {
    entries links brokenLinks orphans averageLinksPerEntry mostConnected { slug degree } tags { name entryCount } } }";
const NODE: &str = "query($id: ID!) { node(id: $id) { id ... on KnowledgeEntry { slug title } } }";

async fn create(app: &TestApp, token: &str, input: Value) -> Value {
    app.gql_ok(token, &create_query(), json!({ "i": input })).await["createKnowledgeEntry"].clone()
}

/// Creates a published entry; returns its slug.
async fn entry(app: &TestApp, token: &str, ws: &str, title: &str, content: &str) -> String {
    create(
        app,
        token,
        json!({ "workspaceId": ws, "title": title, "content": content }),
    )
    .await["slug"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn get(app: &TestApp, token: &str, ws: &str, slug: &str) -> Value {
    app.gql_ok(token, ENTRY, json!({ "w": ws, "s": slug })).await["knowledgeEntry"].clone()
}

fn slugs(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["slug"].as_str().unwrap().to_string())
        .collect()
}

async fn list_slugs(app: &TestApp, token: &str, ws: &str, filter: Value) -> Vec<String> {
    let d = app.gql_ok(token, LIST, json!({ "w": ws, "f": filter, "n": 100 })).await;
    d["knowledgeEntries"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["slug"].as_str().unwrap().to_string())
        .collect()
}

async fn search(app: &TestApp, token: &str, vars: Value) -> Vec<Value> {
    app.gql_ok(token, SEARCH, vars).await["searchKnowledge"]
        .as_array()
        .unwrap()
        .clone()
}

fn hit_slugs(hits: &[Value]) -> Vec<String> {
    hits.iter()
        .map(|h| h["entry"]["slug"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn links_resolve_by_slug_then_title_and_later_when_the_target_appears() {
    let app = spawn_app().await;
    let (_, token) = app.user("kim@example.com").await;
    let ws = app.create_workspace(&token, "Notes").await;

    let home = entry(
        &app,
        &token,
        &ws,
        "Home",
        "Start at [[Design Notes]], then [[ops-guide|the runbook]].\n\n`[[not a link]]`\n\n```\n[[fenced]]\n```\n\\[[escaped]]",
    )
    .await;
    assert_eq!(home, "home");
    let e = get(&app, &token, &ws, "home").await;
    assert_eq!(slugs(&e["outgoingLinks"]), Vec::<String>::new());
    assert_eq!(
        e["links"],
        json!([
            { "target": "Design Notes", "label": null, "entry": null },
            { "target": "ops-guide", "label": "the runbook", "entry": null },
        ])
    );
    let html = e["contentHtml"].as_str().unwrap();
    assert_eq!(html.matches(r#"class="wikilink broken""#).count(), 2, "{html}");
    assert!(html.contains("<code>[[not a link]]</code>"), "{html}");
    let broken = app.gql_ok(&token, BROKEN, json!({ "w": ws })).await;
    assert_eq!(
        broken["knowledgeBrokenLinks"],
        json!([
            { "target": "Design Notes", "label": null, "source": { "slug": "home" } },
            { "target": "ops-guide", "label": "the runbook", "source": { "slug": "home" } },
        ])
    );

    // The targets appear: one by title, one by slug.
    assert_eq!(
        entry(&app, &token, &ws, "design notes", "Back to [[Home]].").await,
        "design-notes"
    );
    let ops = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "Operations", "slug": "ops-guide", "content": "" }),
    )
    .await;
    assert_eq!(ops["slug"], "ops-guide");
    let e = get(&app, &token, &ws, "home").await;
    assert_eq!(slugs(&e["outgoingLinks"]), ["design-notes", "ops-guide"]);
    assert_eq!(slugs(&e["backlinks"]), ["design-notes"]);
    let html = e["contentHtml"].as_str().unwrap();
    assert!(html.contains(r#"href="/knowledge/entries/ops-guide""#), "{html}");
    assert!(html.contains(">the runbook</a>"), "{html}");
    assert!(!html.contains("broken"), "{html}");
    assert_eq!(slugs(&get(&app, &token, &ws, "ops-guide").await["backlinks"]), ["home"]);
    let broken = app.gql_ok(&token, BROKEN, json!({ "w": ws })).await;
    assert_eq!(broken["knowledgeBrokenLinks"], json!([]));

    // A slug beats a title: an entry titled "ops-guide" does not take the link.
    assert_eq!(entry(&app, &token, &ws, "ops-guide", "").await, "ops-guide-2");
    let e = get(&app, &token, &ws, "home").await;
    assert_eq!(slugs(&e["outgoingLinks"]), ["design-notes", "ops-guide"]);
    // Colliding titles get -2, -3.
    assert_eq!(entry(&app, &token, &ws, "Home", "").await, "home-2");
    assert_eq!(entry(&app, &token, &ws, "HOME!", "").await, "home-3");

    // Archiving the target breaks the link again; the entry is kept.
    let id = ops["id"].as_str().unwrap();
    app.gql_ok(
        &token,
        "mutation($id: ID!) { archiveKnowledgeEntry(id: $id) { status } }",
        json!({ "id": id }),
    )
    .await;
    // [[ops-guide]] now resolves by title, to the entry named so.
    let e = get(&app, &token, &ws, "home").await;
    assert_eq!(slugs(&e["outgoingLinks"]), ["design-notes", "ops-guide-2"]);
    assert_eq!(get(&app, &token, &ws, "ops-guide").await["status"], "ARCHIVED");
    assert!(
        !list_slugs(&app, &token, &ws, json!(null))
            .await
            .contains(&"ops-guide".to_string())
    );
    assert_eq!(
        list_slugs(&app, &token, &ws, json!({ "status": "ARCHIVED" })).await,
        ["ops-guide"]
    );
}

#[tokio::test]
async fn every_save_is_a_version_with_diffs_and_restore() {
    let app = spawn_app().await;
    let (_, token) = app.user("vera@example.com").await;
    let ws = app.create_workspace(&token, "Versions").await;
    let e = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "Plan", "content": "one\ntwo\nthree\n", "message": "first" }),
    )
    .await;
    let id = e["id"].as_str().unwrap().to_string();
    for (content, message) in [("one\n2\nthree\n", "second"), ("one\n2\nthree\nfour\n", "third")] {
        app.gql_ok(
            &token,
            &update_query(),
            json!({ "i": { "id": id, "content": content, "message": message } }),
        )
        .await;
    }
    const VERSIONS: &str = "query($id: ID!, $n: Int, $a: String) { node(id: $id) { ... on KnowledgeEntry {
        versions(first: $n, after: $a) { totalCount edges { cursor node { number message content author { email } } }
            pageInfo { hasNextPage endCursor } } } } }";
    let page = app.gql_ok(&token, VERSIONS, json!({ "id": id, "n": 2 })).await["node"]["versions"].clone();
    assert_eq!(page["totalCount"], 3);
    let numbers: Vec<i64> = page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2]);
    assert_eq!(page["edges"][0]["node"]["message"], "third");
    assert_eq!(page["edges"][0]["node"]["author"]["email"], "vera@example.com");
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let rest = app
        .gql_ok(
            &token,
            VERSIONS,
            json!({ "id": id, "n": 2, "a": page["pageInfo"]["endCursor"] }),
        )
        .await["node"]["versions"]
        .clone();
    assert_eq!(rest["edges"][0]["node"]["number"], 1);
    assert_eq!(rest["edges"][0]["node"]["content"], "one\ntwo\nthree\n");
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);

    const DIFF: &str = "query($id: ID!, $f: Int!, $t: Int!) { node(id: $id) { ... on KnowledgeEntry {
        diff(from: $f, to: $t) { unified hunks { oldStart oldLines newStart newLines lines { kind text } } } } } }";
    let diff = app.gql_ok(&token, DIFF, json!({ "id": id, "f": 1, "t": 3 })).await["node"]["diff"].clone();
    assert_eq!(
        diff["unified"],
        "--- v1\n+++ v3\n@@ -1,3 +1,4 @@\n one\n-two\n+2\n three\n+four\n"
    );
    assert_eq!(
        diff["hunks"],
        json!([{ "oldStart": 1, "oldLines": 3, "newStart": 1, "newLines": 4, "lines": [
            { "kind": "CONTEXT", "text": "one" },
            { "kind": "REMOVED", "text": "two" },
            { "kind": "ADDED", "text": "2" },
            { "kind": "CONTEXT", "text": "three" },
            { "kind": "ADDED", "text": "four" },
        ] }])
    );
    let body = app.gql(&token, DIFF, json!({ "id": id, "f": 1, "t": 9 })).await;
    assert_eq!(code(&body), "UNKNOWN_VERSION", "{body}");

    let restored = app
        .gql_ok(
            &token,
            "mutation($i: RestoreKnowledgeVersionInput!) { restoreKnowledgeVersion(input: $i) { content
                versions(first: 1) { totalCount edges { node { number message content } } } } }",
            json!({ "i": { "id": id, "number": 1 } }),
        )
        .await["restoreKnowledgeVersion"]
        .clone();
    assert_eq!(restored["content"], "one\ntwo\nthree\n");
    assert_eq!(restored["versions"]["totalCount"], 4);
    assert_eq!(
        restored["versions"]["edges"][0]["node"],
        json!({ "number": 4, "message": "restored version 1", "content": "one\ntwo\nthree\n" })
    );
    let before = common::fingerprint(&mut app.admin().await).await;
    let body = app
        .gql(
            &token,
            "mutation($i: RestoreKnowledgeVersionInput!) { restoreKnowledgeVersion(input: $i) { id } }",
            json!({ "i": { "id": id, "number": 99 } }),
        )
        .await;
    assert_eq!(code(&body), "UNKNOWN_VERSION", "{body}");
    assert_eq!(common::fingerprint(&mut app.admin().await).await, before);
}

#[tokio::test]
async fn tags_are_made_on_save_renamed_deleted_and_counted() {
    let app = spawn_app().await;
    let (_, owner) = app.user("tia@example.com").await;
    let (_, other) = app.user("oli@example.com").await;
    let ws = app.create_workspace(&owner, "Tags").await;
    app.add_member(&owner, &ws, "oli@example.com", "MEMBER").await;
    let e = create(
        &app,
        &owner,
        json!({ "workspaceId": ws, "title": "A", "tags": ["Ops", "infra", "ops"] }),
    )
    .await;
    assert_eq!(e["tags"], json!(["infra", "Ops"]));
    create(
        &app,
        &owner,
        json!({ "workspaceId": ws, "title": "B", "tags": ["OPS"] }),
    )
    .await;
    // A draft's new tag names are its author's until the draft is published.
    let draft = create(
        &app,
        &owner,
        json!({ "workspaceId": ws, "title": "C", "tags": ["merger-talks"], "status": "DRAFT" }),
    )
    .await;
    const TAGS: &str = "query($w: ID!) { knowledgeTags(workspaceId: $w) { name entryCount } }";
    let tags = |token: &str| {
        let token = token.to_string();
        let (app, ws) = (&app, ws.clone());
        async move { app.gql_ok(&token, TAGS, json!({ "w": ws })).await["knowledgeTags"].clone() }
    };
    assert_eq!(
        tags(&owner).await,
        json!([{ "name": "infra", "entryCount": 1 }, { "name": "merger-talks", "entryCount": 1 }, { "name": "Ops", "entryCount": 2 }])
    );
    assert_eq!(
        tags(&other).await,
        json!([{ "name": "infra", "entryCount": 1 }, { "name": "Ops", "entryCount": 2 }])
    );
    assert_eq!(list_slugs(&app, &other, &ws, json!({ "tag": "ops" })).await, ["b", "a"]);
    let body = app
        .gql(&other, LIST, json!({ "w": ws, "f": { "tag": "merger-talks" } }))
        .await;
    assert_eq!(code(&body), "UNKNOWN_TAG", "{body}");
    app.gql_ok(
        &owner,
        &update_query(),
        json!({ "i": { "id": draft["id"], "status": "PUBLISHED" } }),
    )
    .await;
    assert_eq!(
        tags(&other).await[1],
        json!({ "name": "merger-talks", "entryCount": 1 })
    );

    let renamed = app
        .gql_ok(
            &other,
            "mutation($w: ID!) { renameKnowledgeTag(workspaceId: $w, name: \"ops\", newName: \"Operations\") { name entryCount } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(
        renamed["renameKnowledgeTag"],
        json!({ "name": "Operations", "entryCount": 2 })
    );
    let made = app
        .gql_ok(
            &other,
            "mutation($w: ID!) { createKnowledgeTag(workspaceId: $w, name: \"empty\") { name entryCount } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(made["createKnowledgeTag"], json!({ "name": "empty", "entryCount": 0 }));
    let body = app
        .gql(
            &other,
            "mutation($w: ID!) { createKnowledgeTag(workspaceId: $w, name: \"EMPTY\") { name } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(code(&body), "TAG_EXISTS", "{body}");
    app.gql_ok(
        &other,
        "mutation($w: ID!) { deleteKnowledgeTag(workspaceId: $w, name: \"infra\") }",
        json!({ "w": ws }),
    )
    .await;
    let names: Vec<Value> = tags(&other)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("empty"), json!("merger-talks"), json!("Operations")]);
    assert_eq!(get(&app, &other, &ws, "a").await["slug"], "a");
    let body = app
        .gql(
            &other,
            "mutation($w: ID!) { deleteKnowledgeTag(workspaceId: $w, name: \"infra\") }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(code(&body), "UNKNOWN_TAG", "{body}");
}

#[tokio::test]
async fn bad_input_gets_its_own_code_and_writes_nothing() {
    let app = spawn_app_with(|c| c.knowledge.max_content_bytes = 2048).await;
    let (_, token) = app.user("bea@example.com").await;
    let (_, guest) = app.user("gus@example.com").await;
    let ws = app.create_workspace(&token, "Strict").await;
    app.add_member(&token, &ws, "gus@example.com", "GUEST").await;
    let taken = create(&app, &token, json!({ "workspaceId": ws, "title": "Taken" })).await;
    let other_instance_ws = ws.replace(
        &ws.split(':').nth(1).unwrap().to_string(),
        "00000000-0000-0000-0000-000000000000",
    );
    let unknown_ws = format!(
        "{}:{}",
        ws.rsplit_once(':').unwrap().0,
        "00000000-0000-0000-0000-000000000001"
    );
    let q = create_query();
    let base = json!({ "workspaceId": ws, "title": "Fine", "content": "ok" });
    let with = |k: &str, v: Value| {
        let mut i = base.clone();
        i[k] = v;
        json!({ "i": i })
    };
    for (vars, code, field) in [
        (with("title", json!("   ")), "TITLE_EMPTY", "title"),
        (with("title", json!("x".repeat(501))), "TITLE_TOO_LONG", "title"),
        (with("title", json!("a\u{0}b")), "NUL_CHARACTER", "title"),
        (with("content", json!("y".repeat(2049))), "CONTENT_TOO_LARGE", "content"),
        (with("content", json!("nul \u{0}")), "NUL_CHARACTER", "content"),
        (with("slug", json!("Not A Slug")), "INVALID_SLUG", "slug"),
        (with("slug", json!("a--b")), "INVALID_SLUG", "slug"),
        (with("slug", json!("taken")), "SLUG_TAKEN", "slug"),
        (
            with("workspaceId", json!(unknown_ws)),
            "UNKNOWN_WORKSPACE",
            "workspaceId",
        ),
        (with("tags", json!(["ok", " "])), "INVALID_TAG", "tags"),
        (with("tags", json!(["x".repeat(51)])), "INVALID_TAG", "tags"),
        (
            with("tags", json!((0..21).map(|n| format!("t{n}")).collect::<Vec<_>>())),
            "TOO_MANY_TAGS",
            "tags",
        ),
        (with("summary", json!("s".repeat(2001))), "SUMMARY_TOO_LONG", "summary"),
        (with("message", json!("m".repeat(501))), "MESSAGE_TOO_LONG", "message"),
    ] {
        app.assert_refused(&token, &q, vars, code, field).await;
    }
    assert_eq!(taken["slug"], "taken");
    // A workspace of another instance is not this one's to write.
    let body = app.gql(&token, &q, with("workspaceId", json!(other_instance_ws))).await;
    assert_eq!(codes(&body).len(), 1, "{body}");
    // Updates are checked the same way.
    let u = update_query();
    app.assert_refused(
        &token,
        &u,
        json!({ "i": { "id": taken["id"], "title": "" } }),
        "TITLE_EMPTY",
        "title",
    )
    .await;
    app.assert_refused(
        &token,
        &u,
        json!({ "i": { "id": taken["id"], "content": "z".repeat(3000) } }),
        "CONTENT_TOO_LARGE",
        "content",
    )
    .await;
    // A guest reads but does not write.
    app.assert_refused(&guest, &q, json!({ "i": base }), "FORBIDDEN", "guests")
        .await;
    // Reads refuse what they cannot answer.
    for (query, vars, code) in [
        (SEARCH, json!({ "q": "  " }), "QUERY_EMPTY"),
        (SEARCH, json!({ "q": "q".repeat(501) }), "QUERY_TOO_LONG"),
        (
            SEARCH,
            json!({ "q": "x", "m": "SEMANTIC" }),
            "SEMANTIC_SEARCH_UNAVAILABLE",
        ),
        (SEARCH, json!({ "q": "x", "w": unknown_ws }), "UNKNOWN_WORKSPACE"),
        (LIST, json!({ "w": ws, "f": { "tag": "nope" } }), "UNKNOWN_TAG"),
        (GRAPH, json!({ "w": ws, "a": "taken", "d": 6 }), "INVALID_DEPTH"),
        (GRAPH, json!({ "w": ws, "a": "taken", "d": 0 }), "INVALID_DEPTH"),
        (GRAPH, json!({ "w": ws, "l": 0 }), "INVALID_LIMIT"),
        (GRAPH, json!({ "w": ws, "a": "missing" }), "UNKNOWN_ENTRY"),
        (GRAPH, json!({ "w": ws, "a": "Bad Slug" }), "INVALID_SLUG"),
    ] {
        let body = app.gql(&token, query, vars.clone()).await;
        assert_eq!(codes(&body), [code], "{vars}: {body}");
    }
}

#[tokio::test]
async fn content_html_and_snippets_carry_nothing_a_browser_would_run() {
    let app = spawn_app().await;
    let (_, token) = app.user("xena@example.com").await;
    let ws = app.create_workspace(&token, "XSS").await;
    let content = "<script>alert('x')</script>\n\n[click](javascript:alert(1)) <img src=x onerror=alert(1)>\n\n\
        [[<b onmouseover=alert(1)>evil</b>|<script>label</script>]] ![i](javascript:alert(2)) zebrafish";
    entry(&app, &token, &ws, "Attack", content).await;
    let html = get(&app, &token, &ws, "attack").await["contentHtml"]
        .as_str()
        .unwrap()
        .to_string();
    for tag in html
        .split('<')
        .skip(1)
        .map(|t| t.split('>').next().unwrap().to_lowercase())
    {
        let name = tag
            .trim_start_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(["p", "a", "img"].contains(&name.as_str()), "<{tag}> in {html}");
        // Attribute values are quoted and escaped; what is outside quotes is markup.
        let markup: String = tag.split('"').step_by(2).collect();
        assert!(!markup.contains(" on"), "<{tag}> in {html}");
        assert!(!tag.contains("javascript"), "<{tag}> in {html}");
    }
    assert!(html.contains("&lt;script&gt;"), "raw HTML shows as text: {html}");
    let hits = search(&app, &token, json!({ "q": "zebrafish", "w": ws })).await;
    let snippet = hits[0]["snippet"].as_str().unwrap();
    assert!(snippet.contains("<mark>zebrafish</mark>"), "{snippet}");
    assert!(!snippet.contains("<script") && !snippet.contains("<img"), "{snippet}");
}

#[tokio::test]
async fn another_workspace_and_another_authors_draft_never_show() {
    let app = spawn_app().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let (_, carol) = app.user("carol@example.com").await;
    let ws = app.create_workspace(&alice, "Shared").await;
    app.add_member(&alice, &ws, "bob@example.com", "MEMBER").await;
    let ws2 = app.create_workspace(&carol, "Elsewhere").await;

    entry(&app, &bob, &ws, "Public roadmap", "Quarterly zanzibar goals.").await;
    let draft = create(
        &app,
        &alice,
        json!({ "workspaceId": ws, "title": "Secret plan", "status": "DRAFT", "tags": ["hushhush"],
                "content": "The zanzibar acquisition. See [[Public roadmap]]." }),
    )
    .await;
    assert_eq!(draft["status"], "DRAFT");
    let draft_id = draft["id"].as_str().unwrap().to_string();
    // Bob links to the draft's title; for him it leads nowhere.
    entry(
        &app,
        &bob,
        &ws,
        "Bob notes",
        "About [[Secret plan]] and [[Public roadmap]].",
    )
    .await;
    let carols = entry(
        &app,
        &carol,
        &ws2,
        "Carol zanzibar",
        "Mentions [[Secret plan]] and [[Public roadmap]].",
    )
    .await;

    // The author sees her draft everywhere.
    assert!(
        list_slugs(&app, &alice, &ws, json!(null))
            .await
            .contains(&"secret-plan".to_string())
    );
    assert_eq!(
        slugs(&get(&app, &alice, &ws, "bob-notes").await["outgoingLinks"]),
        ["secret-plan", "public-roadmap"]
    );
    assert_eq!(
        hit_slugs(&search(&app, &alice, json!({ "q": "acquisition", "w": ws })).await),
        ["secret-plan"]
    );

    // Bob: lists, node, by slug, search (each mode), backlinks, broken links, tags, graph.
    let mut bob_list = list_slugs(&app, &bob, &ws, json!(null)).await;
    bob_list.sort();
    assert_eq!(bob_list, ["bob-notes", "public-roadmap"]);
    assert_eq!(
        list_slugs(&app, &bob, &ws, json!({ "status": "DRAFT" })).await,
        Vec::<String>::new()
    );
    assert_eq!(
        app.gql_ok(&bob, NODE, json!({ "id": draft_id })).await["node"],
        Value::Null
    );
    assert_eq!(get(&app, &bob, &ws, "secret-plan").await, Value::Null);
    for q in ["acquisition", "zanzibar", "secret plan", "secrt plan"] {
        for mode in ["TEXT", "HYBRID"] {
            let hits = search(&app, &bob, json!({ "q": q, "m": mode, "n": 50 })).await;
            let found = hit_slugs(&hits);
            assert!(!found.contains(&"secret-plan".to_string()), "{q} {mode}: {found:?}");
            assert!(!found.contains(&carols), "{q} {mode}: {found:?}");
            for h in &hits {
                let s = h["snippet"].as_str().unwrap_or_default();
                assert!(!s.contains("acquisition"), "{q}: {s}");
            }
        }
        let body = app.gql(&bob, SEARCH, json!({ "q": q, "m": "SEMANTIC" })).await;
        assert_eq!(code(&body), "SEMANTIC_SEARCH_UNAVAILABLE");
    }
    assert_eq!(
        slugs(&get(&app, &bob, &ws, "public-roadmap").await["backlinks"]),
        ["bob-notes"]
    );
    assert_eq!(
        slugs(&get(&app, &alice, &ws, "public-roadmap").await["backlinks"]),
        ["bob-notes", "secret-plan"]
    );
    let notes = get(&app, &bob, &ws, "bob-notes").await;
    assert_eq!(slugs(&notes["outgoingLinks"]), ["public-roadmap"]);
    assert!(
        notes["contentHtml"]
            .as_str()
            .unwrap()
            .contains(r#"class="wikilink broken""#)
    );
    let broken = app.gql_ok(&bob, BROKEN, json!({ "w": ws })).await["knowledgeBrokenLinks"].clone();
    assert_eq!(
        broken,
        json!([{ "target": "Secret plan", "label": null, "source": { "slug": "bob-notes" } }])
    );
    let bob_tags = app
        .gql_ok(
            &bob,
            "query($w: ID!) { knowledgeTags(workspaceId: $w) { name } }",
            json!({ "w": ws }),
        )
        .await;
    assert_eq!(bob_tags["knowledgeTags"], json!([]));
    let graph = app.gql_ok(&bob, GRAPH, json!({ "w": ws })).await["knowledgeGraph"].clone();
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 2, "{graph}");
    assert!(!graph.to_string().contains(&draft_id));
    let stats = app.gql_ok(&bob, STATS, json!({ "w": ws })).await["knowledgeGraphStats"].clone();
    assert_eq!(
        (
            stats["entries"].clone(),
            stats["links"].clone(),
            stats["brokenLinks"].clone()
        ),
        (json!(2), json!(1), json!(1))
    );
    let body = app.gql(&bob, GRAPH, json!({ "w": ws, "a": "secret-plan" })).await;
    assert_eq!(code(&body), "UNKNOWN_ENTRY");
    // Bob cannot edit or archive the draft.
    let body = app
        .gql(
            &bob,
            &update_query(),
            json!({ "i": { "id": draft_id, "title": "Mine" } }),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND");

    // Carol, of another workspace: nothing of the first, by any road.
    let body = app.gql(&carol, LIST, json!({ "w": ws })).await;
    assert_eq!(code(&body), "UNKNOWN_WORKSPACE");
    let pub_id = get(&app, &bob, &ws, "public-roadmap").await["id"].clone();
    assert_eq!(
        app.gql_ok(&carol, NODE, json!({ "id": pub_id })).await["node"],
        Value::Null
    );
    assert_eq!(
        hit_slugs(&search(&app, &carol, json!({ "q": "zanzibar", "n": 50 })).await),
        [carols.as_str()]
    );
    let carol_entry = get(&app, &carol, &ws2, &carols).await;
    assert_eq!(slugs(&carol_entry["outgoingLinks"]), Vec::<String>::new());
    assert_eq!(
        app.gql_ok(&carol, BROKEN, json!({ "w": ws2 })).await["knowledgeBrokenLinks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Once published, the draft shows to the workspace (and still not to Carol).
    app.gql_ok(
        &alice,
        &update_query(),
        json!({ "i": { "id": draft_id, "status": "PUBLISHED" } }),
    )
    .await;
    assert_eq!(
        slugs(&get(&app, &bob, &ws, "bob-notes").await["outgoingLinks"]),
        ["secret-plan", "public-roadmap"]
    );
    assert_eq!(
        app.gql_ok(&carol, NODE, json!({ "id": draft_id })).await["node"],
        Value::Null
    );
}

#[tokio::test]
async fn the_graph_whole_and_around_an_entry() {
    let app = spawn_app().await;
    let (_, token) = app.user("gia@example.com").await;
    let ws = app.create_workspace(&token, "Graph").await;
    // a -> b -> c -> d, e alone, f -> a.
    entry(&app, &token, &ws, "a", "[[b]] [[b|again]] [[nowhere]]").await;
    entry(&app, &token, &ws, "b", "[[c]]").await;
    entry(&app, &token, &ws, "c", "[[d]] [[c]]").await;
    entry(&app, &token, &ws, "d", "").await;
    entry(&app, &token, &ws, "e", "").await;
    entry(&app, &token, &ws, "f", "[[a]]").await;
    let slug_of = |graph: &Value, id: &Value| {
        graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| &n["id"] == id)
            .map(|n| n["slug"].as_str().unwrap().to_string())
            .unwrap()
    };
    let edges = |graph: &Value| {
        let mut e: Vec<(String, String)> = graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (slug_of(graph, &e["source"]), slug_of(graph, &e["target"])))
            .collect();
        e.sort();
        e
    };
    let nodes = |graph: &Value| {
        let mut n = slugs(&graph["nodes"]);
        n.sort();
        n
    };
    let whole = app.gql_ok(&token, GRAPH, json!({ "w": ws })).await["knowledgeGraph"].clone();
    assert_eq!(nodes(&whole), ["a", "b", "c", "d", "e", "f"]);
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(edges(&whole), pairs(&[("a", "b"), ("b", "c"), ("c", "d"), ("f", "a")]));
    assert_eq!(whole["orphans"].as_array().unwrap().len(), 1);
    assert_eq!(slug_of(&whole, &whole["orphans"][0]), "e");
    assert_eq!(whole["truncated"], false);

    let around = |slug: &str, depth: i64| {
        let (app, token, ws, slug) = (&app, token.clone(), ws.clone(), slug.to_string());
        async move {
            app.gql_ok(&token, GRAPH, json!({ "w": ws, "a": slug, "d": depth }))
                .await["knowledgeGraph"]
                .clone()
        }
    };
    assert_eq!(nodes(&around("b", 1).await), ["a", "b", "c"]);
    let two = around("b", 2).await;
    assert_eq!(nodes(&two), ["a", "b", "c", "d", "f"]);
    assert_eq!(edges(&two), pairs(&[("a", "b"), ("b", "c"), ("c", "d"), ("f", "a")]));
    assert_eq!(nodes(&around("e", 5).await), ["e"]);
    let limited = app
        .gql_ok(&token, GRAPH, json!({ "w": ws, "a": "b", "d": 5, "l": 3 }))
        .await["knowledgeGraph"]
        .clone();
    assert_eq!(limited["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(limited["truncated"], true);

    let stats = app.gql_ok(&token, STATS, json!({ "w": ws })).await["knowledgeGraphStats"].clone();
    assert_eq!(stats["entries"], 6);
    assert_eq!(stats["links"], 4);
    assert_eq!(stats["brokenLinks"], 1);
    assert_eq!(stats["orphans"], 1);
    assert!((stats["averageLinksPerEntry"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-9);
    // By degree, then by id (entries made in this order).
    assert_eq!(
        stats["mostConnected"],
        json!([{ "slug": "a", "degree": 2 }, { "slug": "b", "degree": 2 }, { "slug": "c", "degree": 2 },
               { "slug": "d", "degree": 1 }, { "slug": "f", "degree": 1 }])
    );
}

/// A labelled corpus: topics with their own vocabulary, entries that mix a
/// topic's words with common filler, and one query per topic.
const TOPICS: [(&str, [&str; 6], &str); 8] = [
    (
        "kubernetes",
        ["kubernetes", "pod", "cluster", "helm", "kubelet", "ingress"],
        "restart a crashing pod in the cluster",
    ),
    (
        "postgres",
        ["postgresql", "vacuum", "index", "replication", "wal", "autovacuum"],
        "vacuum and replication lag",
    ),
    (
        "billing",
        ["invoice", "refund", "payment", "subscription", "chargeback", "receipt"],
        "refund an invoice payment",
    ),
    (
        "hiring",
        ["candidate", "interview", "offer", "recruiter", "onboarding", "resume"],
        "interview a candidate",
    ),
    (
        "security",
        ["vulnerability", "cve", "patch", "firewall", "phishing", "audit"],
        "patch the vulnerability",
    ),
    (
        "frontend",
        ["react", "component", "css", "bundle", "webpack", "hydration"],
        "react component hydration",
    ),
    (
        "incident",
        ["outage", "pager", "postmortem", "escalation", "sev1", "rollback"],
        "outage postmortem escalation",
    ),
    (
        "design",
        ["typography", "palette", "wireframe", "figma", "mockup", "accessibility"],
        "wireframe mockup in figma",
    ),
];
const FILLER: [&str; 12] = [
    "team", "weekly", "notes", "process", "update", "plan", "review", "meeting", "document", "status", "owner", "draft",
];

/// Full text ranks a bounded number of candidates; those with every word
/// are taken first, so a word common to many entries cannot fill the bound
/// and leave out the entry that would rank first.
#[tokio::test]
async fn text_search_never_loses_the_entries_with_every_word_to_the_candidate_bound() {
    let app = spawn_app_with(|c| c.knowledge.max_search_candidates = 10).await;
    let (_, token) = app.user("pia@example.com").await;
    let ws = app.create_workspace(&token, "Corpus").await;
    for i in 0..30 {
        entry(&app, &token, &ws, &format!("Kettle {i}"), "The kettle boils water.").await;
    }
    let both = entry(&app, &token, &ws, "Descaling", "Descale the kettle with vinegar.").await;
    for i in 30..60 {
        entry(&app, &token, &ws, &format!("Kettle {i}"), "The kettle boils water.").await;
    }
    let hits = search(&app, &token, json!({ "q": "kettle vinegar", "w": ws, "n": 3 })).await;
    assert_eq!(hit_slugs(&hits)[0], both, "{hits:?}");
    assert_eq!(hits.len(), 3, "entries with some of the words follow");
    app.stop().await;
}

#[tokio::test]
async fn text_search_precision_at_5_on_a_labelled_corpus() {
    let app = spawn_app().await;
    let (_, token) = app.user("pia@example.com").await;
    let ws = app.create_workspace(&token, "Corpus").await;
    // Deterministic generation: entry i of topic t uses three of its words.
    let mut n = 0usize;
    for (t, (topic, words, _)) in TOPICS.iter().enumerate() {
        for i in 0..6 {
            let pick = |k: usize| words[(i + k * (t + 1)) % words.len()];
            let title = format!("{} {} {}", topic, pick(0), FILLER[(i + t) % FILLER.len()]);
            let content = format!(
                "{} {} {} {}. The {} {} covers {} and {}.",
                FILLER[(n * 7) % FILLER.len()],
                pick(1),
                FILLER[(n * 3 + 1) % FILLER.len()],
                pick(2),
                FILLER[(n * 5 + 2) % FILLER.len()],
                FILLER[(n * 11 + 3) % FILLER.len()],
                pick(3),
                pick(4)
            );
            create(
                &app,
                &token,
                json!({ "workspaceId": ws, "title": title, "slug": format!("{topic}-{i}"), "content": content }),
            )
            .await;
            n += 1;
        }
    }
    let mut total = 0.0;
    for (topic, _, query) in TOPICS {
        let hits = search(&app, &token, json!({ "q": query, "w": ws, "n": 5 })).await;
        let ranks: Vec<i64> = hits.iter().map(|h| h["rank"].as_i64().unwrap()).collect();
        assert_eq!(ranks, (1..=hits.len() as i64).collect::<Vec<_>>());
        let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        let relevant = hit_slugs(&hits)
            .iter()
            .filter(|s| s.starts_with(&format!("{topic}-")))
            .count();
        let precision = relevant as f64 / 5.0;
        println!("precision@5 TEXT {topic:<11} {query:<40} {precision:.2}");
        total += precision;
    }
    let mean = total / TOPICS.len() as f64;
    println!("precision@5 TEXT mean over {} queries: {mean:.3}", TOPICS.len());
    assert!(mean >= 0.8, "mean precision@5 {mean}");

    // A typo in a title word still finds it (by trigram similarity).
    let hits = search(&app, &token, json!({ "q": "kubernets", "w": ws, "n": 5 })).await;
    assert!(!hits.is_empty());
    assert!(
        hit_slugs(&hits).iter().all(|s| s.starts_with("kubernetes-")),
        "{hits:?}"
    );

    // HYBRID without a model answers from text and says so.
    let body = app
        .gql(
            &token,
            SEARCH,
            json!({ "q": "refund an invoice payment", "m": "HYBRID", "w": ws, "n": 5 }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(
        body["extensions"]["searchKnowledge"]["code"],
        "SEMANTIC_SEARCH_UNAVAILABLE"
    );
    assert_eq!(body["extensions"]["searchKnowledge"]["answeredMode"], "TEXT");
    assert_eq!(
        hit_slugs(body["data"]["searchKnowledge"].as_array().unwrap()),
        hit_slugs(
            &search(
                &app,
                &token,
                json!({ "q": "refund an invoice payment", "w": ws, "n": 5 })
            )
            .await
        )
    );

    // Filters narrow search and lists; pages follow each other.
    let page = app
        .gql_ok(&token, LIST, json!({ "w": ws, "o": "TITLE_ASC", "n": 20 }))
        .await["knowledgeEntries"]
        .clone();
    assert_eq!(page["totalCount"], 48);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let mut seen: Vec<String> = Vec::new();
    let mut after = Value::Null;
    loop {
        let p = app
            .gql_ok(&token, LIST, json!({ "w": ws, "o": "TITLE_ASC", "n": 20, "a": after }))
            .await["knowledgeEntries"]
            .clone();
        seen.extend(
            p["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["title"].as_str().unwrap().to_string()),
        );
        if p["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = p["pageInfo"]["endCursor"].clone();
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen.len(), 48);
    assert_eq!(seen, sorted);
    assert_eq!(
        list_slugs(&app, &token, &ws, json!({ "search": "chargeback" }))
            .await
            .len(),
        hit_slugs(&search(&app, &token, json!({ "q": "chargeback", "w": ws, "n": 50 })).await).len()
    );
}

/// `mosaic knowledge …` against the test instance's database.
async fn mosaic_knowledge(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .arg("knowledge")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.database_url)
        .env("MOSAIC_SECRET_KEY", "cli-test-secret-key-0123456789abcdef")
        .output()
        .await
        .expect("mosaic ran");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// (slug, title, content, tags) of every entry the token sees, by slug.
async fn snapshot(app: &TestApp, token: &str, ws: &str) -> Vec<Value> {
    let d = app
        .gql_ok(
            token,
            "query($w: ID!) { knowledgeEntries(workspaceId: $w, orderBy: TITLE_ASC, first: 100) {
                edges { node { slug title content tags status outgoingLinks { slug } } } } }",
            json!({ "w": ws }),
        )
        .await;
    let mut out: Vec<Value> = d["knowledgeEntries"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    out.sort_by_key(|e| e["slug"].as_str().unwrap().to_string());
    out
}

#[tokio::test]
async fn import_and_export_round_trip_with_links_between_files() {
    let app = spawn_app().await;
    let (_, token) = app.user("ivy@example.com").await;
    let ws = app.create_workspace(&token, "Imported").await;
    let ws2 = app.create_workspace(&token, "Copy").await;
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "design-notes.md",
            "---\ntitle: \"Design: notes\"\ntags: [arch, ops]\n---\nSee [[Runbook]] and [[glossary|the terms]].\n",
        ),
        ("runbook.md", "# Runbook\n\nBack to [[Design: notes]].\n"),
        ("Glossary.md", "---\ntitle: Glossary\nstatus: DRAFT\n---\nTerms.\n"),
        ("ignored.txt", "not Markdown"),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().to_str().unwrap();
    let (ok, err) = mosaic_knowledge(&app, &["import", path, "--workspace", &ws, "--user", "ivy@example.com"]).await;
    assert!(ok, "{err}");
    assert!(err.contains("3 created, 0 updated"), "{err}");
    let imported = snapshot(&app, &token, &ws).await;
    let summary: Vec<(String, Value, Value)> = imported
        .iter()
        .map(|e| {
            (
                e["slug"].as_str().unwrap().to_string(),
                e["tags"].clone(),
                e["outgoingLinks"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "design-notes".to_string(),
                json!(["arch", "ops"]),
                json!([{ "slug": "runbook" }, { "slug": "glossary" }])
            ),
            ("glossary".to_string(), json!([]), json!([])),
            ("runbook".to_string(), json!([]), json!([{ "slug": "design-notes" }])),
        ]
    );
    assert_eq!(imported[1]["status"], "DRAFT");

    // Export, then import the export into another workspace: the same entries.
    let out = tempfile::tempdir().unwrap();
    let out_path = out.path().to_str().unwrap();
    let (ok, err) = mosaic_knowledge(
        &app,
        &["export", out_path, "--workspace", &ws, "--user", "ivy@example.com"],
    )
    .await;
    assert!(ok, "{err}");
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["design-notes.md", "glossary.md", "runbook.md"]);
    let (ok, err) = mosaic_knowledge(
        &app,
        &["import", out_path, "--workspace", &ws2, "--user", "ivy@example.com"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(snapshot(&app, &token, &ws2).await, imported);
    // Importing again updates in place.
    let (ok, err) = mosaic_knowledge(
        &app,
        &["import", out_path, "--workspace", &ws, "--user", "ivy@example.com"],
    )
    .await;
    assert!(ok && err.contains("0 created, 3 updated"), "{err}");
    assert_eq!(snapshot(&app, &token, &ws).await, imported);

    // A bad file stops the import and nothing is written; so does a stranger.
    app.user("stranger@example.com").await;
    let before = common::fingerprint(&mut app.admin().await).await;
    std::fs::write(
        out.path().join("zz-bad.md"),
        format!("---\ntitle: \"{}\"\n---\n", "x".repeat(501)),
    )
    .unwrap();
    let (ok, err) = mosaic_knowledge(
        &app,
        &["import", out_path, "--workspace", &ws, "--user", "ivy@example.com"],
    )
    .await;
    assert!(
        !ok && err.contains("TITLE_TOO_LONG") && err.contains("zz-bad.md"),
        "{err}"
    );
    std::fs::remove_file(out.path().join("zz-bad.md")).unwrap();
    // A file larger than an entry may be is refused unread, by name.
    std::fs::write(out.path().join("zz-huge.md"), "a".repeat(3 << 20)).unwrap();
    let (ok, err) = mosaic_knowledge(
        &app,
        &["import", out_path, "--workspace", &ws, "--user", "ivy@example.com"],
    )
    .await;
    assert!(
        !ok && err.contains("zz-huge.md") && err.contains("knowledge.max_content_bytes"),
        "{err}"
    );
    std::fs::remove_file(out.path().join("zz-huge.md")).unwrap();
    let (ok, err) = mosaic_knowledge(
        &app,
        &["import", out_path, "--workspace", &ws, "--user", "stranger@example.com"],
    )
    .await;
    assert!(!ok && err.contains("--workspace"), "{err}");
    assert_eq!(common::fingerprint(&mut app.admin().await).await, before);
}

/// The draft rule is the policies', not the resolvers': raw SQL as the
/// application role, with a member's scope and with a peer grant's, sees
/// nothing of another author's draft in any knowledge table.
#[tokio::test]
async fn raw_sql_under_the_policies_hides_drafts_in_every_knowledge_table() {
    use sqlx::Connection;
    let app = spawn_app().await;
    let (alice_id, alice) = app.user("alice@example.com").await;
    let (bob_id, _) = app.user("bob@example.com").await;
    let ws = app.create_workspace(&alice, "Shared").await;
    app.add_member(&alice, &ws, "bob@example.com", "MEMBER").await;
    create(
        &app,
        &alice,
        json!({ "workspaceId": ws, "title": "Open", "content": "[[Hidden]]", "tags": ["pub"] }),
    )
    .await;
    let draft = create(
        &app,
        &alice,
        json!({ "workspaceId": ws, "title": "Hidden", "content": "[[Open]] [[x]]", "tags": ["secret"], "status": "DRAFT" }),
    )
    .await;
    let draft_id = common::local_id(draft["id"].as_str().unwrap());
    let ws_id = common::local_id(&ws);
    sqlx::query("INSERT INTO knowledge_embeddings (entry_id, workspace_id, model, vector, content_sha256) VALUES ($1, $2, 'm', '\\x00', decode(repeat('00', 32), 'hex'))")
        .bind(draft_id)
        .bind(ws_id)
        .execute(&mut app.admin().await)
        .await
        .unwrap();

    let mut conn = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
    sqlx::raw_sql("SET ROLE mosaic_app").execute(&mut conn).await.unwrap();
    // (setting, value): Bob, a member; a peer granted the workspace; Alice.
    let scopes = [
        ("mosaic.user_id", bob_id.to_string(), 0),
        ("mosaic.workspace_ids", format!("{{{ws_id}}}"), 0),
        ("mosaic.user_id", alice_id.to_string(), 1),
    ];
    for (setting, value, expected) in scopes {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config($1, $2, true)")
            .bind(setting)
            .bind(&value)
            .execute(&mut *tx)
            .await
            .unwrap();
        for (table, column) in [
            ("knowledge_entries", "id"),
            ("knowledge_versions", "entry_id"),
            ("knowledge_entry_tags", "entry_id"),
            ("knowledge_links", "source_id"),
            ("knowledge_embeddings", "entry_id"),
        ] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(DISTINCT {column}) FROM {table} WHERE {column} = $1"
            )))
            .bind(draft_id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            assert_eq!(n, expected, "{table} as {setting}={value}");
        }
        let secret: i64 = sqlx::query_scalar("SELECT count(*) FROM knowledge_tags WHERE name = 'secret'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(secret, expected, "the draft's new tag as {setting}={value}");
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM knowledge_entries WHERE title = 'Open'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(open, 1, "the published entry as {setting}={value}");
        // The link to the draft resolves only for its author.
        let resolved: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM knowledge_resolve($1, 'hidden') AS r(id)")
                .bind(ws_id)
                .fetch_optional(&mut *tx)
                .await
                .unwrap();
        assert_eq!(resolved.is_some(), expected == 1, "{setting}={value}");
        tx.rollback().await.unwrap();
    }

    // Bob can neither change the draft nor write a draft in Alice's name.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('mosaic.user_id', $1, true)")
        .bind(bob_id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let changed = sqlx::query("UPDATE knowledge_entries SET title = 'mine' WHERE id = $1")
        .bind(draft_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 0);
    let forged = sqlx::query(
        "INSERT INTO knowledge_entries (id, workspace_id, slug, title, content, status, author_id)
         VALUES (gen_random_uuid(), $1, 'forged', 'Forged', '', 'DRAFT', $2)",
    )
    .bind(ws_id)
    .bind(alice_id)
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(forged.to_string().contains("row-level security"), "{forged}");
    tx.rollback().await.unwrap();
}
