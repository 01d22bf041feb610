//! Instance administration of users: the list, making and unmaking
//! administrators, deactivating and reactivating. Checked twice: here
//! (`RequestContext::admin`) and by the definer functions of
//! `migrations/0005_user_admin.sql`, which also audit every change and keep
//! at least one active administrator.
//!
//! With `oidc.group_roles` naming an admin group, single sign-on sets
//! `isAdmin` again at each login: the provider's groups win.

use async_graphql::{Context, ID, Object, SimpleObject};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;

/// A user as instance administrators see it.
#[derive(SimpleObject, Clone, Debug)]
pub struct UserAccount {
    pub id: ID,
    pub email: String,
    pub name: Option<String>,
    pub is_admin: bool,
    /// Vouched for by the operator who created the user, or by the identity
    /// provider; only a verified address is named to peers.
    pub email_verified: bool,
    /// Set while the user is deactivated: every credential is refused.
    pub deactivated_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    /// The last single sign-on, if any.
    pub last_login_at: Option<OffsetDateTime>,
    /// The identity provider's groups at the last sign-on.
    pub sso_groups: Vec<String>,
}

type Row = (
    Uuid,
    String,
    Option<String>,
    bool,
    bool,
    Option<OffsetDateTime>,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Vec<String>,
);

/// The accounts query, with an optional tail (static SQL only).
macro_rules! accounts_sql {
    ($tail:literal) => {
        concat!(
            "SELECT id, email, name, is_admin, email_verified, deactivated_at, created_at, ",
            "last_login_at, sso_groups FROM admin_users()",
            $tail
        )
    };
}

fn account(rc: &RequestContext, r: Row) -> UserAccount {
    UserAccount {
        id: rc.global_id(Kind::User, r.0),
        email: r.1,
        name: r.2,
        is_admin: r.3,
        email_verified: r.4,
        deactivated_at: r.5,
        created_at: r.6,
        last_login_at: r.7,
        sso_groups: r.8,
    }
}

async fn load(rc: &RequestContext, id: Uuid) -> AppResult<UserAccount> {
    let row: Option<Row> = sqlx::query_as(accounts_sql!(" WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *rc.db.conn().await?)
        .await?;
    row.map(|r| account(rc, r))
        .ok_or_else(|| AppError::NotFound("user".into()))
}

/// What a mutation changes, as the definer function that does it.
#[derive(Clone, Copy)]
enum Change {
    Admin,
    Active,
}

impl Change {
    fn sql(self) -> &'static str {
        match self {
            Self::Admin => "SELECT admin_set_user_admin($1, $2)",
            Self::Active => "SELECT admin_set_user_active($1, $2)",
        }
    }
}

/// Applies a change; the function answers false when there is no such user.
async fn change(rc: &RequestContext, what: Change, user_id: &ID, flag: bool) -> AppResult<UserAccount> {
    rc.admin()?;
    let id = rc.local_id(user_id, Kind::User)?;
    let found: bool = sqlx::query_scalar(what.sql())
        .bind(id)
        .bind(flag)
        .fetch_one(&mut *rc.db.conn().await?)
        .await?;
    if !found {
        return Err(AppError::NotFound("user".into()));
    }
    load(rc, id).await
}

#[derive(Default)]
pub struct UserAdminQuery;

#[Object]
impl UserAdminQuery {
    /// Users of this instance by e-mail, `first` at a time after the e-mail
    /// `after`; `search` keeps those whose e-mail or name contains it, ignoring
    /// case (instance administrators only).
    async fn users(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        #[graphql(desc = "At most this many (default 100).")] first: Option<i32>,
        after: Option<String>,
    ) -> AppResult<Vec<UserAccount>> {
        let rc = RequestContext::of(ctx);
        rc.admin()?;
        let first = first.unwrap_or(100);
        if first < 0 || first as usize > rc.max_page_size {
            return Err(AppError::BadInput(format!(
                "first must be within 0..={}",
                rc.max_page_size
            )));
        }
        let search = crate::graphql::optional_text("search", search, 200)?;
        let after = crate::graphql::optional_text("after", after, 320)?;
        let rows: Vec<Row> = sqlx::query_as(accounts_sql!(
            " WHERE ($1::text IS NULL OR strpos(lower(email || ' ' || coalesce(name, '')), lower($1)) > 0) \
             AND ($2::text IS NULL OR email > $2) ORDER BY email LIMIT $3"
        ))
        .bind(search)
        .bind(after)
        .bind(i64::from(first))
        .fetch_all(&mut *rc.db.conn().await?)
        .await?;
        Ok(rows.into_iter().map(|r| account(rc, r)).collect())
    }
}

#[derive(Default)]
pub struct UserAdminMutation;

#[Object]
impl UserAdminMutation {
    /// Makes a user an instance administrator, or not (instance
    /// administrators only; the last active administrator stays one).
    async fn set_user_admin(&self, ctx: &Context<'_>, user_id: ID, admin: bool) -> AppResult<UserAccount> {
        change(RequestContext::of(ctx), Change::Admin, &user_id, admin).await
    }

    /// Deactivates a user: their sessions end, their tokens and sign-ins are
    /// refused, their agent is stopped; their data stays (instance
    /// administrators only; not the last active administrator).
    async fn deactivate_user(&self, ctx: &Context<'_>, user_id: ID) -> AppResult<UserAccount> {
        let rc = RequestContext::of(ctx);
        let account = change(rc, Change::Active, &user_id, false).await?;
        let id = rc.local_id(&user_id, Kind::User)?;
        // Best effort: a deactivated user cannot reach the agent anyway,
        // and the idle reaper stops it later if this fails.
        if let Err(e) = rc.agents.stop(id).await {
            tracing::warn!(user = %id, error = ?e, "could not stop a deactivated user's agent");
        }
        Ok(account)
    }

    /// Lets a deactivated user sign in again (instance administrators only).
    async fn reactivate_user(&self, ctx: &Context<'_>, user_id: ID) -> AppResult<UserAccount> {
        change(RequestContext::of(ctx), Change::Active, &user_id, true).await
    }
}
