//! The outbound client: signing requests to peers, sending them and reading
//! their answers within a byte limit and the deadline, and fetching peers'
//! identity documents.

use std::time::{Duration, Instant};

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::document::{self, IdentityDocument, SignedDocument};
use super::{Federation, PeerError, netguard, now_unix, protocol, signing};

impl Federation {
    /// Refuses, before connecting, a URL whose host is an address peers may
    /// not be reached at (names are checked by the client's resolver).
    fn reachable(&self, url: &str) -> Result<(), PeerError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| PeerError::new("PEER_UNAVAILABLE", format!("{url}: {e}")))?;
        netguard::check_url_host(&parsed, &self.settings.allowed_peer_networks)
            .map_err(|e| PeerError::new("PEER_UNAVAILABLE", e))
    }

    /// Fetches and verifies a peer's identity document: at most
    /// `MAX_DOCUMENT_BYTES`, within `federation.deadline`.
    pub async fn fetch_identity(&self, base_url: &str) -> Result<IdentityDocument, PeerError> {
        let url = format!("{base_url}{}", protocol::WELL_KNOWN_PATH);
        self.reachable(&url)?;
        let fetch = async {
            let response = self.http.get(&url).send().await.map_err(|e| transport_error(&e))?;
            if !response.status().is_success() {
                return Err(PeerError::new(
                    "PEER_BAD_RESPONSE",
                    format!("{url} answered {}", response.status()),
                ));
            }
            let bytes = read_capped(response, document::MAX_DOCUMENT_BYTES).await?;
            serde_json::from_slice::<SignedDocument>(&bytes)
                .map_err(|e| PeerError::new("PEER_BAD_RESPONSE", format!("identity document is not valid: {e}")))
        };
        let signed = tokio::time::timeout(self.settings.deadline, fetch)
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
        Ok(signed.document)
    }

    /// Sends one signed request and returns the peer's JSON answer.
    pub async fn send<T: Serialize>(
        &self,
        peer_id: Uuid,
        base_url: &str,
        path: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<Value, PeerError> {
        let started = Instant::now();
        let result = self
            .send_uncounted(peer_id, base_url, path, body, timeout, started)
            .await;
        self.stats
            .record(peer_id, started.elapsed().as_millis() as u64, result.is_ok());
        result
    }

    async fn send_uncounted<T: Serialize>(
        &self,
        peer_id: Uuid,
        base_url: &str,
        path: &str,
        body: &T,
        timeout: Duration,
        started: Instant,
    ) -> Result<Value, PeerError> {
        let body = serde_json::to_vec(body).expect("request bodies serialise");
        self.reachable(base_url)?;
        let header = self
            .sign(peer_id, path, &body)
            .await
            .map_err(|e| PeerError::new("PEER_UNAVAILABLE", format!("cannot sign: {e}")))?;
        let request = self
            .http
            .post(format!("{base_url}{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signing::HEADER, header)
            .body(body)
            .send();
        let response = match tokio::time::timeout(timeout, request).await {
            Err(_) => {
                return Err(PeerError::new(
                    "PEER_TIMEOUT",
                    format!("no answer within {} ms", timeout.as_millis()),
                ));
            }
            Ok(Err(e)) if e.is_timeout() => return Err(PeerError::new("PEER_TIMEOUT", "timed out")),
            Ok(Err(e)) => return Err(transport_error(&e)),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        // The body gets only what is left of the deadline, not a fresh one.
        let remaining = timeout.saturating_sub(started.elapsed());
        let limit = self.settings.max_answer_bytes;
        let bytes = match tokio::time::timeout(remaining, read_capped(response, limit)).await {
            Err(_) => return Err(PeerError::new("PEER_TIMEOUT", "answer did not finish in time")),
            Ok(result) => result?,
        };
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return parsed.ok_or_else(|| PeerError::new("PEER_BAD_RESPONSE", "answer is not JSON"));
        }
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
            500..=599 => "PEER_UNAVAILABLE",
            _ => "PEER_BAD_RESPONSE",
        };
        Err(PeerError {
            code,
            message: format!(
                "peer answered {status}{}{message}",
                if message.is_empty() { "" } else { ": " }
            ),
            refusal,
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

/// Reads a body of at most `limit` bytes, stopping as soon as it would exceed
/// it (the rest is never read, and the connection is dropped).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, PeerError> {
    let too_large = || PeerError::new("PEER_BAD_RESPONSE", format!("answer exceeds {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(e: &reqwest::Error) -> PeerError {
    if e.is_timeout() {
        return PeerError::new("PEER_TIMEOUT", "timed out");
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
    }
    PeerError::new("PEER_UNAVAILABLE", message)
}
