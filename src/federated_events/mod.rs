//! `events(scope, types, after)`: domain events (`task.created`, ...) of
//! this instance and of the peers it subscribes to, live, in order per
//! instance, resumable. This instance's come from its outbox (migration
//! 0082), read under the subscriber's own scope (RLS: workspaces they can
//! read); peers' from what they delivered (migration 0083, under their
//! grant). The listener only wakes a feed; the feed reads the rows after its
//! position per instance, so a wake-up missed or lagged loses nothing, and
//! a client resuming with `after` gets what it missed before the live ones.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_graphql::{Context, ID, SimpleObject, Subscription};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::Stream;
use sqlx::Row;
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::federation::protocol;
use crate::federation::registry::PeerState;
use crate::graphql::federated::InstanceScope;
use crate::graphql::ids::{GlobalId, Kind};
use crate::graphql::{InstanceInfo, RequestContext};
use crate::live::event_feed::FeedNote;
use crate::live::{Admission, Live};

/// The longest `after` accepted, in characters.
const MAX_CURSOR_CHARS: usize = 4096;
/// Rows read per instance and wake-up.
const PAGE: i64 = 100;

/// A change on an instance: a task, project, event, knowledge entry or
/// agent task created, updated or deleted.
#[derive(SimpleObject, Clone, Debug)]
pub struct FederatedEvent {
    /// The event's id on its instance (increasing there).
    pub id: ID,
    /// `task.created`, `project.updated`, `knowledge_entry.deleted`, ...
    #[graphql(name = "type")]
    pub kind: String,
    /// When the change was written, on its instance's clock.
    pub at: OffsetDateTime,
    pub instance: InstanceInfo,
    /// The global ID of the object that changed (it may be gone).
    pub object_id: ID,
    pub workspace_id: ID,
    /// The fields an update changed, as column names (empty for creation
    /// and deletion).
    pub changed: Vec<String>,
    /// Pass as `after` to resume after this event (every instance's place).
    pub cursor: String,
}

#[derive(Default)]
pub struct FederatedEventSubscription;

#[Subscription]
impl FederatedEventSubscription {
    /// Domain events of the instances in `scope` (no scope: this one only;
    /// `all`: this one and every peer it may query; this instance subscribes
    /// to a peer's events the first time someone asks for them), of the
    /// `types` given (default all), in order per instance. From now on, or
    /// after the place `after` (an event's `cursor`) names. This instance's
    /// events are those of workspaces you can read; peers' are what their
    /// grants let this instance read.
    async fn events(
        &self,
        ctx: &Context<'_>,
        scope: Option<InstanceScope>,
        types: Option<Vec<String>>,
        after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = AppResult<FederatedEvent>>> {
        let rc = RequestContext::of(ctx);
        let user = rc.user()?;
        let types = check_types(types)?;
        let live = ctx.data_unchecked::<Arc<Live>>();
        let (local, peers) = instances(rc, scope.as_ref()).await?;
        // Subscribes to those peers' events if this instance does not yet.
        rc.federation
            .want_events(peers.iter().filter_map(|p| p.id.parse().ok()));
        let admission = live.admit_subscription(user.user_id)?;
        let positions = positions(rc, local, &peers, after.as_deref()).await;
        rc.db.rollback().await?;
        let positions = positions?;
        // The feed reads rows after the positions before it first waits, so
        // nothing recorded between reading them and listening is missed.
        let notes = live.event_feed();
        let feed = Feed {
            rc,
            local,
            peers,
            types,
            positions,
            queue: VecDeque::new(),
            notes,
            _admission: admission,
        };
        Ok(futures::stream::unfold(Some(feed), |feed| async move {
            let mut feed = feed?;
            let next = feed.next().await?;
            let keep = next.is_ok().then_some(feed);
            Some((next, keep))
        }))
    }
}

/// The types asked for, each known (None: all).
fn check_types(types: Option<Vec<String>>) -> AppResult<Option<Vec<String>>> {
    let Some(types) = types else { return Ok(None) };
    let known: Vec<String> = protocol::event_types().collect();
    if let Some(bad) = types.iter().find(|t| !known.contains(t)) {
        return Err(AppError::BadInput(format!(
            "types: unknown event type {:?}; known: {}",
            bad.chars().take(64).collect::<String>(),
            known.join(", ")
        )));
    }
    Ok(Some(types))
}

/// Whether this instance is in the scope, and the peers (id and name) it
/// names: those we may query, whose events we subscribe to.
async fn instances(rc: &RequestContext, scope: Option<&InstanceScope>) -> AppResult<(bool, Vec<InstanceInfo>)> {
    let Some(scope) = scope else {
        return Ok((true, Vec::new()));
    };
    let peers = rc.federation.queryable_peers().await?;
    let info = |p: &crate::federation::registry::PeerRecord| InstanceInfo {
        id: p.id.to_string(),
        name: p.name.clone(),
    };
    match (&scope.instances, scope.all.unwrap_or(false)) {
        (Some(_), true) => Err(AppError::BadInput(
            "scope: give either all or instances, not both".into(),
        )),
        (None, false) => Ok((true, Vec::new())),
        (None, true) => Ok((true, peers.iter().map(info).collect())),
        (Some(names), false) => {
            let mut local = false;
            let mut chosen: Vec<InstanceInfo> = Vec::new();
            for name in names {
                if *name == rc.instance.name || *name == rc.instance.id {
                    local = true;
                    continue;
                }
                let found: Vec<_> = peers
                    .iter()
                    .filter(|p| p.outbound_state == PeerState::Active && (p.id.to_string() == *name || p.name == *name))
                    .collect();
                match found.as_slice() {
                    [p] if !chosen.iter().any(|c| c.id == p.id.to_string()) => chosen.push(info(p)),
                    [_] => {}
                    [] => {
                        return Err(AppError::BadInput(format!(
                            "scope.instances: {name:?} is not this instance nor a peer it receives events from"
                        )));
                    }
                    _ => {
                        return Err(AppError::BadInput(format!(
                            "scope.instances: several peers are named {name:?}; use the instance id"
                        )));
                    }
                }
            }
            Ok((local, chosen))
        }
    }
}

/// Where the feed starts for each instance: `after`'s place where it names
/// one, else now (the last id numbered here, the last processed of a peer).
async fn positions(
    rc: &RequestContext,
    local: bool,
    peers: &[InstanceInfo],
    after: Option<&str>,
) -> AppResult<BTreeMap<String, i64>> {
    let given = after.map(decode_cursor).transpose()?.unwrap_or_default();
    let mut conn = rc.db.conn().await?;
    let mut at = BTreeMap::new();
    if local {
        let now: i64 = sqlx::query_scalar("SELECT last_id FROM event_outbox_sequencer")
            .fetch_one(&mut *conn)
            .await?;
        at.insert(
            rc.instance.id.clone(),
            given.get(&rc.instance.id).copied().unwrap_or(now),
        );
    }
    let ids: Vec<Uuid> = peers.iter().filter_map(|p| p.id.parse().ok()).collect();
    let processed: BTreeMap<String, i64> =
        sqlx::query_as::<_, (Uuid, i64)>("SELECT peer_id, last_id FROM received_event_cursors WHERE peer_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|(p, n)| (p.to_string(), n))
            .collect();
    for p in peers {
        let now = processed.get(&p.id).copied().unwrap_or(0);
        at.insert(p.id.clone(), given.get(&p.id).copied().unwrap_or(now));
    }
    Ok(at)
}

/// A cursor: each instance's last id delivered, as base64url JSON. Not
/// sealed: it only moves the subscriber's own view, which their scope bounds.
fn encode_cursor(at: &BTreeMap<String, i64>) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(at).expect("a map of ids serialises"))
}

fn decode_cursor(cursor: &str) -> AppResult<BTreeMap<String, i64>> {
    let bad = || AppError::BadInput("after: not a cursor of events; pass an event's cursor".into());
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(AppError::BadInput(format!(
            "after: longer than {MAX_CURSOR_CHARS} characters"
        )));
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let at: BTreeMap<String, i64> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if at.iter().any(|(k, v)| Uuid::parse_str(k).is_err() || *v < 0) {
        return Err(bad());
    }
    Ok(at)
}

fn kind_of(event_type: &str) -> Kind {
    match event_type.split_once('.').map_or(event_type, |(k, _)| k) {
        "project" => Kind::Project,
        "event" => Kind::Event,
        "knowledge_entry" => Kind::KnowledgeEntry,
        "agent_task" => Kind::AgentTask,
        _ => Kind::Task,
    }
}

/// One subscriber's feed.
struct Feed<'a> {
    rc: &'a RequestContext,
    local: bool,
    peers: Vec<InstanceInfo>,
    types: Option<Vec<String>>,
    /// Each instance's last id delivered (keyed by instance id).
    positions: BTreeMap<String, i64>,
    queue: VecDeque<FederatedEvent>,
    notes: tokio::sync::broadcast::Receiver<FeedNote>,
    _admission: Admission,
}

impl Feed<'_> {
    async fn next(&mut self) -> Option<AppResult<FederatedEvent>> {
        loop {
            if let Some(mut event) = self.queue.pop_front() {
                let id: i64 = event.id.parse().unwrap_or(0);
                self.positions.insert(event.instance.id.clone(), id);
                event.cursor = encode_cursor(&self.positions);
                return Some(Ok(event));
            }
            let read = self.read().await;
            if let Err(e) = self.rc.db.rollback().await {
                return Some(Err(e.into()));
            }
            match read {
                Ok(()) if !self.queue.is_empty() => continue,
                Ok(()) => {}
                Err(e) => return Some(Err(e)),
            }
            match self.notes.recv().await {
                // Lagging loses nothing: the rows are read again from the positions.
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Queues the rows after each position, in order per instance.
    async fn read(&mut self) -> AppResult<()> {
        let rc = self.rc;
        let mut conn = rc.db.conn().await?;
        if self.local {
            let after = self.positions.get(&rc.instance.id).copied().unwrap_or(0);
            let rows = sqlx::query(
                "SELECT id, type, workspace_id, object_id, changed, at FROM event_outbox \
                 WHERE id > $1 AND ($2::text[] IS NULL OR type = ANY($2)) ORDER BY id LIMIT $3",
            )
            .bind(after)
            .bind(&self.types)
            .bind(PAGE)
            .fetch_all(&mut *conn)
            .await?;
            let here = InstanceInfo {
                id: rc.instance.id.clone(),
                name: rc.instance.name.clone(),
            };
            for r in rows {
                self.queue.push_back(event_from(&r, &here, rc.instance_id)?);
            }
        }
        if !self.peers.is_empty() {
            let (ids, after): (Vec<Uuid>, Vec<i64>) = self
                .peers
                .iter()
                .filter_map(|p| {
                    Some((
                        p.id.parse::<Uuid>().ok()?,
                        self.positions.get(&p.id).copied().unwrap_or(0),
                    ))
                })
                .unzip();
            let rows = sqlx::query(
                "SELECT r.peer_id, r.id, r.type, r.workspace_id, r.object_id, r.changed, r.at \
                 FROM received_events r JOIN unnest($1::uuid[], $2::bigint[]) AS p(peer, after) \
                   ON r.peer_id = p.peer AND r.id > p.after \
                 WHERE ($3::text[] IS NULL OR r.type = ANY($3)) ORDER BY r.peer_id, r.id LIMIT $4",
            )
            .bind(&ids)
            .bind(&after)
            .bind(&self.types)
            .bind(PAGE)
            .fetch_all(&mut *conn)
            .await?;
            for r in rows {
                let peer: Uuid = r.try_get("peer_id")?;
                let Some(info) = self.peers.iter().find(|p| p.id == peer.to_string()) else {
                    continue;
                };
                let event = event_from(&r, info, peer)?;
                self.queue.push_back(event);
            }
        }
        Ok(())
    }
}

fn event_from(r: &sqlx::postgres::PgRow, instance: &InstanceInfo, instance_id: Uuid) -> AppResult<FederatedEvent> {
    let kind: String = r.try_get("type")?;
    let id: i64 = r.try_get("id")?;
    Ok(FederatedEvent {
        id: ID(id.to_string()),
        object_id: GlobalId::new(kind_of(&kind), instance_id, r.try_get("object_id")?).to_id(),
        workspace_id: GlobalId::new(Kind::Workspace, instance_id, r.try_get("workspace_id")?).to_id(),
        kind,
        at: r.try_get("at")?,
        instance: instance.clone(),
        changed: r.try_get("changed")?,
        cursor: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let mut at = BTreeMap::new();
        at.insert(Uuid::new_v4().to_string(), 42);
        at.insert(Uuid::new_v4().to_string(), 0);
        assert_eq!(decode_cursor(&encode_cursor(&at)).unwrap(), at);
        assert!(decode_cursor("not a cursor").is_err());
        let negative = URL_SAFE_NO_PAD.encode(format!(r#"{{"{}":-1}}"#, Uuid::new_v4()));
        assert!(decode_cursor(&negative).is_err());
        let not_an_instance = URL_SAFE_NO_PAD.encode(r#"{"x":1}"#);
        assert!(decode_cursor(&not_an_instance).is_err());
        assert!(decode_cursor(&"A".repeat(MAX_CURSOR_CHARS + 1)).is_err());
    }

    #[test]
    fn unknown_types_are_refused_naming_the_argument() {
        assert!(check_types(Some(vec!["task.created".into()])).is_ok());
        let e = check_types(Some(vec!["task.exploded".into()])).unwrap_err();
        assert_eq!(e.code(), "BAD_USER_INPUT");
        assert!(e.message().starts_with("types:"));
    }
}
