//! The `mosaic` command line.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mosaic::app::Application;
use mosaic::auth::{tokens, users};
use mosaic::config::Config;
use mosaic::db::Database;
use mosaic::federation::Federation;
use uuid::Uuid;

/// A request allocates many small, short-lived values across the runtime's
/// threads; mimalloc serves them from per-thread pages (glibc's malloc and
/// free took a fifth to a quarter of the request path's CPU, measured with perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mosaic",
    version,
    about = "Mosaic: a GraphQL application for workspaces, projects, tasks and events whose instances federate with each other",
    after_help = "Settings come from environment variables (and an optional TOML file named by MOSAIC_CONFIG); the README's Configuration section lists them all."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL and the IDE at /graphql (default http://127.0.0.1:8080).
    #[command(long_about = SERVE_HELP)]
    Serve,
    /// Bring the database schema up to date and exit.
    Migrate,
    /// Exit 0 if this instance's /readyz answers 200 (the container health check).
    Healthcheck {
        /// Ask this URL instead of the local listener's /readyz.
        #[arg(long)]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Manage local users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Break-glass administrators (local password, for when the identity provider is down).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The GraphQL schema.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Peer instances (same database variables as `serve`).
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// The health of federation (same database variables as `serve`).
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// Check configuration, database, TLS, signing key and each peer (reachable,
    /// protocol, clock skew); print what to fix; exit 1 when something is wrong.
    Doctor,
    /// This instance's signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The knowledge base: Markdown files in and out.
    Knowledge {
        #[command(subcommand)]
        command: KnowledgeCommand,
    },
    /// Usage budgets of agent tasks (same database variables as `serve`).
    Budget {
        #[command(subcommand)]
        command: BudgetCommand,
    },
    /// The request audit: what peers asked this instance (same database variables as `serve`).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The reference agent: works agent tasks of an instance until stopped
    /// (SIGTERM, Ctrl-C), through the worker API with an agent token
    /// (createAgentToken).
    Worker {
        /// The instance, e.g. https://mosaic.example:8443
        #[arg(long)]
        url: String,
        /// The agent token (or MOSAIC_AGENT_TOKEN).
        #[arg(long, env = "MOSAIC_AGENT_TOKEN", hide_env_values = true)]
        token: String,
        /// A CA certificate (PEM) to trust besides the system's.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
        /// Exit when a claim's wait ends with no work (an agent in a
        /// container Mosaic started, which starts another when work comes).
        #[arg(long)]
        exit_when_idle: bool,
    },
    /// A local federation of three instances (hq, work, home) with seeded data.
    Demo {
        /// First port; the instances listen on N, N+1, N+2.
        #[arg(long, default_value_t = 8443)]
        port_base: u16,
        /// Where the instances keep their data (reused by the next run).
        #[arg(long, default_value = "./.mosaic-demo")]
        data_dir: std::path::PathBuf,
    },
}

const SERVE_HELP: &str = "Serve GraphQL and the IDE at /graphql.

Settings (environment variables, or a TOML file named by MOSAIC_CONFIG; the
README's Configuration section has the full table):
  MOSAIC_LISTEN      address to listen on (default 127.0.0.1:8080; host names allowed)
  MOSAIC_DATA_DIR    data directory (default ./.mosaic)
  DATABASE_URL       PostgreSQL to use (default: a private cluster in the data directory)
  MOSAIC_SECRET_KEY  seals this instance's keys and secrets (32+ characters). When not
                     set, the first start makes one in <data dir>/secret.key (mode 0600)
                     and later starts use it: back that file up with the database.
                     A key set here or in the TOML file wins over the file.";

#[derive(Subcommand)]
enum PeerCommand {
    /// Ask the instance at URL to let this one query it (CONNECT).
    Connect {
        /// The other instance's base URL, e.g. https://work.example.
        url: String,
    },
    /// List peers with state, grant, keys.
    List,
    /// Grant a peer that asked to connect a scope document (see `peer grant set`).
    Approve {
        /// The peer's instance id (see `peer list`).
        id: String,
        #[command(flatten)]
        grant: GrantArgs,
    },
    /// Show or replace an active peer's grant.
    Grant {
        #[command(subcommand)]
        command: GrantCommand,
    },
    /// Refuse a peer's request to connect.
    Reject {
        /// The peer's instance id (see `peer list`).
        id: String,
    },
    /// Suspend a peer's access (approve again to resume).
    Suspend {
        /// The peer's instance id (see `peer list`).
        id: String,
    },
    /// Cut the peering in both directions at once (DISCONNECT).
    Revoke {
        /// The peer's instance id (see `peer list`).
        id: String,
    },
    /// Delete a pending, rejected or revoked peer (its audit trail is kept).
    Delete {
        /// The peer's instance id (see `peer list`).
        id: String,
    },
}

// Parsed once per run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum GrantCommand {
    /// Print the peer's grant as JSON.
    Show {
        /// The peer's instance id (see `peer list`).
        id: String,
    },
    /// Replace the peer's grant with this one (audited).
    Set {
        /// The peer's instance id (see `peer list`).
        id: String,
        #[command(flatten)]
        grant: GrantArgs,
    },
}

/// A grant's scope document on the command line (README: "Grants").
#[derive(clap::Args)]
struct GrantArgs {
    /// A workspace (id, global ID or exact name); repeat.
    #[arg(long = "workspace", value_name = "WS", required = true)]
    workspaces: Vec<String>,
    /// Let the peer change its writable resources.
    #[arg(long)]
    read_write: bool,
    /// A remote user the grant covers (e-mail or global User ID); repeat.
    #[arg(long = "user", value_name = "USER")]
    users: Vec<String>,
    /// Let the peer's reads go on to this instance's own peers.
    ///
    /// Writes never are.
    #[arg(long)]
    forward: bool,
    /// A resource granted; repeat; none given: all.
    ///
    /// tasks, projects, events, teams, members, activity, knowledge or agent_tasks.
    #[arg(long = "resource", value_name = "NAME")]
    resources: Vec<String>,
    /// A resource taken out of the granted ones; repeat.
    #[arg(long = "exclude-resource", value_name = "NAME")]
    excluded_resources: Vec<String>,
    /// A resource a read-write grant may change; repeat; none: all readable.
    #[arg(long = "write-resource", value_name = "NAME")]
    write_resources: Vec<String>,
    /// Most rows one page or total may hold for the peer.
    #[arg(long, value_name = "N")]
    max_rows: Option<u32>,
    /// The peer's rate limit: requests per second (with --burst).
    #[arg(long, value_name = "N", requires = "burst")]
    rate: Option<f64>,
    /// The peer's rate limit: requests at once (with --rate).
    #[arg(long, value_name = "N", requires = "rate")]
    burst: Option<u32>,
    /// A remote person acting as a local user; repeat.
    ///
    /// REMOTE is a verified e-mail address or a global User ID of the peer's
    /// instance; LOCAL a local user's e-mail or id. They act within the grant.
    #[arg(long = "map", value_name = "REMOTE=LOCAL")]
    mappings: Vec<String>,
    /// Remote people no --map names: guest or refuse.
    #[arg(long, value_name = "HOW", default_value = "guest")]
    unmapped: String,
}

/// The flag a grant field's message is about, for messages of `Terms::checked`.
const GRANT_FLAGS: [(&str, &str); 12] = [
    ("workspaceIds", "--workspace"),
    ("users", "--user"),
    ("resources", "--resource"),
    ("excludedResources", "--exclude-resource"),
    ("writeResources", "--write-resource"),
    ("maxRowsPerQuery", "--max-rows"),
    ("rateLimit.perSecond", "--rate"),
    ("rateLimit.burst", "--burst"),
    ("userMappings.remote", "--map"),
    ("userMappings.localUserId", "--map"),
    ("userMappings", "--map"),
    ("unmapped", "--unmapped"),
];

fn flag_message(message: &str) -> String {
    match message.split_once(':') {
        Some((field, rest)) => match GRANT_FLAGS.iter().find(|(f, _)| *f == field) {
            Some((_, flag)) => format!("{flag}:{rest}"),
            None => message.to_string(),
        },
        None => message.to_string(),
    }
}

impl GrantArgs {
    async fn terms(self, db: &Database) -> Result<mosaic::federation::grant::Terms> {
        use mosaic::federation::grant::{self, RateLimit, Unmapped, UserMapping};
        let mut conn = db.admin().await?;
        let mut workspaces = Vec::new();
        for w in &self.workspaces {
            workspaces.push(workspace_id(&mut conn, w).await?);
        }
        let resources =
            |flag: &str, names: &[String]| grant::parse_resources(flag, names).map_err(|e| anyhow::anyhow!(e));
        let mut user_mappings = Vec::new();
        for m in &self.mappings {
            let Some((remote, local)) = m.split_once('=') else {
                anyhow::bail!("--map: '{m}' is not REMOTE=LOCAL");
            };
            let local_user = match local.parse::<Uuid>() {
                Ok(id) => id,
                Err(_) => sqlx::query_scalar("SELECT id FROM users WHERE email = lower($1)")
                    .bind(local)
                    .fetch_optional(&mut conn)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("--map: no local user '{local}'"))?,
            };
            user_mappings.push(UserMapping {
                remote: remote.to_string(),
                local_user,
            });
        }
        Ok(grant::Terms {
            workspaces,
            read_write: self.read_write,
            users: (!self.users.is_empty()).then_some(self.users),
            forward: self.forward,
            resources: (!self.resources.is_empty())
                .then(|| resources("--resource", &self.resources))
                .transpose()?,
            excluded_resources: resources("--exclude-resource", &self.excluded_resources)?,
            write_resources: (!self.write_resources.is_empty())
                .then(|| resources("--write-resource", &self.write_resources))
                .transpose()?,
            max_rows_per_query: self.max_rows,
            rate_limit: self
                .rate
                .zip(self.burst)
                .map(|(per_second, burst)| RateLimit { per_second, burst }),
            user_mappings,
            unmapped: Unmapped::parse(&self.unmapped)
                .ok_or_else(|| anyhow::anyhow!("--unmapped: '{}' is neither guest nor refuse", self.unmapped))?,
        })
    }
}

#[derive(Subcommand)]
enum FederationCommand {
    /// One line per peer: states, grant, keys, then last success and failure,
    /// latency and breaker state (as the serving replicas last flushed them).
    Status,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new signing key; the old one verifies until federation.key_grace_s has passed.
    Rotate,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prints its id.
    Create {
        /// Their e-mail address (how they are named everywhere).
        #[arg(long)]
        email: String,
        /// Their display name.
        #[arg(long)]
        name: Option<String>,
        /// Make the user an instance administrator.
        #[arg(long)]
        admin: bool,
    },
    /// List users: e-mail, administrator, deactivated, id.
    List,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create (or reset) a break-glass administrator; reads the password from stdin.
    Create {
        /// The administrator's e-mail address.
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a user; prints only the token, once.
    Create {
        /// The user's e-mail.
        #[arg(long)]
        user: String,
        /// Lifetime (30d, 12h, 45m), an RFC 3339 time, or `never`; default: 90d.
        #[arg(long)]
        expires: Option<String>,
        /// What the token is for (shown by `token list`).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (never their secrets): id, user, name, created, expires, last used.
    List {
        /// Only this user's tokens (e-mail).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token; it stops working at once.
    Revoke {
        /// The token's id (see `token list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum KnowledgeCommand {
    /// Import DIR's `.md` files (front matter: title, tags, status) as
    /// entries of a workspace, as a user; a file whose slug (its name)
    /// exists updates that entry. All or nothing.
    Import {
        dir: std::path::PathBuf,
        /// The workspace: its ID or UUID.
        #[arg(long)]
        workspace: String,
        /// The user the entries are written as (their e-mail).
        #[arg(long)]
        user: String,
    },
    /// Export a workspace's entries that the user can see to DIR as `<slug>.md`.
    Export {
        dir: std::path::PathBuf,
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        user: String,
    },
}

/// Whose tasks a budget covers: the workspace's, unless one of these is given.
#[derive(clap::Args)]
struct BudgetScope {
    /// The workspace: its ID or UUID.
    #[arg(long)]
    workspace: String,
    /// Only this project's tasks (its ID or UUID).
    #[arg(long, conflicts_with = "user")]
    project: Option<String>,
    /// Only the tasks this member created (their e-mail).
    #[arg(long)]
    user: Option<String>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The newest requests first: time, verb, outcome and code, peer, rows, bytes, latency.
    List {
        /// Only requests from this instance (its id).
        #[arg(long)]
        peer: Option<String>,
        /// allowed, refused or failed.
        #[arg(long)]
        outcome: Option<String>,
        /// At most this many (1 to 10000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Delete the rows older than `federation.audit_retention_days` now.
    Prune,
}

#[derive(Subcommand)]
enum BudgetCommand {
    /// Create a budget, or change its limit and window.
    Set {
        #[command(flatten)]
        scope: BudgetScope,
        /// tokens, cost or agent-minutes.
        #[arg(long)]
        unit: String,
        /// Per window, in the unit.
        #[arg(long, allow_negative_numbers = true)]
        limit: i64,
        /// daily, monthly or at.
        #[arg(long)]
        window: String,
        /// The first reset (RFC 3339): required for `at`; for daily and
        /// monthly, the time (and day) of every reset.
        #[arg(long)]
        resets_at: Option<String>,
    },
    /// List a workspace's budgets: allocated, consumed, remaining, reset, burn rate.
    Status {
        /// The workspace: its ID or UUID.
        #[arg(long)]
        workspace: String,
    },
    /// Empty a budget's current window.
    Reset {
        #[command(flatten)]
        scope: BudgetScope,
        /// tokens, cost or agent-minutes.
        #[arg(long)]
        unit: String,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Print the SDL (or write it to a file).
    Print {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Schema {
        command: SchemaCommand::Print { output },
    } = &cli.command
    {
        return match output {
            Some(path) => match std::fs::write(path, mosaic::schema::sdl()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(anyhow::anyhow!("--output {}: {e}", path.display())),
            },
            None => {
                print!("{}", mosaic::schema::sdl());
                ExitCode::SUCCESS
            }
        };
    }
    if let Command::Worker {
        url,
        token,
        ca_file,
        exit_when_idle,
    } = cli.command
    {
        mosaic::telemetry::init(mosaic::config::LogFormat::Text);
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let options = mosaic::agent_tasks::runtime::WorkerOptions {
            url,
            token,
            ca_file,
            exit_when_idle,
        };
        return match runtime.block_on(mosaic::agent_tasks::runtime::run(options, shutdown_signal())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Healthcheck { url, timeout } = &cli.command {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let checked = mosaic::healthcheck::check(&config, url.as_deref(), std::time::Duration::from_secs(*timeout));
        return match runtime.block_on(checked) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let exporter = match mosaic::telemetry::init_with_export(&config, runtime.handle()) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let result = runtime.block_on(run(cli.command, config));
    // While the runtime still runs: the last batch of spans goes out.
    exporter.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {}", message(&e));
    ExitCode::FAILURE
}

/// The error and its causes on one line, each cause once (some errors repeat
/// their source's text in their own).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Opens the database of an instance that must already exist: a mistyped
/// data directory is reported, not turned into a new cluster.
async fn open_existing(config: &Config) -> Result<Database> {
    if config.database_url.is_none() && !config.data_dir.join("postgres/data/PG_VERSION").is_file() {
        anyhow::bail!(
            "MOSAIC_DATA_DIR: there is no Mosaic instance in {} (nothing was created); check the path, or start `mosaic serve` there first",
            config.data_dir.display()
        );
    }
    Database::open(config).await
}

/// The workspace UUID in `--workspace` (a global ID or the bare UUID).
fn workspace_uuid(value: &str) -> Result<Uuid> {
    value
        .rsplit(':')
        .next()
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("--workspace: '{value}' is not a workspace ID or UUID"))
}

async fn knowledge_command(command: KnowledgeCommand, config: Config) -> Result<()> {
    use mosaic::knowledge::transfer;
    let (dir, workspace, user, import) = match command {
        KnowledgeCommand::Import { dir, workspace, user } => (dir, workspace, user, true),
        KnowledgeCommand::Export { dir, workspace, user } => (dir, workspace, user, false),
    };
    let workspace = workspace_uuid(&workspace)?;
    let db = open_existing(&config).await?;
    let done = async {
        let user_id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE email = lower($1)")
            .bind(&user)
            .fetch_optional(&mut db.admin().await?)
            .await?;
        let user_id = user_id.ok_or_else(|| anyhow::anyhow!("--user: no user {user}"))?;
        if import {
            let (created, updated) = transfer::import(
                &db.app,
                &config.knowledge,
                config.statement_timeout,
                user_id,
                workspace,
                &dir,
            )
            .await?;
            eprintln!("imported {}: {created} created, {updated} updated", dir.display());
        } else {
            let n = transfer::export(&db.app, config.statement_timeout, user_id, workspace, &dir).await?;
            eprintln!("exported {n} entries to {}", dir.display());
        }
        anyhow::Ok(())
    }
    .await;
    db.shutdown().await?;
    done
}

/// A refusal of the budget code, with its code first.
fn budget_error(e: mosaic::error::AppError) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", e.code(), e.message())
}

/// The workspace (which must exist) and scope a `mosaic budget` command names.
async fn budget_scope(
    conn: &mut sqlx::PgConnection,
    scope: &BudgetScope,
) -> Result<(Uuid, mosaic::agent_tasks::budgets::Scope)> {
    use mosaic::agent_tasks::budgets::Scope;
    let workspace = workspace_uuid(&scope.workspace)?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1)")
        .bind(workspace)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        anyhow::bail!("NOT_FOUND: --workspace: no workspace {workspace}");
    }
    let not_found = |what: &str| anyhow::anyhow!("BUDGET_SCOPE_NOT_FOUND: {what}");
    let scope = match (&scope.project, &scope.user) {
        (Some(p), _) => Scope::Project(
            p.rsplit(':')
                .next()
                .and_then(|u| u.parse().ok())
                .ok_or_else(|| not_found(&format!("--project: '{p}' is not a project ID or UUID")))?,
        ),
        (None, Some(email)) => {
            let user: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE email = lower($1)")
                .bind(email)
                .fetch_optional(&mut *conn)
                .await?;
            Scope::User(user.ok_or_else(|| not_found(&format!("--user: no user {email}")))?)
        }
        (None, None) => Scope::Workspace,
    };
    Ok((workspace, scope))
}

async fn audit_command(command: AuditCommand, config: Config) -> Result<()> {
    use mosaic::federation::audit::{self, Outcome};
    use mosaic::peers::audit::{Selection, page};
    let selection = match &command {
        AuditCommand::List { peer, outcome, limit } => {
            if !(1..=10_000).contains(limit) {
                anyhow::bail!("--limit: {limit} is outside 1..=10000");
            }
            Selection {
                peer: peer
                    .as_deref()
                    .map(|p| {
                        p.parse()
                            .map_err(|_| anyhow::anyhow!("--peer: '{p}' is not an instance id"))
                    })
                    .transpose()?,
                outcome: outcome
                    .as_deref()
                    .map(|o| {
                        Outcome::try_from(o.to_ascii_uppercase())
                            .map_err(|_| anyhow::anyhow!("--outcome: '{o}' is not allowed, refused or failed"))
                    })
                    .transpose()?,
            }
        }
        AuditCommand::Prune => Selection::default(),
    };
    let db = open_existing(&config).await?;
    let done = async {
        let mut conn = db.admin().await?;
        match command {
            AuditCommand::List { limit, .. } => {
                for e in page(&mut conn, selection, None, limit).await? {
                    println!(
                        "{}  {:<10} {:<8} {:<22} peer {}{}  rows {} bytes {} {} ms  {}",
                        e.at,
                        e.verb,
                        e.outcome.as_str(),
                        e.code.as_deref().unwrap_or("-"),
                        e.peer_id.map_or("-".into(), |p| p.to_string()),
                        if e.verified { "" } else { " (unverified)" },
                        e.rows,
                        e.bytes,
                        e.latency_ms,
                        e.query_hash.as_deref().map_or("-", |h| &h[..16]),
                    );
                }
            }
            AuditCommand::Prune => {
                let pruned = audit::prune(&mut conn, config.federation.audit_retention_days).await?;
                eprintln!(
                    "pruned {pruned} rows older than {} days",
                    config.federation.audit_retention_days
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    db.shutdown().await?;
    done
}

async fn budget_command(command: BudgetCommand, config: Config) -> Result<()> {
    use mosaic::agent_tasks::budgets::{self, BudgetUnit, BudgetWindow, Setting};
    let db = open_existing(&config).await?;
    let done = async {
        let mut conn = db.admin().await?;
        let budgets = match command {
            BudgetCommand::Set {
                scope,
                unit,
                limit,
                window,
                resets_at,
            } => {
                let unit = BudgetUnit::parse(&unit).map_err(budget_error)?;
                let window = BudgetWindow::parse(&window).map_err(budget_error)?;
                let resets_at = resets_at
                    .map(|t| {
                        time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).map_err(|_| {
                            anyhow::anyhow!("BUDGET_RESETS_AT_INVALID: --resets-at: '{t}' is not an RFC 3339 time")
                        })
                    })
                    .transpose()?;
                let (workspace, scope) = budget_scope(&mut conn, &scope).await?;
                let setting = Setting::new(&mut conn, workspace, scope, unit, window, limit, resets_at)
                    .await
                    .map_err(budget_error)?;
                vec![setting.write(&mut conn, None).await.map_err(budget_error)?]
            }
            BudgetCommand::Status { workspace } => {
                let workspace = workspace_uuid(&workspace)?;
                budgets::list(&mut conn, workspace).await.map_err(budget_error)?
            }
            BudgetCommand::Reset { scope, unit } => {
                let unit = BudgetUnit::parse(&unit).map_err(budget_error)?;
                let (workspace, scope) = budget_scope(&mut conn, &scope).await?;
                vec![
                    budgets::reset(&mut conn, workspace, scope, unit)
                        .await
                        .map_err(budget_error)?,
                ]
            }
        };
        if budgets.is_empty() {
            eprintln!("no budgets in this workspace (mosaic budget set ...)");
        }
        let now = time::OffsetDateTime::now_utc();
        for b in budgets {
            let scope = match b.scope {
                budgets::Scope::Workspace => "workspace".to_string(),
                budgets::Scope::Project(p) => format!("project={p}"),
                budgets::Scope::User(u) => format!("user={u}"),
            };
            println!(
                "{}  {scope}  {}  {}  allocated={} consumed={} remaining={} resets={} burn_per_hour={:.3}",
                b.id,
                b.unit.as_db(),
                b.window.as_db(),
                b.allocated,
                b.consumed(),
                b.remaining(),
                b.resets_at.map_or("never".to_string(), |t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                }),
                b.burn_rate_per_hour(now),
            );
        }
        anyhow::Ok(())
    }
    .await;
    db.shutdown().await?;
    done
}

async fn run(command: Command, config: Config) -> Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(config).await?;
            app.run(shutdown_signal()).await
        }
        Command::Migrate => {
            let db = Database::open(&config).await?;
            let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut db.admin().await?)
                .await
                .unwrap_or(-1);
            db.shutdown().await?;
            eprintln!("database schema is up to date ({applied} migrations applied)");
            Ok(())
        }
        Command::User {
            command: UserCommand::List,
        } => {
            let db = open_existing(&config).await?;
            let listed = users::list(&mut db.admin().await?).await;
            db.shutdown().await?;
            let listed = listed?;
            if listed.is_empty() {
                eprintln!("no users yet (mosaic user create --email ...)");
            }
            for u in listed {
                println!(
                    "{}  {}{}{}",
                    u.id,
                    u.email,
                    if u.is_admin { "  admin" } else { "" },
                    if u.deactivated { "  deactivated" } else { "" }
                );
            }
            Ok(())
        }
        Command::User {
            command: UserCommand::Create { email, name, admin },
        } => {
            let db = Database::open(&config).await?;
            let created = users::create(&mut db.admin().await?, &email, name.as_deref(), admin).await;
            db.shutdown().await?;
            println!("{}", created?);
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::Create { email },
        } => {
            let password = read_password()?;
            // Refuse a bad password before starting anything.
            mosaic::auth::breakglass::check_password(&password)?;
            let db = Database::open(&config).await?;
            let created = mosaic::auth::breakglass::create_admin(&mut db.admin().await?, &email, &password).await;
            db.shutdown().await?;
            let (id, account) = created?;
            use mosaic::auth::breakglass::AdminAccount;
            match account {
                AdminAccount::Created => eprintln!("created break-glass administrator {email}"),
                AdminAccount::Promoted => {
                    eprintln!("made the existing user {email} an instance administrator with a break-glass password")
                }
                AdminAccount::PasswordReset => {
                    eprintln!("replaced the break-glass password of {email}; their sessions have ended")
                }
            }
            println!("{id}");
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Create { user, expires, name },
        } => {
            let expires_at = tokens::expiry(expires.as_deref(), time::OffsetDateTime::now_utc())?;
            let db = open_existing(&config).await?;
            let token = tokens::create_named(&mut db.admin().await?, &user, &name, expires_at).await;
            db.shutdown().await?;
            println!("{}", token?);
            Ok(())
        }
        Command::Token {
            command: TokenCommand::List { user },
        } => {
            let db = open_existing(&config).await?;
            let listed = tokens::list(&mut db.admin().await?, user.as_deref()).await;
            db.shutdown().await?;
            let listed = listed?;
            if listed.is_empty() {
                eprintln!("no tokens (mosaic token create --user ...)");
            }
            let when =
                |t: Option<time::OffsetDateTime>, none: &str| t.map_or(none.to_string(), |t| t.date().to_string());
            for t in listed {
                println!(
                    "{}  {}  name={:?} created={} expires={} last-used={}",
                    t.id,
                    t.email,
                    t.name,
                    t.created_at.date(),
                    when(t.expires_at, "never"),
                    when(t.last_used_at, "never")
                );
            }
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Revoke { id },
        } => {
            let id: Uuid = id
                .parse()
                .map_err(|_| anyhow::anyhow!("ID: '{id}' is not a token id (see `mosaic token list`)"))?;
            let db = open_existing(&config).await?;
            let revoked = tokens::revoke(&mut db.admin().await?, id).await;
            db.shutdown().await?;
            revoked?;
            eprintln!("revoked token {id}");
            Ok(())
        }
        Command::Schema { .. } | Command::Healthcheck { .. } | Command::Worker { .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Peer { command } => peer_command(command, config).await,
        Command::Federation {
            command: FederationCommand::Status,
        } => {
            let (db, fed) = open_federation(&config).await?;
            let lines = mosaic::federation::health::status(&fed).await;
            db.shutdown().await?;
            let lines = lines?;
            if lines.is_empty() {
                eprintln!("no peers yet (mosaic peer connect https://OTHER-INSTANCE)");
            }
            for line in lines {
                println!("{line}");
            }
            Ok(())
        }
        Command::Doctor => {
            let (db, fed) = open_federation(&config).await?;
            let checks = mosaic::federation::health::doctor(&config, &fed).await;
            db.shutdown().await?;
            let checks = checks?;
            for c in &checks {
                let level = match (c.ok, c.warning) {
                    (false, _) => "FAIL",
                    (true, true) => "WARN",
                    (true, false) => "ok  ",
                };
                println!("{level} {}: {}", c.what, c.detail);
            }
            match checks.iter().filter(|c| !c.ok).count() {
                0 => Ok(()),
                failed => Err(anyhow::anyhow!("{failed} problem(s) to fix (FAIL above)")),
            }
        }
        Command::Knowledge { command } => knowledge_command(command, config).await,
        Command::Budget { command } => budget_command(command, config).await,
        Command::Audit { command } => audit_command(command, config).await,
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            mosaic::federation::tls::install_crypto_provider();
            let secret = config.require_secret()?;
            let db = open_existing(&config).await?;
            let sealer = mosaic::secrets::Sealer::new(&secret, "instance-keys");
            let grace = time::Duration::try_from(config.federation.key_grace)?;
            let rotated = async {
                let mut conn = db.admin().await?;
                mosaic::federation::keys::ensure(&mut conn, &sealer).await?;
                let key_id = mosaic::federation::keys::rotate(&mut conn, &sealer, grace).await?;
                let me = mosaic::app::load_instance(
                    &config,
                    &db,
                    config.base_url(config.listen),
                    &mosaic::schema::build_schema(),
                )
                .await?;
                let fed = Federation::open(&config, &db, &secret, &me).await?;
                let told = fed.announce_rotation().await?;
                anyhow::Ok((key_id, told))
            }
            .await;
            db.shutdown().await?;
            let (key_id, told) = rotated?;
            eprintln!("rotated; told {told} peer(s)");
            println!("{key_id}");
            Ok(())
        }
        Command::Demo { port_base, data_dir } => mosaic::demo::run(port_base, data_dir, shutdown_signal()).await,
    }
}

/// The database and the federation service, as `serve` opens them.
async fn open_federation(config: &Config) -> Result<(Database, Federation)> {
    mosaic::federation::tls::install_crypto_provider();
    let secret = config.require_secret()?;
    let db = open_existing(config).await?;
    let opened = async {
        let me = mosaic::app::load_instance(
            config,
            &db,
            config.base_url(config.listen),
            &mosaic::schema::build_schema(),
        )
        .await?;
        Federation::open(config, &db, &secret, &me).await
    }
    .await;
    match opened {
        Ok(fed) => Ok((db, fed)),
        Err(e) => {
            db.shutdown().await?;
            Err(e)
        }
    }
}

async fn peer_command(command: PeerCommand, config: Config) -> Result<()> {
    mosaic::federation::tls::install_crypto_provider();
    let secret = config.require_secret()?;
    let db = open_existing(&config).await?;
    let me = mosaic::app::load_instance(
        &config,
        &db,
        config.base_url(config.listen),
        &mosaic::schema::build_schema(),
    )
    .await?;
    let fed = Federation::open(&config, &db, &secret, &me).await?;
    let result = peer_action(&fed, &db, command).await;
    db.shutdown().await?;
    result
}

async fn peer_action(fed: &Federation, db: &Database, command: PeerCommand) -> Result<()> {
    let actor = "cli";
    let parse_id = |id: &str| -> Result<Uuid> {
        id.parse()
            .map_err(|_| anyhow::anyhow!("ID: '{id}' is not an instance id"))
    };
    let shown = match command {
        PeerCommand::Connect { url } => fed.connect(&url, actor).await?,
        PeerCommand::List => {
            let peers = mosaic::federation::registry::list(&fed.pool).await?;
            if peers.is_empty() {
                eprintln!("no peers yet (mosaic peer connect https://OTHER-INSTANCE)");
            }
            for p in peers {
                print_peer(&p);
            }
            return Ok(());
        }
        PeerCommand::Approve { id, grant } => {
            let terms = grant.terms(db).await?;
            fed.approve(parse_id(&id)?, &terms, actor).await.map_err(cli_error)?
        }
        PeerCommand::Grant {
            command: GrantCommand::Show { id },
        } => {
            let peer = mosaic::federation::registry::get(&fed.pool, parse_id(&id)?)
                .await?
                .ok_or_else(|| anyhow::anyhow!("ID: no peer {id}"))?;
            let grant = mosaic::federation::registry::grant_details(&peer.terms());
            println!("{}", serde_json::to_string_pretty(&grant)?);
            return Ok(());
        }
        PeerCommand::Grant {
            command: GrantCommand::Set { id, grant },
        } => {
            let terms = grant.terms(db).await?;
            fed.set_grant(parse_id(&id)?, &terms, actor).await.map_err(cli_error)?
        }
        PeerCommand::Reject { id } => fed.reject(parse_id(&id)?, actor).await?,
        PeerCommand::Suspend { id } => fed.suspend(parse_id(&id)?, actor).await?,
        PeerCommand::Revoke { id } => fed.revoke(parse_id(&id)?, actor).await?,
        PeerCommand::Delete { id } => {
            let deleted = fed.delete(parse_id(&id)?, actor).await?;
            println!("deleted {} ({})", deleted.id, deleted.name);
            return Ok(());
        }
    };
    print_peer(&shown);
    Ok(())
}

/// A refused grant names its flag rather than its GraphQL field.
fn cli_error(e: mosaic::federation::peering::PeeringError) -> anyhow::Error {
    match e {
        mosaic::federation::peering::PeeringError::Invalid(m) => anyhow::anyhow!(flag_message(&m)),
        other => other.into(),
    }
}

/// A workspace given as a UUID, a global ID, or an exact name (which must be unique).
async fn workspace_id(conn: &mut sqlx::PgConnection, text: &str) -> Result<Uuid> {
    if let Ok(id) = text.parse::<Uuid>() {
        return Ok(id);
    }
    if let Ok(g) = mosaic::graphql::ids::GlobalId::parse(text) {
        return Ok(g.local);
    }
    let named: Vec<Uuid> = sqlx::query_scalar("SELECT unnest(workspace_ids_named($1))")
        .bind(text)
        .fetch_all(conn)
        .await?;
    match named.as_slice() {
        [id] => Ok(*id),
        [] => anyhow::bail!("--workspace: no workspace named '{text}'"),
        _ => anyhow::bail!("--workspace: several workspaces are named '{text}'; give its id"),
    }
}

fn print_peer(p: &mosaic::federation::registry::PeerRecord) {
    let keys: Vec<&str> = p.keys.iter().map(|k| k.key_id.as_str()).collect();
    println!(
        "{}  {:<12} inbound={:<9} outbound={:<9} grant={:?}{} keys={} {}",
        p.id,
        p.name,
        p.inbound_state,
        p.outbound_state,
        p.grant_workspaces,
        if p.grant_read_write { " (read-write)" } else { "" },
        keys.join(","),
        p.base_url
    );
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

/// The break-glass password: typed without echo at a terminal, else the
/// first line of standard input.
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password("Break-glass password: ")?);
    }
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    Ok(password.trim_end_matches(['\n', '\r']).to_string())
}
