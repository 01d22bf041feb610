//! The `mosaic` command line.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mosaic::app::Application;
use mosaic::auth::{tokens, users};
use mosaic::config::Config;
use mosaic::db::Database;

#[derive(Parser)]
#[command(name = "mosaic", version, about = "Mosaic federation gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL (MOSAIC_LISTEN, MOSAIC_DATA_DIR, DATABASE_URL).
    Serve,
    /// Bring the database schema up to date and exit.
    Migrate,
    /// Manage local users.
    User {
        #[command(subcommand)]
        command: UserCommand,
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
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prints its id.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Make the user an instance administrator.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a user; prints only the token, once.
    Create {
        /// The user's e-mail.
        #[arg(long)]
        user: String,
        /// Lifetime (30d, 12h, 45m) or an RFC 3339 time; default: no expiry.
        #[arg(long)]
        expires: Option<String>,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Print the SDL (or write it to a file).
    Print {
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
            Some(path) => match std::fs::write(path, mosaic::graphql::sdl()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(anyhow::anyhow!("--output {}: {e}", path.display())),
            },
            None => {
                print!("{}", mosaic::graphql::sdl());
                ExitCode::SUCCESS
            }
        };
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    mosaic::telemetry::init(config.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

async fn run(command: Command, config: Config) -> Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(config).await?;
            app.run(shutdown_signal()).await
        }
        Command::Migrate => Database::open(&config).await?.shutdown().await,
        Command::User {
            command: UserCommand::Create { email, name, admin },
        } => {
            let db = Database::open(&config).await?;
            let created =
                users::create(&mut db.admin().await?, &email, name.as_deref(), admin).await;
            db.shutdown().await?;
            println!("{}", created?);
            Ok(())
        }
        Command::Token {
            command: TokenCommand::Create { user, expires },
        } => {
            let expires_at = expires
                .map(|e| tokens::parse_expiry(&e, time::OffsetDateTime::now_utc()))
                .transpose()?;
            let db = Database::open(&config).await?;
            let token = tokens::create(&mut db.admin().await?, &user, expires_at).await;
            db.shutdown().await?;
            println!("{}", token?);
            Ok(())
        }
        Command::Schema { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
