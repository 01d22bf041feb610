//! Teams: named groups of a workspace's members, each with a team role
//! (`Workspace.teams`, `Team` as a Node), and their mutations.
//!
//! Who may do what is the policies' `teams_write` and `team_members_write`:
//! owners and admins of the workspace, and nobody else. Those policies give a
//! peer grant no write rights on teams (they consult `admin_workspace_ids()`,
//! which only a local user's memberships fill), so teams of a workspace of
//! another instance are read from their owner (QUERY) but their mutations are
//! refused here, at once, rather than forwarded as a COMMAND the owner would
//! always refuse.

pub mod wire;

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::federated;
use crate::graphql::ids::{Kind, Owner};
use crate::graphql::wire::owned;
use crate::graphql::{InstanceInfo, RequestContext, required_text};
use crate::users::User;
use crate::workspaces::{self, Workspace, WorkspaceRow};

/// The name's limit is the table's CHECK.
const NAME_MAX: usize = 200;
/// Longer than any deliverable address (RFC 5321: 254); only bounds the lookup.
const EMAIL_MAX: usize = 320;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TeamRole {
    Owner,
    Admin,
    Member,
}

impl TeamRole {
    pub fn as_db(self) -> &'static str {
        match self {
            Self::Owner => "OWNER",
            Self::Admin => "ADMIN",
            Self::Member => "MEMBER",
        }
    }

    pub fn from_db(s: &str) -> AppResult<Self> {
        Ok(match s {
            "OWNER" => Self::Owner,
            "ADMIN" => Self::Admin,
            "MEMBER" => Self::Member,
            other => {
                return Err(AppError::internal(anyhow::anyhow!(
                    "unknown team role {other} in database"
                )));
            }
        })
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct TeamMember {
    pub user: User,
    pub role: TeamRole,
}

#[derive(Clone, Debug)]
pub struct Team {
    pub id: Uuid,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub workspace: Workspace,
    pub instance: Arc<InstanceInfo>,
    pub global_id: ID,
    /// A team of another instance comes with its members (the owner's
    /// answer); those of this instance are read when asked for.
    pub remote_members: Option<Vec<TeamMember>>,
}

/// Teams with their workspace, in one query.
const SELECT: &str = "SELECT t.id, t.name, t.created_at, t.workspace_id,
        w.name AS w_name, w.created_at AS w_created_at, w.updated_at AS w_updated_at
        FROM teams t JOIN workspaces w ON w.id = t.workspace_id";

impl Team {
    fn from_row(rc: &RequestContext, r: &PgRow) -> AppResult<Self> {
        let id: Uuid = r.try_get("id")?;
        let workspace = Workspace::from_row(
            rc,
            WorkspaceRow {
                id: r.try_get("workspace_id")?,
                name: r.try_get("w_name")?,
                created_at: r.try_get("w_created_at")?,
                updated_at: r.try_get("w_updated_at")?,
            },
        );
        Ok(Self {
            global_id: rc.global_id(Kind::Team, id),
            id,
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
            workspace,
            instance: rc.instance.clone(),
            remote_members: None,
        })
    }
}

pub async fn load(rc: &RequestContext, id: Uuid) -> AppResult<Option<Team>> {
    let row = sqlx::query(AssertSqlSafe(format!("{SELECT} WHERE t.id = $1")))
        .bind(id)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
    row.map(|r| Team::from_row(rc, &r)).transpose()
}

async fn require(rc: &RequestContext, id: Uuid) -> AppResult<Team> {
    load(rc, id).await?.ok_or_else(|| AppError::NotFound("team".into()))
}

/// The teams of a workspace of this instance, by name, then id.
pub async fn list(rc: &RequestContext, workspace: Uuid) -> AppResult<Vec<Team>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "{SELECT} WHERE t.workspace_id = $1 ORDER BY t.name, t.id LIMIT $2"
    )))
    .bind(workspace)
    .bind(rc.row_limit())
    .fetch_all(&mut *rc.db.conn().await?)
    .await?;
    rows.iter().map(|r| Team::from_row(rc, r)).collect()
}

/// The teams of a workspace of another instance, from its owner.
pub async fn remote_list(rc: &RequestContext, owner: Uuid, workspace: &ID) -> AppResult<Vec<Team>> {
    let query = format!(
        "query($id: ID!) {{ workspace(id: $id) {{ teams {{ ...TeamFields }} }} }} {}",
        wire::FRAGMENT
    );
    let data = federated::forward(rc, owner, false, &query, json!({ "id": workspace.as_str() })).await?;
    let teams = &data["workspace"]["teams"];
    if teams.is_null() {
        return Err(AppError::NotFound("workspace".into()));
    }
    teams
        .as_array()
        .ok_or_else(|| AppError::BadInput("peer answer: teams".into()))?
        .iter()
        .map(owned::<wire::TeamWire>)
        .collect()
}

/// Members of a team of this instance (all, or one user), by e-mail. A member
/// the policies hide (see `users_read`) is left out.
async fn members_of(rc: &RequestContext, team: Uuid, only_user: Option<Uuid>) -> AppResult<Vec<TeamMember>> {
    let rows: Vec<(Uuid, String, Option<String>, bool, String)> = sqlx::query_as(
        "SELECT u.id, u.email, u.name, u.is_admin, m.role
         FROM team_members m JOIN users u ON u.id = m.user_id
         WHERE m.team_id = $1 AND ($2::uuid IS NULL OR m.user_id = $2)
         ORDER BY u.email, u.id LIMIT $3",
    )
    .bind(team)
    .bind(only_user)
    .bind(rc.row_limit())
    .fetch_all(&mut *rc.db.conn().await?)
    .await?;
    rows.into_iter()
        .map(|(id, email, name, admin, role)| {
            Ok(TeamMember {
                user: User::new(rc, id, email, name, admin),
                role: TeamRole::from_db(&role)?,
            })
        })
        .collect()
}

#[Object]
impl Team {
    pub async fn id(&self) -> ID {
        self.global_id.clone()
    }
    async fn name(&self) -> &str {
        &self.name
    }
    async fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }
    async fn workspace(&self) -> &Workspace {
        &self.workspace
    }
    async fn instance(&self) -> &InstanceInfo {
        &self.instance
    }
    /// By e-mail address.
    async fn members(&self, ctx: &Context<'_>) -> AppResult<Vec<TeamMember>> {
        if let Some(members) = &self.remote_members {
            return Ok(members.clone());
        }
        members_of(RequestContext::of(ctx), self.id, None).await
    }
}

// --- mutations ------------------------------------------------------------

#[derive(InputObject)]
pub struct CreateTeamInput {
    pub workspace_id: ID,
    pub name: String,
}

#[derive(InputObject)]
pub struct RenameTeamInput {
    pub id: ID,
    pub name: String,
}

#[derive(InputObject)]
pub struct AddTeamMemberInput {
    pub team_id: ID,
    /// A user of this instance who is a member of the team's workspace.
    pub email: String,
    pub role: TeamRole,
}

#[derive(InputObject)]
pub struct RemoveTeamMemberInput {
    pub team_id: ID,
    pub user_id: ID,
}

/// Like `local_id` for the team or workspace a mutation acts on: one of
/// another instance is refused as FORBIDDEN, as no peer grant lets anyone
/// change teams there (see the module's comment).
fn team_scope_id(rc: &RequestContext, field: &str, id: &ID, kind: Kind) -> AppResult<Uuid> {
    match rc.owner_of(field, id, kind)? {
        Owner::Here(local) => Ok(local),
        Owner::Instance(owner) => Err(AppError::Forbidden(format!(
            "{field}: teams of instance {owner} are managed on that instance; peer grants do not cover teams"
        ))),
    }
}

const ADMINS_ONLY: &str = "only owners and admins of the workspace may manage its teams";

/// Requires the caller to administer the workspace, with the helper
/// `teams_write` and `team_members_write` use; the writes themselves still
/// run under those policies.
async fn require_admin(rc: &RequestContext, ws: Uuid) -> AppResult<()> {
    let admin: bool = sqlx::query_scalar("SELECT is_workspace_admin($1, current_user_id())")
        .bind(ws)
        .fetch_one(&mut *rc.db.conn().await?)
        .await?;
    if admin {
        Ok(())
    } else {
        Err(AppError::Forbidden(ADMINS_ONLY.into()))
    }
}

/// A write the policies refused.
fn refused(e: sqlx::Error) -> AppError {
    AppError::from(e).forbidden_as(ADMINS_ONLY)
}

#[derive(Default)]
pub struct TeamMutation;

#[Object]
impl TeamMutation {
    /// Creates a team (workspace owners and admins); you become its OWNER.
    /// Teams of a workspace of another instance are managed there.
    async fn create_team(&self, ctx: &Context<'_>, input: CreateTeamInput) -> AppResult<Team> {
        let rc = RequestContext::of(ctx);
        let name = required_text("name", &input.name, NAME_MAX)?;
        let ws = team_scope_id(rc, "workspaceId", &input.workspace_id, Kind::Workspace)?;
        workspaces::require_visible(rc, ws).await?;
        require_admin(rc, ws).await?;
        let id = Uuid::now_v7();
        let mut conn = rc.db.conn().await?;
        sqlx::query("INSERT INTO teams (id, workspace_id, name) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(ws)
            .bind(name)
            .execute(&mut *conn)
            .await
            .map_err(refused)?;
        // The creator administers the workspace (checked above), so
        // `team_members_write` lets them in; no trigger does it for teams.
        sqlx::query(
            "INSERT INTO team_members (workspace_id, team_id, user_id, role)
             VALUES ($1, $2, current_user_id(), 'OWNER')",
        )
        .bind(ws)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(refused)?;
        drop(conn);
        require(rc, id).await
    }

    /// Renames a team (workspace owners and admins).
    async fn rename_team(&self, ctx: &Context<'_>, input: RenameTeamInput) -> AppResult<Team> {
        let rc = RequestContext::of(ctx);
        let name = required_text("name", &input.name, NAME_MAX)?;
        let id = team_scope_id(rc, "id", &input.id, Kind::Team)?;
        require(rc, id).await?;
        let updated: Option<Uuid> = sqlx::query_scalar("UPDATE teams SET name = $2 WHERE id = $1 RETURNING id")
            .bind(id)
            .bind(name)
            .fetch_optional(&mut *rc.db.conn().await?)
            .await
            .map_err(refused)?;
        // Visible but not updated: the policy's USING left the row out.
        updated.ok_or_else(|| AppError::Forbidden(ADMINS_ONLY.into()))?;
        require(rc, id).await
    }

    /// Deletes a team and its memberships (workspace owners and admins).
    /// Returns its ID.
    async fn delete_team(&self, ctx: &Context<'_>, id: ID) -> AppResult<ID> {
        let rc = RequestContext::of(ctx);
        let local = team_scope_id(rc, "id", &id, Kind::Team)?;
        require(rc, local).await?;
        let deleted: Option<Uuid> = sqlx::query_scalar("DELETE FROM teams WHERE id = $1 RETURNING id")
            .bind(local)
            .fetch_optional(&mut *rc.db.conn().await?)
            .await
            .map_err(refused)?;
        deleted.ok_or_else(|| AppError::Forbidden(ADMINS_ONLY.into()))?;
        Ok(id)
    }

    /// Adds a member of the team's workspace to the team (workspace owners and admins).
    async fn add_team_member(&self, ctx: &Context<'_>, input: AddTeamMemberInput) -> AppResult<TeamMember> {
        let rc = RequestContext::of(ctx);
        let email = required_text("email", &input.email, EMAIL_MAX)?;
        let team = team_scope_id(rc, "teamId", &input.team_id, Kind::Team)?;
        let ws = require(rc, team).await?.workspace.id;
        require_admin(rc, ws).await?;
        // Only the workspace's own members are looked up, so the answer says
        // nothing about whether an account has the address.
        let user: Option<Uuid> = sqlx::query_scalar(
            "SELECT m.user_id FROM workspace_members m JOIN users u ON u.id = m.user_id
             WHERE m.workspace_id = $1 AND u.email = lower($2)",
        )
        .bind(ws)
        .bind(&email)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
        let Some(user) = user else {
            return Err(AppError::BadInput(format!(
                "email: no member of the team's workspace has the address {email}; invite them to the workspace first"
            )));
        };
        let inserted =
            sqlx::query("INSERT INTO team_members (workspace_id, team_id, user_id, role) VALUES ($1, $2, $3, $4)")
                .bind(ws)
                .bind(team)
                .bind(user)
                .bind(input.role.as_db())
                .execute(&mut *rc.db.conn().await?)
                .await;
        match inserted.map_err(refused) {
            Err(AppError::Conflict(_)) => {
                return Err(AppError::Conflict(format!(
                    "email: {email} is already a member of this team"
                )));
            }
            other => other?,
        };
        members_of(rc, team, Some(user))
            .await?
            .pop()
            .ok_or_else(|| AppError::NotFound("member".into()))
    }

    /// Removes a member from a team (workspace owners and admins). Returns
    /// the removed user's ID.
    async fn remove_team_member(&self, ctx: &Context<'_>, input: RemoveTeamMemberInput) -> AppResult<ID> {
        let rc = RequestContext::of(ctx);
        let team = team_scope_id(rc, "teamId", &input.team_id, Kind::Team)?;
        let user = rc.local_id_of("userId", &input.user_id, Kind::User)?;
        let ws = require(rc, team).await?.workspace.id;
        require_admin(rc, ws).await?;
        let removed: Option<Uuid> =
            sqlx::query_scalar("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2 RETURNING user_id")
                .bind(team)
                .bind(user)
                .fetch_optional(&mut *rc.db.conn().await?)
                .await
                .map_err(refused)?;
        removed.ok_or_else(|| AppError::NotFound("userId: team member".into()))?;
        Ok(input.user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_roles_round_trip_through_the_database_names() {
        for role in [TeamRole::Owner, TeamRole::Admin, TeamRole::Member] {
            assert_eq!(TeamRole::from_db(role.as_db()).unwrap(), role);
        }
        // GUEST is a workspace role, never a team role (the table's CHECK).
        assert_eq!(TeamRole::from_db("GUEST").unwrap_err().code(), "INTERNAL_SERVER_ERROR");
    }
}
