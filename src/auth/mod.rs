//! Who is calling: API tokens, and browser sessions opened by OpenID Connect
//! single sign-on or by a break-glass administrator.

pub mod breakglass;
pub mod logout_token;
pub mod oidc;
pub mod sessions;
pub mod throttle;
pub mod token_cache;
pub mod tokens;
pub mod users;

use uuid::Uuid;

/// An authenticated local user.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub is_admin: bool,
    /// Vouched for by the operator who created the user, or by the provider
    /// (`email_verified`); only a verified address is named to peers.
    pub email_verified: bool,
    /// The public id of the browser session the request came with, if any.
    pub session: Option<Uuid>,
}
