//! Users and `me`.

pub mod admin;
pub mod api_tokens;
pub mod auth_audit;
pub mod sessions;
pub mod wire;

use std::sync::Arc;

use async_graphql::{Context, ID, Object};
use uuid::Uuid;

use crate::error::AppResult;
use crate::graphql::ids::Kind;
use crate::graphql::{InstanceInfo, RequestContext};

#[derive(Clone, Debug)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub is_admin: bool,
    pub instance: Arc<InstanceInfo>,
    pub global_id: ID,
}

impl User {
    pub fn new(rc: &RequestContext, id: Uuid, email: String, name: Option<String>, is_admin: bool) -> Self {
        Self {
            global_id: rc.global_id(Kind::User, id),
            id,
            email,
            name,
            is_admin,
            instance: rc.instance.clone(),
        }
    }
}

#[Object]
impl User {
    pub async fn id(&self) -> ID {
        self.global_id.clone()
    }
    async fn email(&self) -> &str {
        &self.email
    }
    async fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// Whether this user administers the instance.
    async fn is_admin(&self) -> bool {
        self.is_admin
    }
    async fn instance(&self) -> &InstanceInfo {
        &self.instance
    }
}

/// Loads a user visible to the request (yourself, or someone sharing a workspace).
pub async fn load(rc: &RequestContext, id: Uuid) -> AppResult<Option<User>> {
    let row: Option<(Uuid, String, Option<String>, bool)> =
        sqlx::query_as("SELECT id, email, name, is_admin FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *rc.db.conn().await?)
            .await?;
    Ok(row.map(|(id, email, name, admin)| User::new(rc, id, email, name, admin)))
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The calling user.
    async fn me(&self, ctx: &Context<'_>) -> AppResult<User> {
        let rc = RequestContext::of(ctx);
        let p = rc.user()?;
        Ok(User::new(rc, p.user_id, p.email.clone(), p.name.clone(), p.is_admin))
    }
}
