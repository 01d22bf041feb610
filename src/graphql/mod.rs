//! What every resolver shares: the request context, global IDs, cursors,
//! query limits, the peer-answer wire helpers, and the federated fan-out
//! and forwarding. The schema's root is in `schema/`.

pub mod edges;
pub mod federated;
pub mod ids;
pub mod limits;
pub mod merged_list;
pub mod pagination;
pub mod wire;

use std::sync::Arc;

use async_graphql::{Context, ID, SimpleObject};
use uuid::Uuid;

use crate::auth::Principal;
use crate::db::RequestDb;
use crate::error::{AppError, AppResult};
use crate::federation::Federation;
use ids::{GlobalId, Kind, Owner};

pub use limits::QueryLimits;

/// The instance an object lives on (provenance).
#[derive(SimpleObject, Clone, Debug, Default, serde::Deserialize)]
#[graphql(name = "Instance")]
pub struct InstanceInfo {
    pub id: String,
    pub name: String,
}

/// Who a request acts for.
#[derive(Clone, Debug)]
pub enum Caller {
    /// A local user (API token or session).
    User(Principal),
    /// A peer instance, under the grant it holds here.
    Peer(PeerCaller),
}

#[derive(Clone, Debug)]
pub struct PeerCaller {
    pub instance_id: Uuid,
    pub name: String,
    pub actor: Option<crate::federation::protocol::Actor>,
    /// The grant's `maxRowsPerQuery`: pages and totals are cut to it.
    pub max_rows: Option<usize>,
}

/// Everything a resolver needs about the request it serves.
pub struct RequestContext {
    pub db: Arc<RequestDb>,
    pub caller: Caller,
    pub instance_id: Uuid,
    pub instance: Arc<InstanceInfo>,
    pub max_page_size: usize,
    pub federation: Arc<Federation>,
    pub hop: crate::federation::protocol::Hop,
    pub report: Arc<std::sync::Mutex<federated::Report>>,
    pub subrequests: Arc<federated::Subrequests>,
    pub cursor_key: Arc<pagination::CursorKey>,
    /// This instance's per-user agent containers.
    pub agents: Arc<crate::containers::AgentService>,
    /// The knowledge base's settings and embedder.
    pub knowledge: Arc<crate::knowledge::KnowledgeService>,
    /// Entries a resolver adds to the response's `extensions` (beside `federation`).
    pub extensions: Arc<std::sync::Mutex<serde_json::Map<String, serde_json::Value>>>,
}

impl RequestContext {
    pub fn of<'a>(ctx: &Context<'a>) -> &'a Self {
        ctx.data_unchecked::<RequestContext>()
    }

    /// A cursor for a client of this request.
    pub fn seal_cursor(&self, cursor: &pagination::Cursor) -> String {
        self.cursor_key.seal(cursor)
    }

    /// `after` as this request's caller may give it: sealed by us, or, from
    /// a peer resuming a list for its own client, plain.
    pub fn open_cursor(&self, after: &str, ordering: &str) -> AppResult<pagination::Cursor> {
        self.cursor_key
            .open(after, ordering, matches!(self.caller, Caller::Peer(_)))
    }

    /// A page's size for `first`: a local user asking for more than the
    /// page size is refused; a peer's pages are cut to its grant's
    /// `maxRowsPerQuery` (and the page size), as its merge asks for what its
    /// own client asked.
    pub fn page_size(&self, first: Option<i32>) -> AppResult<usize> {
        match &self.caller {
            Caller::Peer(_) => {
                pagination::page_size(first.map(|n| n.min(self.max_page_size as i32)), self.max_page_size)
            }
            Caller::User(_) => pagination::page_size(first, self.max_page_size),
        }
    }

    /// A `totalCount` as the caller may learn it: at most a peer's `maxRowsPerQuery`.
    pub fn cap_total(&self, total: i64) -> i64 {
        match &self.caller {
            Caller::Peer(PeerCaller {
                max_rows: Some(max), ..
            }) => total.min(*max as i64),
            _ => total,
        }
    }

    /// A LIMIT for a list without pages (a workspace's members, projects,
    /// teams): a peer's `maxRowsPerQuery`; None (no limit) otherwise.
    pub fn row_limit(&self) -> Option<i64> {
        match &self.caller {
            Caller::Peer(PeerCaller {
                max_rows: Some(max), ..
            }) => Some(*max as i64),
            _ => None,
        }
    }

    /// The local user behind the request; peers are refused.
    pub fn user(&self) -> AppResult<&Principal> {
        match &self.caller {
            Caller::User(p) => Ok(p),
            Caller::Peer(_) => Err(AppError::Forbidden("not available to peer instances".into())),
        }
    }

    /// Requires an instance administrator.
    pub fn admin(&self) -> AppResult<&Principal> {
        let user = self.user()?;
        if user.is_admin {
            Ok(user)
        } else {
            Err(AppError::Forbidden("only instance administrators may do this".into()))
        }
    }

    pub fn is_local(&self, instance: &InstanceInfo) -> bool {
        instance.id == self.instance.id
    }

    /// Parses an ID that must name an object of `kind` on this instance.
    pub fn local_id(&self, id: &ID, kind: Kind) -> AppResult<Uuid> {
        GlobalId::local(id, kind, self.instance_id)
    }

    /// `local_id` of an input field, naming the field in a refusal.
    pub fn local_id_of(&self, field: &str, id: &ID, kind: Kind) -> AppResult<Uuid> {
        self.local_id(id, kind).map_err(|e| e.in_field(field))
    }

    /// Where the object of `kind` that `id` names lives; an ID of another
    /// kind is refused, naming `field`.
    pub fn owner_of(&self, field: &str, id: &ID, kind: Kind) -> AppResult<Owner> {
        let g = GlobalId::of_kind(id, kind).map_err(|e| e.in_field(field))?;
        Ok(if g.instance == self.instance_id {
            Owner::Here(g.local)
        } else {
            Owner::Instance(g.instance)
        })
    }

    /// Adds `key` to the response's `extensions`.
    pub fn note_extension(&self, key: &str, value: serde_json::Value) {
        self.extensions
            .lock()
            .expect("extensions lock")
            .insert(key.to_string(), value);
    }

    pub fn global_id(&self, kind: Kind, local: Uuid) -> ID {
        GlobalId::new(kind, self.instance_id, local).to_id()
    }
}

/// Trims a required name-like input and checks its length.
pub fn required_text(field: &str, value: &str, max: usize) -> AppResult<String> {
    no_nul(field, value)?;
    let v = value.trim();
    if v.is_empty() {
        return Err(AppError::BadInput(format!("{field} must not be empty")));
    }
    if v.chars().count() > max {
        return Err(AppError::BadInput(format!("{field} is longer than {max} characters")));
    }
    Ok(v.to_string())
}

/// Checks an optional free-text input's length.
/// PostgreSQL text cannot hold U+0000.
fn no_nul(field: &str, value: &str) -> AppResult<()> {
    if value.contains('\0') {
        return Err(AppError::BadInput(format!(
            "{field} must not contain the NUL character"
        )));
    }
    Ok(())
}

pub fn optional_text(field: &str, value: Option<String>, max: usize) -> AppResult<Option<String>> {
    if let Some(v) = &value {
        no_nul(field, v)?;
    }
    match value {
        Some(v) if v.chars().count() > max => {
            Err(AppError::BadInput(format!("{field} is longer than {max} characters")))
        }
        other => Ok(other),
    }
}
