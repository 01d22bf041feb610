//! Nonces seen recently, per origin instance, kept until their request
//! expires, in two places. PostgreSQL (`peer_nonces`, migration 0070) holds
//! every nonce any replica of this instance received, so a request taken to
//! another replica, or to this one after a restart, is refused as a replay;
//! the database's clock decides expiry there, the same clock that prunes.
//! In memory, each replica holds the nonces it recorded: it answers its own
//! replays without a round trip and bounds what one peer can make it store.
//!
//! Bounded: each origin may hold the room its caller gives (what its rate
//! limit lets it send while a nonce is kept) and all together `total` in
//! each replica; when full, new requests are refused (never is a
//! live entry evicted, since that would let its request be replayed). An
//! entry is forgotten only once its time has passed, and from then on every
//! request whose time has passed as well is refused, whatever clock reading
//! the caller brings: a late caller cannot slip a replay past an eviction.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::PgPool;

use crate::db::Admission;
use crate::db::scope::REFUSED;

/// All origins together hold at most this many nonces (or the configured room of one, if larger).
pub const TOTAL_NONCES: usize = 200_000;

/// How often (seconds) a replica offers to prune the shared nonces.
const PRUNE_EVERY_S: i64 = 60;

pub struct ReplayCache {
    inner: Mutex<Inner>,
    total: usize,
    /// When this replica last offered to prune the shared nonces.
    pruned_at: AtomicI64,
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
    /// New, but the origin is over its rate limit: a token is free after this.
    Limited(std::time::Duration),
}

impl Recorded {
    /// What a refused admission says: `admit_peer_request_or_refuse` raises
    /// SQLSTATE [`REFUSED`] with the outcome as its message and, when
    /// limited, the milliseconds until a token is free as its detail.
    /// `None` for any other error.
    pub fn refused(e: &sqlx::Error) -> Option<Self> {
        let db = e.as_database_error()?;
        if db.code().as_deref() != Some(REFUSED) {
            return None;
        }
        let retry_after_ms: Option<u64> = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|e| e.detail())
            .and_then(|d| d.parse().ok());
        Some(match db.message() {
            "replayed" => Self::Replayed,
            "limited" => Self::Limited(std::time::Duration::from_millis(retry_after_ms.unwrap_or(1000).max(1))),
            _ => Self::Expired,
        })
    }
}

impl ReplayCache {
    /// An empty cache (the shared nonces are pruned first at `now`) holding
    /// at most [`TOTAL_NONCES`] in all, or `configured_room` (the room every
    /// origin has) if larger.
    pub fn starting_at(now: i64, configured_room: usize) -> Self {
        Self {
            inner: Mutex::default(),
            total: TOTAL_NONCES.max(configured_room),
            pruned_at: AtomicI64::new(now - PRUNE_EVERY_S),
        }
    }

    /// Records a nonce this replica recorded (`check_and_record`) where
    /// every replica sees it, in the same round trip taking a token from the
    /// origin's bucket when a limit applies (migration 0079: shared by the
    /// replicas too). A QUERY or COMMAND does this in the round trip that
    /// begins its transaction instead (`RequestDb::admitting`).
    pub async fn record_shared(&self, pool: &PgPool, a: &Admission, now: i64) -> Result<Recorded, sqlx::Error> {
        let admitted = sqlx::query("SELECT admit_peer_request_or_refuse($1, $2, $3, $4, $5)")
            .bind(a.origin.to_string())
            .bind(&a.nonce)
            .bind(a.keep_until)
            .bind(a.limit.map(|l| l.0))
            .bind(a.limit.map(|l| l.1))
            .execute(pool)
            .await;
        let recorded = match admitted {
            Ok(_) => Recorded::New,
            Err(e) => Recorded::refused(&e).ok_or(e)?,
        };
        self.prune_now_and_then(pool, now).await?;
        Ok(recorded)
    }

    /// Pruning of the shared nonces rides on a request about once a minute
    /// per replica, skipped while another replica prunes.
    pub async fn prune_now_and_then(&self, pool: &PgPool, now: i64) -> Result<(), sqlx::Error> {
        let last = self.pruned_at.load(Ordering::Relaxed);
        if now - last >= PRUNE_EVERY_S
            && self
                .pruned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let pruned: Option<i64> = sqlx::query_scalar("SELECT prune_peer_nonces()").fetch_one(pool).await?;
            tracing::debug!(?pruned, "pruned the shared nonces");
        }
        Ok(())
    }

    /// Records `(origin, nonce)`, to be remembered until `keep_until`, if
    /// the origin holds fewer than `room` nonces.
    pub fn check_and_record(&self, origin: &str, nonce: &str, keep_until: i64, now: i64, room: usize) -> Recorded {
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
        if inner.seen.len() >= self.total || inner.per_origin.get(origin).is_some_and(|n| *n >= room) {
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

    const ROOM: usize = 10;

    #[test]
    fn refuses_a_repeat_until_it_expires() {
        let c = ReplayCache::starting_at(0, ROOM);
        assert_eq!(c.check_and_record("a", "n", 100, 10, ROOM), Recorded::New);
        assert_eq!(c.check_and_record("a", "n", 100, 20, ROOM), Recorded::Replayed);
        assert_eq!(
            c.check_and_record("b", "n", 100, 20, ROOM),
            Recorded::New,
            "nonces are per origin"
        );
        assert_eq!(c.check_and_record("a", "m", 200, 101, ROOM), Recorded::New);
        assert_eq!(c.len(), 1, "both earlier entries expired and were dropped");
    }

    #[test]
    fn a_late_clock_reading_cannot_replay_what_was_forgotten() {
        let c = ReplayCache::starting_at(0, ROOM);
        assert_eq!(c.check_and_record("a", "n", 100, 90, ROOM), Recorded::New);
        // Another request, read at 101, forgets the entry.
        assert_eq!(c.check_and_record("a", "x", 150, 101, ROOM), Recorded::New);
        // The replay brings a clock reading from before (a slow key refresh).
        assert_eq!(c.check_and_record("a", "n", 100, 99, ROOM), Recorded::Expired);
    }

    #[test]
    fn full_origins_are_refused_and_live_entries_kept() {
        let c = ReplayCache::starting_at(0, 2);
        assert_eq!(c.check_and_record("a", "1", 100, 0, 2), Recorded::New);
        assert_eq!(c.check_and_record("a", "2", 100, 0, 2), Recorded::New);
        assert_eq!(c.check_and_record("a", "3", 100, 0, 2), Recorded::Full);
        assert_eq!(
            c.check_and_record("b", "1", 100, 0, 2),
            Recorded::New,
            "other origins unaffected"
        );
        assert_eq!(
            c.check_and_record("a", "1", 100, 0, 2),
            Recorded::Replayed,
            "nothing was evicted"
        );
        assert_eq!(
            c.check_and_record("a", "3", 200, 101, 2),
            Recorded::New,
            "room again once expired"
        );
    }

    #[test]
    fn each_origin_has_the_room_its_caller_gives() {
        let c = ReplayCache::starting_at(0, 3);
        assert_eq!(c.check_and_record("a", "1", 100, 0, 1), Recorded::New);
        assert_eq!(c.check_and_record("a", "2", 100, 0, 1), Recorded::Full);
        assert_eq!(
            c.check_and_record("a", "2", 100, 0, 3),
            Recorded::New,
            "a larger room (a higher rate limit) holds more"
        );
        assert_eq!(c.check_and_record("a", "3", 100, 0, 2), Recorded::Full);
    }
}
