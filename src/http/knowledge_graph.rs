//! `GET /knowledge/graph`: the knowledge graph page, for a signed-in browser
//! session. Its page and script are ide/knowledge-graph/ (committed), its
//! drawing library force-graph comes from npm and is embedded with the
//! IDE's assets by build.rs (`/graphql/ide/force-graph.min.js`); nothing is
//! loaded from elsewhere. Signed out, it sends the browser to sign in when
//! single sign-on is configured, and answers 401 otherwise.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::AppState;

/// The page, its asset URLs naming the embedded assets' version.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("../../ide/knowledge-graph/index.html").replace("ASSETS_VERSION", env!("MOSAIC_IDE_ASSETS_VERSION"))
});
const SCRIPT: &str = include_str!("../../ide/knowledge-graph/graph.js");

/// Scripts only from this server, none inline; requests only to it.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const SIGNED_OUT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mosaic knowledge graph</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem">
<h1>Sign in first</h1>
<p id="signed-out">The knowledge graph is shown to a signed-in browser session. This instance has no
single sign-on: an administrator signs in at <code>POST /auth/breakglass</code>.</p>
</body></html>
"#;

const MISSING_ASSETS: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mosaic knowledge graph</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem">
<h1>The knowledge graph is not included in this build</h1>
<p>Its drawing library is installed from the npm registry and embedded at build time. Run
<code>npm ci --prefix ide</code> in the repository, then rebuild.</p>
</body></html>
"#;

pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // A page load sends no CSRF header; the page's own requests do.
    let signed_in = matches!(
        super::auth::session_principal(&state, &headers, false).await,
        Some(Ok(_))
    );
    let mut response = match (signed_in, state.sso.is_some()) {
        (false, true) => return Redirect::to("/auth/login?return_to=%2Fknowledge%2Fgraph").into_response(),
        (false, false) => (StatusCode::UNAUTHORIZED, Html(SIGNED_OUT)).into_response(),
        (true, _) if !crate::ide::ASSETS_PRESENT => {
            (StatusCode::SERVICE_UNAVAILABLE, Html(MISSING_ASSETS)).into_response()
        }
        (true, _) => Html(PAGE.as_str()).into_response(),
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /knowledge/graph/graph.js`: the page's script (small, so not cached
/// long: a new build is picked up at once).
pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
        .into_response()
}
