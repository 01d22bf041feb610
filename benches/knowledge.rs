//! The knowledge base at scale (`scripts/bench knowledge`), through GraphQL
//! over HTTP on loopback against one in-process instance with the model
//! `scripts/install-model` installs:
//!
//! * search p50/p99 per mode (TEXT, SEMANTIC, HYBRID) at 10,000 and then
//!   100,000 entries in one workspace, as a member who sees them all;
//! * the graph of 1,000 nodes (`knowledgeGraph(limit: 1000)`) at 10,000;
//! * saving an entry with 20 links (p50);
//! * embedding throughput (entries per second, in the worker's batches) and
//!   the resident memory the model and the vector index add.
//!
//! Entries are seeded with bulk SQL (words drawn from a fixed vocabulary,
//! two links each). Their vectors are random unit vectors written with the
//! entries (and the digest of their text, so the worker has nothing to
//! redo): the model would need hours of CPU for 100,000 entries here, and
//! an exact scan costs the same whatever the vectors hold. Queries are
//! embedded by the real model. `KNOWLEDGE_BENCH_RUNS` (default 200) sets the
//! searches per case.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

#[path = "support/db.rs"]
mod db;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/stats.rs"]
#[allow(dead_code)]
mod stats;
use sample::{XorShift, memory};

const DIMENSIONS: usize = 384;
const VOCABULARY: &str = "kubernetes pod cluster helm kubelet ingress postgresql vacuum index replication wal \
    autovacuum invoice refund payment subscription chargeback receipt candidate interview offer recruiter \
    onboarding resume vulnerability patch firewall phishing audit react component css bundle webpack \
    hydration outage pager postmortem escalation rollback typography palette wireframe figma mockup \
    accessibility team weekly notes process update plan review meeting document status owner draft \
    release deploy pipeline build test coverage latency throughput cache queue worker schedule budget \
    roadmap quarter goal metric dashboard alert incident customer support ticket contract vendor license \
    storage backup restore migration schema query table column network router dns certificate token \
    session login password policy compliance privacy retention archive export import search ranking";
const QUERIES: [&str; 10] = [
    "restart a crashing pod in the cluster",
    "vacuum and replication lag",
    "refund an invoice payment",
    "interview a candidate",
    "patch the vulnerability behind the firewall",
    "react component hydration",
    "outage postmortem escalation",
    "wireframe mockup in figma",
    "backup and restore the storage",
    "certificate expired on the router",
];

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

struct Bench {
    base: String,
    http: reqwest::Client,
    token: String,
    ws: String,
    ws_id: Uuid,
    user: Uuid,
    admin: PgConnection,
    runs: usize,
}

async fn run() {
    mosaic::federation::tls::install_crypto_provider();
    let runs = stats::env_usize("KNOWLEDGE_BENCH_RUNS", 200);
    let database_url = db::fresh_database("knowledge_bench").await;
    let mut config = mosaic::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(database_url.clone()),
        instance_name: "bench".into(),
        secret_key: Some(mosaic::secrets::Secret(
            "bench-secret-key-that-is-long-enough-0123456789".into(),
        )),
        ..mosaic::config::Config::default()
    };
    config.knowledge.model_dir = mosaic::embedding::default_model_dir();
    let rss_before = memory("VmRSS");
    let app = mosaic::app::Application::build(config)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nrun scripts/install-model first (scripts/bench knowledge does)"));
    let rss_model = memory("VmRSS");
    let state = app.state.clone();
    let base = app.base_url().to_string();
    tokio::spawn(app.run(std::future::pending()));
    let emb = state.executor.knowledge.embeddings.clone().expect("the model loaded");

    let mut admin = PgConnection::connect(&database_url).await.unwrap();
    let user = mosaic::auth::users::create(&mut admin, "bench@example.com", None, false)
        .await
        .unwrap();
    let token = mosaic::auth::tokens::create(&mut admin, "bench@example.com", None)
        .await
        .unwrap();
    let mut b = Bench {
        base,
        http: reqwest::Client::new(),
        token,
        ws: String::new(),
        ws_id: Uuid::nil(),
        user,
        admin,
        runs,
    };
    let ws = b
        .gql(
            "mutation { createWorkspace(input: { name: \"Bench\" }) { id } }",
            json!({}),
        )
        .await["createWorkspace"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    b.ws_id = sqlx::query_scalar("SELECT id FROM workspaces WHERE name = 'Bench'")
        .fetch_one(&mut b.admin)
        .await
        .unwrap();
    b.ws = ws;
    println!(
        "model            RSS {rss_before:.0} -> {rss_model:.0} MiB (+{:.0}) at start, peak {:.0} MiB",
        rss_model - rss_before,
        memory("VmHWM")
    );

    // Embedding throughput: entry-like texts, in the worker's batches of 32.
    let texts: Vec<String> = (0..256).map(entry_text).collect();
    emb.embed(texts[..8].to_vec()).await.unwrap(); // warm-up, untimed
    let started = Instant::now();
    for chunk in texts.chunks(32) {
        emb.embed(chunk.to_vec()).await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "embedding        {} entries ({} chars each) in {secs:.2} s: {:.1} entries/s",
        texts.len(),
        texts[0].len(),
        texts.len() as f64 / secs
    );

    for total in [10_000, 100_000] {
        let rss = memory("VmRSS");
        let started = Instant::now();
        b.seed(total).await;
        let seeded = started.elapsed();
        let started = Instant::now();
        emb.load_index(&state.pool).await.unwrap();
        println!(
            "seed {total:>6}     {:.1} s (SQL), index {} vectors loaded in {:.2} s, RSS +{:.0} MiB",
            seeded.as_secs_f64(),
            emb.index.len(),
            started.elapsed().as_secs_f64(),
            memory("VmRSS") - rss
        );
        // The saves' notifications reach the worker, which finds nothing to
        // redo; wait for it so it does not run beside the searches.
        emb.settled(&state.pool).await.unwrap();
        for mode in ["TEXT", "SEMANTIC", "HYBRID"] {
            b.search(total, mode).await;
        }
        if total == 10_000 {
            b.graph().await;
            b.save_with_links().await;
        }
    }
}

impl Bench {
    async fn gql(&self, query: &str, variables: Value) -> Value {
        let body: Value = self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }

    /// Adds entries up to `total`, each with two links and a vector.
    async fn seed(&mut self, total: usize) {
        let have: i64 = sqlx::query_scalar("SELECT count(*) FROM knowledge_entries WHERE slug LIKE 'e-%'")
            .fetch_one(&mut self.admin)
            .await
            .unwrap();
        let vocabulary: Vec<&str> = VOCABULARY.split_whitespace().collect();
        let mut tx = self.admin.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO knowledge_entries (id, workspace_id, slug, title, content, status, author_id, created_by, updated_by)
             SELECT gen_random_uuid(), $1, 'e-' || i,
                    'Entry ' || i || ' ' || w[1 + (i * 7) % n] || ' ' || w[1 + (i * 13) % n],
                    (SELECT string_agg(w[1 + ((i * 31 + j * 17 + j * j * 3) % n)], ' ') FROM generate_series(1, 80) j)
                        || ' See [[e-' || (i * 37) % $3 || ']] and [[e-' || (i * 101) % $3 || ']].',
                    'PUBLISHED', $4, $4, $4
             FROM generate_series($2::int, $3::int - 1) i, (SELECT $5::text[] AS w, cardinality($5::text[]) AS n) v",
        )
        .bind(self.ws_id)
        .bind(have as i32)
        .bind(total as i32)
        .bind(self.user)
        .bind(&vocabulary)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO knowledge_links (workspace_id, source_id, position, target, target_key)
             SELECT e.workspace_id, e.id, p.pos, p.t, p.t
             FROM (SELECT e.workspace_id, e.id, substr(e.slug, 3)::int AS n FROM knowledge_entries e
                   WHERE e.workspace_id = $1 AND e.slug ~ '^e-[0-9]+$' OFFSET 0) e,
                  LATERAL (VALUES (0, 'e-' || (e.n * 37) % $2), (1, 'e-' || (e.n * 101) % $2)) AS p(pos, t)
             WHERE e.n >= $3",
        )
        .bind(self.ws_id)
        .bind(total as i32)
        .bind(have as i32)
        .execute(&mut *tx)
        .await
        .unwrap();
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT e.id FROM knowledge_entries e LEFT JOIN knowledge_embeddings k ON k.entry_id = e.id
             WHERE k.entry_id IS NULL",
        )
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        let model = mosaic::knowledge::embeddings::model_name();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ total as u64);
        for chunk in ids.chunks(5000) {
            let vectors: Vec<Vec<u8>> = chunk
                .iter()
                .map(|_| mosaic::embedding::vectors::encode(&rng.unit_vector(DIMENSIONS)))
                .collect();
            sqlx::query(
                "INSERT INTO knowledge_embeddings (entry_id, workspace_id, model, vector, content_sha256)
                 SELECT e.id, e.workspace_id, $3, v.vector,
                        sha256(convert_to(knowledge_embedding_text(e.title, e.content), 'UTF8'))
                 FROM unnest($1::uuid[], $2::bytea[]) AS v(id, vector) JOIN knowledge_entries e ON e.id = v.id",
            )
            .bind(chunk)
            .bind(&vectors)
            .bind(&model)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        // What autovacuum would have done by the time anyone searches.
        sqlx::query("VACUUM ANALYZE knowledge_entries, knowledge_links, knowledge_embeddings")
            .execute(&mut self.admin)
            .await
            .unwrap();
    }

    async fn search(&self, total: usize, mode: &str) {
        let q = "query($q: String!, $m: KnowledgeSearchMode, $w: ID) {
            searchKnowledge(query: $q, mode: $m, workspaceId: $w, first: 10) { score rank snippet entry { id slug title } } }";
        let mut hits = 0usize;
        let mut samples = Vec::with_capacity(self.runs);
        for i in 0..self.runs + 5 {
            let vars = json!({ "q": QUERIES[i % QUERIES.len()], "m": mode, "w": self.ws });
            let started = Instant::now();
            let data = self.gql(q, vars).await;
            let took = started.elapsed();
            if i >= 5 {
                samples.push(took);
                hits += data["searchKnowledge"].as_array().unwrap().len();
            }
        }
        report(
            &format!("search {mode:<8} {total:>6}"),
            samples,
            &format!("{:.1} hits/query", hits as f64 / self.runs as f64),
        );
    }

    async fn graph(&self) {
        let q = "query($w: ID!) { knowledgeGraph(workspaceId: $w, limit: 1000) { nodes { id slug degree } edges { source target } orphans truncated } }";
        let mut samples = Vec::new();
        let mut nodes = 0;
        for i in 0..(self.runs / 4).max(20) + 3 {
            let started = Instant::now();
            let data = self.gql(q, json!({ "w": self.ws })).await;
            if i >= 3 {
                samples.push(started.elapsed());
                nodes = data["knowledgeGraph"]["nodes"].as_array().unwrap().len();
            }
        }
        report("graph 1000 nodes", samples, &format!("{nodes} nodes"));
    }

    async fn save_with_links(&self) {
        let q = "mutation($i: CreateKnowledgeEntryInput!) { createKnowledgeEntry(input: $i) { id } }";
        let mut samples = Vec::new();
        for i in 0..53 {
            let links: Vec<String> = (0..20)
                .map(|k| format!("[[e-{}]]", (i * 20 + k) * 7 % 10_000))
                .collect();
            let input = json!({ "workspaceId": self.ws, "title": format!("Linked {i}"),
                                "content": format!("Twenty links: {}", links.join(", ")) });
            let started = Instant::now();
            self.gql(q, json!({ "i": input })).await;
            if i >= 3 {
                samples.push(started.elapsed());
            }
        }
        report("save 20 links", samples, "");
    }
}

fn report(label: &str, mut samples: Vec<Duration>, note: &str) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    println!(
        "{label:<24} runs={:<4} p50={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms  {note}",
        samples.len(),
        ms(at(50)),
        ms(at(99)),
        ms(*samples.last().unwrap())
    );
}

/// About 500 characters of entry-like text.
fn entry_text(i: usize) -> String {
    let vocabulary: Vec<&str> = VOCABULARY.split_whitespace().collect();
    let words: Vec<&str> = (0..70)
        .map(|j| vocabulary[(i * 31 + j * 17 + j * j * 3) % vocabulary.len()])
        .collect();
    format!("Entry {i}\n\n{}", words.join(" "))
}
