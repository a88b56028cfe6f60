//! The HTTP endpoint: `/metrics` (Prometheus text format) and `/healthz`.
//!
//! `/healthz` answers 200 while the broker accepts connections and 503 once shutdown has begun;
//! the endpoint keeps serving until every connection is closed, so the 503 can be seen. With
//! `--cluster`, a second line tells whether the node is connected to NATS.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tracing::error;

use crate::Shared;

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.render_metrics(),
    )
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        );
    }
    // A node cut off from NATS still serves its own clients: healthy, and it says so.
    match &shared.cluster {
        Some(c) => (StatusCode::OK, format!("ok\n{}\n", c.health())),
        None => (StatusCode::OK, "ok\n".to_owned()),
    }
}

/// Serves until the broker has stopped.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let stopped = shared.stopped.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(shared);
    let server =
        axum::serve(listener, app).with_graceful_shutdown(async move { stopped.cancelled().await });
    if let Err(e) = server.await {
        error!(error = %e, "metrics endpoint failed");
    }
}
