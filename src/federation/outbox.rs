//! Domain events across instances (migrations 0082 and 0083).
//!
//! The spoke's side: triggers write each change to the outbox in the
//! change's transaction; the delivery worker (one replica at a time, the one
//! holding its advisory lock) numbers committed rows (`outbox_sequence()`),
//! then sends each subscribed peer the events after its acknowledged id as
//! signed EVENT batches, reading them with the peer's own grant as scope
//! (RLS), so a subscription sees exactly what the peer's reads would. The
//! cursor moves only to what the peer says it processed; a failed send is
//! tried again with exponential backoff. Delivery is at least once; the
//! receiver ignores ids it processed (exactly-once processing).
//!
//! The master's side: it subscribes to a peer, for all event types, when a
//! client first opens an `events` subscription covering it, and from then on
//! keeps it: again on a new grant and every [`RESUBSCRIBE_EVERY`] while this
//! process runs; the peer keeps delivering until the grant ends, also while
//! the master is down. The peer subscribes only the types of resources the
//! grant lets it read. So peers whose events nobody asked for send none.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;

use super::metrics::PeerLabels;
use super::protocol::{self, DomainEvent, Event, EventAck, Subscribe};
use super::registry::{PeerRecord, PeerState};
use super::{Federation, grant};
use crate::db::{PeerScope, RequestDb, Scope};

/// Events in one EVENT batch (within `protocol::MAX_EVENT_BATCH`).
pub const BATCH: i64 = 100;
/// How often a master subscribes again to every peer that granted it access.
pub const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(60);
/// How long acknowledged outbox rows stay, for this instance's own `events`
/// subscribers to resume from.
const KEEP_ACKED: Duration = Duration::from_secs(3600);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Longest wait between attempts to deliver to a failing peer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a replica that does not deliver asks whether it may.
const LEADER_POLL: Duration = Duration::from_secs(2);

/// The scope a peer's grant reads with, as its QUERY would without a
/// person (the grant's guest): None when it may read no resource.
pub fn peer_read_scope(peer: &PeerRecord) -> Option<Scope> {
    let resources: Vec<&'static str> = peer
        .terms()
        .readable()
        .into_iter()
        .map(grant::Resource::as_str)
        .collect();
    if resources.is_empty() {
        return None;
    }
    Some(Scope {
        user_id: None,
        read_workspaces: peer.grant_workspaces.clone(),
        write_workspaces: Vec::new(),
        peer: Some(PeerScope {
            peer_id: peer.id,
            resources,
            write_resources: Vec::new(),
            remote_actor: None,
        }),
    })
}

/// Whether a grant may carry events: only one for the whole instance. A
/// grant limited to some people, or refusing unmapped ones, delivers none,
/// since events go to every user of the master.
pub fn grant_allows_events(peer: &PeerRecord) -> bool {
    let terms = peer.terms();
    terms.users.is_none() && terms.unmapped == grant::Unmapped::Guest
}

/// One subscribed peer as the worker reads it.
struct Subscription {
    peer_id: Uuid,
    types: Vec<String>,
    acked_id: i64,
}

/// When a failing peer may be tried again.
#[derive(Default)]
struct Backoff(HashMap<Uuid, (u32, Instant)>);

impl Backoff {
    fn due(&self, peer: Uuid, now: Instant) -> bool {
        self.0.get(&peer).is_none_or(|(_, at)| *at <= now)
    }

    fn failed(&mut self, peer: Uuid) {
        let entry = self.0.entry(peer).or_insert((0, Instant::now()));
        entry.0 += 1;
        let wait = Duration::from_millis(100)
            .saturating_mul(1 << entry.0.min(16))
            .min(MAX_BACKOFF);
        entry.1 = Instant::now() + wait;
    }

    fn next_due(&self) -> Option<Instant> {
        self.0.values().map(|(_, at)| *at).min()
    }
}

impl Federation {
    /// The delivery worker, until `closing`: waits to be the replica that
    /// delivers, then numbers and delivers whenever the outbox is written
    /// (and at least every second, for retries and acknowledgements).
    pub async fn deliver_events_until(self: Arc<Self>, statement_timeout: Duration, closing: impl Future<Output = ()>) {
        tokio::pin!(closing);
        loop {
            let led = async {
                match self.lead_delivery().await {
                    Ok(Some(mut lock)) => self.deliver_while_leading(&mut lock, statement_timeout).await,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "event delivery cannot take its lock"),
                }
                tokio::time::sleep(LEADER_POLL).await;
            };
            tokio::select! {
                () = &mut closing => return,
                () = led => {}
            }
        }
    }

    /// A connection holding the delivery lock (released with it, also when
    /// this replica dies), or None when another replica holds it.
    async fn lead_delivery(&self) -> Result<Option<PgConnection>, sqlx::Error> {
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let mine: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('mosaic.job'), hashtext('event-delivery'))")
                .fetch_one(&mut conn)
                .await?;
        Ok(mine.then_some(conn))
    }

    /// Rounds of numbering and delivery until the lock's connection fails.
    async fn deliver_while_leading(&self, lock: &mut PgConnection, statement_timeout: Duration) {
        let mut backoff = Backoff::default();
        let mut pruned = Instant::now() - PRUNE_EVERY;
        loop {
            // On the lock's own connection: if it is gone, so is the lock.
            let last: i64 = match sqlx::query_scalar("SELECT outbox_sequence()")
                .fetch_one(&mut *lock)
                .await
            {
                Ok(last) => last,
                Err(e) => {
                    tracing::warn!(error = %e, "numbering the outbox failed; delivery pauses");
                    return;
                }
            };
            let more = match self.deliver_round(last, &mut backoff, statement_timeout).await {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "delivering events failed");
                    false
                }
            };
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                if let Err(e) = self.prune_events().await {
                    tracing::warn!(error = %e, "pruning events failed");
                }
            }
            if more {
                continue;
            }
            let wait = backoff
                .next_due()
                .map_or(Duration::from_secs(1), |at| {
                    at.saturating_duration_since(Instant::now())
                })
                .clamp(Duration::from_millis(10), Duration::from_secs(1));
            let _ = tokio::time::timeout(wait, self.outbox_written.notified()).await;
        }
    }

    /// One pass over the subscriptions, all peers at once; whether some peer
    /// has more to send right away.
    async fn deliver_round(
        &self,
        last: i64,
        backoff: &mut Backoff,
        statement_timeout: Duration,
    ) -> Result<bool, sqlx::Error> {
        let subscriptions: Vec<Subscription> =
            sqlx::query("SELECT peer_id, types, acked_id, failures FROM event_subscriptions ORDER BY peer_id")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| {
                    let peer_id = r.get("peer_id");
                    // Failures reset by a new SUBSCRIBE: the peer is back, try it now.
                    if r.get::<i32, _>("failures") == 0 {
                        backoff.0.remove(&peer_id);
                    }
                    Subscription {
                        peer_id,
                        types: r.get("types"),
                        acked_id: r.get("acked_id"),
                    }
                })
                .collect();
        let now = Instant::now();
        let mut sends = Vec::new();
        for s in subscriptions {
            let label = PeerLabels {
                peer: self.peer_label(s.peer_id),
            };
            self.metrics
                .outbox_pending
                .get_or_create(&label)
                .set((last - s.acked_id).max(0));
            if s.acked_id < last && backoff.due(s.peer_id, now) {
                sends.push(async move {
                    let sent = self.deliver_to(&s, last, statement_timeout).await;
                    (s.peer_id, label, sent)
                });
            }
        }
        let mut more = false;
        for (peer, label, sent) in futures::future::join_all(sends).await {
            match sent {
                Ok((acked, full)) => {
                    backoff.0.remove(&peer);
                    self.metrics
                        .outbox_pending
                        .get_or_create(&label)
                        .set((last - acked).max(0));
                    more |= full;
                }
                Err(e) => {
                    backoff.failed(peer);
                    tracing::info!(peer = %label.peer, error = %e, "event delivery failed; will retry");
                    let _ = sqlx::query(
                        "UPDATE event_subscriptions SET failures = failures + 1, last_error = left($2, 500) WHERE peer_id = $1",
                    )
                    .bind(peer)
                    .bind(&e)
                    .execute(&self.pool)
                    .await;
                }
            }
        }
        Ok(more)
    }

    /// Sends `s` the next batch it may read (checked now: a grant revoked or
    /// narrowed since applies at once). Returns the acknowledged id and
    /// whether the batch was full.
    async fn deliver_to(
        &self,
        s: &Subscription,
        last: i64,
        statement_timeout: Duration,
    ) -> Result<(i64, bool), String> {
        let peer = self
            .peer(s.peer_id)
            .await
            .map_err(|e| e.to_string())?
            .filter(|p| p.inbound_state == PeerState::Active && grant_allows_events(p));
        let Some(peer) = peer else {
            // The grant ended (its trigger drops the subscription) or changed.
            return Ok((s.acked_id, false));
        };
        let events = match peer_read_scope(&peer) {
            Some(scope) => self
                .visible_events(scope, s, last, statement_timeout)
                .await
                .map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let full = events.len() as i64 == BATCH;
        // A full batch covers ids up to its last; otherwise all up to `last`.
        let through = if full {
            events.last().map_or(last, |e| e.id)
        } else {
            last
        };
        let acked = if events.is_empty() {
            // Nothing in the range is the peer's to see: nothing to send.
            through
        } else {
            let count = events.len();
            let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            let body = Event::Domain { events, through };
            let answer = self
                .send(
                    peer.id,
                    &peer.base_url,
                    protocol::EVENT_PATH,
                    &body,
                    self.settings.deadline,
                )
                .await
                .map_err(|e| format!("{}: {}", e.code, e.message))?;
            let ack: EventAck =
                serde_json::from_value(answer).map_err(|e| format!("the acknowledgement is not valid: {e}"))?;
            let acked = ack.processed.min(through);
            let delivered = ids.iter().filter(|id| **id <= acked).count();
            debug_assert!(delivered <= count);
            self.metrics
                .events_delivered
                .get_or_create(&PeerLabels {
                    peer: self.peer_label(peer.id),
                })
                .inc_by(delivered as u64);
            acked
        };
        sqlx::query(
            "UPDATE event_subscriptions SET acked_id = greatest(acked_id, $2), delivered_at = now(), \
             failures = 0, last_error = NULL WHERE peer_id = $1",
        )
        .bind(s.peer_id)
        .bind(acked)
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok((acked, full && acked >= through))
    }

    /// The events after the subscriber's cursor, up to `last`, of its types,
    /// that its grant lets it read (the outbox's row policies decide).
    async fn visible_events(
        &self,
        scope: Scope,
        s: &Subscription,
        last: i64,
        statement_timeout: Duration,
    ) -> Result<Vec<DomainEvent>, sqlx::Error> {
        let db = RequestDb::new(self.pool.clone(), scope, statement_timeout, true);
        let rows = sqlx::query(
            "SELECT id, type, workspace_id, object_id, changed, at FROM event_outbox \
             WHERE id > $1 AND id <= $2 AND type = ANY($3) ORDER BY id LIMIT $4",
        )
        .bind(s.acked_id)
        .bind(last)
        .bind(&s.types)
        .bind(BATCH)
        .fetch_all(&mut *db.conn().await?)
        .await?;
        db.rollback().await?;
        rows.into_iter()
            .map(|r| {
                let at: time::OffsetDateTime = r.try_get("at")?;
                Ok(DomainEvent {
                    id: r.try_get("id")?,
                    instance: self.instance_id,
                    kind: r.try_get("type")?,
                    workspace: r.try_get("workspace_id")?,
                    object: r.try_get("object_id")?,
                    changed: r.try_get("changed")?,
                    at: at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn prune_events(&self) -> Result<(), sqlx::Error> {
        let days = i32::try_from(self.settings.events_retention_days).unwrap_or(i32::MAX);
        sqlx::query("SELECT prune_event_outbox(make_interval(days => $1), make_interval(secs => $2))")
            .bind(days)
            .bind(KEEP_ACKED.as_secs_f64())
            .execute(&self.pool)
            .await?;
        sqlx::query("SELECT prune_received_events(make_interval(days => $1))")
            .bind(days)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks `peers` as ones whose events a client asked for; subscribes to
    /// those not asked for before, now.
    pub fn want_events(&self, peers: impl IntoIterator<Item = Uuid>) {
        let mut wanted = self.events_wanted.lock().expect("wanted lock");
        let before = wanted.len();
        wanted.extend(peers);
        if wanted.len() > before {
            self.subscribe_now.notify_one();
        }
    }

    /// The master's side, until `closing`: subscribes to every peer we may
    /// query whose events were asked for, when first asked, whenever a peer
    /// grants us access, and every [`RESUBSCRIBE_EVERY`] (a peer that lost
    /// the subscription with a grant change gets it back).
    pub async fn subscribe_until(self: Arc<Self>, closing: impl Future<Output = ()>) {
        tokio::pin!(closing);
        loop {
            match self.queryable_peers().await {
                Ok(peers) => {
                    let wanted = self.events_wanted.lock().expect("wanted lock").clone();
                    let all = peers
                        .iter()
                        .filter(|p| wanted.contains(&p.id))
                        .map(|p| self.subscribe_to(p));
                    futures::future::join_all(all).await;
                }
                Err(e) => tracing::warn!(error = %e, "listing peers to subscribe to"),
            }
            tokio::select! {
                () = &mut closing => return,
                () = self.subscribe_now.notified() => {}
                () = tokio::time::sleep(RESUBSCRIBE_EVERY) => {}
            }
        }
    }

    /// Subscribes to all of `peer`'s event types (it keeps what our grant
    /// lets us read). A refusal is logged: its grant may carry no events.
    pub async fn subscribe_to(&self, peer: &PeerRecord) {
        let body = Subscribe {
            types: protocol::event_types().collect(),
        };
        if let Err(e) = self
            .send::<_, serde_json::Value>(
                peer.id,
                &peer.base_url,
                protocol::SUBSCRIBE_PATH,
                &body,
                self.settings.deadline,
            )
            .await
        {
            tracing::info!(peer = %peer.name, code = e.code, error = %e.message, "subscribing to events failed");
        }
    }

    /// Records a domain batch from `peer` (already checked): one transaction
    /// with its cursor. Returns the last id processed.
    pub async fn record_received(
        &self,
        peer: &PeerRecord,
        events: &[DomainEvent],
        through: i64,
    ) -> Result<i64, sqlx::Error> {
        let rows: Vec<serde_json::Value> = events
            .iter()
            .map(|e| {
                serde_json::json!({ "id": e.id, "workspace_id": e.workspace, "type": e.kind,
                    "object_id": e.object, "changed": e.changed, "at": e.at })
            })
            .collect();
        let before: Option<i64> = sqlx::query_scalar("SELECT last_id FROM received_event_cursors WHERE peer_id = $1")
            .bind(peer.id)
            .fetch_optional(&self.pool)
            .await?;
        let processed: i64 = sqlx::query_scalar("SELECT record_received_events($1, $2, $3)")
            .bind(peer.id)
            .bind(serde_json::Value::Array(rows))
            .bind(through)
            .fetch_one(&self.pool)
            .await?;
        let new = events
            .iter()
            .filter(|e| e.id > before.unwrap_or(0) && e.id <= processed)
            .count();
        self.metrics
            .events_received
            .get_or_create(&PeerLabels {
                peer: self.peer_label(peer.id),
            })
            .inc_by(new as u64);
        Ok(processed)
    }

    /// Each subscribed peer's backlog: (peer, unacknowledged ids), for
    /// `mosaic federation status`.
    pub async fn outbox_backlog(&self) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT s.peer_id, greatest(q.last_id - s.acked_id, 0) FROM event_subscriptions s, event_outbox_sequencer q",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }
}
