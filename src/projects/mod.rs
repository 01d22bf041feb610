//! Projects group tasks inside a workspace.

pub mod wire;

use std::sync::Arc;

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};
use sqlx::AssertSqlSafe;
use sqlx::{Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::federated;
use crate::graphql::ids::{GlobalId, Kind, Owner};
use crate::graphql::wire::{owned, owned_list};
use crate::graphql::{InstanceInfo, RequestContext, limits, optional_text, required_text};
use crate::workspaces::{self, Workspace};

#[derive(Clone, Debug)]
pub struct Project {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub instance: Arc<InstanceInfo>,
    pub global_id: ID,
}

#[derive(sqlx::FromRow)]
pub struct ProjectRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Project {
    pub fn from_row(rc: &RequestContext, r: ProjectRow) -> Self {
        Self {
            global_id: rc.global_id(Kind::Project, r.id),
            id: r.id,
            workspace_id: r.workspace_id,
            name: r.name,
            description: r.description,
            created_at: r.created_at,
            updated_at: r.updated_at,
            instance: rc.instance.clone(),
        }
    }
}

/// Projects of a workspace of another instance, from its owner.
pub async fn remote_list(rc: &RequestContext, owner: Uuid, workspace: &ID) -> AppResult<Vec<Project>> {
    let query = format!(
        "query($w: ID!) {{ projects(workspaceId: $w) {{ ...ProjectFields }} }} {}",
        wire::FRAGMENT
    );
    let data = federated::forward(rc, owner, false, &query, serde_json::json!({ "w": workspace.as_str() })).await?;
    owned_list::<wire::ProjectWire>(&data["projects"])
}

const COLUMNS: &str = "id, workspace_id, name, description, created_at, updated_at";

pub async fn load(rc: &RequestContext, id: Uuid) -> AppResult<Option<Project>> {
    let row: Option<ProjectRow> =
        sqlx::query_as(AssertSqlSafe(format!("SELECT {COLUMNS} FROM projects WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *rc.db.conn().await?)
            .await?;
    Ok(row.map(|r| Project::from_row(rc, r)))
}

pub async fn list(rc: &RequestContext, workspace: Uuid) -> AppResult<Vec<Project>> {
    let rows: Vec<ProjectRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM projects WHERE workspace_id = $1 ORDER BY name, id LIMIT $2"
    )))
    .bind(workspace)
    .bind(rc.row_limit())
    .fetch_all(&mut *rc.db.conn().await?)
    .await?;
    Ok(rows.into_iter().map(|r| Project::from_row(rc, r)).collect())
}

#[Object]
impl Project {
    pub async fn id(&self) -> ID {
        self.global_id.clone()
    }
    async fn name(&self) -> &str {
        &self.name
    }
    async fn description(&self) -> Option<&str> {
        self.description.as_deref()
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
    #[graphql(complexity = "limits::FORWARD_COST + child_complexity")]
    async fn workspace(&self, ctx: &Context<'_>) -> AppResult<Workspace> {
        let rc = RequestContext::of(ctx);
        if let Owner::Instance(owner) = rc.owner_of("id", &self.global_id, Kind::Project)? {
            let id = GlobalId::new(Kind::Workspace, owner, self.workspace_id).to_id();
            let query = format!(
                "query($id: ID!) {{ workspace(id: $id) {{ ...WorkspaceFields }} }} {}",
                crate::workspaces::wire::FRAGMENT
            );
            let data = federated::forward(rc, owner, false, &query, serde_json::json!({ "id": id.as_str() })).await?;
            return owned::<crate::workspaces::wire::WorkspaceWire>(&data["workspace"]);
        }
        workspaces::require_visible(rc, self.workspace_id).await
    }
}

#[derive(Default)]
pub struct ProjectQuery;

#[Object]
impl ProjectQuery {
    /// Projects of a workspace, by name.
    #[graphql(complexity = "limits::FORWARD_COST + child_complexity")]
    async fn projects(&self, ctx: &Context<'_>, workspace_id: ID) -> AppResult<Vec<Project>> {
        let rc = RequestContext::of(ctx);
        match rc.owner_of("workspaceId", &workspace_id, Kind::Workspace)? {
            Owner::Here(ws) => list(rc, ws).await,
            Owner::Instance(owner) => remote_list(rc, owner, &workspace_id).await,
        }
    }
}

#[derive(InputObject)]
pub struct CreateProjectInput {
    pub workspace_id: ID,
    pub name: String,
    pub description: Option<String>,
}

#[derive(InputObject)]
pub struct UpdateProjectInput {
    pub id: ID,
    pub name: Option<String>,
    pub description: MaybeUndefined<String>,
}

#[derive(Default)]
pub struct ProjectMutation;

#[Object]
impl ProjectMutation {
    async fn create_project(&self, ctx: &Context<'_>, input: CreateProjectInput) -> AppResult<Project> {
        let rc = RequestContext::of(ctx);
        let ws = rc.local_id(&input.workspace_id, Kind::Workspace)?;
        let name = required_text("name", &input.name, 200)?;
        let description = optional_text("description", input.description, 10_000)?;
        workspaces::require_visible(rc, ws).await?;
        let row: ProjectRow = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO projects (id, workspace_id, name, description) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
        )))
        .bind(Uuid::now_v7())
        .bind(ws)
        .bind(name)
        .bind(description)
        .fetch_one(&mut *rc.db.conn().await?)
        .await
        .map_err(|e| AppError::from(e).forbidden_as("guests cannot create projects"))?;
        Ok(Project::from_row(rc, row))
    }

    async fn update_project(&self, ctx: &Context<'_>, input: UpdateProjectInput) -> AppResult<Project> {
        let rc = RequestContext::of(ctx);
        let id = rc.local_id(&input.id, Kind::Project)?;
        load(rc, id)
            .await?
            .ok_or_else(|| AppError::NotFound("project".into()))?;
        let mut q = QueryBuilder::<Postgres>::new("UPDATE projects SET updated_at = clock_timestamp()");
        if let Some(name) = &input.name {
            q.push(", name = ").push_bind(required_text("name", name, 200)?);
        }
        match input.description {
            MaybeUndefined::Undefined => {}
            MaybeUndefined::Null => {
                q.push(", description = NULL");
            }
            MaybeUndefined::Value(d) => {
                q.push(", description = ")
                    .push_bind(optional_text("description", Some(d), 10_000)?);
            }
        }
        q.push(" WHERE id = ")
            .push_bind(id)
            .push(format!(" RETURNING {COLUMNS}"));
        let row: Option<ProjectRow> = q.build_query_as().fetch_optional(&mut *rc.db.conn().await?).await?;
        let row = row.ok_or_else(|| AppError::Forbidden("guests cannot change projects".into()))?;
        Ok(Project::from_row(rc, row))
    }

    /// Deletes a project and its tasks (workspace owners and admins). Returns its ID.
    async fn delete_project(&self, ctx: &Context<'_>, id: ID) -> AppResult<ID> {
        let rc = RequestContext::of(ctx);
        let local = rc.local_id(&id, Kind::Project)?;
        load(rc, local)
            .await?
            .ok_or_else(|| AppError::NotFound("project".into()))?;
        let deleted: Option<Uuid> = sqlx::query_scalar("DELETE FROM projects WHERE id = $1 RETURNING id")
            .bind(local)
            .fetch_optional(&mut *rc.db.conn().await?)
            .await?;
        deleted.ok_or_else(|| AppError::Forbidden("only owners and admins may delete projects".into()))?;
        Ok(id)
    }
}
