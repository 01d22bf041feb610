//! One request, one transaction, one scope.
//!
//! The transaction begins lazily on first use, and its first statement sets
//! the scope with `set_config(..., true)`: transaction-local, so the settings
//! vanish at commit or rollback and a pooled connection never carries one
//! request's scope into the next.

use std::time::Duration;

use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use uuid::Uuid;

/// Whose rights a request runs with. The policies read these settings.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// The acting local user, if any.
    pub user_id: Option<Uuid>,
    /// Workspaces a peer grant exposes (read).
    pub read_workspaces: Vec<Uuid>,
    /// Workspaces a read-write peer grant lets the peer change.
    pub write_workspaces: Vec<Uuid>,
    /// Set for a peer's request: what its grant lets it reach.
    pub peer: Option<PeerScope>,
}

/// A peer's request: the resources its grant names (the policies of each
/// resource's tables require it), and who asked, for the activity log.
#[derive(Clone, Debug)]
pub struct PeerScope {
    pub peer_id: Uuid,
    /// Resource names (lower case and `_` only); never empty.
    pub resources: Vec<&'static str>,
    pub write_resources: Vec<&'static str>,
    /// The remote person's global User ID, as (instance, user).
    pub remote_actor: Option<(Uuid, Uuid)>,
}

impl Scope {
    pub fn user(id: Uuid) -> Self {
        Self {
            user_id: Some(id),
            ..Self::default()
        }
    }
}

fn pg_array(ids: &[Uuid]) -> String {
    let items: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    format!("{{{}}}", items.join(","))
}

/// The peer's settings for the BEGIN statement: resource names are checked
/// to be lower-case words (they are constants of `federation::grant`), the
/// rest are UUIDs.
fn peer_settings(p: &PeerScope) -> String {
    let names = |rs: &[&'static str]| {
        assert!(
            rs.iter()
                .all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')),
            "resource names are lower-case words"
        );
        format!("{{{}}}", rs.join(","))
    };
    let actor = p
        .remote_actor
        .map(|(instance, user)| format!("User:{instance}:{user}"))
        .unwrap_or_default();
    format!(
        ", set_config('mosaic.resources', '{}', true), set_config('mosaic.write_resources', '{}', true), \
         set_config('mosaic.peer_id', '{}', true), set_config('mosaic.remote_actor', '{actor}', true)",
        names(&p.resources),
        names(&p.write_resources),
        p.peer_id
    )
}

/// A peer request's admission where every replica sees it: its nonce,
/// and a token from the peer's bucket when its grant limits the rate
/// (`admit_peer_request_or_refuse`, migration 0088). It goes in the round
/// trip that begins the request's transaction, in a transaction of its own
/// that commits first; a refusal ends the round trip before BEGIN
/// (`RequestDb::begin` fails with SQLSTATE [`REFUSED`]).
#[derive(Clone, Debug)]
pub struct Admission {
    pub origin: Uuid,
    /// base64url (checked with the signature), at most 64 characters.
    pub nonce: String,
    pub keep_until: i64,
    /// Tokens per second and the burst.
    pub limit: Option<(f64, f64)>,
}

/// The SQLSTATE of an admission that was not granted: its message is the
/// outcome (`replayed`, `expired`, `limited`), its detail the milliseconds
/// until a token is free.
pub const REFUSED: &str = "MSADM";

impl Admission {
    /// The statement in the text of BEGIN's round trip: safe only because
    /// the nonce is checked to be base64url here, and the rest are a UUID
    /// and numbers.
    fn statement(&self) -> String {
        assert!(
            self.nonce.len() <= 64
                && self
                    .nonce
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "nonces are base64url"
        );
        let (rate, burst) = match self.limit {
            Some((rate, burst)) if rate.is_finite() && burst.is_finite() => (rate.to_string(), burst.to_string()),
            _ => ("NULL".into(), "NULL".into()),
        };
        format!(
            "BEGIN; SELECT admit_peer_request_or_refuse('{}', '{}', {}, {rate}, {burst}); COMMIT; ",
            self.origin, self.nonce, self.keep_until
        )
    }
}

/// The request's transaction, shared by its resolvers.
pub struct RequestDb {
    pool: PgPool,
    scope: Scope,
    statement_timeout: Duration,
    /// Reads only, from one snapshot (a page and its totalCount agree).
    read_only: bool,
    /// A peer request's admission, sent with BEGIN.
    admission: Option<Admission>,
    tx: Mutex<Option<Transaction<'static, Postgres>>>,
}

impl RequestDb {
    /// `read_only`: a query, which sees one snapshot and cannot write; a
    /// mutation reads committed data as it goes.
    pub fn new(pool: PgPool, scope: Scope, statement_timeout: Duration, read_only: bool) -> Self {
        Self {
            pool,
            scope,
            statement_timeout,
            read_only,
            admission: None,
            tx: Mutex::new(None),
        }
    }

    /// Admits a peer's request in the round trip that begins its transaction.
    pub fn admitting(self, admission: Admission) -> Self {
        Self {
            admission: Some(admission),
            ..self
        }
    }

    /// Begins the transaction now (with the admission, if any).
    pub async fn begin(&self) -> Result<(), sqlx::Error> {
        self.conn().await.map(drop)
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The scoped connection; begins the transaction on first use.
    pub async fn conn(&self) -> Result<MappedMutexGuard<'_, PgConnection>, sqlx::Error> {
        let mut guard = self.tx.lock().await;
        if guard.is_none() {
            *guard = Some(self.pool.begin_with(self.begin_statement()).await?);
        }
        Ok(MutexGuard::map(guard, |tx| &mut **tx.as_mut().expect("begun above")))
    }

    /// BEGIN and the scope in one round trip (one simple query). The values
    /// are written into the text, which is safe only because every one is
    /// made here from UUIDs and a number, never from a caller's text.
    fn begin_statement(&self) -> AssertSqlSafe<String> {
        let begin = if self.read_only {
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        } else {
            "BEGIN"
        };
        let user = self.scope.user_id.map(|u| u.to_string()).unwrap_or_default();
        // A local user's request sets no peer settings: its statement is as before.
        let peer = self.scope.peer.as_ref().map(peer_settings).unwrap_or_default();
        let admission = self.admission.as_ref().map(Admission::statement).unwrap_or_default();
        AssertSqlSafe(format!(
            "{admission}{begin}; SELECT set_config('mosaic.user_id', '{user}', true), \
             set_config('mosaic.workspace_ids', '{}', true), \
             set_config('mosaic.write_workspace_ids', '{}', true), \
             set_config('statement_timeout', '{}', true){peer}",
            pg_array(&self.scope.read_workspaces),
            pg_array(&self.scope.write_workspaces),
            self.statement_timeout.as_millis()
        ))
    }

    /// Ends the transaction keeping its writes. A read-only one is simply
    /// dropped: its ROLLBACK is sent when the connection returns to the pool,
    /// off the request's path, and means the same as a COMMIT would.
    pub async fn commit(&self) -> Result<(), sqlx::Error> {
        if let Some(tx) = self.tx.lock().await.take()
            && !self.read_only
        {
            tx.commit().await?;
        }
        Ok(())
    }

    /// Rolls back if a transaction was begun: nothing of the request remains.
    pub async fn rollback(&self) -> Result<(), sqlx::Error> {
        if let Some(tx) = self.tx.lock().await.take() {
            tx.rollback().await?;
        }
        Ok(())
    }
}
