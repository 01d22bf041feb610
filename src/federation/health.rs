//! What `mosaic federation status` and `mosaic doctor` print. A CLI process
//! cannot see a server's memory: the counts, last success and failure and
//! the breaker state are the shared peer statistics the serving replicas
//! flush every few seconds (`stats.rs`, migrations 0073 and 0076).

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::registry::{self, PeerRecord, PeerState};
use super::{Federation, document};
use crate::config::Config;

fn at(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "never".into())
}

/// One line per peer (and an indented one with its contacts).
pub async fn status(fed: &Federation) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    let backlog = fed.outbox_backlog().await?;
    for p in registry::list(&fed.pool).await? {
        let stat = fed.stats.get(&fed.pool, p.id).await?;
        let keys: Vec<String> = p
            .keys
            .iter()
            .map(|k| match k.valid_until {
                Some(until) => format!(
                    "{} (until {})",
                    k.key_id,
                    at(OffsetDateTime::from_unix_timestamp(until).ok())
                ),
                None => format!("{} (current)", k.key_id),
            })
            .collect();
        lines.push(format!(
            "{} {} inbound={} outbound={} grant={} keys={} {}",
            p.name,
            p.id,
            p.inbound_state,
            p.outbound_state,
            grant_summary(&p),
            if keys.is_empty() { "none".into() } else { keys.join(",") },
            p.base_url
        ));
        lines.push(format!(
            "    successes={} errors={} last_success={} last_failure={}{} median_latency={} breaker={}{} outbox_backlog={}",
            stat.successes,
            stat.errors,
            at(stat.last_contact),
            at(stat.last_failure),
            stat.last_error.as_deref().map_or(String::new(), |e| format!(" ({e})")),
            stat.median_latency_ms()
                .map_or_else(|| "none".into(), |ms| format!("{ms}ms")),
            stat.breaker.as_deref().unwrap_or("closed"),
            stat.breaker_at
                .map_or(String::new(), |t| format!(" (as of {})", at(Some(t)))),
            backlog
                .get(&p.id)
                .map_or_else(|| "none".into(), |n| n.to_string()),
        ));
    }
    Ok(lines)
}

fn grant_summary(p: &PeerRecord) -> String {
    if p.inbound_state != PeerState::Active {
        return "none".into();
    }
    let mut s = format!(
        "{} workspace(s) {}",
        p.grant_workspaces.len(),
        if p.grant_read_write { "read-write" } else { "read-only" }
    );
    if let Some(users) = &p.grant_users {
        s.push_str(&format!(" for {} user(s)", users.len()));
    }
    if p.grant_forward {
        s.push_str(" forwarding");
    }
    s
}

/// One finding of `mosaic doctor`: `fix` is what to do when it is wrong.
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn new(what: impl Into<String>, result: Result<String, String>) -> Self {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        Self {
            what: what.into(),
            ok,
            detail,
        }
    }
}

/// Checks the TLS files, this instance's signing key and, for every peer we
/// query or that queries us, reachability, protocol and clock skew (its
/// identity document's `Date` against ours). The configuration and the
/// database were checked by getting this far.
pub async fn doctor(config: &Config, fed: &Federation) -> anyhow::Result<Vec<Check>> {
    let mut checks = vec![Check::new("database", Ok("reachable, migrations applied".into()))];
    checks.push(Check::new(
        "tls",
        match &config.tls {
            Some(files) => super::tls::server_config(&files.cert_file, &files.key_file)
                .map(|_| format!("{} and its key load", files.cert_file.display()))
                .map_err(|e| format!("{e:#}: fix tls.cert_file / tls.key_file")),
            None => Ok("not configured: serving plain HTTP (peers need HTTPS in front of it)".into()),
        },
    ));
    checks.push(Check::new(
        "signing key",
        fed.keys
            .current()
            .await
            .map(|(id, _)| format!("current key {id}"))
            .map_err(|e| format!("{e:#}: check MOSAIC_SECRET_KEY (the key is sealed with it)")),
    ));
    let skew_allowed = Duration::from_secs(fed.settings.clock_skew_s.unsigned_abs());
    for p in registry::list(&fed.pool).await? {
        if p.inbound_state != PeerState::Active && p.outbound_state != PeerState::Active {
            continue;
        }
        let what = format!("peer {} ({})", p.name, p.base_url);
        let result = match fed.fetch_identity_dated(&p.base_url).await {
            Err(e) => Err(format!(
                "unreachable: {} {}: check that it runs, its base URL, the network and federation.allowed_peer_networks",
                e.code, e.message
            )),
            Ok((doc, _)) if doc.instance_id != p.id.to_string() => Err(format!(
                "answers as instance {}, not {}: its URL now serves another instance",
                doc.instance_id, p.id
            )),
            Ok((doc, _)) if doc.protocol != document::PROTOCOL => Err(format!(
                "speaks protocol {}, this instance {}: upgrade the older one",
                doc.protocol,
                document::PROTOCOL
            )),
            Ok((_, None)) => Err("its answer has no Date header: its clock cannot be checked".into()),
            Ok((doc, Some(date))) => {
                let now = SystemTime::now();
                let (skew, ahead) = match date.duration_since(now) {
                    Ok(d) => (d, true),
                    Err(e) => (e.duration(), false),
                };
                let said = format!(
                    "protocol {}, clock {} s {}",
                    doc.protocol,
                    skew.as_secs(),
                    if ahead { "ahead" } else { "behind" }
                );
                // The Date header has whole seconds: allow one more.
                if skew > skew_allowed + Duration::from_secs(1) {
                    Err(format!(
                        "{said}, beyond federation.clock_skew_s ({} s): signed requests will be refused; fix the clock (NTP) of this host or the peer's",
                        skew_allowed.as_secs()
                    ))
                } else {
                    Ok(said)
                }
            }
        };
        checks.push(Check::new(what, result));
    }
    Ok(checks)
}
