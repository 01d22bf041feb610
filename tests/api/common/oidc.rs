//! A real OpenID provider for the sign-in tests (tests/sso.rs, tests/browser.rs):
//! the npm package `oidc-provider` (tests/oidc/server.js, installed by
//! scripts/oidc-test-env) with an Authentik-style issuer path and Authentik's
//! claims, started on a free loopback port.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mosaic::config::{GroupRole, OidcSettings, Secret};
use reqwest::cookie::Jar;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "mosaic";
pub const CLIENT_SECRET: &str = "mosaic-test-client-secret";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Provider {
    child: tokio::process::Child,
    pub base: String,
    pub issuer: String,
}

impl Provider {
    pub async fn start(redirect_uri: &str) -> Self {
        let port = free_port();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc");
        assert!(
            std::path::Path::new(dir).join("node_modules/oidc-provider").is_dir(),
            "run scripts/oidc-test-env first (installs tests/oidc)"
        );
        let child = tokio::process::Command::new("node")
            .arg("server.js")
            .current_dir(dir)
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env("OIDC_REDIRECT_URI", redirect_uri)
            .env("OIDC_USER", user(&["staff"]).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts tests/oidc/server.js");
        let base = format!("http://127.0.0.1:{port}");
        let issuer = format!("{base}/application/o/mosaic/");
        let discovery = format!("{issuer}.well-known/openid-configuration");
        let client = plain_client(Policy::none(), None);
        for _ in 0..100 {
            if let Ok(r) = client.get(&discovery).send().await
                && r.status().is_success()
            {
                return Self { child, base, issuer };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the OpenID provider did not serve its discovery document within 10 s");
    }

    pub async fn control(&self, path: &str, body: Value) {
        let r = plain_client(Policy::none(), None)
            .post(format!("{}/__test/{path}", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "control {path}");
    }

    /// A back-channel logout token signed with the provider's key (see
    /// `logoutToken` in tests/oidc/server.js): `{sub, sid, mode}`.
    pub async fn logout_token(&self, body: Value) -> String {
        let r = plain_client(Policy::none(), None)
            .post(format!("{}/__test/logout-token", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "control logout-token");
        r.text().await.unwrap()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The provider's user: Authentik's claims for alice@example.com in `groups`.
pub fn user(groups: &[&str]) -> Value {
    json!({
        "sub": "authentik-user-1",
        "email": "alice@example.com",
        "email_verified": true,
        "preferred_username": "alice",
        "name": "Alice",
        "groups": groups,
    })
}

/// The instance's `oidc.*` settings for the provider at `issuer_url`.
pub fn settings(issuer_url: String, group_roles: Vec<GroupRole>, discovery_refresh: Duration) -> OidcSettings {
    OidcSettings {
        issuer_url,
        client_id: CLIENT_ID.into(),
        client_secret: Secret(CLIENT_SECRET.into()),
        redirect_url: None,
        group_roles,
        discovery_refresh,
    }
}

/// A plain-HTTP client (no proxy), with the given redirect policy and cookie store.
pub fn plain_client(policy: Policy, jar: Option<Arc<Jar>>) -> reqwest::Client {
    mosaic::federation::tls::install_crypto_provider();
    let mut b = reqwest::Client::builder().redirect(policy).no_proxy();
    if let Some(jar) = jar {
        b = b.cookie_provider(jar);
    }
    b.build().unwrap()
}
