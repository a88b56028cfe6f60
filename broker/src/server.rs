//! The accept loops: one per listener, each connection on its own task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use crate::connection::{self, Context};
use crate::net::Listener;

/// Connection ids, unique for the broker's life.
#[derive(Debug)]
pub struct Ids(AtomicU64);

impl Default for Ids {
    fn default() -> Self {
        Ids(AtomicU64::new(1))
    }
}

/// Accepts until shutdown begins; each connection runs on `tasks`. An accept error (out of file
/// descriptors, say) is logged and retried with backoff; it never ends the loop. Past
/// `max_connections` (the `limit` semaphore) a connection is closed at once, counted and logged.
pub async fn accept_loop(
    ctx: Arc<Context>,
    listener: Listener,
    limit: Arc<Semaphore>,
    ids: Arc<Ids>,
    tasks: TaskTracker,
) {
    let mut backoff = Duration::from_millis(5);
    let metrics = ctx.services.metrics.clone();
    loop {
        // Cancel safety: `accept` and `begun` are cancel safe.
        let accepted = tokio::select! {
            _ = ctx.shutdown.begun() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                error!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; retrying");
                tokio::select! {
                    _ = ctx.shutdown.begun() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics.connections_rejected.inc();
            let max = ctx.config.settings.max_connections.get();
            warn!(peer = %peer, max, "connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        metrics.connections_total.inc();
        let id = ids.0.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx.clone();
        tasks.spawn(async move {
            connection::serve(ctx, stream, peer, id).await;
            drop(permit);
        });
    }
}
