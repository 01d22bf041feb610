//! Mosaic: an application whose instances each serve their own data through one
//! GraphQL schema and federate with each other; see docs/ARCHITECTURE.md.

pub mod app;
pub mod auth;
pub mod config;
pub mod containers;
pub mod db;
pub mod demo;
pub mod embedding;
pub mod error;
pub mod federation;
pub mod graphql;
pub mod http;
pub mod ide;
pub mod instance;
pub mod live;
pub mod metrics;
pub mod secrets;
pub mod server;
pub mod telemetry;
