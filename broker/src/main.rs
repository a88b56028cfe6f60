//! The `mphub` command: flags and config file, logging, the open-files limit, signals.
//! Everything else is the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use mphub_broker::config::{LogFormat, Secret, Settings, Source};
use mphub_broker::{Broker, Config};
use tokio::signal::unix::{signal, Signal as UnixSignal, SignalKind};
use tracing::{debug, info, warn};
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

/// What a signal asks of the broker. Only SIGTERM and SIGINT stop it (PROTOCOL §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGTERM, SIGINT: shut down gracefully.
    Stop(&'static str),
    /// SIGHUP: re-read the configuration file; see [`reload`].
    Reload,
    /// SIGUSR1, SIGUSR2: logged and ignored. Their default action would kill the broker at
    /// once, without a log line or a flush.
    Ignore(&'static str),
}

/// The signals the broker handles. Installed before the first listener binds, so that once
/// a client can reach the broker, none of these can kill it.
#[derive(Debug)]
struct Signals {
    term: UnixSignal,
    int: UnixSignal,
    hup: UnixSignal,
    usr1: UnixSignal,
    usr2: UnixSignal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Waits for the next signal.
    ///
    /// Cancel safety: cancel safe (`recv` is). A stream that ends (only when the runtime
    /// shuts down) reads as a stop.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            Some(()) = self.term.recv() => Signal::Stop("SIGTERM"),
            Some(()) = self.int.recv() => Signal::Stop("SIGINT"),
            Some(()) = self.hup.recv() => Signal::Reload,
            Some(()) = self.usr1.recv() => Signal::Ignore("SIGUSR1"),
            Some(()) = self.usr2.recv() => Signal::Ignore("SIGUSR2"),
            else => Signal::Stop("end of signals"),
        }
    }
}

/// SIGHUP: re-reads the configuration from `source` and applies what can change live
/// (PROTOCOL §7; docs/configuration.md says what does). A config that fails to load changes
/// nothing: `Broker::reload` logs and counts it.
async fn reload(broker: &Broker, source: &Source, log: &LogLevel) {
    info!(
        signal = "SIGHUP",
        "reload requested: reloading the configuration"
    );
    let now = broker.reload(source.load()).await;
    log.set(&now.settings.log_level);
}

/// Serves until SIGTERM or SIGINT, handling every other signal on the way.
async fn serve(config: Config, source: Source, log: LogLevel) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("cannot install signal handlers")?;
    let broker = mphub_broker::start(config).await?;
    loop {
        match signals.next().await {
            Signal::Stop(name) => {
                info!(signal = name, "shutting down");
                break;
            }
            Signal::Reload => reload(&broker, &source, &log).await,
            Signal::Ignore(name) => info!(
                signal = name,
                "signal ignored: only SIGTERM and SIGINT stop the broker"
            ),
        }
    }
    broker.shutdown().await;
    Ok(())
}

/// Raises the soft open-files limit to the hard one, as Go programs do at start: every client
/// connection is a file descriptor, and distributions still default the soft limit to 1024.
/// Warns when even the hard limit is below what the settings need: connections past it would
/// wait in the listen backlog and time out.
fn raise_open_files(config: &Config) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let need = mphub_broker::descriptors_needed(&config.settings);
    let limit = getrlimit(Resource::Nofile);
    let Some(soft) = limit.current else {
        return; // unlimited
    };
    // An unlimited hard limit is not a value Linux takes for open files: ask for what we need.
    let hard = limit.maximum.unwrap_or(need.max(soft));
    let mut now = soft;
    if soft < hard {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                now = hard;
                debug!(from = soft, to = hard, "open-files limit raised");
            }
            Err(e) => warn!(error = %e, soft, hard, "cannot raise the open-files limit"),
        }
    }
    if now < need {
        warn!(
            open_files = now,
            needed = need,
            max_connections = config.settings.max_connections.get(),
            "the open-files limit is below what the settings need: connections past it wait \
             and time out; raise the hard limit (systemd LimitNOFILE=, ulimit -Hn) or lower \
             max_connections"
        );
    }
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
    raise_open_files(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, source, log))
}
