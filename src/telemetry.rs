//! Structured logs through `tracing`. `RUST_LOG` filters; `log_format` picks text or JSON.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // bollard's debug logs carry container definitions, environment (user
    // secrets) included: never below info, whatever RUST_LOG asks.
    let filter = filter.add_directive("bollard=info".parse().expect("static directive"));
    // Colour codes only for a terminal, never into a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
