//! Pages for a signed-in browser session (the knowledge graph, the
//! federation console): one content security policy, one signed-out
//! behaviour, never cached. Their scripts are served by this instance too.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::AppState;
use crate::auth::Principal;

/// Scripts only from this server, none inline; requests only to it.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A page that only a signed-in session gets.
pub struct SignedInPage {
    /// Where to sign in first when single sign-on is configured (it returns here).
    pub login: &'static str,
    /// The 401 page without single sign-on.
    pub signed_out: &'static str,
}

impl SignedInPage {
    /// The page `render` makes for the session's principal; signed out, a
    /// redirect to sign in (single sign-on) or 401 with `signed_out`.
    pub async fn respond(
        &self,
        State(state): State<AppState>,
        headers: HeaderMap,
        render: impl FnOnce(&Principal) -> Response,
    ) -> Response {
        // A page load sends no CSRF header; the page's own requests do.
        let principal = match super::auth::session_principal(&state, &headers, false).await {
            Some(Ok(p)) => Some(p),
            _ => None,
        };
        let mut response = match (principal, state.sso.is_some()) {
            (None, true) => return Redirect::to(self.login).into_response(),
            (None, false) => (StatusCode::UNAUTHORIZED, Html(self.signed_out)).into_response(),
            (Some(p), _) => render(&p),
        };
        let h = response.headers_mut();
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// A page's script (small, so not cached long: a new build is picked up at once).
pub fn script(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
