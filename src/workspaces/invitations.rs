//! Workspace invitations: admins invite an e-mail address; the person becomes
//! a member only by accepting. The answer to an invitation is the same
//! whether or not an account has the address (nothing is looked up), and an
//! invitation to an address without an account waits until someone signs in
//! with it (a verified address).

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::ids::Kind;
use crate::graphql::{RequestContext, required_text};
use crate::workspaces::{self, Workspace, WorkspaceRole, require_admin};

/// Pending invitations a workspace may have at once.
pub const MAX_PENDING: i64 = 100;
/// Invitations a workspace may send in 24 hours.
pub const MAX_PER_DAY: i64 = 200;
const EMAIL_MAX: usize = 254;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
    Revoked,
    Expired,
}

impl InvitationStatus {
    fn from_db(s: &str, expires_at: OffsetDateTime) -> AppResult<Self> {
        Ok(match s {
            "PENDING" if expires_at <= OffsetDateTime::now_utc() => Self::Expired,
            "PENDING" => Self::Pending,
            "ACCEPTED" => Self::Accepted,
            "DECLINED" => Self::Declined,
            "REVOKED" => Self::Revoked,
            "EXPIRED" => Self::Expired,
            other => return Err(AppError::internal(anyhow::anyhow!("unknown invitation status {other}"))),
        })
    }
}

/// An invitation to join a workspace. Its ID is local to this instance.
#[derive(SimpleObject, Clone, Debug)]
pub struct WorkspaceInvitation {
    pub id: ID,
    pub workspace_id: ID,
    pub workspace_name: String,
    pub email: String,
    pub role: WorkspaceRole,
    pub status: InvitationStatus,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

type Row = (
    Uuid,
    Uuid,
    String,
    String,
    String,
    String,
    OffsetDateTime,
    OffsetDateTime,
);

fn from_row(rc: &RequestContext, r: Row) -> AppResult<WorkspaceInvitation> {
    let (id, ws, workspace_name, email, role, status, created_at, expires_at) = r;
    Ok(WorkspaceInvitation {
        id: ID(id.to_string()),
        workspace_id: rc.global_id(Kind::Workspace, ws),
        workspace_name,
        email,
        role: WorkspaceRole::from_db(&role)?,
        status: InvitationStatus::from_db(&status, expires_at)?,
        created_at,
        expires_at,
    })
}

const SELECT: &str = "SELECT i.id, i.workspace_id, w.name, i.email, i.role, i.status, i.created_at, i.expires_at
     FROM workspace_invitations i JOIN workspaces w ON w.id = i.workspace_id";

/// A workspace's invitations, newest first (its admins only; others see none).
pub async fn of_workspace(rc: &RequestContext, ws: Uuid) -> AppResult<Vec<WorkspaceInvitation>> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE i.workspace_id = $1 ORDER BY i.created_at DESC, i.id"
    )))
    .bind(ws)
    .fetch_all(&mut *rc.db.conn().await?)
    .await?;
    rows.into_iter().map(|r| from_row(rc, r)).collect()
}

async fn load(rc: &RequestContext, id: Uuid) -> AppResult<Option<WorkspaceInvitation>> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE i.id = $1")))
        .bind(id)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
    row.map(|r| from_row(rc, r)).transpose()
}

/// A plausible address, lower-cased: one `@` with text on both sides, no spaces.
fn email_address(raw: &str) -> AppResult<String> {
    let email = required_text("email", raw, EMAIL_MAX)?.to_lowercase();
    let plausible = matches!(email.split_once('@'), Some((local, domain))
        if !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !plausible {
        return Err(AppError::BadInput(format!("email: '{email}' is not an e-mail address")));
    }
    Ok(email)
}

fn invitation_id(id: &ID) -> AppResult<Uuid> {
    id.parse()
        .map_err(|_| AppError::BadInput(format!("id: '{}' is not an invitation ID", id.as_str())))
}

#[derive(InputObject)]
pub struct InviteWorkspaceMemberInput {
    pub workspace_id: ID,
    pub email: String,
    pub role: WorkspaceRole,
}

#[derive(Default)]
pub struct InvitationQuery;

#[Object]
impl InvitationQuery {
    /// Pending invitations to your own (verified) e-mail address, oldest first.
    async fn my_invitations(&self, ctx: &Context<'_>) -> AppResult<Vec<WorkspaceInvitation>> {
        let rc = RequestContext::of(ctx);
        rc.user()?;
        let rows: Vec<Row> = sqlx::query_as("SELECT * FROM my_invitations()")
            .fetch_all(&mut *rc.db.conn().await?)
            .await?;
        rows.into_iter().map(|r| from_row(rc, r)).collect()
    }
}

#[derive(Default)]
pub struct InvitationMutation;

#[Object]
impl InvitationMutation {
    /// Invites an e-mail address to a workspace (owners and admins; only
    /// owners invite owners). The answer is the same whether or not an
    /// account has the address; the person joins by accepting within 14 days.
    async fn invite_workspace_member(
        &self,
        ctx: &Context<'_>,
        input: InviteWorkspaceMemberInput,
    ) -> AppResult<WorkspaceInvitation> {
        let rc = RequestContext::of(ctx);
        let ws = rc.local_id_of("workspaceId", &input.workspace_id, Kind::Workspace)?;
        let email = email_address(&input.email)?;
        workspaces::require_visible(rc, ws).await?;
        require_admin(rc, ws).await?;
        let mut conn = rc.db.conn().await?;
        // One inviter at a time per workspace, so the bounds below hold.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 10))")
            .bind(ws)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE workspace_invitations SET status = 'EXPIRED'
             WHERE workspace_id = $1 AND status = 'PENDING' AND expires_at <= now()",
        )
        .bind(ws)
        .execute(&mut *conn)
        .await?;
        let (pending, today): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'PENDING'),
                    count(*) FILTER (WHERE created_at > now() - interval '1 day')
             FROM workspace_invitations WHERE workspace_id = $1",
        )
        .bind(ws)
        .fetch_one(&mut *conn)
        .await?;
        if pending >= MAX_PENDING {
            return Err(AppError::Conflict(format!(
                "workspaceId: the workspace has {MAX_PENDING} pending invitations; revoke some first"
            )));
        }
        if today >= MAX_PER_DAY {
            return Err(AppError::Conflict(format!(
                "workspaceId: the workspace sent {MAX_PER_DAY} invitations in the last 24 hours; try again later"
            )));
        }
        // Members are visible to the workspace's admins anyway: saying so reveals nothing.
        let member: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM workspace_members m JOIN users u ON u.id = m.user_id
                            WHERE m.workspace_id = $1 AND u.email = $2)",
        )
        .bind(ws)
        .bind(&email)
        .fetch_one(&mut *conn)
        .await?;
        if member {
            return Err(AppError::Conflict(format!(
                "email: {email} is already a member of this workspace"
            )));
        }
        let id = Uuid::now_v7();
        let inserted = sqlx::query(
            "INSERT INTO workspace_invitations (id, workspace_id, email, role, invited_by)
             VALUES ($1, $2, $3, $4, current_user_id())",
        )
        .bind(id)
        .bind(ws)
        .bind(&email)
        .bind(input.role.as_db())
        .execute(&mut *conn)
        .await;
        drop(conn);
        match inserted.map_err(AppError::from) {
            Err(AppError::Conflict(_)) => {
                return Err(AppError::Conflict(format!(
                    "email: {email} already has a pending invitation to this workspace"
                )));
            }
            Err(e) => return Err(e.forbidden_as("only owners may invite owners")),
            Ok(_) => {}
        }
        load(rc, id)
            .await?
            .ok_or_else(|| AppError::NotFound("invitation".into()))
    }

    /// Withdraws a pending invitation (the workspace's owners and admins).
    async fn revoke_invitation(&self, ctx: &Context<'_>, id: ID) -> AppResult<WorkspaceInvitation> {
        let rc = RequestContext::of(ctx);
        let local = invitation_id(&id)?;
        let Some(invitation) = load(rc, local).await? else {
            return Err(AppError::NotFound("id: invitation".into()));
        };
        if invitation.status != InvitationStatus::Pending {
            return Err(AppError::Conflict(format!(
                "id: the invitation is {:?}, not pending",
                invitation.status
            )));
        }
        let changed = sqlx::query(
            "UPDATE workspace_invitations SET status = 'REVOKED', answered_at = now() WHERE id = $1 AND status = 'PENDING'",
        )
        .bind(local)
        .execute(&mut *rc.db.conn().await?)
        .await?;
        if changed.rows_affected() == 0 {
            return Err(AppError::Forbidden(
                "only owners may revoke an invitation to become owner".into(),
            ));
        }
        load(rc, local)
            .await?
            .ok_or_else(|| AppError::NotFound("id: invitation".into()))
    }

    /// Accepts an invitation to your address: you become a member with its role.
    async fn accept_invitation(&self, ctx: &Context<'_>, id: ID) -> AppResult<Workspace> {
        let rc = RequestContext::of(ctx);
        let ws = answer(rc, &id, true).await?;
        workspaces::require_visible(rc, ws).await
    }

    /// Declines an invitation to your address. Returns its ID.
    async fn decline_invitation(&self, ctx: &Context<'_>, id: ID) -> AppResult<ID> {
        let rc = RequestContext::of(ctx);
        answer(rc, &id, false).await?;
        Ok(id)
    }
}

async fn answer(rc: &RequestContext, id: &ID, accept: bool) -> AppResult<Uuid> {
    rc.user()?;
    let local = invitation_id(id)?;
    let ws: Option<Uuid> = sqlx::query_scalar("SELECT invitation_answer($1, $2)")
        .bind(local)
        .bind(accept)
        .fetch_one(&mut *rc.db.conn().await?)
        .await?;
    ws.ok_or_else(|| AppError::NotFound("id: pending invitation to your address".into()))
}
