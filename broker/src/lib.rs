//! `mphub-broker`: the mphub message broker as a library; `main.rs` is only flags and logging.
//!
//! Where things are:
//! - [`config`]: defaults, TOML file, flags; protected mode.
//! - [`net`]: TCP and Unix listeners and streams.
//! - [`server`]: accept loops, the connection limit.
//! - [`connection`]: one client: handshake, reading, classifying, routing.
//! - [`writer`]: draining a connection's outbound queue with vectored writes.
//! - [`peer`]: the outbound queue as publishers see it; the slow-consumer policy.
//! - [`index`]: the subscription trie, queue groups, the match cache.
//! - [`route`]: offering a frame to local subscribers, and counting it.
//! - [`cluster`]: the bridge to a NATS deployment (`--cluster`).
//! - [`metrics`]: the Prometheus registry.
//!
//! [`start`] binds every listener and returns a [`Broker`]; tests run one in-process on port 0.

pub mod cluster;
pub mod config;
pub mod connection;
pub mod http;
pub mod index;
pub mod metrics;
pub mod net;
pub mod peer;
pub mod route;
pub mod server;
pub mod worker_metrics;
pub mod writer;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Config, ListenAddr};

/// State every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub index: index::Index,
    pub metrics: metrics::Metrics,
    pub next_id: AtomicU64,
    /// Cancelled at shutdown: stop accepting and reading, flush, close.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown deadline passes: drop whatever is still queued.
    pub hard_stop: CancellationToken,
    /// Cancelled when every connection is closed: the metrics endpoint stops then.
    pub stopped: CancellationToken,
    pub tracker: TaskTracker,
    /// Every open connection's queue handle, for the outbound-depth metrics.
    pub peers: dashmap::DashMap<u64, Arc<peer::Peer>>,
    /// What worker processes report through `$metrics`.
    pub worker_metrics: worker_metrics::Store,
    /// The bridge to NATS, with `--cluster`.
    pub cluster: Option<cluster::Cluster>,
}

impl Shared {
    /// The Prometheus text for `/metrics`.
    /// The workers' families follow the broker's own, each family whole.
    pub fn render_metrics(&self) -> String {
        self.metrics
            .metrics_series
            .set(i64::try_from(self.worker_metrics.series()).unwrap_or(i64::MAX));
        if let Some(c) = &self.cluster {
            c.refresh_metrics();
        }
        let mut out = self
            .metrics
            .render(&self.index, self.peers.iter().map(|p| p.value().queued()));
        self.worker_metrics.render(&mut out);
        out
    }
}

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
    shared: Arc<Shared>,
    addrs: Vec<ListenAddr>,
    metrics_addr: Option<std::net::SocketAddr>,
    accept: TaskTracker,
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Broker, StartError> {
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for addr in &config.listen {
        let (l, local) = net::bind(addr).await.map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
        info!("mphub listening on {local}");
        listeners.push(l);
        addrs.push(local);
    }
    if config.authkey.is_none() {
        warn!("no authkey set: no handshake, loopback and Unix sockets only (protected mode)");
    }
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let metrics = metrics::Metrics::new();
    metrics.max_connections.set(config.max_connections as i64);
    metrics
        .outbound_limit
        .set(i64::try_from(config.outbound_limit).unwrap_or(i64::MAX));
    let (cluster, pending) = match config.cluster.clone() {
        Some(c) => {
            let (c, p) = cluster::Cluster::new(c, &metrics.registry);
            (Some(c), Some(p))
        }
        None => (None, None),
    };
    let shared = Arc::new(Shared {
        cluster,
        config,
        index: index::Index::default(),
        metrics,
        next_id: AtomicU64::new(1),
        shutdown: CancellationToken::new(),
        hard_stop: CancellationToken::new(),
        stopped: CancellationToken::new(),
        tracker: TaskTracker::new(),
        peers: dashmap::DashMap::new(),
        worker_metrics: worker_metrics::Store::default(),
    });
    let accept = TaskTracker::new();
    if let Some(pending) = pending {
        cluster::start(&shared, pending, &accept).await?;
    }
    let metrics_addr = match shared.config.metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Metrics { addr, source })?;
            let local = l
                .local_addr()
                .map_err(|source| StartError::Metrics { addr, source })?;
            info!("mphub metrics on http://{local}/metrics");
            accept.spawn(http::serve(shared.clone(), l));
            Some(local)
        }
        None => None,
    };
    for l in listeners {
        accept.spawn(server::accept_loop(shared.clone(), l, limit.clone()));
    }
    accept.close();
    Ok(Broker {
        shared,
        addrs,
        metrics_addr,
        accept,
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

    /// The shared state (metrics, index), for tests and the metrics endpoint.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, flushes outbound queues for up to the shutdown timeout, closes
    /// everything and returns.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        let deadline = self.shared.config.shutdown_timeout;
        if tokio::time::timeout(deadline, self.shared.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                ?deadline,
                "shutdown deadline passed; dropping what is still queued"
            );
            self.shared.hard_stop.cancel();
            self.shared.tracker.wait().await;
        }
        // The metrics endpoint answers 503 on /healthz until here.
        self.shared.stopped.cancel();
        self.accept.wait().await;
        for addr in &self.addrs {
            if let ListenAddr::Unix(path) = addr {
                let _ = std::fs::remove_file(path);
            }
        }
        info!("mphub stopped");
    }
}

/// Runs a broker until `signal` completes, then shuts it down gracefully.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), StartError> {
    let broker = start(config).await?;
    signal.await;
    info!("shutting down");
    broker.shutdown().await;
    Ok(())
}
