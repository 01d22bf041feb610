//! `GET /knowledge/graph`: the knowledge graph page, for a signed-in browser
//! session. Its page and script are ide/knowledge-graph/ (committed), its
//! drawing library force-graph comes from npm and is embedded with the
//! IDE's assets by build.rs (`/graphql/ide/force-graph.min.js`); nothing is
//! loaded from elsewhere. Signed out, it sends the browser to sign in when
//! single sign-on is configured, and answers 401 otherwise.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::signed_in_page::{self, SignedInPage};

/// The page, its asset URLs naming the embedded assets' version.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("../../ide/knowledge-graph/index.html").replace("ASSETS_VERSION", env!("MOSAIC_IDE_ASSETS_VERSION"))
});
const SCRIPT: &str = include_str!("../../ide/knowledge-graph/graph.js");

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

const GRAPH: SignedInPage = SignedInPage {
    login: "/auth/login?return_to=%2Fknowledge%2Fgraph",
    signed_out: SIGNED_OUT,
};

pub async fn page(state: State<AppState>, headers: HeaderMap) -> Response {
    GRAPH
        .respond(state, headers, |_| {
            if crate::ide::ASSETS_PRESENT {
                Html(PAGE.as_str()).into_response()
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, Html(MISSING_ASSETS)).into_response()
            }
        })
        .await
}

/// `GET /knowledge/graph/graph.js`: the page's script.
pub async fn script() -> Response {
    signed_in_page::script(SCRIPT)
}
