//! Routing one frame to local subscribers — the one place it is done. A client's reader
//! (`command/publish.rs`) and the cluster bridge (`cluster/inbound.rs`) both call
//! [`Router::route`]; the counts it keeps are folded into the metrics once per batch.
//!
//! A publish that other nodes should see too leaves through a [`Forward`] hook, which the
//! cluster bridge implements: the reader never knows there is a cluster.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec};

use crate::index::{Group, Index, Matches, Recent};
use crate::outbox::{Delivery, Outbox, Stamp};

/// Which of a topic's subscribers one delivery is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// A local publish: every plain subscriber and one member of every queue group.
    Everyone,
    /// What another node forwarded for this node's plain subscribers.
    Plain,
    /// What another node forwarded for one queue group: one of its members.
    Group(&'a str),
}

/// The queue groups a publish was delivered to locally, for the bridge (so no other node
/// serves them again).
#[derive(Debug, Default)]
pub struct Served<'a>(Vec<&'a str>);

impl<'a> Served<'a> {
    /// The group names, in routing order.
    pub fn names(&self) -> &[&'a str] {
        &self.0
    }
}

/// What [`Router::route`] did with one frame.
#[derive(Debug, Default)]
pub struct Routed<'a> {
    /// Subscribers it was queued to.
    pub delivered: u64,
    /// Queue groups served (only for [`Audience::Everyone`]).
    pub served: Served<'a>,
    /// The group asked for ([`Audience::Group`]) had no live member here.
    pub no_member: bool,
}

/// Where a publish goes beyond this node: the cluster bridge implements it.
pub trait Forward: Send + Sync + std::fmt::Debug {
    /// Hands over one local publish: its topic, its pickled body exactly as received, and the
    /// queue groups already served here. Must not block.
    fn forward(&self, topic: &str, body: Bytes, served: &Served<'_>);

    /// The largest body that goes beyond this node, in bytes (NATS's `max_payload` less the
    /// headers the bridge adds), when known: larger publishes are delivered locally only.
    fn max_payload(&self) -> Option<u64>;
}

/// The broker-wide delivery counters that routing folds its tallies into.
#[derive(Debug, Clone)]
pub struct DeliveryCounters {
    /// `mphub_messages_delivered_total`.
    pub delivered: IntCounter,
    /// `mphub_bytes_delivered_total`.
    pub delivered_bytes: IntCounter,
    /// `mphub_messages_dropped_total{reason}`.
    pub dropped: IntCounterVec,
    /// `mphub_slow_consumers_total`.
    pub slow_consumers: IntCounter,
}

/// Deliveries counted while routing, folded into [`DeliveryCounters`] once per batch.
#[derive(Debug, Default)]
pub struct Tally {
    delivered: u64,
    delivered_bytes: u64,
    dropped: u64,
    closed: u64,
    cut_off: u64,
}

impl Tally {
    fn offer(&mut self, to: &Outbox, topic: &str, wire: &Bytes, at: Stamp) -> bool {
        if to.refuses(topic) {
            return false;
        }
        match to.deliver(wire, at) {
            Delivery::Queued => {
                self.delivered += 1;
                self.delivered_bytes += wire.len() as u64;
                return true;
            }
            Delivery::Dropped => self.dropped += 1,
            Delivery::Disconnected => {
                self.dropped += 1;
                self.cut_off += 1;
            }
            Delivery::Closed => self.closed += 1,
        }
        false
    }

    /// Adds these counts to the shared counters and starts again from zero.
    pub fn fold(&mut self, c: &DeliveryCounters) {
        let t = std::mem::take(self);
        if t.delivered > 0 {
            c.delivered.inc_by(t.delivered);
            c.delivered_bytes.inc_by(t.delivered_bytes);
        }
        if t.dropped > 0 {
            c.dropped
                .with_label_values(&["slow_consumer"])
                .inc_by(t.dropped);
        }
        if t.closed > 0 {
            c.dropped.with_label_values(&["closed"]).inc_by(t.closed);
        }
        if t.cut_off > 0 {
            c.slow_consumers.inc_by(t.cut_off);
        }
    }
}

/// The subscription index and the counters routing keeps: what anyone who delivers needs.
#[derive(Debug, Clone)]
pub struct Router {
    index: Arc<Index>,
    counters: DeliveryCounters,
}

impl Router {
    /// A router over `index`, counting into `counters`.
    pub fn new(index: Arc<Index>, counters: DeliveryCounters) -> Self {
        Router { index, counters }
    }

    /// The subscription index.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Looks up who wants `topic` (a valid topic).
    pub fn lookup(&self, topic: &str) -> Arc<Matches> {
        self.index.lookup(topic)
    }

    /// Looks up who wants `topic`, reusing one connection's last lookup while the index is
    /// unchanged ([`Index::lookup_recent`]).
    pub fn lookup_recent<'r>(&self, topic: &str, recent: &'r mut Recent) -> &'r Arc<Matches> {
        self.index.lookup_recent(topic, recent)
    }

    /// Queues `wire` (a whole frame on `topic`, header included) to `audience` among
    /// `matches`, counting into `tally`; a connection whose user may not receive `topic` is
    /// skipped. `at` is when routing started (for the queue-wait histogram).
    pub fn route<'m>(
        &self,
        matches: &'m Matches,
        audience: Audience<'_>,
        topic: &str,
        wire: &Bytes,
        at: Instant,
        tally: &mut Tally,
    ) -> Routed<'m> {
        let at = Stamp::of(at);
        let mut out = Routed::default();
        if audience != Audience::Plain {
            for g in &matches.groups {
                if let Audience::Group(name) = audience {
                    if &*g.name != name {
                        continue;
                    }
                }
                match pick_live(g, topic) {
                    Some(p) => {
                        out.delivered += u64::from(tally.offer(p, topic, wire, at));
                        out.served.0.push(&g.name);
                    }
                    None => out.no_member = true,
                }
            }
            if let Audience::Group(name) = audience {
                out.no_member |= !matches.groups.iter().any(|g| &*g.name == name);
                return out;
            }
        }
        for p in &matches.plain {
            out.delivered += u64::from(tally.offer(p, topic, wire, at));
        }
        out
    }

    /// Folds a tally into the shared counters.
    pub fn fold(&self, tally: &mut Tally) {
        tally.fold(&self.counters);
    }
}

/// The member of `group` to deliver the next message on `topic` to, passing over members that
/// are closing and members whose user may not receive `topic` (`deny_subscribe`): as NATS does,
/// the message goes to another member rather than to none.
fn pick_live<'g>(group: &'g Group, topic: &str) -> Option<&'g Arc<Outbox>> {
    group.pick_where(|p| !p.kill.is_cancelled() && !p.refuses(topic))
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::SlowConsumer;

    fn counters() -> DeliveryCounters {
        DeliveryCounters {
            delivered: IntCounter::new("d", "d").unwrap(),
            delivered_bytes: IntCounter::new("b", "b").unwrap(),
            dropped: IntCounterVec::new(Opts::new("x", "x"), &["reason"]).unwrap(),
            slow_consumers: IntCounter::new("s", "s").unwrap(),
        }
    }

    fn outbox(id: u64) -> (Arc<Outbox>, crate::outbox::Receiver) {
        let (o, rx) = Outbox::new(id, 1 << 20, SlowConsumer::Drop, CancellationToken::new());
        (Arc::new(o), rx)
    }

    #[test]
    fn a_local_publish_reaches_plain_subscribers_and_one_member_of_each_group() {
        let router = Router::new(Arc::default(), counters());
        let (a, mut ra) = outbox(1);
        let (b, mut rb) = outbox(2);
        let (c, mut rc) = outbox(3);
        router.index().subscribe(&a, "t.*", None);
        router.index().subscribe(&b, "t.x", Some("g"));
        router.index().subscribe(&c, "t.>", Some("g"));
        let wire = Bytes::from_static(b"\0\0\0\x01x");
        let mut tally = Tally::default();
        let mut got = [0; 3];
        for _ in 0..4 {
            let m = router.lookup("t.x");
            let routed = router.route(
                &m,
                Audience::Everyone,
                "t.x",
                &wire,
                Instant::now(),
                &mut tally,
            );
            assert_eq!(routed.delivered, 2);
            assert_eq!(routed.served.names(), ["g"]);
            for (i, rx) in [&mut ra, &mut rb, &mut rc].into_iter().enumerate() {
                got[i] += rx.take().len();
            }
        }
        assert_eq!(got, [4, 2, 2]);
        router.fold(&mut tally);
        assert_eq!(router.counters.delivered.get(), 8);
    }

    #[test]
    fn a_forwarded_message_reaches_only_the_audience_it_came_for() {
        let router = Router::new(Arc::default(), counters());
        let (a, mut ra) = outbox(1);
        let (b, mut rb) = outbox(2);
        router.index().subscribe(&a, "t", None);
        router.index().subscribe(&b, "t", Some("g"));
        let wire = Bytes::from_static(b"\0\0\0\x01x");
        let mut tally = Tally::default();
        let m = router.lookup("t");
        assert_eq!(
            router
                .route(&m, Audience::Plain, "t", &wire, Instant::now(), &mut tally)
                .delivered,
            1
        );
        assert!(ra.take().len() == 1 && rb.take().is_empty());
        let to_g = router.route(
            &m,
            Audience::Group("g"),
            "t",
            &wire,
            Instant::now(),
            &mut tally,
        );
        assert_eq!((to_g.delivered, to_g.no_member), (1, false));
        assert!(ra.take().is_empty() && rb.take().len() == 1);
        let to_h = router.route(
            &m,
            Audience::Group("h"),
            "t",
            &wire,
            Instant::now(),
            &mut tally,
        );
        assert_eq!((to_h.delivered, to_h.no_member), (0, true));
    }
}
