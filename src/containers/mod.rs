//! Per-user agent containers (issue 5): started on demand, stopped when idle.
//!
//! * [`lifecycle::ContainerLifecycle`] talks to the Docker engine (bollard).
//! * [`AgentService`] decides: it reads the user's configuration from
//!   PostgreSQL (under the user's RLS scope), builds the container spec with
//!   the user's sealed secrets opened, starts exactly one container per user
//!   however many requests arrive at once (a per-user async lock), waits for
//!   the agent's health check, and records timings.
//! * [`reaper`] stops idle agents and restarts running ones whose configuration
//!   changed; [`reconcile`] adopts or removes this instance's containers at start.
//! * Replicas of one instance share one Docker engine; each agent is managed
//!   (started, restarted, stopped) by the replica holding its lease in
//!   PostgreSQL (migration 0078), and the others proxy to the container it runs.
//! * [`proxy`] serves `ANY /agent/*path` to the user's container on 127.0.0.1.
//!
//! The GraphQL resolvers reach the service of their instance through
//! [`service`] (a registry keyed by instance id), since the request context
//! carries no application state.

pub mod lifecycle;
pub mod reaper;
pub mod reconcile;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::ErrorExtensions;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::AgentSettings;
use crate::secrets::{Sealer, Secret};
use lifecycle::ContainerLifecycle;

/// The sealing purpose of agent secrets (its own derived key).
pub const SECRET_PURPOSE: &str = "mosaic-agent-secrets-v1";

/// Seconds an agent gets to exit after SIGTERM before it is killed.
const STOP_GRACE_S: i32 = 5;

#[derive(Clone, Debug)]
pub enum AgentError {
    /// The Docker engine cannot be reached.
    Unavailable(String),
    /// The engine refused an operation.
    Engine(String),
    /// The container did not come up or did not become healthy.
    StartFailed(String),
    Database(Arc<sqlx::Error>),
}

impl AgentError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "AGENT_UNAVAILABLE",
            Self::Engine(_) => "AGENT_ENGINE_ERROR",
            Self::StartFailed(_) => "AGENT_START_FAILED",
            Self::Database(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Unavailable(m) => format!("agents are unavailable: {m}"),
            Self::Engine(m) => m.clone(),
            Self::StartFailed(m) => format!("the agent did not start: {m}"),
            Self::Database(_) => "internal error".into(),
        }
    }

    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Engine(_) | Self::StartFailed(_) => StatusCode::BAD_GATEWAY,
            Self::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for AgentError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(Arc::new(e))
    }
}

impl From<AgentError> for async_graphql::Error {
    fn from(e: AgentError) -> Self {
        if let AgentError::Database(inner) = &e {
            tracing::error!(error = %inner, "agent database error");
        }
        let code = e.code();
        async_graphql::Error::new(e.message()).extend_with(|_, ext| ext.set("code", code))
    }
}

/// What this process knows of one user's agent between requests.
#[derive(Default)]
struct Slot {
    /// Held while starting or stopping: one start per user at a time.
    lock: tokio::sync::Mutex<()>,
    /// Readiness, requests in flight and activity, under one lock so that the
    /// reaper's "idle and nothing in flight: no longer ready" is one step
    /// that a request registering itself is ordered against (see [`InFlight`]).
    live: std::sync::Mutex<Live>,
    persisted_active: std::sync::Mutex<Option<OffsetDateTime>>,
}

#[derive(Default)]
struct Live {
    /// Running, healthy, on this port, built from this version.
    ready: Option<(u16, i64)>,
    /// Proxied requests under way (one per live [`InFlight`] guard).
    in_flight: usize,
    /// The last traffic: a request starting, its answer arriving, or it ending.
    last_active: Option<OffsetDateTime>,
}

impl Slot {
    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().expect("slot lock")
    }
    /// The port, if ready and built from `version`.
    fn ready_at(&self, version: Option<i64>) -> Option<u16> {
        self.live()
            .ready
            .filter(|&(_, v)| Some(v) == version)
            .map(|(port, _)| port)
    }
    fn set_ready(&self, value: Option<(u16, i64)>) {
        self.live().ready = value;
    }
    fn touch(&self) {
        self.live().last_active = Some(OffsetDateTime::now_utc());
    }
    fn last_active(&self) -> Option<OffsetDateTime> {
        self.live().last_active
    }
    fn in_flight(&self) -> usize {
        self.live().in_flight
    }
}

/// One proxied request to a user's agent, from before the agent is looked up
/// until the exchange with it is over. `http::agent::forward` holds it for its
/// whole run; it buffers the agent's answer before returning, so the
/// container is done with the request when the guard drops (a request that
/// is cancelled or times out drops it too). While any guard is alive the idle
/// reaper leaves the agent running, and dropping one counts as activity, so
/// idleness is measured from the end of the last request.
///
/// Ordering with the reaper: the count is raised under the slot's `live` lock
/// *before* the request reads `ready`, and [`AgentService::stop_if_idle`],
/// holding the user's start/stop lock, checks the count and clears `ready` in
/// one step under that same `live` lock. Either the reaper sees the request
/// and keeps the agent, or it cleared `ready` first, and then the request
/// finds it not ready, waits in [`AgentService::ensure_running`] for the
/// user's lock until the stop is done, and starts the agent again. The reaper
/// can never decide "idle", let a request reach the old container, and stop
/// it under that request.
///
/// Only the idle reaper honours it: an explicit stop (`stopMyAgent`, an
/// administrator deactivating the user) and a restart onto a changed
/// configuration still interrupt requests in flight.
#[must_use = "the request counts as in flight only while the guard is alive"]
pub struct InFlight {
    slot: Arc<Slot>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut live = self.slot.live();
        live.in_flight = live.in_flight.saturating_sub(1);
        live.last_active = Some(OffsetDateTime::now_utc());
    }
}

pub struct AgentService {
    pub lifecycle: ContainerLifecycle,
    pub(crate) pool: PgPool,
    pub instance_id: Uuid,
    /// This process, as the holder of agent leases (a fresh id each start).
    pub replica_id: Uuid,
    pub settings: AgentSettings,
    sealer: Sealer,
    slots: std::sync::Mutex<HashMap<Uuid, Arc<Slot>>>,
    pub(crate) http: reqwest::Client,
    /// Set once reconciliation with the engine has succeeded.
    reconciled: std::sync::atomic::AtomicBool,
}

impl AgentService {
    /// Seeds the instance's agent configuration (first start only), registers
    /// the service and starts the reaper, which reconciles first. Never
    /// touches the Docker engine itself, so an engine that is down cannot stop
    /// the instance from starting.
    pub async fn start(
        settings: &AgentSettings,
        pool: PgPool,
        instance_id: Uuid,
        secret: &Secret,
    ) -> anyhow::Result<Arc<Self>> {
        store::seed_config(&pool, settings).await?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        let service = Arc::new(Self {
            lifecycle: ContainerLifecycle::new(&settings.docker_host, instance_id),
            pool,
            instance_id,
            replica_id: Uuid::new_v4(),
            settings: settings.clone(),
            sealer: Sealer::new(secret, SECRET_PURPOSE),
            slots: Default::default(),
            http,
            reconciled: Default::default(),
        });
        tokio::spawn(reaper::run(Arc::downgrade(&service)));
        Ok(service)
    }

    fn slot(&self, user_id: Uuid) -> Arc<Slot> {
        self.slots
            .lock()
            .expect("slots lock")
            .entry(user_id)
            .or_default()
            .clone()
    }

    pub fn container_name(&self, user_id: Uuid) -> String {
        self.lifecycle.container_name(user_id)
    }

    /// Records traffic for the idle reaper.
    pub fn touch(&self, user_id: Uuid) {
        self.slot(user_id).touch();
    }

    /// Counts a proxied request to the user's agent as in flight until the
    /// guard is dropped (see [`InFlight`]); taken before [`Self::ensure_running`].
    pub fn begin_request(&self, user_id: Uuid) -> InFlight {
        let slot = self.slot(user_id);
        {
            let mut live = slot.live();
            live.in_flight += 1;
            live.last_active = Some(OffsetDateTime::now_utc());
        }
        InFlight { slot }
    }

    /// Proxied requests to the user's agent under way in this process.
    pub fn in_flight(&self, user_id: Uuid) -> usize {
        self.slots
            .lock()
            .expect("slots lock")
            .get(&user_id)
            .map_or(0, |s| s.in_flight())
    }

    /// The last traffic this process saw for a user.
    pub fn last_active(&self, user_id: Uuid) -> Option<OffsetDateTime> {
        self.slots
            .lock()
            .expect("slots lock")
            .get(&user_id)
            .and_then(|s| s.last_active())
    }

    /// Forgets that a user's agent is ready (it stopped answering).
    pub fn forget(&self, user_id: Uuid) {
        self.slot(user_id).set_ready(None);
    }

    /// Makes sure the user's agent runs, healthy, on its current configuration;
    /// returns its loopback port. Concurrent callers for one user share one
    /// start: in this process by the user's lock, across replicas by the
    /// agent's lease (the replica holding it starts the container, the others
    /// use the one it runs).
    pub async fn ensure_running(&self, user_id: Uuid) -> Result<u16, AgentError> {
        let slot = self.slot(user_id);
        let wait_until = Instant::now() + self.settings.start_timeout;
        let mut delay = Duration::from_millis(10);
        loop {
            let agent = store::managed(&self.pool, user_id, self.replica_id).await?;
            match agent.manager {
                store::Manager::This => {
                    if let Some(port) = slot.ready_at(agent.desired_version) {
                        slot.touch();
                        return Ok(port);
                    }
                }
                store::Manager::Other => {
                    if let Some(port) = agent.current_port {
                        slot.touch();
                        return Ok(port);
                    }
                    // The other replica is starting or restarting it.
                    if Instant::now() >= wait_until {
                        return Err(AgentError::StartFailed(
                            "another replica of this instance is starting the agent and it did not come up in time"
                                .into(),
                        ));
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                    continue;
                }
                store::Manager::Nobody => {}
            }
            let _guard = slot.lock.lock().await;
            let name = self.container_name(user_id);
            match store::lease(&self.pool, user_id, &name, self.replica_id, self.lease_ttl()).await? {
                store::Lease::Refused => continue,
                // Someone in this process may have started it while this request waited.
                store::Lease::Renewed => {
                    let desired = store::desired_version(&self.pool, user_id).await?;
                    if let Some(port) = slot.ready_at(desired) {
                        slot.touch();
                        return Ok(port);
                    }
                }
                // Whatever this process knew may be stale: another replica managed it.
                store::Lease::Taken => {}
            }
            slot.set_ready(None);
            let started = self.start_locked(user_id).await;
            if started.is_err() {
                // Let another replica (or the next request) try at once.
                let _ = store::release(&self.pool, user_id, Some(self.replica_id)).await;
            }
            let port = started?;
            slot.touch();
            return Ok(port);
        }
    }

    /// How long a lease lasts unrenewed: a start, plus three reaper ticks.
    fn lease_ttl(&self) -> Duration {
        self.settings
            .start_timeout
            .saturating_add(self.settings.reaper_interval.saturating_mul(3))
    }

    /// Takes or renews the lease on the user's agent (the reaper, before it manages one).
    pub(crate) async fn lease(&self, user_id: Uuid) -> Result<store::Lease, AgentError> {
        let name = self.container_name(user_id);
        store::lease(&self.pool, user_id, &name, self.replica_id, self.lease_ttl()).await
    }

    /// Starts (or recreates) the container; the caller holds the user's lock.
    async fn start_locked(&self, user_id: Uuid) -> Result<u16, AgentError> {
        let name = self.container_name(user_id);
        let desired = store::desired(&self.pool, &self.sealer, user_id, &name).await?;
        let started = Instant::now();
        let result = async {
            let observed = self.lifecycle.ensure(&desired.spec).await?;
            let port = observed
                .host_port
                .ok_or_else(|| AgentError::StartFailed("no published port".into()))?;
            self.wait_healthy(port, &desired.health_path, &name).await?;
            Ok::<_, AgentError>((observed, port))
        }
        .await;
        match result {
            Ok((observed, port)) => {
                store::record_running(&self.pool, user_id, &observed, desired.spec.version).await?;
                self.slot(user_id).set_ready(Some((port, desired.spec.version)));
                tracing::info!(user = %user_id, container = %name, version = desired.spec.version,
                    ms = started.elapsed().as_millis() as u64, "agent ready");
                Ok(port)
            }
            Err(e) => {
                tracing::warn!(user = %user_id, container = %name, code = e.code(), error = %e.message(), "agent start failed");
                if !matches!(e, AgentError::Database(_)) {
                    let status = if matches!(e, AgentError::Unavailable(_)) {
                        None
                    } else {
                        Some("FAILED")
                    };
                    let _ = store::record_error(&self.pool, user_id, status, &e.message()).await;
                }
                Err(e)
            }
        }
    }

    /// Polls the agent's health path until it answers 2xx (bounded by the start timeout).
    async fn wait_healthy(&self, port: u16, path: &str, name: &str) -> Result<(), AgentError> {
        let deadline = Instant::now() + self.settings.start_timeout;
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut delay = Duration::from_millis(10);
        loop {
            let answer = self.http.get(&url).timeout(Duration::from_secs(2)).send().await;
            if let Ok(r) = answer
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(AgentError::StartFailed(format!(
                    "no healthy answer from {path} within {} ms",
                    self.settings.start_timeout.as_millis()
                )));
            }
            if let Some(o) = self.lifecycle.status(name).await?
                && !o.running
            {
                return Err(AgentError::StartFailed("the agent container exited".into()));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// Stops the user's agent (the container is kept for a faster next start).
    /// Deliberate (the user, an administrator): requests in flight are cut off.
    pub async fn stop(&self, user_id: Uuid) -> Result<(), AgentError> {
        let slot = self.slot(user_id);
        let _guard = slot.lock.lock().await;
        self.stop_locked(user_id, &slot).await
    }

    async fn stop_locked(&self, user_id: Uuid, slot: &Slot) -> Result<(), AgentError> {
        slot.set_ready(None);
        self.lifecycle.stop(&self.container_name(user_id), STOP_GRACE_S).await?;
        store::record_stopped(&self.pool, user_id, slot.last_active()).await?;
        // Stopped, by whichever replica: nobody manages it until it is needed.
        store::release(&self.pool, user_id, None).await?;
        tracing::info!(user = %user_id, "agent stopped");
        Ok(())
    }

    /// Stops the agent if it has no request in flight and has still seen no
    /// traffic for `idle` since the last one ended.
    pub(crate) async fn stop_if_idle(
        &self,
        user_id: Uuid,
        db_last_active: Option<OffsetDateTime>,
        idle: Duration,
    ) -> Result<bool, AgentError> {
        let slot = self.slot(user_id);
        let _guard = slot.lock.lock().await;
        {
            // One step under `live` (see `InFlight`): nothing in flight and
            // idle long enough, so no longer ready. A request registering
            // after this finds it not ready and waits for `_guard`.
            let mut live = slot.live();
            if live.in_flight > 0 {
                return Ok(false);
            }
            let last = live.last_active.max(db_last_active);
            let idle_for = last.map(|t| OffsetDateTime::now_utc() - t);
            if idle_for.is_some_and(|d| d < idle) {
                return Ok(false);
            }
            live.ready = None;
        }
        self.stop_locked(user_id, &slot).await?;
        Ok(true)
    }

    /// Restarts a running agent on its new configuration, even with requests
    /// in flight (they are cut off: the old container is replaced).
    pub(crate) async fn restart_stale(&self, user_id: Uuid) -> Result<(), AgentError> {
        let slot = self.slot(user_id);
        let _guard = slot.lock.lock().await;
        slot.set_ready(None);
        self.start_locked(user_id).await.map(|_| ())
    }

    /// Writes in-memory activity to the database (at most once per reaper tick and user).
    pub(crate) async fn persist_activity(&self) {
        let pending: Vec<(Uuid, OffsetDateTime)> = {
            let slots = self.slots.lock().expect("slots lock");
            slots
                .iter()
                .filter_map(|(u, s)| {
                    // A request still under way is activity now: the replica
                    // managing the agent may be another one, which sees only this.
                    let last = if s.in_flight() > 0 {
                        Some(OffsetDateTime::now_utc())
                    } else {
                        s.last_active()
                    }?;
                    let mut done = s.persisted_active.lock().expect("slot lock");
                    if *done == Some(last) {
                        return None;
                    }
                    *done = Some(last);
                    Some((*u, last))
                })
                .collect()
        };
        for (user, at) in pending {
            if let Err(e) = store::record_activity(&self.pool, user, at).await {
                tracing::warn!(error = %e.message(), "recording agent activity failed");
            }
        }
    }

    /// Seals and stores a user's secret (in the caller's transaction).
    pub fn seal_secret(&self, user_id: Uuid, name: &str, value: &str) -> Vec<u8> {
        self.sealer
            .seal(value.as_bytes(), &store::secret_context(user_id, name))
    }

    pub fn is_reconciled(&self) -> bool {
        self.reconciled.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn set_reconciled(&self) {
        self.reconciled.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
