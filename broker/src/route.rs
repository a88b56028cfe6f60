//! Offering one frame to local subscribers, and the counts that go with it. Both a client's
//! reader and the cluster bridge deliver through here.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::warn;

use crate::index::Group;
use crate::metrics::Metrics;
use crate::peer::{Delivery, Peer};

/// Deliveries counted while routing, folded into the metrics once per batch.
#[derive(Debug, Default)]
pub struct Tally {
    pub delivered: u64,
    pub delivered_bytes: u64,
    pub dropped: u64,
    pub closed: u64,
}

impl Tally {
    /// Offers `wire` (a whole frame) to one subscriber and counts the outcome.
    pub fn offer(
        &mut self,
        metrics: &Metrics,
        limit: u64,
        p: &Arc<Peer>,
        wire: &Bytes,
        at: Instant,
    ) {
        match p.deliver(wire, at) {
            Delivery::Queued => {
                self.delivered += 1;
                self.delivered_bytes += wire.len() as u64;
            }
            Delivery::Dropped => self.dropped += 1,
            Delivery::Disconnected => {
                self.dropped += 1;
                metrics.slow_consumers.inc();
                warn!(
                    subscriber = p.id,
                    limit, "slow consumer: outbound queue over its limit; closing that connection"
                );
            }
            Delivery::Closed => self.closed += 1,
        }
    }

    /// Adds these counts to the shared metrics and starts again from zero.
    pub fn fold(&mut self, m: &Metrics) {
        let c = std::mem::take(self);
        if c.delivered > 0 {
            m.messages_delivered.inc_by(c.delivered);
            m.bytes_delivered.inc_by(c.delivered_bytes);
        }
        if c.dropped > 0 {
            m.messages_dropped
                .with_label_values(&["slow_consumer"])
                .inc_by(c.dropped);
        }
        if c.closed > 0 {
            m.messages_dropped
                .with_label_values(&["closed"])
                .inc_by(c.closed);
        }
    }
}

/// The member of `group` to deliver the next message to, skipping members that are closing;
/// each member is tried at most once.
pub fn pick_live(group: &Group) -> Option<&Arc<Peer>> {
    for _ in 0..group.members.len() {
        let p = group.pick()?;
        if !p.kill.is_cancelled() {
            return Some(p);
        }
    }
    None
}
