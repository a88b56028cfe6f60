//! The accept loops: one per listener, each connection on its own task.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use crate::connection::{self, Context};
use crate::net::Listener;

/// Connection ids, unique for the broker's life, and how many connections are open (against
/// `max_connections`, which a reload may change).
#[derive(Debug)]
pub struct Ids {
    next: AtomicU64,
    open: Arc<AtomicUsize>,
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            next: AtomicU64::new(1),
            open: Arc::default(),
        }
    }
}

/// One open connection's place under `max_connections`; dropping it frees the place.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ids {
    /// A place for one more connection, unless `max` are open.
    fn slot(&self, max: usize) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.open.clone()))
    }
}

/// Accepts until shutdown begins; each connection runs on `tasks`. An accept error (out of file
/// descriptors, say) is logged and retried with backoff; it never ends the loop. Past
/// `max_connections` a connection is closed at once, counted and logged.
pub async fn accept_loop(ctx: Arc<Context>, listener: Listener, ids: Arc<Ids>, tasks: TaskTracker) {
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
        let max = ctx.config.borrow().settings.max_connections.get();
        let Some(slot) = ids.slot(max) else {
            metrics.connections_rejected.inc();
            warn!(peer = %peer, max, "connection refused: max_connections reached");
            drop(stream);
            continue;
        };
        metrics.connections_total.inc();
        let id = ids.next.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx.clone();
        let tls = listener.is_tls();
        tasks.spawn(async move {
            connection::serve(ctx, stream, peer, id, tls).await;
            drop(slot);
        });
    }
}
