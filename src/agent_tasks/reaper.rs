//! The reaper: a task whose agent sent no heartbeat within
//! `agent_tasks.heartbeat_timeout` goes back to the queue, to resume from
//! its last checkpoint on whichever agent claims it next (DEAD after its
//! last attempt). It acts for no one, through migration 0063's one definer;
//! one replica at a time.

use std::time::Duration;

use sqlx::PgPool;

/// Returns lost tasks to the queue every `interval` until `closing` resolves.
pub async fn run(pool: PgPool, timeout: Duration, interval: Duration, closing: impl Future<Output = ()>) {
    tokio::pin!(closing);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut closing => return,
            _ = tick.tick() => {}
        }
        match crate::db::jobs::on_one_replica(&pool, "agent_tasks.reap", reap(&pool, timeout)).await {
            Ok(None | Some(Ok(0))) => {}
            Ok(Some(Ok(n))) => tracing::info!(tasks = n, "agent tasks returned to the queue after a missed heartbeat"),
            Ok(Some(Err(e))) | Err(e) => tracing::warn!(error = %e, "reaping agent tasks"),
        }
    }
}

/// One pass: the number of tasks returned (or DEAD).
pub async fn reap(pool: &PgPool, timeout: Duration) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT agent_tasks_reap($1 * interval '1 millisecond')")
        .bind(timeout.as_millis() as f64)
        .fetch_one(pool)
        .await
}
