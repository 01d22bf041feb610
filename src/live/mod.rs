//! Live updates: the instance's listener for database notifications, the
//! per-user limits on subscriptions and WebSocket connections, and the
//! signal that closes every subscription on shutdown.

pub mod agent_task_events;
pub mod event_feed;
pub mod listener;
pub mod task_changes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use sqlx::PgPool;
use tokio::sync::{Notify, broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::Limits;
use crate::db::cache::Forget;
use crate::error::AppError;
use agent_task_events::AgentTaskEventNote;
use event_feed::FeedNote;
use task_changes::TaskNote;

pub const TOO_MANY_SUBSCRIPTIONS: &str = "TOO_MANY_SUBSCRIPTIONS";
pub const TOO_MANY_CONNECTIONS: &str = "TOO_MANY_CONNECTIONS";
pub const SUBSCRIBER_TOO_SLOW: &str = "SUBSCRIBER_TOO_SLOW";

/// The longest `caught_up` waits.
const CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What one user holds open.
#[derive(Default)]
struct Usage {
    subscriptions: usize,
    connections: usize,
}

#[derive(Clone, Copy)]
enum Held {
    Subscription,
    Connection,
}

pub struct Live {
    task_changes: broadcast::Sender<TaskNote>,
    agent_task_events: broadcast::Sender<AgentTaskEventNote>,
    event_feed: broadcast::Sender<FeedNote>,
    max_subscriptions: usize,
    max_connections: usize,
    usage: Mutex<HashMap<Uuid, Usage>>,
    closing: watch::Sender<bool>,
    listener: Mutex<Option<JoinHandle<()>>>,
    /// Marks `caught_up` waits for, by payload.
    marks: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
    listening: watch::Receiver<bool>,
    agent_task_queue: Arc<Notify>,
    /// Claims waiting on `agent_task_queue` now.
    agent_claims_waiting: std::sync::atomic::AtomicUsize,
}

impl Live {
    /// Starts listening on a connection of `pool` (kept apart from the
    /// request pool: it is held for good) and fans changes out. The first
    /// LISTEN is in place when this returns, so no change committed
    /// afterwards is missed. `caches`: each with the channel its changes are
    /// announced on. `outbox_written`: woken by each write to the event
    /// outbox (the delivery worker's).
    pub async fn start(
        pool: PgPool,
        limits: &Limits,
        caches: Vec<(&'static str, Arc<dyn Forget>)>,
        outbox_written: Arc<Notify>,
    ) -> Result<Arc<Self>> {
        let (task_changes, _) = broadcast::channel(limits.subscription_buffer);
        let (agent_task_events, _) = broadcast::channel(limits.subscription_buffer);
        let (event_feed, _) = broadcast::channel(limits.subscription_buffer);
        let (closing, _) = watch::channel(false);
        let marks = Arc::new(Mutex::new(HashMap::new()));
        let (listening_tx, listening) = watch::channel(false);
        let agent_task_queue = Arc::new(Notify::new());
        let audience = listener::Audience {
            task_changes: task_changes.clone(),
            agent_task_events: agent_task_events.clone(),
            caches,
            marks: marks.clone(),
            listening: listening_tx,
            agent_task_queue: agent_task_queue.clone(),
            event_feed: event_feed.clone(),
            outbox_written,
        };
        let listener = listener::Listener::connect(&pool, &audience).await?;
        let live = Arc::new(Self {
            task_changes: task_changes.clone(),
            agent_task_events,
            event_feed,
            max_subscriptions: limits.max_subscriptions_per_user,
            max_connections: limits.max_ws_connections_per_user,
            usage: Mutex::default(),
            closing: closing.clone(),
            listener: Mutex::new(None),
            marks,
            listening,
            agent_task_queue,
            agent_claims_waiting: Default::default(),
        });
        let task = tokio::spawn(listener.run(pool, audience, closing.subscribe()));
        *live.listener.lock().expect("listener lock") = Some(task);
        Ok(live)
    }

    /// Returns once the listener has heard every change committed before the
    /// call: it sends a mark and waits to hear it, and PostgreSQL delivers
    /// notifications in commit order. For a change made by another process
    /// (the CLI, another replica), which the caches otherwise learn of a
    /// moment later. `pool`: any but the listener's.
    pub async fn caught_up(&self, pool: &PgPool) -> Result<()> {
        let mark = Uuid::new_v4().to_string();
        let (heard, hearing) = oneshot::channel();
        self.marks.lock().expect("marks lock").insert(mark.clone(), heard);
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(listener::MARK_CHANNEL)
            .bind(&mark)
            .execute(pool)
            .await?;
        let waited = tokio::time::timeout(CATCH_UP_TIMEOUT, hearing).await;
        self.marks.lock().expect("marks lock").remove(&mark);
        match waited {
            Ok(Ok(())) => Ok(()),
            _ => anyhow::bail!("the change listener did not hear its mark within {CATCH_UP_TIMEOUT:?}"),
        }
    }

    /// Whether the listener hears changes now (false while it reconnects,
    /// when the caches hold nothing).
    pub fn listening(&self) -> watch::Receiver<bool> {
        self.listening.clone()
    }

    /// Woken whenever agent work is queued or a held task ends (and when
    /// hearing resumes): what idle agents' claims wait on.
    pub fn agent_task_queue(&self) -> &Arc<Notify> {
        &self.agent_task_queue
    }

    /// Counts a claim as waiting until the guard is dropped.
    pub fn agent_claim_waits(&self) -> impl Drop + '_ {
        use std::sync::atomic::Ordering;
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.agent_claims_waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(&self.agent_claims_waiting)
    }

    /// Claims of agents waiting for work now.
    pub fn agent_claims_waiting(&self) -> usize {
        self.agent_claims_waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Task changes from now on; a receiver more than `subscription_buffer`
    /// changes behind gets `Lagged`.
    pub fn task_changes(&self) -> broadcast::Receiver<TaskNote> {
        self.task_changes.subscribe()
    }

    /// Agent task events from now on (lagging as `task_changes`).
    pub fn agent_task_events(&self) -> broadcast::Receiver<AgentTaskEventNote> {
        self.agent_task_events.subscribe()
    }

    /// Announcements of domain events (this instance's, and peers'), from
    /// now on; subscribers read the rows themselves, so lagging loses nothing.
    pub fn event_feed(&self) -> broadcast::Receiver<FeedNote> {
        self.event_feed.subscribe()
    }

    /// Open `events` subscriptions on this instance.
    pub fn event_feed_subscribers(&self) -> usize {
        self.event_feed.receiver_count()
    }

    /// Open subscriptions to agent task events on this instance.
    pub fn agent_task_event_subscribers(&self) -> usize {
        self.agent_task_events.receiver_count()
    }

    /// Open subscriptions to task changes on this instance.
    pub fn task_change_subscribers(&self) -> usize {
        self.task_changes.receiver_count()
    }

    /// Resolves once shutdown has begun.
    pub fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            let _ = closing.wait_for(|c| *c).await;
        }
    }

    /// Begins shutdown: subscriptions end, their connections close.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Waits for the listener task after [`Live::close`].
    pub async fn stopped(&self) {
        let task = self.listener.lock().expect("listener lock").take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "the change listener ended abnormally");
        }
    }

    /// One more live subscription for `user`, within the limit.
    pub fn admit_subscription(self: &Arc<Self>, user: Uuid) -> Result<Admission, AppError> {
        self.admit(user, Held::Subscription).ok_or_else(|| AppError::Limit {
            code: TOO_MANY_SUBSCRIPTIONS,
            message: format!(
                "you already hold {} live subscriptions, the limit (limits.max_subscriptions_per_user); end one first",
                self.max_subscriptions
            ),
        })
    }

    /// One more WebSocket connection for `user`, within the limit.
    pub fn admit_connection(self: &Arc<Self>, user: Uuid) -> Result<Admission, AppError> {
        self.admit(user, Held::Connection).ok_or_else(|| AppError::Limit {
            code: TOO_MANY_CONNECTIONS,
            message: format!(
                "you already hold {} GraphQL WebSocket connections, the limit (limits.max_ws_connections_per_user)",
                self.max_connections
            ),
        })
    }

    fn admit(self: &Arc<Self>, user: Uuid, held: Held) -> Option<Admission> {
        let mut usage = self.usage.lock().expect("usage lock");
        let mine = usage.entry(user).or_default();
        let (count, max) = match held {
            Held::Subscription => (&mut mine.subscriptions, self.max_subscriptions),
            Held::Connection => (&mut mine.connections, self.max_connections),
        };
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Admission {
            live: self.clone(),
            user,
            held,
        })
    }
}

/// A place within a per-user limit, given back when dropped.
pub struct Admission {
    live: Arc<Live>,
    user: Uuid,
    held: Held,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut usage = self.live.usage.lock().expect("usage lock");
        if let Some(mine) = usage.get_mut(&self.user) {
            match self.held {
                Held::Subscription => mine.subscriptions -= 1,
                Held::Connection => mine.connections -= 1,
            }
            if mine.subscriptions == 0 && mine.connections == 0 {
                usage.remove(&self.user);
            }
        }
    }
}
