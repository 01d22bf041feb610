//! Per-peer contact statistics, shared by the replicas of this instance.
//! A federated request only counts in memory; every [`FLUSH_EVERY`] (and at
//! shutdown, `app.rs`) each replica adds what it counted to the totals in PostgreSQL
//! (migration 0073), off the request path. A reading is the shared totals
//! plus what this replica has not added yet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// How many recent latencies the median is taken over.
const WINDOW: usize = 50;

/// How often a replica adds its counts to the shared totals.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default)]
pub struct PeerStat {
    pub last_contact: Option<OffsetDateTime>,
    /// Oldest first, at most [`WINDOW`].
    pub recent_latency_ms: Vec<u64>,
    pub successes: u64,
    pub errors: u64,
    pub last_failure: Option<OffsetDateTime>,
    /// The last failure's code and message.
    pub last_error: Option<String>,
    /// The circuit breaker's state (`closed`, `open`, `half_open`) as the
    /// replica that counted last saw it, and when that was added.
    pub breaker: Option<String>,
    pub breaker_at: Option<OffsetDateTime>,
}

impl PeerStat {
    /// Median of the recent latencies.
    pub fn median_latency_ms(&self) -> Option<u64> {
        let mut v = self.recent_latency_ms.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }

    /// `later` counted after `self`.
    fn add(&mut self, later: &PeerStat) {
        self.successes += later.successes;
        self.errors += later.errors;
        self.last_contact = self.last_contact.max(later.last_contact);
        if later.last_failure.is_some() {
            self.last_failure = later.last_failure;
            self.last_error.clone_from(&later.last_error);
        }
        if later.breaker.is_some() {
            self.breaker.clone_from(&later.breaker);
            self.breaker_at = later.breaker_at;
        }
        self.recent_latency_ms.extend(&later.recent_latency_ms);
        let excess = self.recent_latency_ms.len().saturating_sub(WINDOW);
        self.recent_latency_ms.drain(..excess);
    }
}

/// What this replica counted and has not added to the shared totals yet.
#[derive(Default)]
pub struct PeerStats {
    unflushed: Mutex<HashMap<Uuid, PeerStat>>,
}

impl PeerStats {
    /// Counts one request: its latency, its error if it failed (code and
    /// message), and the peer's breaker state after it.
    pub fn record(&self, peer: Uuid, latency_ms: u64, error: Option<String>, breaker: Option<&str>) {
        let now = OffsetDateTime::now_utc();
        let ok = error.is_none();
        let one = PeerStat {
            last_contact: ok.then_some(now),
            recent_latency_ms: vec![latency_ms],
            successes: ok.into(),
            errors: (!ok).into(),
            last_failure: (!ok).then_some(now),
            last_error: error,
            breaker: breaker.map(String::from),
            breaker_at: breaker.map(|_| now),
        };
        self.unflushed
            .lock()
            .expect("stats lock")
            .entry(peer)
            .or_default()
            .add(&one);
    }

    /// Every replica's counts for `peer`.
    pub async fn get(&self, pool: &PgPool, peer: Uuid) -> Result<PeerStat, sqlx::Error> {
        type Row = (
            i64,
            i64,
            Option<OffsetDateTime>,
            Vec<i32>,
            Option<OffsetDateTime>,
            Option<String>,
            Option<String>,
            Option<OffsetDateTime>,
        );
        let shared: Option<Row> = sqlx::query_as("SELECT * FROM peer_contacts_of($1)")
            .bind(peer)
            .fetch_optional(pool)
            .await?;
        let mut stat = shared
            .map(
                |(successes, errors, last_contact, latencies, last_failure, last_error, breaker, breaker_at)| {
                    PeerStat {
                        last_contact,
                        recent_latency_ms: latencies.into_iter().map(|l| l.max(0) as u64).collect(),
                        successes: successes.max(0) as u64,
                        errors: errors.max(0) as u64,
                        last_failure,
                        last_error,
                        breaker,
                        breaker_at,
                    }
                },
            )
            .unwrap_or_default();
        if let Some(here) = self.unflushed.lock().expect("stats lock").get(&peer) {
            stat.add(here);
        }
        Ok(stat)
    }

    /// Adds this replica's counts to the shared totals; what cannot be
    /// added now is kept for the next time.
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let taken = std::mem::take(&mut *self.unflushed.lock().expect("stats lock"));
        let mut failed = None;
        let mut kept = HashMap::new();
        for (peer, stat) in taken {
            if failed.is_some() {
                kept.insert(peer, stat);
                continue;
            }
            let latencies: Vec<i32> = stat
                .recent_latency_ms
                .iter()
                .map(|l| (*l).min(i32::MAX as u64) as i32)
                .collect();
            let added = sqlx::query("SELECT peer_contacts_add($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                .bind(peer)
                .bind(stat.successes as i64)
                .bind(stat.errors as i64)
                .bind(stat.last_contact)
                .bind(latencies)
                .bind(WINDOW as i32)
                .bind(stat.last_failure)
                .bind(&stat.last_error)
                .bind(&stat.breaker)
                .execute(pool)
                .await;
            if let Err(e) = added {
                failed = Some(e);
                kept.insert(peer, stat);
            }
        }
        if !kept.is_empty() {
            let mut unflushed = self.unflushed.lock().expect("stats lock");
            for (peer, mut stat) in kept {
                // Counted since the take: later than what is kept.
                if let Some(later) = unflushed.remove(&peer) {
                    stat.add(&later);
                }
                unflushed.insert(peer, stat);
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_keeps_the_latest_latencies_and_the_latest_contact() {
        let stats = PeerStats::default();
        let peer = Uuid::new_v4();
        for ms in 0..(WINDOW as u64 + 10) {
            let error = (ms % 2 == 1).then(|| format!("PEER_TIMEOUT: {ms}"));
            stats.record(peer, ms, error, Some("closed"));
        }
        let stat = stats.unflushed.lock().unwrap()[&peer].clone();
        assert_eq!(stat.recent_latency_ms.len(), WINDOW);
        assert_eq!(stat.recent_latency_ms.first(), Some(&10));
        assert_eq!(stat.successes, 30);
        assert_eq!(stat.errors, 30);
        assert!(stat.last_contact.is_some());
        assert_eq!(stat.last_error.as_deref(), Some("PEER_TIMEOUT: 59"));
        assert_eq!(stat.breaker.as_deref(), Some("closed"));
    }
}
