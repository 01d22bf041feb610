//! Federation, split by job: the outbound client (`client`: sign and send),
//! what peers send us (`inbound`), the peering admin operations
//! (`peering`), all peer SQL with typed states (`registry`), and the pure
//! protocol parts (`signing`, `document`, `protocol`, `provenance`,
//! `grant`, `fanout`). This file holds the service and its identity.

pub mod audit;
pub mod breaker;
mod client;
pub mod document;
pub mod fanout;
pub mod grant;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod netguard;
pub mod outbox;
pub mod peering;
pub mod protocol;
pub mod provenance;
pub mod registry;
pub mod replay;
pub mod retry;
pub mod signing;
pub mod stats;
pub mod tls;
pub mod traceparent;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use sqlx::PgPool;
use uuid::Uuid;

pub use client::{AnswerBody, RATE_LIMITED, not_json};

use crate::config::FederationSettings;
use crate::db::cache::Cache;
use document::{IdentityDocument, PROTOCOL, SignedDocument};
use replay::ReplayCache;
use stats::PeerStats;

/// Why a request to a peer failed, as the client sees it.
#[derive(Clone, Debug, Default)]
pub struct PeerError {
    /// PEER_UNAVAILABLE, PEER_TIMEOUT, PEER_FORBIDDEN, PEER_BAD_RESPONSE or
    /// PEER_RATE_LIMITED.
    pub code: &'static str,
    pub message: String,
    /// The peer's own refusal code, when it refused.
    pub refusal: Option<String>,
    /// When the peer said it may be asked again (429's `Retry-After`).
    pub retry_after: Option<Duration>,
    /// Asking again may succeed: the connection failed or was reset, the
    /// peer answered 429, 502, 503 or 504, or it timed out.
    pub transient: bool,
    /// The state of the peer's circuit breaker, when it refused the request.
    pub breaker: Option<breaker::State>,
}

impl PeerError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            ..Self::default()
        }
    }

    fn transient(mut self) -> Self {
        self.transient = true;
        self
    }
}

pub struct Federation {
    pub instance_id: Uuid,
    pub name: String,
    pub base_url: String,
    pub schema_hash: String,
    pub pool: PgPool,
    pub keys: keys::KeyRing,
    pub http: reqwest::Client,
    pub replay: ReplayCache,
    pub stats: PeerStats,
    pub metrics: metrics::FederationMetrics,
    /// Each peer's circuit breaker, shared by every request of this replica
    /// (held only to admit or count, never across an await).
    breakers: std::sync::Mutex<std::collections::HashMap<Uuid, breaker::Breaker>>,
    /// Retries of reads, shared by every request of this replica; counted
    /// from `opened`.
    retry_budget: std::sync::Mutex<retry::RetryBudget>,
    opened: Instant,
    pub settings: FederationSettings,
    /// Every peer as the registry holds it, so that a request does not read
    /// the registry (cleared on every change to it: `db::cache`).
    pub peers: Arc<Cache<(), Arc<Vec<registry::PeerRecord>>>>,
    /// When this replica last re-read each peer's identity document, or
    /// learned that another replica had (the shared record is migration 0072's).
    key_refreshes: std::sync::Mutex<std::collections::HashMap<Uuid, Instant>>,
    /// Re-reads this replica asked for because of unknown key ids in the last
    /// minute, per peer: the bound here keeps unverified requests from
    /// costing a database round trip each.
    unknown_key_refreshes: std::sync::Mutex<std::collections::HashMap<Uuid, std::collections::VecDeque<Instant>>>,
    /// CONNECTs received in the last minute, per source address.
    connects: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, std::collections::VecDeque<Instant>>>,
    /// Woken when a transaction wrote to the outbox (the listener hears it):
    /// the delivery worker numbers and sends (`outbox.rs`).
    pub outbox_written: Arc<tokio::sync::Notify>,
    /// Woken when a peer granted us access or a client first asked for a
    /// peer's events: subscribe now (`outbox.rs`).
    pub subscribe_now: Arc<tokio::sync::Notify>,
    /// Peers whose events a client of this replica asked for (`events`):
    /// the ones it subscribes to.
    pub events_wanted: std::sync::Mutex<std::collections::HashSet<Uuid>>,
}

/// Where changes to the registry and to this instance's keys are announced
/// (migration 0051).
pub const PEERS_CHANNEL: &str = "mosaic_peer_changes";
pub const KEYS_CHANNEL: &str = "mosaic_key_changes";

/// Source addresses whose CONNECTs are counted at most; when more sent one
/// within the minute, new addresses are refused until some are forgotten.
const CONNECT_SOURCES_TRACKED: usize = 10_000;

/// Unverified requests naming an unknown key may make us re-read a peer's
/// document at most this many times a minute, across replicas (a rotation
/// needs one).
const UNKNOWN_KEY_REFRESHES_PER_MINUTE: i32 = 10;

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Federation {
    /// Makes sure the instance has a signing key (sealed with the secret) and
    /// assembles the service. Shared by `serve`, `demo` and the CLI.
    pub async fn open(
        config: &crate::config::Config,
        db: &crate::db::Database,
        secret: &crate::secrets::Secret,
        me: &crate::instance::Instance,
    ) -> Result<Self> {
        let sealer = crate::secrets::Sealer::new(secret, "instance-keys");
        keys::ensure(&mut db.admin().await?, &sealer).await?;
        Ok(Self {
            instance_id: me.id,
            name: me.name.clone(),
            base_url: me.base_url.clone(),
            schema_hash: me.schema_hash.clone(),
            pool: db.app.clone(),
            keys: keys::KeyRing::new(db, sealer),
            http: tls::peer_client(
                config.federation.ca_file.as_deref(),
                &config.federation.allowed_peer_networks,
            )?,
            replay: ReplayCache::starting_at(now_unix(), config.federation.nonces_per_peer),
            stats: PeerStats::default(),
            metrics: Default::default(),
            breakers: Default::default(),
            retry_budget: std::sync::Mutex::new(retry::RetryBudget::new(
                config.federation.retry_budget_percent,
                config.federation.retry_budget_floor,
            )),
            opened: Instant::now(),
            settings: config.federation.clone(),
            peers: Arc::new(Cache::new(1)),
            key_refreshes: Default::default(),
            unknown_key_refreshes: Default::default(),
            connects: Default::default(),
            outbox_written: Default::default(),
            subscribe_now: Default::default(),
            events_wanted: Default::default(),
        })
    }

    /// Every [`stats::FLUSH_EVERY`] until `closing` resolves: adds this
    /// replica's peer statistics to the shared totals and shares its open
    /// breakers (the last flush is the shutdown's, `app.rs`).
    pub async fn share_until(&self, pool: &PgPool, closing: impl Future<Output = ()>) {
        tokio::pin!(closing);
        let mut tick = tokio::time::interval(stats::FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut closing => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.stats.flush(pool).await {
                tracing::warn!(error = %e, "adding peer statistics to the shared totals");
            }
            if let Err(e) = self.share_breakers(pool).await {
                tracing::warn!(error = %e, "sharing circuit breakers with the other replicas");
            }
        }
    }

    /// How often `peer` may ask: its grant's limit, else the instance's
    /// (None: the instance sets none).
    pub fn rate_limit(&self, peer: &registry::PeerRecord) -> Option<grant::RateLimit> {
        peer.grant_rate_limit.or_else(|| {
            (self.settings.rate_limit_per_second > 0.0).then_some(grant::RateLimit {
                per_second: self.settings.rate_limit_per_second,
                burst: self.settings.rate_limit_burst,
            })
        })
    }

    /// How many of a peer's nonces this replica may hold at once: at least
    /// `federation.nonces_per_peer`, and all that a peer within `limit` can
    /// send while a nonce is kept (up to the request lifetime plus twice the
    /// skew, the burst included), so a peer within its rate is never refused
    /// for want of room. The memory stays bounded: [`replay::TOTAL_NONCES`]
    /// caps all origins together.
    pub fn nonce_room(&self, limit: Option<grant::RateLimit>) -> usize {
        let kept = (self.settings.request_lifetime_s + 2 * self.settings.clock_skew_s).max(0) as f64;
        let within = limit.map_or(0.0, |l| (l.per_second * kept).ceil() + f64::from(l.burst));
        self.settings
            .nonces_per_peer
            .max(within.min(usize::MAX as f64) as usize)
    }

    /// Whether `source` may send a CONNECT now (`federation.connects_per_minute`,
    /// across all replicas); counts it when it may. This replica's own count
    /// answers a flood without a round trip and bounds what the shared one holds.
    pub async fn connect_allowed(&self, source: std::net::IpAddr) -> Result<bool, sqlx::Error> {
        if !self.connect_allowed_here(source) {
            return Ok(false);
        }
        sqlx::query_scalar("SELECT connect_attempt($1::inet, $2)")
            .bind(source.to_string())
            .bind(i32::try_from(self.settings.connects_per_minute).unwrap_or(i32::MAX))
            .fetch_one(&self.pool)
            .await
    }

    fn connect_allowed_here(&self, source: std::net::IpAddr) -> bool {
        let minute = Duration::from_secs(60);
        let mut all = self.connects.lock().expect("connect lock");
        if all.len() >= CONNECT_SOURCES_TRACKED {
            all.retain(|_, times| times.back().is_some_and(|t| t.elapsed() < minute));
        }
        if all.len() >= CONNECT_SOURCES_TRACKED && !all.contains_key(&source) {
            return false;
        }
        let recent = all.entry(source).or_default();
        while recent.front().is_some_and(|t| t.elapsed() >= minute) {
            recent.pop_front();
        }
        if recent.len() >= self.settings.connects_per_minute {
            return false;
        }
        recent.push_back(Instant::now());
        true
    }

    /// Whether our copy of the peer's keys may be due for a re-read: not if
    /// this replica re-read it, or learned that another did, within
    /// `federation.key_refresh_s` (no database round trip on the hot path).
    fn keys_stale(&self, peer: Uuid) -> bool {
        self.key_refreshes
            .lock()
            .expect("refresh lock")
            .get(&peer)
            .is_none_or(|at| at.elapsed() >= self.settings.key_refresh)
    }

    /// Whether this replica may ask to re-read for an unknown key id now
    /// (at most the shared limit a minute by itself); counts it when it may.
    fn unknown_refresh_allowed_here(&self, peer: Uuid) -> bool {
        let mut all = self.unknown_key_refreshes.lock().expect("refresh lock");
        let recent = all.entry(peer).or_default();
        while recent.front().is_some_and(|t| t.elapsed() >= Duration::from_secs(60)) {
            recent.pop_front();
        }
        if recent.len() >= UNKNOWN_KEY_REFRESHES_PER_MINUTE as usize {
            return false;
        }
        recent.push_back(Instant::now());
        true
    }

    fn note_refresh(&self, peer: Uuid) {
        self.key_refreshes
            .lock()
            .expect("refresh lock")
            .insert(peer, Instant::now());
    }

    /// Whether this replica may re-read the peer's document now (migration
    /// 0072: shared by the replicas); records the re-read when it may.
    async fn claim_refresh(&self, peer: Uuid, unknown_key: bool) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT claim_peer_key_refresh($1, $2, $3, $4)")
            .bind(peer)
            .bind(unknown_key)
            .bind(self.settings.key_refresh.as_secs().min(i32::MAX as u64) as i32)
            .bind(UNKNOWN_KEY_REFRESHES_PER_MINUTE)
            .fetch_one(&self.pool)
            .await
    }

    /// Every peer, ordered by name: from the cache, or read once.
    pub async fn all_peers(&self) -> sqlx::Result<Arc<Vec<registry::PeerRecord>>> {
        if let Some(all) = self.peers.get(&()) {
            return Ok(all);
        }
        let generation = self.peers.generation();
        let all = Arc::new(registry::list(&self.pool).await?);
        self.peers.keep(generation, (), all.clone());
        Ok(all)
    }

    /// A transaction that changes the registry and, committed, forgets the cache.
    pub async fn change_registry(&self) -> sqlx::Result<registry::Change<'_>> {
        registry::Change::begin(&self.pool, &*self.peers).await
    }

    pub async fn peer(&self, id: Uuid) -> sqlx::Result<Option<registry::PeerRecord>> {
        Ok(self.all_peers().await?.iter().find(|p| p.id == id).cloned())
    }

    /// The peers we may query now, ordered by name.
    pub async fn queryable_peers(&self) -> sqlx::Result<Vec<registry::PeerRecord>> {
        let all = self.all_peers().await?;
        Ok(all
            .iter()
            .filter(|p| p.outbound_state == registry::PeerState::Active)
            .cloned()
            .collect())
    }

    /// Refreshes a peer's keys from its document.
    pub async fn update_keys(&self, doc: &IdentityDocument) -> sqlx::Result<()> {
        let mut change = self.change_registry().await?;
        registry::update_keys(&mut change, doc).await?;
        change.commit().await
    }

    /// This instance's signed identity document.
    pub async fn identity(&self) -> Result<SignedDocument> {
        let (current_key, old_keys) = self.keys.public_keys().await?;
        let (_, signing_key) = self.keys.current().await?;
        let doc = IdentityDocument {
            protocol: PROTOCOL.into(),
            instance_id: self.instance_id.to_string(),
            name: self.name.clone(),
            base_url: self.base_url.clone(),
            current_key,
            old_keys,
            schema_hash: self.schema_hash.clone(),
            capabilities: ["connect", "query", "command", "event", "disconnect", "subscribe"]
                .map(String::from)
                .to_vec(),
            issued_at: now_unix(),
        };
        Ok(document::sign_document(doc, &signing_key))
    }
}

/// The registry as verification's key lookup. The peer's identity document
/// is re-read when the key is unknown (it may have rotated; throttled, since
/// the request is not verified yet) or when our copy is older than
/// `federation.key_refresh_s` (a retired key must stop verifying even if the
/// rotation announcement never arrived).
impl verify::PeerKeys for Federation {
    type Peer = registry::PeerRecord;

    async fn find(&self, origin: Uuid, key_id: &str) -> Result<Option<Self::Peer>, verify::Refused> {
        let internal = |e: sqlx::Error| {
            tracing::error!(error = %e, "peer lookup failed");
            verify::refuse(protocol::Refusal::Unavailable, "cannot check the peer right now")
        };
        let Some(peer) = self.peer(origin).await.map_err(internal)? else {
            return Ok(None);
        };
        let unknown = matches!(peer.key(key_id, now_unix()), registry::KeyLookup::Unknown);
        let due = if unknown {
            self.unknown_refresh_allowed_here(origin)
        } else {
            self.keys_stale(origin)
        };
        if !due {
            return Ok(Some(peer));
        }
        let claimed = self.claim_refresh(origin, unknown).await.map_err(internal)?;
        if claimed || !unknown {
            // Re-read by us now, or (stale keys) by another replica within the period.
            self.note_refresh(origin);
        }
        if claimed {
            // Capped: a slow peer document must not eat the request's own deadline.
            let fetched = tokio::time::timeout(KEY_REFRESH_TIMEOUT, self.fetch_identity(&peer.base_url)).await;
            if let Ok(Ok(doc)) = fetched
                && doc.instance_id == peer.id.to_string()
                && self.update_keys(&doc).await.is_ok()
            {
                return Ok(Some(
                    registry::get(&self.pool, origin)
                        .await
                        .map_err(internal)?
                        .unwrap_or(peer),
                ));
            }
        }
        Ok(Some(peer))
    }

    fn key<'p>(peer: &'p Self::Peer, key_id: &str, now: i64) -> registry::KeyLookup<'p> {
        peer.key(key_id, now)
    }
}

/// The longest a receiver waits to re-read a sender's identity document.
const KEY_REFRESH_TIMEOUT: Duration = Duration::from_secs(2);
