//! Prometheus metrics: HTTP requests and latencies, GraphQL outcomes, the pool.
//! One registry per app, so several instances in one process stay apart.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::PgPool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Family<RouteLabels, Histogram>,
    pub graphql_errors: Family<CodeLabels, Counter>,
    /// Peer requests the request audit could not keep (its queue was full).
    pub federation_audit_dropped: Counter,
    pool_size: Gauge<u64, AtomicU64>,
    pool_idle: Gauge<u64, AtomicU64>,
}

impl Metrics {
    /// The app's metrics, with those of its requests to peers.
    pub fn new(federation: &crate::federation::metrics::FederationMetrics) -> Self {
        let mut registry = Registry::with_prefix("mosaic");
        federation.register(&mut registry);
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let graphql_errors = Family::<CodeLabels, Counter>::default();
        let federation_audit_dropped = Counter::default();
        let pool_size = Gauge::<u64, AtomicU64>::default();
        let pool_idle = Gauge::<u64, AtomicU64>::default();
        registry.register("http_requests", "HTTP requests served", http_requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_latency.clone(),
        );
        registry.register("graphql_errors", "GraphQL errors by code", graphql_errors.clone());
        registry.register(
            "federation_audit_dropped",
            "Peer requests the request audit dropped because its queue was full",
            federation_audit_dropped.clone(),
        );
        registry.register("db_pool_connections", "Open database connections", pool_size.clone());
        registry.register(
            "db_pool_idle_connections",
            "Idle database connections",
            pool_idle.clone(),
        );
        Self {
            registry,
            http_requests,
            http_latency,
            graphql_errors,
            federation_audit_dropped,
            pool_size,
            pool_idle,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition, with pool gauges read now.
    pub fn render(&self, pool: &PgPool) -> String {
        self.pool_size.set(u64::from(pool.size()));
        self.pool_idle.set(pool.num_idle() as u64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
