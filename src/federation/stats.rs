//! Per-peer contact statistics, in memory only: a federated query writes
//! nothing to the database, not even bookkeeping.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use time::OffsetDateTime;
use uuid::Uuid;

const WINDOW: usize = 50;

#[derive(Clone, Debug, Default)]
pub struct PeerStat {
    pub last_contact: Option<OffsetDateTime>,
    pub recent_latency_ms: VecDeque<u64>,
    pub successes: u64,
    pub errors: u64,
}

impl PeerStat {
    /// Median of the recent latencies.
    pub fn median_latency_ms(&self) -> Option<u64> {
        let mut v: Vec<u64> = self.recent_latency_ms.iter().copied().collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }
}

#[derive(Default)]
pub struct PeerStats {
    inner: Mutex<HashMap<Uuid, PeerStat>>,
}

impl PeerStats {
    pub fn record(&self, peer: Uuid, latency_ms: u64, ok: bool) {
        let mut inner = self.inner.lock().expect("stats lock");
        let s = inner.entry(peer).or_default();
        if ok {
            s.successes += 1;
            s.last_contact = Some(OffsetDateTime::now_utc());
        } else {
            s.errors += 1;
        }
        s.recent_latency_ms.push_back(latency_ms);
        if s.recent_latency_ms.len() > WINDOW {
            s.recent_latency_ms.pop_front();
        }
    }

    pub fn get(&self, peer: Uuid) -> PeerStat {
        self.inner
            .lock()
            .expect("stats lock")
            .get(&peer)
            .cloned()
            .unwrap_or_default()
    }
}
