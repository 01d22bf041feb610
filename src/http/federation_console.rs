//! `GET /admin/federation`: the federation console, for an instance
//! administrator's browser session. Its page and script are
//! ide/federation-console/ (plain JavaScript, nothing from npm or
//! elsewhere); the script does everything through `/graphql` (`peers`,
//! `connectPeer`, `approvePeer`, `setPeerGrant`, `revokePeer`,
//! `federationAudit`, `grantOptions`). Signed out, like the knowledge graph
//! page; signed in without being an administrator, 403 with a note.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::signed_in_page::{self, SignedInPage};

const PAGE: &str = include_str!("../../ide/federation-console/index.html");
const SCRIPT: &str = include_str!("../../ide/federation-console/console.js");

const SIGNED_OUT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mosaic federation</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem">
<h1>Sign in first</h1>
<p id="signed-out">The federation console is shown to an instance administrator's signed-in browser
session. This instance has no single sign-on: an administrator signs in at <code>POST /auth/breakglass</code>.</p>
</body></html>
"#;

const NOT_ADMIN: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mosaic federation</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem">
<h1>Administrators only</h1>
<p id="not-admin">You are signed in, but only an instance administrator manages this instance's peers.</p>
</body></html>
"#;

const CONSOLE: SignedInPage = SignedInPage {
    login: "/auth/login?return_to=%2Fadmin%2Ffederation",
    signed_out: SIGNED_OUT,
};

pub async fn page(state: State<AppState>, headers: HeaderMap) -> Response {
    CONSOLE
        .respond(state, headers, |p| {
            if p.is_admin {
                Html(PAGE).into_response()
            } else {
                (StatusCode::FORBIDDEN, Html(NOT_ADMIN)).into_response()
            }
        })
        .await
}

/// `GET /admin/federation/console.js`: the page's script.
pub async fn script() -> Response {
    signed_in_page::script(SCRIPT)
}
