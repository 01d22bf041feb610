//! What operators call: readiness, metrics, and the per-route request metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppState, error_response};
use crate::config::Config;
use crate::metrics::{HttpLabels, RouteLabels};

pub async fn track_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
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

/// 503 once shutdown has begun (a load balancer stops sending requests
/// here), and while the database does not answer.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.lifecycle.stopping() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool).await {
        Ok(_) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "database not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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
