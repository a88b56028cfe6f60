//! The HTTP endpoint: `/metrics` (Prometheus text format) and `/healthz` (here), the JSON
//! introspection endpoints `/connections`, `/subscriptions`, `/topics` and `/status`
//! ([`introspect`]), and the status page at `/` ([`page`]).
//!
//! `/healthz` answers 200 while the broker accepts connections and 503 once shutdown has begun;
//! the endpoint keeps serving until every connection is closed, so the 503 can be seen. With
//! `--cluster`, a second line tells whether the node is connected to NATS.
//!
//! The port is often open wider than the client listeners (Kubernetes scrapes it on 0.0.0.0),
//! so it may never cost the broker more than a bounded share of its file descriptors: at most
//! [`MAX_CONNECTIONS`] HTTP connections at once, and a connection that has not sent a whole
//! request header within [`IDLE_TIMEOUT`] of opening or of its last response is closed.
//! `axum::serve` has neither knob, so the accept loop is ours and each connection is served
//! by hyper's HTTP/1 server, whose `header_read_timeout` is that idle timeout (hyper starts it
//! whenever it waits for a request head, on a fresh or a kept-alive connection).

pub mod introspect;
pub mod page;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::cluster::Cluster;
use crate::config::Config;
use crate::connections::Connections;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::topics::Topics;
use crate::worker_metrics;

/// What the endpoint reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The broker's metrics.
    pub metrics: Arc<Metrics>,
    /// The subscription index (its size and cache figures).
    pub index: Arc<Index>,
    /// The open connections (their queues).
    pub connections: Arc<Connections>,
    /// What worker processes report.
    pub workers: Arc<worker_metrics::Store>,
    /// The cluster bridge, with `--cluster`.
    pub cluster: Option<Arc<Cluster>>,
    /// The broker's shutdown phases.
    pub shutdown: Shutdown,
    /// The configuration in force (limits shown beside the figures they bound).
    pub config: watch::Receiver<Arc<Config>>,
    /// Sampled publish topics.
    pub topics: Arc<Topics>,
    /// When the broker started.
    pub started: SystemTime,
}

impl Sources {
    /// The Prometheus text for `/metrics`: the broker's own families, then the workers',
    /// each family whole.
    pub fn render_metrics(&self) -> String {
        self.metrics
            .metrics_series
            .set(i64::try_from(self.workers.series()).unwrap_or(i64::MAX));
        if let Some(c) = &self.cluster {
            c.refresh_metrics();
        }
        let mut out = self
            .metrics
            .render(&self.index, self.connections.queued().into_iter());
        self.workers.render(&mut out);
        out
    }
}

async fn metrics(State(src): State<Arc<Sources>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        src.render_metrics(),
    )
}

async fn healthz(State(src): State<Arc<Sources>>) -> impl IntoResponse {
    if src.shutdown.is_begun() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        );
    }
    // A node cut off from NATS still serves its own clients: healthy, and it says so.
    match &src.cluster {
        Some(c) => (StatusCode::OK, format!("ok\n{}\n", c.health())),
        None => (StatusCode::OK, "ok\n".to_owned()),
    }
}

/// Most HTTP connections open at once (PROTOCOL §7). Past it, a new connection is closed at
/// once: a flood of idle connections costs the broker at most this many descriptors, and for
/// at most [`IDLE_TIMEOUT`] each.
pub const MAX_CONNECTIONS: usize = 256;

/// How long an HTTP connection may take to send a whole request header, counted from when it
/// opened or from its last response (PROTOCOL §7). Prometheus sends a scrape's request at once.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (out of descriptors, say), so that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves until the broker's shutdown has finished; then in-flight responses are completed and
/// idle connections closed.
pub async fn serve(src: Arc<Sources>, listener: TcpListener) {
    let shutdown = src.shutdown.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/", get(page::status_page))
        .route("/connections", get(introspect::connections))
        .route("/subscriptions", get(introspect::subscriptions))
        .route("/topics", get(introspect::topics))
        .route("/status", get(introspect::status))
        .with_state(src);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let open = TaskTracker::new();
    // Whether the last connection was turned away: the limit is logged once per episode.
    let mut full = false;
    loop {
        // Cancel safety: `finished` and `accept` are cancel safe.
        let accepted = tokio::select! {
            _ = shutdown.finished() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "metrics endpoint: accept failed; retrying");
                tokio::select! {
                    _ = shutdown.finished() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            if !full {
                warn!(
                    max = MAX_CONNECTIONS,
                    "metrics endpoint: connection limit reached; closing new connections \
                     until idle ones time out"
                );
            }
            full = true;
            continue;
        };
        full = false;
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        open.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(IDLE_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            // Cancel safety: the connection future is polled again to its end in the second
            // branch; `finished` is cancel safe.
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.finished() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                debug!(error = %e, "metrics endpoint: connection closed");
            }
        });
    }
    open.close();
    open.wait().await;
}
