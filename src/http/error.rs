//! Failures outside GraphQL execution, in GraphQL's error shape.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::AppError;

/// A GraphQL-shaped error body for failures outside execution.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "errors": [{ "message": message.into(), "extensions": { "code": code } }] });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
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
