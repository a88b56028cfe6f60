//! The HTTP endpoint: `/metrics` (Prometheus text format) and `/healthz` (here), the JSON
//! introspection endpoints `/connections`, `/subscriptions`, `/topics` and `/status`
//! ([`introspect`]), and the status page at `/` ([`page`]).
//!
//! `/healthz` answers 200 while the broker accepts connections and 503 once shutdown has begun;
//! the endpoint keeps serving until every connection is closed, so the 503 can be seen. With
//! `--cluster`, a second line tells whether the node is connected to NATS.

pub mod introspect;
pub mod page;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::error;

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

/// Serves until the broker's shutdown has finished.
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
    let server =
        axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.finished().await });
    if let Err(e) = server.await {
        error!(error = %e, "metrics endpoint failed");
    }
}
