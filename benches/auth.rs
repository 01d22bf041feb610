//! What signing in and authenticating cost, against the real parts: one
//! instance (`Application::build`, as the binary starts it) on its own
//! PostgreSQL, and the real OpenID provider of the sign-in tests
//! (tests/oidc/server.js, installed by scripts/oidc-test-env).
//!
//! * token:      `{ me { id email } }` with `Authorization: Bearer` — the
//!   per-request cost of an API token (hash + lookup through the definer
//!   function) plus the query;
//! * session:    the same query with the session cookie and the
//!   `x-mosaic-csrf` header (session opened by a break-glass login) — the
//!   per-request cost of a browser session. The two are interleaved in one
//!   loop so that drift hits both alike; `session/token` is their ratio;
//! * breakglass: `POST /auth/breakglass` — argon2id verification, audit row
//!   and session creation, i.e. the fallback sign-in when the provider is down;
//! * sso:        a whole sign-in with a fresh cookie jar: GET /auth/login →
//!   provider → interaction (login, consent) → /auth/callback (code exchange,
//!   ID token check, user and group sync, session). Timed until the
//!   callback's answer sets the session cookie; the IDE page it redirects to
//!   is not part of signing in.
//!
//! Each case is warmed up first (untimed); medians, p90 and minima of one
//! run are printed, with ratios of medians. `AUTH_BENCH_RUNS` (default 500)
//! sets the query repetitions, `AUTH_BENCH_SIGNINS` (default 30) the sign-ins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mosaic::app::Application;
use mosaic::config::{Config, OidcSettings};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use sqlx::Connection;

#[path = "support/db.rs"]
mod db;
#[path = "support/stats.rs"]
mod stats;
use stats::{env_usize, summary};
#[allow(dead_code)] // the provider's test controls are not used here
#[path = "../tests/api/common/oidc.rs"]
mod oidc;

const QUERY: &str = "{ me { id email } }";
const ADMIN: &str = "root@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

/// Times `f` `runs` times after `warmup` untimed calls.
async fn time<F: AsyncFnMut()>(warmup: usize, runs: usize, mut f: F) -> Vec<Duration> {
    for _ in 0..warmup {
        f().await;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed());
    }
    samples
}

async fn run() {
    mosaic::federation::tls::install_crypto_provider();
    let runs = env_usize("AUTH_BENCH_RUNS", 500).max(1);
    let signins = env_usize("AUTH_BENCH_SIGNINS", 30).max(1);

    // The provider must know the instance's callback URL before the instance
    // starts (the instance reads the provider's discovery document at start).
    let port = oidc::free_port();
    let provider = oidc::Provider::start(&format!("http://127.0.0.1:{port}/auth/callback")).await;
    let database_url = db::fresh_database("bench_auth").await;
    let config = Config {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        database_url: Some(database_url.clone()),
        secret_key: Some(mosaic::secrets::Secret(
            "bench-secret-key-that-is-long-enough-0123456789".into(),
        )),
        oidc: Some(oidc::settings(
            provider.issuer.clone(),
            vec![],
            OidcSettings::DEFAULT_DISCOVERY_REFRESH,
        )),
        ..Config::default()
    };
    let app = Application::build(config).await.expect("instance builds");
    let base = app.base_url().to_string();
    tokio::spawn(app.run(std::future::pending()));

    let mut conn = sqlx::PgConnection::connect(&database_url).await.unwrap();
    mosaic::auth::users::create(&mut conn, "bench@example.com", None, false)
        .await
        .unwrap();
    let token = mosaic::auth::tokens::create(&mut conn, "bench@example.com", None)
        .await
        .unwrap();
    mosaic::auth::breakglass::create_admin(&mut conn, ADMIN, PASSWORD)
        .await
        .unwrap();

    let http = oidc::plain_client(Policy::none(), None);
    let graphql = format!("{base}/graphql");
    let breakglass_url = format!("{base}/auth/breakglass");
    let breakglass = async || {
        let r = http
            .post(&breakglass_url)
            .json(&json!({ "email": ADMIN, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "break-glass login");
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let csrf = r.json::<Value>().await.unwrap()["csrfToken"]
            .as_str()
            .unwrap()
            .to_string();
        (cookie, csrf)
    };
    let me = async |req: reqwest::RequestBuilder, email: &str| {
        let r = req.json(&json!({ "query": QUERY })).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["data"]["me"]["email"], email, "{body}");
    };

    // 1 and 2: token and session, interleaved.
    let (cookie, csrf) = breakglass().await;
    let (mut by_token, mut by_session) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let warmup = 50;
    for i in 0..warmup + runs {
        let t = Instant::now();
        me(http.post(&graphql).bearer_auth(&token), "bench@example.com").await;
        let token_time = t.elapsed();
        let t = Instant::now();
        let req = http
            .post(&graphql)
            .header("cookie", &cookie)
            .header("x-mosaic-csrf", &csrf);
        me(req, ADMIN).await;
        if i >= warmup {
            by_token.push(token_time);
            by_session.push(t.elapsed());
        }
    }

    // 3: break-glass sign-in.
    let by_breakglass = time(3, signins, async || {
        breakglass().await;
    })
    .await;

    // 4: the whole SSO round trip, a new browser (cookie jar) each time.
    let login_url = format!("{base}/auth/login");
    let app_url: reqwest::Url = base.parse().unwrap();
    let mut sso_samples = Vec::with_capacity(signins);
    for i in 0..3 + signins {
        let jar = Arc::new(Jar::default());
        let stop_after_callback = Policy::custom(|attempt| {
            if attempt.previous().last().is_some_and(|u| u.path() == "/auth/callback") {
                attempt.stop()
            } else if attempt.previous().len() > 10 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        });
        let browser = oidc::plain_client(stop_after_callback, Some(jar.clone()));
        let t = Instant::now();
        let r = browser.get(&login_url).send().await.unwrap();
        let elapsed = t.elapsed();
        assert_eq!(
            (r.status().as_u16(), r.url().path()),
            (303, "/auth/callback"),
            "the callback answers with a redirect"
        );
        let cookies = jar.cookies(&app_url).expect("cookies for the instance");
        assert!(
            cookies.to_str().unwrap().contains("mosaic_session="),
            "the session cookie is set"
        );
        if i >= 3 {
            sso_samples.push(elapsed);
        }
    }

    println!("auth bench: {runs} queries each (after {warmup} warm-up), {signins} sign-ins each (after 3)");
    let token = summary("auth/token", by_token);
    let session = summary("auth/session", by_session);
    let breakglass = summary("auth/breakglass", by_breakglass);
    let sso = summary("auth/sso", sso_samples);
    println!("auth/ratio      session/token = {:.2}", session / token);
    println!("auth/ratio      breakglass/token = {:.1}", breakglass / token);
    println!("auth/ratio      sso/token = {:.1}", sso / token);
    println!("auth/ratio      sso/breakglass = {:.2}", sso / breakglass);
    provider.stop().await;
}
