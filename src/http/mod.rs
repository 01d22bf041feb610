//! HTTP protocols Mosaic serves, apart from the router in `app.rs`:
//! GraphQL over HTTP at `/graphql` and the media type negotiation it uses.

pub mod accept;
pub mod graphql;
