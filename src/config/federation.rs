//! Peer protocol settings.

use std::path::PathBuf;
use std::time::Duration;

use super::networks::{IpNet, parse_networks};
use super::setting::settings;

settings! {
    /// How this instance talks to its peers and what it accepts from them.
    pub struct FederationSettings {
        /// An extra CA to trust for peers (the demo's and the tests' own CA).
        ca_file: Option<PathBuf> = None; "federation.ca_file", "MOSAIC_PEER_CA", some(existing_file());
        /// Allow plain-HTTP peers (development only).
        allow_http: bool = false; "federation.allow_http", "MOSAIC_ALLOW_HTTP_PEERS", parsed();
        /// How long a federated request may take, end to end.
        deadline: Duration = Duration::from_secs(5);
            "federation.deadline_ms", "MOSAIC_FEDERATION_DEADLINE_MS", millis();
        /// The most instances a request may have passed through on arrival.
        hop_limit: u32 = 3; "federation.hop_limit", "MOSAIC_HOP_LIMIT", range(1, 16);
        /// Lifetime of a signed request (expires - created), seconds.
        request_lifetime_s: i64 = 60;
            "federation.request_lifetime_s", "MOSAIC_REQUEST_LIFETIME_S", range(1, 3600);
        /// Allowed clock difference between instances, seconds.
        clock_skew_s: i64 = 30; "federation.clock_skew_s", "MOSAIC_CLOCK_SKEW_S", range(0, 600);
        /// How long a rotated-away key keeps verifying.
        key_grace: Duration = Duration::from_secs(7 * 24 * 3600);
            "federation.key_grace_s", "MOSAIC_KEY_GRACE_S", seconds(0, 365 * 24 * 3600);
        /// How often a receiver re-reads a peer's identity document (its keys).
        key_refresh: Duration = Duration::from_secs(300);
            "federation.key_refresh_s", "MOSAIC_KEY_REFRESH_S", seconds(0, 24 * 3600);
        /// The largest answer read from a peer; more is cut (PEER_BAD_RESPONSE).
        max_answer_bytes: usize = 8 * 1024 * 1024;
            "federation.max_answer_bytes", "MOSAIC_MAX_ANSWER_BYTES", range(64 * 1024, 1024 * 1024 * 1024);
        /// Nonces remembered per peer within one request window; beyond it the
        /// peer's requests are refused until older ones expire.
        nonces_per_peer: usize = 10_000;
            "federation.nonces_per_peer", "MOSAIC_NONCES_PER_PEER", range(1, 1_000_000);
        /// Non-public networks peers may be reached at (loopback, private,
        /// link-local, ...); empty: public addresses only.
        allowed_peer_networks: Vec<IpNet> = Vec::new();
            "federation.allowed_peer_networks", "MOSAIC_ALLOWED_PEER_NETWORKS", parse_networks;
        /// CONNECT requests accepted per source address and minute.
        connects_per_minute: usize = 10;
            "federation.connects_per_minute", "MOSAIC_CONNECTS_PER_MINUTE", range(1, 100_000);
        /// A peer's requests (QUERY, COMMAND) per second, refilling its bucket,
        /// unless its grant sets its own (shared by the replicas); 0: no limit.
        rate_limit_per_second: f64 = 200.0;
            "federation.rate_limit_per_second", "MOSAIC_PEER_RATE_LIMIT_PER_SECOND", per_second;
        /// How many requests a peer may make at once beyond that rate.
        rate_limit_burst: u32 = 400;
            "federation.rate_limit_burst", "MOSAIC_PEER_RATE_LIMIT_BURST", range(1, 1_000_000);
        /// Peer requests the audit holds in memory until written; beyond, new
        /// entries are dropped (counted). 0: no audit.
        audit_queue: usize = 10_000;
            "federation.audit_queue", "MOSAIC_FEDERATION_AUDIT_QUEUE", range(0, 1_000_000);
        /// Days the request audit keeps a row.
        audit_retention_days: u32 = 90;
            "federation.audit_retention_days", "MOSAIC_FEDERATION_AUDIT_RETENTION_DAYS", range(1, 36_500);
        /// Days a domain event is kept: in the outbox (sooner once every
        /// subscriber acknowledged it) and as received from peers.
        events_retention_days: u32 = 7;
            "federation.events_retention_days", "MOSAIC_EVENTS_RETENTION_DAYS", range(1, 3_650);
        /// The most peers waiting for approval; further new CONNECTs are refused.
        max_pending_peers: i64 = 100;
            "federation.max_pending_peers", "MOSAIC_MAX_PENDING_PEERS", range(0, 1_000_000);
        /// The most signed requests to peers one request may cause.
        max_subrequests: usize = 64;
            "federation.max_subrequests", "MOSAIC_MAX_SUBREQUESTS", range(1, 100_000);
        /// The most of them in flight at once.
        max_parallel_subrequests: usize = 16;
            "federation.max_parallel_subrequests", "MOSAIC_MAX_PARALLEL_SUBREQUESTS", range(1, 1_000);
        /// The window a peer's circuit breaker counts failures over.
        breaker_window: Duration = Duration::from_secs(30);
            "federation.breaker_window_ms", "MOSAIC_BREAKER_WINDOW_MS", millis();
        /// Requests that must have ended within the window before it may open.
        breaker_min_requests: u32 = 10;
            "federation.breaker_min_requests", "MOSAIC_BREAKER_MIN_REQUESTS", range(1, 1_000_000);
        /// The share of failures (percent) within the window that opens it.
        breaker_failure_percent: u32 = 50;
            "federation.breaker_failure_percent", "MOSAIC_BREAKER_FAILURE_PERCENT", range(1, 100);
        /// How long an open breaker refuses before it lets a probe through.
        breaker_cooldown: Duration = Duration::from_secs(10);
            "federation.breaker_cooldown_ms", "MOSAIC_BREAKER_COOLDOWN_MS", millis();
        /// Probes a half-open breaker lets through at once.
        breaker_probes: u32 = 1; "federation.breaker_probes", "MOSAIC_BREAKER_PROBES", range(1, 100);
        /// Retries of reads allowed, as a percent of the requests to peers in
        /// the last 10 s, on top of `retry_budget_floor`.
        retry_budget_percent: u32 = 10;
            "federation.retry_budget_percent", "MOSAIC_RETRY_BUDGET_PERCENT", range(0, 100);
        /// Retries of reads always allowed within 10 s.
        retry_budget_floor: u32 = 3;
            "federation.retry_budget_floor", "MOSAIC_RETRY_BUDGET_FLOOR", range(0, 10_000);
        /// Peers (names or instance ids) whose failure fails the whole query
        /// (REQUIRED_PEER_FAILED, data null).
        required_peers: Vec<String> = Vec::new();
            "federation.required_peers", "MOSAIC_REQUIRED_PEERS", list();
    }
}

/// Requests per second: 0 (no limit), or a number from 0.001 to a million.
fn per_second(value: &str) -> Result<f64, String> {
    let v: f64 = super::setting::parsed()(value)?;
    if v != 0.0 && !(0.001..=1_000_000.0).contains(&v) {
        return Err(format!("{value} is neither 0 nor within 0.001..=1000000"));
    }
    Ok(v)
}
