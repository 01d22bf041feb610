//! The browser-facing authentication routes: `/auth/login`, `/auth/callback`,
//! `/auth/logout`, `/auth/session` and `/auth/breakglass`, and the cookie
//! check `graphql_post` uses beside Bearer tokens.

use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, deactivated, error_response, too_many_requests};
use crate::auth::Principal;
use crate::auth::oidc::{Identity, LoginError};
use crate::auth::sessions::{self, CSRF_COOKIE, LOGIN_COOKIE, Method, SESSION_COOKIE, SessionRejection};
use crate::config::GroupRole;

/// How long a started login may take to come back.
const LOGIN_TTL_S: i32 = 600;
const DEFAULT_RETURN: &str = "/graphql";

fn secure(state: &AppState) -> bool {
    state.federation.base_url.starts_with("https://")
}

/// A small HTML page for a refused or failed login; the code is also in `x-mosaic-error`.
fn error_page(state: &AppState, e: &LoginError) -> Response {
    // Without single sign-on, trying again cannot help: say where a token comes from.
    let next = if state.sso.is_some() {
        "<a href=\"/auth/login\">Try again</a>"
    } else {
        "This instance has no single sign-on: use an API token, which an administrator makes with \
         <code>mosaic token create --user EMAIL</code>. <a href=\"/graphql\">Back to the IDE</a>"
    };
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign-in failed</title></head>\
         <body><h1>Sign-in failed</h1><p>{}</p><p>Error code: <code>{}</code></p>\
         <p>{next}</p></body></html>",
        html_escape(&e.message),
        e.code
    );
    let mut response = (e.status, Html(page)).into_response();
    let h = response.headers_mut();
    h.insert("x-mosaic-error", HeaderValue::from_static(e.code));
    h.append(
        header::SET_COOKIE,
        sessions::clear_cookie(LOGIN_COOKIE, true, secure(state)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn internal(state: &AppState, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "authentication storage failed");
    error_page(
        state,
        &LoginError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "cannot record the sign-in right now",
        ),
    )
}

/// Only local paths: no scheme, no `//host`, no backslashes.
fn safe_return(to: Option<&str>) -> String {
    match to {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && p.len() <= 2000 => p.into(),
        _ => DEFAULT_RETURN.into(),
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
}

/// Starts a login at the provider: a pending login (state, nonce, PKCE
/// verifier) kept server-side under the hash of a random id in a cookie.
pub async fn login(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let Some(sso) = &state.sso else {
        return error_page(
            &state,
            &LoginError::new(
                StatusCode::NOT_FOUND,
                "OIDC_NOT_CONFIGURED",
                "single sign-on is not configured on this instance",
            ),
        );
    };
    let start = match sso.begin().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(code = e.code, error = %e.message, "login could not start");
            return error_page(&state, &e);
        }
    };
    let login_id = sessions::random_token();
    let stored = sqlx::query("SELECT oidc_login_begin($1, $2, $3, $4, $5, $6)")
        .bind(sessions::hash(&login_id))
        .bind(&start.state)
        .bind(&start.nonce)
        .bind(&start.pkce_verifier)
        .bind(safe_return(q.return_to.as_deref()))
        .bind(LOGIN_TTL_S)
        .execute(&state.pool)
        .await;
    if let Err(e) = stored {
        return internal(&state, e);
    }
    let mut r = redirect(&start.authorize_url);
    r.headers_mut().append(
        header::SET_COOKIE,
        sessions::set_cookie(LOGIN_COOKIE, &login_id, LOGIN_TTL_S.into(), true, secure(&state)),
    );
    r
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the browser back here: check the state against the
/// pending login (single use), redeem the code, verify the ID token, map the
/// claims to a local user and open a fresh session.
pub async fn callback(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<CallbackQuery>) -> Response {
    let Some(sso) = state.sso.clone() else {
        return error_page(
            &state,
            &LoginError::new(
                StatusCode::NOT_FOUND,
                "OIDC_NOT_CONFIGURED",
                "single sign-on is not configured",
            ),
        );
    };
    let refuse = |code: &'static str, message: &str| {
        tracing::warn!(code, message, "login refused");
        error_page(&state, &LoginError::new(StatusCode::BAD_REQUEST, code, message))
    };
    let Some(login_id) = sessions::cookie(&headers, LOGIN_COOKIE) else {
        return refuse(
            "OIDC_LOGIN_UNKNOWN",
            "no sign-in is under way in this browser (or it expired); start again",
        );
    };
    let pending: Result<Option<(String, String, String, String)>, _> =
        sqlx::query_as("SELECT state, nonce, pkce_verifier, return_to FROM oidc_login_take($1)")
            .bind(sessions::hash(&login_id))
            .fetch_optional(&state.pool)
            .await;
    let (expected_state, nonce, verifier, return_to) = match pending {
        Ok(Some(p)) => p,
        Ok(None) => {
            return refuse(
                "OIDC_LOGIN_UNKNOWN",
                "this sign-in was already used or has expired; start again",
            );
        }
        Err(e) => return internal(&state, e),
    };
    let state_ok = q.state.as_deref().is_some_and(|s| {
        use subtle::ConstantTimeEq;
        bool::from(s.as_bytes().ct_eq(expected_state.as_bytes()))
    });
    if !state_ok {
        return refuse(
            "OIDC_STATE_MISMATCH",
            "the sign-in response does not belong to the sign-in this browser started (state)",
        );
    }
    if let Some(error) = q.error {
        let message = format!(
            "the identity provider refused the sign-in: {error}{}",
            q.error_description.map(|d| format!(" ({d})")).unwrap_or_default()
        );
        return error_page(
            &state,
            &LoginError::new(StatusCode::FORBIDDEN, "OIDC_PROVIDER_ERROR", message),
        );
    }
    let Some(code) = q.code else {
        return refuse("OIDC_NO_CODE", "the sign-in response carries no authorization code");
    };
    let identity = match sso.finish(&code, &nonce, &verifier).await {
        Ok(i) => i,
        Err(e) => {
            let _ = sessions::audit(&state.pool, None, None, "sso_login_refused", json!({ "code": e.code })).await;
            return error_page(&state, &e);
        }
    };
    let user_id = match link_user(&state, &identity).await {
        Ok(id) => id,
        Err(e) => return error_page(&state, &e),
    };
    // Rotation: whatever session this browser had ends now.
    if let Some(old) = sessions::cookie(&headers, SESSION_COOKIE) {
        let _ = sessions::end(&state.pool, &old).await;
    }
    let sealed_id_token = sso.seal_id_token(user_id, &identity.id_token);
    let provider_session = sessions::ProviderSession {
        sealed_id_token: &sealed_id_token,
        sid: identity.sid.as_deref(),
    };
    let session = match sessions::create(
        &state.pool,
        user_id,
        Method::Oidc,
        Some(provider_session),
        state.config.session_ttl,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return internal(&state, e),
    };
    let _ = sessions::audit(
        &state.pool,
        Some(user_id),
        Some(&identity.email),
        "sso_login",
        json!({ "issuer": identity.issuer, "subject": identity.subject, "groups": identity.groups }),
    )
    .await;
    tracing::info!(user = %user_id, "signed in through the identity provider");
    let mut r = redirect(&return_to);
    session_cookies(&state, &mut r, &session);
    r.headers_mut().append(
        header::SET_COOKIE,
        sessions::clear_cookie(LOGIN_COOKIE, true, secure(&state)),
    );
    r
}

fn session_cookies(state: &AppState, r: &mut Response, session: &sessions::NewSession) {
    let max_age = state.config.session_ttl.as_secs() as i64;
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        sessions::set_cookie(SESSION_COOKIE, &session.id, max_age, true, secure(state)),
    );
    h.append(
        header::SET_COOKIE,
        sessions::set_cookie(CSRF_COOKIE, &session.csrf_token, max_age, false, secure(state)),
    );
}

/// Claims to local user (by issuer + subject), with the configured group → role mapping.
async fn link_user(state: &AppState, id: &Identity) -> Result<uuid::Uuid, LoginError> {
    let roles = state
        .sso
        .as_ref()
        .map(|s| s.settings.group_roles.as_slice())
        .unwrap_or(&[]);
    let member = |g: &str| id.groups.iter().any(|x| x == g);
    let admin_groups: Vec<&str> = roles
        .iter()
        .filter_map(|r| match r {
            GroupRole::InstanceAdmin { group } => Some(group.as_str()),
            _ => None,
        })
        .collect();
    // With no admin group configured, SSO leaves is_admin as it is.
    let admin = (!admin_groups.is_empty()).then(|| admin_groups.iter().any(|g| member(g)));
    let (mut ws_ids, mut ws_roles, mut ws_groups) = (Vec::new(), Vec::new(), Vec::new());
    for r in roles {
        if let GroupRole::Workspace { group, workspace, role } = r
            && member(group)
        {
            ws_ids.push(*workspace);
            ws_roles.push(role.clone());
            ws_groups.push(group.clone());
        }
    }
    let linked: Result<(uuid::Uuid, bool), sqlx::Error> = sqlx::query_as(
        "SELECT linked_user, created FROM sso_upsert_user($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id.issuer)
    .bind(&id.subject)
    .bind(&id.email)
    .bind(id.email_verified)
    .bind(&id.name)
    .bind(&id.preferred_username)
    .bind(&id.groups)
    .bind(admin)
    .bind(&ws_ids)
    .bind(&ws_roles)
    .bind(&ws_groups)
    .fetch_one(&state.pool)
    .await;
    match linked {
        Ok((user, created)) => {
            if created {
                tracing::info!(user = %user, "first sign-in created a local user");
            }
            Ok(user)
        }
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some("MOS41") || e.code().as_deref() == Some("23505") =>
        {
            Err(LoginError::new(
                StatusCode::CONFLICT,
                "OIDC_EMAIL_CONFLICT",
                "another local account already uses this e-mail address",
            ))
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("MOS42") => Err(LoginError::new(
            StatusCode::FORBIDDEN,
            "ACCOUNT_DEACTIVATED",
            "this account is deactivated; ask an instance administrator",
        )),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23514") => Err(LoginError::new(
            StatusCode::BAD_REQUEST,
            "OIDC_BAD_CLAIMS",
            "the provider's e-mail or name claim is not acceptable",
        )),
        Err(e) => {
            tracing::error!(error = %e, "linking the signed-in user failed");
            Err(LoginError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "cannot record the sign-in right now",
            ))
        }
    }
}

/// Ends the session here, then sends the browser to the provider's
/// end-session endpoint when it offers one (with the ID token as hint).
/// A script asking for JSON (the IDE) gets `{"redirect": url}` instead of
/// a 303, and navigates there itself.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut id_token = None;
    if let Some(id) = sessions::cookie(&headers, SESSION_COOKIE) {
        match sessions::end(&state.pool, &id).await {
            Ok(Some((user, sealed))) => {
                let _ = sessions::audit(&state.pool, Some(user), None, "logout", json!({})).await;
                id_token = sealed.and_then(|t| state.sso.as_ref()?.open_id_token(user, &t));
            }
            Ok(None) => {}
            Err(e) => return internal(&state, e),
        }
    }
    let to = id_token
        .as_deref()
        .and_then(|t| state.sso.as_ref().and_then(|s| s.end_session_url(Some(t))))
        .unwrap_or_else(|| DEFAULT_RETURN.to_string());
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let mut r = if wants_json {
        Json(json!({ "redirect": to })).into_response()
    } else {
        redirect(&to)
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.append(
        header::SET_COOKIE,
        sessions::clear_cookie(SESSION_COOKIE, true, secure(&state)),
    );
    h.append(
        header::SET_COOKIE,
        sessions::clear_cookie(CSRF_COOKIE, false, secure(&state)),
    );
    r
}

/// The signed-in user and the CSRF token to send with GraphQL POSTs.
pub async fn session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(id) = sessions::cookie(&headers, SESSION_COOKIE) else {
        return error_response(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "no session");
    };
    match sessions::authenticate(&state.pool, &id, state.config.session_idle_timeout).await {
        Ok(Ok(s)) => Json(json!({
            "user": { "email": s.principal.email, "name": s.principal.name, "isAdmin": s.principal.is_admin },
            "csrfToken": s.csrf_token,
            "expiresAt": s.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        }))
        .into_response(),
        Ok(Err(_)) => error_response(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "session expired or ended"),
        Err(e) => internal(&state, e),
    }
}

#[derive(Deserialize)]
pub struct BackChannelLogout {
    logout_token: String,
}

/// OpenID Connect Back-Channel Logout: the provider posts a signed logout
/// token when a user signs out there (or an administrator ends their
/// session); the sessions it names end here at once. Answers 200, or 400
/// with an OAuth-style `{error, error_description}` (spec §2.8).
pub async fn backchannel_logout(
    State(state): State<AppState>,
    form: Result<axum::Form<BackChannelLogout>, FormRejection>,
) -> Response {
    let no_store = |mut r: Response| {
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    };
    let refuse = |status: StatusCode, error: &str, description: String| {
        tracing::warn!(error, %description, "back-channel logout refused");
        no_store(
            (
                status,
                Json(json!({ "error": error, "error_description": description })),
            )
                .into_response(),
        )
    };
    let Some(sso) = &state.sso else {
        return refuse(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "single sign-on is not configured on this instance".into(),
        );
    };
    let token = match form {
        Ok(axum::Form(f)) => f.logout_token,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("expected a form with logout_token: {}", e.body_text()),
            );
        }
    };
    let (issuer, claims) = match sso.verify_logout_token(&token).await {
        Ok(v) => v,
        Err(e) if e.code == "OIDC_PROVIDER_UNAVAILABLE" => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", e.message);
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid_request", e.message),
    };
    let ended =
        match sessions::end_by_provider(&state.pool, &issuer, claims.subject.as_deref(), claims.sid.as_deref()).await {
            Ok(users) => users,
            Err(e) => {
                tracing::error!(error = %e, "back-channel logout could not end sessions");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "cannot end the sessions right now".into(),
                );
            }
        };
    // The audit names the user when every ended session was theirs.
    let user = ended.first().copied().filter(|u| ended.iter().all(|x| x == u));
    let _ = sessions::audit(
        &state.pool,
        user,
        None,
        "sso_backchannel_logout",
        json!({ "subject": claims.subject, "sid": claims.sid, "sessions": ended.len() }),
    )
    .await;
    tracing::info!(sessions = ended.len(), "signed out by the identity provider");
    no_store(StatusCode::OK.into_response())
}

#[derive(Deserialize)]
pub struct BreakGlassLogin {
    email: String,
    password: String,
}

/// Local administrator login for when the provider is down; audited and
/// throttled per address (429 `TOO_MANY_ATTEMPTS` with `Retry-After`).
pub async fn breakglass(State(state): State<AppState>, body: Result<Json<BreakGlassLogin>, JsonRejection>) -> Response {
    use crate::auth::breakglass::{LoginOutcome, MAX_EMAIL_BYTES, MAX_PASSWORD_BYTES};
    let body = match body {
        Ok(Json(body)) => body,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!(
                    "expected a JSON body {{\"email\": …, \"password\": …}}: {}",
                    e.body_text()
                ),
            );
        }
    };
    if body.email.len() > MAX_EMAIL_BYTES || body.password.len() > MAX_PASSWORD_BYTES {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            format!("email is at most {MAX_EMAIL_BYTES} bytes and password at most {MAX_PASSWORD_BYTES}"),
        );
    }
    let outcome = crate::auth::breakglass::login(&state.pool, &body.email, &body.password).await;
    let principal = match outcome {
        Ok(LoginOutcome::SignedIn(p)) => p,
        Ok(LoginOutcome::Refused) => {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "wrong e-mail or password for a break-glass administrator",
            );
        }
        Ok(LoginOutcome::Throttled(wait)) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return too_many_requests(
                "TOO_MANY_ATTEMPTS",
                format!("too many sign-in attempts for this address; try again in {seconds} s"),
                wait,
            );
        }
        Err(e) => return internal(&state, e),
    };
    let session = match sessions::create(
        &state.pool,
        principal.user_id,
        Method::BreakGlass,
        None,
        state.config.session_ttl,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return internal(&state, e),
    };
    let mut r = Json(json!({
        "user": { "email": principal.email, "isAdmin": principal.is_admin },
        "csrfToken": session.csrf_token,
    }))
    .into_response();
    session_cookies(&state, &mut r, &session);
    r
}

/// A session cookie as the credential of a GraphQL POST, which must then
/// carry the session's CSRF token in `x-mosaic-csrf`. `None`: no cookie.
pub async fn cookie_principal(state: &AppState, headers: &HeaderMap) -> Option<Result<Principal, Response>> {
    session_principal(state, headers, true).await
}

/// The session cookie's user. `csrf`: whether the CSRF header is required;
/// only a WebSocket upgrade (which cannot send one) goes without, and its
/// caller checks the Origin instead.
pub async fn session_principal(
    state: &AppState,
    headers: &HeaderMap,
    csrf: bool,
) -> Option<Result<Principal, Response>> {
    let id = sessions::cookie(headers, SESSION_COOKIE)?;
    Some(
        match sessions::authenticate(&state.pool, &id, state.config.session_idle_timeout).await {
            Ok(Ok(s)) if !csrf || sessions::csrf_ok(headers, &s.csrf_token) => Ok(s.principal),
            Ok(Ok(_)) => Err(error_response(
                StatusCode::FORBIDDEN,
                "CSRF_TOKEN_INVALID",
                "a request authenticated by the session cookie must send the session's CSRF token in x-mosaic-csrf",
            )),
            Ok(Err(SessionRejection::Expired)) => Err(error_response(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "session expired; sign in again",
            )),
            Ok(Err(SessionRejection::Idle)) => Err(error_response(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "session ended after inactivity; sign in again",
            )),
            Ok(Err(SessionRejection::Unknown)) => Err(error_response(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "unknown or ended session; sign in again",
            )),
            Ok(Err(SessionRejection::Deactivated)) => Err(deactivated()),
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed");
                Err(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVICE_UNAVAILABLE",
                    "cannot check credentials right now",
                ))
            }
        },
    )
}
