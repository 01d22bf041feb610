//! Mosaic: an application whose instances each serve their own data through one
//! GraphQL schema and federate with each other; see docs/ARCHITECTURE.md.

// The merged Query and Mutation roots (schema/mod.rs) nest one level per
// area, deeper than the compiler's default of 128 lets it lay out.
#![recursion_limit = "256"]

pub mod agent_tasks;
pub mod agents;
pub mod app;
pub mod auth;
pub mod config;
pub mod containers;
pub mod db;
pub mod demo;
pub mod embedding;
pub mod error;
pub mod events;
pub mod federated_events;
pub mod federation;
pub mod graphql;
pub mod healthcheck;
pub mod http;
pub mod ide;
pub mod instance;
pub mod knowledge;
pub mod lifecycle;
pub mod live;
pub mod metrics;
pub mod peers;
pub mod projects;
pub mod schema;
pub mod secrets;
pub mod server;
pub mod tasks;
pub mod teams;
pub mod telemetry;
pub mod users;
pub mod workspaces;
