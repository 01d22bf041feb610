//! PostgreSQL access: the two pools, migrations, and request scopes.
//!
//! * The **admin** connection (the `DATABASE_URL` user, or the embedded
//!   cluster's superuser) runs migrations and operator CLI commands.
//! * The **app** pool serves requests. Every connection switches to
//!   `mosaic_app`, a role that owns nothing and cannot bypass RLS, so every
//!   query a request makes is filtered by the policies in `migrations/`.

pub mod cache;
pub mod embedded;
pub mod jobs;
pub mod scope;

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

pub use embedded::EmbeddedPostgres;
pub use scope::{Admission, PeerScope, RequestDb, Scope};

use crate::config::Config;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub const APP_ROLE: &str = "mosaic_app";

/// ` LIMIT n`, written into the statement instead of bound: with the limit
/// as a parameter PostgreSQL plans every execution anew (a generic plan,
/// costed for an unknown limit, never wins), and planning a page under the
/// policies costs more than running it. `n` is a number we chose (a page
/// size), never a caller's text; each size is one cached statement.
pub fn limit(n: usize) -> String {
    format!(" LIMIT {n}")
}

/// The database an instance runs on, and the embedded cluster if it owns one.
pub struct Database {
    pub app: PgPool,
    admin_options: PgConnectOptions,
    admin_url: String,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects (starting the embedded cluster when no `DATABASE_URL` is set)
    /// and brings the schema up to date. On failure, a cluster started here
    /// is stopped again.
    pub async fn open(config: &Config) -> Result<Self> {
        let Some(url) = &config.database_url else {
            let data_dir = config.data_dir.clone();
            let mut pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data_dir)).await??;
            let opened = async {
                ensure_database(&pg.connect_options("postgres"), "mosaic").await?;
                Self::connect(config, pg.connect_options("mosaic"), pg.url("mosaic")).await
            }
            .await;
            return match opened {
                Ok(db) => Ok(Self {
                    embedded: Some(pg),
                    ..db
                }),
                Err(e) => {
                    if let Err(stop) = tokio::task::spawn_blocking(move || pg.stop()).await? {
                        tracing::warn!(error = %stop, "stopping the embedded PostgreSQL");
                    }
                    Err(e)
                }
            };
        };
        let options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid PostgreSQL URL")?;
        Self::connect(config, options, url.clone()).await
    }

    async fn connect(config: &Config, admin_options: PgConnectOptions, admin_url: String) -> Result<Self> {
        let admin_options = admin_options.log_statements(tracing::log::LevelFilter::Trace);
        migrate(&admin_options).await?;
        let app = app_pool(config.pool_size)
            .connect_with(admin_options.clone())
            .await
            .context("connecting the application pool")?;
        Ok(Self {
            app,
            admin_options,
            admin_url,
            embedded: None,
        })
    }

    /// A pool beside the request pool, in the same role, for the one LISTEN
    /// connection an instance holds for its life (`src/live`); room for a
    /// second so that reconnecting never waits for the broken one to go.
    pub fn listener_pool(&self) -> PgPool {
        app_pool(2).connect_lazy_with(self.admin_options.clone())
    }

    /// Makes this process the embedded cluster's owner: [`Database::shutdown`]
    /// stops it even when it was already running (left behind by a process
    /// that did not stop it). `serve` owns its cluster; CLI commands borrow
    /// the one `serve` runs and leave it running.
    pub fn owning_cluster(mut self) -> Self {
        if let Some(pg) = &mut self.embedded {
            pg.own();
        }
        self
    }

    /// A short-lived administrative connection (operator commands, setup).
    pub async fn admin(&self) -> Result<sqlx::PgConnection> {
        sqlx::PgConnection::connect_with(&self.admin_options)
            .await
            .context("connecting to PostgreSQL as the administrative user")
    }

    /// How to open an administrative connection (for the few reads the request role may not make).
    pub fn admin_options(&self) -> PgConnectOptions {
        self.admin_options.clone()
    }

    pub fn admin_url(&self) -> String {
        self.admin_url.clone()
    }

    /// Closes the pool and stops the embedded cluster if this process started it.
    pub async fn shutdown(mut self) -> Result<()> {
        self.app.close().await;
        if let Some(mut pg) = self.embedded.take() {
            tokio::task::spawn_blocking(move || pg.stop()).await??;
        }
        Ok(())
    }
}

/// How long a pooled connection may sit idle before it is pinged when taken.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// Pool settings of the application role.
fn app_pool(size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        // A connection is pinged when it returns to the pool (which also
        // flushes a dropped transaction's ROLLBACK); pinging it again when it
        // is taken costs every request a round trip. Only one idle for a
        // while, which the server may have dropped, is checked.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(|conn, _| {
            Box::pin(async move {
                // Owned by nobody, filtered by RLS; UTC so cursors render alike everywhere.
                sqlx::raw_sql("SET ROLE mosaic_app; SET TIME ZONE 'UTC'")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
}

async fn ensure_database(server: &PgConnectOptions, name: &str) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect_with(server).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

async fn migrate(admin: &PgConnectOptions) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect_with(admin)
        .await
        .context("connecting to PostgreSQL to run migrations")?;
    MIGRATOR.run(&mut conn).await.context("running migrations")?;
    Ok(())
}

/// Reads this instance's identity, creating it on first start.
pub async fn instance_identity(db: &Database, configured_name: &str) -> Result<(Uuid, String)> {
    let mut conn = db.admin().await?;
    sqlx::query(
        "INSERT INTO instance_identity (id, name) VALUES ($1, $2)
         ON CONFLICT (singleton) DO UPDATE SET name = EXCLUDED.name",
    )
    .bind(Uuid::new_v4())
    .bind(configured_name)
    .execute(&mut conn)
    .await?;
    let row: (Uuid, String) = sqlx::query_as("SELECT id, name FROM instance_identity")
        .fetch_one(&mut conn)
        .await?;
    Ok(row)
}
