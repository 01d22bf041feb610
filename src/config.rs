//! Typed configuration from an optional TOML file and environment variables.
//!
//! Every setting has one dotted key (used in the TOML file) and one environment
//! variable. Environment variables override the file. An invalid value stops
//! startup with an error that names the field, where it came from, and why.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use crate::secrets::Secret;

/// Settings table: (TOML key, environment variable).
const FIELDS: &[(&str, &str)] = &[
    ("listen", "MOSAIC_LISTEN"),
    ("data_dir", "MOSAIC_DATA_DIR"),
    ("database_url", "DATABASE_URL"),
    ("instance_name", "MOSAIC_INSTANCE_NAME"),
    ("log_format", "MOSAIC_LOG_FORMAT"),
    ("db.pool_size", "MOSAIC_DB_POOL_SIZE"),
    ("db.statement_timeout_ms", "MOSAIC_DB_STATEMENT_TIMEOUT_MS"),
    ("limits.max_depth", "MOSAIC_MAX_DEPTH"),
    ("limits.max_complexity", "MOSAIC_MAX_COMPLEXITY"),
    ("limits.max_aliases", "MOSAIC_MAX_ALIASES"),
    ("limits.max_body_bytes", "MOSAIC_MAX_BODY_BYTES"),
    ("limits.max_page_size", "MOSAIC_MAX_PAGE_SIZE"),
    ("limits.request_timeout_ms", "MOSAIC_REQUEST_TIMEOUT_MS"),
    ("limits.header_read_timeout_ms", "MOSAIC_HEADER_READ_TIMEOUT_MS"),
    ("limits.idle_timeout_ms", "MOSAIC_IDLE_TIMEOUT_MS"),
    ("limits.tls_handshake_timeout_ms", "MOSAIC_TLS_HANDSHAKE_TIMEOUT_MS"),
    ("limits.max_connections", "MOSAIC_MAX_CONNECTIONS"),
    (
        "limits.max_connections_per_address",
        "MOSAIC_MAX_CONNECTIONS_PER_ADDRESS",
    ),
    ("limits.max_subscriptions_per_user", "MOSAIC_MAX_SUBSCRIPTIONS_PER_USER"),
    (
        "limits.max_ws_connections_per_user",
        "MOSAIC_MAX_WS_CONNECTIONS_PER_USER",
    ),
    ("limits.subscription_buffer", "MOSAIC_SUBSCRIPTION_BUFFER"),
    ("limits.subscription_keepalive_ms", "MOSAIC_SUBSCRIPTION_KEEPALIVE_MS"),
    (
        "limits.subscription_send_timeout_ms",
        "MOSAIC_SUBSCRIPTION_SEND_TIMEOUT_MS",
    ),
    ("secret_key", "MOSAIC_SECRET_KEY"),
    ("dev", "MOSAIC_DEV"),
    ("public_url", "MOSAIC_PUBLIC_URL"),
    ("tls.cert_file", "MOSAIC_TLS_CERT"),
    ("tls.key_file", "MOSAIC_TLS_KEY"),
    ("federation.ca_file", "MOSAIC_PEER_CA"),
    ("federation.allow_http", "MOSAIC_ALLOW_HTTP_PEERS"),
    ("federation.deadline_ms", "MOSAIC_FEDERATION_DEADLINE_MS"),
    ("federation.hop_limit", "MOSAIC_HOP_LIMIT"),
    ("federation.request_lifetime_s", "MOSAIC_REQUEST_LIFETIME_S"),
    ("federation.clock_skew_s", "MOSAIC_CLOCK_SKEW_S"),
    ("federation.key_grace_s", "MOSAIC_KEY_GRACE_S"),
    ("federation.key_refresh_s", "MOSAIC_KEY_REFRESH_S"),
    ("federation.max_answer_bytes", "MOSAIC_MAX_ANSWER_BYTES"),
    ("federation.nonces_per_peer", "MOSAIC_NONCES_PER_PEER"),
    ("federation.allowed_peer_networks", "MOSAIC_ALLOWED_PEER_NETWORKS"),
    ("federation.connects_per_minute", "MOSAIC_CONNECTS_PER_MINUTE"),
    ("federation.max_pending_peers", "MOSAIC_MAX_PENDING_PEERS"),
    ("federation.max_subrequests", "MOSAIC_MAX_SUBREQUESTS"),
    ("federation.max_parallel_subrequests", "MOSAIC_MAX_PARALLEL_SUBREQUESTS"),
    ("metrics.token", "MOSAIC_METRICS_TOKEN"),
    ("oidc.issuer_url", "MOSAIC_OIDC_ISSUER_URL"),
    ("oidc.client_id", "MOSAIC_OIDC_CLIENT_ID"),
    ("oidc.client_secret", "MOSAIC_OIDC_CLIENT_SECRET"),
    ("oidc.redirect_url", "MOSAIC_OIDC_REDIRECT_URL"),
    ("oidc.group_roles", "MOSAIC_OIDC_GROUP_ROLES"),
    ("oidc.discovery_refresh_s", "MOSAIC_OIDC_DISCOVERY_REFRESH_S"),
    ("session.ttl_s", "MOSAIC_SESSION_TTL_S"),
    ("session.idle_timeout_s", "MOSAIC_SESSION_IDLE_TIMEOUT_S"),
    ("agents.docker_host", "MOSAIC_AGENTS_DOCKER_HOST"),
    ("agents.image", "MOSAIC_AGENTS_IMAGE"),
    ("agents.port", "MOSAIC_AGENTS_PORT"),
    ("agents.idle_timeout_s", "MOSAIC_AGENTS_IDLE_TIMEOUT_S"),
    ("agents.start_timeout_ms", "MOSAIC_AGENTS_START_TIMEOUT_MS"),
    ("agents.reaper_interval_ms", "MOSAIC_AGENTS_REAPER_INTERVAL_MS"),
];

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

/// Query and request limits (traffic shaping as configuration).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_body_bytes: usize,
    pub max_page_size: usize,
    pub request_timeout: Duration,
    /// How long a client may take to send a request head (HTTP/1).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed
    /// (before its first request, and between keep-alive requests).
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// Open client connections in all; more are closed at once.
    pub max_connections: usize,
    /// Open client connections from one IP address.
    pub max_connections_per_address: usize,
    /// Live subscriptions one user may hold, over WebSocket and SSE together.
    pub max_subscriptions_per_user: usize,
    /// Open GraphQL WebSocket connections of one user.
    pub max_ws_connections_per_user: usize,
    /// Changes buffered for the slowest subscriber; one that falls further
    /// behind is cut off (SUBSCRIBER_TOO_SLOW).
    pub subscription_buffer: usize,
    /// How often an idle subscription connection gets a keep-alive.
    pub subscription_keepalive: Duration,
    /// How long one message to a subscriber may take to send before the
    /// subscriber's connection is dropped.
    pub subscription_send_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 12,
            max_complexity: 20_000,
            max_aliases: 30,
            max_body_bytes: 256 * 1024,
            max_page_size: 100,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 512,
            max_connections_per_address: 64,
            max_subscriptions_per_user: 20,
            max_ws_connections_per_user: 8,
            subscription_buffer: 256,
            subscription_keepalive: Duration::from_secs(15),
            subscription_send_timeout: Duration::from_secs(10),
        }
    }
}

/// Peer protocol settings.
#[derive(Clone, Debug)]
pub struct FederationSettings {
    /// An extra CA to trust for peers (the demo's and the tests' own CA).
    pub ca_file: Option<PathBuf>,
    /// Allow plain-HTTP peers (development only).
    pub allow_http: bool,
    /// How long a federated request may take, end to end.
    pub deadline: Duration,
    /// The most instances a request may have passed through on arrival.
    pub hop_limit: u32,
    /// Lifetime of a signed request (expires - created), seconds.
    pub request_lifetime_s: i64,
    /// Allowed clock difference between instances, seconds.
    pub clock_skew_s: i64,
    /// How long a rotated-away key keeps verifying.
    pub key_grace: Duration,
    /// How often a receiver re-reads a peer's identity document (its keys).
    pub key_refresh: Duration,
    /// The largest answer read from a peer; more is cut (PEER_BAD_RESPONSE).
    pub max_answer_bytes: usize,
    /// Nonces remembered per peer within one request window; beyond it the
    /// peer's requests are refused until older ones expire.
    pub nonces_per_peer: usize,
    /// Non-public networks peers may be reached at (loopback, private,
    /// link-local, ...); empty: public addresses only.
    pub allowed_peer_networks: Vec<crate::federation::netguard::IpNet>,
    /// CONNECT requests accepted per source address and minute.
    pub connects_per_minute: usize,
    /// The most peers waiting for approval; further new CONNECTs are refused.
    pub max_pending_peers: i64,
    /// The most signed requests to peers one request may cause.
    pub max_subrequests: usize,
    /// The most of them in flight at once.
    pub max_parallel_subrequests: usize,
}

impl Default for FederationSettings {
    fn default() -> Self {
        Self {
            ca_file: None,
            allow_http: false,
            deadline: Duration::from_secs(5),
            hop_limit: 3,
            request_lifetime_s: 60,
            clock_skew_s: 30,
            key_grace: Duration::from_secs(7 * 24 * 3600),
            key_refresh: Duration::from_secs(300),
            max_answer_bytes: 8 * 1024 * 1024,
            nonces_per_peer: 10_000,
            allowed_peer_networks: Vec::new(),
            connects_per_minute: 10,
            max_pending_peers: 100,
            max_subrequests: 64,
            max_parallel_subrequests: 16,
        }
    }
}

/// Single sign-on through an OpenID provider (Authentik: `https://HOST/application/o/SLUG/`).
#[derive(Clone, Debug)]
pub struct OidcSettings {
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Where the provider sends the browser back; default `<public URL>/auth/callback`.
    pub redirect_url: Option<String>,
    /// `oidc.group_roles`: `group=admin` and `group=workspace:<uuid>:<ROLE>`, comma-separated.
    pub group_roles: Vec<GroupRole>,
    /// How old the provider's discovery document and keys may be when a login
    /// starts before they are fetched again; zero: at every login.
    pub discovery_refresh: Duration,
}

impl OidcSettings {
    pub const DEFAULT_DISCOVERY_REFRESH: Duration = Duration::from_secs(60);
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupRole {
    InstanceAdmin {
        group: String,
    },
    Workspace {
        group: String,
        workspace: uuid::Uuid,
        role: String,
    },
}

impl FromStr for GroupRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (group, role) = s.split_once('=').ok_or_else(|| format!("'{s}' is not group=role"))?;
        let group = group.trim().to_string();
        if group.is_empty() {
            return Err(format!("'{s}' names no group"));
        }
        let role = role.trim();
        if role == "admin" {
            return Ok(Self::InstanceAdmin { group });
        }
        let parts: Vec<&str> = role.splitn(3, ':').collect();
        match parts.as_slice() {
            ["workspace", ws, r] if ["OWNER", "ADMIN", "MEMBER", "GUEST"].contains(r) => Ok(Self::Workspace {
                group,
                workspace: ws.parse().map_err(|_| format!("'{ws}' is not a workspace id"))?,
                role: r.to_string(),
            }),
            _ => Err(format!(
                "role '{role}' is not 'admin' or 'workspace:<uuid>:OWNER|ADMIN|MEMBER|GUEST'"
            )),
        }
    }
}

/// Per-user agent containers (issue 5). `image`, `port` and `idle_timeout_s`
/// seed the instance's agent configuration in PostgreSQL on first start; from
/// then on the database (the `updateAgentConfig` mutation) is authoritative.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// The Docker Engine API: `unix:///path` or `tcp://host:port`.
    pub docker_host: String,
    pub image: String,
    /// The port the agent listens on inside its container.
    pub port: u16,
    pub idle_timeout: Duration,
    /// How long a start may take until the agent answers its health check.
    pub start_timeout: Duration,
    /// How often idle and stale agents are looked for.
    pub reaper_interval: Duration,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            docker_host: "unix:///var/run/docker.sock".into(),
            image: "mosaic-agent:latest".into(),
            port: 8080,
            idle_timeout: Duration::from_secs(900),
            start_timeout: Duration::from_secs(30),
            reaper_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Without it, Mosaic runs a private PostgreSQL cluster in `data_dir`.
    pub database_url: Option<String>,
    pub instance_name: String,
    pub log_format: LogFormat,
    pub pool_size: u32,
    pub statement_timeout: Duration,
    pub limits: Limits,
    /// Seals secrets at rest (the instance's private key, user secrets).
    pub secret_key: Option<Secret>,
    /// Development mode: allows running without `secret_key`.
    pub dev: bool,
    /// The URL peers reach this instance at; derived from `listen` if unset.
    pub public_url: Option<String>,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsFiles>,
    pub federation: FederationSettings,
    /// Single sign-on; off unless `oidc.issuer_url` is set.
    pub oidc: Option<OidcSettings>,
    /// Lifetime of a browser session.
    pub session_ttl: Duration,
    /// A browser session unused this long ends; zero: never for lack of use.
    pub session_idle_timeout: Duration,
    /// Per-user agent containers.
    pub agents: AgentSettings,
    /// Bearer token `/metrics` requires; without one it answers only on a
    /// loopback listen address.
    pub metrics_token: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            data_dir: PathBuf::from("./.mosaic"),
            database_url: None,
            instance_name: "mosaic".into(),
            log_format: LogFormat::Text,
            pool_size: 10,
            statement_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            secret_key: None,
            dev: false,
            public_url: None,
            tls: None,
            federation: FederationSettings::default(),
            oidc: None,
            session_ttl: Duration::from_secs(8 * 3600),
            session_idle_timeout: Duration::from_secs(2 * 3600),
            agents: AgentSettings::default(),
            metrics_token: None,
        }
    }
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

/// One raw value and where it came from, before parsing.
struct Raw {
    value: String,
    source_name: String,
}

impl Config {
    /// Loads from the process environment and, if `MOSAIC_CONFIG` names one, a TOML file.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(|name| std::env::var(name).ok())
    }

    /// Loads from the given variable lookup (tests pass their own).
    pub fn load(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut raw: BTreeMap<&'static str, Raw> = BTreeMap::new();
        if let Some(path) = env("MOSAIC_CONFIG") {
            read_file(&path, &mut raw)?;
        }
        for (key, var) in FIELDS {
            if let Some(value) = env(var) {
                raw.insert(
                    key,
                    Raw {
                        value,
                        source_name: (*var).to_string(),
                    },
                );
            }
        }
        Self::from_raw(raw)
    }

    fn from_raw(mut raw: BTreeMap<&'static str, Raw>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        let mut take = |key: &'static str| raw.remove(key);
        if let Some(r) = take("listen") {
            c.listen = listen_address(&r)?;
        }
        set(take("data_dir"), "data_dir", &mut c.data_dir)?;
        if let Some(r) = take("database_url") {
            if !(r.value.starts_with("postgres://") || r.value.starts_with("postgresql://")) {
                return Err(err("database_url", &r, "must start with postgres:// or postgresql://"));
            }
            c.database_url = Some(r.value);
        }
        if let Some(r) = take("instance_name") {
            let ok = !r.value.is_empty()
                && r.value.len() <= 63
                && r.value
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
            if !ok {
                return Err(err("instance_name", &r, "must be 1-63 characters of a-z, 0-9 and '-'"));
            }
            c.instance_name = r.value;
        }
        set(take("log_format"), "log_format", &mut c.log_format)?;
        set_range(take("db.pool_size"), "db.pool_size", 1, 1000, &mut c.pool_size)?;
        set_millis(
            take("db.statement_timeout_ms"),
            "db.statement_timeout_ms",
            &mut c.statement_timeout,
        )?;
        let l = &mut c.limits;
        set_range(take("limits.max_depth"), "limits.max_depth", 2, 1000, &mut l.max_depth)?;
        set_range(
            take("limits.max_complexity"),
            "limits.max_complexity",
            10,
            100_000_000,
            &mut l.max_complexity,
        )?;
        set_range(
            take("limits.max_aliases"),
            "limits.max_aliases",
            0,
            10_000,
            &mut l.max_aliases,
        )?;
        set_range(
            take("limits.max_body_bytes"),
            "limits.max_body_bytes",
            1024,
            64 * 1024 * 1024,
            &mut l.max_body_bytes,
        )?;
        set_range(
            take("limits.max_page_size"),
            "limits.max_page_size",
            1,
            10_000,
            &mut l.max_page_size,
        )?;
        set_millis(
            take("limits.request_timeout_ms"),
            "limits.request_timeout_ms",
            &mut l.request_timeout,
        )?;
        set_millis(
            take("limits.header_read_timeout_ms"),
            "limits.header_read_timeout_ms",
            &mut l.header_read_timeout,
        )?;
        set_millis(
            take("limits.idle_timeout_ms"),
            "limits.idle_timeout_ms",
            &mut l.idle_timeout,
        )?;
        set_millis(
            take("limits.tls_handshake_timeout_ms"),
            "limits.tls_handshake_timeout_ms",
            &mut l.tls_handshake_timeout,
        )?;
        set_range(
            take("limits.max_connections"),
            "limits.max_connections",
            1,
            1_000_000,
            &mut l.max_connections,
        )?;
        set_range(
            take("limits.max_connections_per_address"),
            "limits.max_connections_per_address",
            1,
            1_000_000,
            &mut l.max_connections_per_address,
        )?;
        set_range(
            take("limits.max_subscriptions_per_user"),
            "limits.max_subscriptions_per_user",
            1,
            100_000,
            &mut l.max_subscriptions_per_user,
        )?;
        set_range(
            take("limits.max_ws_connections_per_user"),
            "limits.max_ws_connections_per_user",
            1,
            100_000,
            &mut l.max_ws_connections_per_user,
        )?;
        set_range(
            take("limits.subscription_buffer"),
            "limits.subscription_buffer",
            1,
            1_000_000,
            &mut l.subscription_buffer,
        )?;
        set_millis(
            take("limits.subscription_keepalive_ms"),
            "limits.subscription_keepalive_ms",
            &mut l.subscription_keepalive,
        )?;
        set_millis(
            take("limits.subscription_send_timeout_ms"),
            "limits.subscription_send_timeout_ms",
            &mut l.subscription_send_timeout,
        )?;
        if let Some(r) = take("secret_key") {
            if r.value.len() < 32 {
                return Err(err("secret_key", &r, "must be at least 32 characters"));
            }
            c.secret_key = Some(Secret(r.value));
        }
        set(take("dev"), "dev", &mut c.dev)?;
        if let Some(r) = take("public_url") {
            if !(r.value.starts_with("https://") || r.value.starts_with("http://")) {
                return Err(err("public_url", &r, "must be an http(s) URL"));
            }
            c.public_url = Some(r.value);
        }
        match (take("tls.cert_file"), take("tls.key_file")) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                for (field, r) in [("tls.cert_file", &cert), ("tls.key_file", &key)] {
                    if !std::path::Path::new(&r.value).is_file() {
                        return Err(err(field, r, format!("no file {}", r.value)));
                    }
                }
                c.tls = Some(TlsFiles {
                    cert_file: cert.value.into(),
                    key_file: key.value.into(),
                });
            }
            (Some(r), None) | (None, Some(r)) => {
                return Err(err("tls", &r, "set both tls.cert_file and tls.key_file, or neither"));
            }
        }
        let f = &mut c.federation;
        if let Some(r) = take("federation.ca_file") {
            if !std::path::Path::new(&r.value).is_file() {
                return Err(err("federation.ca_file", &r, format!("no file {}", r.value)));
            }
            f.ca_file = Some(r.value.into());
        }
        set(
            take("federation.allow_http"),
            "federation.allow_http",
            &mut f.allow_http,
        )?;
        set_millis(
            take("federation.deadline_ms"),
            "federation.deadline_ms",
            &mut f.deadline,
        )?;
        set_range(
            take("federation.hop_limit"),
            "federation.hop_limit",
            1,
            16,
            &mut f.hop_limit,
        )?;
        set_range(
            take("federation.request_lifetime_s"),
            "federation.request_lifetime_s",
            1,
            3600,
            &mut f.request_lifetime_s,
        )?;
        set_range(
            take("federation.clock_skew_s"),
            "federation.clock_skew_s",
            0,
            600,
            &mut f.clock_skew_s,
        )?;
        let mut grace = f.key_grace.as_secs();
        set_range(
            take("federation.key_grace_s"),
            "federation.key_grace_s",
            0,
            365 * 24 * 3600,
            &mut grace,
        )?;
        f.key_grace = Duration::from_secs(grace);
        let mut refresh = f.key_refresh.as_secs();
        set_range(
            take("federation.key_refresh_s"),
            "federation.key_refresh_s",
            0,
            24 * 3600,
            &mut refresh,
        )?;
        f.key_refresh = Duration::from_secs(refresh);
        set_range(
            take("federation.max_answer_bytes"),
            "federation.max_answer_bytes",
            64 * 1024,
            1024 * 1024 * 1024,
            &mut f.max_answer_bytes,
        )?;
        set_range(
            take("federation.nonces_per_peer"),
            "federation.nonces_per_peer",
            1,
            1_000_000,
            &mut f.nonces_per_peer,
        )?;
        if let Some(r) = take("federation.allowed_peer_networks") {
            f.allowed_peer_networks = crate::federation::netguard::parse_networks(&r.value)
                .map_err(|e| err("federation.allowed_peer_networks", &r, e))?;
        }
        set_range(
            take("federation.connects_per_minute"),
            "federation.connects_per_minute",
            1,
            100_000,
            &mut f.connects_per_minute,
        )?;
        set_range(
            take("federation.max_pending_peers"),
            "federation.max_pending_peers",
            0,
            1_000_000,
            &mut f.max_pending_peers,
        )?;
        set_range(
            take("federation.max_subrequests"),
            "federation.max_subrequests",
            1,
            100_000,
            &mut f.max_subrequests,
        )?;
        set_range(
            take("federation.max_parallel_subrequests"),
            "federation.max_parallel_subrequests",
            1,
            1_000,
            &mut f.max_parallel_subrequests,
        )?;
        if let Some(r) = take("metrics.token") {
            if r.value.len() < 16 {
                return Err(err("metrics.token", &r, "use at least 16 characters"));
            }
            c.metrics_token = Some(Secret(r.value));
        }
        c.oidc = oidc_settings(&mut take)?;
        let mut ttl = c.session_ttl.as_secs();
        set_range(take("session.ttl_s"), "session.ttl_s", 60, 90 * 24 * 3600, &mut ttl)?;
        c.session_ttl = Duration::from_secs(ttl);
        let mut idle = c.session_idle_timeout.as_secs();
        match take("session.idle_timeout_s") {
            Some(r) if r.value == "0" => idle = 0,
            // Use is recorded once a minute, so a shorter timeout would misfire.
            r => set_range(r, "session.idle_timeout_s", 120, 90 * 24 * 3600, &mut idle)?,
        }
        c.session_idle_timeout = Duration::from_secs(idle);
        let a = &mut c.agents;
        if let Some(r) = take("agents.docker_host") {
            let ok = ["unix://", "tcp://", "http://"].iter().any(|p| r.value.starts_with(p));
            if !ok {
                return Err(err(
                    "agents.docker_host",
                    &r,
                    "must start with unix://, tcp:// or http://",
                ));
            }
            a.docker_host = r.value;
        }
        if let Some(r) = take("agents.image") {
            if r.value.trim().is_empty() || r.value.len() > 255 {
                return Err(err(
                    "agents.image",
                    &r,
                    "must be an image reference of 1-255 characters",
                ));
            }
            a.image = r.value;
        }
        set_range(take("agents.port"), "agents.port", 1, 65535, &mut a.port)?;
        let mut idle = a.idle_timeout.as_secs();
        set_range(
            take("agents.idle_timeout_s"),
            "agents.idle_timeout_s",
            1,
            30 * 24 * 3600,
            &mut idle,
        )?;
        a.idle_timeout = Duration::from_secs(idle);
        set_millis(
            take("agents.start_timeout_ms"),
            "agents.start_timeout_ms",
            &mut a.start_timeout,
        )?;
        set_millis(
            take("agents.reaper_interval_ms"),
            "agents.reaper_interval_ms",
            &mut a.reaper_interval,
        )?;
        Ok(c)
    }
}

fn oidc_settings(take: &mut impl FnMut(&'static str) -> Option<Raw>) -> Result<Option<OidcSettings>, ConfigError> {
    let issuer = take("oidc.issuer_url");
    let id = take("oidc.client_id");
    let secret = take("oidc.client_secret");
    let redirect = take("oidc.redirect_url");
    let roles = take("oidc.group_roles");
    let refresh = take("oidc.discovery_refresh_s");
    let Some(issuer) = issuer else {
        if let Some(r) = [&id, &secret, &redirect, &roles, &refresh].into_iter().flatten().next() {
            return Err(err("oidc.issuer_url", r, "required when any oidc setting is given"));
        }
        return Ok(None);
    };
    let is_url = |v: &str| v.starts_with("https://") || v.starts_with("http://");
    if !is_url(&issuer.value) {
        return Err(err("oidc.issuer_url", &issuer, "must be an http(s) URL"));
    }
    let missing = |field: &str| ConfigError {
        field: field.to_string(),
        source_name: FIELDS
            .iter()
            .find(|(key, _)| *key == field)
            .map_or(field, |(_, var)| var)
            .to_string(),
        reason: format!("required when oidc.issuer_url is set (by {})", issuer.source_name),
    };
    let id = id.ok_or_else(|| missing("oidc.client_id"))?;
    if id.value.trim().is_empty() {
        return Err(err("oidc.client_id", &id, "must not be empty"));
    }
    let secret = secret.ok_or_else(|| missing("oidc.client_secret"))?;
    if secret.value.is_empty() {
        return Err(err("oidc.client_secret", &secret, "must not be empty"));
    }
    if let Some(r) = &redirect
        && !is_url(&r.value)
    {
        return Err(err("oidc.redirect_url", r, "must be an http(s) URL"));
    }
    let mut group_roles = Vec::new();
    if let Some(r) = &roles {
        for item in r.value.split(',').filter(|i| !i.trim().is_empty()) {
            group_roles.push(item.parse().map_err(|e: String| err("oidc.group_roles", r, e))?);
        }
    }
    let mut refresh_s = OidcSettings::DEFAULT_DISCOVERY_REFRESH.as_secs();
    set_range(refresh, "oidc.discovery_refresh_s", 0, 24 * 3600, &mut refresh_s)?;
    Ok(Some(OidcSettings {
        issuer_url: issuer.value,
        client_id: id.value,
        client_secret: Secret(secret.value),
        redirect_url: redirect.map(|r| r.value),
        group_roles,
        discovery_refresh: Duration::from_secs(refresh_s),
    }))
}

/// `listen`: an address (`127.0.0.1:8080`, `[::1]:8080`) or a host name and
/// port (`localhost:8080`), which is resolved now; its first address is used.
fn listen_address(r: &Raw) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = r.value.parse() {
        return Ok(addr);
    }
    let resolved = r.value.to_socket_addrs().map_err(|e| {
        err(
            "listen",
            r,
            format!("'{}' is not an address or host:port ({e})", r.value),
        )
    })?;
    let mut addrs: Vec<SocketAddr> = resolved.collect();
    // IPv4 first, so `localhost` means 127.0.0.1 as in the default.
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| err("listen", r, format!("'{}' resolves to no address", r.value)))
}

fn err(field: &str, raw: &Raw, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        source_name: raw.source_name.clone(),
        reason: reason.into(),
    }
}

fn set<T: FromStr>(raw: Option<Raw>, field: &str, target: &mut T) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    if let Some(r) = raw {
        *target = r
            .value
            .parse()
            .map_err(|e: T::Err| err(field, &r, format!("'{}': {e}", r.value)))?;
    }
    Ok(())
}

fn set_range<T>(raw: Option<Raw>, field: &str, min: T, max: T, target: &mut T) -> Result<(), ConfigError>
where
    T: FromStr + PartialOrd + Copy + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    if let Some(r) = raw {
        let v: T = r
            .value
            .parse()
            .map_err(|e: T::Err| err(field, &r, format!("'{}': {e}", r.value)))?;
        if v < min || v > max {
            return Err(err(field, &r, format!("{v} is outside {min}..={max}")));
        }
        *target = v;
    }
    Ok(())
}

fn set_millis(raw: Option<Raw>, field: &str, target: &mut Duration) -> Result<(), ConfigError> {
    let mut ms = target.as_millis() as u64;
    set_range(raw, field, 1, 3_600_000, &mut ms)?;
    *target = Duration::from_millis(ms);
    Ok(())
}

/// Reads a TOML file into dotted keys; unknown keys are errors that name the key.
fn read_file(path: &str, out: &mut BTreeMap<&'static str, Raw>) -> Result<(), ConfigError> {
    let file_err = |field: &str, reason: String| ConfigError {
        field: field.to_string(),
        source_name: path.to_string(),
        reason,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| file_err("MOSAIC_CONFIG", format!("cannot read file: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e.span().map_or(String::new(), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!(" at line {line}, column {column}")
        });
        file_err("MOSAIC_CONFIG", format!("not valid TOML{at}: {}", e.message()))
    })?;
    let mut flat = Vec::new();
    flatten("", &table, &mut flat);
    for (key, value) in flat {
        let Some((known, _)) = FIELDS.iter().find(|(k, _)| *k == key) else {
            return Err(file_err(&key, "unknown setting".into()));
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(file_err(&key, format!("unsupported value type {}", other.type_str())));
            }
        };
        out.insert(
            known,
            Raw {
                value,
                source_name: path.to_string(),
            },
        );
    }
    Ok(())
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => out.push((key, other.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load(|k| map.get(k).cloned())
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
