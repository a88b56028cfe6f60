//! The `mphub` command: flags and config file, logging, signals. Everything else is the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mphub_broker::config::{self, FileConfig, LogFormat, Size, SlowConsumer};

/// mphub: a message broker for Python's multiprocessing.connection wire.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Flags {
    #[arg(
        long,
        value_name = "ADDR",
        help = "Address to accept clients on: host:port, [v6]:port, unix:/path or unix:@name. \
                Repeat for several. Default 127.0.0.1:6000."
    )]
    listen: Vec<String>,
    /// HTTP address for /metrics and /healthz, or `off`. Default 127.0.0.1:6001.
    #[arg(long, value_name = "ADDR|off")]
    metrics: Option<String>,
    /// File holding the authkey (one trailing newline is stripped). Else MPHUB_AUTHKEY.
    #[arg(long, value_name = "PATH")]
    authkey_file: Option<PathBuf>,
    /// TOML config file; flags beat it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Largest frame accepted (bytes, or 64MiB style). Default 64MiB.
    #[arg(long, value_name = "BYTES")]
    max_frame: Option<String>,
    /// Bytes queued for one connection before the slow-consumer policy applies. Default 32MiB.
    #[arg(long, value_name = "BYTES")]
    outbound_limit: Option<String>,
    /// What to do with a connection past its outbound limit. Default disconnect.
    #[arg(long, value_enum)]
    slow_consumer: Option<SlowConsumer>,
    /// Most connections at once. Default 10000.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most subscriptions one connection may hold. Default 10000.
    #[arg(long, value_name = "N")]
    max_subscriptions: Option<usize>,
    /// Seconds allowed for the authentication handshake. Default 5.
    #[arg(long, value_name = "SECONDS")]
    handshake_timeout: Option<f64>,
    /// Seconds allowed at shutdown to flush queued messages. Default 5.
    #[arg(long, value_name = "SECONDS")]
    shutdown_timeout: Option<f64>,
    /// Log filter: error, warn, info, debug, trace (or a tracing directive). Default info.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format. Default text.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Join a NATS deployment: nats://host:4222[,nats://...] (tls:// for TLS). Default none.
    #[arg(long, value_name = "URLS")]
    cluster: Option<String>,
    /// Put before every topic to make its NATS subject. Default `mphub.`.
    #[arg(long, value_name = "PREFIX")]
    cluster_prefix: Option<String>,
    /// File holding the NATS token.
    #[arg(long, value_name = "PATH")]
    cluster_token_file: Option<PathBuf>,
    /// NATS user name (with --cluster-password-file).
    #[arg(long, value_name = "USER")]
    cluster_user: Option<String>,
    /// File holding the NATS password.
    #[arg(long, value_name = "PATH")]
    cluster_password_file: Option<PathBuf>,
    /// NATS credentials file (.creds: JWT and NKey seed).
    #[arg(long, value_name = "PATH")]
    cluster_creds_file: Option<PathBuf>,
    /// Refuse a NATS server without TLS.
    #[arg(long)]
    cluster_tls_required: bool,
    /// Extra CA certificates (PEM) to trust for NATS.
    #[arg(long, value_name = "PATH")]
    cluster_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS, with --cluster-tls-key.
    #[arg(long, value_name = "PATH")]
    cluster_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for NATS.
    #[arg(long, value_name = "PATH")]
    cluster_tls_key: Option<PathBuf>,
    /// Bytes waiting to go to NATS before more are counted and not forwarded. Default 64MiB.
    #[arg(long, value_name = "BYTES")]
    cluster_outbound_limit: Option<String>,
}

impl Flags {
    fn file_config(self) -> anyhow::Result<(Option<PathBuf>, FileConfig)> {
        Ok((
            self.config,
            FileConfig {
                listen: (!self.listen.is_empty()).then_some(self.listen),
                metrics: self.metrics,
                authkey_file: self.authkey_file,
                max_frame: self.max_frame.map(Size::Text),
                outbound_limit: self.outbound_limit.map(Size::Text),
                slow_consumer: self.slow_consumer,
                max_connections: self.max_connections,
                max_subscriptions: self.max_subscriptions,
                handshake_timeout: self.handshake_timeout,
                shutdown_timeout: self.shutdown_timeout,
                log_level: self.log_level,
                log_format: self.log_format,
                cluster: self.cluster.map(config::Urls::One),
                cluster_prefix: self.cluster_prefix,
                cluster_token_file: self.cluster_token_file,
                cluster_user: self.cluster_user,
                cluster_password_file: self.cluster_password_file,
                cluster_creds_file: self.cluster_creds_file,
                cluster_tls_required: self.cluster_tls_required.then_some(true),
                cluster_tls_ca: self.cluster_tls_ca,
                cluster_tls_cert: self.cluster_tls_cert,
                cluster_tls_key: self.cluster_tls_key,
                cluster_outbound_limit: self.cluster_outbound_limit.map(Size::Text),
            },
        ))
    }
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
    let (path, flags) = Flags::parse().file_config()?;
    let file = match &path {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let env_key = std::env::var_os("MPHUB_AUTHKEY").map(|k| k.into_encoded_bytes());
    let config = file.merge(flags).resolve(env_key)?;
    init_logging(&config.log_level, config.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(mphub_broker::run(config, signal()))?;
    Ok(())
}
