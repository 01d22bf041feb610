//! Typed configuration from an optional TOML file and environment variables.
//!
//! Every setting has one dotted key (used in the TOML file) and one environment
//! variable, declared once beside the settings of its area (`limits.rs`,
//! `federation.rs`, `oidc.rs`, `agents.rs`, `knowledge.rs`, `agent_tasks.rs`, and the general ones below) with
//! its default and its parser. Environment variables override the file. An
//! invalid value stops startup with an error that names the field, where it
//! came from, and why.

mod agent_tasks;
mod agents;
mod federation;
mod knowledge;
mod limits;
mod networks;
mod oidc;
pub(crate) mod setting;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use crate::secrets::Secret;
pub use agent_tasks::{AgentProfile, AgentTaskSettings};
pub use agents::AgentSettings;
pub use federation::FederationSettings;
pub use knowledge::KnowledgeSettings;
pub use limits::Limits;
pub use networks::{IpNet, parse_networks};
pub use oidc::{GroupRole, OidcSettings};
use setting::{Key, Raw, Settings, Source, settings};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid configuration: {field} (from {source_name}): {reason}")]
pub struct ConfigError {
    pub field: String,
    pub source_name: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("'{other}' is not one of: text, json")),
        }
    }
}

settings! {
    pub struct Config {
        listen: SocketAddr = "127.0.0.1:8080".parse().expect("static address");
            "listen", "MOSAIC_LISTEN", listen_address;
        data_dir: PathBuf = PathBuf::from("./.mosaic"); "data_dir", "MOSAIC_DATA_DIR", parsed();
        /// Without it, Mosaic runs a private PostgreSQL cluster in `data_dir`.
        database_url: Option<String> = None; "database_url", "DATABASE_URL", some(database_url);
        instance_name: String = "mosaic".into(); "instance_name", "MOSAIC_INSTANCE_NAME", instance_name;
        log_format: LogFormat = LogFormat::Text; "log_format", "MOSAIC_LOG_FORMAT", parsed();
        /// Where spans go (OTLP over HTTP, protobuf): a collector's base URL,
        /// `/v1/traces` appended. No export when unset.
        otlp_endpoint: Option<String> = None; "telemetry.otlp_endpoint", "MOSAIC_OTLP_ENDPOINT", some(http_url());
        /// How long finished spans wait to be sent in one batch (a full batch,
        /// and shutdown, send at once).
        otlp_export_interval: Duration = Duration::from_secs(5);
            "telemetry.otlp_export_interval_ms", "MOSAIC_OTLP_EXPORT_INTERVAL_MS", millis();
        pool_size: u32 = 10; "db.pool_size", "MOSAIC_DB_POOL_SIZE", range(1, 1000);
        statement_timeout: Duration = Duration::from_secs(10);
            "db.statement_timeout_ms", "MOSAIC_DB_STATEMENT_TIMEOUT_MS", millis();
        /// Seals secrets at rest (the instance's private key, user secrets).
        secret_key: Option<Secret> = None; "secret_key", "MOSAIC_SECRET_KEY", some(secret(32));
        /// Development mode: allows running without `secret_key`.
        dev: bool = false; "dev", "MOSAIC_DEV", parsed();
        /// The URL peers reach this instance at; derived from `listen` if unset.
        public_url: Option<String> = None; "public_url", "MOSAIC_PUBLIC_URL", some(http_url());
        /// Bearer token `/metrics` requires; without one it answers only on a
        /// loopback listen address.
        metrics_token: Option<Secret> = None; "metrics.token", "MOSAIC_METRICS_TOKEN", some(secret(16));
        /// Lifetime of a browser session.
        session_ttl: Duration = Duration::from_secs(8 * 3600);
            "session.ttl_s", "MOSAIC_SESSION_TTL_S", seconds(60, 90 * 24 * 3600);
        /// A browser session unused this long ends; zero: never for lack of use.
        session_idle_timeout: Duration = Duration::from_secs(2 * 3600);
            "session.idle_timeout_s", "MOSAIC_SESSION_IDLE_TIMEOUT_S", session_idle_timeout;
        /// After SIGTERM, how long `/readyz` answers 503 while requests are
        /// still served, so a load balancer stops sending any before the port closes.
        shutdown_unready: Duration = Duration::ZERO;
            "shutdown.unready_ms", "MOSAIC_SHUTDOWN_UNREADY_MS", unready_delay;
        /// Once the port is closed, how long requests in flight may take to finish.
        shutdown_drain: Duration = Duration::from_secs(10);
            "shutdown.drain_s", "MOSAIC_SHUTDOWN_DRAIN_S", seconds(1, 600);
    }
    areas {
        limits: Limits,
        /// Serve HTTPS with this certificate and key.
        tls: Option<TlsFiles>,
        federation: FederationSettings,
        /// Single sign-on; off unless `oidc.issuer_url` is set.
        oidc: Option<OidcSettings>,
        /// Per-user agent containers.
        agents: AgentSettings,
        /// The knowledge base's bounds.
        knowledge: KnowledgeSettings,
        /// The agent task queue and its worker API.
        agent_tasks: AgentTaskSettings,
    }
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

const TLS_CERT: Key = Key {
    key: "tls.cert_file",
    env: "MOSAIC_TLS_CERT",
};
const TLS_KEY: Key = Key {
    key: "tls.key_file",
    env: "MOSAIC_TLS_KEY",
};

/// The certificate and its key are set together or not at all.
impl Settings for Option<TlsFiles> {
    fn keys(out: &mut Vec<Key>) {
        out.extend([TLS_CERT, TLS_KEY]);
    }

    fn apply(&mut self, source: &mut Source) -> Result<(), ConfigError> {
        match (source.take(TLS_CERT.key), source.take(TLS_KEY.key)) {
            (None, None) => Ok(()),
            (Some(cert), Some(key)) => {
                let file = |k: Key, r: &Raw| setting::existing_file()(&r.value).map_err(|e| r.error(k.key, e));
                *self = Some(TlsFiles {
                    cert_file: file(TLS_CERT, &cert)?,
                    key_file: file(TLS_KEY, &key)?,
                });
                Ok(())
            }
            (Some(r), None) | (None, Some(r)) => {
                Err(r.error("tls", "set both tls.cert_file and tls.key_file, or neither"))
            }
        }
    }
}

fn database_url(value: &str) -> Result<String, String> {
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        Ok(value.into())
    } else {
        Err("must start with postgres:// or postgresql://".into())
    }
}

fn instance_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
    if ok {
        Ok(value.into())
    } else {
        Err("must be 1-63 characters of a-z, 0-9 and '-'".into())
    }
}

/// Zero turns the idle timeout off; otherwise at least two minutes, since use
/// is recorded once a minute and a shorter timeout would misfire.
fn session_idle_timeout(value: &str) -> Result<Duration, String> {
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    setting::seconds(120, 90 * 24 * 3600)(value)
}

/// Zero (the default: no load balancer to tell) up to two minutes.
fn unready_delay(value: &str) -> Result<Duration, String> {
    setting::range(0u64, 120_000)(value).map(Duration::from_millis)
}

/// `listen`: an address (`127.0.0.1:8080`, `[::1]:8080`) or a host name and
/// port (`localhost:8080`), which is resolved now; its first address is used.
fn listen_address(value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let resolved = value
        .to_socket_addrs()
        .map_err(|e| format!("'{value}' is not an address or host:port ({e})"))?;
    let mut addrs: Vec<SocketAddr> = resolved.collect();
    // IPv4 first, so `localhost` means 127.0.0.1 as in the default.
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| format!("'{value}' resolves to no address"))
}

/// The fixed secret of development mode: it protects nothing.
const DEV_SECRET: &str = "mosaic-development-secret-do-not-use-in-production";

impl Config {
    /// The secret that seals secrets at rest: `secret_key` when configured,
    /// else the key file in the data directory, else (dev mode) the fixed
    /// development secret. Commands other than `serve` never make a key.
    pub fn require_secret(&self) -> Result<Secret, ConfigError> {
        self.secret(false)
    }

    /// As [`Config::require_secret`], but with `create` a data directory that
    /// has no key file yet (and no configured key, outside dev mode) gets a
    /// new random one: `mosaic serve`'s first start.
    pub fn secret(&self, create: bool) -> Result<Secret, ConfigError> {
        if let Some(s) = &self.secret_key {
            return Ok(s.clone());
        }
        let path = self.data_dir.join(crate::secrets::KEY_FILE);
        let file_error = |reason: String| ConfigError {
            field: "secret_key".into(),
            source_name: path.display().to_string(),
            reason,
        };
        let create = create && !self.dev;
        if create && !path.exists() {
            tracing::warn!(path = %path.display(), "no secret key configured: making a new one in the data directory; back this file up with the database");
        }
        match crate::secrets::key_file(&path, create) {
            Ok(Some(s)) => return Ok(s),
            Ok(None) => {}
            Err(e) => return Err(file_error(format!("cannot use the key file: {e}"))),
        }
        if self.dev {
            tracing::warn!("MOSAIC_DEV: using the fixed development secret; never do this in production");
            return Ok(Secret(DEV_SECRET.into()));
        }
        Err(ConfigError {
            field: "secret_key".into(),
            source_name: "MOSAIC_SECRET_KEY".into(),
            reason: format!(
                "not set, and there is no key file {} (`mosaic serve` makes one on its first start); set MOSAIC_SECRET_KEY to at least 32 characters",
                path.display()
            ),
        })
    }

    /// The base URL peers use, given the address actually bound.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let ip = match bound.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        };
        format!("{scheme}://{ip}:{}", bound.port())
    }
}

impl Config {
    /// Loads from the process environment and, if `MOSAIC_CONFIG` names one, a TOML file.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(|name| std::env::var(name).ok())
    }

    /// Loads from the given variable lookup (tests pass their own).
    pub fn load(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let keys = Self::keys_all();
        let mut source = Source::default();
        if let Some(path) = env("MOSAIC_CONFIG") {
            setting::read_file(&path, &keys, &mut source)?;
        }
        for k in &keys {
            if let Some(value) = env(k.env) {
                let source_name = k.env.to_string();
                source.insert(k.key, Raw { value, source_name });
            }
        }
        let mut config = Config::default();
        config.apply(&mut source)?;
        Ok(config)
    }

    /// Every setting's key and environment variable.
    pub fn keys_all() -> Vec<Key> {
        let mut keys = Vec::new();
        <Self as Settings>::keys(&mut keys);
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load(|k| map.get(k).cloned())
    }

    #[test]
    fn every_key_and_variable_is_declared_once() {
        let keys = Config::keys_all();
        let names: std::collections::BTreeSet<_> = keys.iter().map(|k| k.key).collect();
        let vars: std::collections::BTreeSet<_> = keys.iter().map(|k| k.env).collect();
        assert_eq!((names.len(), vars.len()), (keys.len(), keys.len()));
    }

    #[test]
    fn defaults_apply_without_settings() {
        let c = load(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.database_url.is_none());
    }

    #[test]
    fn invalid_values_name_the_field() {
        let e = load(&[("MOSAIC_LISTEN", "nonsense")]).unwrap_err();
        assert_eq!(e.field, "listen");
        assert_eq!(e.source_name, "MOSAIC_LISTEN");
        let e = load(&[("MOSAIC_MAX_DEPTH", "1")]).unwrap_err();
        assert_eq!(e.field, "limits.max_depth");
        assert!(e.reason.contains("outside"), "{e}");
        let e = load(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(e.field, "database_url");
        let e = load(&[("MOSAIC_SECRET_KEY", "short")]).unwrap_err();
        assert_eq!(e.field, "secret_key");
        assert!(!e.to_string().contains("short"), "the secret is not echoed: {e}");
        let e = load(&[("MOSAIC_TLS_CERT", "/nonexistent")]).unwrap_err();
        assert_eq!(e.field, "tls");
        let e = load(&[("MOSAIC_HOP_LIMIT", "0")]).unwrap_err();
        assert_eq!(e.field, "federation.hop_limit");
        assert!(
            load(&[]).unwrap().require_secret().is_err(),
            "no secret outside dev mode"
        );
        assert!(load(&[("MOSAIC_DEV", "true")]).unwrap().require_secret().is_ok());
        let e = load(&[("MOSAIC_LOG_FORMAT", "xml")]).unwrap_err();
        assert!(e.to_string().contains("log_format"), "{e}");
    }

    #[test]
    fn subscription_limits_have_defaults_and_bounds() {
        let c = load(&[]).unwrap();
        assert_eq!(
            (
                c.limits.max_subscriptions_per_user,
                c.limits.max_ws_connections_per_user
            ),
            (20, 8)
        );
        let c = load(&[
            ("MOSAIC_MAX_SUBSCRIPTIONS_PER_USER", "3"),
            ("MOSAIC_SUBSCRIPTION_KEEPALIVE_MS", "2500"),
        ])
        .unwrap();
        assert_eq!(c.limits.max_subscriptions_per_user, 3);
        assert_eq!(c.limits.subscription_keepalive, Duration::from_millis(2500));
        for (var, field) in [
            ("MOSAIC_MAX_SUBSCRIPTIONS_PER_USER", "limits.max_subscriptions_per_user"),
            (
                "MOSAIC_MAX_WS_CONNECTIONS_PER_USER",
                "limits.max_ws_connections_per_user",
            ),
            ("MOSAIC_SUBSCRIPTION_BUFFER", "limits.subscription_buffer"),
            ("MOSAIC_SUBSCRIPTION_KEEPALIVE_MS", "limits.subscription_keepalive_ms"),
            (
                "MOSAIC_SUBSCRIPTION_SEND_TIMEOUT_MS",
                "limits.subscription_send_timeout_ms",
            ),
        ] {
            let e = load(&[(var, "0")]).unwrap_err();
            assert_eq!((e.field.as_str(), e.source_name.as_str()), (field, var));
        }
    }

    #[test]
    fn oidc_settings_are_checked_by_field() {
        assert!(load(&[]).unwrap().oidc.is_none());
        let e = load(&[("MOSAIC_OIDC_CLIENT_ID", "x")]).unwrap_err();
        assert_eq!(e.field, "oidc.issuer_url");
        let issuer = ("MOSAIC_OIDC_ISSUER_URL", "https://auth.example/application/o/mosaic/");
        let e = load(&[issuer]).unwrap_err();
        assert_eq!(e.field, "oidc.client_id");
        assert_eq!(
            e.source_name, "MOSAIC_OIDC_CLIENT_ID",
            "names the missing variable: {e}"
        );
        let e = load(&[issuer, ("MOSAIC_OIDC_CLIENT_ID", "m")]).unwrap_err();
        assert_eq!(e.field, "oidc.client_secret");
        let ok = [
            issuer,
            ("MOSAIC_OIDC_CLIENT_ID", "m"),
            ("MOSAIC_OIDC_CLIENT_SECRET", "s3cret"),
        ];
        let c = load(&ok).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"), "the secret is not printed");
        let roles = "mosaic-admins=admin, eng=workspace:0190d1a2-0000-7000-8000-000000000001:MEMBER";
        let mut with_roles = ok.to_vec();
        with_roles.push(("MOSAIC_OIDC_GROUP_ROLES", roles));
        let c = load(&with_roles).unwrap();
        assert_eq!(c.oidc.unwrap().group_roles.len(), 2);
        let mut bad = ok.to_vec();
        bad.push(("MOSAIC_OIDC_GROUP_ROLES", "eng=workspace:nope:MEMBER"));
        assert_eq!(load(&bad).unwrap_err().field, "oidc.group_roles");
        let e = load(&[("MOSAIC_SESSION_TTL_S", "5")]).unwrap_err();
        assert_eq!(e.field, "session.ttl_s");
        assert_eq!(load(&[]).unwrap().session_idle_timeout, Duration::from_secs(7200));
        let off = load(&[("MOSAIC_SESSION_IDLE_TIMEOUT_S", "0")]).unwrap();
        assert_eq!(off.session_idle_timeout, Duration::ZERO);
        for bad in ["60", "-1", "soon", ""] {
            let e = load(&[("MOSAIC_SESSION_IDLE_TIMEOUT_S", bad)]).unwrap_err();
            assert_eq!(e.field, "session.idle_timeout_s", "{bad}");
        }
    }

    #[test]
    fn oidc_discovery_refresh_defaults_to_a_minute_and_zero_is_allowed() {
        let ok = [
            ("MOSAIC_OIDC_ISSUER_URL", "https://auth.example/application/o/mosaic/"),
            ("MOSAIC_OIDC_CLIENT_ID", "m"),
            ("MOSAIC_OIDC_CLIENT_SECRET", "s3cret"),
        ];
        let refresh = |value: &str| {
            let mut pairs = ok.to_vec();
            pairs.push(("MOSAIC_OIDC_DISCOVERY_REFRESH_S", value));
            load(&pairs).map(|c| c.oidc.unwrap().discovery_refresh)
        };
        assert_eq!(
            load(&ok).unwrap().oidc.unwrap().discovery_refresh,
            Duration::from_secs(60)
        );
        assert_eq!(refresh("0").unwrap(), Duration::ZERO);
        assert_eq!(refresh("300").unwrap(), Duration::from_secs(300));
        for bad in ["-1", "abc"] {
            let e = refresh(bad).unwrap_err();
            assert_eq!(e.field, "oidc.discovery_refresh_s", "{bad}");
            assert_eq!(e.source_name, "MOSAIC_OIDC_DISCOVERY_REFRESH_S");
            assert!(e.to_string().contains(bad), "the value is named: {e}");
        }
        let e = load(&[("MOSAIC_OIDC_DISCOVERY_REFRESH_S", "30")]).unwrap_err();
        assert_eq!(e.field, "oidc.issuer_url", "no refresh without a provider");
    }

    #[test]
    fn file_values_are_overridden_by_env_and_unknown_keys_refused() {
        let dir = std::env::temp_dir().join(format!("mosaic-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\n[limits]\nmax_depth = 7\n").unwrap();
        let path = file.to_str().unwrap();
        let c = load(&[("MOSAIC_CONFIG", path), ("MOSAIC_LISTEN", "127.0.0.1:9001")]).unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.limits.max_depth, 7);
        std::fs::write(&file, "[limits]\nmax_dept = 7\n").unwrap();
        let e = load(&[("MOSAIC_CONFIG", path)]).unwrap_err();
        assert_eq!(e.field, "limits.max_dept");
        assert_eq!(e.reason, "unknown setting");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\n[limits]\nmax_depth = = 7\n").unwrap();
        let e = load(&[("MOSAIC_CONFIG", path)]).unwrap_err();
        assert!(e.reason.contains("line 3, column"), "{e}");
    }

    #[test]
    fn listen_accepts_host_names() {
        assert_eq!(
            load(&[("MOSAIC_LISTEN", "localhost:8081")]).unwrap().listen.to_string(),
            "127.0.0.1:8081"
        );
        assert_eq!(
            load(&[("MOSAIC_LISTEN", "[::1]:8082")]).unwrap().listen.to_string(),
            "[::1]:8082"
        );
        for bad in ["localhost", "nonsense", "localhost:99999"] {
            assert_eq!(load(&[("MOSAIC_LISTEN", bad)]).unwrap_err().field, "listen", "{bad}");
        }
    }
}
