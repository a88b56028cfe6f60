//! The cluster bridge: mphub nodes that join one NATS deployment and behave as one hub.
//!
//! NATS carries messages between nodes; mphub never builds a cluster of its own. Where things
//! are:
//! - [`connect`]: the NATS connection options, from the resolved cluster settings.
//! - [`subject`]: topics as NATS subjects, the `Mphub-*` headers.
//! - [`interest`]: following local interest with NATS subscriptions, handed to NATS ahead of
//!   anything published after them; a queue group weighed member by member.
//! - [`outbound`]: local publishes on their way to NATS (once each, in order, never blocking;
//!   bounded while NATS is slow, and held while it is away).
//! - [`member`]: a queue-group member's patterns and those needing a NATS subscription.
//! - [`inbound`]: delivering what NATS brings; retiring subscriptions without losing what they
//!   carry; handing group messages back that no local member can take.
//! - [`metrics`]: the `mphub_cluster_*` metrics.
//!
//! The bridge sees the rest of the broker only through the narrow [`Local`] handle (the
//! router, the frame limit, the shutdown phases) and is seen only as a
//! [`Forward`] hook and a health line. A publish is delivered to local
//! subscribers first (as on a single node) and handed to NATS once, as the publisher's own
//! pickle bytes. NATS's `no_echo` keeps it from coming back. Queue groups prefer a local member;
//! the groups served that way travel in a header, so the NATS member that receives the same
//! message for that group leaves it alone. `docs/cluster.md` explains the design for users.

pub mod connect;
pub mod inbound;
pub mod interest;
pub mod member;
pub mod metrics;
pub mod outbound;
pub mod subject;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Event;
use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{ClusterConfig, Config};
use crate::route::{Forward, Router, Served};
use crate::shutdown::Shutdown;
use interest::NatsInterest;
use metrics::{ClusterMetrics, InboundDropped, NotForwarded};
use outbound::Outbound;

/// What the bridge needs of the local broker.
#[derive(Debug, Clone)]
pub struct Local {
    /// Local subscribers, and the delivery counters.
    pub router: Router,
    /// The configuration in force (a reload replaces it): messages from NATS are judged by its
    /// `max_frame` and top-level payload policy.
    pub config: watch::Receiver<Arc<Config>>,
    /// A connection's outbound limit (bytes): what NATS releases at once must stay below it.
    pub outbound_limit: u64,
    /// The broker's shutdown phases.
    pub shutdown: Shutdown,
    /// How long shutdown may take from its start: the bridge's last flush ends by then.
    pub shutdown_timeout: Duration,
}

/// The NATS connection's state, as the event callback keeps it.
#[derive(Debug)]
struct Link {
    config: ClusterConfig,
    node: String,
    out: Arc<Outbound>,
    metrics: ClusterMetrics,
    status: Mutex<Status>,
}

/// The last NATS connection failure, for `/healthz`; whether the current run of failures has
/// been logged. (Connected or not is `Outbound::connected`.)
#[derive(Debug, Default)]
struct Status {
    last_error: Option<String>,
    /// A failure was logged since the last change of state (later ones go to debug).
    told: bool,
}

/// The running bridge.
#[derive(Debug)]
pub struct Cluster {
    link: Arc<Link>,
    /// What this node's own headers take of NATS's `max_payload` ([`subject::Naming::header_room`]).
    header_room: u64,
    client: async_nats::Client,
    interest: Arc<NatsInterest>,
    /// The NATS client's own counters.
    stats: Arc<async_nats::Statistics>,
}

/// The bridge at a glance, for a status page: what `/metrics` says, in one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Connected to a NATS server now.
    pub connected: bool,
    /// The NATS servers configured, passwords hidden.
    pub urls: Vec<String>,
    /// Why the last connection attempt failed, while not connected.
    pub last_error: Option<String>,
    /// The NATS server's `max_payload` in bytes (publishes over it stay on their node); `None`
    /// before the first connection.
    pub max_payload: Option<u64>,
    /// Bytes of local publishes waiting for NATS now.
    pub queued_bytes: u64,
    /// The most that may wait while connected (`cluster_outbound_limit`) and while NATS is away
    /// (`cluster_reconnect_buffer`).
    pub queue_limits: (u64, u64),
    /// NATS subscriptions held for local interest, and retired ones still taking what NATS
    /// had sent them.
    pub interest: (u64, u64),
    /// Local publishes handed to NATS; messages received from it.
    pub sent: u64,
    /// Messages received from NATS.
    pub received: u64,
    /// Local publishes not forwarded, by reason label (`disconnected`, `backlog`, `too_large`,
    /// `error`).
    pub not_forwarded: Vec<(&'static str, u64)>,
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
    /// Registers the bridge's metrics in `registry`, connects to NATS (in the background: an
    /// unreachable NATS does not stop the node), follows the index's interest and starts the
    /// bridge's two tasks on `tasks`.
    pub async fn start(
        config: ClusterConfig,
        local: Local,
        registry: &prometheus::Registry,
        tasks: &TaskTracker,
    ) -> Result<Arc<Cluster>, SetupError> {
        let metrics = ClusterMetrics::new(registry);
        let node = node_id();
        let naming = subject::Naming::new(&config.prefix, &node);
        if let Some(w) = config.burst_warning(local.outbound_limit) {
            warn!("cluster: {w}");
        }
        let (out, rx) = Outbound::new(
            config.outbound_limit,
            config.reconnect_buffer,
            naming.clone(),
            metrics.clone(),
        );
        let link = Arc::new(Link {
            config,
            node,
            out: Arc::new(out),
            metrics: metrics.clone(),
            status: Mutex::default(),
        });
        let events = link.clone();
        let options = connect::options(&link.config, &format!("mphub-{}", link.node))
            .await
            .map_err(|e| SetupError(e.to_string()))?
            .event_callback(move |ev| {
                events.on_event(ev);
                std::future::ready(())
            });
        let client = options
            .connect(link.config.urls.clone())
            .await
            .map_err(|e| SetupError(e.to_string()))?;
        info!(
            urls = %link.config.redacted_urls().join(","),
            prefix = %link.config.prefix,
            node = %link.node,
            "cluster: joining NATS"
        );
        let (handoffs, handed) = tokio::sync::mpsc::unbounded_channel();
        let interest = Arc::new(NatsInterest::new(
            client.clone(),
            naming.clone(),
            handoffs,
            metrics.interest.clone(),
            metrics.retiring.clone(),
        ));
        let follower = interest.clone();
        local
            .router
            .index()
            .follow(Box::new(move |change| follower.note(change)));
        // Both tasks run unconstrained: a NATS client queue with room, or a subscription with a
        // message waiting, must never look otherwise because of tokio's cooperative budget
        // (see `inbound` and `outbound`); they yield after each batch instead.
        tasks.spawn(tokio::task::unconstrained(outbound::run(
            client.clone(),
            link.out.clone(),
            rx,
            interest.clone(),
            local.shutdown.clone(),
            local.shutdown_timeout,
        )));
        let stats = client.statistics();
        let header_room = naming.header_room();
        tasks.spawn(tokio::task::unconstrained(inbound::run(
            local,
            naming,
            metrics,
            interest.clone(),
            handed,
            link.out.clone(),
            stats.clone(),
        )));
        Ok(Arc::new(Cluster {
            link,
            header_room,
            client,
            interest,
            stats,
        }))
    }

    /// One line for `/healthz`.
    pub fn health(&self) -> String {
        let st = self.link.status.lock().unwrap_or_else(|p| p.into_inner());
        let urls = self.link.config.redacted_urls().join(",");
        if self.link.out.connected.load(Ordering::Acquire) {
            match self.max_payload() {
                Some(max) => {
                    format!("cluster: connected to NATS ({urls}); max_payload {max} bytes")
                }
                None => format!("cluster: connected to NATS ({urls})"),
            }
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
        let m = &self.link.metrics;
        m.outbound_queued
            .set(i64::try_from(self.link.out.queued()).unwrap_or(i64::MAX));
        m.max_payload.set(
            self.max_payload()
                .map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        );
        let seen = self.stats.in_messages.load(Ordering::Relaxed);
        m.nats_in.inc_by(seen.saturating_sub(m.nats_in.get()));
    }

    /// The NATS server's `max_payload` (bytes), from its last `INFO`; `None` before the first
    /// connection.
    pub fn max_payload(&self) -> Option<u64> {
        self.client
            .try_server_info()
            .map(|i| i.max_payload as u64)
            .filter(|b| *b > 0)
    }

    /// The bridge's state now (for a status page).
    pub fn status(&self) -> ClusterStatus {
        let m = &self.link.metrics;
        ClusterStatus {
            connected: self.link.out.connected.load(Ordering::Acquire),
            urls: self.link.config.redacted_urls(),
            last_error: self
                .link
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_error
                .clone(),
            max_payload: self.max_payload(),
            queued_bytes: self.link.out.queued(),
            queue_limits: self.link.out.limits(),
            interest: (
                self.interest.live() as u64,
                u64::try_from(m.retiring.get()).unwrap_or(0),
            ),
            sent: m.sent.get(),
            received: m.received.get(),
            not_forwarded: NotForwarded::ALL
                .iter()
                .map(|r| {
                    (
                        r.label(),
                        m.not_forwarded.with_label_values(&[r.label()]).get(),
                    )
                })
                .collect(),
        }
    }
}

impl Forward for Cluster {
    /// Hands a local publish to NATS (see [`outbound`]).
    fn forward(&self, topic: &str, body: Bytes, served: &Served<'_>) {
        self.link.out.forward(topic, body, served);
    }

    /// NATS's `max_payload` less this node's own headers at their longest: the largest pickle
    /// that always crosses (one up to ~20 bytes larger may, while sequence numbers are short).
    fn max_payload(&self) -> Option<u64> {
        Cluster::max_payload(self).map(|m| m.saturating_sub(self.header_room))
    }
}

impl Link {
    fn on_event(&self, ev: Event) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            Event::Connected => {
                info!(node = %self.node, "cluster: connected to NATS");
                st.last_error = None;
                st.told = false;
                self.out.connected.store(true, Ordering::Release);
                self.metrics.connected.set(1);
            }
            Event::Disconnected => {
                warn!(
                    "cluster: lost the NATS connection; reconnecting. Meanwhile publishes for \
                     other nodes wait in the reconnect buffer (cluster_reconnect_buffer); past \
                     it they are counted in mphub_cluster_not_forwarded_total"
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
            Event::SlowConsumer(_) => self.metrics.inbound_dropped(InboundDropped::BridgeSlow),
            Event::LameDuckMode => info!("cluster: the NATS server is shutting down (lame duck)"),
            other => debug!(event = %other, "cluster: NATS event"),
        }
    }
}
