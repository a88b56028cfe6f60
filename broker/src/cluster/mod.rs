//! The cluster bridge: mphub nodes that join one NATS deployment and behave as one hub.
//!
//! NATS carries messages between nodes; mphub never builds a cluster of its own. Where things
//! are:
//! - [`options`]: `--cluster` and the `cluster_*` keys, the NATS connection options.
//! - [`subject`]: topics as NATS subjects, queue names, the `Mphub-*` headers.
//! - [`outbound`]: local publishes on their way to NATS (once each, in order, never blocking).
//! - [`inbound`]: following local interest with NATS subscriptions; delivering what they bring.
//! - [`metrics`]: the `mphub_cluster_*` metrics.
//!
//! A publish is delivered to local subscribers first (as on a single node) and handed to NATS
//! once, as the publisher's own pickle bytes. NATS's `no_echo` keeps it from coming back. Queue
//! groups prefer a local member; the groups served that way travel in a header, so the NATS
//! member that receives the same message for that group leaves it alone.
//! `docs/cluster.md` explains the design for users.

pub mod inbound;
pub mod metrics;
pub mod options;
pub mod outbound;
pub mod subject;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_nats::Event;
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use options::ClusterConfig;
pub use subject::Served;

use crate::index::Follower;
use crate::Shared;
use metrics::ClusterMetrics;
use outbound::{Item, Outbound};

/// The last NATS connection failure, for `/healthz`; whether the current run of failures has
/// been logged. (Connected or not is `Outbound::connected`.)
#[derive(Debug, Default)]
struct Status {
    last_error: Option<String>,
    /// A failure was logged since the last change of state (later ones go to debug).
    told: bool,
}

/// The bridge as the rest of the broker sees it.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    naming: subject::Naming,
    out: Arc<Outbound>,
    wanted: Arc<inbound::Wanted>,
    metrics: ClusterMetrics,
    status: Arc<Mutex<Status>>,
    /// The NATS client's own counters, once connected.
    stats: std::sync::OnceLock<Arc<async_nats::Statistics>>,
}

/// What [`start`] needs that the shared state cannot hold.
#[derive(Debug)]
pub struct Pending {
    rx: mpsc::UnboundedReceiver<Item>,
}

/// A NATS connection could not even be set up (a credentials file that does not parse, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the NATS connection: {0}")]
pub struct SetupError(String);

fn node_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

impl Cluster {
    /// The bridge's state, its metrics registered in `registry`.
    pub fn new(config: ClusterConfig, registry: &prometheus::Registry) -> (Self, Pending) {
        let metrics = ClusterMetrics::new(registry);
        let naming = subject::Naming::new(&config.prefix, &node_id());
        let (out, rx) = Outbound::new(config.outbound_limit, naming.clone(), metrics.clone());
        let cluster = Cluster {
            config,
            naming,
            out: Arc::new(out),
            wanted: Arc::default(),
            metrics,
            status: Arc::default(),
            stats: std::sync::OnceLock::new(),
        };
        (cluster, Pending { rx })
    }

    /// Hands a local publish to NATS (see [`outbound`]).
    pub fn forward(&self, topic: &str, payload: Bytes, served: Served<'_>) {
        self.out.forward(topic, payload, served);
    }

    /// The index's follower: interest changes go to the bridge.
    pub fn follower(&self) -> Follower {
        let wanted = self.wanted.clone();
        Box::new(move |change| wanted.note(change))
    }

    /// One line for `/healthz`.
    pub fn health(&self) -> String {
        let st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let urls = self.config.redacted_urls().join(",");
        if self.out.connected.load(Ordering::Acquire) {
            format!("cluster: connected to NATS ({urls})")
        } else {
            let why = st.last_error.as_deref().unwrap_or("connecting");
            format!(
                "cluster: not connected to NATS ({urls}): {why}; serving local clients only, \
                 retrying"
            )
        }
    }

    /// Brings the scrape-time gauges up to date.
    pub fn refresh_metrics(&self) {
        self.metrics
            .outbound_queued
            .set(i64::try_from(self.out.queued()).unwrap_or(i64::MAX));
        if let Some(stats) = self.stats.get() {
            let seen = stats.in_messages.load(Ordering::Relaxed);
            let nats_in = &self.metrics.nats_in;
            nats_in.inc_by(seen.saturating_sub(nats_in.get()));
        }
    }

    fn on_event(&self, ev: Event) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            Event::Connected => {
                info!(node = self.naming.node(), "cluster: connected to NATS");
                st.last_error = None;
                st.told = false;
                self.out.connected.store(true, Ordering::Release);
                self.metrics.connected.set(1);
            }
            Event::Disconnected => {
                warn!(
                    "cluster: lost the NATS connection; reconnecting. Meanwhile publishes for \
                     other nodes are counted in mphub_cluster_not_forwarded_total"
                );
                st.told = false;
                self.out.connected.store(false, Ordering::Release);
                self.metrics.connected.set(0);
                self.metrics.disconnects.inc();
            }
            Event::ClientError(e) => {
                let e = e.to_string();
                if st.told {
                    debug!(error = %e, "cluster: NATS connection attempt failed");
                } else {
                    warn!(
                        urls = %self.config.redacted_urls().join(","),
                        error = %e,
                        "cluster: cannot reach NATS; serving local clients only and retrying"
                    );
                    st.told = true;
                }
                st.last_error = Some(e);
            }
            Event::ServerError(e) => {
                warn!(error = %e, "cluster: the NATS server reported an error");
                st.last_error = Some(e.to_string());
            }
            Event::SlowConsumer(_) => {
                self.metrics
                    .inbound_dropped
                    .with_label_values(&["bridge_slow"])
                    .inc();
            }
            Event::LameDuckMode => info!("cluster: the NATS server is shutting down (lame duck)"),
            other => debug!(event = %other, "cluster: NATS event"),
        }
    }
}

/// Connects to NATS (in the background: an unreachable NATS does not stop the node) and starts
/// the bridge's two tasks on `tasks`.
pub async fn start(
    shared: &Arc<Shared>,
    pending: Pending,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<(), SetupError> {
    let Some(cluster) = shared.cluster.as_ref() else {
        return Ok(());
    };
    let name = format!("mphub-{}", cluster.naming.node());
    let events = shared.clone();
    let options = cluster
        .config
        .connect_options(&name)
        .await
        .map_err(|e| SetupError(e.to_string()))?
        .event_callback(move |ev| {
            if let Some(c) = events.cluster.as_ref() {
                c.on_event(ev);
            }
            std::future::ready(())
        });
    let client = options
        .connect(cluster.config.urls.clone())
        .await
        .map_err(|e| SetupError(e.to_string()))?;
    info!(
        urls = %cluster.config.redacted_urls().join(","),
        prefix = %cluster.config.prefix,
        node = cluster.naming.node(),
        "cluster: joining NATS"
    );
    let _ = cluster.stats.set(client.statistics());
    shared.index.follow(cluster.follower());
    tasks.spawn(outbound::run(
        client.clone(),
        cluster.out.clone(),
        pending.rx,
        shared.stopped.clone(),
    ));
    // Unconstrained: the inbound sweep must see a waiting message whatever tokio's cooperative
    // budget says (see `inbound::sweep`); it yields after each batch instead.
    tasks.spawn(tokio::task::unconstrained(inbound::run(
        shared.clone(),
        client,
        cluster.naming.clone(),
        cluster.wanted.clone(),
        cluster.metrics.clone(),
    )));
    Ok(())
}
