//! This instance as every part sees it, built once at start
//! (`app::load_instance`).

use uuid::Uuid;

pub struct Instance {
    pub id: Uuid,
    pub name: String,
    /// Where peers and clients reach it.
    pub base_url: String,
    /// The GraphQL schema's hash, announced to peers.
    pub schema_hash: String,
}
