//! The HTTP application: router, shared state, and the startup code that the
//! binary and the tests both use.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use crate::auth::Principal;
use crate::auth::tokens::{self, TokenRejection};
use crate::config::Config;
use crate::db::{self, Database, RequestDb, Scope};
use crate::federation::{Federation, inbound, protocol};
use crate::graphql::federated::Hop;
use crate::graphql::{self, Caller, InstanceInfo, MosaicSchema, RequestContext};
use crate::instance::Instance;
use crate::metrics::{CodeLabels, HttpLabels, Metrics, RouteLabels};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub schema: MosaicSchema,
    pub config: Arc<Config>,
    pub instance_id: Uuid,
    pub instance: Arc<InstanceInfo>,
    pub metrics: Arc<Metrics>,
    pub federation: Arc<Federation>,
    /// Single sign-on, when `oidc.issuer_url` is configured.
    pub sso: Option<Arc<crate::auth::oidc::Sso>>,
    /// Per-user agent containers; a Docker engine that is down fails only their operations.
    pub agents: Arc<crate::containers::AgentService>,
    /// Password guesses at `/auth/breakglass`, per address.
    pub breakglass_throttle: Arc<crate::auth::throttle::LoginThrottle>,
    /// Signs the pagination cursors this instance gives out.
    pub cursor_key: Arc<graphql::pagination::CursorKey>,
    /// Live subscriptions: the change listener, per-user limits, shutdown.
    pub live: Arc<crate::live::Live>,
}

/// A built instance, bound to its address, not yet serving.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    db: Database,
    pub state: AppState,
}

impl Application {
    /// Binds the listener (port 0 picks a free one), opens the database
    /// (embedded or `DATABASE_URL`), migrates and assembles the router. The
    /// port is bound first so a port in use starts no database, and a failure
    /// after the database is open stops the embedded cluster again.
    pub async fn build(config: Config) -> Result<Self> {
        crate::federation::tls::install_crypto_provider();
        let secret = config.secret(true)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
        let db = Database::open(&config).await?.owning_cluster();
        match Self::assemble(config, &secret, &listener, &db).await {
            Ok(state) => Ok(Self {
                router: router(state.clone()),
                listener,
                db,
                state,
            }),
            Err(e) => {
                if let Err(stop) = db.shutdown().await {
                    tracing::warn!(error = %stop, "stopping the database after a failed start");
                }
                Err(e)
            }
        }
    }

    async fn assemble(
        config: Config,
        secret: &crate::secrets::Secret,
        listener: &tokio::net::TcpListener,
        db: &Database,
    ) -> Result<AppState> {
        let me = load_instance(&config, db, config.base_url(listener.local_addr()?)).await?;
        let (instance_id, name, base_url) = (me.id, me.name.clone(), me.base_url.clone());
        let federation = Federation::open(&config, db, secret, &me).await?;
        let sso = match &config.oidc {
            Some(settings) => {
                let http = crate::federation::tls::http_client(config.federation.ca_file.as_deref())?;
                Some(Arc::new(
                    crate::auth::oidc::Sso::start(settings.clone(), &base_url, http, secret).await?,
                ))
            }
            None => None,
        };
        let agents =
            crate::containers::AgentService::start(&config.agents, db.app.clone(), instance_id, secret).await?;
        let live = crate::live::Live::start(db.listener_pool(), &config.limits).await?;
        Ok(AppState {
            live,
            agents,
            pool: db.app.clone(),
            schema: graphql::build_schema(&config.limits),
            instance_id,
            instance: Arc::new(InstanceInfo {
                id: instance_id.to_string(),
                name,
            }),
            metrics: Arc::new(Metrics::default()),
            federation: Arc::new(federation),
            sso,
            breakglass_throttle: Arc::default(),
            cursor_key: Arc::new(graphql::pagination::CursorKey::new(secret)),
            config: Arc::new(config),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// A superuser URL for this instance's database (demo seeding, tests).
    pub fn database_url(&self) -> String {
        self.db.admin_url()
    }

    /// The URL peers and clients reach this instance at.
    pub fn base_url(&self) -> &str {
        &self.state.federation.base_url
    }

    /// Serves (HTTPS when TLS is configured) until `shutdown` completes, then
    /// drains, closes the pool and stops the embedded cluster if this process
    /// started it.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        tracing::info!(url = %self.base_url(), instance = %self.state.instance.name, "serving");
        let tls = match &self.state.config.tls {
            Some(files) => Some(crate::federation::tls::server_config(
                &files.cert_file,
                &files.key_file,
            )?),
            None => None,
        };
        let limits = self.state.config.limits.clone();
        let live = self.state.live.clone();
        // Subscriptions end as shutdown begins, so their connections can drain.
        let shutdown = {
            let live = live.clone();
            async move {
                shutdown.await;
                live.close();
            }
        };
        let served = crate::server::serve(self.listener, self.router, tls, limits, shutdown)
            .await
            .context("serving HTTP");
        live.close();
        live.stopped().await;
        let stopped = self.db.shutdown().await;
        served.and(stopped)
    }
}

/// Reads (on first start, creates) this instance's identity.
pub async fn load_instance(config: &Config, db: &Database, base_url: String) -> Result<Instance> {
    let (id, name) = db::instance_identity(db, &config.instance_name).await?;
    Ok(Instance {
        id,
        name,
        base_url,
        schema_hash: graphql::schema_hash(),
    })
}

pub fn router(state: AppState) -> Router {
    let timeout = state.config.limits.request_timeout;
    Router::new()
        .route(
            "/graphql",
            get(crate::http::graphql::get)
                .post(crate::http::graphql::post)
                .fallback(crate::http::graphql::other_method),
        )
        .route("/graphql/ide/{file}", get(crate::ide::asset))
        .route("/auth/login", get(crate::auth::routes::login))
        .route("/auth/callback", get(crate::auth::routes::callback))
        .route("/auth/logout", post(crate::auth::routes::logout))
        .route("/auth/session", get(crate::auth::routes::session))
        .route("/auth/breakglass", post(crate::auth::routes::breakglass))
        .route(
            "/auth/backchannel-logout",
            post(crate::auth::routes::backchannel_logout),
        )
        .route("/agent", axum::routing::any(agent_proxy))
        .route("/agent/", axum::routing::any(agent_proxy))
        .route("/agent/{*path}", axum::routing::any(agent_proxy))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(protocol::WELL_KNOWN_PATH, get(inbound::well_known))
        .route(protocol::CONNECT_PATH, post(inbound::connect))
        .route(protocol::QUERY_PATH, post(inbound::query))
        .route(protocol::COMMAND_PATH, post(inbound::command))
        .route(protocol::EVENT_PATH, post(inbound::event))
        .route(protocol::DISCONNECT_PATH, post(inbound::disconnect))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), track_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout)),
        )
        .with_state(state)
}

async fn track_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.http_latency
        .get_or_create(&RouteLabels { route: route.clone() })
        .observe(start.elapsed().as_secs_f64());
    m.http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn readyz(State(state): State<AppState>) -> Response {
    match sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool).await {
        Ok(_) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "database not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = metrics_refusal(&state.config, &headers) {
        return refused;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&state.pool),
    )
        .into_response()
}

/// `/metrics` needs `metrics.token` as a Bearer token when one is set
/// (compared in constant time); without one it answers only when the
/// instance listens on a loopback address.
fn metrics_refusal(config: &Config, headers: &HeaderMap) -> Option<Response> {
    use subtle::ConstantTimeEq;
    match &config.metrics_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            (!bool::from(given.as_bytes().ct_eq(token.0.as_bytes()))).then(|| {
                error_response(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHENTICATED",
                    "metrics need Authorization: Bearer <metrics.token>",
                )
            })
        }
        None if config.listen.ip().is_loopback() => None,
        None => Some(error_response(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "metrics are served on a non-loopback address only with metrics.token set",
        )),
    }
}

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

pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, Response> {
    let unauthenticated = |m: &str| error_response(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", m);
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        // A browser session (cookie + CSRF header) is the alternative to a Bearer token.
        if let Some(result) = crate::auth::routes::cookie_principal(state, headers).await {
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
    match tokens::authenticate(&state.pool, token.trim()).await {
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

/// `ANY /agent/*path`: the caller's own agent container, started on demand.
async fn agent_proxy(State(state): State<AppState>, req: Request) -> Response {
    let principal = match authenticate(&state, req.headers()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    crate::containers::proxy::forward(&state.agents, &principal, req, state.config.limits.max_body_bytes).await
}

/// Whether the operation the request runs is a mutation.
fn is_mutation(request: &async_graphql::Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let ty = match (&doc.operations, &request.operation_name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name.as_str()).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) => ops.values().next().map(|op| op.node.ty),
    };
    ty == Some(OperationType::Mutation)
}

/// The routing state of a request a user of this instance starts here.
pub fn user_hop(state: &AppState, principal: &Principal) -> Hop {
    Hop::origin(
        state.config.federation.hop_limit,
        state.config.federation.deadline,
        Some(protocol::Actor {
            user: graphql::ids::GlobalId::new(graphql::ids::Kind::User, state.instance_id, principal.user_id)
                .to_id()
                .to_string(),
            email: principal.email_verified.then(|| principal.email.clone()),
        }),
    )
}

/// What the resolvers of one request see.
pub fn request_context(state: &AppState, db: Arc<RequestDb>, caller: Caller, hop: Hop) -> RequestContext {
    RequestContext {
        db,
        caller,
        instance_id: state.instance_id,
        instance: state.instance.clone(),
        max_page_size: state.config.limits.max_page_size,
        federation: state.federation.clone(),
        hop,
        report: Arc::default(),
        subrequests: Arc::new(graphql::federated::Subrequests::new(
            state.federation.settings.max_subrequests,
            state.federation.settings.max_parallel_subrequests,
        )),
        cursor_key: state.cursor_key.clone(),
    }
}

/// Runs one GraphQL request for a caller: one transaction with the caller's
/// scope, committed only if nothing failed, with the federation report added.
///
/// The request runs to its end even when its client goes away (a client
/// closing its connection cancels the handler): cancelled between sending
/// BEGIN and its answer, it would hand its connection back to the pool
/// inside a transaction. The deadline and statement timeout bound it.
pub async fn execute(
    state: &AppState,
    caller: Caller,
    scope: Scope,
    hop: Hop,
    request: async_graphql::Request,
) -> Result<async_graphql::Response, Response> {
    let state = state.clone();
    match tokio::spawn(async move { execute_to_the_end(&state, caller, scope, hop, request).await }).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "a request's execution panicked");
            Err(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                "the request failed",
            ))
        }
    }
}

async fn execute_to_the_end(
    state: &AppState,
    caller: Caller,
    scope: Scope,
    hop: Hop,
    request: async_graphql::Request,
) -> Result<async_graphql::Response, Response> {
    let mutation = is_mutation(&request);
    let db = Arc::new(RequestDb::new(
        state.pool.clone(),
        scope,
        state.config.statement_timeout,
        !mutation,
    ));
    let context = request_context(state, db.clone(), caller, hop);
    let report = context.report.clone();
    let mut response = state.schema.execute(request.data(context)).await;
    // All or nothing: any error rolls back every write of the request, and a
    // rolled-back mutation returns no data (it would name rows that do not exist).
    let finished = if response.errors.is_empty() {
        db.commit().await
    } else {
        if mutation {
            response.data = async_graphql::Value::Null;
        }
        db.rollback().await
    };
    if let Err(e) = finished {
        tracing::error!(error = %e, "finishing the request transaction failed");
        return Err(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            "could not commit",
        ));
    }
    // Errors raised by async-graphql itself at run time carry no code: an
    // undefined variable is a validation failure, the rest are input coercion.
    response.errors = std::mem::take(&mut response.errors)
        .into_iter()
        .map(|e| {
            let code = if e.message.starts_with("Variable ") && e.message.ends_with(" is not defined.") {
                graphql::limits::VALIDATION_FAILED
            } else {
                "BAD_USER_INPUT"
            };
            graphql::limits::with_code(e, code)
        })
        .collect();
    let report = report.lock().expect("report lock");
    response.errors.extend(report.errors());
    if let Some(federation) = report.extension() {
        response.extensions.insert(
            "federation".into(),
            async_graphql::Value::from_json(federation).expect("JSON converts"),
        );
    }
    for error in &response.errors {
        let code = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .map(|v| v.to_string().trim_matches('"').to_string())
            .unwrap_or_default();
        state.metrics.graphql_errors.get_or_create(&CodeLabels { code }).inc();
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_need_a_token_off_loopback() {
        let on = |listen: &str, token: Option<&str>| Config {
            listen: listen.parse().unwrap(),
            metrics_token: token.map(|t| crate::config::Secret(t.into())),
            ..Config::default()
        };
        let bearer = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
            h
        };
        let status = |r: Option<Response>| r.map(|r| r.status().as_u16());
        assert_eq!(
            status(metrics_refusal(&on("127.0.0.1:8080", None), &HeaderMap::new())),
            None
        );
        assert_eq!(
            status(metrics_refusal(&on("[::1]:8080", None), &HeaderMap::new())),
            None
        );
        assert_eq!(
            status(metrics_refusal(&on("0.0.0.0:8080", None), &HeaderMap::new())),
            Some(403)
        );
        assert_eq!(
            status(metrics_refusal(&on("10.0.0.5:8080", None), &bearer("x"))),
            Some(403)
        );
        let token = "a-metrics-token-of-some-length";
        for listen in ["127.0.0.1:8080", "0.0.0.0:8080"] {
            let config = on(listen, Some(token));
            assert_eq!(status(metrics_refusal(&config, &HeaderMap::new())), Some(401));
            assert_eq!(status(metrics_refusal(&config, &bearer("wrong"))), Some(401));
            assert_eq!(status(metrics_refusal(&config, &bearer(token))), None);
        }
    }
}
