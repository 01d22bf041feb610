//! Who is calling: API tokens now; OpenID Connect sessions later.

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
}
