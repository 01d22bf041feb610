//! Nonces seen recently, per origin instance, kept until their request
//! expires. In memory: a restart forgets them, which the short request
//! lifetime (see `federation.request_lifetime_s`) bounds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;

#[derive(Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashSet<(String, String)>,
    by_expiry: BinaryHeap<Reverse<(i64, String, String)>>,
}

impl ReplayCache {
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
    fn refuses_a_repeat_until_it_expires() {
        let c = ReplayCache::default();
        assert!(c.check_and_record("a", "n", 100, 10));
        assert!(!c.check_and_record("a", "n", 100, 20));
        assert!(c.check_and_record("b", "n", 100, 20), "nonces are per origin");
        assert!(c.check_and_record("a", "n", 200, 101), "forgotten after expiry");
        assert_eq!(c.len(), 1, "both earlier entries expired and were dropped");
    }
}
