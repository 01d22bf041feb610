//! Rows kept in memory so that requests do not read them again, correct by
//! invalidation rather than by time: a trigger announces every change at
//! commit (`pg_notify`), the instance's listener (`live::listener`) hears it
//! and the cache forgets everything. While the listener is not listening, a
//! change could go unheard, so a cache holds and answers nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

pub struct Cache<K, V> {
    inner: Mutex<Inner<K, V>>,
    /// Entries kept at most; past it the cache starts again empty.
    capacity: usize,
    /// Which entries a notification's payload concerns; without it (or for
    /// an empty payload) every notification forgets everything.
    concerns: Option<fn(&str, &K, &V) -> bool>,
}

struct Inner<K, V> {
    listening: bool,
    /// Bumped by every invalidation: a row read before one is not kept after it.
    generation: u64,
    entries: HashMap<K, V>,
}

/// What the listener does to a cache.
pub trait Forget: Send + Sync {
    /// Something it holds changed, as the notification's payload says:
    /// forget what it concerns (everything, for an empty payload).
    fn forget(&self, payload: &str);
    /// Whether changes are heard from now on; either way, forget everything.
    fn set_listening(&self, listening: bool);
}

/// Taken before reading from the database, passed to `keep`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(Option<u64>);

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                listening: false,
                generation: 0,
                entries: HashMap::new(),
            }),
            capacity,
            concerns: None,
        }
    }

    /// A cache whose notifications name what changed: `concerns(payload,
    /// key, value)` says whether an entry is affected.
    pub fn forgetting_only(mut self, concerns: fn(&str, &K, &V) -> bool) -> Self {
        self.concerns = Some(concerns);
        self
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.inner.lock().expect("cache lock").entries.get(key).cloned()
    }

    pub fn generation(&self) -> Generation {
        let inner = self.inner.lock().expect("cache lock");
        Generation(inner.listening.then_some(inner.generation))
    }

    /// Keeps a value read from the database, unless the cache was
    /// invalidated (or was not listening) since `generation` was taken.
    pub fn keep(&self, generation: Generation, key: K, value: V) {
        let mut inner = self.inner.lock().expect("cache lock");
        if !inner.listening || generation.0 != Some(inner.generation) {
            return;
        }
        if inner.entries.len() >= self.capacity {
            inner.entries.clear();
        }
        inner.entries.insert(key, value);
    }

    /// Changes a kept value in place (what this process itself wrote).
    pub fn update(&self, key: &K, change: impl FnOnce(&mut V)) {
        if let Some(v) = self.inner.lock().expect("cache lock").entries.get_mut(key) {
            change(v);
        }
    }
}

impl<K: Send, V: Send> Forget for Cache<K, V> {
    fn forget(&self, payload: &str) {
        let mut inner = self.inner.lock().expect("cache lock");
        // Even a partial forget refuses what reads in flight would keep.
        inner.generation += 1;
        match self.concerns {
            Some(concerns) if !payload.is_empty() => inner.entries.retain(|k, v| !concerns(payload, k, v)),
            _ => inner.entries.clear(),
        }
    }

    fn set_listening(&self, listening: bool) {
        let mut inner = self.inner.lock().expect("cache lock");
        inner.listening = listening;
        inner.generation += 1;
        inner.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_kept_while_not_listening() {
        let cache = Cache::new(10);
        cache.keep(cache.generation(), "k", 1);
        assert_eq!(cache.get(&"k"), None);
        cache.set_listening(true);
        cache.keep(cache.generation(), "k", 1);
        assert_eq!(cache.get(&"k"), Some(1));
        cache.set_listening(false);
        assert_eq!(cache.get(&"k"), None, "a lost listener forgets what it held");
    }

    #[test]
    fn a_value_read_before_an_invalidation_is_not_kept() {
        let cache = Cache::new(10);
        cache.set_listening(true);
        let before = cache.generation();
        cache.forget("");
        cache.keep(before, "k", 1);
        assert_eq!(cache.get(&"k"), None);
        cache.keep(cache.generation(), "k", 1);
        cache.forget("");
        assert_eq!(cache.get(&"k"), None);
    }

    #[test]
    fn a_payload_forgets_only_what_it_concerns() {
        let cache = Cache::new(10).forgetting_only(|payload, k: &&str, _: &i32| payload == *k);
        cache.set_listening(true);
        cache.keep(cache.generation(), "a", 1);
        cache.keep(cache.generation(), "b", 2);
        cache.forget("a");
        assert_eq!((cache.get(&"a"), cache.get(&"b")), (None, Some(2)));
        cache.forget("");
        assert_eq!(cache.get(&"b"), None);
    }

    #[test]
    fn a_full_cache_starts_again() {
        let cache = Cache::new(2);
        cache.set_listening(true);
        for k in 0..3 {
            cache.keep(cache.generation(), k, k);
        }
        assert_eq!((cache.get(&0), cache.get(&2)), (None, Some(2)));
    }
}
