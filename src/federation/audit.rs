//! The request audit: one row per request a peer made to this instance,
//! allowed, refused (with the precise code, also for refusals that look
//! alike from outside) or failed (migration 0080).
//!
//! Recording never waits: an entry goes into a bounded queue in memory, and
//! a writer adds what is queued to PostgreSQL in one statement per batch
//! (every second, 100 ms after an entry found the queue empty, and at
//! shutdown). A full queue drops the entry, counts it
//! (`mosaic_federation_audit_dropped_total`) and says so in the log at most
//! every ten seconds. Rows older than
//! `federation.audit_retention_days` are pruned by one replica at a time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_graphql::Enum;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// The most entries written in one statement.
const BATCH: usize = 1000;
/// How often the writer looks at the queue without being woken.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// How long the first entry into an empty queue waits for others.
const GATHER: Duration = Duration::from_millis(100);
/// How often a replica offers to prune.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "FederationAuditOutcome")]
pub enum Outcome {
    /// Verified, allowed and answered.
    Allowed,
    /// Refused, before or after its signature verified (`code` says why).
    Refused,
    /// Allowed, but running it failed.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "ALLOWED",
            Self::Refused => "REFUSED",
            Self::Failed => "FAILED",
        }
    }
}

impl TryFrom<String> for Outcome {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        [Self::Allowed, Self::Refused, Self::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("not an audit outcome: {s}"))
    }
}

/// One peer request, as the audit keeps it.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The instance the request came from: verified, or only as it claimed.
    pub peer_id: Option<Uuid>,
    pub verified: bool,
    /// The remote person the envelope named (global User ID).
    pub remote_user: Option<String>,
    /// QUERY, COMMAND, EVENT, DISCONNECT or CONNECT.
    pub verb: &'static str,
    /// The root fields the request asked for.
    pub resources: Vec<String>,
    /// Hex SHA-256 of the normalised GraphQL document ([`query_hash`]).
    pub query_hash: Option<String>,
    pub outcome: Outcome,
    pub code: Option<String>,
    pub rows: i64,
    pub bytes: i64,
    pub latency_ms: i64,
    #[serde(skip)]
    started: std::time::Instant,
}

impl Entry {
    /// A request of `verb` that just arrived; the handler fills in the rest.
    pub fn begin(verb: &'static str) -> Self {
        Self {
            id: Uuid::now_v7(),
            at: OffsetDateTime::now_utc(),
            peer_id: None,
            verified: false,
            remote_user: None,
            verb,
            resources: Vec::new(),
            query_hash: None,
            outcome: Outcome::Allowed,
            code: None,
            rows: 0,
            bytes: 0,
            latency_ms: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Sets the outcome and its code.
    pub fn set(&mut self, outcome: Outcome, code: &str) {
        self.outcome = outcome;
        self.code = Some(code.to_string());
    }

    /// Ends the entry: how long the request took.
    pub fn finish(mut self) -> Self {
        self.latency_ms = self.started.elapsed().as_millis() as i64;
        self
    }
}

pub struct Audit {
    queue: Mutex<Vec<Entry>>,
    capacity: usize,
    wake: tokio::sync::Notify,
    dropped: Counter,
    /// When a drop was last logged (Unix seconds).
    drop_logged_at: AtomicI64,
}

impl Audit {
    /// An audit holding at most `capacity` unwritten entries (0: off),
    /// counting drops in `dropped`.
    pub fn new(capacity: usize, dropped: Counter) -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            capacity,
            wake: tokio::sync::Notify::new(),
            dropped,
            drop_logged_at: AtomicI64::new(0),
        }
    }

    /// Queues `entry` for the writer; drops it (counted) when the queue is full.
    pub fn record(&self, entry: Entry) {
        if self.capacity == 0 {
            return;
        }
        let was_empty = {
            let mut queue = self.queue.lock().expect("audit queue lock");
            if queue.len() >= self.capacity {
                drop(queue);
                self.dropped.inc();
                let now = OffsetDateTime::now_utc().unix_timestamp();
                let last = self.drop_logged_at.load(Ordering::Relaxed);
                if now - last >= 10
                    && self
                        .drop_logged_at
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        dropped_total = self.dropped.get(),
                        "the federation audit queue is full: entries are being dropped"
                    );
                }
                return;
            }
            queue.push(entry);
            queue.len() == 1
        };
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Entries dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Writes what is queued now. Entries that cannot be written are dropped
    /// (counted and logged): the queue must stay bounded.
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let entries = std::mem::take(&mut *self.queue.lock().expect("audit queue lock"));
        for batch in entries.chunks(BATCH) {
            let rows = serde_json::to_value(batch).expect("audit entries serialise");
            if let Err(e) = sqlx::query("SELECT record_federation_audit($1)")
                .bind(rows)
                .execute(pool)
                .await
            {
                self.dropped.inc_by(batch.len() as u64);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The writer: flushes when woken or every second until `closing`, and
    /// prunes about once an hour on one replica at a time.
    pub async fn write_until(&self, pool: &PgPool, retention_days: u32, closing: impl Future<Output = ()>) {
        tokio::pin!(closing);
        let mut next_prune = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = &mut closing => return,
                () = self.wake.notified() => {
                    // A batch gathers first: under load, writing at once
                    // would cost a statement and a commit per request.
                    // (Shutdown writes what is left.)
                    tokio::select! {
                        () = &mut closing => return,
                        () = tokio::time::sleep(GATHER) => {}
                    }
                }
                () = tokio::time::sleep(WRITE_EVERY) => {}
            }
            if let Err(e) = self.flush(pool).await {
                tracing::warn!(error = %e, "writing the federation audit");
            }
            if tokio::time::Instant::now() >= next_prune {
                next_prune += PRUNE_EVERY;
                match crate::db::jobs::on_one_replica(pool, "federation.audit.prune", prune(pool, retention_days)).await
                {
                    Ok(Some(Ok(n))) if n > 0 => tracing::info!(pruned = n, "pruned the federation audit"),
                    Ok(Some(Err(e))) | Err(e) => tracing::warn!(error = %e, "pruning the federation audit"),
                    _ => {}
                }
            }
        }
    }
}

/// Deletes the rows older than `retention_days`; how many.
pub async fn prune(conn: impl sqlx::PgExecutor<'_>, retention_days: u32) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT prune_federation_audit($1)")
        .bind(retention_days as i32)
        .fetch_one(conn)
        .await
}

/// SHA-256 (hex) of a GraphQL document with its insignificant parts taken
/// out (comments, commas, runs of white space, space around punctuators),
/// so the same query sent with other layout has the same hash. Strings are
/// kept as they are.
pub fn query_hash(document: &str) -> String {
    hex(&Sha256::digest(normalise(document).as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const PUNCTUATORS: &str = "!$&().:=@[]{}|";

fn normalise(document: &str) -> String {
    let mut out = String::with_capacity(document.len());
    let mut chars = document.chars().peekable();
    let mut space = false;
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
                space = true;
            }
            c if c.is_whitespace() || c == ',' || c == '\u{feff}' => space = true,
            '"' => {
                push(&mut out, '"', &mut space);
                if chars.next_if_eq(&'"').is_some() {
                    out.push('"');
                    if chars.next_if_eq(&'"').is_none() {
                        continue; // `""`, the empty string
                    }
                    out.push('"');
                    copy_block_string(&mut out, &mut chars);
                } else {
                    copy_string(&mut out, &mut chars);
                }
            }
            c => push(&mut out, c, &mut space),
        }
    }
    out
}

/// Appends `c`, after one space if white space came before it and neither
/// side is a punctuator.
fn push(out: &mut String, c: char, space: &mut bool) {
    let punctuator = |c: char| PUNCTUATORS.contains(c);
    if *space && !out.is_empty() && !punctuator(c) && !out.ends_with(punctuator) {
        out.push(' ');
    }
    *space = false;
    out.push(c);
}

/// The rest of a `"string"`, up to its unescaped closing quote.
fn copy_string(out: &mut String, chars: &mut impl Iterator<Item = char>) {
    let mut escaped = false;
    for c in chars {
        out.push(c);
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return,
            _ => {}
        }
    }
}

/// The rest of a `"""block string"""`, up to its closing `"""` (`\"""` is
/// escaped).
fn copy_block_string(out: &mut String, chars: &mut impl Iterator<Item = char>) {
    let (mut quotes, mut previous) = (0, '\0');
    for c in chars {
        out.push(c);
        quotes = match c {
            '"' if quotes == 0 && previous == '\\' => 0,
            '"' => quotes + 1,
            _ => 0,
        };
        if quotes == 3 {
            return;
        }
        previous = c;
    }
}

/// How many objects the lists in a GraphQL answer's data hold (an edge
/// counts, its node not again): the rows a request returned.
pub fn rows_in(value: &async_graphql::Value) -> i64 {
    use async_graphql::Value;
    match value {
        Value::List(items) => items
            .iter()
            .map(|v| i64::from(matches!(v, Value::Object(_))) + rows_in(v))
            .sum(),
        Value::Object(fields) => fields.values().map(rows_in).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layout_does_not_change_the_hash_but_content_does() {
        let a = "query Q($n: Int) { tasks(first: $n) { edges { node { id title } } } }";
        let b = "query Q($n:Int){\n  # the newest\n  tasks(first:$n) {edges {node {id, title}}}\n}\n";
        assert_eq!(normalise(a), normalise(b));
        assert_eq!(query_hash(a), query_hash(b));
        assert_eq!(normalise(a), "query Q($n:Int){tasks(first:$n){edges{node{id title}}}}");
        assert_ne!(query_hash(a), query_hash("{ tasks { edges { node { id } } } }"));
        assert_eq!(query_hash(a).len(), 64);
    }

    #[test]
    fn strings_keep_their_spaces_commas_and_hashes() {
        let q = r#"{ search(text: "a,  b # c \" d") { id } }"#;
        assert_eq!(normalise(q), r#"{search(text:"a,  b # c \" d"){id}}"#);
        let block = "{ f(text: \"\"\"x,  \"\" y\"\"\") { id } }";
        assert_eq!(normalise(block), "{f(text:\"\"\"x,  \"\" y\"\"\"){id}}");
        assert_eq!(normalise("{ f(a: \"\", b: 1) }"), "{f(a:\"\" b:1)}");
        assert_ne!(
            query_hash(r#"{ f(t: "a b") }"#),
            query_hash(r#"{ f(t: "a  b") }"#),
            "strings are content"
        );
    }

    #[test]
    fn rows_count_the_objects_in_lists() {
        let rows = |v: serde_json::Value| rows_in(&async_graphql::Value::from_json(v).unwrap());
        let data = json!({ "tasks": { "edges": [
            { "node": { "id": 1, "labels": [{ "n": 1 }, { "n": 2 }] } },
            { "node": { "id": 2, "labels": [] } }
        ], "totalCount": 2 } });
        assert_eq!(rows(data), 4, "two edges and two labels");
        assert_eq!(rows(json!({ "workspace": { "id": 1 } })), 0);
        assert_eq!(rows(json!({ "ids": [1, 2, 3] })), 0, "scalars are not rows");
    }
}
