//! Throttling of password guesses at the break-glass login.
//!
//! Each account (by normalised e-mail, known or not, so the answer does not
//! tell which addresses exist) may fail `FREE_ATTEMPTS` times within
//! `WINDOW`; after that every attempt must wait for a delay that doubles with
//! each further attempt, up to `MAX_WAIT`. The cap is deliberately short: an
//! attacker can delay the real administrator by at most a minute at a time,
//! while guessing is held to about one try a minute (a 12+ character password
//! stays out of reach). An attempt counts when it starts, so parallel guesses
//! cannot slip in before the first failures are recorded; the wait runs from
//! when the last one failed, and success clears the account. The policy is a
//! pure function (tested without sleeping); the attempts are kept in the
//! database, so the throttle holds across replicas.

use std::time::Duration;

use sqlx::PgPool;

pub const FREE_ATTEMPTS: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How long an account must wait after `count` attempts in the window.
fn wait_after(count: u32) -> Duration {
    if count < FREE_ATTEMPTS {
        return Duration::ZERO;
    }
    let doublings = (count - FREE_ATTEMPTS).min(16);
    FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT)
}

/// The policy: given an account's attempts so far and the time since the
/// last, the count with this attempt, or how long it must still wait (a
/// refused attempt is not counted).
fn admit(previous: Option<(u32, Duration)>) -> Result<u32, Duration> {
    match previous.filter(|(_, since)| *since < WINDOW) {
        None => Ok(1),
        Some((count, since)) => match wait_after(count).checked_sub(since) {
            Some(left) if !left.is_zero() => Err(left),
            _ => Ok(count + 1),
        },
    }
}

/// Starts an attempt for `account`: counted now, or refused with the time
/// left to wait. The state is in the database (migration 0071), so every
/// replica of the instance throttles the same account alike.
pub async fn begin(pool: &PgPool, account: &str) -> Result<Result<(), Duration>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let previous: Option<(i32, i64)> =
        sqlx::query_as("SELECT attempts, since_last_ms FROM breakglass_attempts_take($1)")
            .bind(account)
            .fetch_optional(&mut *tx)
            .await?;
    let previous = previous.map(|(n, ms)| (n.max(0) as u32, Duration::from_millis(ms.max(0) as u64)));
    let count = match admit(previous) {
        Ok(count) => count,
        Err(wait) => return Ok(Err(wait)),
    };
    sqlx::query("SELECT breakglass_attempts_count($1, $2, $3)")
        .bind(account)
        .bind(count.min(i32::MAX as u32) as i32)
        .bind(WINDOW.as_secs() as i32)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// The attempt ended: a failure makes the wait run from now (password
/// hashing may take a while), a success starts the account afresh.
pub async fn end(pool: &PgPool, account: &str, succeeded: bool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT breakglass_attempts_end($1, $2)")
        .bind(account)
        .bind(succeeded)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_attempts_then_doubling_waits_up_to_the_cap() {
        let mut count = 0;
        for _ in 0..FREE_ATTEMPTS {
            count = admit((count > 0).then_some((count, Duration::ZERO))).unwrap();
        }
        assert_eq!(count, FREE_ATTEMPTS);
        // Five used: the sixth waits one second, and being refused does not extend it.
        assert_eq!(admit(Some((count, Duration::ZERO))), Err(FIRST_WAIT));
        assert_eq!(
            admit(Some((count, Duration::from_millis(500)))),
            Err(Duration::from_millis(500))
        );
        let mut waits = Vec::new();
        for _ in 0..9 {
            let wait = admit(Some((count, Duration::ZERO))).unwrap_err();
            waits.push(wait.as_secs());
            count = admit(Some((count, wait))).unwrap();
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_quiet_window_starts_afresh() {
        assert_eq!(admit(Some((40, WINDOW - Duration::from_secs(1)))), Ok(41));
        assert_eq!(admit(Some((40, WINDOW))), Ok(1));
        assert_eq!(admit(None), Ok(1));
    }
}
