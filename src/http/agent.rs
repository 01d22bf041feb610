//! `ANY /agent/*path`: a request of an authenticated user, forwarded to that
//! user's own container on 127.0.0.1 (started on demand). The user's Mosaic
//! credentials (Authorization, cookies) are not passed on; the agent learns
//! who is calling from `X-Mosaic-User` and `X-Mosaic-User-Email`.
//!
//! The agent answers on Mosaic's own origin, so only an allowlist of
//! response headers that describe the content is passed back: an agent can
//! set no cookie and change no origin-wide security policy (HSTS, CSP, CORS,
//! Clear-Site-Data, service workers...). Every answer carries a restrictive
//! CSP and `nosniff`, so it cannot run script with Mosaic's origin either.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, authenticate, error_response};
use crate::auth::Principal;
use crate::containers::{AgentError, AgentService};

/// Request headers that belong to one hop, or carry the caller's Mosaic credentials.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "authorization"
            | "cookie"
            | "x-csrf-token"
    ) && !name.as_str().starts_with("x-mosaic-")
}

/// Response headers an agent may set: they describe the content only.
fn answer_header_allowed(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-type"
            | "content-encoding"
            | "content-language"
            | "content-disposition"
            | "content-range"
            | "accept-ranges"
            | "cache-control"
            | "etag"
            | "last-modified"
            | "expires"
            | "vary"
            | "retry-after"
    )
}

/// Sandboxed, nothing loaded, not framable: an agent's page cannot act as Mosaic.
const AGENT_CSP: &str = "default-src 'none'; sandbox; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn agent_error(e: &AgentError) -> Response {
    error_response(e.status(), e.code(), e.message())
}

/// Forwards one request. The agent's answer is read whole before it is
/// returned, so the exchange with the container is over when this returns;
/// the in-flight guard taken first keeps the idle reaper off the agent until
/// then (and is dropped with the future if the client goes away).
pub async fn forward(svc: &AgentService, principal: &Principal, req: Request, max_body: usize) -> Response {
    let _in_flight = svc.begin_request(principal.user_id);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/agent").unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let Ok(bytes) = axum::body::to_bytes(body, max_body).await else {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("request body exceeds the limit of {max_body} bytes"),
        );
    };
    let user = principal.user_id;
    // One retry: a container that died since it was last seen is started again.
    for attempt in 0..2 {
        let port = match svc.ensure_running(user).await {
            Ok(p) => p,
            Err(e) => return agent_error(&e),
        };
        let mut outbound = svc
            .http
            .request(parts.method.clone(), format!("http://127.0.0.1:{port}{path_and_query}"));
        for (name, value) in parts.headers.iter().filter(|(n, _)| forwardable(n)) {
            outbound = outbound.header(name, value);
        }
        outbound = outbound
            .header("x-mosaic-user", user.to_string())
            .header("x-mosaic-user-email", principal.email.as_str())
            .body(bytes.clone());
        match outbound.send().await {
            Ok(answer) => {
                svc.touch(user);
                let status = answer.status();
                let headers = answer.headers().clone();
                let body = match answer.bytes().await {
                    Ok(b) => b,
                    Err(e) => {
                        return error_response(
                            StatusCode::BAD_GATEWAY,
                            "AGENT_BAD_ANSWER",
                            format!("the agent's answer broke off: {e}"),
                        );
                    }
                };
                let mut response = (status, Body::from(body)).into_response();
                let out = response.headers_mut();
                for (name, value) in headers.iter().filter(|(n, _)| answer_header_allowed(n)) {
                    out.append(name, value.clone());
                }
                if !out.contains_key(header::CONTENT_TYPE) {
                    out.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                }
                out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(AGENT_CSP));
                out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                out.insert(
                    header::HeaderName::from_static("cross-origin-resource-policy"),
                    HeaderValue::from_static("same-origin"),
                );
                return response;
            }
            Err(e) if attempt == 0 && e.is_connect() => {
                tracing::info!(user = %user, "agent did not answer; starting it again");
                svc.forget(user);
            }
            Err(e) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "AGENT_BAD_ANSWER",
                    format!("the agent did not answer: {e}"),
                );
            }
        }
    }
    error_response(StatusCode::BAD_GATEWAY, "AGENT_BAD_ANSWER", "the agent did not answer")
}

/// `ANY /agent/*path`: the caller's own agent container, started on demand.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let principal = match authenticate(&state, req.headers()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    forward(&state.agents, &principal, req, state.config.limits.max_body_bytes).await
}
