//! Who is asking: a Bearer token, or a browser session with its CSRF header.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::{AppState, deactivated, error_response};
use crate::auth::Principal;
use crate::auth::tokens::{self, TokenRejection};

/// The caller of a request, or the response that refuses it.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, Response> {
    let unauthenticated = |m: &str| error_response(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", m);
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        // A browser session (cookie + CSRF header) is the alternative to a Bearer token.
        if let Some(result) = super::auth::cookie_principal(state, headers).await {
            return result;
        }
        return Err(unauthenticated(
            "authentication required: send Authorization: Bearer <token>",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthenticated("Authorization header must be 'Bearer <token>'"))?;
    match tokens::authenticate(&state.pool, &state.tokens, token.trim()).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(TokenRejection::Expired)) => Err(unauthenticated("token expired")),
        Ok(Err(TokenRejection::Unknown)) => Err(unauthenticated("unknown token")),
        Ok(Err(TokenRejection::Deactivated)) => Err(deactivated()),
        Err(e) => {
            tracing::error!(error = %e, "token lookup failed");
            Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "cannot check credentials right now",
            ))
        }
    }
}
