//! Agents as containers, and the reaper. One loop per instance (run by one
//! replica at a time, `db::jobs`), every `agent_tasks.reaper_interval` and
//! whenever work is queued or a slot frees:
//!
//! 1. **Reap**: a task whose agent missed its heartbeat goes back to the
//!    queue (DEAD after its last attempt); a container agent that lost its
//!    task that way has its container removed and its token revoked.
//! 2. **Reconcile** (also the first thing after a restart): the engine's
//!    task agent containers of this instance are compared with the container
//!    agents in PostgreSQL. A running container of a live agent is adopted
//!    (left alone: its worker goes on where it was); any other container is
//!    removed; a live agent whose container has exited or is gone is retired:
//!    its token revoked and what it held queued again at once, to resume
//!    from its checkpoint. Nothing is lost, and a task returned this way is
//!    refused to the old holder (its attempt is over), so nothing is done twice.
//! 3. **Dispatch**: for each workspace and each kind that has an agent
//!    profile (`agent_tasks.container_profiles`), containers are started
//!    while tasks ready to claim outnumber the idle container agents there,
//!    as long as the instance runs fewer container agents than its cap
//!    (`agent_tasks.max_running`). Each container runs `mosaic worker
//!    --exit-when-idle` with a token of its own for that workspace and kind;
//!    it exits when a claim's wait ends with no work, and is then removed.
//!
//! Everything here acts for no one, through migration 0064's definers.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use crate::config::AgentTaskSettings;
use crate::containers::lifecycle::{ROLE_TASK_AGENT, TaskAgentSpec};
use crate::containers::{AgentError, AgentService};
use crate::live::Live;

/// Seconds a container agent gets to exit after SIGTERM when it is killed.
pub const KILL_GRACE_S: i32 = 10;
/// Where a container agent finds the CA it trusts.
const CA_IN_CONTAINER: &str = "/etc/mosaic/ca.pem";
/// A container agent's limits.
const MEMORY_BYTES: i64 = 512 * 1024 * 1024;
const NANO_CPUS: i64 = 1_000_000_000;
const PIDS_LIMIT: i64 = 256;
/// After a container failed to start, no start is tried for this long.
const START_PAUSE: Duration = Duration::from_secs(15);

pub const LABEL_AGENT: &str = "mosaic.task-agent";
pub const LABEL_WORKSPACE: &str = "mosaic.workspace";
pub const LABEL_KIND: &str = "mosaic.kind";

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub reaped: usize,
    pub adopted: usize,
    pub removed: usize,
    pub retired: usize,
    pub started: usize,
}

pub struct Dispatcher {
    pool: PgPool,
    agents: Arc<AgentService>,
    settings: AgentTaskSettings,
    /// The instance's URL as container agents reach it.
    url: String,
    /// The CA container agents trust besides the system's (`federation.ca_file`).
    ca_file: Option<PathBuf>,
    paused_until: std::sync::Mutex<Option<Instant>>,
    warned: std::sync::atomic::AtomicBool,
    /// Held while containers are counted and started, so the cap holds
    /// between the dispatcher's starts and explicit ones (`startAgent`).
    starting: tokio::sync::Mutex<()>,
}

/// The dispatcher of each instance in this process, for the resolvers
/// (the request context carries no application state).
static DISPATCHERS: std::sync::Mutex<Vec<(Uuid, std::sync::Weak<Dispatcher>)>> = std::sync::Mutex::new(Vec::new());

/// The dispatcher of instance `instance`, while it runs.
pub fn of(instance: Uuid) -> Option<Arc<Dispatcher>> {
    let all = DISPATCHERS.lock().expect("dispatchers lock");
    all.iter()
        .rev()
        .find(|(i, _)| *i == instance)
        .and_then(|(_, d)| d.upgrade())
}

/// Why an explicit start was refused.
#[derive(Debug)]
pub enum StartRefusal {
    /// No profile for the kind (`agent_tasks.container_profiles`).
    NoProfile,
    /// The instance runs `agent_tasks.max_running` container agents already.
    AtCap(usize),
    Failed(anyhow::Error),
}

#[derive(sqlx::FromRow)]
struct ContainerAgent {
    id: Uuid,
    container_name: String,
    workspace_id: Option<Uuid>,
    kind: Option<String>,
    holding: i64,
}

impl Dispatcher {
    pub fn new(
        pool: PgPool,
        agents: Arc<AgentService>,
        settings: AgentTaskSettings,
        base_url: &str,
        ca_file: Option<PathBuf>,
    ) -> Self {
        let url = settings.container_url.clone().unwrap_or_else(|| base_url.to_string());
        Self {
            pool,
            agents,
            settings,
            url,
            ca_file,
            paused_until: Default::default(),
            warned: Default::default(),
            starting: Default::default(),
        }
    }

    /// Makes this the dispatcher `of(instance)` finds (the last registered wins).
    pub fn register(self: &Arc<Self>, instance: Uuid) {
        let mut all = DISPATCHERS.lock().expect("dispatchers lock");
        all.retain(|(_, d)| d.strong_count() > 0);
        all.push((instance, Arc::downgrade(self)));
    }

    /// An explicit start of a container agent for `kind` in `ws` (the
    /// caller has checked who asks): refused at the instance's cap.
    /// Returns the new agent's id.
    pub async fn start_explicitly(&self, ws: Uuid, kind: &str) -> Result<Uuid, StartRefusal> {
        if !self.settings.container_profiles.contains_key(kind) {
            return Err(StartRefusal::NoProfile);
        }
        let _starting = self.starting.lock().await;
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_task_container_agents()")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StartRefusal::Failed(e.into()))?;
        if running as usize >= self.settings.max_running {
            return Err(StartRefusal::AtCap(self.settings.max_running));
        }
        self.start(ws, kind).await.map_err(StartRefusal::Failed)
    }

    fn containers_on(&self) -> bool {
        !self.settings.container_profiles.is_empty()
    }

    /// Passes until `closing` resolves.
    pub async fn run(self: Arc<Self>, live: Arc<Live>, closing: impl Future<Output = ()>) {
        tokio::pin!(closing);
        let mut tick = tokio::time::interval(self.settings.reaper_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = live.agent_task_queue().clone();
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.pool.is_closed() {
                return;
            }
            // One replica at a time: they share the queue and the engine's containers.
            let pass = match crate::db::jobs::on_one_replica(&self.pool, "agent_tasks.dispatch", self.pass()).await {
                Ok(pass) => pass.unwrap_or_default(),
                Err(e) => {
                    tracing::debug!(error = %e, "agent tasks: cannot take the dispatcher's turn");
                    Pass::default()
                }
            };
            if pass != Pass::default() {
                tracing::info!(?pass, "agent tasks: reaped, reconciled, dispatched");
            }
            tokio::select! {
                () = &mut closing => return,
                _ = tick.tick() => {}
                () = &mut woken, if self.containers_on() => {}
            }
        }
    }

    /// One pass: reap, then (with container profiles) reconcile and dispatch.
    pub async fn pass(&self) -> Pass {
        let mut pass = Pass::default();
        match self.reap(&mut pass).await {
            Ok(()) => {}
            Err(e) if self.pool.is_closed() => tracing::debug!(error = %e, "reaping after close"),
            Err(e) => tracing::warn!(error = %e, "reaping agent tasks"),
        }
        if self.containers_on()
            && let Err(e) = self.reconcile_and_dispatch(&mut pass).await
        {
            if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(error = %e, "container agents: reconcile or dispatch failed (said once)");
            } else {
                tracing::debug!(error = %e, "container agents: reconcile or dispatch failed");
            }
        }
        pass
    }

    async fn reap(&self, pass: &mut Pass) -> anyhow::Result<()> {
        let lost: Vec<(Uuid, Option<Uuid>)> =
            sqlx::query_as("SELECT task_id, agent_id FROM agent_tasks_reap_lost($1 * interval '1 millisecond')")
                .bind(self.settings.heartbeat_timeout.as_millis() as f64)
                .fetch_all(&self.pool)
                .await?;
        pass.reaped = lost.len();
        if !self.containers_on() {
            return Ok(());
        }
        let agents: HashSet<Uuid> = lost.into_iter().filter_map(|(_, a)| a).collect();
        for agent in agents {
            // A token agent has no container: removing none is fine.
            self.agents
                .lifecycle
                .remove(&self.agents.lifecycle.task_agent_name(agent))
                .await
                .map_err(engine)?;
            self.retire(agent, "its agent missed its heartbeat; container removed")
                .await?;
        }
        Ok(())
    }

    /// Revokes a container agent's token and queues again what it held.
    async fn retire(&self, agent: Uuid, why: &str) -> Result<i32, sqlx::Error> {
        sqlx::query_scalar("SELECT agent_task_container_retire($1, $2)")
            .bind(agent)
            .bind(why)
            .fetch_one(&self.pool)
            .await
    }

    async fn reconcile_and_dispatch(&self, pass: &mut Pass) -> anyhow::Result<()> {
        let _starting = self.starting.lock().await;
        let lifecycle = &self.agents.lifecycle;
        let observed = lifecycle.list_role(ROLE_TASK_AGENT).await.map_err(engine)?;
        let agents: Vec<ContainerAgent> = sqlx::query_as("SELECT * FROM agent_task_container_agents()")
            .fetch_all(&self.pool)
            .await?;
        let by_name: HashMap<&str, &ContainerAgent> = agents.iter().map(|a| (a.container_name.as_str(), a)).collect();
        let mut alive: HashSet<Uuid> = HashSet::new();
        for o in &observed {
            match by_name.get(o.name.as_str()) {
                Some(a) if o.running => {
                    alive.insert(a.id);
                    pass.adopted += 1;
                }
                Some(a) => {
                    lifecycle.remove(&o.id).await.map_err(engine)?;
                    pass.removed += 1;
                    let returned = self.retire(a.id, "its agent's container exited").await?;
                    if returned > 0 {
                        tracing::warn!(agent = %a.id, tasks = returned, "a container agent exited holding work: queued again");
                    }
                    pass.retired += 1;
                }
                None => {
                    tracing::info!(container = %o.name, "removing a task agent container without a live agent");
                    lifecycle.remove(&o.id).await.map_err(engine)?;
                    pass.removed += 1;
                }
            }
        }
        let seen: HashSet<&str> = observed.iter().map(|o| o.name.as_str()).collect();
        for a in agents.iter().filter(|a| !seen.contains(a.container_name.as_str())) {
            self.retire(a.id, "its agent's container is gone").await?;
            pass.retired += 1;
        }
        let paused = self
            .paused_until
            .lock()
            .expect("pause lock")
            .is_some_and(|t| Instant::now() < t);
        if paused {
            return Ok(());
        }
        // Idle container agents per workspace and kind, and all that run.
        let mut idle: HashMap<(Uuid, &str), i64> = HashMap::new();
        for a in agents.iter().filter(|a| alive.contains(&a.id)) {
            if let (Some(ws), Some(kind)) = (a.workspace_id, a.kind.as_deref()) {
                *idle.entry((ws, kind)).or_default() += 1 - a.holding.min(1);
            }
        }
        let mut running = alive.len();
        let demand: Vec<(Uuid, String, i64, i64)> = sqlx::query_as("SELECT * FROM agent_task_demand()")
            .fetch_all(&self.pool)
            .await?;
        for (ws, kind, ready, _held) in demand {
            if !self.settings.container_profiles.contains_key(&kind) {
                continue;
            }
            let wanted = ready - idle.get(&(ws, kind.as_str())).copied().unwrap_or(0);
            for _ in 0..wanted.max(0) {
                if running >= self.settings.max_running {
                    return Ok(());
                }
                if let Err(e) = self.start(ws, &kind).await {
                    *self.paused_until.lock().expect("pause lock") = Some(Instant::now() + START_PAUSE);
                    tracing::warn!(error = %e, workspace = %ws, kind, "a container agent did not start; starts paused");
                    return Ok(());
                }
                running += 1;
                pass.started += 1;
            }
        }
        Ok(())
    }

    /// Starts a container agent for `kind` in `ws`: its agent (token) first,
    /// so a container never runs without one; retired if the start fails.
    async fn start(&self, ws: Uuid, kind: &str) -> anyhow::Result<Uuid> {
        let profile = self
            .settings
            .container_profiles
            .get(kind)
            .ok_or_else(|| anyhow::anyhow!("no agent profile for {kind}"))?;
        let lifecycle = &self.agents.lifecycle;
        let agent = Uuid::now_v7();
        let name = lifecycle.task_agent_name(agent);
        let token = super::mutations::generate_token();
        sqlx::query("SELECT agent_task_container_agent($1, $2, $3, $4, $5)")
            .bind(agent)
            .bind(&name)
            .bind(crate::auth::tokens::hash(&token))
            .bind(ws)
            .bind(kind)
            .execute(&self.pool)
            .await?;
        let mut command = profile.command.clone();
        command.extend(["--url".to_string(), self.url.clone()]);
        let mut binds = Vec::new();
        if let Some(ca) = &self.ca_file {
            command.extend(["--ca-file".to_string(), CA_IN_CONTAINER.to_string()]);
            binds.push(format!("{}:{CA_IN_CONTAINER}:ro", ca.display()));
        }
        let mut env: Vec<String> = profile.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("MOSAIC_AGENT_TOKEN={token}"));
        let spec = TaskAgentSpec {
            name: name.clone(),
            image: profile.image.clone(),
            command,
            env,
            labels: HashMap::from([
                (LABEL_AGENT.to_string(), agent.to_string()),
                (LABEL_WORKSPACE.to_string(), ws.to_string()),
                (LABEL_KIND.to_string(), kind.to_string()),
            ]),
            network: self.settings.container_network.clone(),
            binds,
            memory_bytes: MEMORY_BYTES,
            nano_cpus: NANO_CPUS,
            pids_limit: PIDS_LIMIT,
        };
        match lifecycle.run_task_agent(&spec).await {
            Ok(_) => {
                tracing::info!(container = %name, workspace = %ws, kind, "container agent started");
                Ok(agent)
            }
            Err(e) => {
                let _ = self.retire(agent, "its container did not start").await;
                Err(engine(e))
            }
        }
    }
}

fn engine(e: AgentError) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", e.code(), e.message())
}

/// Stops the container of a killed or revoked agent, if it runs in one: SIGTERM, a grace of
/// [`KILL_GRACE_S`], then removal. In the background: the kill is recorded
/// already, and the agent is refused at its next call whatever happens here.
pub fn stop_agent_container(agents: &Arc<AgentService>, agent: Uuid) {
    let agents = agents.clone();
    tokio::spawn(async move {
        let name = agents.lifecycle.task_agent_name(agent);
        let stopped = async {
            agents.lifecycle.stop(&name, KILL_GRACE_S).await?;
            agents.lifecycle.remove(&name).await
        };
        if let Err(e) = stopped.await {
            // No engine: the agent was not a container of ours.
            tracing::debug!(container = %name, code = e.code(), "stopping a killed agent's container");
        }
    });
}
