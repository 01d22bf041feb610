//! Failures outside GraphQL execution, in GraphQL's error shape.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::AppError;

/// A GraphQL-shaped error body for failures outside execution.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    error_response_with(status, code, message, Map::new())
}

/// [`error_response`] with more extensions beside the code.
pub fn error_response_with(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    mut extensions: Map<String, Value>,
) -> Response {
    extensions.insert("code".into(), code.into());
    let body = json!({ "errors": [{ "message": message.into(), "extensions": extensions }] });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// 429: `Retry-After` in whole seconds (rounded up, at least 1) and the
/// exact wait as `extensions.retryAfterMs`.
pub fn too_many_requests(code: &str, message: impl Into<String>, wait: Duration) -> Response {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    let mut extensions = Map::new();
    extensions.insert("retryAfterMs".into(), ms.into());
    let mut response = error_response_with(StatusCode::TOO_MANY_REQUESTS, code, message, extensions);
    let seconds = ms.div_ceil(1000).max(1);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The credential is valid but its user was deactivated by an instance administrator.
pub fn deactivated() -> Response {
    error_response(
        StatusCode::FORBIDDEN,
        "ACCOUNT_DEACTIVATED",
        "this account is deactivated; ask an instance administrator",
    )
}

/// Execution itself failed (its transaction could not finish): logged here,
/// never shown.
pub fn execution_failed(e: AppError) -> Response {
    tracing::error!(error = ?e, "executing a request failed");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_SERVER_ERROR",
        "could not commit",
    )
}
