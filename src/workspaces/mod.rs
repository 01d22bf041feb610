//! Workspaces and their members.

pub mod activity;
pub mod invitations;
pub mod wire;

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use sqlx::AssertSqlSafe;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::events::{self, EventConnection, EventsRequest};
use crate::graphql::federated::{self, InstanceScope};
use crate::graphql::ids::{Kind, Owner};
use crate::graphql::wire::{Wire, decode, owned, owned_list};
use crate::graphql::{InstanceInfo, RequestContext, limits, required_text};
use crate::projects::{self, Project};
use crate::teams::{self, Team};
use crate::users::User;
use invitations::WorkspaceInvitation;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum WorkspaceRole {
    Owner,
    Admin,
    Member,
    Guest,
}

impl WorkspaceRole {
    pub fn as_db(self) -> &'static str {
        match self {
            Self::Owner => "OWNER",
            Self::Admin => "ADMIN",
            Self::Member => "MEMBER",
            Self::Guest => "GUEST",
        }
    }

    pub fn from_db(s: &str) -> AppResult<Self> {
        Ok(match s {
            "OWNER" => Self::Owner,
            "ADMIN" => Self::Admin,
            "MEMBER" => Self::Member,
            "GUEST" => Self::Guest,
            other => {
                return Err(AppError::internal(anyhow::anyhow!("unknown role {other} in database")));
            }
        })
    }
}

#[derive(Clone, Debug)]
pub struct Workspace {
    pub id: Uuid,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub instance: Arc<InstanceInfo>,
    pub global_id: ID,
    /// A remote workspace's nested lists, when its owner was asked for them
    /// together with it.
    nested: Option<Arc<Nested>>,
}

/// The nested lists of a remote workspace that came with it.
#[derive(Debug, Default)]
struct Nested {
    members: Option<Vec<WorkspaceMember>>,
    projects: Option<Vec<Project>>,
    teams: Option<Vec<Team>>,
}

#[derive(sqlx::FromRow)]
pub struct WorkspaceRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Workspace {
    pub fn from_row(rc: &RequestContext, r: WorkspaceRow) -> Self {
        Self {
            global_id: rc.global_id(Kind::Workspace, r.id),
            id: r.id,
            name: r.name,
            created_at: r.created_at,
            updated_at: r.updated_at,
            instance: rc.instance.clone(),
            nested: None,
        }
    }
}

const SELECT: &str = "SELECT id, name, created_at, updated_at FROM workspaces";

pub async fn load(rc: &RequestContext, id: Uuid) -> AppResult<Option<Workspace>> {
    let row: Option<WorkspaceRow> = sqlx::query_as(AssertSqlSafe(format!("{SELECT} WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
    Ok(row.map(|r| Workspace::from_row(rc, r)))
}

/// Loads a workspace the caller can see, or NOT_FOUND.
pub async fn require_visible(rc: &RequestContext, id: Uuid) -> AppResult<Workspace> {
    load(rc, id)
        .await?
        .ok_or_else(|| AppError::NotFound("workspace".into()))
}

#[derive(SimpleObject, Clone, Debug)]
pub struct WorkspaceMember {
    pub user: User,
    pub role: WorkspaceRole,
    pub joined_at: OffsetDateTime,
}

async fn members_of(rc: &RequestContext, ws: Uuid, only_user: Option<Uuid>) -> AppResult<Vec<WorkspaceMember>> {
    let rows: Vec<(Uuid, String, Option<String>, bool, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT u.id, u.email, u.name, u.is_admin, m.role, m.created_at
         FROM workspace_members m JOIN users u ON u.id = m.user_id
         WHERE m.workspace_id = $1 AND ($2::uuid IS NULL OR m.user_id = $2)
         ORDER BY u.email LIMIT $3",
    )
    .bind(ws)
    .bind(only_user)
    .bind(rc.row_limit())
    .fetch_all(&mut *rc.db.conn().await?)
    .await?;
    rows.into_iter()
        .map(|(id, email, name, admin, role, joined_at)| {
            Ok(WorkspaceMember {
                user: User::new(rc, id, email, name, admin),
                role: WorkspaceRole::from_db(&role)?,
                joined_at,
            })
        })
        .collect()
}

#[Object]
impl Workspace {
    pub async fn id(&self) -> ID {
        self.global_id.clone()
    }
    async fn name(&self) -> &str {
        &self.name
    }
    async fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }
    async fn updated_at(&self) -> OffsetDateTime {
        self.updated_at
    }
    async fn instance(&self) -> &InstanceInfo {
        &self.instance
    }
    /// The caller's role here; null when the caller sees it through a grant.
    async fn viewer_role(&self, ctx: &Context<'_>) -> AppResult<Option<WorkspaceRole>> {
        let rc = RequestContext::of(ctx);
        if !rc.is_local(&self.instance) {
            return Ok(None);
        }
        let role: Option<String> = sqlx::query_scalar("SELECT workspace_role($1, current_user_id())")
            .bind(self.id)
            .fetch_one(&mut *rc.db.conn().await?)
            .await?;
        Ok(role.as_deref().map(WorkspaceRole::from_db).transpose()?)
    }
    #[graphql(complexity = "limits::FORWARD_COST + child_complexity")]
    async fn members(&self, ctx: &Context<'_>) -> AppResult<Vec<WorkspaceMember>> {
        let rc = RequestContext::of(ctx);
        if let Some(members) = self.nested.as_ref().and_then(|n| n.members.clone()) {
            return Ok(members);
        }
        if let Owner::Instance(owner) = rc.owner_of("id", &self.global_id, Kind::Workspace)? {
            let query =
                "query($id: ID!) { workspace(id: $id) { members { role joinedAt user { id email name isAdmin } } } }";
            let data = federated::forward(
                rc,
                owner,
                false,
                query,
                serde_json::json!({ "id": self.global_id.as_str() }),
            )
            .await?;
            let members: Option<Vec<wire::MemberWire>> = decode(&data["workspace"]["members"])?;
            return members
                .into_iter()
                .flatten()
                .map(|m| m.into_object(&self.instance))
                .collect();
        }
        members_of(rc, self.id, None).await
    }
    /// Invitations to join, newest first (owners and admins of a workspace of this instance).
    async fn invitations(&self, ctx: &Context<'_>) -> AppResult<Vec<WorkspaceInvitation>> {
        let rc = RequestContext::of(ctx);
        if !rc.is_local(&self.instance) {
            return Err(AppError::Forbidden(
                "invitations are managed on the workspace's own instance".into(),
            ));
        }
        require_admin(rc, self.id).await?;
        invitations::of_workspace(rc, self.id).await
    }
    #[graphql(complexity = "limits::FORWARD_COST + child_complexity")]
    async fn projects(&self, ctx: &Context<'_>) -> AppResult<Vec<Project>> {
        let rc = RequestContext::of(ctx);
        if let Some(projects) = self.nested.as_ref().and_then(|n| n.projects.clone()) {
            return Ok(projects);
        }
        if let Owner::Instance(owner) = rc.owner_of("id", &self.global_id, Kind::Workspace)? {
            return projects::remote_list(rc, owner, &self.global_id).await;
        }
        projects::list(rc, self.id).await
    }
    /// By name, then id. Those of a workspace of another instance come from its owner.
    #[graphql(complexity = "limits::FORWARD_COST + child_complexity")]
    async fn teams(&self, ctx: &Context<'_>) -> AppResult<Vec<Team>> {
        let rc = RequestContext::of(ctx);
        if let Some(teams) = self.nested.as_ref().and_then(|n| n.teams.clone()) {
            return Ok(teams);
        }
        if let Owner::Instance(owner) = rc.owner_of("id", &self.global_id, Kind::Workspace)? {
            return teams::remote_list(rc, owner, &self.global_id).await;
        }
        teams::list(rc, self.id).await
    }
    /// Events overlapping [from, to) (either bound may be left out), by
    /// startsAt, then id, paginated with `first`/`after`. Those of a
    /// workspace of another instance come from its owner.
    #[graphql(complexity = "limits::FORWARD_COST + first.unwrap_or(20).max(1) as usize * child_complexity")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
        first: Option<i32>,
        after: Option<String>,
    ) -> AppResult<EventConnection> {
        let rc = RequestContext::of(ctx);
        let with_total = ctx.look_ahead().field("totalCount").exists();
        let request = EventsRequest::parse(rc, from, to, first, after, with_total)?;
        if let Owner::Instance(owner) = rc.owner_of("id", &self.global_id, Kind::Workspace)? {
            return events::remote_page(rc, owner, &self.global_id, &request).await;
        }
        events::page(rc, self.id, &request).await
    }
}

#[derive(Default)]
pub struct WorkspaceQuery;

#[Object]
impl WorkspaceQuery {
    /// Workspaces you are a member of (or a peer was granted), by name,
    /// then instance, then id. `scope` adds other instances.
    #[graphql(complexity = "scope.as_ref().map_or(0, |_| limits::FORWARD_COST) + child_complexity")]
    async fn workspaces(&self, ctx: &Context<'_>, scope: Option<InstanceScope>) -> AppResult<Vec<Workspace>> {
        let rc = RequestContext::of(ctx);
        let plan = federated::plan(rc, scope.as_ref()).await?;
        let mut all = Vec::new();
        if plan.include_self {
            let rows: Vec<WorkspaceRow> = sqlx::query_as(AssertSqlSafe(format!("{SELECT} ORDER BY name, id")))
                .fetch_all(&mut *rc.db.conn().await?)
                .await?;
            all.extend(rows.into_iter().map(|r| Workspace::from_row(rc, r)));
        }
        if plan.fans_out() {
            let query = wire::NestedSelection::of(&ctx.look_ahead())
                .query("query($scope: InstanceScope)", "workspaces(scope: $scope)");
            for (peer, data) in federated::ask_all::<serde_json::Value>(
                rc,
                &plan,
                &query,
                |p| serde_json::json!({ "scope": plan.scope_for(p) }),
            )
            .await
            {
                let Some(data) = data else { continue };
                let parsed = owned_list::<wire::WorkspaceWire>(&data["workspaces"]);
                match parsed {
                    Ok(list) => all.extend(list),
                    Err(e) => federated::bad_answer(rc, &peer, &e),
                }
            }
            all.sort_by(|a, b| {
                a.name
                    .as_bytes()
                    .cmp(b.name.as_bytes())
                    .then_with(|| a.instance.id.cmp(&b.instance.id))
                    .then_with(|| a.id.cmp(&b.id))
            });
        }
        Ok(all)
    }

    /// A workspace by ID; one of another instance is fetched from its owner.
    #[graphql(complexity = "limits::FORWARD_COST + child_complexity")]
    async fn workspace(&self, ctx: &Context<'_>, id: ID) -> AppResult<Option<Workspace>> {
        let rc = RequestContext::of(ctx);
        match rc.owner_of("id", &id, Kind::Workspace)? {
            Owner::Here(local) => load(rc, local).await,
            Owner::Instance(owner) => {
                let query = wire::NestedSelection::of(&ctx.look_ahead()).query("query($id: ID!)", "workspace(id: $id)");
                let data =
                    federated::forward(rc, owner, false, &query, serde_json::json!({ "id": id.as_str() })).await?;
                match &data["workspace"] {
                    serde_json::Value::Null => Ok(None),
                    w => owned::<wire::WorkspaceWire>(w).map(Some),
                }
            }
        }
    }
}

#[derive(InputObject)]
pub struct CreateWorkspaceInput {
    pub name: String,
}

#[derive(InputObject)]
pub struct UpdateWorkspaceInput {
    pub id: ID,
    pub name: String,
}

#[derive(InputObject)]
pub struct UpdateWorkspaceMemberInput {
    pub workspace_id: ID,
    pub user_id: ID,
    pub role: WorkspaceRole,
}

#[derive(InputObject)]
pub struct RemoveWorkspaceMemberInput {
    pub workspace_id: ID,
    pub user_id: ID,
}

#[derive(Default)]
pub struct WorkspaceMutation;

/// Requires the caller to administer the workspace (checked by the SQL helper the policies use).
pub async fn require_admin(rc: &RequestContext, ws: Uuid) -> AppResult<()> {
    let admin: bool = sqlx::query_scalar("SELECT is_workspace_admin($1, current_user_id())")
        .bind(ws)
        .fetch_one(&mut *rc.db.conn().await?)
        .await?;
    if admin {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "only owners and admins of the workspace may do this".into(),
        ))
    }
}

#[Object]
impl WorkspaceMutation {
    /// Creates a workspace; you become its owner.
    async fn create_workspace(&self, ctx: &Context<'_>, input: CreateWorkspaceInput) -> AppResult<Workspace> {
        let rc = RequestContext::of(ctx);
        let name = required_text("name", &input.name, 200)?;
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO workspaces (id, name, created_by) VALUES ($1, $2, current_user_id())")
            .bind(id)
            .bind(name)
            .execute(&mut *rc.db.conn().await?)
            .await?;
        Ok(require_visible(rc, id).await?)
    }

    async fn update_workspace(&self, ctx: &Context<'_>, input: UpdateWorkspaceInput) -> AppResult<Workspace> {
        let rc = RequestContext::of(ctx);
        let id = rc.local_id(&input.id, Kind::Workspace)?;
        let name = required_text("name", &input.name, 200)?;
        require_visible(rc, id).await?;
        let row: Option<WorkspaceRow> =
            sqlx::query_as("UPDATE workspaces SET name = $2 WHERE id = $1 RETURNING id, name, created_at, updated_at")
                .bind(id)
                .bind(name)
                .fetch_optional(&mut *rc.db.conn().await?)
                .await?;
        let row = row.ok_or_else(|| AppError::Forbidden("only owners and admins may rename a workspace".into()))?;
        Ok(Workspace::from_row(rc, row))
    }

    /// Deletes a workspace and everything in it (owners only). Returns its ID.
    async fn delete_workspace(&self, ctx: &Context<'_>, id: ID) -> AppResult<ID> {
        let rc = RequestContext::of(ctx);
        let local = rc.local_id(&id, Kind::Workspace)?;
        require_visible(rc, local).await?;
        let deleted: Option<Uuid> = sqlx::query_scalar("DELETE FROM workspaces WHERE id = $1 RETURNING id")
            .bind(local)
            .fetch_optional(&mut *rc.db.conn().await?)
            .await?;
        deleted.ok_or_else(|| AppError::Forbidden("only owners may delete a workspace".into()))?;
        Ok(id)
    }

    async fn update_workspace_member(
        &self,
        ctx: &Context<'_>,
        input: UpdateWorkspaceMemberInput,
    ) -> AppResult<WorkspaceMember> {
        let rc = RequestContext::of(ctx);
        let ws = rc.local_id(&input.workspace_id, Kind::Workspace)?;
        let user = rc.local_id(&input.user_id, Kind::User)?;
        if members_of(rc, ws, Some(user)).await?.is_empty() {
            return Err(AppError::NotFound("member".into()));
        }
        let changed = sqlx::query("UPDATE workspace_members SET role = $3 WHERE workspace_id = $1 AND user_id = $2")
            .bind(ws)
            .bind(user)
            .bind(input.role.as_db())
            .execute(&mut *rc.db.conn().await?)
            .await?;
        if changed.rows_affected() == 0 {
            return Err(AppError::Forbidden(
                "only owners and admins may change roles, and only owners may change an owner".into(),
            ));
        }
        let mut members = members_of(rc, ws, Some(user)).await?;
        Ok(members.pop().ok_or_else(|| AppError::NotFound("member".into()))?)
    }

    /// Removes a member (or yourself). Returns the removed user's ID.
    async fn remove_workspace_member(&self, ctx: &Context<'_>, input: RemoveWorkspaceMemberInput) -> AppResult<ID> {
        let rc = RequestContext::of(ctx);
        let ws = rc.local_id(&input.workspace_id, Kind::Workspace)?;
        let user = rc.local_id(&input.user_id, Kind::User)?;
        if members_of(rc, ws, Some(user)).await?.is_empty() {
            return Err(AppError::NotFound("member".into()));
        }
        let removed = sqlx::query("DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2")
            .bind(ws)
            .bind(user)
            .execute(&mut *rc.db.conn().await?)
            .await?;
        if removed.rows_affected() == 0 {
            return Err(AppError::Forbidden("only owners and admins may remove members".into()));
        }
        Ok(input.user_id)
    }
}
