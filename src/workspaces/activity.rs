//! The activity log: who changed what, written by triggers in the database.

use async_graphql::{Context, ID, Json, Object, SimpleObject};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::AppResult;
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;

#[derive(SimpleObject, Clone, Debug)]
pub struct ActivityEntry {
    pub actor_id: Option<ID>,
    /// insert, update or delete
    pub action: String,
    /// The table changed: tasks, projects, workspaces, workspace_members, ...
    pub entity_type: String,
    pub entity_id: String,
    /// New values of the changed columns (or the whole row on insert and delete).
    pub changes: Json<serde_json::Value>,
    pub at: OffsetDateTime,
    /// The peer instance whose COMMAND made the change, if one did.
    pub peer_id: Option<String>,
    /// The remote person who asked through that peer (a global User ID of
    /// their instance); `actorId` is the local user a grant mapped them to.
    pub remote_actor: Option<String>,
}

type Row = (
    Option<Uuid>,
    String,
    String,
    Uuid,
    serde_json::Value,
    OffsetDateTime,
    Option<Uuid>,
    Option<String>,
);

#[derive(Default)]
pub struct ActivityQuery;

#[Object]
impl ActivityQuery {
    /// The newest changes in a workspace, newest first.
    async fn activity(
        &self,
        ctx: &Context<'_>,
        workspace_id: ID,
        #[graphql(default = 50)] first: i32,
    ) -> AppResult<Vec<ActivityEntry>> {
        let rc = RequestContext::of(ctx);
        let ws = rc.local_id(&workspace_id, Kind::Workspace)?;
        let first = rc.page_size(Some(first))?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT actor_id, action, entity_type, entity_id, changes, created_at, peer_id, remote_actor
             FROM activity_log WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(ws)
        .bind(first as i64)
        .fetch_all(&mut *rc.db.conn().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(actor, action, entity_type, entity_id, changes, at, peer, remote_actor)| ActivityEntry {
                    actor_id: actor.map(|a| rc.global_id(Kind::User, a)),
                    action,
                    entity_type,
                    entity_id: entity_id.to_string(),
                    changes: Json(changes),
                    at,
                    peer_id: peer.map(|p| p.to_string()),
                    remote_actor,
                },
            )
            .collect())
    }
}
