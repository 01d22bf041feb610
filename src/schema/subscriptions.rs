//! The subscription root: live changes, delivered over WebSocket and SSE
//! (`src/http/subscriptions.rs`) from the instance's notification listener
//! (`src/live`).
//!
//! Every change is checked with the subscriber's own scope before it is sent:
//! the notification names ids only, and the subscriber reads the task (RLS)
//! as any request of theirs would. A subscription holds no transaction
//! between changes: each change is read, and its selection resolved, in a
//! transaction of its own, ended before the next change is awaited.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, SimpleObject, Subscription};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;
use crate::live::task_changes::{ChangeKind, TaskNote};
use crate::live::{Admission, Live, SUBSCRIBER_TOO_SLOW};
use crate::tasks::{self, Task};
use crate::workspaces;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskChangeKind {
    Created,
    Updated,
    Deleted,
}

impl From<ChangeKind> for TaskChangeKind {
    fn from(kind: ChangeKind) -> Self {
        match kind {
            ChangeKind::Insert => Self::Created,
            ChangeKind::Update => Self::Updated,
            ChangeKind::Delete => Self::Deleted,
        }
    }
}

/// A task was created, updated or deleted.
#[derive(SimpleObject, Clone, Debug)]
pub struct TaskChange {
    pub kind: TaskChangeKind,
    pub task_id: ID,
    /// The task as it is when the change is delivered, as you see it; null
    /// once it is deleted (by this change or a later one).
    pub task: Option<Task>,
}

#[derive(Default)]
pub struct TaskSubscription;

#[Subscription]
impl TaskSubscription {
    /// Every creation, update and deletion of a task in a workspace of this
    /// instance that you can read, from now on, in commit order. Ends with
    /// NOT_FOUND when you can no longer read the workspace, and with
    /// SUBSCRIBER_TOO_SLOW when you fall more than `limits.subscription_buffer`
    /// changes behind.
    async fn task_changed(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = AppResult<TaskChange>>> {
        let rc = RequestContext::of(ctx);
        let user = rc.user()?;
        let workspace = rc.local_id_of("workspaceId", &workspace_id, Kind::Workspace)?;
        let live = ctx.data_unchecked::<Arc<Live>>();
        let admission = live.admit_subscription(user.user_id)?;
        // Listening before the check: no change after it is missed.
        let changes = live.task_changes();
        let visible = workspaces::load(rc, workspace).await;
        rc.db.rollback().await?;
        visible?.ok_or_else(|| AppError::NotFound("workspace".into()))?;
        let feed = Feed {
            rc,
            workspace,
            changes,
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

/// One subscriber's view of one workspace's task changes.
struct Feed<'a> {
    rc: &'a RequestContext,
    workspace: Uuid,
    changes: tokio::sync::broadcast::Receiver<TaskNote>,
    _admission: Admission,
}

impl Feed<'_> {
    /// The next change in the workspace; `None` when the feed ends.
    async fn next(&mut self) -> Option<AppResult<TaskChange>> {
        loop {
            // The previous change is resolved by now: end its transaction.
            if let Err(e) = self.rc.db.rollback().await {
                return Some(Err(e.into()));
            }
            let note = match self.changes.recv().await {
                Ok(note) if note.workspace == self.workspace => note,
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    return Some(Err(AppError::Limit {
                        code: SUBSCRIBER_TOO_SLOW,
                        message: format!("{missed} changes were not delivered in time; subscribe again"),
                    }));
                }
                Err(RecvError::Closed) => return None,
            };
            return Some(self.read(note).await);
        }
    }

    /// The change as the subscriber sees it: the task as it is now (null
    /// once deleted, even if a later change did that).
    async fn read(&self, note: TaskNote) -> AppResult<TaskChange> {
        workspaces::require_visible(self.rc, self.workspace).await?;
        let task = match note.kind {
            ChangeKind::Delete => None,
            ChangeKind::Insert | ChangeKind::Update => tasks::load(self.rc, note.task)
                .await?
                .filter(|task| task.workspace.as_ref().is_some_and(|w| w.id == self.workspace)),
        };
        Ok(TaskChange {
            kind: note.kind.into(),
            task_id: self.rc.global_id(Kind::Task, note.task),
            task,
        })
    }
}
