//! Startup shared by the binary and the tests: `Application::build` (the
//! port, the database, the Instance, federation, agents, the GraphQL
//! executor, the router) and `run`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;

use crate::config::Config;
use crate::db::{self, Database};
use crate::federation::Federation;
use crate::graphql::{self, InstanceInfo};
use crate::http::AppState;
use crate::instance::Instance;
use crate::metrics::Metrics;
use crate::schema::MosaicSchema;
use crate::schema::execute::Executor;

/// A built instance, bound to its address, not yet serving.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    db: Database,
    pub state: AppState,
}

impl Application {
    /// Binds the listener (port 0 picks a free one), opens the database
    /// (embedded or `DATABASE_URL`), migrates and assembles the router. The
    /// port is bound first so a port in use starts no database, and a failure
    /// after the database is open stops the embedded cluster again.
    pub async fn build(config: Config) -> Result<Self> {
        crate::federation::tls::install_crypto_provider();
        let secret = config.secret(true)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
        let db = Database::open(&config).await?.owning_cluster();
        match Self::assemble(config, &secret, &listener, &db).await {
            Ok(state) => Ok(Self {
                router: crate::http::router(state.clone()),
                listener,
                db,
                state,
            }),
            Err(e) => {
                if let Err(stop) = db.shutdown().await {
                    tracing::warn!(error = %stop, "stopping the database after a failed start");
                }
                Err(e)
            }
        }
    }

    async fn assemble(
        config: Config,
        secret: &crate::secrets::Secret,
        listener: &tokio::net::TcpListener,
        db: &Database,
    ) -> Result<AppState> {
        let schemas = crate::schema::Schemas::build(&config.limits);
        let me = load_instance(&config, db, config.base_url(listener.local_addr()?), schemas.schema()).await?;
        let (instance_id, name, base_url) = (me.id, me.name.clone(), me.base_url.clone());
        let federation = Federation::open(&config, db, secret, &me).await?;
        let sso = match &config.oidc {
            Some(settings) => {
                let http = crate::federation::tls::http_client(config.federation.ca_file.as_deref())?;
                Some(Arc::new(
                    crate::auth::oidc::Sso::start(settings.clone(), &base_url, http, secret).await?,
                ))
            }
            None => None,
        };
        let agents =
            crate::containers::AgentService::start(&config.agents, db.app.clone(), instance_id, secret).await?;
        let knowledge =
            Arc::new(crate::knowledge::KnowledgeService::start(config.knowledge.clone(), db.app.clone()).await?);
        let tokens = Arc::new(crate::auth::token_cache::new_cache());
        let mut caches: Vec<(&'static str, Arc<dyn crate::db::cache::Forget>)> = vec![
            (crate::auth::token_cache::CHANNEL, tokens.clone()),
            (crate::federation::PEERS_CHANNEL, federation.peers.clone()),
            (crate::federation::KEYS_CHANNEL, federation.keys.current_id.clone()),
        ];
        if let Some(embeddings) = &knowledge.embeddings {
            caches.push((crate::knowledge::embeddings::CHANNEL, embeddings.clone()));
        }
        let live = crate::live::Live::start(
            db.listener_pool(),
            &config.limits,
            caches,
            federation.outbox_written.clone(),
        )
        .await?;
        let dispatcher = Arc::new(crate::agent_tasks::dispatch::Dispatcher::new(
            db.app.clone(),
            agents.clone(),
            config.agent_tasks.clone(),
            &base_url,
            config.federation.ca_file.clone(),
        ));
        dispatcher.register(instance_id);
        tokio::spawn(dispatcher.run(live.clone(), live.closing()));
        let federation = Arc::new(federation);
        tokio::spawn({
            let (federation, pool, closing) = (federation.clone(), db.app.clone(), live.closing());
            async move { federation.share_until(&pool, closing).await }
        });
        tokio::spawn(
            federation
                .clone()
                .deliver_events_until(config.statement_timeout, live.closing()),
        );
        tokio::spawn(federation.clone().subscribe_until(live.closing()));
        let instance = Arc::new(InstanceInfo {
            id: instance_id.to_string(),
            name,
        });
        let metrics = Arc::new(Metrics::new(&federation.metrics));
        let audit = Arc::new(crate::federation::audit::Audit::new(
            config.federation.audit_queue,
            metrics.federation_audit_dropped.clone(),
        ));
        tokio::spawn({
            let (audit, pool, closing) = (audit.clone(), db.app.clone(), live.closing());
            let retention = config.federation.audit_retention_days;
            async move { audit.write_until(&pool, retention, closing).await }
        });
        let lifecycle = Arc::new(crate::lifecycle::Lifecycle::default());
        let executor = Arc::new(Executor {
            schemas,
            pool: db.app.clone(),
            statement_timeout: config.statement_timeout,
            instance_id,
            instance: instance.clone(),
            max_page_size: config.limits.max_page_size,
            federation: federation.clone(),
            cursor_key: Arc::new(graphql::pagination::CursorKey::new(secret)),
            metrics: metrics.clone(),
            agents: agents.clone(),
            knowledge,
            tokens: tokens.clone(),
            documents: Default::default(),
            lifecycle: lifecycle.clone(),
        });
        Ok(AppState {
            live,
            tokens,
            agents,
            pool: db.app.clone(),
            instance_id,
            instance,
            metrics,
            federation,
            audit,
            sso,
            executor,
            lifecycle,
            config: Arc::new(config),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// A superuser URL for this instance's database (demo seeding, tests).
    pub fn database_url(&self) -> String {
        self.db.admin_url()
    }

    /// The URL peers and clients reach this instance at.
    pub fn base_url(&self) -> &str {
        &self.state.federation.base_url
    }

    /// Serves (HTTPS when TLS is configured) until `shutdown` completes, then
    /// stops in order (`lifecycle.rs`): `/readyz` answers 503 for
    /// `shutdown.unready_ms` while requests are still served; subscriptions
    /// end and the port closes; requests in flight and executions whose
    /// client left finish within `shutdown.drain_s`; only then the pool
    /// closes and the embedded cluster, if this process started it, stops.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        tracing::info!(url = %self.base_url(), instance = %self.state.instance.name, "serving");
        let tls = match &self.state.config.tls {
            Some(files) => Some(crate::federation::tls::server_config(
                &files.cert_file,
                &files.key_file,
            )?),
            None => None,
        };
        let config = self.state.config.clone();
        let live = self.state.live.clone();
        let lifecycle = self.state.lifecycle.clone();
        let shutdown = {
            let (live, lifecycle, unready) = (live.clone(), lifecycle.clone(), config.shutdown_unready);
            async move {
                shutdown.await;
                lifecycle.stop();
                if !unready.is_zero() {
                    tracing::info!(?unready, "stopping: not ready, still serving");
                    // The load balancer's health checks need this time to see the 503.
                    tokio::time::sleep(unready).await;
                }
                // Subscriptions end as the port closes, so their connections can drain.
                live.close();
            }
        };
        let drain = config.shutdown_drain;
        let served = crate::server::serve(self.listener, self.router, tls, config.limits.clone(), drain, shutdown)
            .await
            .context("serving HTTP");
        if !lifecycle.executions_done(drain).await {
            tracing::warn!(
                running = lifecycle.executions(),
                "GraphQL executions still running after {drain:?}; closing the pool under them"
            );
        }
        live.close();
        live.stopped().await;
        if let Err(e) = self.state.federation.stats.flush(&self.state.pool).await {
            tracing::warn!(error = %e, "adding peer statistics to the shared totals at shutdown");
        }
        if let Err(e) = self.state.audit.flush(&self.state.pool).await {
            tracing::warn!(error = %e, "writing the federation audit at shutdown");
        }
        let stopped = self.db.shutdown().await;
        served.and(stopped)
    }
}

/// Reads (on first start, creates) this instance's identity.
pub async fn load_instance(
    config: &Config,
    db: &Database,
    base_url: String,
    schema: &MosaicSchema,
) -> Result<Instance> {
    let (id, name) = db::instance_identity(db, &config.instance_name).await?;
    Ok(Instance {
        id,
        name,
        base_url,
        schema_hash: crate::schema::schema_hash(schema),
    })
}
