//! API tokens through GraphQL: list yours (instance administrators: all) and
//! revoke them. Tokens are made by `mosaic token create` and shown once; the
//! definer functions of `migrations/0040_token_management.sql` never return
//! a token's secret or hash.

use async_graphql::{Context, ID, Object, SimpleObject};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::graphql::RequestContext;

/// An API token (never its secret).
#[derive(SimpleObject, Clone, Debug)]
pub struct ApiToken {
    pub id: ID,
    pub name: String,
    /// The e-mail address of the user it acts for.
    pub user_email: String,
    pub created_at: OffsetDateTime,
    /// Null: it never expires.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last used (recorded at most once a minute).
    pub last_used_at: Option<OffsetDateTime>,
}

#[derive(Default)]
pub struct ApiTokenQuery;

#[Object]
impl ApiTokenQuery {
    /// Your API tokens, newest first; with `all`, every user's (instance administrators only).
    async fn tokens(&self, ctx: &Context<'_>, #[graphql(default = false)] all: bool) -> AppResult<Vec<ApiToken>> {
        let rc = RequestContext::of(ctx);
        if all {
            rc.admin()?;
        } else {
            rc.user()?;
        }
        type Row = (
            Uuid,
            String,
            String,
            OffsetDateTime,
            Option<OffsetDateTime>,
            Option<OffsetDateTime>,
        );
        let rows: Vec<Row> =
            sqlx::query_as("SELECT id, name, email, created_at, expires_at, last_used_at FROM tokens_list($1)")
                .bind(all)
                .fetch_all(&mut *rc.db.conn().await?)
                .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, name, user_email, created_at, expires_at, last_used_at)| ApiToken {
                    id: ID(id.to_string()),
                    name,
                    user_email,
                    created_at,
                    expires_at,
                    last_used_at,
                },
            )
            .collect())
    }
}

#[derive(Default)]
pub struct ApiTokenMutation;

#[Object]
impl ApiTokenMutation {
    /// Revokes one of your tokens (instance administrators: anyone's); it
    /// stops working at once. NOT_FOUND for a token you may not revoke.
    async fn revoke_token(&self, ctx: &Context<'_>, id: ID) -> AppResult<bool> {
        let rc = RequestContext::of(ctx);
        rc.user()?;
        let id: Uuid = id
            .parse()
            .map_err(|_| AppError::BadInput(format!("id: '{}' is not a token id", id.as_str())))?;
        let revoked: bool = sqlx::query_scalar("SELECT token_revoke($1)")
            .bind(id)
            .fetch_one(&mut *rc.db.conn().await?)
            .await?;
        if !revoked {
            return Err(AppError::NotFound("token".into()));
        }
        Ok(true)
    }
}
