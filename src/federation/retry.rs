//! When a failed read is asked again (pure: the clock is passed in).
//!
//! Only reads are retried, only failures that say nothing against asking
//! again (see `PeerError::transient`), only while the request's deadline
//! leaves room for the wait and another attempt, and only within a budget
//! shared by the instance's requests: at most `floor` retries plus
//! `percent`% of the requests begun in the last [`BUDGET_WINDOW`], so that
//! a failing peer cannot make retries multiply the load on it.

use std::time::Duration;

/// The window the retry budget is counted over.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// The most attempts one request to one peer makes.
pub const MAX_ATTEMPTS: u32 = 3;

/// The least time worth giving a retry after its wait.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(100);

const SLICES: u64 = 10;

#[derive(Clone, Copy, Debug, Default)]
struct Slice {
    index: u64,
    requests: u32,
    retries: u32,
}

/// The instance's retry budget over a sliding window.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    percent: u32,
    floor: u32,
    slices: [Slice; SLICES as usize],
}

impl RetryBudget {
    pub fn new(percent: u32, floor: u32) -> Self {
        Self {
            percent,
            floor,
            slices: Default::default(),
        }
    }

    /// Counts a first attempt; `elapsed` is the time since any fixed point
    /// (the same for every call).
    pub fn request(&mut self, elapsed: Duration) {
        self.slice(elapsed).requests += 1;
    }

    /// Whether a retry may be sent now; counts it when it may.
    pub fn try_retry(&mut self, elapsed: Duration) -> bool {
        let newest = index(elapsed);
        let (requests, retries) = self
            .slices
            .iter()
            .filter(|s| s.index + SLICES > newest && s.index <= newest)
            .fold((0u64, 0u64), |(q, r), s| {
                (q + u64::from(s.requests), r + u64::from(s.retries))
            });
        let allowed = u64::from(self.floor) + requests * u64::from(self.percent) / 100;
        if retries >= allowed {
            return false;
        }
        self.slice(elapsed).retries += 1;
        true
    }

    fn slice(&mut self, elapsed: Duration) -> &mut Slice {
        let index = index(elapsed);
        let slice = &mut self.slices[(index % SLICES) as usize];
        if slice.index != index {
            *slice = Slice {
                index,
                ..Slice::default()
            };
        }
        slice
    }
}

fn index(elapsed: Duration) -> u64 {
    (elapsed.as_millis() / (BUDGET_WINDOW.as_millis() / u128::from(SLICES))) as u64
}

/// How long to wait before attempt `attempt` (1 for the first retry): what
/// the peer asked for, else a short exponential backoff.
pub fn wait_before(attempt: u32, retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or_else(|| Duration::from_millis(25 << attempt.min(6)))
}

/// Whether a retry after `wait` still fits in the `remaining` deadline.
pub fn fits(wait: Duration, remaining: Duration) -> bool {
    wait + MIN_ATTEMPT <= remaining
}

/// A `Retry-After` header's delay: seconds (HTTP dates are not used by
/// Mosaic peers and are ignored), capped at an hour.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_floor_plus_a_share_of_recent_requests() {
        let mut b = RetryBudget::new(10, 2);
        let t = Duration::from_secs(100);
        assert!(b.try_retry(t));
        assert!(b.try_retry(t));
        assert!(!b.try_retry(t), "the floor is spent");
        for _ in 0..20 {
            b.request(t);
        }
        assert!(b.try_retry(t));
        assert!(b.try_retry(t), "10% of 20 more");
        assert!(!b.try_retry(t));
        let later = t + BUDGET_WINDOW;
        assert!(b.try_retry(later), "the window moved on");
    }

    #[test]
    fn a_retry_waits_what_the_peer_asked_and_must_fit_the_deadline() {
        assert_eq!(wait_before(1, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(wait_before(1, None), Duration::from_millis(50));
        assert_eq!(wait_before(2, None), Duration::from_millis(100));
        assert!(fits(Duration::from_secs(1), Duration::from_secs(2)));
        assert!(!fits(Duration::from_secs(2), Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("99999"), Some(Duration::from_secs(3600)));
    }
}
