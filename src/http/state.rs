//! What every handler shares.

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::federation::Federation;
use crate::graphql::InstanceInfo;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub instance_id: Uuid,
    pub instance: Arc<InstanceInfo>,
    pub metrics: Arc<Metrics>,
    pub federation: Arc<Federation>,
    /// The request audit of what peers ask (written off the request path).
    pub audit: Arc<crate::federation::audit::Audit>,
    /// Single sign-on, when `oidc.issuer_url` is configured.
    pub sso: Option<Arc<crate::auth::oidc::Sso>>,
    /// Per-user agent containers; a Docker engine that is down fails only their operations.
    pub agents: Arc<crate::containers::AgentService>,
    /// Runs GraphQL requests (every transport goes through it).
    pub executor: Arc<crate::schema::execute::Executor>,
    /// Bearer tokens already checked, cleared by the change listener.
    pub tokens: Arc<crate::auth::token_cache::TokenCache>,
    /// Live subscriptions: the change listener, per-user limits, shutdown.
    pub live: Arc<crate::live::Live>,
    /// Whether shutdown has begun (`/readyz`), and the executions it awaits.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
}
