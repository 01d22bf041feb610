//! Semantic and hybrid knowledge search with the installed model
//! (`scripts/install-model`; `scripts/test` runs it): precision@5 per mode on
//! a generated labelled corpus, a query sharing no word with what it must
//! find, isolation in every mode, re-embedding after an update, and the
//! answers without a model.
//!
//! Embeddings are made off the request path; the tests wait on the
//! service's own barrier (`Embeddings::settled`), never on time.

use crate::common;

use common::{TestApp, code, spawn_app_with};
use serde_json::{Value, json};

const ENTRY_FIELDS: &str = "id slug title status";
const SEARCH: &str = "query($q: String!, $m: KnowledgeSearchMode, $w: ID, $f: KnowledgeFilter, $n: Int) {
    searchKnowledge(query: $q, mode: $m, workspaceId: $w, filter: $f, first: $n) {
        score rank snippet entry { slug title } } }";
const MODES: [&str; 3] = ["TEXT", "SEMANTIC", "HYBRID"];

/// An instance with the installed model.
async fn spawn_with_model() -> TestApp {
    spawn_app_with(|c| c.knowledge.model_dir = mosaic::embedding::default_model_dir()).await
}

/// Waits until every committed save has its current embedding.
async fn settled(app: &TestApp) {
    app.state
        .executor
        .knowledge
        .embeddings
        .as_ref()
        .expect("the model is installed (scripts/install-model)")
        .settled(&app.state.pool)
        .await
        .expect("embeddings settle");
}

async fn create(app: &TestApp, token: &str, input: Value) -> Value {
    let q =
        format!("mutation($i: CreateKnowledgeEntryInput!) {{ createKnowledgeEntry(input: $i) {{ {ENTRY_FIELDS} }} }}");
    app.gql_ok(token, &q, json!({ "i": input })).await["createKnowledgeEntry"].clone()
}

async fn update(app: &TestApp, token: &str, input: Value) -> Value {
    let q =
        format!("mutation($i: UpdateKnowledgeEntryInput!) {{ updateKnowledgeEntry(input: $i) {{ {ENTRY_FIELDS} }} }}");
    app.gql_ok(token, &q, json!({ "i": input })).await["updateKnowledgeEntry"].clone()
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

/// Topics, each with its own vocabulary, a query in its words, and a query
/// by meaning that shares none of them.
const TOPICS: [(&str, [&str; 6], &str, &str); 8] = [
    (
        "kubernetes",
        ["kubernetes", "pod", "cluster", "helm", "kubelet", "ingress"],
        "restart a crashing pod in the cluster",
        "container orchestration",
    ),
    (
        "postgres",
        ["postgresql", "vacuum", "index", "replication", "wal", "autovacuum"],
        "vacuum and replication lag",
        "relational database tuning",
    ),
    (
        "billing",
        ["invoice", "refund", "payment", "subscription", "chargeback", "receipt"],
        "refund an invoice payment",
        "customers paying money",
    ),
    (
        "hiring",
        ["candidate", "interview", "offer", "recruiter", "onboarding", "resume"],
        "interview a candidate",
        "recruiting new employees",
    ),
    (
        "security",
        ["vulnerability", "cve", "patch", "firewall", "phishing", "audit"],
        "patch the vulnerability",
        "defending against hackers",
    ),
    (
        "frontend",
        ["react", "component", "css", "bundle", "webpack", "hydration"],
        "react component hydration",
        "browser user interface code",
    ),
    (
        "incident",
        ["outage", "pager", "postmortem", "escalation", "sev1", "rollback"],
        "outage postmortem escalation",
        "production went down overnight",
    ),
    (
        "design",
        ["typography", "palette", "wireframe", "figma", "mockup", "accessibility"],
        "wireframe mockup in figma",
        "visual look of screens",
    ),
];
const FILLER: [&str; 12] = [
    "team", "weekly", "notes", "process", "update", "plan", "review", "meeting", "document", "status", "owner", "draft",
];

/// Six entries per topic, each mixing three of its words with filler.
async fn corpus(app: &TestApp, token: &str, ws: &str) {
    let mut n = 0usize;
    for (t, (topic, words, _, _)) in TOPICS.iter().enumerate() {
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
                app,
                token,
                json!({ "workspaceId": ws, "title": title, "slug": format!("{topic}-{i}"), "content": content }),
            )
            .await;
            n += 1;
        }
    }
}

fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn knowledge_search_precision_at_5_per_mode_on_a_labelled_corpus() {
    let app = spawn_with_model().await;
    let (_, token) = app.user("pia@example.com").await;
    let ws = app.create_workspace(&token, "Corpus").await;
    corpus(&app, &token, &ws).await;
    // An entry no corpus query is about, found by meaning alone.
    create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "Feline nutrition", "slug": "feline-nutrition",
                "content": "Cats need meat-based diets; kittens eat several small meals daily." }),
    )
    .await;
    settled(&app).await;

    // precision@5 for each mode, on the topic's own words and on its meaning.
    let mut means = Vec::new();
    for mode in MODES {
        for by_meaning in [false, true] {
            let mut total = 0.0;
            for (topic, _, by_words, meaning) in TOPICS {
                let query = if by_meaning { meaning } else { by_words };
                let hits = search(&app, &token, json!({ "q": query, "m": mode, "w": ws, "n": 5 })).await;
                let ranks: Vec<i64> = hits.iter().map(|h| h["rank"].as_i64().unwrap()).collect();
                assert_eq!(ranks, (1..=hits.len() as i64).collect::<Vec<_>>(), "{mode} {query}");
                let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
                assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{mode} {query} {scores:?}");
                assert!(hits.iter().all(|h| h["snippet"].is_string()), "{mode} {query} {hits:?}");
                let relevant = hit_slugs(&hits)
                    .iter()
                    .filter(|s| s.starts_with(&format!("{topic}-")))
                    .count();
                let precision = relevant as f64 / 5.0;
                let kind = if by_meaning { "meaning" } else { "words" };
                println!("precision@5 {mode:<8} {kind:<7} {topic:<11} {query:<40} {precision:.2}");
                total += precision;
            }
            let mean = total / TOPICS.len() as f64;
            let kind = if by_meaning { "meaning" } else { "words" };
            println!(
                "precision@5 {mode:<8} {kind:<7} mean over {} queries: {mean:.3}",
                TOPICS.len()
            );
            means.push(((mode, by_meaning), mean));
        }
    }
    let mean = |mode: &str, by_meaning: bool| means.iter().find(|m| m.0 == (mode, by_meaning)).unwrap().1;
    // Floors a little below what was measured (the model is deterministic:
    // TEXT 0.90, SEMANTIC 0.95, HYBRID 0.95 by words; by meaning SEMANTIC
    // and HYBRID 0.925, TEXT 0.075), far above chance (6 of 50 entries).
    assert!(mean("TEXT", false) >= 0.8, "{means:?}");
    assert!(mean("SEMANTIC", false) >= 0.85, "{means:?}");
    assert!(mean("HYBRID", false) >= 0.85, "{means:?}");
    assert!(mean("SEMANTIC", true) >= 0.8, "{means:?}");
    assert!(mean("HYBRID", true) >= 0.8, "{means:?}");
    // Queries by meaning share no word with the topic's vocabulary, so text
    // search has little to go on; semantic search does better.
    assert!(mean("SEMANTIC", true) > mean("TEXT", true), "{means:?}");

    // A query sharing no word with the entry it must find: text search
    // cannot find it; semantic and hybrid put it in the top 3.
    let query = "what food suits a pet kitty";
    let entry_words = words("Feline nutrition Cats need meat-based diets; kittens eat several small meals daily.");
    assert!(words(query).iter().all(|w| !entry_words.contains(w)));
    let by_text = search(&app, &token, json!({ "q": query, "m": "TEXT", "w": ws, "n": 3 })).await;
    assert!(
        !hit_slugs(&by_text).contains(&"feline-nutrition".to_string()),
        "{by_text:?}"
    );
    for mode in ["SEMANTIC", "HYBRID"] {
        let hits = search(&app, &token, json!({ "q": query, "m": mode, "w": ws, "n": 3 })).await;
        assert!(
            hit_slugs(&hits).contains(&"feline-nutrition".to_string()),
            "{mode}: {hits:?}"
        );
    }
    // A semantic hit without a word match gets the content's start as snippet.
    let hits = search(&app, &token, json!({ "q": query, "m": "SEMANTIC", "w": ws, "n": 1 })).await;
    assert_eq!(hits[0]["entry"]["slug"], "feline-nutrition");
    assert_eq!(
        hits[0]["snippet"],
        "Cats need meat-based diets; kittens eat several small meals daily."
    );
    assert!(hits[0]["score"].as_f64().unwrap() > 0.2 && hits[0]["score"].as_f64().unwrap() <= 1.0);
    // Filters apply to every mode: a tag nobody carries finds nothing.
    let tagged = json!({ "workspaceId": ws, "title": "Tagged kitten", "slug": "tagged-kitten",
                         "tags": ["pets"], "content": "Kittens and their care." });
    create(&app, &token, tagged).await;
    settled(&app).await;
    for mode in MODES {
        let hits = search(
            &app,
            &token,
            json!({ "q": "kitten care", "m": mode, "w": ws, "f": { "tag": "pets" }, "n": 5 }),
        )
        .await;
        assert_eq!(hit_slugs(&hits), ["tagged-kitten"], "{mode}");
    }

    // Bad input is refused with its own code, in each mode.
    for mode in MODES {
        for (q, n, expected) in [
            ("   ", 5, "QUERY_EMPTY"),
            (&"x".repeat(10_000) as &str, 5, "QUERY_TOO_LONG"),
            ("kitten", 101, "BAD_USER_INPUT"),
            ("kitten", 100_000, "QUERY_TOO_COMPLEX"),
            ("kitten", -1, "BAD_USER_INPUT"),
        ] {
            let body = app
                .gql(&token, SEARCH, json!({ "q": q, "m": mode, "w": ws, "n": n }))
                .await;
            assert_eq!(code(&body), expected, "{mode} {n}: {body}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn knowledge_search_semantic_and_hybrid_never_show_other_workspaces_drafts_or_archived() {
    let app = spawn_with_model().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let (_, carol) = app.user("carol@example.com").await;
    let ws = app.create_workspace(&alice, "Shared").await;
    app.add_member(&alice, &ws, "bob@example.com", "MEMBER").await;
    let ws2 = app.create_workspace(&carol, "Elsewhere").await;

    // Every entry is about the same thing, so only visibility tells them apart.
    let text = "Herds of zebras migrate across the savanna in search of fresh grass.";
    create(
        &app,
        &bob,
        json!({ "workspaceId": ws, "title": "Zebra migration", "slug": "public", "content": text }),
    )
    .await;
    create(
        &app,
        &alice,
        json!({ "workspaceId": ws, "title": "Zebra migration notes", "slug": "alices-draft",
                "status": "DRAFT", "content": text }),
    )
    .await;
    let archived = create(
        &app,
        &bob,
        json!({ "workspaceId": ws, "title": "Old zebra migration", "slug": "archived", "content": text }),
    )
    .await;
    app.gql_ok(
        &bob,
        "mutation($id: ID!) { archiveKnowledgeEntry(id: $id) { status } }",
        json!({ "id": archived["id"] }),
    )
    .await;
    create(
        &app,
        &carol,
        json!({ "workspaceId": ws2, "title": "Zebra migration elsewhere", "slug": "carols", "content": text }),
    )
    .await;
    settled(&app).await;

    let query = "animals wandering over grasslands";
    for mode in ["SEMANTIC", "HYBRID"] {
        for w in [json!(ws), json!(null)] {
            // Bob: his workspace's published entry only.
            let hits = search(&app, &bob, json!({ "q": query, "m": mode, "w": w, "n": 50 })).await;
            assert_eq!(hit_slugs(&hits), ["public"], "{mode} {w}");
            // Alice also sees her draft: it was embedded and would show if allowed.
            let mut mine = hit_slugs(&search(&app, &alice, json!({ "q": query, "m": mode, "w": w, "n": 50 })).await);
            mine.sort();
            assert_eq!(mine, ["alices-draft", "public"], "{mode} {w}");
            // Carol: her own workspace only.
            let carols_w = if w.is_null() { json!(null) } else { json!(ws2) };
            let hits = search(&app, &carol, json!({ "q": query, "m": mode, "w": carols_w, "n": 50 })).await;
            assert_eq!(hit_slugs(&hits), ["carols"], "{mode} {w}");
        }
        // Another workspace by id is refused, not searched.
        let body = app
            .gql(&carol, SEARCH, json!({ "q": query, "m": mode, "w": ws, "n": 5 }))
            .await;
        assert_eq!(code(&body), "UNKNOWN_WORKSPACE", "{body}");
        // Asking for drafts by status shows none of another author's.
        let hits = search(
            &app,
            &bob,
            json!({ "q": query, "m": mode, "w": ws, "f": { "status": "DRAFT" }, "n": 50 }),
        )
        .await;
        assert!(hits.is_empty(), "{mode}: {hits:?}");
    }
    app.stop().await;
}

/// The index ranks vectors in memory and PostgreSQL keeps the visible ones:
/// when the nearest are all hidden from the caller (more of them than the
/// first ranking is deep), a deeper ranking finds what the caller may see.
#[tokio::test]
async fn knowledge_search_semantic_looks_deeper_when_the_nearest_are_hidden() {
    let app = spawn_with_model().await;
    let (_, alice) = app.user("alice@example.com").await;
    let (_, bob) = app.user("bob@example.com").await;
    let ws = app.create_workspace(&alice, "Shared").await;
    app.add_member(&alice, &ws, "bob@example.com", "MEMBER").await;
    for i in 0..45 {
        create(
            &app,
            &alice,
            json!({ "workspaceId": ws, "title": format!("Zebra migration {i}"), "status": "DRAFT",
                    "content": "Herds of zebras migrate across the savanna in search of fresh grass." }),
        )
        .await;
    }
    create(
        &app,
        &bob,
        json!({ "workspaceId": ws, "title": "Cattle", "slug": "cattle",
                "content": "Cows graze in a field on a farm.", "tags": ["farm"] }),
    )
    .await;
    create(
        &app,
        &bob,
        json!({ "workspaceId": ws, "title": "Compilers", "slug": "compilers",
                "content": "A compiler turns source code into machine code." }),
    )
    .await;
    settled(&app).await;
    let query = "zebras wandering over grasslands";
    for mode in ["SEMANTIC", "HYBRID"] {
        // Alice's drafts are nearest, but Bob sees only his two entries, the
        // animal first.
        let hits = search(&app, &bob, json!({ "q": query, "m": mode, "w": ws, "n": 1 })).await;
        assert_eq!(hit_slugs(&hits), ["cattle"], "{mode}");
        let hits = search(&app, &bob, json!({ "q": query, "m": mode, "n": 5 })).await;
        assert_eq!(hit_slugs(&hits), ["cattle", "compilers"], "{mode}");
        // A filter is PostgreSQL's to apply too.
        let hits = search(
            &app,
            &bob,
            json!({ "q": query, "m": mode, "w": ws, "f": { "tag": "farm" }, "n": 5 }),
        )
        .await;
        assert_eq!(hit_slugs(&hits), ["cattle"], "{mode}");
        // Alice sees her drafts first.
        let hits = search(&app, &alice, json!({ "q": query, "m": mode, "w": ws, "n": 3 })).await;
        assert!(
            hit_slugs(&hits).iter().all(|s| s.starts_with("zebra-migration")),
            "{mode}: {hits:?}"
        );
    }
    app.stop().await;
}

/// An entry's stored embeddings: (vector, digest of its text, when written).
async fn stored(conn: &mut sqlx::PgConnection, id: uuid::Uuid) -> Vec<(Vec<u8>, Vec<u8>, time::OffsetDateTime)> {
    sqlx::query_as("SELECT vector, content_sha256, updated_at FROM knowledge_embeddings WHERE entry_id = $1")
        .bind(id)
        .fetch_all(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn knowledge_search_an_updated_entry_is_embedded_again_and_found_by_its_new_meaning() {
    let app = spawn_with_model().await;
    let (_, token) = app.user("uma@example.com").await;
    let ws = app.create_workspace(&token, "Changes").await;
    let entry = create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "Weekend plans", "slug": "plans",
                "content": "Boil the spaghetti, simmer a tomato sauce with basil and garlic." }),
    )
    .await;
    create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "Garden", "slug": "garden",
                "content": "Water the roses and pull the weeds by the fence." }),
    )
    .await;
    create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "Car", "slug": "car",
                "content": "The engine needs new oil and the tyres need air." }),
    )
    .await;
    settled(&app).await;
    let first = |hits: Vec<Value>| hits[0]["entry"]["slug"].as_str().unwrap().to_string();
    let cooking = json!({ "q": "italian noodle dinner recipe", "m": "SEMANTIC", "w": ws, "n": 3 });
    let sailing = json!({ "q": "ocean voyage on a yacht", "m": "SEMANTIC", "w": ws, "n": 3 });
    assert_eq!(first(search(&app, &token, cooking.clone()).await), "plans");
    assert_ne!(first(search(&app, &token, sailing.clone()).await), "plans");

    let mut admin = app.admin().await;
    let id = common::local_id(entry["id"].as_str().unwrap());
    let before = stored(&mut admin, id).await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].0.len(), 384 * 4);

    update(
        &app,
        &token,
        json!({ "id": entry["id"],
                "content": "Hoist the sails and cross the sea to the islands, steering by the stars." }),
    )
    .await;
    settled(&app).await;
    assert_eq!(first(search(&app, &token, sailing).await), "plans");
    assert_ne!(first(search(&app, &token, cooking).await), "plans");
    let after = stored(&mut admin, id).await;
    assert_eq!(after.len(), 1, "one embedding per entry and model");
    assert_ne!(after[0].0, before[0].0);
    assert_ne!(after[0].1, before[0].1);

    // A save that leaves the text as it was keeps the embedding as it was
    // (same digest): saved after it, another entry's new text settling
    // means the worker has seen the first save too (it works in order).
    update(&app, &token, json!({ "id": entry["id"], "tags": ["travel"] })).await;
    let car = search(&app, &token, json!({ "q": "engine oil", "m": "TEXT", "w": ws, "n": 1 })).await;
    assert_eq!(car[0]["entry"]["slug"], "car");
    let car_id: Value = app
        .gql_ok(
            &token,
            "query($w: ID!) { knowledgeEntry(workspaceId: $w, slug: \"car\") { id } }",
            json!({ "w": ws }),
        )
        .await["knowledgeEntry"]["id"]
        .clone();
    update(
        &app,
        &token,
        json!({ "id": car_id, "content": "The bicycle chain needs grease." }),
    )
    .await;
    settled(&app).await;
    assert_eq!(stored(&mut admin, id).await, after);
    app.stop().await;
}

#[tokio::test]
async fn knowledge_search_without_a_model_semantic_is_refused_and_hybrid_says_text_only() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_path_buf();
    let app = spawn_app_with(|c| c.knowledge.model_dir = dir).await;
    assert!(app.state.executor.knowledge.embeddings.is_none());
    let (_, token) = app.user("nia@example.com").await;
    let ws = app.create_workspace(&token, "Plain").await;
    create(
        &app,
        &token,
        json!({ "workspaceId": ws, "title": "Zebra facts", "slug": "zebra", "content": "Zebras have stripes." }),
    )
    .await;

    let body = app
        .gql(
            &token,
            SEARCH,
            json!({ "q": "zebra stripes", "m": "SEMANTIC", "w": ws }),
        )
        .await;
    assert_eq!(code(&body), "SEMANTIC_SEARCH_UNAVAILABLE", "{body}");
    assert!(
        body["data"].is_null() || body["data"]["searchKnowledge"].is_null(),
        "{body}"
    );

    let body = app
        .gql(&token, SEARCH, json!({ "q": "zebra stripes", "m": "HYBRID", "w": ws }))
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let note = &body["extensions"]["searchKnowledge"];
    assert_eq!(note["code"], "SEMANTIC_SEARCH_UNAVAILABLE", "{body}");
    assert_eq!(note["requestedMode"], "HYBRID");
    assert_eq!(note["answeredMode"], "TEXT");
    assert_eq!(
        hit_slugs(body["data"]["searchKnowledge"].as_array().unwrap()),
        ["zebra"]
    );
    // TEXT carries no such note.
    let body = app
        .gql(&token, SEARCH, json!({ "q": "zebra", "m": "TEXT", "w": ws }))
        .await;
    assert!(body["extensions"]["searchKnowledge"].is_null(), "{body}");
    app.stop().await;

    // A directory holding a broken model refuses to start, naming the file.
    let broken = tempfile::tempdir().unwrap();
    let installed = mosaic::embedding::default_model_dir();
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(installed.join(f), broken.path().join(f)).unwrap();
    }
    std::fs::write(broken.path().join("config.json"), "{ not json").unwrap();
    let mut config = common::test_config(common::fresh_database().await);
    config.knowledge.model_dir = broken.path().to_path_buf();
    let err = match mosaic::app::Application::build(config).await {
        Ok(_) => panic!("an instance with a broken model must not start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains(&broken.path().join("config.json").display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn knowledge_search_entries_saved_without_the_worker_are_embedded_by_the_sweeps() {
    // Entries saved while the instance had no model...
    let plain = common::spawn_app().await;
    let database_url = plain.database_url.clone();
    let (user, token) = plain.user("ida@example.com").await;
    let ws = plain.create_workspace(&token, "Backfill").await;
    create(
        &plain,
        &token,
        json!({ "workspaceId": ws, "title": "Zebra facts", "slug": "zebra",
                "content": "Zebras are striped horses of the African plains." }),
    )
    .await;
    plain.stop().await;

    // ...are embedded by the sweep at start, with a queue of one.
    let mut config = common::test_config(database_url);
    config.knowledge.model_dir = mosaic::embedding::default_model_dir();
    config.knowledge.embedding_queue = 1;
    let app = common::spawn_config(config).await;
    settled(&app).await;
    let hits = search(
        &app,
        &token,
        json!({ "q": "striped animals", "m": "SEMANTIC", "w": ws, "n": 1 }),
    )
    .await;
    assert_eq!(hit_slugs(&hits), ["zebra"]);

    // Forty saves committed at once overflow that queue: the dropped ones
    // are left to a sweep, and the saves themselves are not held up.
    let mut admin = app.admin().await;
    let ws_id = common::local_id(&ws);
    sqlx::query(
        "INSERT INTO knowledge_entries (id, workspace_id, slug, title, content, status, author_id, created_by, updated_by)
         SELECT gen_random_uuid(), $1, 'bulk-' || i, 'Bulk ' || i, 'Entry number ' || i || ' about lighthouses.',
                'PUBLISHED', $2, $2, $2
         FROM generate_series(1, 40) i",
    )
    .bind(ws_id)
    .bind(user)
    .execute(&mut admin)
    .await
    .unwrap();
    settled(&app).await;
    let embedded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM knowledge_embeddings k JOIN knowledge_entries e ON e.id = k.entry_id
         WHERE e.workspace_id = $1",
    )
    .bind(ws_id)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(embedded, 41);
    let hits = search(
        &app,
        &token,
        json!({ "q": "coastal beacon towers", "m": "SEMANTIC", "w": ws, "n": 50 }),
    )
    .await;
    assert_eq!(hits.len(), 41, "every entry has a vector in the index");
    assert!(
        hit_slugs(&hits[..40]).iter().all(|s| s.starts_with("bulk-")),
        "{hits:?}"
    );
    app.stop().await;
}
