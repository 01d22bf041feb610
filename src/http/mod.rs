//! The HTTP layer: every handler and the router. Handlers turn requests into
//! calls of the layers below and their results into responses; failures
//! outside GraphQL are answered in one shape (`error`).

pub mod accept;
pub mod agent;
pub mod auth;
mod caller;
mod error;
mod federation_console;
pub mod graphql;
mod knowledge_graph;
mod ops;
pub mod peers;
mod signed_in_page;
mod state;
pub mod subscriptions;
mod worker;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use caller::authenticate;
pub use error::{deactivated, error_response, error_response_with, execution_failed, too_many_requests};
pub use state::AppState;

use crate::federation::protocol;

pub fn router(state: AppState) -> Router {
    let timeout = state.config.limits.request_timeout;
    Router::new()
        .route(
            "/graphql",
            get(graphql::get).post(graphql::post).fallback(graphql::other_method),
        )
        .route("/graphql/ide/{file}", get(crate::ide::asset))
        .route("/knowledge/graph", get(knowledge_graph::page))
        .route("/knowledge/graph/graph.js", get(knowledge_graph::script))
        .route("/admin/federation", get(federation_console::page))
        .route("/admin/federation/console.js", get(federation_console::script))
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/session", get(auth::session))
        .route("/auth/breakglass", post(auth::breakglass))
        .route("/auth/backchannel-logout", post(auth::backchannel_logout))
        .route("/agent", axum::routing::any(agent::handle))
        .route("/agent/", axum::routing::any(agent::handle))
        .route("/agent/{*path}", axum::routing::any(agent::handle))
        .route("/worker/claim", post(worker::claim))
        .route("/worker/tasks/{id}/{what}", post(worker::report))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route(protocol::WELL_KNOWN_PATH, get(peers::well_known))
        .route(protocol::CONNECT_PATH, post(peers::connect))
        .route(protocol::QUERY_PATH, post(peers::query))
        .route(protocol::COMMAND_PATH, post(peers::command))
        .route(protocol::EVENT_PATH, post(peers::event))
        .route(protocol::DISCONNECT_PATH, post(peers::disconnect))
        .route(protocol::SUBSCRIBE_PATH, post(peers::subscribe))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), ops::track_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span).on_response(
                    |response: &axum::http::Response<_>, _: std::time::Duration, span: &tracing::Span| {
                        span.record("status", response.status().as_u16());
                    },
                ))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout)),
        )
        .with_state(state)
}

/// The span of one HTTP request, with the trace id its log lines carry. A
/// QUERY or COMMAND gets a `peer door` span, not exported: its server span
/// is the `peer request` that continues the sender's trace (`peers.rs`).
fn request_span(req: &Request) -> tracing::Span {
    use crate::telemetry::{PEER_DOOR, REQUEST};
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let path = req.uri().path();
    let (method, empty) = (req.method(), tracing::field::Empty);
    if path == protocol::QUERY_PATH || path == protocol::COMMAND_PATH {
        return tracing::info_span!(PEER_DOOR, %method, path, request_id = %id, status = empty);
    }
    let span = tracing::info_span!(REQUEST, otel.kind = "server", otel.name = empty, %method, path, request_id = %id,
        status = empty, trace_id = empty);
    if crate::telemetry::exporting() {
        span.record("otel.name", format!("{method} {path}"));
        crate::telemetry::mark_trace(&span);
    }
    span
}
