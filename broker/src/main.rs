//! The `mphub` command: flags and config file, logging, signals. Everything else is the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use mphub_broker::config::{LogFormat, Secret, Settings, Source};
use mphub_broker::Config;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

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

/// Serves until SIGTERM or SIGINT; SIGHUP reloads the configuration from `source`.
async fn serve(config: Config, source: Source, log: LogLevel) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let broker = mphub_broker::start(config).await?;
    loop {
        // Cancel safety: `recv` is cancel safe.
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                info!(signal = "SIGHUP", "reloading the configuration");
                let now = broker.reload(source.load()).await;
                log.set(&now.settings.log_level);
            }
        }
    }
    info!("shutting down");
    broker.shutdown().await;
    Ok(())
}

/// The log filter, which a reload may change.
struct LogLevel(tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>);

impl LogLevel {
    fn set(&self, level: &str) {
        match filter(level) {
            Ok(f) => {
                if let Err(e) = self.0.reload(f) {
                    warn!(error = %e, "cannot change the log level");
                }
            }
            Err(e) => warn!("log_level not changed: {e:#}"),
        }
    }
}

fn filter(level: &str) -> anyhow::Result<EnvFilter> {
    // The NATS client's own info lines repeat what the cluster bridge logs; keep its warnings
    // (a directive naming async_nats decides for itself).
    let level = match level {
        "info" | "debug" | "trace" => format!("{level},async_nats=warn"),
        other => other.to_owned(),
    };
    EnvFilter::try_new(&level).with_context(|| format!("invalid log level {level:?}"))
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<LogLevel> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter(level)?);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
    Ok(LogLevel(handle))
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
    let source = Source::new(file, matches, env_key);
    let config = source.load()?;
    let log = init_logging(&config.settings.log_level, config.settings.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, source, log))
}
