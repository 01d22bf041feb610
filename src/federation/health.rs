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

/// One finding of `mosaic doctor`: `detail` says what to do when it is wrong.
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// Fine for now, soon not (a certificate about to expire).
    pub warning: bool,
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
            warning: false,
            detail,
        }
    }
}

/// A certificate expiring sooner than this is warned about.
pub const EXPIRY_WARNING: time::Duration = time::Duration::days(30);

/// The TLS files load, and the certificate is not expired (a failure) nor
/// expiring within [`EXPIRY_WARNING`] (a warning).
pub fn tls_check(tls: Option<&crate::config::TlsFiles>, now: OffsetDateTime) -> Check {
    let Some(files) = tls else {
        return Check::new(
            "tls",
            Ok("not configured: serving plain HTTP (peers need HTTPS in front of it)".into()),
        );
    };
    let fix = "fix tls.cert_file / tls.key_file";
    let loaded = super::tls::server_config(&files.cert_file, &files.key_file)
        .and_then(|_| super::tls::certificate_expiry(&files.cert_file));
    let not_after = match loaded {
        Ok(t) => t,
        Err(e) => return Check::new("tls", Err(format!("{e:#}: {fix}"))),
    };
    let cert = files.cert_file.display();
    let until = at(Some(not_after));
    let left = not_after - now;
    if left <= time::Duration::ZERO {
        return Check::new(
            "tls",
            Err(format!(
                "{cert} expired on {until}: peers and clients refuse it; renew it"
            )),
        );
    }
    let mut check = Check::new(
        "tls",
        Ok(format!(
            "{cert} and its key load; valid until {until} ({} days)",
            left.whole_days()
        )),
    );
    if left < EXPIRY_WARNING {
        check.warning = true;
        check.detail.push_str(&format!(
            ": expires in less than {} days, renew it soon",
            EXPIRY_WARNING.whole_days()
        ));
    }
    check
}

/// Checks the TLS files, this instance's signing key and, for every peer we
/// query or that queries us, reachability, protocol and clock skew (its
/// identity document's `Date` against ours). The configuration and the
/// database were checked by getting this far.
pub async fn doctor(config: &Config, fed: &Federation) -> anyhow::Result<Vec<Check>> {
    let mut checks = vec![Check::new("database", Ok("reachable, migrations applied".into()))];
    checks.push(tls_check(config.tls.as_ref(), OffsetDateTime::now_utc()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsFiles;

    /// A self-signed certificate valid until `not_after`, and its key, written
    /// under `dir`.
    fn certificate(dir: &std::path::Path, not_after: OffsetDateTime) -> TlsFiles {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = not_after - time::Duration::days(400);
        params.not_after = not_after;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = TlsFiles {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
        };
        std::fs::write(&files.cert_file, cert.pem()).unwrap();
        std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn certificate_expiry_is_ok_then_a_warning_then_a_failure() {
        crate::federation::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let cases = [
            (time::Duration::days(200), true, false, "valid until"),
            (time::Duration::days(10), true, true, "renew it soon"),
            (-time::Duration::days(1), false, false, "expired on"),
        ];
        for (left, ok, warning, says) in cases {
            let files = certificate(dir.path(), now + left);
            let check = tls_check(Some(&files), now);
            assert_eq!((check.ok, check.warning), (ok, warning), "{left}: {}", check.detail);
            assert!(check.detail.contains(says), "{left}: {}", check.detail);
            assert!(
                check.detail.contains(&at(Some(now + left))),
                "the date: {}",
                check.detail
            );
        }
    }

    #[test]
    fn a_certificate_file_that_is_not_one_fails_with_what_to_fix() {
        crate::federation::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let mut files = certificate(dir.path(), OffsetDateTime::now_utc() + time::Duration::days(90));
        std::fs::write(dir.path().join("garbage.pem"), "not a certificate").unwrap();
        files.cert_file = dir.path().join("garbage.pem");
        let check = tls_check(Some(&files), OffsetDateTime::now_utc());
        assert!(!check.ok);
        assert!(check.detail.contains("fix tls.cert_file"), "{}", check.detail);
    }
}
