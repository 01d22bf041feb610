//! Instance administration of peers: list, connect, approve, reject,
//! suspend, revoke, delete; and the request audit (audit.rs). Instance
//! administrators only.

pub mod audit;

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::federation::grant::Terms;
use crate::federation::peering::PeeringError;
use crate::federation::registry::{self, PeerRecord};
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;

#[derive(SimpleObject, Clone, Debug)]
pub struct PeerGrant {
    /// Workspaces of this instance the peer may query.
    pub workspaces: Vec<ID>,
    pub read_write: bool,
    /// Remote users the grant is limited to (verified e-mail addresses or
    /// global User IDs); null means any.
    pub users: Option<Vec<String>>,
    /// The peer's reads may reach this instance's own peers (never its writes).
    pub forward: bool,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct PeerAuditEntry {
    pub actor: String,
    pub action: String,
    pub details: async_graphql::Json<serde_json::Value>,
    pub at: OffsetDateTime,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Peer {
    /// The peer's instance id.
    pub id: String,
    pub name: String,
    pub base_url: String,
    /// A new name the peer announced after its peering was approved; an
    /// admin applies it by approving the peer again.
    pub pending_name: Option<String>,
    /// A new base URL the peer announced after its peering was approved; an
    /// admin applies it by approving the peer again.
    pub pending_base_url: Option<String>,
    /// May the peer query us: none, pending, active, suspended, revoked, rejected.
    pub inbound_state: String,
    /// May we query the peer: none, requested, active, suspended, revoked, rejected.
    pub outbound_state: String,
    pub grant: PeerGrant,
    /// Key ids (fingerprints) of the peer's keys we accept.
    pub key_fingerprints: Vec<String>,
    pub last_contact_at: Option<OffsetDateTime>,
    /// Median latency of recent requests to the peer.
    pub recent_latency_ms: Option<u64>,
    pub error_count: u64,
    pub success_count: u64,
    pub audit: Vec<PeerAuditEntry>,
}

async fn to_peer(rc: &RequestContext, p: PeerRecord) -> AppResult<Peer> {
    let stat = rc.federation.stats.get(&rc.federation.pool, p.id).await?;
    let audit = registry::audit_log(&rc.federation.pool, p.id)
        .await?
        .into_iter()
        .map(|a| PeerAuditEntry {
            actor: a.actor,
            action: a.action,
            details: async_graphql::Json(a.details),
            at: a.at,
        })
        .collect();
    Ok(Peer {
        id: p.id.to_string(),
        name: p.name,
        base_url: p.base_url,
        pending_name: p.pending_name,
        pending_base_url: p.pending_base_url,
        inbound_state: p.inbound_state.as_str().into(),
        outbound_state: p.outbound_state.as_str().into(),
        grant: PeerGrant {
            workspaces: p
                .grant_workspaces
                .iter()
                .map(|w| rc.global_id(Kind::Workspace, *w))
                .collect(),
            read_write: p.grant_read_write,
            users: p.grant_users,
            forward: p.grant_forward,
        },
        key_fingerprints: p.keys.iter().map(|k| k.key_id.clone()).collect(),
        last_contact_at: stat.last_contact,
        recent_latency_ms: stat.median_latency_ms(),
        error_count: stat.errors,
        success_count: stat.successes,
        audit,
    })
}

fn peer_id(id: &str) -> AppResult<Uuid> {
    id.parse()
        .map_err(|_| AppError::BadInput(format!("peerId: '{id}' is not an instance id")))
}

fn refused(e: PeeringError) -> AppError {
    match e {
        PeeringError::Invalid(m) => AppError::BadInput(m),
        PeeringError::NotFound(id) => AppError::NotFound(format!("peer {id}")),
        PeeringError::Peer { target, error } => AppError::Peer {
            code: error.code,
            message: format!("{target}: {}", error.message),
            instance: target,
            peer_code: error.refusal,
        },
        PeeringError::Internal(e) => AppError::internal(e),
    }
}

#[derive(Default)]
pub struct PeerQuery;

#[Object]
impl PeerQuery {
    /// Every peer this instance knows, with its state, grant, keys and recent contact.
    async fn peers(&self, ctx: &Context<'_>) -> AppResult<Vec<Peer>> {
        let rc = RequestContext::of(ctx);
        rc.admin()?;
        let mut out = Vec::new();
        for p in registry::list(&rc.federation.pool).await? {
            out.push(to_peer(rc, p).await?);
        }
        Ok(out)
    }
}

#[derive(InputObject)]
pub struct ApprovePeerInput {
    pub peer_id: String,
    pub workspace_ids: Vec<ID>,
    #[graphql(default)]
    pub read_write: bool,
    /// Limit the grant to these remote users: e-mail addresses (matched only
    /// when the peer vouches the address is verified) or global User IDs.
    pub users: Option<Vec<String>>,
    /// Let the peer's reads go on to this instance's own peers (off by
    /// default; writes are never forwarded on a peer's behalf).
    #[graphql(default)]
    pub forward: bool,
}

#[derive(Default)]
pub struct PeerMutation;

#[Object]
impl PeerMutation {
    /// Asks the instance at `url` to let this instance query it (CONNECT).
    async fn connect_peer(&self, ctx: &Context<'_>, url: String) -> AppResult<Peer> {
        let rc = RequestContext::of(ctx);
        let actor = rc.admin()?.email.clone();
        let p = rc.federation.connect(&url, &actor).await.map_err(refused)?;
        to_peer(rc, p).await
    }

    /// Grants a peer that asked to connect access to workspaces of this instance.
    async fn approve_peer(&self, ctx: &Context<'_>, input: ApprovePeerInput) -> AppResult<Peer> {
        let rc = RequestContext::of(ctx);
        let actor = rc.admin()?.email.clone();
        let workspaces = input
            .workspace_ids
            .iter()
            .map(|w| rc.local_id(w, Kind::Workspace))
            .collect::<AppResult<Vec<_>>>()?;
        let terms = Terms {
            workspaces,
            read_write: input.read_write,
            users: input.users,
            forward: input.forward,
        };
        let p = rc
            .federation
            .approve(peer_id(&input.peer_id)?, &terms, &actor)
            .await
            .map_err(refused)?;
        to_peer(rc, p).await
    }

    async fn reject_peer(&self, ctx: &Context<'_>, peer_id: String) -> AppResult<Peer> {
        let rc = RequestContext::of(ctx);
        let actor = rc.admin()?.email.clone();
        let p = rc
            .federation
            .reject(self::peer_id(&peer_id)?, &actor)
            .await
            .map_err(refused)?;
        to_peer(rc, p).await
    }

    async fn suspend_peer(&self, ctx: &Context<'_>, peer_id: String) -> AppResult<Peer> {
        let rc = RequestContext::of(ctx);
        let actor = rc.admin()?.email.clone();
        let p = rc
            .federation
            .suspend(self::peer_id(&peer_id)?, &actor)
            .await
            .map_err(refused)?;
        to_peer(rc, p).await
    }

    /// Deletes a peer that is pending, rejected or revoked (not one with a
    /// live grant either way). Its audit trail is kept.
    async fn delete_peer(&self, ctx: &Context<'_>, peer_id: String) -> AppResult<Peer> {
        let rc = RequestContext::of(ctx);
        let actor = rc.admin()?.email.clone();
        let p = rc
            .federation
            .delete(self::peer_id(&peer_id)?, &actor)
            .await
            .map_err(refused)?;
        to_peer(rc, p).await
    }

    /// Cuts the peering in both directions at once (DISCONNECT).
    async fn revoke_peer(&self, ctx: &Context<'_>, peer_id: String) -> AppResult<Peer> {
        let rc = RequestContext::of(ctx);
        let actor = rc.admin()?.email.clone();
        let p = rc
            .federation
            .revoke(self::peer_id(&peer_id)?, &actor)
            .await
            .map_err(refused)?;
        to_peer(rc, p).await
    }
}
