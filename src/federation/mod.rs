//! Federation: identity, signed requests between instances, the peer
//! registry, and the admin operations that change peerings.

pub mod document;
pub mod fanout;
pub mod grant;
pub mod inbound;
pub mod keys;
pub mod netguard;
pub mod protocol;
pub mod provenance;
pub mod registry;
pub mod replay;
pub mod signing;
pub mod stats;
pub mod tls;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::FederationSettings;
use document::{IdentityDocument, PROTOCOL, SignedDocument};
use protocol::{ConnectRequest, Disconnect, Event};
use registry::{PeerRecord, PeerState};
use replay::ReplayCache;
use stats::PeerStats;

/// Why a request to a peer failed, as the client sees it.
#[derive(Clone, Debug)]
pub struct PeerError {
    /// PEER_UNAVAILABLE, PEER_TIMEOUT, PEER_FORBIDDEN or PEER_BAD_RESPONSE.
    pub code: &'static str,
    pub message: String,
    /// The peer's own refusal code, when it refused.
    pub refusal: Option<String>,
}

impl PeerError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            refusal: None,
        }
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
    pub settings: FederationSettings,
    /// When each peer's identity document was last re-read (in memory).
    key_refreshes: std::sync::Mutex<std::collections::HashMap<Uuid, Instant>>,
    /// Re-reads caused by unknown key ids in the last minute, per peer.
    unknown_key_refreshes: std::sync::Mutex<std::collections::HashMap<Uuid, std::collections::VecDeque<Instant>>>,
    /// CONNECTs received in the last minute, per source address.
    connects: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, std::collections::VecDeque<Instant>>>,
}

/// Source addresses whose CONNECTs are counted at most; when more sent one
/// within the minute, new addresses are refused until some are forgotten.
const CONNECT_SOURCES_TRACKED: usize = 10_000;

/// Unverified requests naming an unknown key may make us re-read a peer's
/// document at most this many times a minute (a rotation needs one).
const UNKNOWN_KEY_REFRESHES_PER_MINUTE: usize = 10;

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
            settings: config.federation.clone(),
            key_refreshes: Default::default(),
            unknown_key_refreshes: Default::default(),
            connects: Default::default(),
        })
    }

    /// Whether `source` may send a CONNECT now (`federation.connects_per_minute`);
    /// counts it when it may.
    pub fn connect_allowed(&self, source: std::net::IpAddr) -> bool {
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

    fn since_refresh(&self, peer: Uuid) -> Option<Duration> {
        self.key_refreshes
            .lock()
            .expect("refresh lock")
            .get(&peer)
            .map(Instant::elapsed)
    }

    /// Whether an unknown key id may trigger a re-read of the peer's document
    /// now; counts the re-read when it may.
    pub fn refresh_allowed(&self, peer: Uuid) -> bool {
        let mut all = self.unknown_key_refreshes.lock().expect("refresh lock");
        let recent = all.entry(peer).or_default();
        while recent.front().is_some_and(|t| t.elapsed() >= Duration::from_secs(60)) {
            recent.pop_front();
        }
        if recent.len() >= UNKNOWN_KEY_REFRESHES_PER_MINUTE {
            return false;
        }
        recent.push_back(Instant::now());
        true
    }

    /// Whether our copy of the peer's keys is due for a re-read.
    pub fn keys_stale(&self, peer: Uuid) -> bool {
        self.since_refresh(peer).is_none_or(|d| d >= self.settings.key_refresh)
    }

    pub fn note_refresh(&self, peer: Uuid) {
        self.key_refreshes
            .lock()
            .expect("refresh lock")
            .insert(peer, Instant::now());
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
            capabilities: ["connect", "query", "command", "event", "disconnect"]
                .map(String::from)
                .to_vec(),
            issued_at: now_unix(),
        };
        Ok(document::sign_document(doc, &signing_key))
    }

    /// Checks that a peer URL is one we may talk to.
    pub fn check_url(&self, url: &str) -> Result<String> {
        let url = url.trim().trim_end_matches('/').to_string();
        if url.len() > document::MAX_URL_BYTES {
            bail!("url: longer than {} bytes", document::MAX_URL_BYTES);
        }
        let parsed = reqwest::Url::parse(&url).map_err(|e| anyhow!("url: '{url}' is not a URL ({e})"))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.settings.allow_http => {}
            "http" => {
                bail!("url: plain http to peers is refused; use https (or set federation.allow_http for development)")
            }
            other => bail!("url: unsupported scheme {other}"),
        }
        if parsed.path() != "/" && !parsed.path().is_empty() || parsed.query().is_some() {
            bail!("url: give the instance's base URL, without a path or query");
        }
        netguard::check_url_host(&parsed, &self.settings.allowed_peer_networks).map_err(|e| anyhow!("url: {e}"))?;
        Ok(url)
    }

    /// Refuses, before connecting, a URL whose host is an address peers may
    /// not be reached at (names are checked by the client's resolver).
    fn reachable(&self, url: &str) -> Result<(), PeerError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| PeerError::new("PEER_UNAVAILABLE", format!("{url}: {e}")))?;
        netguard::check_url_host(&parsed, &self.settings.allowed_peer_networks)
            .map_err(|e| PeerError::new("PEER_UNAVAILABLE", e))
    }

    /// Fetches and verifies a peer's identity document: at most
    /// `MAX_DOCUMENT_BYTES`, within `federation.deadline`.
    pub async fn fetch_identity(&self, base_url: &str) -> Result<IdentityDocument, PeerError> {
        let url = format!("{base_url}{}", protocol::WELL_KNOWN_PATH);
        self.reachable(&url)?;
        let fetch = async {
            let response = self.http.get(&url).send().await.map_err(|e| transport_error(&e))?;
            if !response.status().is_success() {
                return Err(PeerError::new(
                    "PEER_BAD_RESPONSE",
                    format!("{url} answered {}", response.status()),
                ));
            }
            let bytes = read_capped(response, document::MAX_DOCUMENT_BYTES).await?;
            serde_json::from_slice::<SignedDocument>(&bytes)
                .map_err(|e| PeerError::new("PEER_BAD_RESPONSE", format!("identity document is not valid: {e}")))
        };
        let signed = tokio::time::timeout(self.settings.deadline, fetch)
            .await
            .map_err(|_| PeerError::new("PEER_TIMEOUT", "identity document did not arrive in time"))??;
        document::check_bounds(&signed.document).map_err(|e| PeerError::new("PEER_BAD_RESPONSE", e))?;
        document::verify_document(&signed).map_err(|e| PeerError::new("PEER_BAD_RESPONSE", e))?;
        if signed.document.base_url.trim_end_matches('/') != base_url.trim_end_matches('/') {
            return Err(PeerError::new(
                "PEER_BAD_RESPONSE",
                format!("{url} claims base URL {}", signed.document.base_url),
            ));
        }
        Ok(signed.document)
    }

    /// Sends one signed request and returns the peer's JSON answer.
    pub async fn send<T: Serialize>(
        &self,
        peer_id: Uuid,
        base_url: &str,
        path: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<Value, PeerError> {
        let started = Instant::now();
        let result = self
            .send_uncounted(peer_id, base_url, path, body, timeout, started)
            .await;
        self.stats
            .record(peer_id, started.elapsed().as_millis() as u64, result.is_ok());
        result
    }

    async fn send_uncounted<T: Serialize>(
        &self,
        peer_id: Uuid,
        base_url: &str,
        path: &str,
        body: &T,
        timeout: Duration,
        started: Instant,
    ) -> Result<Value, PeerError> {
        let body = serde_json::to_vec(body).expect("request bodies serialise");
        self.reachable(base_url)?;
        let header = self
            .sign(peer_id, path, &body)
            .await
            .map_err(|e| PeerError::new("PEER_UNAVAILABLE", format!("cannot sign: {e}")))?;
        let request = self
            .http
            .post(format!("{base_url}{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signing::HEADER, header)
            .body(body)
            .send();
        let response = match tokio::time::timeout(timeout, request).await {
            Err(_) => {
                return Err(PeerError::new(
                    "PEER_TIMEOUT",
                    format!("no answer within {} ms", timeout.as_millis()),
                ));
            }
            Ok(Err(e)) if e.is_timeout() => return Err(PeerError::new("PEER_TIMEOUT", "timed out")),
            Ok(Err(e)) => return Err(transport_error(&e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        // The body gets only what is left of the deadline, not a fresh one.
        let remaining = timeout.saturating_sub(started.elapsed());
        let limit = self.settings.max_answer_bytes;
        let bytes = match tokio::time::timeout(remaining, read_capped(response, limit)).await {
            Err(_) => return Err(PeerError::new("PEER_TIMEOUT", "answer did not finish in time")),
            Ok(result) => result?,
        };
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return parsed.ok_or_else(|| PeerError::new("PEER_BAD_RESPONSE", "answer is not JSON"));
        }
        let refusal = parsed
            .as_ref()
            .and_then(|v| v["errors"][0]["extensions"]["code"].as_str())
            .map(String::from);
        let message = parsed
            .as_ref()
            .and_then(|v| v["errors"][0]["message"].as_str())
            .unwrap_or("")
            .to_string();
        let code = match status.as_u16() {
            401 | 403 => "PEER_FORBIDDEN",
            500..=599 => "PEER_UNAVAILABLE",
            _ => "PEER_BAD_RESPONSE",
        };
        Err(PeerError {
            code,
            message: format!(
                "peer answered {status}{}{message}",
                if message.is_empty() { "" } else { ": " }
            ),
            refusal,
        })
    }

    /// The `Mosaic-Signature` header for a request to `destination`.
    pub async fn sign(&self, destination: Uuid, path: &str, body: &[u8]) -> Result<String> {
        let (key_id, key) = self.keys.current().await?;
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let created = now_unix();
        let params = signing::SignatureParams {
            method: "POST".into(),
            path: path.into(),
            origin: self.instance_id.to_string(),
            destination: destination.to_string(),
            digest: signing::body_digest(body),
            created,
            expires: created + self.settings.request_lifetime_s,
            nonce: URL_SAFE_NO_PAD.encode(nonce),
            key_id,
        };
        let sig = signing::sign(&key, &params);
        Ok(signing::header_value(&params, &sig))
    }

    /// Asks the instance at `url` to let us query it. Records it as `requested`.
    pub async fn connect(&self, url: &str, actor: &str) -> Result<PeerRecord> {
        let url = self.check_url(url)?;
        let doc = self
            .fetch_identity(&url)
            .await
            .map_err(|e| anyhow!("{}: {}", e.code, e.message))?;
        let peer_id: Uuid = doc.instance_id.parse().context("peer instance id")?;
        if peer_id == self.instance_id {
            bail!("url: that is this instance");
        }
        // Names select peers in scopes, so they are unique among the peers we query.
        if registry::queryable(&self.pool)
            .await?
            .iter()
            .any(|p| p.id != peer_id && p.name == doc.name)
        {
            bail!(
                "url: {url} is called '{}', like another peer this instance queries; names must be unique among them",
                doc.name
            );
        }
        let mut tx = self.pool.begin().await?;
        registry::record_identity(&mut tx, &doc, registry::Vouched::ByAdmin).await?;
        registry::set_outbound(&mut tx, peer_id, PeerState::Requested).await?;
        registry::audit(&mut tx, peer_id, actor, "connect_requested", json!({ "url": url })).await?;
        tx.commit().await?;
        let request = ConnectRequest {
            identity: self.identity().await?,
        };
        let answer = self
            .send(peer_id, &url, protocol::CONNECT_PATH, &request, self.settings.deadline)
            .await
            .map_err(|e| anyhow!("{}: {}", e.code, e.message))?;
        if answer["state"] == "active" {
            let mut conn = self.pool.acquire().await?;
            registry::set_outbound(&mut conn, peer_id, PeerState::Active).await?;
        }
        Ok(registry::get(&self.pool, peer_id).await?.expect("just written"))
    }

    async fn require_peer(&self, id: Uuid) -> Result<PeerRecord> {
        registry::get(&self.pool, id)
            .await?
            .ok_or_else(|| anyhow!("peer: no peer {id}"))
    }

    /// Grants a pending (or suspended, or active) peer access to workspaces.
    pub async fn approve(&self, id: Uuid, terms: &grant::Terms, actor: &str) -> Result<PeerRecord> {
        let peer = self.require_peer(id).await?;
        if !(peer.inbound_state == PeerState::Pending || peer.inbound_state.approved()) {
            bail!(
                "peer: {} is {}, not pending; it must send CONNECT first",
                peer.name,
                peer.inbound_state
            );
        }
        if terms.workspaces.is_empty() {
            bail!("workspace: grant at least one workspace");
        }
        let terms = grant::Terms {
            users: terms
                .users
                .as_deref()
                .map(grant::normalise_users)
                .transpose()
                .map_err(|e| anyhow!(e))?,
            ..terms.clone()
        };
        let mut tx = self.pool.begin().await?;
        let missing: Vec<Uuid> = sqlx::query_scalar("SELECT missing_workspaces($1)")
            .bind(&terms.workspaces)
            .fetch_one(&mut *tx)
            .await?;
        if !missing.is_empty() {
            bail!(
                "workspace: no workspace {}",
                missing.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
            );
        }
        // Approving also applies a name or base URL the peer announced since.
        registry::set_grant(&mut tx, id, &terms).await?;
        registry::audit(
            &mut tx,
            id,
            actor,
            "approved",
            json!({
                "workspaces": terms.workspaces,
                "read_write": terms.read_write,
                "users": terms.users,
                "forward": terms.forward,
                "name": peer.pending_name,
                "base_url": peer.pending_base_url,
            }),
        )
        .await?;
        tx.commit().await?;
        let event = Event::Granted {
            read_write: terms.read_write,
            workspaces: terms.workspaces.iter().map(Uuid::to_string).collect(),
        };
        let peer = self.require_peer(id).await?;
        self.notify(&peer, protocol::EVENT_PATH, &event).await;
        Ok(peer)
    }

    /// Deletes a peer that is pending, rejected or revoked (never one with a
    /// live grant either way); the audit trail keeps its history.
    pub async fn delete(&self, id: Uuid, actor: &str) -> Result<PeerRecord> {
        let peer = self.require_peer(id).await?;
        let mut tx = self.pool.begin().await?;
        if !registry::delete_unapproved(&mut tx, id).await? {
            bail!(
                "peer: {} is inbound {} and outbound {}; revoke it before deleting",
                peer.name,
                peer.inbound_state,
                peer.outbound_state
            );
        }
        registry::audit(
            &mut tx,
            id,
            actor,
            "deleted",
            json!({ "name": peer.name, "base_url": peer.base_url, "was": peer.inbound_state.as_str() }),
        )
        .await?;
        tx.commit().await?;
        Ok(peer)
    }

    pub async fn reject(&self, id: Uuid, actor: &str) -> Result<PeerRecord> {
        self.change_inbound(id, PeerState::Rejected, actor, Some(Event::Rejected))
            .await
    }

    pub async fn suspend(&self, id: Uuid, actor: &str) -> Result<PeerRecord> {
        self.change_inbound(id, PeerState::Suspended, actor, Some(Event::Suspended))
            .await
    }

    async fn change_inbound(
        &self,
        id: Uuid,
        state: PeerState,
        actor: &str,
        event: Option<Event>,
    ) -> Result<PeerRecord> {
        let peer = self.require_peer(id).await?;
        let mut tx = self.pool.begin().await?;
        registry::set_inbound(&mut tx, id, state).await?;
        registry::audit(
            &mut tx,
            id,
            actor,
            state.as_str(),
            json!({ "was": peer.inbound_state.as_str() }),
        )
        .await?;
        tx.commit().await?;
        if let Some(event) = event {
            self.notify(&peer, protocol::EVENT_PATH, &event).await;
        }
        self.require_peer(id).await
    }

    /// DISCONNECT: revokes both directions at once, then tells the peer.
    pub async fn revoke(&self, id: Uuid, actor: &str) -> Result<PeerRecord> {
        let peer = self.require_peer(id).await?;
        let mut tx = self.pool.begin().await?;
        revoke_both(&mut tx, id).await?;
        registry::audit(&mut tx, id, actor, "revoked", json!({})).await?;
        tx.commit().await?;
        self.notify(&peer, protocol::DISCONNECT_PATH, &Disconnect::default())
            .await;
        self.require_peer(id).await
    }

    /// Tells every peer with a live peering that our key changed, so they stop
    /// accepting the old one (if its grace is over) without waiting to notice.
    pub async fn announce_rotation(&self) -> Result<usize> {
        let peers = registry::list(&self.pool).await?;
        let live: Vec<&PeerRecord> = peers.iter().filter(|p| p.is_live()).collect();
        for p in &live {
            self.notify(p, protocol::EVENT_PATH, &Event::KeysRotated).await;
        }
        Ok(live.len())
    }

    /// Best-effort notification; the local change already took effect.
    async fn notify<T: Serialize>(&self, peer: &PeerRecord, path: &str, body: &T) {
        if let Err(e) = self
            .send(peer.id, &peer.base_url, path, body, self.settings.deadline)
            .await
        {
            tracing::warn!(peer = %peer.name, code = e.code, error = %e.message, "could not notify peer");
        }
    }
}

pub(crate) async fn revoke_both(conn: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE peers SET inbound_state = 'revoked', outbound_state = 'revoked', grant_workspaces = '{}',
             grant_read_write = false, grant_forward = false, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Reads a body of at most `limit` bytes, stopping as soon as it would exceed
/// it (the rest is never read, and the connection is dropped).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, PeerError> {
    let too_large = || PeerError::new("PEER_BAD_RESPONSE", format!("answer exceeds {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(e: &reqwest::Error) -> PeerError {
    if e.is_timeout() {
        return PeerError::new("PEER_TIMEOUT", "timed out");
    }
    // The full chain says which part failed (connect, TLS, closed connection).
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        // Some layers repeat their source's text; say each cause once.
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    // rustls' words for a plain-HTTP answer to a TLS hello.
    if message.contains("InvalidContentType") {
        message = format!(
            "{} does not speak TLS (HTTPS) on that port; check the URL's scheme and port",
            e.url()
                .map_or_else(|| "the peer".to_string(), |u| u.origin().ascii_serialization())
        );
    }
    PeerError::new("PEER_UNAVAILABLE", message)
}
