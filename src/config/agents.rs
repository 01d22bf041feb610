//! Per-user agent containers. `image`, `port` and `idle_timeout_s` seed the
//! instance's agent configuration in PostgreSQL on first start; from then on
//! the database (the `updateAgentConfig` mutation) is authoritative.

use std::time::Duration;

use super::setting::settings;

settings! {
    /// Where and how agent containers run.
    pub struct AgentSettings {
        /// The Docker Engine API: `unix:///path` or `tcp://host:port`.
        docker_host: String = "unix:///var/run/docker.sock".into();
            "agents.docker_host", "MOSAIC_AGENTS_DOCKER_HOST", docker_host;
        image: String = "mosaic-agent:latest".into(); "agents.image", "MOSAIC_AGENTS_IMAGE", image_reference;
        /// The port the agent listens on inside its container.
        port: u16 = 8080; "agents.port", "MOSAIC_AGENTS_PORT", range(1, 65535);
        idle_timeout: Duration = Duration::from_secs(900);
            "agents.idle_timeout_s", "MOSAIC_AGENTS_IDLE_TIMEOUT_S", seconds(1, 30 * 24 * 3600);
        /// How long a start may take until the agent answers its health check.
        start_timeout: Duration = Duration::from_secs(30);
            "agents.start_timeout_ms", "MOSAIC_AGENTS_START_TIMEOUT_MS", millis();
        /// How often idle and stale agents are looked for.
        reaper_interval: Duration = Duration::from_secs(10);
            "agents.reaper_interval_ms", "MOSAIC_AGENTS_REAPER_INTERVAL_MS", millis();
    }
}

fn docker_host(value: &str) -> Result<String, String> {
    if ["unix://", "tcp://", "http://"].iter().any(|p| value.starts_with(p)) {
        Ok(value.into())
    } else {
        Err("must start with unix://, tcp:// or http://".into())
    }
}

fn image_reference(value: &str) -> Result<String, String> {
    if value.trim().is_empty() || value.len() > 255 {
        Err("must be an image reference of 1-255 characters".into())
    } else {
        Ok(value.into())
    }
}
