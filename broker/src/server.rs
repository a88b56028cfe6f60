//! The accept loops: one per listener, each connection on its own task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{error, warn};

use crate::connection;
use crate::net::Listener;
use crate::Shared;

/// Accepts until shutdown. An accept error (out of file descriptors, say) is logged and retried
/// with backoff; it never ends the loop.
pub async fn accept_loop(shared: Arc<Shared>, listener: Listener, limit: Arc<Semaphore>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        // Cancel safety: `accept` and `cancelled` are cancel safe.
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
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
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.connections_rejected.inc();
            warn!(peer = %peer, max = shared.config.max_connections, "connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        shared.metrics.connections_total.inc();
        let id = shared
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = shared.clone();
        shared.tracker.spawn(async move {
            connection::serve(s, stream, peer, id).await;
            drop(permit);
        });
    }
}
