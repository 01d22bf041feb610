//! Prometheus metrics of the requests this instance sends to its peers
//! (`mosaic_federation_*`). Labels are bounded: `peer` is a peer's name
//! (peers are bounded by the registry), `code` one of the client's fixed
//! error codes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub peer: String,
    pub code: &'static str,
}

/// Families are shared handles: the registry renders what the client counts.
#[derive(Clone)]
pub struct FederationMetrics {
    pub requests: Family<PeerLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub latency: Family<PeerLabels, Histogram>,
    pub breaker_state: Family<PeerLabels, Gauge>,
    pub retries: Family<PeerLabels, Counter>,
    pub rate_limited: Family<PeerLabels, Counter>,
    pub received_bytes: Family<PeerLabels, Counter>,
    /// Domain events a subscribed peer acknowledged (`outbox.rs`).
    pub events_delivered: Family<PeerLabels, Counter>,
    /// Outbox ids a subscribed peer has not acknowledged yet.
    pub outbox_pending: Family<PeerLabels, Gauge>,
    /// Domain events received from a peer and recorded (duplicates not counted).
    pub events_received: Family<PeerLabels, Counter>,
}

impl Default for FederationMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            failures: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 14))),
            breaker_state: Family::default(),
            retries: Family::default(),
            rate_limited: Family::default(),
            received_bytes: Family::default(),
            events_delivered: Family::default(),
            outbox_pending: Family::default(),
            events_received: Family::default(),
        }
    }
}

impl FederationMetrics {
    /// Adds the families to `registry` (prefixed `mosaic_`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "federation_requests",
            "Signed requests sent to peers (each attempt)",
            self.requests.clone(),
        );
        registry.register(
            "federation_failures",
            "Requests to peers that failed, by error code",
            self.failures.clone(),
        );
        registry.register(
            "federation_request_duration_seconds",
            "Latency of requests to peers (each attempt)",
            self.latency.clone(),
        );
        registry.register(
            "federation_breaker_state",
            "Circuit breaker per peer: 0 closed, 1 half-open, 2 open",
            self.breaker_state.clone(),
        );
        registry.register(
            "federation_retries",
            "Reads sent to peers again after a transient failure",
            self.retries.clone(),
        );
        registry.register(
            "federation_rate_limited",
            "Rate-limit refusals (429) received from peers",
            self.rate_limited.clone(),
        );
        registry.register(
            "federation_received_bytes",
            "Bytes of answers read from peers",
            self.received_bytes.clone(),
        );
        registry.register(
            "federation_events_delivered",
            "Domain events delivered to a subscribed peer and acknowledged by it",
            self.events_delivered.clone(),
        );
        registry.register(
            "federation_outbox_pending",
            "Outbox ids a subscribed peer has not acknowledged (its backlog)",
            self.outbox_pending.clone(),
        );
        registry.register(
            "federation_events_received",
            "Domain events received from a peer and recorded once",
            self.events_received.clone(),
        );
    }
}
