//! The peering admin operations (connect, approve, reject, suspend, revoke,
//! delete, key rotation announcements), each audited, with a typed error.

use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::protocol::{self, ConnectRequest, Disconnect, Event};
use super::registry::{self, PeerRecord, PeerState};
use super::{Federation, PeerError, document, grant, netguard};

/// Why a peering operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum PeeringError {
    /// The input, or the peering's state, does not allow it; the message
    /// starts with the field it is about.
    #[error("{0}")]
    Invalid(String),
    #[error("peer: no peer {0}")]
    NotFound(Uuid),
    /// The peer at `target` could not be reached, or refused.
    #[error("{target}: {}: {}", .error.code, .error.message)]
    Peer { target: String, error: PeerError },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for PeeringError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

type Result<T, E = PeeringError> = std::result::Result<T, E>;

fn invalid(message: impl Into<String>) -> PeeringError {
    PeeringError::Invalid(message.into())
}

impl Federation {
    /// Checks that a peer URL is one we may talk to.
    pub fn check_url(&self, url: &str) -> Result<String> {
        let url = url.trim().trim_end_matches('/').to_string();
        if url.len() > document::MAX_URL_BYTES {
            return Err(invalid(format!("url: longer than {} bytes", document::MAX_URL_BYTES)));
        }
        let parsed = reqwest::Url::parse(&url).map_err(|e| invalid(format!("url: '{url}' is not a URL ({e})")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.settings.allow_http => {}
            "http" => {
                return Err(invalid(
                    "url: plain http to peers is refused; use https (or set federation.allow_http for development)",
                ));
            }
            other => return Err(invalid(format!("url: unsupported scheme {other}"))),
        }
        if parsed.path() != "/" && !parsed.path().is_empty() || parsed.query().is_some() {
            return Err(invalid("url: give the instance's base URL, without a path or query"));
        }
        netguard::check_url_host(&parsed, &self.settings.allowed_peer_networks)
            .map_err(|e| invalid(format!("url: {e}")))?;
        Ok(url)
    }

    /// Asks the instance at `url` to let us query it. Records it as `requested`.
    pub async fn connect(&self, url: &str, actor: &str) -> Result<PeerRecord> {
        let url = self.check_url(url)?;
        let doc = self.fetch_identity(&url).await.map_err(|error| PeeringError::Peer {
            target: url.clone(),
            error,
        })?;
        let peer_id: Uuid = doc
            .instance_id
            .parse()
            .map_err(|_| invalid("url: the identity document's instance id is not a UUID"))?;
        if peer_id == self.instance_id {
            return Err(invalid("url: that is this instance"));
        }
        // Names select peers in scopes, so they are unique among the peers we query.
        if self
            .queryable_peers()
            .await?
            .iter()
            .any(|p| p.id != peer_id && p.name == doc.name)
        {
            return Err(invalid(format!(
                "url: {url} is called '{}', like another peer this instance queries; names must be unique among them",
                doc.name
            )));
        }
        let mut tx = self.change_registry().await?;
        registry::record_identity(&mut tx, &doc, registry::Vouched::ByAdmin).await?;
        registry::set_outbound(&mut tx, peer_id, PeerState::Requested).await?;
        registry::audit(&mut tx, peer_id, actor, "connect_requested", json!({ "url": url })).await?;
        tx.commit().await?;
        let request = ConnectRequest {
            identity: self.identity().await?,
        };
        let answer: serde_json::Value = self
            .send(peer_id, &url, protocol::CONNECT_PATH, &request, self.settings.deadline)
            .await
            .map_err(|error| PeeringError::Peer {
                target: url.clone(),
                error,
            })?;
        if answer["state"] == "active" {
            let mut change = self.change_registry().await?;
            registry::set_outbound(&mut change, peer_id, PeerState::Active).await?;
            change.commit().await?;
        }
        Ok(registry::get(&self.pool, peer_id).await?.expect("just written"))
    }

    async fn require_peer(&self, id: Uuid) -> Result<PeerRecord> {
        registry::get(&self.pool, id).await?.ok_or(PeeringError::NotFound(id))
    }

    /// Grants a pending (or suspended, or active) peer a scope document.
    pub async fn approve(&self, id: Uuid, terms: &grant::Terms, actor: &str) -> Result<PeerRecord> {
        let peer = self.require_peer(id).await?;
        if !(peer.inbound_state == PeerState::Pending || peer.inbound_state.approved()) {
            return Err(invalid(format!(
                "peer: {} is {}, not pending; it must send CONNECT first",
                peer.name, peer.inbound_state
            )));
        }
        self.write_grant(&peer, terms, actor, "approved").await
    }

    /// Replaces an active peer's grant with another scope document.
    pub async fn set_grant(&self, id: Uuid, terms: &grant::Terms, actor: &str) -> Result<PeerRecord> {
        let peer = self.require_peer(id).await?;
        if peer.inbound_state != PeerState::Active {
            return Err(invalid(format!(
                "peer: {} is {}; only an active peer's grant is replaced (approve a pending or suspended one)",
                peer.name, peer.inbound_state
            )));
        }
        self.write_grant(&peer, terms, actor, "grant_changed").await
    }

    /// Checks a grant, writes it with its audit entry in one transaction,
    /// then tells the peer.
    async fn write_grant(
        &self,
        peer: &PeerRecord,
        terms: &grant::Terms,
        actor: &str,
        action: &str,
    ) -> Result<PeerRecord> {
        let terms = terms.checked().map_err(invalid)?;
        let mut tx = self.change_registry().await?;
        let missing: Vec<Uuid> = sqlx::query_scalar("SELECT missing_workspaces($1)")
            .bind(&terms.workspaces)
            .fetch_one(&mut *tx)
            .await?;
        if !missing.is_empty() {
            return Err(invalid(format!(
                "workspaceIds: no workspace {}",
                missing.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
        let mapped: Vec<Uuid> = terms.user_mappings.iter().map(|m| m.local_user).collect();
        let unknown: Vec<Uuid> = sqlx::query_scalar("SELECT missing_users($1)")
            .bind(&mapped)
            .fetch_one(&mut *tx)
            .await?;
        if let Some(u) = unknown.first() {
            return Err(invalid(format!("userMappings.localUserId: no local user {u}")));
        }
        // Approving also applies a name or base URL the peer announced since.
        registry::set_grant(&mut tx, peer.id, &terms).await?;
        let mut details = registry::grant_details(&terms);
        details["was"] = registry::grant_details(&peer.terms());
        details["name"] = json!(peer.pending_name);
        details["base_url"] = json!(peer.pending_base_url);
        registry::audit(&mut tx, peer.id, actor, action, details).await?;
        tx.commit().await?;
        let event = Event::Granted {
            read_write: terms.read_write,
            workspaces: terms.workspaces.iter().map(Uuid::to_string).collect(),
        };
        let peer = self.require_peer(peer.id).await?;
        self.notify(&peer, protocol::EVENT_PATH, &event).await;
        Ok(peer)
    }

    /// Deletes a peer that is pending, rejected or revoked (never one with a
    /// live grant either way); the audit trail keeps its history.
    pub async fn delete(&self, id: Uuid, actor: &str) -> Result<PeerRecord> {
        let peer = self.require_peer(id).await?;
        let mut tx = self.change_registry().await?;
        if !registry::delete_unapproved(&mut tx, id).await? {
            return Err(invalid(format!(
                "peer: {} is inbound {} and outbound {}; revoke it before deleting",
                peer.name, peer.inbound_state, peer.outbound_state
            )));
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
        let mut tx = self.change_registry().await?;
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
        let mut tx = self.change_registry().await?;
        registry::revoke_both(&mut tx, id).await?;
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
            .send::<_, serde_json::Value>(peer.id, &peer.base_url, path, body, self.settings.deadline)
            .await
        {
            tracing::warn!(peer = %peer.name, code = e.code, error = %e.message, "could not notify peer");
        }
    }
}
