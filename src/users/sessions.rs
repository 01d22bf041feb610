//! Where you are signed in: your browser sessions, and ending them yourself
//! ("sign out everywhere else"). Through the definer functions of
//! `migrations/0010_my_sessions.sql`, which touch the caller's own sessions only.

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInMethod {
    /// Single sign-on through the identity provider.
    Sso,
    /// The local break-glass administrator login.
    BreakGlass,
}

/// A browser session of yours.
#[derive(SimpleObject, Clone, Debug)]
pub struct BrowserSession {
    pub id: ID,
    pub method: SignInMethod,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// When it was last used (recorded at most once a minute).
    pub last_seen_at: OffsetDateTime,
    /// Whether this request came with this session.
    pub current: bool,
}

fn session_id(id: &ID) -> AppResult<Uuid> {
    id.parse()
        .map_err(|_| AppError::BadInput(format!("'{}' is not a session id", id.as_str())))
}

#[derive(Default)]
pub struct MySessionsQuery;

#[Object]
impl MySessionsQuery {
    /// Your browser sessions that have not expired, newest first.
    async fn my_sessions(&self, ctx: &Context<'_>) -> AppResult<Vec<BrowserSession>> {
        let rc = RequestContext::of(ctx);
        let me = rc.user()?;
        let rows: Vec<(Uuid, String, OffsetDateTime, OffsetDateTime, OffsetDateTime)> =
            sqlx::query_as("SELECT public_id, method, created_at, expires_at, last_seen_at FROM my_sessions()")
                .fetch_all(&mut *rc.db.conn().await?)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, method, created_at, expires_at, last_seen_at)| BrowserSession {
                id: ID(id.to_string()),
                method: if method == "breakglass" {
                    SignInMethod::BreakGlass
                } else {
                    SignInMethod::Sso
                },
                created_at,
                expires_at,
                last_seen_at,
                current: me.session == Some(id),
            })
            .collect())
    }
}

#[derive(Default)]
pub struct MySessionsMutation;

#[Object]
impl MySessionsMutation {
    /// Ends one of your sessions (the current one too: that signs you out).
    async fn end_my_session(&self, ctx: &Context<'_>, id: ID) -> AppResult<bool> {
        let rc = RequestContext::of(ctx);
        rc.user()?;
        let only = session_id(&id)?;
        let ended: i32 = sqlx::query_scalar("SELECT my_sessions_end($1, NULL)")
            .bind(only)
            .fetch_one(&mut *rc.db.conn().await?)
            .await?;
        if ended == 0 {
            return Err(AppError::NotFound("session".into()));
        }
        Ok(true)
    }

    /// Ends all your sessions but the one this request came with (all of
    /// them when it came with an API token); returns how many ended.
    async fn end_my_other_sessions(&self, ctx: &Context<'_>) -> AppResult<i32> {
        let rc = RequestContext::of(ctx);
        let me = rc.user()?;
        Ok(sqlx::query_scalar("SELECT my_sessions_end(NULL, $1)")
            .bind(me.session)
            .fetch_one(&mut *rc.db.conn().await?)
            .await?)
    }
}
