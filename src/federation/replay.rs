//! Nonces seen recently, per origin instance, kept until their request
//! expires. In memory: a restart forgets them, so the cache only vouches for
//! requests created since it started (`covers`); older ones are refused as
//! expired, and a request captured before a restart cannot be replayed after
//! it. Replicas sharing one identity would each need to see every nonce;
//! that is not handled here.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;

#[derive(Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
    /// Unix time from which every nonce received is in the cache.
    since: i64,
}

#[derive(Default)]
struct Inner {
    seen: HashSet<(String, String)>,
    by_expiry: BinaryHeap<Reverse<(i64, String, String)>>,
}

impl ReplayCache {
    /// An empty cache that has seen every nonce received from `now` on.
    pub fn starting_at(now: i64) -> Self {
        Self {
            inner: Mutex::default(),
            since: now,
        }
    }

    /// Whether a request created at `created` can be checked here: one
    /// created before the cache started may have been received by then.
    pub fn covers(&self, created: i64) -> bool {
        created >= self.since
    }

    /// Records `(origin, nonce)`; false when it was already seen and has not expired.
    pub fn check_and_record(&self, origin: &str, nonce: &str, expires: i64, now: i64) -> bool {
        let mut inner = self.inner.lock().expect("replay cache lock");
        while let Some(Reverse((at, _, _))) = inner.by_expiry.peek() {
            if *at >= now {
                break;
            }
            let Reverse((_, o, n)) = inner.by_expiry.pop().expect("peeked");
            inner.seen.remove(&(o, n));
        }
        let key = (origin.to_string(), nonce.to_string());
        if inner.seen.contains(&key) {
            return false;
        }
        inner.by_expiry.push(Reverse((expires, key.0.clone(), key.1.clone())));
        inner.seen.insert(key);
        true
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("replay cache lock").seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_vouches_only_for_requests_created_since_it_started() {
        let cache = ReplayCache::starting_at(1_000);
        assert!(!cache.covers(999));
        assert!(cache.covers(1_000));
        assert!(cache.covers(1_001));
    }

    #[test]
    fn refuses_a_repeat_until_it_expires() {
        let c = ReplayCache::default();
        assert!(c.check_and_record("a", "n", 100, 10));
        assert!(!c.check_and_record("a", "n", 100, 20));
        assert!(c.check_and_record("b", "n", 100, 20), "nonces are per origin");
        assert!(c.check_and_record("a", "n", 200, 101), "forgotten after expiry");
        assert_eq!(c.len(), 1, "both earlier entries expired and were dropped");
    }
}
