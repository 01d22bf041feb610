//! The integration tests, one crate (one build, one link): `common` is the
//! harness (a real PostgreSQL, real instances over HTTPS on loopback), and
//! each module tests one area through the running application.

mod common;

mod admin_roles;
mod agent_budgets;
mod agent_task_containers;
mod agent_tasks;
mod agents;
mod attacks_clients;
mod attacks_federation;
mod attacks_peer_door;
mod bad_input;
mod browser;
mod caches;
mod cli;
mod demo;
mod deploy;
mod embedding;
mod events;
mod federation_audit;
mod federation_events;
mod federation_merge;
mod federation_protocol;
mod federation_resilience;
mod first_hour;
mod grant_scopes;
mod graphql_over_http;
mod http_surface;
mod ide;
mod knowledge;
mod knowledge_federation;
mod knowledge_search;
mod pagination;
mod pool_hygiene;
mod protocol_vectors;
mod replicas;
mod rls;
mod roles;
mod schema_drift;
mod sessions;
mod shutdown;
mod sso;
mod subscriptions;
mod teams;
mod tracing;
mod user_admin;
