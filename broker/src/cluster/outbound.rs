//! Local publishes on their way to NATS.
//!
//! A client's reader hands each publish over without waiting: into an unbounded channel guarded
//! by a byte count, as a connection's outbound queue is. One task drains it into the NATS
//! client, so everything this node forwards keeps its order. A publish that cannot go — NATS
//! disconnected, the backlog over `cluster_outbound_limit`, a payload over NATS's
//! `max_payload` — is counted by reason and never blocks the publisher.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::PublishErrorKind;
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use super::metrics::{ClusterMetrics, NotForwarded};
use super::subject::{self, Naming};
use crate::route::Served;
use crate::shutdown::Shutdown;

/// How long the final flush to NATS may take at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// One publish waiting to be handed to NATS.
#[derive(Debug)]
pub struct Item {
    subject: String,
    served: Option<String>,
    seq: u64,
    payload: Bytes,
}

/// The publishers' side of the queue towards NATS.
#[derive(Debug)]
pub struct Outbound {
    tx: mpsc::UnboundedSender<Item>,
    queued: AtomicU64,
    limit: u64,
    seq: AtomicU64,
    /// Mirrors the NATS connection state (set by the event handler).
    pub connected: AtomicBool,
    naming: Naming,
    metrics: ClusterMetrics,
    /// Per [`NotForwarded`] reason: whether its first occurrence was logged.
    warned: [AtomicBool; 4],
}

impl Outbound {
    /// The queue and the receiving end [`run`] drains.
    pub fn new(
        limit: u64,
        naming: Naming,
        metrics: ClusterMetrics,
    ) -> (Self, mpsc::UnboundedReceiver<Item>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let out = Outbound {
            tx,
            queued: AtomicU64::new(0),
            limit,
            seq: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            naming,
            metrics,
            warned: Default::default(),
        };
        (out, rx)
    }

    /// Hands one publish (the pickled body, exactly as received) to the bridge.
    pub fn forward(&self, topic: &str, payload: Bytes, served: &Served<'_>) {
        if !self.connected.load(Ordering::Acquire) {
            self.not_forwarded(NotForwarded::Disconnected);
            return;
        }
        let len = payload.len() as u64;
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before != 0 && before + len > self.limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.not_forwarded(NotForwarded::Backlog);
            return;
        }
        let item = Item {
            subject: self.naming.subject(topic),
            served: subject::served_header(served),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            payload,
        };
        if self.tx.send(item).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.not_forwarded(NotForwarded::Error);
        }
    }

    /// Counts a publish that did not go, and says why in the log the first time.
    fn not_forwarded(&self, why: NotForwarded) {
        let label = why.label();
        self.metrics.not_forwarded.with_label_values(&[label]).inc();
        let hint = match why {
            NotForwarded::Disconnected => {
                "publishes for other nodes are counted and dropped until NATS is back"
            }
            NotForwarded::Backlog => {
                "NATS is not keeping up; raise cluster_outbound_limit or add NATS capacity"
            }
            NotForwarded::TooLarge => {
                "the payload is over the NATS server's max_payload; raise max_payload in the \
                 NATS server configuration"
            }
            NotForwarded::Error => "the NATS client failed or the bridge has stopped; see the log",
        };
        if !self.warned[why as usize].swap(true, Ordering::Relaxed) {
            warn!(
                reason = label,
                "cluster: a publish was not forwarded to NATS ({hint}); further ones are counted \
                 in mphub_cluster_not_forwarded_total"
            );
        }
    }

    /// Bytes waiting now.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }
}

/// Drains the queue into NATS until shutdown finishes (every local connection has closed), then
/// hands over what is left and flushes.
pub async fn run(
    client: async_nats::Client,
    out: Arc<Outbound>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    shutdown: Shutdown,
) {
    loop {
        // Cancel safety: `recv` and `finished` lose nothing when the other branch wins.
        let item = tokio::select! {
            item = rx.recv() => item,
            _ = shutdown.finished() => None,
        };
        let Some(item) = item else { break };
        publish(&client, &out, item).await;
    }
    while let Ok(item) = rx.try_recv() {
        publish(&client, &out, item).await;
    }
    if out.connected.load(Ordering::Acquire) {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await;
    }
}

async fn publish(client: &async_nats::Client, out: &Outbound, item: Item) {
    let len = item.payload.len() as u64;
    out.queued.fetch_sub(len, Ordering::AcqRel);
    if client.connection_state() != async_nats::connection::State::Connected {
        out.not_forwarded(NotForwarded::Disconnected);
        return;
    }
    let headers = out.naming.headers(item.seq, item.served.as_deref());
    match client
        .publish_with_headers(item.subject, headers, item.payload)
        .await
    {
        Ok(()) => {
            out.metrics.sent.inc();
            out.metrics.sent_bytes.inc_by(len);
        }
        Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
            out.not_forwarded(NotForwarded::TooLarge)
        }
        Err(e) => {
            warn!(error = %e, "cluster: publish to NATS failed");
            out.not_forwarded(NotForwarded::Error);
        }
    }
}
