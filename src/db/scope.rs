//! One request, one transaction, one scope.
//!
//! The transaction begins lazily on first use, and its first statement sets
//! the scope with `set_config(..., true)`: transaction-local, so the settings
//! vanish at commit or rollback and a pooled connection never carries one
//! request's scope into the next.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
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

/// The request's transaction, shared by its resolvers.
pub struct RequestDb {
    pool: PgPool,
    scope: Scope,
    statement_timeout: Duration,
    /// Reads only, from one snapshot (a page and its totalCount agree).
    read_only: bool,
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
            tx: Mutex::new(None),
        }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The scoped connection; begins the transaction on first use.
    pub async fn conn(&self) -> Result<MappedMutexGuard<'_, PgConnection>, sqlx::Error> {
        let mut guard = self.tx.lock().await;
        if guard.is_none() {
            let mut tx = if self.read_only {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?
            } else {
                self.pool.begin().await?
            };
            sqlx::query(
                "SELECT set_config('mosaic.user_id', $1, true),
                        set_config('mosaic.workspace_ids', $2, true),
                        set_config('mosaic.write_workspace_ids', $3, true),
                        set_config('statement_timeout', $4, true)",
            )
            .bind(self.scope.user_id.map(|u| u.to_string()).unwrap_or_default())
            .bind(pg_array(&self.scope.read_workspaces))
            .bind(pg_array(&self.scope.write_workspaces))
            .bind(self.statement_timeout.as_millis().to_string())
            .execute(&mut *tx)
            .await?;
            *guard = Some(tx);
        }
        Ok(MutexGuard::map(guard, |tx| &mut **tx.as_mut().expect("begun above")))
    }

    /// Commits if a transaction was begun.
    pub async fn commit(&self) -> Result<(), sqlx::Error> {
        if let Some(tx) = self.tx.lock().await.take() {
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
