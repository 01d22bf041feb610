//! The instance's one LISTEN connection: task changes for subscriptions,
//! the changes that clear the caches of rows (`db::cache`), the agent
//! task queue's wake-ups for idle agents' claims (`agent_tasks::queue`), and
//! agent task events for their subscribers. It reconnects
//! when it drops; while it is away the caches hold nothing, since a change
//! made then is not heard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgNotification};
use tokio::sync::{Notify, broadcast, oneshot, watch};

use super::agent_task_events::{self, AgentTaskEventNote};
use super::event_feed::{self, FeedNote};
use super::task_changes::{self, TaskNote};
use crate::db::cache::Forget;

/// Longest wait between attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where `Live::caught_up` announces its marks.
pub const MARK_CHANNEL: &str = "mosaic_listener_marks";

/// Where migration 0063 announces work queued or a slot freed.
pub const AGENT_TASK_QUEUE_CHANNEL: &str = "mosaic_agent_task_queue";

/// Where what is heard goes.
pub struct Audience {
    pub task_changes: broadcast::Sender<TaskNote>,
    /// Agent task events for `agentTaskEvents`.
    pub agent_task_events: broadcast::Sender<AgentTaskEventNote>,
    /// Each cache with the channel its changes are announced on, and what
    /// else keeps state derived from rows (the knowledge embeddings).
    pub caches: Vec<(&'static str, Arc<dyn Forget>)>,
    /// Who waits for which mark.
    pub marks: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
    /// Whether changes are being heard (`Live::listening`).
    pub listening: watch::Sender<bool>,
    /// Claims waiting for agent work; all are woken by each announcement.
    pub agent_task_queue: Arc<Notify>,
    /// Domain events numbered or received, for `events` subscribers.
    pub event_feed: broadcast::Sender<FeedNote>,
    /// The event delivery worker, woken by each outbox write.
    pub outbox_written: Arc<Notify>,
}

impl Audience {
    fn channels(&self) -> Vec<&'static str> {
        let mut channels = vec![
            task_changes::CHANNEL,
            MARK_CHANNEL,
            AGENT_TASK_QUEUE_CHANNEL,
            agent_task_events::CHANNEL,
            event_feed::OUTBOX_CHANNEL,
            event_feed::OUTBOX_WRITTEN_CHANNEL,
            event_feed::RECEIVED_CHANNEL,
        ];
        channels.extend(self.caches.iter().map(|(c, _)| *c));
        channels
    }

    fn set_listening(&self, listening: bool) {
        for (_, cache) in &self.caches {
            cache.set_listening(listening);
        }
        self.listening.send_replace(listening);
        // What was announced while nobody listened is looked for again.
        self.agent_task_queue.notify_waiters();
        self.outbox_written.notify_one();
    }

    fn hear(&self, note: &PgNotification) {
        if note.channel() == MARK_CHANNEL {
            if let Some(waiting) = self.marks.lock().expect("marks lock").remove(note.payload()) {
                let _ = waiting.send(());
            }
            return;
        }
        if note.channel() == AGENT_TASK_QUEUE_CHANNEL {
            self.agent_task_queue.notify_waiters();
            return;
        }
        if note.channel() == event_feed::OUTBOX_WRITTEN_CHANNEL {
            self.outbox_written.notify_one();
            return;
        }
        if let Some(fed) = FeedNote::parse(note.channel(), note.payload()) {
            // No receiver is fine: nobody subscribes right now.
            let _ = self.event_feed.send(fed);
            return;
        }
        if note.channel() == agent_task_events::CHANNEL {
            match AgentTaskEventNote::parse(note.payload()) {
                // No receiver is fine: nobody subscribes right now.
                Some(event) => {
                    let _ = self.agent_task_events.send(event);
                }
                None => tracing::warn!(payload = note.payload(), "unreadable agent task event notification"),
            }
            return;
        }
        if note.channel() != task_changes::CHANNEL {
            for (channel, cache) in &self.caches {
                if *channel == note.channel() {
                    cache.forget(note.payload());
                }
            }
            return;
        }
        match TaskNote::parse(note.payload()) {
            // No receiver is fine: nobody subscribes right now.
            Some(change) => {
                let _ = self.task_changes.send(change);
            }
            None => tracing::warn!(payload = note.payload(), "unreadable task change notification"),
        }
    }
}

pub struct Listener(PgListener);

impl Listener {
    pub async fn connect(pool: &PgPool, audience: &Audience) -> Result<Self> {
        let mut listener = PgListener::connect_with(pool)
            .await
            .context("connecting the change listener")?;
        listener
            .listen_all(audience.channels())
            .await
            .context("listening for changes")?;
        Ok(Self(listener))
    }

    /// Hands on what it hears until `closing` turns true. A lost connection
    /// is opened again (with LISTEN); changes committed meanwhile are not
    /// heard, so the caches are off until then.
    pub async fn run(self, pool: PgPool, audience: Audience, mut closing: watch::Receiver<bool>) {
        audience.set_listening(true);
        let mut listener = Some(self);
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(Listener(current)) = listener.as_mut() else {
                tokio::select! {
                    _ = closing.wait_for(|c| *c) => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                match Listener::connect(&pool, &audience).await {
                    Ok(l) => {
                        tracing::info!("change listener reconnected");
                        listener = Some(l);
                        audience.set_listening(true);
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener cannot reconnect");
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            };
            tokio::select! {
                _ = closing.wait_for(|c| *c) => return,
                received = current.try_recv() => match received {
                    Ok(Some(note)) => audience.hear(&note),
                    Ok(None) => {
                        tracing::warn!("change listener lost its connection; reconnecting");
                        audience.set_listening(false);
                        listener = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener failed; reconnecting");
                        audience.set_listening(false);
                        listener = None;
                    }
                },
            }
        }
    }
}
