//! `agentTaskEvents`: the task event log, live. Each row of
//! `agent_task_events` is announced by migration 0064's trigger on the
//! instance's one listener (`live::agent_task_events`), in commit order; a
//! subscriber reads each announced event, and the task, under its own scope
//! (RLS), in a transaction of its own ended before the next is awaited, as
//! `taskChanged` does.

use std::sync::Arc;

use async_graphql::{Context, ID, SimpleObject, Subscription};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::{AgentTask, AgentTaskEvent, EVENT_COLUMNS, event_from_row, load};
use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;
use crate::live::agent_task_events::AgentTaskEventNote;
use crate::live::{Admission, Live, SUBSCRIBER_TOO_SLOW};
use crate::workspaces;

/// One status change of an agent task, as it is logged.
#[derive(SimpleObject, Clone, Debug)]
pub struct AgentTaskEventNotice {
    pub task_id: ID,
    pub event: AgentTaskEvent,
    /// The task as it is when the event is delivered, as you see it.
    pub task: Option<AgentTask>,
}

#[derive(Default)]
pub struct AgentTaskSubscription;

#[Subscription]
impl AgentTaskSubscription {
    /// Every status change of the agent tasks of a workspace of this
    /// instance (or of one task, `taskId`), from now on, in the order they
    /// were logged, with who made it. NOT_FOUND when you cannot read the
    /// workspace (or the task is not in it), and then when you no longer can;
    /// SUBSCRIBER_TOO_SLOW when you fall more than
    /// `limits.subscription_buffer` events behind.
    async fn agent_task_events(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        task_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = AppResult<AgentTaskEventNotice>>> {
        let rc = RequestContext::of(ctx);
        let user = rc.user()?;
        let workspace = rc.local_id_of("workspaceId", &workspace_id, Kind::Workspace)?;
        let task = task_id
            .map(|t| rc.local_id_of("taskId", &t, Kind::AgentTask))
            .transpose()?;
        let live = ctx.data_unchecked::<Arc<Live>>();
        let admission = live.admit_subscription(user.user_id)?;
        // Listening before the check: no event after it is missed.
        let notes = live.agent_task_events();
        let checked = async {
            workspaces::require_visible(rc, workspace).await?;
            if let Some(task) = task {
                let in_workspace = load(rc, task)
                    .await?
                    .is_some_and(|t| t.workspace_id == rc.global_id(Kind::Workspace, workspace));
                if !in_workspace {
                    return Err(AppError::NotFound("agent task".into()));
                }
            }
            Ok(())
        }
        .await;
        rc.db.rollback().await?;
        checked?;
        let feed = Feed {
            rc,
            workspace,
            task,
            notes,
            _admission: admission,
        };
        Ok(futures::stream::unfold(Some(feed), |feed| async move {
            let mut feed = feed?;
            let next = feed.next().await?;
            // After an error the subscription ends.
            let keep = next.is_ok().then_some(feed);
            Some((next, keep))
        }))
    }
}

/// One subscriber's view of a workspace's (or a task's) events.
struct Feed<'a> {
    rc: &'a RequestContext,
    workspace: Uuid,
    task: Option<Uuid>,
    notes: tokio::sync::broadcast::Receiver<AgentTaskEventNote>,
    _admission: Admission,
}

impl Feed<'_> {
    /// The next event; `None` when the feed ends.
    async fn next(&mut self) -> Option<AppResult<AgentTaskEventNotice>> {
        loop {
            // The previous event is resolved by now: end its transaction.
            if let Err(e) = self.rc.db.rollback().await {
                return Some(Err(e.into()));
            }
            let note = match self.notes.recv().await {
                Ok(n) if n.workspace == self.workspace && self.task.is_none_or(|t| t == n.task) => n,
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    return Some(Err(AppError::Limit {
                        code: SUBSCRIBER_TOO_SLOW,
                        message: format!("{missed} events were not delivered in time; subscribe again"),
                    }));
                }
                Err(RecvError::Closed) => return None,
            };
            match self.read(note).await {
                Ok(Some(notice)) => return Some(Ok(notice)),
                // Gone already (the task was deleted with its workspace's data).
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The event as the subscriber sees it, with the task as it is now.
    async fn read(&self, note: AgentTaskEventNote) -> AppResult<Option<AgentTaskEventNotice>> {
        workspaces::require_visible(self.rc, self.workspace).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM agent_task_events WHERE id = $1 AND task_id = $2"
        )))
        .bind(note.event)
        .bind(note.task)
        .fetch_optional(&mut *self.rc.db.conn().await?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(AgentTaskEventNotice {
            task_id: self.rc.global_id(Kind::AgentTask, note.task),
            event: event_from_row(&row)?,
            task: load(self.rc, note.task).await?,
        }))
    }
}
