//! The outbound client: signing requests to peers, sending them and reading
//! their answers within a byte limit and the deadline, and fetching peers'
//! identity documents.

use std::time::{Duration, Instant};

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use rand::RngCore;
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use super::breaker::{Admission, Breaker, BreakerSettings, Outcome, State};
use super::document::{self, IdentityDocument, SignedDocument};
use super::metrics::{FailureLabels, PeerLabels};
use super::{Federation, PeerError, netguard, now_unix, protocol, retry, signing};

/// The code of a peer's 429: it limits our rate, it is not down.
pub const RATE_LIMITED: &str = "PEER_RATE_LIMITED";

fn breaker_settings(s: &crate::config::FederationSettings) -> BreakerSettings {
    BreakerSettings {
        window: s.breaker_window,
        min_requests: s.breaker_min_requests,
        failure_percent: s.breaker_failure_percent,
        cooldown: s.breaker_cooldown,
        probes: s.breaker_probes,
    }
}

impl Federation {
    /// The URL, parsed once for the check and the request; refused before
    /// connecting when its host is an address peers may not be reached at
    /// (names are checked by the client's resolver).
    fn reachable(&self, url: &str) -> Result<reqwest::Url, PeerError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| PeerError::new("PEER_UNAVAILABLE", format!("{url}: {e}")))?;
        netguard::check_url_host(&parsed, &self.settings.allowed_peer_networks)
            .map_err(|e| PeerError::new("PEER_UNAVAILABLE", e))?;
        Ok(parsed)
    }

    /// Fetches and verifies a peer's identity document: at most
    /// `MAX_DOCUMENT_BYTES`, within `federation.deadline`.
    pub async fn fetch_identity(&self, base_url: &str) -> Result<IdentityDocument, PeerError> {
        Ok(self.fetch_identity_dated(base_url).await?.0)
    }

    /// `fetch_identity`, with the time the peer's clock said (its HTTP
    /// `Date` header), for `mosaic doctor`.
    pub async fn fetch_identity_dated(
        &self,
        base_url: &str,
    ) -> Result<(IdentityDocument, Option<std::time::SystemTime>), PeerError> {
        let url = format!("{base_url}{}", protocol::WELL_KNOWN_PATH);
        let parsed = self.reachable(&url)?;
        let fetch = async {
            let response = self.http.get(parsed).send().await.map_err(|e| transport_error(&e))?;
            if !response.status().is_success() {
                return Err(PeerError::new(
                    "PEER_BAD_RESPONSE",
                    format!("{url} answered {}", response.status()),
                ));
            }
            let date = response
                .headers()
                .get(reqwest::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok());
            let bytes = read_capped(response, document::MAX_DOCUMENT_BYTES).await?;
            serde_json::from_slice::<SignedDocument>(&bytes)
                .map(|signed| (signed, date))
                .map_err(|e| PeerError::new("PEER_BAD_RESPONSE", format!("identity document is not valid: {e}")))
        };
        let (signed, date) = tokio::time::timeout(self.settings.deadline, fetch)
            .await
            .map_err(|_| PeerError::new("PEER_TIMEOUT", "identity document did not arrive in time"))??;
        document::check_bounds(&signed.document).map_err(|e| PeerError::new("PEER_BAD_RESPONSE", e))?;
        document::verify_document(&signed).map_err(|e| PeerError::new("PEER_BAD_RESPONSE", e))?;
        if signed.document.base_url.trim_end_matches('/') != base_url.trim_end_matches('/') {
            return Err(PeerError::new(
                "PEER_BAD_RESPONSE",
                format!("{url} claims base URL {}", signed.document.base_url),
            ));
        }
        Ok((signed.document, date))
    }

    /// Sends one signed request and returns the peer's answer, read as `A`. Requests
    /// for a peer's data (QUERY, COMMAND) pass its circuit breaker; a read
    /// that failed transiently is sent again, signed afresh, while the
    /// deadline leaves room and the retry budget allows (`retry.rs`).
    pub async fn send<T: Serialize, A: AnswerBody>(
        &self,
        peer_id: Uuid,
        base_url: &str,
        path: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<A, PeerError> {
        let peer = PeerLabels {
            peer: self.peer_label(peer_id),
        };
        let span = tracing::info_span!(
            crate::telemetry::PEER_CALL,
            otel.kind = "client",
            otel.name = verb(path),
            peer = %peer.peer,
            status = tracing::field::Empty,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let body = encode(body, crate::telemetry::traceparent(&span));
        let result = self
            .send_attempts(peer_id, base_url, path, &body, timeout, peer)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(_) => span.record("outcome", "ok"),
            Err(e) => span.record("outcome", e.code).record("otel.status_code", "error"),
        };
        result
    }

    async fn send_attempts<A: AnswerBody>(
        &self,
        peer_id: Uuid,
        base_url: &str,
        path: &str,
        body: &Bytes,
        timeout: Duration,
        peer: PeerLabels,
    ) -> Result<A, PeerError> {
        let started = Instant::now();
        let guarded = path == protocol::QUERY_PATH || path == protocol::COMMAND_PATH;
        let read = path == protocol::QUERY_PATH;
        if read {
            self.retry_budget
                .lock()
                .expect("budget lock")
                .request(self.opened.elapsed());
        }
        let mut attempt = 0;
        let mut breaker = None;
        let result = loop {
            let admitted = if guarded {
                match self.admit(peer_id, &peer) {
                    Ok(a) => Some(a),
                    Err(e) => break Err(e),
                }
            } else {
                None
            };
            let attempt_started = Instant::now();
            let remaining = timeout.saturating_sub(started.elapsed());
            let result = self.send_once(peer_id, base_url, path, body, remaining, &peer).await;
            breaker = self.count(peer_id, &peer, admitted, &result, attempt_started.elapsed());
            let e = match result {
                Ok(answer) => break Ok(answer),
                Err(e) => e,
            };
            attempt += 1;
            let wait = retry::wait_before(attempt, e.retry_after);
            if !read
                || !e.transient
                || attempt >= retry::MAX_ATTEMPTS
                || !retry::fits(wait, timeout.saturating_sub(started.elapsed()))
                || !self
                    .retry_budget
                    .lock()
                    .expect("budget lock")
                    .try_retry(self.opened.elapsed())
            {
                break Err(e);
            }
            self.metrics.retries.get_or_create(&peer).inc();
            tokio::time::sleep(wait).await;
        };
        // A breaker's refusal is not a contact.
        if result.as_ref().err().is_none_or(|e| e.breaker.is_none()) {
            let error = result.as_ref().err().map(|e| format!("{}: {}", e.code, e.message));
            let ms = started.elapsed().as_millis() as u64;
            self.stats.record(peer_id, ms, error, breaker.map(State::as_str));
        }
        result
    }

    /// The `peer` label: the peer's name, or its id when it has none yet.
    pub(super) fn peer_label(&self, peer_id: Uuid) -> String {
        self.peers
            .get(&())
            .and_then(|all| all.iter().find(|p| p.id == peer_id).map(|p| p.name.clone()))
            .unwrap_or_else(|| peer_id.to_string())
    }

    /// Shares open breakers with the other replicas (migration 0081): says
    /// which of this replica's are open and for how long, and opens those
    /// another replica opened, for what remains of their cooldown.
    pub async fn share_breakers(&self, pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
        let now = Instant::now();
        let (open, remaining_ms): (Vec<Uuid>, Vec<i64>) = self
            .breakers
            .lock()
            .expect("breaker lock")
            .iter()
            .filter_map(|(peer, b)| b.open_for(now).map(|d| (*peer, d.as_millis() as i64)))
            .unzip();
        let elsewhere: Vec<(Uuid, i64)> = sqlx::query_as("SELECT * FROM peer_breakers_share($1, $2)")
            .bind(open)
            .bind(remaining_ms)
            .fetch_all(pool)
            .await?;
        let now = Instant::now();
        let mut breakers = self.breakers.lock().expect("breaker lock");
        for (peer, ms) in elsewhere {
            breakers
                .entry(peer)
                .or_insert_with(|| Breaker::new(breaker_settings(&self.settings), now))
                .opened_elsewhere(now, Duration::from_millis(ms.max(0) as u64));
        }
        Ok(())
    }

    /// Asks the peer's breaker whether a request may go.
    fn admit(&self, peer_id: Uuid, peer: &PeerLabels) -> Result<Admission, PeerError> {
        let now = Instant::now();
        let mut breakers = self.breakers.lock().expect("breaker lock");
        let breaker = breakers
            .entry(peer_id)
            .or_insert_with(|| Breaker::new(breaker_settings(&self.settings), now));
        let admitted = breaker.admit(now);
        let state = breaker.state(now);
        drop(breakers);
        self.metrics.breaker_state.get_or_create(peer).set(state.gauge());
        match admitted {
            Admission::Refused { retry_in } => {
                self.metrics
                    .failures
                    .get_or_create(&FailureLabels {
                        peer: peer.peer.clone(),
                        code: "BREAKER_OPEN",
                    })
                    .inc();
                Err(PeerError {
                    breaker: Some(state),
                    ..PeerError::new(
                        "PEER_UNAVAILABLE",
                        format!(
                            "circuit breaker {}: the peer failed too often recently; next probe in {} ms",
                            state.as_str(),
                            retry_in.as_millis()
                        ),
                    )
                })
            }
            admitted => Ok(admitted),
        }
    }

    /// Counts one attempt in the metrics and, when it passed the breaker, in
    /// the breaker: timeouts and unavailability are failures, a 429 says
    /// nothing of the peer's health, any other answer shows it is up.
    fn count<A>(
        &self,
        peer_id: Uuid,
        peer: &PeerLabels,
        admitted: Option<Admission>,
        result: &Result<A, PeerError>,
        took: Duration,
    ) -> Option<State> {
        let m = &self.metrics;
        m.requests.get_or_create(peer).inc();
        m.latency.get_or_create(peer).observe(took.as_secs_f64());
        let outcome = match result {
            Ok(_) => Outcome::Success,
            Err(e) => {
                m.failures
                    .get_or_create(&FailureLabels {
                        peer: peer.peer.clone(),
                        code: e.code,
                    })
                    .inc();
                match e.code {
                    RATE_LIMITED => {
                        m.rate_limited.get_or_create(peer).inc();
                        Outcome::Neutral
                    }
                    "PEER_UNAVAILABLE" | "PEER_TIMEOUT" => Outcome::Failure,
                    _ => Outcome::Success,
                }
            }
        };
        let admitted = admitted?;
        let now = Instant::now();
        let mut breakers = self.breakers.lock().expect("breaker lock");
        let breaker = breakers.get_mut(&peer_id)?;
        breaker.record(now, admitted, outcome);
        let state = breaker.state(now);
        drop(breakers);
        m.breaker_state.get_or_create(peer).set(state.gauge());
        Some(state)
    }

    async fn send_once<A: AnswerBody>(
        &self,
        peer_id: Uuid,
        base_url: &str,
        path: &str,
        body: &Bytes,
        timeout: Duration,
        peer: &PeerLabels,
    ) -> Result<A, PeerError> {
        let started = Instant::now();
        let url = self.reachable(&format!("{base_url}{path}"))?;
        let header = self
            .sign(peer_id, path, body)
            .await
            .map_err(|e| PeerError::new("PEER_UNAVAILABLE", format!("cannot sign: {e}")))?;
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signing::HEADER, header)
            .body(body.clone())
            .send();
        let response = match tokio::time::timeout(timeout, request).await {
            Err(_) => {
                return Err(
                    PeerError::new("PEER_TIMEOUT", format!("no answer within {} ms", timeout.as_millis())).transient(),
                );
            }
            Ok(Err(e)) if e.is_timeout() => return Err(PeerError::new("PEER_TIMEOUT", "timed out").transient()),
            Ok(Err(e)) => return Err(transport_error(&e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        tracing::Span::current().record("status", status.as_u16());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        // The body gets only what is left of the deadline, not a fresh one.
        let remaining = timeout.saturating_sub(started.elapsed());
        let limit = self.settings.max_answer_bytes;
        let bytes = match tokio::time::timeout(remaining, read_capped(response, limit)).await {
            Err(_) => return Err(PeerError::new("PEER_TIMEOUT", "answer did not finish in time").transient()),
            Ok(result) => result?,
        };
        self.metrics
            .received_bytes
            .get_or_create(peer)
            .inc_by(bytes.len() as u64);
        if status.is_success() {
            return A::read(&bytes);
        }
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        let refusal = parsed
            .as_ref()
            .and_then(|v| v["errors"][0]["extensions"]["code"].as_str())
            .map(String::from);
        let message = parsed
            .as_ref()
            .and_then(|v| v["errors"][0]["message"].as_str())
            .unwrap_or("")
            .to_string();
        let code = match status.as_u16() {
            401 | 403 => "PEER_FORBIDDEN",
            429 => RATE_LIMITED,
            500..=599 => "PEER_UNAVAILABLE",
            _ => "PEER_BAD_RESPONSE",
        };
        let wait = retry_after.map_or(String::new(), |d| format!(" (retry after {} s)", d.as_secs()));
        Err(PeerError {
            code,
            message: format!(
                "peer answered {status}{wait}{}{message}",
                if message.is_empty() { "" } else { ": " }
            ),
            refusal,
            retry_after: retry_after.filter(|_| code == RATE_LIMITED),
            transient: matches!(status.as_u16(), 429 | 502 | 503 | 504),
            breaker: None,
        })
    }

    /// The `Mosaic-Signature` header for a request to `destination`.
    pub async fn sign(&self, destination: Uuid, path: &str, body: &[u8]) -> Result<String> {
        let (key_id, key) = self.keys.current().await?;
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let created = now_unix();
        let params = signing::SignatureParams {
            method: "POST".into(),
            path: path.into(),
            origin: self.instance_id.to_string(),
            destination: destination.to_string(),
            digest: signing::body_digest(body),
            created,
            expires: created + self.settings.request_lifetime_s,
            nonce: URL_SAFE_NO_PAD.encode(nonce),
            key_id,
        };
        let sig = signing::sign(&key, &params);
        Ok(signing::header_value(&params, &sig))
    }
}

/// What a peer's successful answer is read into, straight from its bytes.
pub trait AnswerBody: Sized {
    fn read(bytes: &[u8]) -> Result<Self, PeerError>;
}

impl AnswerBody for Value {
    fn read(bytes: &[u8]) -> Result<Self, PeerError> {
        serde_json::from_slice(bytes).map_err(|_| not_json())
    }
}

/// A successful answer that is not JSON at all.
pub fn not_json() -> PeerError {
    PeerError::new("PEER_BAD_RESPONSE", "answer is not JSON")
}

/// The verb a path names, for the span.
fn verb(path: &str) -> &'static str {
    match path {
        protocol::QUERY_PATH => "QUERY",
        protocol::COMMAND_PATH => "COMMAND",
        protocol::CONNECT_PATH => "CONNECT",
        protocol::EVENT_PATH => "EVENT",
        protocol::DISCONNECT_PATH => "DISCONNECT",
        _ => "OTHER",
    }
}

/// The request's bytes. With a trace being exported, the envelope of a
/// QUERY or COMMAND gets the call's `traceparent`: inside the signed body,
/// so the receiver can rely on it no more and no less than on the rest.
fn encode<T: Serialize>(body: &T, traceparent: Option<String>) -> Bytes {
    let Some(traceparent) = traceparent else {
        return serde_json::to_vec(body).expect("request bodies serialise").into();
    };
    let mut value = serde_json::to_value(body).expect("request bodies serialise");
    if let Some(envelope) = value.get_mut("envelope").and_then(Value::as_object_mut) {
        envelope.insert("traceparent".into(), traceparent.into());
    }
    serde_json::to_vec(&value).expect("request bodies serialise").into()
}

/// Reads a body of at most `limit` bytes, stopping as soon as it would exceed
/// it (the rest is never read, and the connection is dropped).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Bytes, PeerError> {
    let too_large = || PeerError::new("PEER_BAD_RESPONSE", format!("answer exceeds {limit} bytes"));
    match response.content_length() {
        Some(n) if n > limit as u64 => return Err(too_large()),
        // The declared length within the limit, read as one buffer (no
        // copy when it came in one chunk): HTTP/1 reads no byte past it, and
        // HTTP/2 refuses a stream that sends more.
        Some(_) => return response.bytes().await.map_err(|e| transport_error(&e)),
        None => {}
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

fn transport_error(e: &reqwest::Error) -> PeerError {
    if e.is_timeout() {
        return PeerError::new("PEER_TIMEOUT", "timed out").transient();
    }
    // The full chain says which part failed (connect, TLS, closed connection).
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        // Some layers repeat their source's text; say each cause once.
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    // rustls' words for a plain-HTTP answer to a TLS hello.
    if message.contains("InvalidContentType") {
        message = format!(
            "{} does not speak TLS (HTTPS) on that port; check the URL's scheme and port",
            e.url()
                .map_or_else(|| "the peer".to_string(), |u| u.origin().ascii_serialization())
        );
        return PeerError::new("PEER_UNAVAILABLE", message);
    }
    // Refused, reset or closed: asking again may find it up.
    PeerError::new("PEER_UNAVAILABLE", message).transient()
}
