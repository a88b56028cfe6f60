//! The `mphub` command: flags and config file, logging, signals. Everything else is the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use mphub_broker::config::{LogFormat, Secret, Settings, Source};

/// jemalloc with background threads: memory freed after a burst (200,000 subscriptions closing,
/// a flood of large frames) goes back to the system within seconds even while the broker is
/// idle; glibc malloc kept most of it (docs/performance.md has the figures).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// mphub: a message broker for Python's multiprocessing.connection wire.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file; flags beat it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // No signal handling: run until killed.
            std::future::pending::<()>().await;
        }
    }
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    // The NATS client's own info lines repeat what the cluster bridge logs; keep its warnings
    // (a directive naming async_nats decides for itself).
    let level = match level {
        "info" | "debug" | "trace" => format!("{level},async_nats=warn"),
        other => other.to_owned(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .with_context(|| format!("invalid log level {level:?}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("mphub: {e:#}");
        std::process::exit(2);
    }
}

fn real_main() -> anyhow::Result<()> {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) if e.use_stderr() => {
            // One line, like every other configuration error (clap adds a usage hint below).
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            anyhow::bail!("{}", first.trim_start_matches("error: "));
        }
        Err(e) => e.exit(), // --help, --version
    };
    let file = matches.get_one::<PathBuf>("config").cloned();
    let env_key = std::env::var_os("MPHUB_AUTHKEY").map(|k| Secret::new(k.into_encoded_bytes()));
    let config = Source::new(file, matches, env_key).load()?;
    init_logging(&config.settings.log_level, config.settings.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(mphub_broker::run(config, signal()))?;
    Ok(())
}
