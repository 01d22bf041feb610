//! Scheduled jobs (reaping, pruning) that every replica of an instance
//! runs on its own timer, but only one at a time: the one holding the job's
//! advisory lock. The lock lives in a transaction, so it is released however
//! the job ends, and a replica that dies releases it with its connection.

use sqlx::PgPool;

/// Runs `work` unless another replica runs the job `name` now (then None).
pub async fn on_one_replica<T>(
    pool: &PgPool,
    name: &str,
    work: impl Future<Output = T>,
) -> Result<Option<T>, sqlx::Error> {
    let mut holder = pool.begin().await?;
    let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('mosaic.job'), hashtext($1))")
        .bind(name)
        .fetch_one(&mut *holder)
        .await?;
    if !mine {
        return Ok(None);
    }
    let done = work.await;
    holder.rollback().await?;
    Ok(Some(done))
}
