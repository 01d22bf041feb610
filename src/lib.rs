//! Mosaic: a federation gateway. Each instance serves its own data through one
//! GraphQL schema; see docs/ARCHITECTURE.md for the whole picture.

pub mod app;
pub mod auth;
pub mod config;
pub mod containers;
pub mod db;
pub mod demo;
pub mod error;
pub mod federation;
pub mod graphql;
pub mod ide;
pub mod metrics;
pub mod secrets;
pub mod server;
pub mod telemetry;
