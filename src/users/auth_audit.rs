//! The authentication audit for instance administrators: sign-ins through
//! the provider and break-glass (refused ones too), sign-outs, back-channel
//! logouts and user administration. Read through the definer function of
//! `migrations/0009_auth_audit_read.sql`, which checks the caller again.

use async_graphql::{Context, ID, Json, Object, SimpleObject};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;
use crate::graphql::ids::Kind;

/// One audited authentication event.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuthAuditEntry {
    /// Increases with time; pass it as `before` to read older entries.
    pub id: ID,
    pub at: OffsetDateTime,
    /// e.g. `sso_login`, `sso_login_refused`, `breakglass_login`,
    /// `breakglass_login_failed`, `logout`, `sso_backchannel_logout`,
    /// `user_deactivated`.
    pub action: String,
    /// The address the event is about, as given (also for unknown accounts).
    pub email: Option<String>,
    /// The local user, when the event names one.
    pub user_id: Option<ID>,
    pub details: Json<serde_json::Value>,
}

type Row = (
    i64,
    OffsetDateTime,
    Option<Uuid>,
    Option<String>,
    String,
    serde_json::Value,
);

#[derive(Default)]
pub struct AuthAuditQuery;

#[Object]
impl AuthAuditQuery {
    /// The authentication audit, newest first, `first` at a time (default
    /// 20) before the entry `before`; `action` and `email` keep only the
    /// entries with exactly that action or address (instance administrators only).
    async fn auth_audit(
        &self,
        ctx: &Context<'_>,
        action: Option<String>,
        email: Option<String>,
        first: Option<i32>,
        before: Option<ID>,
    ) -> AppResult<Vec<AuthAuditEntry>> {
        let rc = RequestContext::of(ctx);
        rc.admin()?;
        let first = rc.page_size(first)?;
        let action = crate::graphql::optional_text("action", action, 100)?;
        let email = crate::graphql::optional_text("email", email, 320)?;
        let before = before
            .map(|b| {
                b.parse::<i64>()
                    .map_err(|_| AppError::BadInput("before must be the id of an audit entry".into()))
            })
            .transpose()?;
        let rows: Vec<Row> =
            sqlx::query_as("SELECT id, at, user_id, email, action, details FROM admin_auth_audit($1, $2, $3, $4)")
                .bind(before)
                .bind(action)
                .bind(email)
                .bind(first as i32)
                .fetch_all(&mut *rc.db.conn().await?)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, at, user, email, action, details)| AuthAuditEntry {
                id: ID(id.to_string()),
                at,
                action,
                email,
                user_id: user.map(|u| rc.global_id(Kind::User, u)),
                details: Json(details),
            })
            .collect())
    }
}
