//! Task changes from PostgreSQL notifications (migration 0050): one
//! connection per instance LISTENs on `mosaic_task_changes`, reconnecting
//! when it drops, and every note goes to a bounded broadcast.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

pub const CHANNEL: &str = "mosaic_task_changes";

/// Longest wait between attempts to reconnect the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

/// What a notification says: which task of which workspace changed, and how.
/// Nothing more is trusted from it: subscribers read the task themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskNote {
    pub kind: ChangeKind,
    pub task: Uuid,
    pub workspace: Uuid,
}

impl TaskNote {
    pub fn parse(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok()
    }
}

pub struct Listener(PgListener);

impl Listener {
    pub async fn connect(pool: &PgPool) -> Result<Self> {
        let mut listener = PgListener::connect_with(pool)
            .await
            .context("connecting the task change listener")?;
        listener.listen(CHANNEL).await.context("listening for task changes")?;
        Ok(Self(listener))
    }

    /// Forwards notes until `closing` turns true. A lost connection is
    /// reopened (with LISTEN again) on the next receive; changes committed
    /// while it was away are not seen.
    pub async fn run(self, pool: PgPool, feed: broadcast::Sender<TaskNote>, mut closing: watch::Receiver<bool>) {
        let mut listener = Some(self);
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(Listener(current)) = listener.as_mut() else {
                tokio::select! {
                    _ = closing.wait_for(|c| *c) => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                match Listener::connect(&pool).await {
                    Ok(l) => {
                        tracing::info!("task change listener reconnected");
                        listener = Some(l);
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "task change listener cannot reconnect");
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            };
            tokio::select! {
                _ = closing.wait_for(|c| *c) => return,
                received = current.try_recv() => match received {
                    Ok(Some(n)) => match TaskNote::parse(n.payload()) {
                        // No receiver is fine: nobody subscribes right now.
                        Some(note) => { let _ = feed.send(note); }
                        None => tracing::warn!(payload = n.payload(), "unreadable task change notification"),
                    },
                    // try_recv reconnects and listens again on its next call.
                    Ok(None) => tracing::warn!("task change listener lost its connection; reconnecting"),
                    Err(e) => {
                        tracing::warn!(error = %e, "task change listener failed; reconnecting");
                        listener = None;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_parse_from_the_trigger_payload_only() {
        let task = Uuid::new_v4();
        let ws = Uuid::new_v4();
        let payload = format!(r#"{{"kind" : "DELETE", "task" : "{task}", "workspace" : "{ws}"}}"#);
        assert_eq!(
            TaskNote::parse(&payload),
            Some(TaskNote {
                kind: ChangeKind::Delete,
                task,
                workspace: ws
            })
        );
        assert_eq!(
            TaskNote::parse(r#"{"kind":"TRUNCATE","task":"x","workspace":"y"}"#),
            None
        );
        assert_eq!(TaskNote::parse("not json"), None);
    }
}
