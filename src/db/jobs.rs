//! Scheduled jobs (reaping, dispatching) that every replica of an instance
//! runs on its own timer, but only one at a time: the one holding the job's
//! advisory lock. The lock is held on a connection of its own, outside the
//! pool (the job needs the pool's, however small it is), in a transaction,
//! so it is released however the job ends, and with the connection if the
//! replica dies.

use sqlx::{Connection, PgConnection, PgPool};

/// Runs `work` unless another replica runs the job `name` now (then None).
pub async fn on_one_replica<T>(
    pool: &PgPool,
    name: &str,
    work: impl Future<Output = T>,
) -> Result<Option<T>, sqlx::Error> {
    let mut holder = PgConnection::connect_with(&pool.connect_options()).await?;
    let mut lock = holder.begin().await?;
    let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('mosaic.job'), hashtext($1))")
        .bind(name)
        .fetch_one(&mut *lock)
        .await?;
    if !mine {
        return Ok(None);
    }
    let done = work.await;
    lock.rollback().await?;
    holder.close().await?;
    Ok(Some(done))
}
