//! Agent tasks: the queue's cap, the heartbeat agents must keep, the
//! sizes an agent controls through the worker API, and the agent profiles
//! of the kinds worked by containers Mosaic starts (`agent_tasks::dispatch`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::setting::settings;

settings! {
    /// The agent task queue and its worker API.
    pub struct AgentTaskSettings {
        /// Tasks held (assigned or running) on this instance at once; a
        /// claim beyond it waits, and is answered 429 AGENT_LIMIT_REACHED
        /// when its wait ends with no slot free.
        max_running: usize = 20; "agent_tasks.max_running", "MOSAIC_AGENT_TASKS_MAX_RUNNING", range(1, 100_000);
        /// A held task whose agent sent no heartbeat for this long goes back
        /// to the queue, to resume from its last checkpoint.
        heartbeat_timeout: Duration = Duration::from_secs(30);
            "agent_tasks.heartbeat_timeout_ms", "MOSAIC_AGENT_TASKS_HEARTBEAT_TIMEOUT_MS", millis();
        /// How often the reaper looks for missed heartbeats.
        reaper_interval: Duration = Duration::from_secs(5);
            "agent_tasks.reaper_interval_ms", "MOSAIC_AGENT_TASKS_REAPER_INTERVAL_MS", millis();
        /// The largest checkpoint or result, in bytes of JSON.
        max_checkpoint_bytes: usize = 64 * 1024;
            "agent_tasks.max_checkpoint_bytes", "MOSAIC_AGENT_TASKS_MAX_CHECKPOINT_BYTES", range(16, 16 * 1024 * 1024);
        /// The longest a claim may wait for work (its `waitMs` is capped here);
        /// below `limits.request_timeout_ms`, which would cut it off.
        max_claim_wait: Duration = Duration::from_secs(25);
            "agent_tasks.max_claim_wait_ms", "MOSAIC_AGENT_TASKS_MAX_CLAIM_WAIT_MS", millis();
        /// The first retry's delay; each further one doubles, up to `retry_max`.
        retry_base: Duration = Duration::from_secs(1);
            "agent_tasks.retry_base_ms", "MOSAIC_AGENT_TASKS_RETRY_BASE_MS", millis();
        retry_max: Duration = Duration::from_secs(300);
            "agent_tasks.retry_max_ms", "MOSAIC_AGENT_TASKS_RETRY_MAX_MS", millis();
        /// The kinds whose tasks containers Mosaic starts work, each with its
        /// agent profile: JSON `{"SCRIPT": {"image": "...", "command": [...],
        /// "env": {"K": "V"}}}`; a field left out takes its default (image
        /// `mosaic:local`, command `["worker", "--exit-when-idle"]`, no env).
        /// Empty (the default): no containers, agents register with tokens.
        container_profiles: BTreeMap<String, AgentProfile> = BTreeMap::new();
            "agent_tasks.container_profiles", "MOSAIC_AGENT_TASKS_CONTAINER_PROFILES", profiles;
        /// The URL container agents reach this instance at; none: its base URL.
        container_url: Option<String> = None;
            "agent_tasks.container_url", "MOSAIC_AGENT_TASKS_CONTAINER_URL", some(http_url());
        /// The Docker network mode of container agents (`host` for an instance
        /// bound to loopback); none: the instance's agent network.
        container_network: Option<String> = None;
            "agent_tasks.container_network", "MOSAIC_AGENT_TASKS_CONTAINER_NETWORK", some(network_mode);
    }
}

/// What a container agent of one kind runs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentProfile {
    pub image: String,
    /// The image's entrypoint gets this; `--url` is added (the token is in
    /// `MOSAIC_AGENT_TOKEN`, the CA in `--ca-file` when one is configured).
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl Default for AgentProfile {
    fn default() -> Self {
        Self {
            image: "mosaic:local".into(),
            command: vec!["worker".into(), "--exit-when-idle".into()],
            env: BTreeMap::new(),
        }
    }
}

const KINDS: [&str; 4] = ["WORKER", "REVIEWER", "TESTER", "SCRIPT"];

fn profiles(value: &str) -> Result<BTreeMap<String, AgentProfile>, String> {
    let map: BTreeMap<String, AgentProfile> =
        serde_json::from_str(value).map_err(|e| format!("JSON of agent profiles by kind: {e}"))?;
    for (kind, p) in &map {
        if !KINDS.contains(&kind.as_str()) {
            return Err(format!("'{kind}' is not a kind ({})", KINDS.join(", ")));
        }
        if p.image.trim().is_empty() || p.image.len() > 255 {
            return Err(format!("{kind}.image: an image reference of 1-255 characters"));
        }
        if p.env
            .keys()
            .any(|k| k.is_empty() || k.contains('=') || k == "MOSAIC_AGENT_TOKEN")
        {
            return Err(format!("{kind}.env: names without '=', not MOSAIC_AGENT_TOKEN"));
        }
    }
    Ok(map)
}

fn network_mode(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "_.-:".contains(c));
    if ok {
        Ok(value.into())
    } else {
        Err("a Docker network name or mode".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_take_defaults_and_refuse_unknown_kinds_and_fields() {
        let p = profiles(r#"{"SCRIPT": {"image": "x:1"}, "TESTER": {}}"#).unwrap();
        assert_eq!(p["SCRIPT"].image, "x:1");
        assert_eq!(p["SCRIPT"].command, AgentProfile::default().command);
        assert_eq!(p["TESTER"], AgentProfile::default());
        assert!(profiles(r#"{"PAINTER": {}}"#).unwrap_err().contains("not a kind"));
        assert!(profiles(r#"{"SCRIPT": {"img": "x"}}"#).is_err());
        assert!(profiles(r#"{"SCRIPT": {"env": {"MOSAIC_AGENT_TOKEN": "x"}}}"#).is_err());
        assert!(network_mode("host").is_ok() && network_mode("a b").is_err());
    }
}
