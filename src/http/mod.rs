//! HTTP protocols Mosaic serves, apart from the router in `app.rs`:
//! GraphQL over HTTP at `/graphql` with the media type negotiation it uses,
//! and subscriptions over WebSocket and server-sent events.

pub mod accept;
pub mod graphql;
pub mod subscriptions;
