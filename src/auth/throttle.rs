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
//! when the last one failed, and success clears the account. The clock is passed in, so the policy is tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FREE_ATTEMPTS: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Accounts tracked at most; beyond it the least recently tried is forgotten.
const MAX_TRACKED: usize = 100_000;

#[derive(Clone, Copy)]
struct Attempts {
    count: u32,
    last: Instant,
}

#[derive(Default)]
pub struct LoginThrottle {
    accounts: Mutex<HashMap<String, Attempts>>,
}

/// How long an account must wait after `count` attempts in the window.
fn wait_after(count: u32) -> Duration {
    if count < FREE_ATTEMPTS {
        return Duration::ZERO;
    }
    let doublings = (count - FREE_ATTEMPTS).min(16);
    FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT)
}

impl LoginThrottle {
    /// Starts an attempt for `account`: counted now, or refused with the time
    /// left to wait (the refused attempt is not counted).
    pub fn begin(&self, account: &str, now: Instant) -> Result<(), Duration> {
        let mut accounts = self.accounts.lock().expect("throttle lock");
        let entry = accounts
            .get(account)
            .copied()
            .filter(|a| now.duration_since(a.last) < WINDOW);
        let count = match entry {
            Some(a) => {
                let ready = a.last + wait_after(a.count);
                if now < ready {
                    return Err(ready - now);
                }
                a.count + 1
            }
            None => 1,
        };
        if accounts.len() >= MAX_TRACKED && !accounts.contains_key(account) {
            forget_oldest(&mut accounts, now);
        }
        accounts.insert(account.to_string(), Attempts { count, last: now });
        Ok(())
    }

    /// The attempt failed: the wait runs from now, when the check ended
    /// (password hashing may take a while).
    pub fn failed(&self, account: &str, now: Instant) {
        if let Some(a) = self.accounts.lock().expect("throttle lock").get_mut(account) {
            a.last = a.last.max(now);
        }
    }

    /// The attempt succeeded: the account starts afresh.
    pub fn succeeded(&self, account: &str) {
        self.accounts.lock().expect("throttle lock").remove(account);
    }
}

/// Drops expired entries, or else the least recently tried one.
fn forget_oldest(accounts: &mut HashMap<String, Attempts>, now: Instant) {
    accounts.retain(|_, a| now.duration_since(a.last) < WINDOW);
    if accounts.len() >= MAX_TRACKED
        && let Some(oldest) = accounts.iter().min_by_key(|(_, a)| a.last).map(|(k, _)| k.clone())
    {
        accounts.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_attempts_then_doubling_waits_up_to_the_cap() {
        let t = LoginThrottle::default();
        let start = Instant::now();
        for _ in 0..FREE_ATTEMPTS {
            assert_eq!(t.begin("a@x", start), Ok(()));
        }
        // Five used: the sixth waits one second, and being refused does not extend it.
        assert_eq!(t.begin("a@x", start), Err(FIRST_WAIT));
        let half = start + Duration::from_millis(500);
        assert_eq!(t.begin("a@x", half), Err(Duration::from_millis(500)));
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let wait = t.begin("a@x", now).unwrap_err();
            waits.push(wait.as_secs());
            now += wait;
            assert_eq!(t.begin("a@x", now), Ok(()));
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Other accounts are not affected.
        assert_eq!(t.begin("b@x", now), Ok(()));
    }

    #[test]
    fn the_wait_runs_from_when_the_check_failed() {
        let t = LoginThrottle::default();
        let start = Instant::now();
        for _ in 0..FREE_ATTEMPTS {
            t.begin("a@x", start).unwrap();
        }
        let failed_at = start + Duration::from_secs(3);
        t.failed("a@x", failed_at);
        assert_eq!(
            t.begin("a@x", start + Duration::from_secs(2)),
            Err(Duration::from_secs(2))
        );
        assert_eq!(t.begin("a@x", failed_at), Err(FIRST_WAIT));
        // A late report of an earlier failure does not move the clock back.
        t.failed("a@x", start);
        assert_eq!(t.begin("a@x", failed_at + FIRST_WAIT), Ok(()));
    }

    #[test]
    fn success_and_a_quiet_window_start_afresh() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..FREE_ATTEMPTS {
            t.begin("a@x", now).unwrap();
        }
        assert!(t.begin("a@x", now).is_err());
        t.succeeded("a@x");
        assert_eq!(t.begin("a@x", now), Ok(()));

        for _ in 0..FREE_ATTEMPTS {
            t.begin("b@x", now).unwrap();
        }
        assert!(t.begin("b@x", now).is_err());
        let later = now + WINDOW;
        for _ in 0..FREE_ATTEMPTS {
            assert_eq!(t.begin("b@x", later), Ok(()));
        }
    }

    #[test]
    fn memory_is_bounded() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            t.begin(&format!("{i}@x"), now + Duration::from_nanos(i as u64))
                .unwrap();
        }
        let accounts = t.accounts.lock().unwrap();
        assert_eq!(accounts.len(), MAX_TRACKED);
        assert!(!accounts.contains_key("0@x"), "the least recently tried is forgotten");
        assert!(accounts.contains_key(&format!("{}@x", MAX_TRACKED + 9)));
    }
}
