//! `ContainerLifecycle`: the Docker Engine operations on agent containers,
//! over bollard. Knows nothing of users' rights or of the database: it turns
//! a [`ContainerSpec`] into a running container and reports what it sees.
//!
//! The engine is connected lazily and re-connected after a failure, so an
//! engine that is down (or a socket that does not exist) makes these calls
//! fail with [`AgentError::Unavailable`] and nothing else.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings, HealthConfig,
    HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::AgentError;

pub const LABEL_INSTANCE: &str = "mosaic.instance";
pub const LABEL_USER: &str = "mosaic.user";
pub const LABEL_VERSION: &str = "mosaic.config-version";
pub const LABEL_ROLE: &str = "mosaic.role";
/// The role of a user's agent container.
pub const ROLE_AGENT: &str = "agent";
/// The role of a container running a task agent (`agent_tasks::dispatch`).
pub const ROLE_TASK_AGENT: &str = "task-agent";

/// How long one Docker API call may take before the engine counts as unavailable.
const DOCKER_TIMEOUT_S: u64 = 60;

/// Everything a user's container is built from. Its `Debug` hides the
/// environment (it carries the user's secrets).
#[derive(Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub user_id: Uuid,
    pub version: i64,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: Vec<String>,
    pub port: u16,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
    pub read_only_rootfs: bool,
}

impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("name", &self.name)
            .field("user_id", &self.user_id)
            .field("version", &self.version)
            .field("image", &self.image)
            .field("env", &format_args!("<{} variables, redacted>", self.env.len()))
            .finish_non_exhaustive()
    }
}

/// A container that runs a task agent (`mosaic worker`): no published
/// port, the same hardening as a user's agent. Its `Debug` hides the
/// environment (it carries the agent's token).
#[derive(Clone)]
pub struct TaskAgentSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    /// A Docker network mode (e.g. `host`); None: the instance's agent network.
    pub network: Option<String>,
    /// `host-path:container-path:ro` mounts (the CA the agent trusts).
    pub binds: Vec<String>,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
}

impl std::fmt::Debug for TaskAgentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskAgentSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env", &format_args!("<{} variables, redacted>", self.env.len()))
            .finish_non_exhaustive()
    }
}

/// What the engine says about one container.
#[derive(Clone, Debug)]
pub struct Observed {
    pub id: String,
    pub name: String,
    pub user_id: Option<Uuid>,
    pub version: Option<i64>,
    pub running: bool,
    pub started_at: Option<OffsetDateTime>,
    /// The 127.0.0.1 port the agent's port is published on, while running.
    pub host_port: Option<u16>,
    pub labels: HashMap<String, String>,
}

pub struct ContainerLifecycle {
    host: String,
    instance_id: Uuid,
    docker: Mutex<Option<Docker>>,
}

impl ContainerLifecycle {
    pub fn new(host: &str, instance_id: Uuid) -> Self {
        Self {
            host: host.to_string(),
            instance_id,
            docker: Mutex::new(None),
        }
    }

    /// The deterministic container name of a user's agent on this instance.
    pub fn container_name(&self, user_id: Uuid) -> String {
        format!("mosaic-agent-{}-{}", short(self.instance_id), user_id.simple())
    }

    /// The deterministic container name of a task agent (`agent_tasks::dispatch`).
    pub fn task_agent_name(&self, agent: Uuid) -> String {
        format!("mosaic-task-agent-{}-{}", short(self.instance_id), agent.simple())
    }

    /// The instance's agent network: a bridge with inter-container traffic
    /// disabled, so agents reach the outside but not each other.
    pub fn network_name(&self) -> String {
        format!("mosaic-agents-{}", short(self.instance_id))
    }

    /// A connected client, connecting (and negotiating the API version) if needed.
    async fn docker(&self) -> Result<Docker, AgentError> {
        let mut slot = self.docker.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let docker = if let Some(path) = self.host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, DOCKER_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(&self.host, DOCKER_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
        }
        .map_err(|e| unavailable(&self.host, &e))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unavailable(&self.host, &e))?;
        *slot = Some(docker.clone());
        Ok(docker)
    }

    /// Maps an engine error; a transport failure drops the client so the next call reconnects.
    async fn fail(&self, e: bollard::errors::Error) -> AgentError {
        match e {
            bollard::errors::Error::DockerResponseServerError { status_code, message } => {
                AgentError::Engine(format!("Docker engine refused ({status_code}): {message}"))
            }
            other => {
                *self.docker.lock().await = None;
                unavailable(&self.host, &other)
            }
        }
    }

    pub async fn ping(&self) -> Result<(), AgentError> {
        let docker = self.docker().await?;
        match docker.ping().await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }

    fn labels(&self, role: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_INSTANCE.to_string(), self.instance_id.to_string()),
            (LABEL_ROLE.to_string(), role.to_string()),
        ])
    }

    async fn ensure_network(&self, docker: &Docker) -> Result<(), AgentError> {
        let name = self.network_name();
        match docker.inspect_network(&name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(self.fail(e).await),
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            internal: Some(false),
            options: Some(HashMap::from([(
                "com.docker.network.bridge.enable_icc".to_string(),
                "false".to_string(),
            )])),
            labels: Some(self.labels("agent-network")),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Created meanwhile by a concurrent start.
            Err(e) if conflict(&e) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }

    /// Create if missing (or built from another version), start if stopped.
    /// Returns the container as running, with its published port.
    pub async fn ensure(&self, spec: &ContainerSpec) -> Result<Observed, AgentError> {
        let docker = self.docker().await?;
        if let Some(o) = self.status(&spec.name).await? {
            if o.version != Some(spec.version) {
                tracing::info!(container = %spec.name, from = ?o.version, to = spec.version, "agent configuration changed: recreating");
                self.remove(&spec.name).await?;
            } else if o.running && o.host_port.is_some() {
                return Ok(o);
            } else {
                return self.start(&docker, &spec.name).await;
            }
        }
        self.ensure_network(&docker).await?;
        self.create(&docker, spec).await?;
        self.start(&docker, &spec.name).await
    }

    async fn create(&self, docker: &Docker, spec: &ContainerSpec) -> Result<(), AgentError> {
        let port_key = format!("{}/tcp", spec.port);
        let mut labels = self.labels(ROLE_AGENT);
        labels.insert(LABEL_USER.into(), spec.user_id.to_string());
        labels.insert(LABEL_VERSION.into(), spec.version.to_string());
        let network = self.network_name();
        let host_config = HostConfig {
            network_mode: Some(network.clone()),
            // Published on loopback only, on a port the engine picks.
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )])),
            ..hardened(
                spec.memory_bytes,
                spec.nano_cpus,
                spec.pids_limit,
                spec.read_only_rootfs,
            )
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key]),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network, EndpointSettings::default())])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&spec.name).build();
        match docker.create_container(Some(options), body).await {
            Ok(_) => Ok(()),
            // Another process created it meanwhile; starting it is all that is left.
            Err(e) if conflict(&e) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }

    async fn start(&self, docker: &Docker, name: &str) -> Result<Observed, AgentError> {
        match docker.start_container(name, None).await {
            Ok(()) => {}
            // 304: already running.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
            Err(e) => return Err(self.fail(e).await),
        }
        match self.status(name).await? {
            Some(o) if o.running && o.host_port.is_some() => Ok(o),
            Some(_) => Err(AgentError::StartFailed(
                "the agent container exited right after starting".into(),
            )),
            None => Err(AgentError::StartFailed(
                "the agent container vanished while starting".into(),
            )),
        }
    }

    /// Creates and starts a task agent's container (named once: a second
    /// start under the same name is refused by the engine).
    pub async fn run_task_agent(&self, spec: &TaskAgentSpec) -> Result<Observed, AgentError> {
        let docker = self.docker().await?;
        let mut labels = self.labels(ROLE_TASK_AGENT);
        labels.extend(spec.labels.clone());
        let network = match &spec.network {
            Some(mode) => mode.clone(),
            None => {
                self.ensure_network(&docker).await?;
                self.network_name()
            }
        };
        let host_config = HostConfig {
            network_mode: Some(network),
            binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
            ..hardened(spec.memory_bytes, spec.nano_cpus, spec.pids_limit, true)
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.command.clone()),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            // The image's health check is the server's; a worker serves nothing.
            healthcheck: Some(HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            }),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&spec.name).build();
        if let Err(e) = docker.create_container(Some(options), body).await {
            return Err(self.fail(e).await);
        }
        if let Err(e) = docker.start_container(&spec.name, None).await {
            let failed = self.fail(e).await;
            let _ = self.remove(&spec.name).await;
            return Err(failed);
        }
        self.status(&spec.name)
            .await?
            .ok_or_else(|| AgentError::StartFailed("the task agent container vanished while starting".into()))
    }

    /// Stops a container (SIGTERM, then SIGKILL after `grace_s`); a missing or
    /// stopped one is fine.
    pub async fn stop(&self, name: &str, grace_s: i32) -> Result<(), AgentError> {
        let docker = self.docker().await?;
        let options = StopContainerOptionsBuilder::new().t(grace_s).build();
        match docker.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }

    /// Removes a container, running or not; a missing one is fine.
    pub async fn remove(&self, name: &str) -> Result<(), AgentError> {
        let docker = self.docker().await?;
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            // 409: removal already in progress.
            Err(e) if conflict(&e) => Ok(()),
            Err(e) => Err(self.fail(e).await),
        }
    }

    /// The container's real state, or None when it does not exist.
    pub async fn status(&self, name: &str) -> Result<Option<Observed>, AgentError> {
        let docker = self.docker().await?;
        match docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(i) => Ok(Some(observed(i))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.fail(e).await),
        }
    }

    /// The last `lines` lines of the container's output.
    pub async fn logs_tail(&self, name: &str, lines: usize) -> Result<Vec<String>, AgentError> {
        let docker = self.docker().await?;
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = docker.logs(name, Some(options));
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(out) => text.push_str(&out.to_string()),
                Err(e) if not_found(&e) => return Ok(Vec::new()),
                Err(e) => return Err(self.fail(e).await),
            }
        }
        Ok(text.lines().map(str::to_string).collect())
    }

    /// Every user's agent container labelled with this instance, running or not.
    pub async fn list(&self) -> Result<Vec<Observed>, AgentError> {
        self.list_role(ROLE_AGENT).await
    }

    /// Every container of this instance in `role`, running or not.
    pub async fn list_role(&self, role: &str) -> Result<Vec<Observed>, AgentError> {
        let docker = self.docker().await?;
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_INSTANCE}={}", self.instance_id),
                format!("{LABEL_ROLE}={role}"),
            ],
        )]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let summaries = match docker.list_containers(Some(options)).await {
            Ok(s) => s,
            Err(e) => return Err(self.fail(e).await),
        };
        let mut out = Vec::new();
        for s in summaries {
            let Some(id) = s.id else { continue };
            if let Some(o) = self.status(&id).await? {
                out.push(o);
            }
        }
        Ok(out)
    }
}

/// Limits, no privileges, no capabilities beyond switching user and a low
/// port, a read-only root with a small /tmp: every agent container's.
fn hardened(memory_bytes: i64, nano_cpus: i64, pids_limit: i64, read_only_rootfs: bool) -> HostConfig {
    HostConfig {
        memory: Some(memory_bytes),
        memory_swap: Some(memory_bytes),
        nano_cpus: Some(nano_cpus),
        pids_limit: Some(pids_limit),
        privileged: Some(false),
        readonly_rootfs: Some(read_only_rootfs),
        tmpfs: read_only_rootfs.then(|| HashMap::from([("/tmp".to_string(), "rw,noexec,nosuid,size=16m".to_string())])),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(vec!["SETUID".into(), "SETGID".into(), "NET_BIND_SERVICE".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        init: Some(true),
        ..Default::default()
    }
}

fn short(id: Uuid) -> String {
    id.simple().to_string()[..12].to_string()
}

fn unavailable(host: &str, e: &bollard::errors::Error) -> AgentError {
    AgentError::Unavailable(format!("the Docker engine at {host} is not reachable: {e}"))
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }
    )
}

fn conflict(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }
    )
}

fn observed(i: ContainerInspectResponse) -> Observed {
    let labels = i.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
    let state = i.state.unwrap_or_default();
    let running = state.running.unwrap_or(false) || state.status == Some(ContainerStateStatusEnum::RUNNING);
    let started_at = state
        .started_at
        .as_deref()
        .and_then(|s| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
        .filter(|t| t.year() > 1);
    let host_port = i
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|ports| {
            ports
                .into_values()
                .flatten()
                .flatten()
                .find(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
        })
        .and_then(|b| b.host_port)
        .and_then(|p| p.parse().ok());
    Observed {
        id: i.id.unwrap_or_default(),
        name: i.name.unwrap_or_default().trim_start_matches('/').to_string(),
        user_id: labels.get(LABEL_USER).and_then(|u| u.parse().ok()),
        version: labels.get(LABEL_VERSION).and_then(|v| v.parse().ok()),
        running,
        started_at,
        host_port: if running { host_port } else { None },
        labels,
    }
}
