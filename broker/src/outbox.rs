//! A connection's outbox: the handle publishers (and the broker's own replies) use to queue
//! frames for it, which its writer (`writer.rs`) drains.
//!
//! The queue is a tokio unbounded channel guarded by a byte count: a frame goes in only while
//! the bytes queued stay within the outbound limit, or when the queue is empty (so any frame
//! within the frame limit can be delivered). Past the limit the slow-consumer policy applies.
//! A publisher never waits on a subscriber.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use mphub_protocol::topic::matches;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tracing::warn;

use crate::config::SlowConsumer;

/// A queued frame and when it was queued (for the queue-wait histogram).
pub type Queued = (Bytes, Instant);

/// What happened to one frame offered to an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the connection's writer.
    Queued,
    /// Dropped: the queue was full and the policy is `drop`.
    Dropped,
    /// The queue was full and the policy is `disconnect`: this call closed the connection.
    Disconnected,
    /// The connection is closing or gone.
    Closed,
}

/// The sending side of one connection's outbound queue.
#[derive(Debug)]
pub struct Outbox {
    /// Connection id, unique for the broker's life.
    pub id: u64,
    tx: mpsc::UnboundedSender<Queued>,
    queued: AtomicU64,
    /// The outbound limit in bytes (a reload may change it).
    limit: AtomicU64,
    /// The slow-consumer policy: true for `drop` (a reload may change it).
    drops: AtomicBool,
    /// Cancelled when the connection must close (slow consumer, shutdown deadline).
    pub kill: CancellationToken,
    /// Topics this connection's user may never receive (`deny_subscribe`); empty for almost
    /// every connection, and swapped whole when a reload changes the user's permissions.
    deny: ArcSwapOption<Vec<String>>,
    /// Frames and bytes written, added once per write by the writer (for introspection).
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    /// Frames dropped for this connection by the `drop` policy (only that path counts).
    dropped: AtomicU64,
}

impl Outbox {
    /// An outbox and the receiving end its writer drains.
    pub fn new(
        id: u64,
        limit: u64,
        policy: SlowConsumer,
        kill: CancellationToken,
    ) -> (Outbox, mpsc::UnboundedReceiver<Queued>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Outbox {
                id,
                tx,
                queued: AtomicU64::new(0),
                limit: AtomicU64::new(limit),
                drops: AtomicBool::new(policy == SlowConsumer::Drop),
                kill,
                deny: ArcSwapOption::empty(),
                sent: AtomicU64::new(0),
                sent_bytes: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Applies a reloaded outbound limit and slow-consumer policy.
    pub fn set_limits(&self, limit: u64, policy: SlowConsumer) {
        self.limit.store(limit, Ordering::Relaxed);
        self.drops
            .store(policy == SlowConsumer::Drop, Ordering::Relaxed);
    }

    /// Sets the patterns whose topics are never delivered here (none: `Vec::new()`).
    pub fn set_deny(&self, patterns: &[String]) {
        self.deny
            .store((!patterns.is_empty()).then(|| Arc::new(patterns.to_vec())));
    }

    /// Whether a message on `topic` must not be delivered here (its user's `deny_subscribe`).
    pub fn refuses(&self, topic: &str) -> bool {
        self.deny
            .load()
            .as_ref()
            .is_some_and(|deny| deny.iter().any(|p| matches(p, topic)))
    }

    /// Offers one frame (a shared reference to it: no copy), routed at `at`.
    pub fn deliver(&self, frame: &Bytes, at: Instant) -> Delivery {
        if self.kill.is_cancelled() {
            return Delivery::Closed;
        }
        let len = frame.len() as u64;
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        let limit = self.limit.load(Ordering::Relaxed);
        if before != 0 && before + len > limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return match self.drops.load(Ordering::Relaxed) {
                true => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    Delivery::Dropped
                }
                false => {
                    if self.kill.is_cancelled() {
                        Delivery::Closed
                    } else {
                        warn!(
                            subscriber = self.id,
                            limit,
                            "slow consumer: outbound queue over its limit; closing that connection"
                        );
                        self.kill.cancel();
                        Delivery::Disconnected
                    }
                }
            };
        }
        if self.tx.send((frame.clone(), at)).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Delivery::Closed;
        }
        Delivery::Queued
    }

    /// Queues a reply of the broker's own (`$ok`, `$pong`, `$error`): never dropped for size.
    pub fn reply(&self, frame: Bytes) {
        let len = frame.len() as u64;
        self.queued.fetch_add(len, Ordering::AcqRel);
        if self.tx.send((frame, Instant::now())).is_err() {
            // The writer is gone: keep the count honest for anyone still reading it.
            self.queued.fetch_sub(len, Ordering::AcqRel);
        }
    }

    /// The writer reports one write: `frames` frames of `bytes` bytes in all.
    pub fn written(&self, bytes: u64, frames: u64) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        self.sent.fetch_add(frames, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Frames and bytes written to this connection so far (replies included).
    pub fn sent(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.sent_bytes.load(Ordering::Relaxed),
        )
    }

    /// Frames dropped for this connection by the `drop` slow-consumer policy so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The outbound limit in force for this connection, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }
}
