//! `mphub-broker`: the mphub message broker as a library; `main.rs` is only flags, logging and
//! signals.
//!
//! Where things are (lower layers first; a module imports only from those above it in this
//! list, and `docs/architecture.md` draws the data path):
//! - [`config`]: every setting declared once; defaults, the TOML file, flags; protected mode.
//! - [`shutdown`]: the three shutdown phases.
//! - [`tls`]: the TLS handshake of `tls://` listeners, its failure kinds, a TLS stream's halves
//!   (the certificates themselves are configuration: `config::ServerTls`).
//! - [`prom`]: registering Prometheus metrics.
//! - [`outbox`]: a connection's outbound queue as publishers see it; the slow-consumer policy.
//! - [`index`]: the subscription trie, queue groups, the match cache.
//! - [`route`]: routing one frame to local subscribers (the one place it is done), the
//!   [`route::Forward`] hook beyond this node, and the delivery counts.
//! - [`worker_metrics`]: what worker processes report with `$metrics`.
//! - [`topics`]: the busiest topics, estimated by sampling publishes.
//! - [`metrics`]: the broker's own Prometheus registry.
//! - [`cluster`]: the bridge to a NATS deployment (`--cluster`), behind a narrow handle.
//! - [`command`]: one function per client message (publish, `$sub`/`$unsub`, `$ping`,
//!   `$metrics`).
//! - [`net`], [`writer`], [`connections`], [`connection`], [`server`]: listeners and streams,
//!   a connection's writer, the open connections, one connection's life, the accept loops.
//! - [`http`]: `/metrics`, `/healthz`, introspection as JSON and the status page.
//! - [`reload`]: what a configuration reload (SIGHUP) changes live and what needs a restart.
//!
//! [`start`] binds every listener and returns a [`Broker`]; tests run one in-process on port 0.
//! [`run`] serves until a signal, then shuts down gracefully.

pub mod cluster;
pub mod command;
pub mod config;
pub mod connection;
pub mod connections;
pub mod http;
pub mod index;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod prom;
pub mod reload;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod topics;
pub mod worker_metrics;
pub mod writer;

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Config, ListenAddr};

use cluster::Cluster;
use command::Services;
use connection::Context;
use connections::Connections;
use route::{Forward, Router};
use shutdown::Shutdown;

/// How long [`Broker::reload`] waits for every connection to follow a new configuration (a
/// connection applies it when it wakes: at once if idle, at its next frame if busy).
pub const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The broker could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: ListenAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] cluster::SetupError),
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    /// The configuration in force; every connection watches it.
    config: watch::Sender<Arc<Config>>,
    sources: Arc<http::Sources>,
    shutdown: Shutdown,
    /// One task per connection.
    connections: TaskTracker,
    /// Accept loops, the HTTP endpoint, the cluster bridge.
    background: TaskTracker,
    addrs: Vec<ListenAddr>,
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Broker, StartError> {
    let config = Arc::new(config);
    let s = &config.settings;
    let backlog = net::Backlog::for_connections(s.max_connections.get());
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for addr in &s.listen {
        let (l, local) = net::bind(addr, backlog).map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
        info!("mphub listening on {local}");
        listeners.push(l);
        addrs.push(local);
    }
    if let (true, Some(cap)) = (backlog.is_clamped(), backlog.somaxconn) {
        info!(
            backlog = cap,
            max_connections = backlog.wanted,
            "listen backlog capped by net.core.somaxconn: a burst of more simultaneous connects \
             than that can be dropped by the kernel; raise it with sysctl net.core.somaxconn"
        );
    }
    if config.users.ring().is_none() {
        warn!("no authkey set: no handshake, loopback and Unix sockets only (protected mode)");
    }
    let metrics = Arc::new(metrics::Metrics::new());
    metrics
        .max_connections
        .set(i64::try_from(s.max_connections.get()).unwrap_or(i64::MAX));
    metrics
        .outbound_limit
        .set(i64::try_from(s.outbound_limit.bytes()).unwrap_or(i64::MAX));
    let index = Arc::new(index::Index::default());
    let router = Router::new(index.clone(), metrics.delivery());
    let shutdown = Shutdown::default();
    let background = TaskTracker::new();
    let (config_tx, config_rx) = watch::channel(config.clone());
    let cluster = match &config.cluster {
        Some(c) => {
            let local = cluster::Local {
                router: router.clone(),
                config: config_rx.clone(),
                outbound_limit: s.outbound_limit.bytes(),
                shutdown: shutdown.clone(),
                shutdown_timeout: s.shutdown_timeout.duration(),
            };
            Some(Cluster::start(c.clone(), local, &metrics.registry, &background).await?)
        }
        None => None,
    };
    let workers = Arc::new(worker_metrics::Store::default());
    let connections = Arc::new(Connections::new(metrics.connections_by_user.clone()));
    let topics = Arc::new(topics::Topics::default());
    let ctx = Arc::new(Context {
        config: config_rx.clone(),
        services: Services {
            router,
            metrics: metrics.clone(),
            workers: workers.clone(),
            forward: cluster.clone().map(|c| c as Arc<dyn Forward>),
            topics: topics.clone(),
        },
        connections: connections.clone(),
        shutdown: shutdown.clone(),
        arriving: Arc::new(connection::Arriving::new(
            s.arriving_limit.bytes().max(s.max_frame.bytes()),
        )),
    });
    let sources = Arc::new(http::Sources {
        metrics,
        index,
        connections,
        workers,
        cluster,
        shutdown: shutdown.clone(),
        config: config_rx,
        topics,
        started: std::time::SystemTime::now(),
    });
    let metrics_addr = match s.metrics.addr() {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Metrics { addr, source })?;
            let local = l
                .local_addr()
                .map_err(|source| StartError::Metrics { addr, source })?;
            info!("mphub metrics on http://{local}/metrics");
            background.spawn(http::serve(sources.clone(), l));
            Some(local)
        }
        None => None,
    };
    let ids = Arc::new(server::Ids::default());
    let tasks = TaskTracker::new();
    for l in listeners {
        background.spawn(server::accept_loop(
            ctx.clone(),
            l,
            ids.clone(),
            tasks.clone(),
        ));
    }
    background.close();
    Ok(Broker {
        config: config_tx,
        sources,
        shutdown,
        connections: tasks,
        background,
        addrs,
        metrics_addr,
    })
}

impl Broker {
    /// The addresses really bound (port 0 resolved), in the order configured.
    pub fn addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    /// The metrics HTTP address really bound, if metrics are on.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// Applies a configuration loaded afresh (SIGHUP): what can change live changes now —
    /// connections follow it from their next frame — and what cannot is kept and logged as
    /// needing a restart (see [`reload`]). Returns once every open connection follows it (or
    /// after [`RELOAD_WAIT`], saying how many do not yet): a client that sees the
    /// "configuration reloaded" line can rely on it. A configuration that failed to load
    /// changes nothing: one log line. Counted in `mphub_config_reloads_total{result}`. Returns
    /// the configuration in force afterwards.
    pub async fn reload(&self, loaded: Result<Config, config::ConfigError>) -> Arc<Config> {
        let counter = &self.sources.metrics.config_reloads;
        let merged = loaded.and_then(|new| reload::merge(&self.config(), new));
        let out = match merged {
            Ok(out) => out,
            Err(e) => {
                counter.with_label_values(&["error"]).inc();
                tracing::error!(
                    "configuration reload failed, nothing changed: {}",
                    error_chain(&e)
                );
                return self.config();
            }
        };
        if !out.needs_restart.is_empty() {
            warn!(
                settings = %out.needs_restart.join(", "),
                "configuration reload: these settings changed but need a restart; kept as they are"
            );
        }
        let users = out.config.users.iter().count();
        let s = &out.config.settings;
        let m = &self.sources.metrics;
        m.max_connections
            .set(i64::try_from(s.max_connections.get()).unwrap_or(i64::MAX));
        m.outbound_limit
            .set(i64::try_from(s.outbound_limit.bytes()).unwrap_or(i64::MAX));
        let config = Arc::new(out.config);
        self.config.send_replace(config.clone());
        counter.with_label_values(&["ok"]).inc();
        let connections = &self.sources.connections;
        let waited = tokio::time::timeout(RELOAD_WAIT, async {
            while connections.behind(&config) > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
        .await;
        match waited {
            Ok(()) => info!(users, "configuration reloaded"),
            Err(_) => info!(
                users,
                behind = connections.behind(&config),
                "configuration reloaded; some connections apply it at their next frame"
            ),
        }
        config
    }

    /// The text `/metrics` would serve now (for tests and embedders).
    pub fn render_metrics(&self) -> String {
        self.sources.render_metrics()
    }

    /// Stops accepting, flushes outbound queues for up to the shutdown timeout, closes
    /// everything and returns.
    pub async fn shutdown(self) {
        self.shutdown.begin();
        self.connections.close();
        let deadline = self.config().settings.shutdown_timeout.duration();
        if tokio::time::timeout(deadline, self.connections.wait())
            .await
            .is_err()
        {
            warn!(
                ?deadline,
                "shutdown deadline passed; dropping what is still queued"
            );
            self.shutdown.expire();
            self.connections.wait().await;
        }
        // The metrics endpoint answers 503 on /healthz until here.
        self.shutdown.finish();
        // The accept loops have ended: their listeners, and with them the Unix socket files
        // still our own, are gone.
        self.background.wait().await;
        info!("mphub stopped");
    }
}

/// File descriptors a broker with these settings may hold at once: one per client connection,
/// the HTTP endpoint's cap, one per listener, and a margin for the runtime (epoll, wakers),
/// the cluster bridge, stdio and files read at start.
pub fn descriptors_needed(settings: &config::Settings) -> u64 {
    const MARGIN: u64 = 64;
    let http = if settings.metrics.addr().is_some() {
        http::MAX_CONNECTIONS as u64 + 1
    } else {
        0
    };
    settings.max_connections.get() as u64 + http + settings.listen.len() as u64 + MARGIN
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Runs a broker until `signal` completes, then shuts it down gracefully.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), StartError> {
    let broker = start(config).await?;
    signal.await;
    info!("shutting down");
    broker.shutdown().await;
    Ok(())
}
