//! Instance administration of peers: list, connect, approve, reject,
//! suspend, revoke, delete; and the request audit (audit.rs). Instance
//! administrators only.

pub mod audit;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::federation::grant::{self, RateLimit, Terms, Unmapped, UserMapping};
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
    /// Resources granted, as written (null: all).
    pub resources: Option<Vec<String>>,
    pub excluded_resources: Vec<String>,
    /// Resources a read-write grant may change, as written (null: every readable one).
    pub write_resources: Option<Vec<String>>,
    /// What the peer may read: `resources` (or all) less `excludedResources`.
    pub readable_resources: Vec<String>,
    /// What the peer may change (empty unless read-write).
    pub writable_resources: Vec<String>,
    /// Most rows in one page or total the peer gets (null: the page size).
    pub max_rows_per_query: Option<i32>,
    /// The peer's own rate limit (null: the instance's defaults).
    pub rate_limit: Option<PeerRateLimit>,
    /// Remote people who act here as local users, within the grant.
    pub user_mappings: Vec<PeerUserMapping>,
    pub unmapped: UnmappedPeople,
}

#[derive(SimpleObject, InputObject, Clone, Copy, Debug)]
#[graphql(input_name = "RateLimitInput")]
pub struct PeerRateLimit {
    /// Requests refilled per second (above 0).
    pub per_second: f64,
    /// Requests that may come at once (at least 1).
    pub burst: i32,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct PeerUserMapping {
    /// A verified e-mail address or a global User ID of the peer's instance.
    pub remote: String,
    pub local_user_id: ID,
}

#[derive(InputObject, Clone, Debug)]
pub struct UserMappingInput {
    /// A verified e-mail address (the peer must vouch for it) or a global
    /// User ID of the peer's instance.
    pub remote: String,
    /// The local user they act as (a User ID of this instance).
    pub local_user_id: ID,
}

/// What happens to a remote person the grant maps to no local user.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum UnmappedPeople {
    /// They run as a guest of the grant (its workspaces and resources).
    Guest,
    /// They are refused (GRANT_DENIED).
    Refuse,
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
    let grant = grant_of(rc, &p.terms());
    Ok(Peer {
        id: p.id.to_string(),
        name: p.name,
        base_url: p.base_url,
        pending_name: p.pending_name,
        pending_base_url: p.pending_base_url,
        inbound_state: p.inbound_state.as_str().into(),
        outbound_state: p.outbound_state.as_str().into(),
        grant,
        key_fingerprints: p.keys.iter().map(|k| k.key_id.clone()).collect(),
        last_contact_at: stat.last_contact,
        recent_latency_ms: stat.median_latency_ms(),
        error_count: stat.errors,
        success_count: stat.successes,
        audit,
    })
}

fn grant_of(rc: &RequestContext, t: &Terms) -> PeerGrant {
    PeerGrant {
        workspaces: t.workspaces.iter().map(|w| rc.global_id(Kind::Workspace, *w)).collect(),
        read_write: t.read_write,
        users: t.users.clone(),
        forward: t.forward,
        resources: t.resources.as_deref().map(grant::resource_names),
        excluded_resources: grant::resource_names(&t.excluded_resources),
        write_resources: t.write_resources.as_deref().map(grant::resource_names),
        readable_resources: grant::resource_names(&t.readable()),
        writable_resources: grant::resource_names(&t.writable()),
        max_rows_per_query: t.max_rows_per_query.map(|n| n as i32),
        rate_limit: t.rate_limit.map(|r| PeerRateLimit {
            per_second: r.per_second,
            burst: r.burst as i32,
        }),
        user_mappings: t
            .user_mappings
            .iter()
            .map(|m| PeerUserMapping {
                remote: m.remote.clone(),
                local_user_id: rc.global_id(Kind::User, m.local_user),
            })
            .collect(),
        unmapped: match t.unmapped {
            Unmapped::Guest => UnmappedPeople::Guest,
            Unmapped::Refuse => UnmappedPeople::Refuse,
        },
    }
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
            retry_after_ms: error.retry_after.map(|d| d.as_millis() as u64),
        },
        PeeringError::Internal(e) => AppError::internal(e),
    }
}

/// What a grant's scope document may name and the bounds of its numbers,
/// as `Terms::checked` enforces them (so a form need not repeat them).
#[derive(SimpleObject, Clone, Debug)]
pub struct GrantOptions {
    /// Every resource a grant may name, in lower case.
    pub resources: Vec<String>,
    /// The largest `maxRowsPerQuery` (the smallest is 1).
    pub max_rows_per_query: i32,
    /// The largest `rateLimit.perSecond` (it must be above 0).
    pub max_per_second: f64,
    /// The largest `rateLimit.burst` (the smallest is 1).
    pub max_burst: i32,
    /// Most remote users one grant may be limited to.
    pub max_users: i32,
    /// Most remote people one grant may map to local users.
    pub max_user_mappings: i32,
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

    /// What a grant's scope document may name, and its numbers' bounds.
    async fn grant_options(&self, ctx: &Context<'_>) -> AppResult<GrantOptions> {
        RequestContext::of(ctx).admin()?;
        Ok(GrantOptions {
            resources: grant::resource_names(&grant::Resource::ALL),
            max_rows_per_query: grant::MAX_ROWS_PER_QUERY as i32,
            max_per_second: grant::MAX_PER_SECOND,
            max_burst: grant::MAX_BURST as i32,
            max_users: grant::MAX_GRANT_USERS as i32,
            max_user_mappings: grant::MAX_USER_MAPPINGS as i32,
        })
    }
}

/// A grant's scope document, as `approvePeer` and `setPeerGrant` take it.
#[derive(InputObject)]
pub struct PeerGrantInput {
    pub workspace_ids: Vec<ID>,
    /// COMMANDs (writes) allowed, on `writeResources`.
    #[graphql(default)]
    pub read_write: bool,
    /// Limit the grant to these remote users: e-mail addresses (matched only
    /// when the peer vouches the address is verified) or global User IDs.
    pub users: Option<Vec<String>>,
    /// Let the peer's reads go on to this instance's own peers (off by
    /// default; writes are never forwarded on a peer's behalf).
    #[graphql(default)]
    pub forward: bool,
    /// Resources granted, in lower case: tasks, projects, events, teams,
    /// members, activity, knowledge, agent_tasks (absent: all of them).
    pub resources: Option<Vec<String>>,
    /// Resources taken out of `resources` (or of all).
    #[graphql(default)]
    pub excluded_resources: Vec<String>,
    /// Resources a read-write grant may change (absent: every readable one).
    pub write_resources: Option<Vec<String>>,
    /// Most rows one page or total may hold for the peer (1..=10000).
    pub max_rows_per_query: Option<i32>,
    /// The peer's own rate limit (absent: the instance's defaults).
    pub rate_limit: Option<PeerRateLimit>,
    /// Remote people who act here as local users, within the grant.
    #[graphql(default)]
    pub user_mappings: Vec<UserMappingInput>,
    /// Remote people no mapping names: GUEST (the default) or REFUSE.
    #[graphql(default_with = "UnmappedPeople::Guest")]
    pub unmapped: UnmappedPeople,
}

impl PeerGrantInput {
    /// The terms as given; `Terms::checked` (in the operation) refuses bad ones.
    fn terms(&self, rc: &RequestContext) -> AppResult<Terms> {
        let resources =
            |field: &str, names: &[String]| grant::parse_resources(field, names).map_err(AppError::BadInput);
        Ok(Terms {
            workspaces: self
                .workspace_ids
                .iter()
                .map(|w| rc.local_id_of("workspaceIds", w, Kind::Workspace))
                .collect::<AppResult<Vec<_>>>()?,
            read_write: self.read_write,
            users: self.users.clone(),
            forward: self.forward,
            resources: self
                .resources
                .as_deref()
                .map(|r| resources("resources", r))
                .transpose()?,
            excluded_resources: resources("excludedResources", &self.excluded_resources)?,
            write_resources: self
                .write_resources
                .as_deref()
                .map(|r| resources("writeResources", r))
                .transpose()?,
            // Out of range (negative included) is refused by `checked`.
            max_rows_per_query: self.max_rows_per_query.map(|n| u32::try_from(n).unwrap_or(0)),
            rate_limit: self.rate_limit.map(|r| RateLimit {
                per_second: r.per_second,
                burst: u32::try_from(r.burst).unwrap_or(0),
            }),
            user_mappings: self
                .user_mappings
                .iter()
                .map(|m| {
                    Ok(UserMapping {
                        remote: m.remote.clone(),
                        local_user: rc.local_id_of("userMappings.localUserId", &m.local_user_id, Kind::User)?,
                    })
                })
                .collect::<AppResult<Vec<_>>>()?,
            unmapped: match self.unmapped {
                UnmappedPeople::Guest => Unmapped::Guest,
                UnmappedPeople::Refuse => Unmapped::Refuse,
            },
        })
    }
}

#[derive(InputObject)]
pub struct ApprovePeerInput {
    pub peer_id: String,
    #[graphql(flatten)]
    pub grant: PeerGrantInput,
}

#[derive(InputObject)]
pub struct SetPeerGrantInput {
    pub peer_id: String,
    #[graphql(flatten)]
    pub grant: PeerGrantInput,
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

    /// Grants a peer that asked to connect a scope document of this instance.
    async fn approve_peer(&self, ctx: &Context<'_>, input: ApprovePeerInput) -> AppResult<Peer> {
        let rc = RequestContext::of(ctx);
        let actor = rc.admin()?.email.clone();
        let terms = input.grant.terms(rc)?;
        let p = rc
            .federation
            .approve(peer_id(&input.peer_id)?, &terms, &actor)
            .await
            .map_err(refused)?;
        to_peer(rc, p).await
    }

    /// Replaces an active peer's grant with another scope document (audited).
    async fn set_peer_grant(&self, ctx: &Context<'_>, input: SetPeerGrantInput) -> AppResult<Peer> {
        let rc = RequestContext::of(ctx);
        let actor = rc.admin()?.email.clone();
        let terms = input.grant.terms(rc)?;
        let p = rc
            .federation
            .set_grant(peer_id(&input.peer_id)?, &terms, &actor)
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
