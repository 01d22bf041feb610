//! Federated lists over real instances: each instance its own database,
//! serving HTTPS on loopback with the test CA, peered through signed CONNECT
//! and approval. The merged order is checked against a ground truth computed
//! here from every instance's database; failures of peers are checked with
//! deliberately faulty servers.

use crate::common;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{TestApp, fingerprint, local_id, peer, peer_forwarding, spawn_instance, spawn_instance_with};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use sqlx::Row as _;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Ground truth: the rows each instance exposes, and the global order.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    CreatedAt,
    UpdatedAt,
    DueDate,
    Priority,
    Title,
    Status,
}

const FIELDS: [Field; 6] = [
    Field::CreatedAt,
    Field::UpdatedAt,
    Field::DueDate,
    Field::Priority,
    Field::Title,
    Field::Status,
];

impl Field {
    fn gql(self) -> &'static str {
        match self {
            Self::CreatedAt => "CREATED_AT",
            Self::UpdatedAt => "UPDATED_AT",
            Self::DueDate => "DUE_DATE",
            Self::Priority => "PRIORITY",
            Self::Title => "TITLE",
            Self::Status => "STATUS",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Order {
    field: Field,
    desc: bool,
}

impl Order {
    fn vars(self) -> Value {
        json!({ "field": self.field.gql(), "direction": if self.desc { "DESC" } else { "ASC" } })
    }

    fn all() -> Vec<Order> {
        FIELDS
            .iter()
            .flat_map(|&field| [false, true].map(|desc| Order { field, desc }))
            .collect()
    }
}

/// A task as its owner's database holds it.
#[derive(Clone, Debug)]
struct Row {
    /// Global ID, `Task:<instance>:<uuid>`.
    id: String,
    local: Uuid,
    instance: String,
    workspace: String,
    title: String,
    status: String,
    priority: i16,
    due: Option<Date>,
    created: OffsetDateTime,
    updated: OffsetDateTime,
}

/// The documented global order: the field (no due date = infinitely far,
/// titles bytewise), then instance id as a string, then id; DESC reverses
/// the whole tuple. Written independently of `TaskOrder::compare`.
fn compare(order: Order, a: &Row, b: &Row) -> Ordering {
    let by_field = match order.field {
        Field::CreatedAt => a.created.cmp(&b.created),
        Field::UpdatedAt => a.updated.cmp(&b.updated),
        Field::DueDate => (a.due.is_none(), a.due).cmp(&(b.due.is_none(), b.due)),
        Field::Priority => a.priority.cmp(&b.priority),
        Field::Title => a.title.as_bytes().cmp(b.title.as_bytes()),
        Field::Status => a.status.as_bytes().cmp(b.status.as_bytes()),
    };
    let total = by_field
        .then_with(|| a.instance.cmp(&b.instance))
        .then_with(|| a.local.cmp(&b.local));
    if order.desc { total.reverse() } else { total }
}

fn sorted(rows: &[Row], order: Order) -> Vec<Row> {
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| compare(order, a, b));
    rows
}

fn ids(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| r.id.clone()).collect()
}

/// Tasks of `workspaces` in `app`'s database, read as superuser.
async fn rows_in(app: &TestApp, workspaces: &[Uuid]) -> Vec<Row> {
    let instance = app.state.instance_id.to_string();
    let mut conn = app.admin().await;
    let rows = sqlx::query(
        "SELECT id, workspace_id, title, status, priority, due_date, created_at, updated_at
         FROM tasks WHERE workspace_id = ANY($1)",
    )
    .bind(workspaces)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let local: Uuid = r.get("id");
            let ws: Uuid = r.get("workspace_id");
            Row {
                id: format!("Task:{instance}:{local}"),
                local,
                instance: instance.clone(),
                workspace: format!("Workspace:{instance}:{ws}"),
                title: r.get("title"),
                status: r.get("status"),
                priority: r.get("priority"),
                due: r.get("due_date"),
                created: r.get("created_at"),
                updated: r.get("updated_at"),
            }
        })
        .collect()
}

/// Workspaces `app` exposes to the peer `asking` (its grant there).
async fn granted_to(app: &TestApp, asking: &TestApp) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT grant_workspaces FROM peers WHERE id = $1")
        .bind(asking.state.instance_id)
        .fetch_one(&mut app.admin().await)
        .await
        .unwrap()
}

/// Workspaces a local user is a member of.
async fn memberships(app: &TestApp, user: Uuid) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT workspace_id FROM workspace_members WHERE user_id = $1")
        .bind(user)
        .fetch_all(&mut app.admin().await)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// Seeding through SQL.
// ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Shared by every instance so that titles, priorities, dates and times tie
/// across instances. Mixed case and non-ASCII titles check bytewise order.
const TITLES: [&str; 10] = [
    "alpha", "Alpha", "beta", "Zeta", "zeta", "Ölfass", "oelfass", "a b", "a_b", "ab",
];
const STATUSES: [&str; 5] = ["TODO", "IN_PROGRESS", "BLOCKED", "DONE", "CANCELLED"];

fn base_time() -> OffsetDateTime {
    time::macros::datetime!(2025-03-01 09:00:00 UTC)
}

/// A timestamp from a small set (many ties), some a microsecond or half a
/// second apart (precision across the wire).
fn some_time(rng: &mut Rng) -> OffsetDateTime {
    let sub = *rng.pick(&[0i64, 1, 500_000]);
    base_time() + time::Duration::minutes(rng.below(4) as i64) + time::Duration::microseconds(sub)
}

struct Seeded {
    owner: Uuid,
    token: String,
    /// Workspaces the owner created (visible to them; the ones a grant may cover).
    workspaces: Vec<Uuid>,
    /// A workspace neither the owner is a member of nor any grant covers.
    hidden: Uuid,
}

/// An owner with `workspaces` workspaces of `per_workspace` tasks each, and a
/// workspace of another user with tasks that must never show up elsewhere.
async fn seed(app: &TestApp, label: &str, workspaces: usize, per_workspace: usize, seed: u64) -> Seeded {
    let (owner, token) = app.user(&format!("{label}@{label}.example")).await;
    let (other, _) = app.user(&format!("other@{label}.example")).await;
    let mut rng = Rng(seed);
    let mut conn = app.admin().await;
    let mut list = Vec::new();
    for i in 0..=workspaces {
        let (name, by) = match i {
            i if i < workspaces => (format!("{label} ws {i}"), owner),
            _ => (format!("{label} hidden"), other),
        };
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO workspaces (id, name, created_by) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(by)
            .execute(&mut conn)
            .await
            .unwrap();
        list.push(id);
    }
    let hidden = list.pop().expect("the hidden workspace");
    for (ws, by, n) in list
        .iter()
        .map(|w| (*w, owner, per_workspace))
        .chain([(hidden, other, 5)])
    {
        for _ in 0..n {
            let due = (rng.below(4) != 0)
                .then(|| time::macros::date!(2025 - 04 - 01) + time::Duration::days(rng.below(5) as i64));
            sqlx::query(
                "INSERT INTO tasks (id, workspace_id, title, status, priority, due_date, created_by, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(Uuid::new_v4())
            .bind(ws)
            .bind(*rng.pick(&TITLES))
            .bind(*rng.pick(&STATUSES))
            .bind(rng.below(4) as i16)
            .bind(due)
            .bind(by)
            .bind(some_time(&mut rng))
            .bind(some_time(&mut rng))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    Seeded {
        owner,
        token,
        workspaces: list,
        hidden,
    }
}

fn ws_id(app: &TestApp, ws: Uuid) -> String {
    format!("Workspace:{}:{ws}", app.state.instance_id)
}

// ---------------------------------------------------------------------------
// The federation: A (home) peers with B and C; C peers with D.
// ---------------------------------------------------------------------------

struct World {
    a: TestApp,
    b: TestApp,
    c: TestApp,
    d: TestApp,
    /// The user on A who asks.
    token: String,
    /// Every row A's user may see through `scope: {all: true}`.
    expected: Vec<Row>,
    /// Tasks that must never appear (workspaces not visible / not granted).
    hidden: BTreeSet<String>,
}

const PER_WORKSPACE: usize = 12;

impl World {
    async fn build() -> Self {
        let (a, b, c, d) = tokio::join!(
            spawn_instance("alpha"),
            spawn_instance("bravo"),
            spawn_instance("charlie"),
            spawn_instance("delta"),
        );
        let (sa, sb, sc, sd) = tokio::join!(
            seed(&a, "alpha", 2, PER_WORKSPACE, 0x9e37_79b9_7f4a_7c15),
            seed(&b, "bravo", 3, PER_WORKSPACE, 0xdead_beef_cafe_f00d),
            seed(&c, "charlie", 2, PER_WORKSPACE, 0x0123_4567_89ab_cdef),
            seed(&d, "delta", 2, PER_WORKSPACE, 0x0f0f_1234_5678_9abc),
        );
        // B grants two of its three workspaces; C and D one of their two.
        peer(
            &a,
            &b,
            &[&ws_id(&b, sb.workspaces[0]), &ws_id(&b, sb.workspaces[2])],
            false,
        )
        .await;
        // C lets A's reads go on to D.
        peer_forwarding(&a, &c, &[&ws_id(&c, sc.workspaces[1])]).await;
        peer(&c, &d, &[&ws_id(&d, sd.workspaces[0])], false).await;

        // What each instance answers for this request: A its user's
        // workspaces; B and C their grants to A; D its grant to C (D is
        // asked by C, on A's behalf).
        let mut expected = rows_in(&a, &memberships(&a, sa.owner).await).await;
        expected.extend(rows_in(&b, &granted_to(&b, &a).await).await);
        expected.extend(rows_in(&c, &granted_to(&c, &a).await).await);
        expected.extend(rows_in(&d, &granted_to(&d, &c).await).await);
        assert_eq!(
            expected.len(),
            (2 + 2 + 1 + 1) * PER_WORKSPACE,
            "the seeding and grants expose what this test assumes"
        );
        let mut hidden = BTreeSet::new();
        for (app, not_visible) in [
            (&a, vec![sa.hidden]),
            (&b, vec![sb.hidden, sb.workspaces[1]]),
            (&c, vec![sc.hidden, sc.workspaces[0]]),
            (&d, vec![sd.hidden, sd.workspaces[1]]),
        ] {
            hidden.extend(rows_in(app, &not_visible).await.into_iter().map(|r| r.id));
        }
        assert_eq!(hidden.len(), 4 * 5 + 3 * PER_WORKSPACE);
        World {
            a,
            b,
            c,
            d,
            token: sa.token,
            expected,
            hidden,
        }
    }

    fn apps(&self) -> [&TestApp; 4] {
        [&self.a, &self.b, &self.c, &self.d]
    }

    fn names(&self) -> BTreeMap<String, String> {
        self.apps()
            .iter()
            .map(|app| (app.state.instance_id.to_string(), app.state.instance.name.clone()))
            .collect()
    }
}

const TASKS: &str = "query($scope: InstanceScope, $o: TaskOrder, $first: Int, $after: String) {
  tasks(scope: $scope, orderBy: $o, first: $first, after: $after) {
    edges { cursor node { id title instance { id name } workspace { id } } }
    pageInfo { hasNextPage endCursor }
    totalCount
  }
}";

/// Pages through `tasks` with the given page sizes (cycled) until the end.
/// Returns every response body, in order. Fails on a short page that claims
/// more, on an endCursor that is not the last edge's, and on more pages
/// than `limit` (no endless loops).
async fn page_through(
    app: &TestApp,
    token: &str,
    scope: &Value,
    order: Order,
    sizes: &[usize],
    limit: usize,
) -> Result<Vec<Value>, String> {
    let mut bodies = Vec::new();
    let mut after: Option<String> = None;
    for page in 0.. {
        if page > limit {
            return Err(format!("more than {limit} pages"));
        }
        let first = sizes[page % sizes.len()];
        let body = app
            .gql(
                token,
                TASKS,
                json!({ "scope": scope, "o": order.vars(), "first": first, "after": after }),
            )
            .await;
        let tasks = &body["data"]["tasks"];
        let edges = tasks["edges"]
            .as_array()
            .ok_or_else(|| format!("page {page}: no edges: {body}"))?;
        if edges.len() > first {
            return Err(format!("page {page}: {} edges for first {first}", edges.len()));
        }
        let more = tasks["pageInfo"]["hasNextPage"]
            .as_bool()
            .ok_or_else(|| format!("page {page}: no pageInfo: {body}"))?;
        if more && edges.len() != first {
            return Err(format!(
                "page {page}: {} edges for first {first}, yet hasNextPage",
                edges.len()
            ));
        }
        if let Some(last) = edges.last()
            && last["cursor"] != tasks["pageInfo"]["endCursor"]
        {
            return Err(format!("page {page}: endCursor is not the last edge's cursor"));
        }
        after = tasks["pageInfo"]["endCursor"].as_str().map(String::from);
        bodies.push(body);
        if !more {
            return Ok(bodies);
        }
    }
    unreachable!()
}

/// How many pages `n` rows take with page sizes cycling through `sizes`.
fn pages_for(n: usize, sizes: &[usize]) -> usize {
    let (mut left, mut pages) = (n, 0);
    while left > 0 || pages == 0 {
        left = left.saturating_sub(sizes[pages % sizes.len()]);
        pages += 1;
    }
    pages
}

fn nodes(bodies: &[Value]) -> Vec<Value> {
    bodies
        .iter()
        .flat_map(|b| b["data"]["tasks"]["edges"].as_array().cloned().unwrap_or_default())
        .map(|e| e["node"].clone())
        .collect()
}

fn node_ids(nodes: &[Value]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n["id"].as_str().unwrap_or("<none>").to_string())
        .collect()
}

/// `extensions.federation.instances` as id → (name, status).
fn reported(body: &Value) -> BTreeMap<String, (String, String)> {
    body["extensions"]["federation"]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or_default().to_string(),
                (
                    i["name"].as_str().unwrap_or_default().to_string(),
                    i["status"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

/// Checks one fully paged listing against the expected rows, with
/// provenance, titles and workspaces matching each owner's database.
fn check_listing(world: &World, got: &[Value], expected: &[Row], what: &str) {
    let got_ids = node_ids(got);
    let unique: BTreeSet<&String> = got_ids.iter().collect();
    assert_eq!(unique.len(), got_ids.len(), "{what}: a row came twice");
    let leaked: Vec<&String> = got_ids.iter().filter(|id| world.hidden.contains(*id)).collect();
    assert!(leaked.is_empty(), "{what}: tasks of ungranted workspaces: {leaked:?}");
    assert_eq!(got_ids, ids(expected), "{what}: rows or order differ");
    let names = world.names();
    for (node, row) in got.iter().zip(expected) {
        assert_eq!(node["instance"]["id"], row.instance, "{what}: {node}");
        assert_eq!(node["instance"]["name"], names[&row.instance], "{what}: {node}");
        assert_eq!(node["title"], row.title, "{what}: {node}");
        assert_eq!(node["workspace"]["id"], row.workspace, "{what}: {node}");
    }
}

fn all() -> Value {
    json!({ "all": true })
}

// ---------------------------------------------------------------------------
// 1. Ground truth.
// ---------------------------------------------------------------------------

/// A (home) → B, A → C → D: paging A's `tasks(scope: {all: true})` in every
/// ordering returns every visible row of the four instances exactly once, in
/// the documented global order; totalCount and the federation report match.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_scope_merges_four_instances_in_global_order() {
    const SIZES: [usize; 2] = [5, 17];
    let world = World::build().await;
    let n = world.expected.len();
    // The twelve orderings are paged side by side (concurrent requests).
    let listings = futures::future::join_all(Order::all().into_iter().map(|order| {
        let world = &world;
        async move {
            (
                order,
                page_through(&world.a, &world.token, &all(), order, &SIZES, n + 2).await,
            )
        }
    }))
    .await;
    for (order, bodies) in listings {
        let what = format!("{order:?}");
        let bodies = bodies.unwrap_or_else(|e| panic!("{what}: {e}"));
        for body in &bodies {
            assert!(body.get("errors").is_none(), "{what}: {body}");
        }
        let expected = sorted(&world.expected, order);
        check_listing(&world, &nodes(&bodies), &expected, &what);
        assert_eq!(bodies.len(), pages_for(n, &SIZES), "{what}: page count");
        // All matching tasks, not only this page: the same on every page,
        // also once some instances have run out of rows.
        let totals: Vec<&Value> = bodies.iter().map(|b| &b["data"]["tasks"]["totalCount"]).collect();
        assert!(
            totals.iter().all(|t| **t == json!(n)),
            "{what}: totalCount per page {totals:?}, want {n}"
        );

        let first = &bodies[0];
        assert_eq!(first["data"]["tasks"]["totalCount"], n, "{what}: totalCount");
        let fed = &first["extensions"]["federation"];
        assert_eq!(fed["total"], 4, "{what}: {fed}");
        assert_eq!(fed["succeeded"], 4, "{what}: {fed}");
        assert_eq!(fed["failed"], 0, "{what}: {fed}");
        assert_eq!(fed["skipped"], 0, "{what}: {fed}");
        let want: BTreeMap<String, (String, String)> = world
            .names()
            .into_iter()
            .map(|(id, name)| (id, (name, "succeeded".to_string())))
            .collect();
        assert_eq!(reported(first), want, "{what}: {fed}");
    }
    // The expected rows come from all four instances, so D's came through C.
    let seen: BTreeSet<String> = world.expected.iter().map(|r| r.instance.clone()).collect();
    assert_eq!(seen.len(), 4);
}

// ---------------------------------------------------------------------------
// 2. Property: any page sizes, any ordering.
// ---------------------------------------------------------------------------

/// Random page sizes (1..=40, cycled through a short random list) and a
/// random ordering: paging to the end yields each task once, in order. The
/// federation is built once and reused across cases.
#[test]
fn paging_with_any_sizes_and_ordering_yields_each_task_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let world = rt.block_on(World::build());
    let n = world.expected.len();
    let config = ProptestConfig {
        cases: 8,
        failure_persistence: None,
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    };
    let strategy = (
        proptest::collection::vec(1usize..=40, 1..=3),
        0usize..FIELDS.len(),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |(sizes, field, desc)| {
        let order = Order {
            field: FIELDS[field],
            desc,
        };
        let bodies = rt
            .block_on(page_through(&world.a, &world.token, &all(), order, &sizes, n + 2))
            .map_err(TestCaseError::fail)?;
        for body in &bodies {
            prop_assert!(body.get("errors").is_none(), "{body}");
        }
        let got = node_ids(&nodes(&bodies));
        let unique: BTreeSet<&String> = got.iter().collect();
        prop_assert_eq!(unique.len(), got.len(), "a row came twice");
        prop_assert_eq!(got, ids(&sorted(&world.expected, order)));
        prop_assert_eq!(&bodies[0]["data"]["tasks"]["totalCount"], &json!(n));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// 3. Named scope.
// ---------------------------------------------------------------------------

/// `scope: {instances: [...]}` asks exactly the named instances (this one
/// and direct peers, without forwarding); an unknown name is skipped and
/// reported while the rest still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn named_scope_asks_exactly_the_named_instances() {
    let world = World::build().await;
    let (a, b, c) = (&world.a, &world.b, &world.c);
    let a_id = a.state.instance_id.to_string();
    let b_id = b.state.instance_id.to_string();
    let c_id = c.state.instance_id.to_string();
    let order = Order {
        field: Field::Title,
        desc: false,
    };
    let only = |instances: &[&str]| -> Vec<Row> {
        let rows: Vec<Row> = world
            .expected
            .iter()
            .filter(|r| instances.contains(&r.instance.as_str()))
            .cloned()
            .collect();
        sorted(&rows, order)
    };

    // A and B by name.
    let scope = json!({ "instances": [a.state.instance.name, b.state.instance.name] });
    let bodies = page_through(a, &world.token, &scope, order, &[9], 100).await.unwrap();
    assert!(bodies[0].get("errors").is_none(), "{}", bodies[0]);
    let expected = only(&[&a_id, &b_id]);
    check_listing(&world, &nodes(&bodies), &expected, "A and B");
    assert_eq!(bodies[0]["data"]["tasks"]["totalCount"], expected.len());
    let fed = &bodies[0]["extensions"]["federation"];
    assert_eq!(
        (&fed["total"], &fed["succeeded"], &fed["skipped"]),
        (&json!(2), &json!(2), &json!(0)),
        "{fed}"
    );

    // C alone, by id: only C's own rows; C does not forward to D.
    let scope = json!({ "instances": [c_id] });
    let bodies = page_through(a, &world.token, &scope, order, &[40], 100).await.unwrap();
    assert!(bodies[0].get("errors").is_none(), "{}", bodies[0]);
    check_listing(&world, &nodes(&bodies), &only(&[&c_id]), "C by id");
    let listed: Vec<String> = reported(&bodies[0]).into_keys().collect();
    assert_eq!(listed, vec![c_id.clone()]);

    // An unknown name: reported, skipped, and the others still answer.
    let scope = json!({ "instances": [a.state.instance.name, "nowhere", b.state.instance.name] });
    let body = a
        .gql(
            &world.token,
            TASKS,
            json!({ "scope": scope, "o": order.vars(), "first": 100 }),
        )
        .await;
    assert_eq!(
        common::errors(&body),
        vec![("UNKNOWN_INSTANCE".to_string(), "nowhere".to_string())],
        "{body}"
    );
    let got = nodes(std::slice::from_ref(&body));
    check_listing(&world, &got, &only(&[&a_id, &b_id]), "A, B and an unknown name");
    let fed = &body["extensions"]["federation"];
    assert_eq!(fed["total"], 3, "{fed}");
    assert_eq!(fed["succeeded"], 2, "{fed}");
    assert_eq!(fed["skipped"], 1, "{fed}");
    assert_eq!(fed["failed"], 0, "{fed}");
    assert_eq!(reported(&body)["nowhere"].1, "skipped");
}

// ---------------------------------------------------------------------------
// 4. Faulty peers.
// ---------------------------------------------------------------------------

/// Aborts the fake servers' tasks when the test ends, however it ends.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

/// Accepts connections and never answers (keeps them open).
async fn hanging_server() -> (String, tokio::task::AbortHandle) {
    let (l, url) = listener().await;
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = l.accept().await {
            held.push(stream);
        }
    });
    (url, task.abort_handle())
}

/// Accepts connections and closes them at once.
async fn closing_server() -> (String, tokio::task::AbortHandle) {
    let (l, url) = listener().await;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            drop(stream);
        }
    });
    (url, task.abort_handle())
}

/// Answers every request with `status` and `body` (as JSON content).
async fn fixed_server(status: u16, body: &'static str) -> (String, tokio::task::AbortHandle) {
    let (l, url) = listener().await;
    let router = axum::Router::new().fallback(move || async move {
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, router).await;
    });
    (url, task.abort_handle())
}

/// A hanging, a failing (500), a garbling (malformed JSON) and a
/// hanging-up peer each yield exactly one error with the right code and
/// instance; the healthy peer's and the master's rows still arrive, and the
/// hang is cut at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faulty_peers_fail_alone_and_the_hang_is_cut_at_the_deadline() {
    let deadline = Duration::from_millis(1500);
    let (master, healthy) = tokio::join!(
        spawn_instance_with("master", |c| {
            c.federation.allow_http = true;
            c.federation.deadline = deadline;
        }),
        spawn_instance("healthy"),
    );
    let (_, token) = master.user("m@master.example").await;
    let m_ws = master.create_workspace(&token, "master ws").await;
    let mut master_tasks = BTreeSet::new();
    for i in 0..3 {
        master_tasks.insert(master.create_task(&token, &m_ws, &format!("master {i}")).await);
    }
    let (_, h_token) = healthy.user("h@healthy.example").await;
    let h_ws = healthy.create_workspace(&h_token, "healthy ws").await;
    let mut healthy_tasks = BTreeSet::new();
    for i in 0..3 {
        healthy_tasks.insert(healthy.create_task(&h_token, &h_ws, &format!("healthy {i}")).await);
    }
    peer(&master, &healthy, &[&h_ws], false).await;

    let (hang_url, hang) = hanging_server().await;
    let (err_url, err) = fixed_server(500, r#"{"errors":[{"message":"boom"}]}"#).await;
    let (bad_url, bad) = fixed_server(200, r#"{"data": {"tasks": {"edges": ["#).await;
    let (close_url, close) = closing_server().await;
    let _servers = AbortOnDrop(vec![hang, err, bad, close]);
    let fakes = [
        ("hang", hang_url, "PEER_TIMEOUT"),
        ("error500", err_url, "PEER_UNAVAILABLE"),
        ("malformed", bad_url, "PEER_BAD_RESPONSE"),
        ("closed", close_url, "PEER_UNAVAILABLE"),
    ];
    let mut fake_ids = BTreeMap::new();
    for (name, url, code) in &fakes {
        let id = common::register_active_peer(&master, name, url).await;
        fake_ids.insert(id.to_string(), (*name, *code));
    }

    let started = Instant::now();
    let body = master
        .gql(
            &token,
            "{ tasks(scope: {all: true}, first: 100) { edges { node { id instance { id } } } totalCount } }",
            json!({}),
        )
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < deadline + Duration::from_millis(1500),
        "the hanging peer was not cut at the deadline: {elapsed:?}"
    );

    let got: BTreeSet<String> = node_ids(&nodes(std::slice::from_ref(&body))).into_iter().collect();
    let want: BTreeSet<String> = master_tasks.union(&healthy_tasks).cloned().collect();
    assert_eq!(got, want, "{body}");
    assert_eq!(body["data"]["tasks"]["totalCount"], 6, "{body}");

    let errs = common::errors(&body);
    assert_eq!(errs.len(), 4, "one error per faulty peer: {body}");
    for (id, (name, code)) in &fake_ids {
        let mine: Vec<&(String, String)> = errs.iter().filter(|(_, i)| i == id).collect();
        assert_eq!(mine.len(), 1, "{name}: {body}");
        assert_eq!(mine[0].0, *code, "{name}: {body}");
    }
    let fed = &body["extensions"]["federation"];
    assert_eq!(fed["total"], 6, "{fed}");
    assert_eq!(fed["succeeded"], 2, "{fed}");
    assert_eq!(fed["failed"], 4, "{fed}");
    assert_eq!(fed["skipped"], 0, "{fed}");
    let report = reported(&body);
    for id in fake_ids.keys() {
        assert_eq!(report[id].1, "failed", "{fed}");
    }
    assert_eq!(report[&healthy.state.instance_id.to_string()].1, "succeeded");
    assert_eq!(report[&master.state.instance_id.to_string()].1, "succeeded");
}

/// Answers the status line and headers after `delay` (the peer is slow),
/// then a few bytes of a longer body, and never the rest.
async fn stalling_body_server(delay: Duration) -> (String, tokio::task::AbortHandle) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (l, url) = listener().await;
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = l.accept().await {
            let (done, keep) = tokio::sync::oneshot::channel::<tokio::net::TcpStream>();
            held.push(keep);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"data\"";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.flush().await;
                let _ = done.send(stream);
            });
        }
    });
    (url, task.abort_handle())
}

/// A peer that answers its headers late and then stalls the body is cut at
/// the request's deadline too: the time allowed for the body is what is
/// left of the deadline, not a fresh deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_stalls_its_body_is_cut_at_the_deadline() {
    let deadline = Duration::from_secs(3);
    let master = spawn_instance_with("master", |c| {
        c.federation.allow_http = true;
        c.federation.deadline = deadline;
    })
    .await;
    let (_, token) = master.user("m@master.example").await;
    let ws = master.create_workspace(&token, "master ws").await;
    let mine = master.create_task(&token, &ws, "mine").await;
    // Headers well inside the deadline, the body never.
    let (url, server) = stalling_body_server(deadline * 4 / 5).await;
    let _server = AbortOnDrop(vec![server]);
    let slow = common::register_active_peer(&master, "slow", &url).await;

    let started = Instant::now();
    let body = master
        .gql(
            &token,
            "{ tasks(scope: {all: true}) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(node_ids(&nodes(std::slice::from_ref(&body))), vec![mine], "{body}");
    assert_eq!(
        common::errors(&body),
        vec![("PEER_TIMEOUT".to_string(), slow.to_string())],
        "{body}"
    );
    assert!(
        elapsed < deadline + Duration::from_secs(1),
        "the stalled body was waited for past the deadline: {elapsed:?} for a deadline of {deadline:?}"
    );
}

/// A straggler two hops away (A → C → hanging D) is cut by C within the
/// deadline A passed on, so C's rows still reach A and D is reported as
/// PEER_TIMEOUT through C.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_straggler_behind_a_peer_is_cut_within_the_deadline_passed_on() {
    let deadline = Duration::from_millis(2000);
    let (a, c) = tokio::join!(
        spawn_instance_with("home", |cfg| cfg.federation.deadline = deadline),
        spawn_instance("middle"),
    );
    let (_, token) = a.user("ann@home.example").await;
    let a_ws = a.create_workspace(&token, "home ws").await;
    let a_task = a.create_task(&token, &a_ws, "home task").await;
    let (_, c_token) = c.user("cid@middle.example").await;
    let c_ws = c.create_workspace(&c_token, "middle ws").await;
    let c_task = c.create_task(&c_token, &c_ws, "middle task").await;
    peer_forwarding(&a, &c, &[&c_ws]).await;
    let (hang_url, hang) = hanging_server().await;
    let _server = AbortOnDrop(vec![hang]);
    let d = common::register_active_peer(&c, "far", &hang_url).await.to_string();

    let started = Instant::now();
    let body = a
        .gql(
            &token,
            "{ tasks(scope: {all: true}) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    let elapsed = started.elapsed();
    assert!(elapsed < deadline + Duration::from_millis(1500), "{elapsed:?}");
    let got: BTreeSet<String> = node_ids(&nodes(std::slice::from_ref(&body))).into_iter().collect();
    assert_eq!(got, BTreeSet::from([a_task, c_task]), "{body}");
    assert_eq!(
        common::errors(&body),
        vec![("PEER_TIMEOUT".to_string(), d.clone())],
        "{body}"
    );
    let report = reported(&body);
    assert_eq!(report[&c.state.instance_id.to_string()].1, "succeeded", "{body}");
    assert_eq!(report[&d], ("far".to_string(), "failed".to_string()), "{body}");
    let fed = &body["extensions"]["federation"];
    assert_eq!(
        (&fed["total"], &fed["succeeded"], &fed["failed"]),
        (&json!(3), &json!(2), &json!(1)),
        "{fed}"
    );
}

// ---------------------------------------------------------------------------
// 5. Nothing from peers is written locally.
// ---------------------------------------------------------------------------

/// The federation tables, digested like `common::fingerprint` digests the tenant tables.
async fn federation_digest(app: &TestApp) -> Vec<(String, String)> {
    let mut conn = app.admin().await;
    let mut out = Vec::new();
    for table in ["peers", "peer_audit", "instance_keys"] {
        let digest: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {table} x"
        )))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        out.push((table.to_string(), digest));
    }
    out
}

/// A federated query and paging to the end change nothing in the home
/// instance's database (nor in the peers' tenant data).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn federated_queries_write_nothing_locally() {
    let world = World::build().await;
    let a = &world.a;
    let counts = a.row_counts().await;
    let tenant = fingerprint(&mut a.admin().await).await;
    let federation = federation_digest(a).await;
    let mut peers_before = Vec::new();
    for app in &world.apps()[1..] {
        peers_before.push(fingerprint(&mut app.admin().await).await);
    }

    let data = a
        .gql_ok(
            &world.token,
            TASKS,
            json!({ "scope": all(), "o": Order { field: Field::Priority, desc: true }.vars(), "first": 100 }),
        )
        .await;
    assert_eq!(data["tasks"]["edges"].as_array().unwrap().len(), world.expected.len());
    assert_eq!(a.row_counts().await, counts);
    assert_eq!(fingerprint(&mut a.admin().await).await, tenant);
    assert_eq!(federation_digest(a).await, federation);

    for order in [
        Order {
            field: Field::DueDate,
            desc: false,
        },
        Order {
            field: Field::UpdatedAt,
            desc: true,
        },
    ] {
        let bodies = page_through(a, &world.token, &all(), order, &[5, 13], 100)
            .await
            .unwrap();
        assert_eq!(nodes(&bodies).len(), world.expected.len());
    }
    let workspaces = a
        .gql_ok(&world.token, "{ workspaces(scope: {all: true}) { id } }", json!({}))
        .await;
    assert!(!workspaces["workspaces"].as_array().unwrap().is_empty());

    assert_eq!(a.row_counts().await, counts, "row counts after paging");
    assert_eq!(
        fingerprint(&mut a.admin().await).await,
        tenant,
        "tenant data after paging"
    );
    assert_eq!(federation_digest(a).await, federation, "federation tables after paging");
    for (app, before) in world.apps()[1..].iter().zip(peers_before) {
        assert_eq!(
            fingerprint(&mut app.admin().await).await,
            before,
            "{} changed",
            app.state.instance.name
        );
    }
}

// ---------------------------------------------------------------------------
// 6. Objects and writes go to their owner.
// ---------------------------------------------------------------------------

const TASK_NODE: &str = "query($id: ID!) { node(id: $id) { id ... on Task { title instance { id name } } } }";

async fn title_in_db(app: &TestApp, task: &str) -> Option<String> {
    sqlx::query_scalar("SELECT title FROM tasks WHERE id = $1")
        .bind(local_id(task))
        .fetch_optional(&mut app.admin().await)
        .await
        .unwrap()
}

/// `node(id:)`, `workspace(id:)` and the task mutations on an object of a
/// peer are answered by its owner: with a read-write grant the change
/// happens there; with a read-only grant it is refused (PEER_FORBIDDEN) and
/// nothing changes anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_and_writes_are_forwarded_to_their_owner() {
    let (a, b, r) = tokio::join!(
        spawn_instance("home"),
        spawn_instance("writable"),
        spawn_instance("readonly")
    );
    let (_, token) = a.user("ann@home.example").await;
    let (_, b_token) = b.user("bob@writable.example").await;
    b.user("carol@writable.example").await;
    let b_ws = b.create_workspace(&b_token, "bob's").await;
    b.add_member(&b_token, &b_ws, "carol@writable.example", "MEMBER").await;
    b.gql_ok(
        &b_token,
        "mutation($w: ID!) { createProject(input: {workspaceId: $w, name: \"roadmap\"}) { id } }",
        json!({ "w": b_ws }),
    )
    .await;
    let b_task = b.create_task(&b_token, &b_ws, "bob's task").await;
    let b_private_ws = b.create_workspace(&b_token, "bob's private").await;
    let b_private = b.create_task(&b_token, &b_private_ws, "private").await;
    let (_, r_token) = r.user("rita@readonly.example").await;
    let r_ws = r.create_workspace(&r_token, "rita's").await;
    let r_task = r.create_task(&r_token, &r_ws, "rita's task").await;
    peer(&a, &b, &[&b_ws], true).await;
    peer(&a, &r, &[&r_ws], false).await;
    let a_counts = a.row_counts().await;
    let a_tenant = fingerprint(&mut a.admin().await).await;
    let b_name = b.state.instance.name.clone();
    let b_id = b.state.instance_id.to_string();
    let r_id = r.state.instance_id.to_string();

    // node(id:) goes to the owner; outside the grant it is null.
    let d = a.gql_ok(&token, TASK_NODE, json!({ "id": b_task })).await;
    assert_eq!(d["node"]["id"], b_task);
    assert_eq!(d["node"]["title"], "bob's task");
    assert_eq!(d["node"]["instance"], json!({ "id": b_id, "name": b_name }));
    let d = a.gql_ok(&token, TASK_NODE, json!({ "id": b_private })).await;
    assert!(d["node"].is_null(), "a task outside the grant: {d}");

    // workspace(id:) with members and projects, all from B.
    let d = a
        .gql_ok(
            &token,
            "query($id: ID!) { workspace(id: $id) { name instance { name } members { user { email } } projects { name } } }",
            json!({ "id": b_ws }),
        )
        .await;
    let w = &d["workspace"];
    assert_eq!(w["name"], "bob's");
    assert_eq!(w["instance"]["name"], b_name);
    let mut emails: Vec<&str> = w["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"]["email"].as_str().unwrap())
        .collect();
    emails.sort();
    assert_eq!(emails, vec!["bob@writable.example", "carol@writable.example"]);
    assert_eq!(w["projects"], json!([{ "name": "roadmap" }]));

    // Read-write grant: update, create and delete happen on B.
    let update =
        "mutation($id: ID!, $t: String!) { updateTask(input: {id: $id, title: $t}) { id title instance { id } } }";
    let d = a
        .gql_ok(&token, update, json!({ "id": b_task, "t": "renamed from home" }))
        .await;
    assert_eq!(d["updateTask"]["id"], b_task);
    assert_eq!(d["updateTask"]["title"], "renamed from home");
    assert_eq!(d["updateTask"]["instance"]["id"], b_id);
    assert_eq!(title_in_db(&b, &b_task).await.as_deref(), Some("renamed from home"));

    let create = "mutation($w: ID!, $t: String!) { createTask(input: {workspaceId: $w, title: $t}) { id title instance { name } workspace { id } } }";
    let d = a
        .gql_ok(&token, create, json!({ "w": b_ws, "t": "made at home" }))
        .await;
    let created = d["createTask"]["id"].as_str().unwrap().to_string();
    assert!(created.starts_with(&format!("Task:{b_id}:")), "{created}");
    assert_eq!(d["createTask"]["instance"]["name"], b_name);
    assert_eq!(d["createTask"]["workspace"]["id"], b_ws);
    let on_b: Option<(String, Uuid)> = sqlx::query_as("SELECT title, workspace_id FROM tasks WHERE id = $1")
        .bind(local_id(&created))
        .fetch_optional(&mut b.admin().await)
        .await
        .unwrap();
    assert_eq!(on_b, Some(("made at home".to_string(), local_id(&b_ws))));

    let delete = "mutation($id: ID!) { deleteTask(id: $id) }";
    let d = a.gql_ok(&token, delete, json!({ "id": created })).await;
    assert_eq!(d["deleteTask"], created);
    assert_eq!(title_in_db(&b, &created).await, None, "deleted on B");

    // Read-only grant: every write refused with PEER_FORBIDDEN, nothing changes.
    let r_before = fingerprint(&mut r.admin().await).await;
    let r_counts = r.row_counts().await;
    for (query, vars) in [
        (update, json!({ "id": r_task, "t": "should not happen" })),
        (delete, json!({ "id": r_task })),
        (create, json!({ "w": r_ws, "t": "should not happen" })),
    ] {
        let body = a.gql(&token, query, vars).await;
        assert_eq!(
            common::errors(&body),
            vec![("PEER_FORBIDDEN".to_string(), r_id.clone())],
            "{query}: {body}"
        );
    }
    assert_eq!(title_in_db(&r, &r_task).await.as_deref(), Some("rita's task"));
    assert_eq!(fingerprint(&mut r.admin().await).await, r_before);
    assert_eq!(r.row_counts().await, r_counts);
    // Reading through the read-only grant still works.
    let d = a.gql_ok(&token, TASK_NODE, json!({ "id": r_task })).await;
    assert_eq!(d["node"]["title"], "rita's task");

    // The home instance stored none of it.
    assert_eq!(a.row_counts().await, a_counts);
    assert_eq!(fingerprint(&mut a.admin().await).await, a_tenant);
}

// ---------------------------------------------------------------------------
// 7. Revocation between two queries.
// ---------------------------------------------------------------------------

/// After B revokes A (DISCONNECT), A's next federated query has no B rows,
/// no error about B and no B in the report; an old cursor does not bring B
/// back. Were the DISCONNECT lost (A still thinks B active), B refuses and
/// is reported as PEER_FORBIDDEN, still without rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_takes_effect_on_the_next_query() {
    let world = World::build().await;
    let (a, b) = (&world.a, &world.b);
    let a_id = a.state.instance_id;
    let b_id = b.state.instance_id.to_string();
    let n = world.expected.len();
    let order = Order {
        field: Field::Priority,
        desc: false,
    };
    let vars = |after: Option<&str>| json!({ "scope": all(), "o": order.vars(), "first": 10, "after": after });

    let before = a.gql(&world.token, TASKS, vars(None)).await;
    assert!(before.get("errors").is_none(), "{before}");
    assert_eq!(before["data"]["tasks"]["totalCount"], n);
    assert!(reported(&before).contains_key(&b_id));
    let old_cursor = before["data"]["tasks"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_string();

    let record = b.state.federation.revoke(a_id, "test").await.unwrap();
    assert_eq!(record.inbound_state, "revoked");
    let on_a = mosaic::federation::registry::get(&a.state.federation.pool, b.state.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(on_a.outbound_state, "revoked", "the DISCONNECT reached A");

    let without_b: Vec<Row> = world.expected.iter().filter(|r| r.instance != b_id).cloned().collect();
    let bodies = page_through(a, &world.token, &all(), order, &[10], n + 2)
        .await
        .unwrap();
    for body in &bodies {
        assert!(body.get("errors").is_none(), "B is simply absent: {body}");
        assert!(!reported(body).contains_key(&b_id), "B is not reported: {body}");
    }
    check_listing(&world, &nodes(&bodies), &sorted(&without_b, order), "after revocation");
    assert_eq!(bodies[0]["data"]["tasks"]["totalCount"], without_b.len());
    let fed = &bodies[0]["extensions"]["federation"];
    assert_eq!((&fed["total"], &fed["succeeded"]), (&json!(3), &json!(3)), "{fed}");

    // Naming B now: by name, nothing (names select only active peers, so
    // nobody can squat one); by id, skipped, as the peering is no longer active.
    let scope = json!({ "instances": [a.state.instance.name, b.state.instance.name] });
    let body = a
        .gql(
            &world.token,
            TASKS,
            json!({ "scope": scope, "o": order.vars(), "first": 100 }),
        )
        .await;
    assert_eq!(
        common::errors(&body),
        vec![("UNKNOWN_INSTANCE".to_string(), b.state.instance.name.clone())],
        "{body}"
    );
    let scope = json!({ "instances": [a.state.instance.name, b_id] });
    let body = a
        .gql(
            &world.token,
            TASKS,
            json!({ "scope": scope, "o": order.vars(), "first": 100 }),
        )
        .await;
    assert_eq!(
        common::errors(&body),
        vec![("PEER_FORBIDDEN".to_string(), b_id.clone())],
        "{body}"
    );
    assert!(
        nodes(std::slice::from_ref(&body))
            .iter()
            .all(|r| r["instance"]["id"] == a_id.to_string()),
        "{body}"
    );
    assert_eq!(reported(&body)[&b_id].1, "skipped");

    // A cursor issued while B was a peer resumes without B.
    let resumed = a.gql(&world.token, TASKS, vars(Some(&old_cursor))).await;
    assert!(resumed.get("errors").is_none(), "{resumed}");
    let rows = nodes(std::slice::from_ref(&resumed));
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r["instance"]["id"] != b_id.as_str()),
        "no B rows from an old cursor"
    );

    // A DISCONNECT that never arrived: B itself refuses.
    sqlx::query("UPDATE peers SET outbound_state = 'active' WHERE id = $1")
        .bind(b.state.instance_id)
        .execute(&mut a.admin().await)
        .await
        .unwrap();
    a.caught_up().await;
    let body = a.gql(&world.token, TASKS, vars(None)).await;
    assert_eq!(
        common::errors(&body),
        vec![("PEER_FORBIDDEN".to_string(), b_id.clone())],
        "{body}"
    );
    let rows = nodes(std::slice::from_ref(&body));
    assert!(rows.iter().all(|r| r["instance"]["id"] != b_id.as_str()), "{body}");
    assert_eq!(rows.len(), 10);
    assert_eq!(reported(&body)[&b_id].1, "failed");
    assert_eq!(body["extensions"]["federation"]["failed"], 1);
}

// ---------------------------------------------------------------------------
// 8. Events of a peer's workspace.
// ---------------------------------------------------------------------------

const EVENT_FIELDS: &str = "id title startsAt location createdBy { email } workspace { id } instance { id name }";

async fn event_in_db(app: &TestApp, event: &str) -> Option<(String, Option<String>)> {
    sqlx::query_as("SELECT title, location FROM events WHERE id = $1")
        .bind(local_id(event))
        .fetch_optional(&mut app.admin().await)
        .await
        .unwrap()
}

/// Events of a granted workspace of a peer are read through the master with
/// their provenance, nested in the workspace (paged by the owner's cursors)
/// and by `node(id:)`; event mutations go to the owner as COMMANDs, refused
/// under a read-only grant. The master stores none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_of_a_peers_workspace_are_read_and_written_at_their_owner() {
    let (a, b, r) = tokio::join!(
        spawn_instance("home"),
        spawn_instance("writable"),
        spawn_instance("readonly")
    );
    let (_, token) = a.user("ann@home.example").await;
    let (_, b_token) = b.user("bob@writable.example").await;
    let b_ws = b.create_workspace(&b_token, "bob's").await;
    let b_private_ws = b.create_workspace(&b_token, "bob's private").await;
    let create = format!("mutation($i: CreateEventInput!) {{ createEvent(input: $i) {{ {EVENT_FIELDS} }} }}");
    let event = |ws: &str, title: &str, starts_at: &str, ends_at: &str| json!({ "i": { "workspaceId": ws, "title": title, "startsAt": starts_at, "endsAt": ends_at, "location": "Hall" } });
    let mut b_events = Vec::new();
    for (title, s, e) in [
        ("standup", "2030-01-01T09:00:00Z", "2030-01-01T09:15:00Z"),
        ("review", "2030-01-01T11:00:00Z", "2030-01-01T12:00:00Z"),
        ("retro", "2030-01-02T15:00:00Z", "2030-01-02T16:00:00Z"),
    ] {
        let d = b.gql_ok(&b_token, &create, event(&b_ws, title, s, e)).await;
        b_events.push(d["createEvent"]["id"].as_str().unwrap().to_string());
    }
    let d = b
        .gql_ok(
            &b_token,
            &create,
            event(&b_private_ws, "private", "2030-01-01T09:00:00Z", "2030-01-01T10:00:00Z"),
        )
        .await;
    let b_private = d["createEvent"]["id"].as_str().unwrap().to_string();
    let (_, r_token) = r.user("rita@readonly.example").await;
    let r_ws = r.create_workspace(&r_token, "rita's").await;
    let d = r
        .gql_ok(
            &r_token,
            &create,
            event(&r_ws, "rita's", "2030-01-01T09:00:00Z", "2030-01-01T10:00:00Z"),
        )
        .await;
    let r_event = d["createEvent"]["id"].as_str().unwrap().to_string();
    peer(&a, &b, &[&b_ws], true).await;
    peer(&a, &r, &[&r_ws], false).await;
    let a_counts = a.row_counts().await;
    let a_tenant = fingerprint(&mut a.admin().await).await;
    let b_instance = json!({ "id": b.state.instance_id.to_string(), "name": b.state.instance.name });
    let r_id = r.state.instance_id.to_string();

    // Nested in the peer's workspace, within a window, with provenance.
    let d = a
        .gql_ok(
            &token,
            &format!(
                "query($id: ID!) {{ workspace(id: $id) {{ instance {{ name }} events(from: \"2030-01-01T00:00:00Z\", to: \"2030-01-02T00:00:00Z\") {{ totalCount edges {{ node {{ {EVENT_FIELDS} }} }} }} }} }}"
            ),
            json!({ "id": b_ws }),
        )
        .await;
    let events = &d["workspace"]["events"];
    assert_eq!(events["totalCount"], 2, "{d}");
    assert_eq!(
        events["edges"][0]["node"],
        json!({ "id": b_events[0], "title": "standup", "startsAt": "2030-01-01T09:00:00Z", "location": "Hall",
                "createdBy": { "email": "bob@writable.example" }, "workspace": { "id": b_ws }, "instance": b_instance })
    );
    assert_eq!(events["edges"][1]["node"]["title"], "review");

    // Paged with the owner's cursors: every event once, in order.
    let page = "query($id: ID!, $a: String) { workspace(id: $id) { events(first: 1, after: $a) { edges { node { id instance { name } } } pageInfo { hasNextPage hasPreviousPage endCursor } } } }";
    let (mut seen, mut after) = (Vec::new(), Value::Null);
    loop {
        let d = a.gql_ok(&token, page, json!({ "id": b_ws, "a": after })).await;
        let events = &d["workspace"]["events"];
        assert_eq!(events["pageInfo"]["hasPreviousPage"], !after.is_null());
        for e in events["edges"].as_array().unwrap() {
            assert_eq!(e["node"]["instance"]["name"], b_instance["name"]);
            seen.push(e["node"]["id"].as_str().unwrap().to_string());
        }
        if events["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = events["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, b_events);

    // node(id:) goes to the owner; outside the grant it is null.
    let node = format!("query($id: ID!) {{ node(id: $id) {{ ... on Event {{ {EVENT_FIELDS} }} }} }}");
    let d = a.gql_ok(&token, &node, json!({ "id": b_events[1] })).await;
    assert_eq!(d["node"]["title"], "review");
    assert_eq!(d["node"]["instance"], b_instance);
    assert!(a.gql_ok(&token, &node, json!({ "id": b_private })).await["node"].is_null());

    // The events of every reachable workspace, each answered by its owner.
    let d = a
        .gql_ok(
            &token,
            "{ workspaces(scope: {all: true}) { name events { totalCount } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        d["workspaces"],
        json!([{ "name": "bob's", "events": { "totalCount": 3 } }, { "name": "rita's", "events": { "totalCount": 1 } }])
    );

    // Read-write grant: create, update and delete happen on B.
    let d = a
        .gql_ok(
            &token,
            &create,
            event(&b_ws, "made at home", "2030-01-03T09:00:00Z", "2030-01-03T10:00:00Z"),
        )
        .await;
    let created = d["createEvent"]["id"].as_str().unwrap().to_string();
    assert!(
        created.starts_with(&format!("Event:{}:", b.state.instance_id)),
        "{created}"
    );
    assert_eq!(d["createEvent"]["instance"], b_instance);
    assert!(
        d["createEvent"]["createdBy"].is_null(),
        "made by a peer, not a user of B"
    );
    assert_eq!(
        event_in_db(&b, &created).await,
        Some(("made at home".into(), Some("Hall".into())))
    );
    let update = "mutation($i: UpdateEventInput!) { updateEvent(input: $i) { id title location instance { id } } }";
    let d = a
        .gql_ok(&token, update, json!({ "i": { "id": created, "location": null } }))
        .await;
    assert_eq!(d["updateEvent"]["title"], "made at home", "fields not given stay");
    assert_eq!(event_in_db(&b, &created).await, Some(("made at home".into(), None)));
    let delete = "mutation($id: ID!) { deleteEvent(id: $id) }";
    let d = a.gql_ok(&token, delete, json!({ "id": created })).await;
    assert_eq!(d["deleteEvent"], created);
    assert_eq!(event_in_db(&b, &created).await, None);

    // Read-only grant: every write refused with PEER_FORBIDDEN, nothing changes.
    let r_before = fingerprint(&mut r.admin().await).await;
    for (query, vars) in [
        (update, json!({ "i": { "id": r_event, "title": "should not happen" } })),
        (delete, json!({ "id": r_event })),
        (
            create.as_str(),
            event(
                &r_ws,
                "should not happen",
                "2030-01-01T09:00:00Z",
                "2030-01-01T10:00:00Z",
            ),
        ),
    ] {
        let body = a.gql(&token, query, vars).await;
        assert_eq!(
            common::errors(&body),
            vec![("PEER_FORBIDDEN".to_string(), r_id.clone())],
            "{query}: {body}"
        );
    }
    assert_eq!(fingerprint(&mut r.admin().await).await, r_before);

    // The home instance stored none of it.
    assert_eq!(a.row_counts().await, a_counts);
    assert_eq!(fingerprint(&mut a.admin().await).await, a_tenant);
}

// ---------------------------------------------------------------------------
// 9. Teams of a peer's workspace.
// ---------------------------------------------------------------------------

/// Teams of a granted workspace of a peer are read through the master with
/// their members and provenance, nested in the workspace and by `node(id:)`.
/// Their mutations are refused at the master (FORBIDDEN, nothing sent): the
/// policies give no peer grant, not even a read-write one, rights on teams.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn teams_of_a_peers_workspace_are_read_at_their_owner_and_not_written() {
    let (a, b) = tokio::join!(spawn_instance("home"), spawn_instance("writable"));
    let (_, token) = a.user("ann@home.example").await;
    let (_, b_token) = b.user("bob@writable.example").await;
    b.user("cat@writable.example").await;
    let b_ws = b.create_workspace(&b_token, "bob's").await;
    let b_private_ws = b.create_workspace(&b_token, "bob's private").await;
    b.add_member(&b_token, &b_ws, "cat@writable.example", "MEMBER").await;
    let create = "mutation($w: ID!, $n: String!) { createTeam(input: {workspaceId: $w, name: $n}) { id } }";
    let mut b_teams = Vec::new();
    for name in ["ops", "dev"] {
        let d = b.gql_ok(&b_token, create, json!({ "w": b_ws, "n": name })).await;
        b_teams.push(d["createTeam"]["id"].as_str().unwrap().to_string());
    }
    b.gql_ok(
        &b_token,
        "mutation($t: ID!) { addTeamMember(input: {teamId: $t, email: \"cat@writable.example\", role: MEMBER}) { role } }",
        json!({ "t": b_teams[1] }),
    )
    .await;
    let d = b
        .gql_ok(&b_token, create, json!({ "w": b_private_ws, "n": "hidden" }))
        .await;
    let b_private = d["createTeam"]["id"].as_str().unwrap().to_string();
    peer(&a, &b, &[&b_ws], true).await;
    let a_counts = a.row_counts().await;
    let a_tenant = fingerprint(&mut a.admin().await).await;
    let b_before = fingerprint(&mut b.admin().await).await;
    let b_instance = json!({ "id": b.state.instance_id.to_string(), "name": b.state.instance.name });

    // Nested in the peer's workspace, by name, with members and provenance.
    let fields = "id name workspace { id } instance { id name } members { role user { email instance { name } } }";
    let d = a
        .gql_ok(
            &token,
            &format!("query($id: ID!) {{ workspace(id: $id) {{ teams {{ {fields} }} }} }}"),
            json!({ "id": b_ws }),
        )
        .await;
    let member = |email: &str, role: &str| json!({ "role": role, "user": { "email": email, "instance": { "name": b_instance["name"] } } });
    assert_eq!(
        d["workspace"]["teams"],
        json!([
            { "id": b_teams[1], "name": "dev", "workspace": { "id": b_ws }, "instance": b_instance,
              "members": [member("bob@writable.example", "OWNER"), member("cat@writable.example", "MEMBER")] },
            { "id": b_teams[0], "name": "ops", "workspace": { "id": b_ws }, "instance": b_instance,
              "members": [member("bob@writable.example", "OWNER")] },
        ])
    );

    // node(id:) goes to the owner; outside the grant it is null.
    let node = format!("query($id: ID!) {{ node(id: $id) {{ ... on Team {{ {fields} }} }} }}");
    let d = a.gql_ok(&token, &node, json!({ "id": b_teams[0] })).await;
    assert_eq!(d["node"]["name"], "ops");
    assert_eq!(d["node"]["instance"], b_instance);
    assert!(a.gql_ok(&token, &node, json!({ "id": b_private })).await["node"].is_null());

    // Every reachable workspace's teams, each answered by its owner.
    let d = a
        .gql_ok(
            &token,
            "{ workspaces(scope: {all: true}) { name teams { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        d["workspaces"],
        json!([{ "name": "bob's", "teams": [{ "name": "dev" }, { "name": "ops" }] }])
    );

    // Even under a read-write grant, team mutations are refused at the master.
    for (query, vars, field) in [
        (create, json!({ "w": b_ws, "n": "from home" }), "workspaceId"),
        (
            "mutation($t: ID!) { renameTeam(input: {id: $t, name: \"from home\"}) { id } }",
            json!({ "t": b_teams[0] }),
            "id",
        ),
        (
            "mutation($t: ID!) { deleteTeam(id: $t) }",
            json!({ "t": b_teams[0] }),
            "id",
        ),
        (
            "mutation($t: ID!) { addTeamMember(input: {teamId: $t, email: \"cat@writable.example\", role: ADMIN}) { role } }",
            json!({ "t": b_teams[0] }),
            "teamId",
        ),
    ] {
        let body = a.gql(&token, query, vars).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{query}: {body}");
        assert!(
            body["errors"][0]["message"].as_str().unwrap().starts_with(field),
            "{query}: {body}"
        );
    }
    assert_eq!(fingerprint(&mut b.admin().await).await, b_before);

    // The home instance stored none of it.
    assert_eq!(a.row_counts().await, a_counts);
    assert_eq!(fingerprint(&mut a.admin().await).await, a_tenant);
}

// ---------------------------------------------------------------------------
// 8. Shares of a page.
// ---------------------------------------------------------------------------

/// Signed requests `asking` has sent to the peer named `peer`.
async fn requests_to(asking: &TestApp, peer: &str) -> u64 {
    let metrics = asking.get_text("/metrics").await;
    let line = format!("mosaic_federation_requests_total{{peer=\"{peer}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// With three sources, each is first asked for its share of a page (14 of
/// 20), not all of it. A peer whose rows fill most of the page is asked
/// once more, from its last row, for what the page can still take from it;
/// the others are not. The pages are exactly the global order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_holding_more_than_its_share_is_asked_again_and_pages_stay_exact() {
    let (m, p, q) = tokio::join!(
        spawn_instance("master"),
        spawn_instance("papa"),
        spawn_instance("quebec")
    );
    let (_, token) = m.user("ann@master.example").await;
    let mut titles = Vec::new();
    let mut seed = async |app: &TestApp, token: &str, prefix: &str, n: usize| {
        let ws = app.create_workspace(token, prefix).await;
        for i in 0..n {
            let title = format!("{prefix}{i:02}");
            app.create_task(token, &ws, &title).await;
            titles.push(title);
        }
        ws
    };
    seed(&m, &token, "z", 2).await;
    for (spoke, prefix, n) in [(&p, "a", 30), (&q, "y", 2)] {
        let (_, owner) = spoke.user(&format!("owner@{prefix}.example")).await;
        let ws = seed(spoke, &owner, prefix, n).await;
        peer(&m, spoke, &[&ws], false).await;
    }
    titles.sort();
    let order = json!({ "field": "TITLE", "direction": "ASC" });
    let ask = |after: Option<String>| {
        m.gql(
            &token,
            TASKS,
            json!({ "scope": all(), "o": order, "first": 20, "after": after }),
        )
    };
    let titles_of = |body: &Value| -> Vec<String> {
        nodes(std::slice::from_ref(body))
            .iter()
            .map(|n| n["title"].as_str().unwrap().to_string())
            .collect()
    };

    let (p_before, q_before) = (requests_to(&m, "papa").await, requests_to(&m, "quebec").await);
    let first = ask(None).await;
    assert!(first.get("errors").is_none(), "{first}");
    assert_eq!(titles_of(&first), titles[..20], "{first}");
    assert_eq!(first["data"]["tasks"]["pageInfo"]["hasNextPage"], true);
    assert_eq!(
        first["data"]["tasks"]["totalCount"], 34,
        "totals come from the first round"
    );
    assert_eq!(first["extensions"]["federation"]["succeeded"], 3, "{first}");
    assert_eq!(
        requests_to(&m, "papa").await - p_before,
        2,
        "papa's 14 rows were short of the page"
    );
    assert_eq!(requests_to(&m, "quebec").await - q_before, 1, "quebec had nothing more");

    // The rest: papa's last ten and everyone else's, in one round.
    let after = first["data"]["tasks"]["pageInfo"]["endCursor"]
        .as_str()
        .map(String::from);
    let p_before = requests_to(&m, "papa").await;
    let rest = ask(after).await;
    assert!(rest.get("errors").is_none(), "{rest}");
    assert_eq!(titles_of(&rest), titles[20..], "{rest}");
    assert_eq!(rest["data"]["tasks"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(requests_to(&m, "papa").await - p_before, 1);
}
