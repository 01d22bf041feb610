//! Nonces seen recently, per origin instance, kept until their request
//! expires. In memory: a restart forgets them, so the cache only vouches for
//! requests created since it started (`covers`); older ones are refused as
//! expired, and a request captured before a restart cannot be replayed after
//! it. Replicas sharing one identity would each need to see every nonce;
//! that is not handled here.
//!
//! Bounded: each origin may hold `per_origin` nonces and all together
//! `total`; when full, new requests are refused (never is a live entry
//! evicted, since that would let its request be replayed). An entry is
//! forgotten only once its time has passed, and from then on every request
//! whose time has passed as well is refused, whatever clock reading the
//! caller brings: a late caller cannot slip a replay past an eviction.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Mutex;

/// All origins together hold at most this many nonces (or `per_origin`, if larger).
pub const TOTAL_NONCES: usize = 200_000;

pub struct ReplayCache {
    inner: Mutex<Inner>,
    /// Unix time from which every nonce received is in the cache.
    since: i64,
    per_origin: usize,
    total: usize,
}

#[derive(Default)]
struct Inner {
    seen: HashSet<(String, String)>,
    by_expiry: BinaryHeap<Reverse<(i64, String, String)>>,
    per_origin: HashMap<String, usize>,
    /// Entries whose time is before this may have been forgotten.
    forgotten_before: i64,
}

/// What the cache made of a nonce.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// First seen; recorded.
    New,
    /// Seen before and still remembered.
    Replayed,
    /// Its time has passed: it may have been seen and forgotten.
    Expired,
    /// The origin (or the cache) holds as many nonces as it may.
    Full,
}

impl ReplayCache {
    /// An empty cache that has seen every nonce received from `now` on.
    pub fn starting_at(now: i64, per_origin: usize) -> Self {
        Self {
            inner: Mutex::default(),
            since: now,
            per_origin,
            total: TOTAL_NONCES.max(per_origin),
        }
    }

    /// Whether a request created at `created` can be checked here: one
    /// created before the cache started may have been received by then.
    pub fn covers(&self, created: i64) -> bool {
        created >= self.since
    }

    /// Records `(origin, nonce)`, to be remembered until `keep_until`.
    pub fn check_and_record(&self, origin: &str, nonce: &str, keep_until: i64, now: i64) -> Recorded {
        let mut inner = self.inner.lock().expect("replay cache lock");
        while let Some(Reverse((at, _, _))) = inner.by_expiry.peek() {
            if *at >= now {
                break;
            }
            let Reverse((_, o, n)) = inner.by_expiry.pop().expect("peeked");
            if let Some(count) = inner.per_origin.get_mut(&o) {
                *count -= 1;
                if *count == 0 {
                    inner.per_origin.remove(&o);
                }
            }
            inner.seen.remove(&(o, n));
        }
        inner.forgotten_before = inner.forgotten_before.max(now);
        if keep_until < inner.forgotten_before {
            return Recorded::Expired;
        }
        let key = (origin.to_string(), nonce.to_string());
        if inner.seen.contains(&key) {
            return Recorded::Replayed;
        }
        if inner.seen.len() >= self.total || inner.per_origin.get(origin).is_some_and(|n| *n >= self.per_origin) {
            return Recorded::Full;
        }
        *inner.per_origin.entry(key.0.clone()).or_default() += 1;
        inner
            .by_expiry
            .push(Reverse((keep_until, key.0.clone(), key.1.clone())));
        inner.seen.insert(key);
        Recorded::New
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
        let cache = ReplayCache::starting_at(1_000, 10);
        assert!(!cache.covers(999));
        assert!(cache.covers(1_000));
        assert!(cache.covers(1_001));
    }

    #[test]
    fn refuses_a_repeat_until_it_expires() {
        let c = ReplayCache::starting_at(0, 10);
        assert_eq!(c.check_and_record("a", "n", 100, 10), Recorded::New);
        assert_eq!(c.check_and_record("a", "n", 100, 20), Recorded::Replayed);
        assert_eq!(
            c.check_and_record("b", "n", 100, 20),
            Recorded::New,
            "nonces are per origin"
        );
        assert_eq!(c.check_and_record("a", "m", 200, 101), Recorded::New);
        assert_eq!(c.len(), 1, "both earlier entries expired and were dropped");
    }

    #[test]
    fn a_late_clock_reading_cannot_replay_what_was_forgotten() {
        let c = ReplayCache::starting_at(0, 10);
        assert_eq!(c.check_and_record("a", "n", 100, 90), Recorded::New);
        // Another request, read at 101, forgets the entry.
        assert_eq!(c.check_and_record("a", "x", 150, 101), Recorded::New);
        // The replay brings a clock reading from before (a slow key refresh).
        assert_eq!(c.check_and_record("a", "n", 100, 99), Recorded::Expired);
    }

    #[test]
    fn full_origins_are_refused_and_live_entries_kept() {
        let c = ReplayCache::starting_at(0, 2);
        assert_eq!(c.check_and_record("a", "1", 100, 0), Recorded::New);
        assert_eq!(c.check_and_record("a", "2", 100, 0), Recorded::New);
        assert_eq!(c.check_and_record("a", "3", 100, 0), Recorded::Full);
        assert_eq!(
            c.check_and_record("b", "1", 100, 0),
            Recorded::New,
            "other origins unaffected"
        );
        assert_eq!(
            c.check_and_record("a", "1", 100, 0),
            Recorded::Replayed,
            "nothing was evicted"
        );
        assert_eq!(
            c.check_and_record("a", "3", 200, 101),
            Recorded::New,
            "room again once expired"
        );
    }
}
