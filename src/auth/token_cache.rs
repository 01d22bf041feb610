//! Bearer tokens already checked, so that a request does not ask PostgreSQL
//! who its caller is. Every change to a token (its last use included) or a
//! user is announced at commit (migration 0051) and forgets what it concerns
//! (`db::cache`).

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use uuid::Uuid;

use super::Principal;
use crate::db::cache::Cache;

/// Keyed by the token's hash. Only tokens that authenticated are kept, so an
/// outsider cannot fill it.
pub type TokenCache = Cache<Vec<u8>, CachedToken>;

pub fn new_cache() -> TokenCache {
    Cache::new(CAPACITY).forgetting_only(concerns)
}

/// A change names a token (`token:<id>`) or a user (`user:<id>`), whose
/// tokens are then forgotten.
fn concerns(payload: &str, _: &Vec<u8>, cached: &CachedToken) -> bool {
    match payload.split_once(':') {
        Some(("token", id)) => id == cached.token_id.to_string(),
        Some(("user", id)) => id == cached.principal.user_id.to_string(),
        _ => true,
    }
}

/// Where changes to tokens and users are announced.
pub const CHANNEL: &str = "mosaic_auth_changes";

/// Tokens kept at most.
const CAPACITY: usize = 10_000;

/// A token's last use is recorded at most this often.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct CachedToken {
    pub principal: Principal,
    pub token_id: Uuid,
    pub expires_at: Option<OffsetDateTime>,
    /// When this process last recorded the token's use.
    pub touched: Instant,
}
