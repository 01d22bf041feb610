//! OpenID Connect login (authorization code + PKCE, state and nonce) against
//! one provider, Authentik-style (`https://HOST/application/o/SLUG/`).
//!
//! The provider's discovery document and JWKS are fetched at start (a
//! provider that is down then does not stop the instance) and again when a
//! login starts with a copy older than `oidc.discovery_refresh_s`. So a login
//! started while the provider is down fails here with a clear error instead of
//! sending the browser to a provider that does not answer, and changes to the
//! provider's configuration are picked up without a restart. The callback uses
//! the cached copy (a provider gone by then fails the token request, which is
//! reported the same way). The JWKS is fetched again when an ID token names a
//! key id it does not hold, so key rotation at the provider logs nobody out.
//! HTTP goes through one reqwest client with redirects off.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, EndSessionUrl, IssuerUrl,
    JsonWebKeySet, LogoutRequest, Nonce, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadataWithLogout, RedirectUrl,
    RequestTokenError, Scope, SignatureVerificationError,
};

use uuid::Uuid;

use super::logout_token::{self, LogoutClaims};
use crate::config::OidcSettings;
use crate::secrets::{Sealer, Secret};

/// Largest provider response read (discovery, JWKS, tokens).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a login was refused: an HTTP status, a stable code and a message for the page.
#[derive(Debug, Clone)]
pub struct LoginError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl LoginError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "OIDC_PROVIDER_UNAVAILABLE", message)
    }

    fn bad_token(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
}

/// The HTTP adapter's error (openidconnect wants a `std::error::Error`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// Sends one request for openidconnect through the shared reqwest client.
async fn send(
    http: reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let mut response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .timeout(PROVIDER_TIMEOUT)
        .send()
        .await
        .map_err(|e| HttpError(format!("{e}")))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| HttpError(format!("{e}")))? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(HttpError("provider response too large".into()));
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut out = openidconnect::http::Response::new(bytes);
    *out.status_mut() = response.status();
    *out.headers_mut() = response.headers().clone();
    Ok(out)
}

/// A login just started: where to send the browser, and what to keep until the callback.
pub struct LoginStart {
    pub authorize_url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// The verified claims of an ID token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    /// The provider's session id, which a back-channel logout may name.
    pub sid: Option<String>,
    /// The raw ID token, kept as `id_token_hint` for logout.
    pub id_token: String,
}

type Metadata = ProviderMetadataWithLogout;

/// The provider's metadata (with its JWKS) and when it was discovered.
struct Cached {
    metadata: Arc<Metadata>,
    discovered: Instant,
}

pub struct Sso {
    pub settings: OidcSettings,
    redirect_url: RedirectUrl,
    http: reqwest::Client,
    cache: RwLock<Option<Cached>>,
    /// Seals the ID tokens kept with sessions (they carry the user's claims).
    id_tokens: Sealer,
    /// When the JWKS was last fetched for an unknown key id, so unauthenticated
    /// back-channel requests cannot make us fetch it for every request.
    keys_refreshed: std::sync::Mutex<Option<Instant>>,
}

/// Least time between key fetches caused by back-channel logout tokens.
const LOGOUT_KEY_REFRESH: Duration = Duration::from_secs(10);

const ID_TOKEN_PURPOSE: &str = "session-id-token";

impl Sso {
    /// Fetches discovery and JWKS; a provider that cannot be reached is logged, not fatal.
    pub async fn start(
        settings: OidcSettings,
        base_url: &str,
        http: reqwest::Client,
        secret: &Secret,
    ) -> anyhow::Result<Self> {
        let redirect = settings
            .redirect_url
            .clone()
            .unwrap_or_else(|| format!("{}/auth/callback", base_url.trim_end_matches('/')));
        let redirect_url =
            RedirectUrl::new(redirect).map_err(|e| anyhow::anyhow!("oidc.redirect_url: not a URL: {e}"))?;
        IssuerUrl::new(settings.issuer_url.clone()).map_err(|e| anyhow::anyhow!("oidc.issuer_url: not a URL: {e}"))?;
        let sso = Self {
            settings,
            redirect_url,
            http,
            cache: RwLock::new(None),
            id_tokens: Sealer::new(secret, ID_TOKEN_PURPOSE),
            keys_refreshed: std::sync::Mutex::new(None),
        };
        if let Err(e) = sso.discover().await {
            tracing::warn!(issuer = %sso.settings.issuer_url, error = %e.message,
                "OpenID provider unreachable at start; logins will retry discovery");
        }
        Ok(sso)
    }

    fn cached(&self) -> Option<Arc<Metadata>> {
        let cache = self.cache.read().expect("metadata lock");
        cache.as_ref().map(|c| c.metadata.clone())
    }

    /// The cached metadata if it is younger than `discovery_refresh`.
    fn fresh(&self) -> Option<Arc<Metadata>> {
        let cache = self.cache.read().expect("metadata lock");
        cache
            .as_ref()
            .filter(|c| c.discovered.elapsed() < self.settings.discovery_refresh)
            .map(|c| c.metadata.clone())
    }

    async fn discover(&self) -> Result<Arc<Metadata>, LoginError> {
        let issuer = IssuerUrl::new(self.settings.issuer_url.clone())
            .map_err(|e| LoginError::unavailable(format!("issuer URL: {e}")))?;
        let http = self.http.clone();
        let client = move |r| send(http.clone(), r);
        let metadata = Metadata::discover_async(issuer, &client).await.map_err(|e| {
            LoginError::unavailable(format!(
                "the identity provider could not be reached ({}): {}",
                self.settings.issuer_url,
                error_chain(&e)
            ))
        })?;
        let metadata = Arc::new(metadata);
        *self.cache.write().expect("metadata lock") = Some(Cached {
            metadata: metadata.clone(),
            discovered: Instant::now(),
        });
        tracing::info!(issuer = %self.settings.issuer_url, keys = metadata.jwks().keys().len(), "OpenID provider discovered");
        Ok(metadata)
    }

    /// The cached metadata, whatever its age; discovered now if there is none yet.
    async fn metadata(&self) -> Result<Arc<Metadata>, LoginError> {
        match self.cached() {
            Some(m) => Ok(m),
            None => self.discover().await,
        }
    }

    /// Fetches the JWKS again (an ID token named a key we do not hold).
    async fn refresh_jwks(&self, metadata: &Arc<Metadata>) -> Result<Arc<Metadata>, LoginError> {
        let http = self.http.clone();
        let client = move |r| send(http.clone(), r);
        let jwks = JsonWebKeySet::fetch_async(metadata.jwks_uri(), &client)
            .await
            .map_err(|e| LoginError::unavailable(format!("cannot fetch the provider's keys: {}", error_chain(&e))))?;
        *self.keys_refreshed.lock().expect("keys lock") = Some(Instant::now());
        let fresh = Arc::new(metadata.as_ref().clone().set_jwks(jwks));
        // Only over the copy the keys were fetched for: a login that started
        // meanwhile may have cached a newer discovery, which stays.
        if let Some(c) = self.cache.write().expect("metadata lock").as_mut()
            && Arc::ptr_eq(&c.metadata, metadata)
        {
            c.metadata = fresh.clone();
        }
        tracing::info!(keys = fresh.jwks().keys().len(), "OpenID provider keys refreshed");
        Ok(fresh)
    }

    fn client(
        &self,
        metadata: &Metadata,
    ) -> openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.settings.client_secret.0.clone())),
        )
        .set_redirect_uri(self.redirect_url.clone())
    }

    /// Starts a login: PKCE (S256), a random state and a random nonce.
    /// Discovers the provider again when the cached copy is too old; if it
    /// cannot be reached, the login fails here rather than at the provider.
    pub async fn begin(&self) -> Result<LoginStart, LoginError> {
        let metadata = match self.fresh() {
            Some(m) => m,
            None => self.discover().await?,
        };
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client(&metadata)
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(LoginStart {
            authorize_url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Redeems the code (with the PKCE verifier) and checks the ID token:
    /// signature, issuer, audience, expiry and nonce.
    pub async fn finish(&self, code: &str, nonce: &str, pkce_verifier: &str) -> Result<Identity, LoginError> {
        let mut metadata = self.metadata().await?;
        let http = self.http.clone();
        let http_client = move |r| send(http.clone(), r);
        let exchange = self
            .client(&metadata)
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| LoginError::unavailable(format!("the provider offers no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&http_client)
            .await;
        let tokens = match exchange {
            Ok(t) => t,
            Err(RequestTokenError::ServerResponse(e)) => {
                return Err(LoginError::new(
                    StatusCode::BAD_REQUEST,
                    "OIDC_CODE_REJECTED",
                    format!(
                        "the identity provider refused the authorization code ({}); it may have been used already",
                        e.error()
                    ),
                ));
            }
            Err(RequestTokenError::Request(e)) => {
                return Err(LoginError::unavailable(format!(
                    "the identity provider could not be reached: {}",
                    error_chain(&e)
                )));
            }
            Err(e) => {
                return Err(LoginError::unavailable(format!(
                    "the identity provider answered the token request wrongly: {}",
                    error_chain(&e)
                )));
            }
        };
        let Some(id_token) = tokens.extra_fields().id_token() else {
            return Err(LoginError::bad_token(
                "OIDC_INVALID_TOKEN",
                "the provider returned no ID token",
            ));
        };
        let nonce = Nonce::new(nonce.to_string());
        let mut refreshed = false;
        let claims = loop {
            let client = self.client(&metadata);
            match id_token.claims(&client.id_token_verifier(), &nonce) {
                Ok(c) => break c.clone(),
                Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey))
                    if !refreshed =>
                {
                    refreshed = true;
                    metadata = self.refresh_jwks(&metadata).await?;
                }
                Err(e) => return Err(token_error(e)),
            }
        };
        let raw = id_token.to_string();
        let payload = payload_claims(&raw);
        let email = claims
            .email()
            .map(|e| e.as_str().to_string())
            .ok_or_else(|| LoginError::bad_token("OIDC_MISSING_CLAIM", "the ID token has no email claim"))?;
        Ok(Identity {
            issuer: claims.issuer().as_str().to_string(),
            subject: claims.subject().as_str().to_string(),
            email,
            email_verified: claims.email_verified().unwrap_or(false),
            preferred_username: claims.preferred_username().map(|u| u.as_str().to_string()),
            name: claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string()),
            groups: groups_claim(&payload),
            sid: payload["sid"].as_str().map(String::from),
            id_token: raw,
        })
    }

    /// Checks a back-channel logout token (see `logout_token`) against the
    /// provider's keys, fetched again once if it names one we do not hold.
    /// Returns the issuer with the claims.
    pub async fn verify_logout_token(&self, token: &str) -> Result<(String, LogoutClaims), LoginError> {
        let mut metadata = self.metadata().await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut refreshed = false;
        loop {
            let issuer = metadata.issuer().as_str();
            match logout_token::verify(token, metadata.jwks().keys(), issuer, &self.settings.client_id, now) {
                Ok(claims) => return Ok((issuer.to_string(), claims)),
                Err(e) if e.wants_fresh_keys() && !refreshed && self.may_refresh_keys() => {
                    refreshed = true;
                    metadata = self.refresh_jwks(&metadata).await?;
                }
                Err(e) => {
                    return Err(LoginError::bad_token(
                        "OIDC_LOGOUT_TOKEN_INVALID",
                        format!("logout token refused: {e}"),
                    ));
                }
            }
        }
    }

    fn may_refresh_keys(&self) -> bool {
        self.keys_refreshed
            .lock()
            .expect("keys lock")
            .is_none_or(|at| at.elapsed() >= LOGOUT_KEY_REFRESH)
    }

    /// An ID token as stored with its user's session: sealed, bound to the user.
    pub fn seal_id_token(&self, user: Uuid, id_token: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.id_tokens.seal(id_token.as_bytes(), user.as_bytes()))
    }

    /// The ID token back from `seal_id_token`; `None` when it does not open
    /// (another secret key, or another user's), and logout goes on without a hint.
    pub fn open_id_token(&self, user: Uuid, stored: &str) -> Option<String> {
        let sealed = URL_SAFE_NO_PAD.decode(stored).ok()?;
        let plain = self.id_tokens.open(&sealed, user.as_bytes()).ok()?;
        String::from_utf8(plain).ok()
    }

    /// Where to send the browser to end the provider's session, when it offers that.
    pub fn end_session_url(&self, id_token: Option<&str>) -> Option<String> {
        let metadata = self.cached()?;
        let endpoint: EndSessionUrl = metadata.additional_metadata().end_session_endpoint.clone()?;
        let mut request = LogoutRequest::from(endpoint).set_client_id(ClientId::new(self.settings.client_id.clone()));
        if let Some(token) = id_token.and_then(|t| t.parse::<openidconnect::core::CoreIdToken>().ok()) {
            request = request.set_id_token_hint(&token);
        }
        Some(request.http_get_url().to_string())
    }
}

fn token_error(e: ClaimsVerificationError) -> LoginError {
    use ClaimsVerificationError as E;
    let (code, what) = match &e {
        E::Expired(_) => ("OIDC_TOKEN_EXPIRED", "the ID token has expired"),
        E::InvalidAudience(_) => ("OIDC_WRONG_AUDIENCE", "the ID token is meant for another client"),
        E::InvalidIssuer(_) => ("OIDC_WRONG_ISSUER", "the ID token comes from another issuer"),
        E::InvalidNonce(_) => ("OIDC_WRONG_NONCE", "the ID token does not answer this login (nonce)"),
        E::SignatureVerification(SignatureVerificationError::NoMatchingKey) => (
            "OIDC_UNKNOWN_KEY",
            "the ID token is signed by a key the provider does not publish",
        ),
        E::SignatureVerification(_) => ("OIDC_BAD_SIGNATURE", "the ID token's signature is not valid"),
        _ => ("OIDC_INVALID_TOKEN", "the ID token is not valid"),
    };
    tracing::warn!(code, error = %e, "ID token refused");
    LoginError::bad_token(code, format!("{what}: {e}"))
}

/// The (already verified) payload of a JWT, for the claims openidconnect
/// does not model (`groups`, `sid`); `Null` when it does not decode.
fn payload_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn groups_claim(payload: &serde_json::Value) -> Vec<String> {
    payload["groups"]
        .as_array()
        .map(|a| a.iter().filter_map(|g| g.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"1","groups":["a","b"],"sid":"s"}"#);
        let claims = payload_claims(&format!("h.{payload}.s"));
        assert_eq!(groups_claim(&claims), vec!["a", "b"]);
        assert_eq!(claims["sid"], "s");
        assert!(groups_claim(&payload_claims("garbage")).is_empty());
    }
}
