//! Interest and messages from NATS.
//!
//! One task owns the node's NATS subscriptions. The subscription index tells it (through
//! [`Wanted`]) whenever a pattern or queue group gains its first local subscriber or loses its
//! last; the task then subscribes or unsubscribes in NATS. The same task receives what those
//! subscriptions bring and delivers it locally.
//!
//! Order: async-nats gives each subscription its own channel, filled in the order messages come
//! off the socket. When one publisher's messages reach this node through two subscriptions
//! (say `a.*` and `a.>`, which NATS may pick between), reading the channels one by one could
//! swap them. So the task collects a batch — it keeps sweeping every channel until a whole sweep
//! finds nothing — and sorts it by the `Mphub-Origin` sequence. Anything that entered a channel
//! before a message already collected is in the batch by then, because the sweep that ends the
//! batch starts after that message was taken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_nats::{Message, Subscriber};
use futures_util::{FutureExt, StreamExt};
use mphub_protocol::{frame, Envelope};
use tokio::sync::Notify;
use tokio_stream::StreamMap;
use tracing::{debug, warn};

use super::metrics::{ClusterMetrics, InboundDropped};
use super::subject::{origin, served, Naming};
use super::Local;
use crate::index::InterestChange;
use crate::route::{Audience, Tally};

/// A pattern, and the queue group for a group membership.
pub type Key = Arc<(String, Option<String>)>;

/// Interest changes not yet carried to NATS: the latest wish per key, in the order keys first
/// changed (so NATS hears of interest in the order clients asked), and churn while NATS is away
/// costs one entry per pattern, not one per change.
#[derive(Debug, Default)]
pub struct Wanted {
    changes: Mutex<Changes>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Changes {
    order: Vec<Key>,
    latest: HashMap<Key, bool>,
}

impl Wanted {
    /// Records a change (called by the index under its lock: it must not block).
    pub fn note(&self, change: &InterestChange) {
        let (pattern, group, want) = match change {
            InterestChange::Gained { pattern, group } => (pattern, group, true),
            InterestChange::Lost { pattern, group } => (pattern, group, false),
        };
        let key = Arc::new((pattern.clone(), group.clone()));
        let mut c = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if c.latest.insert(key.clone(), want).is_none() {
            c.order.push(key);
        }
        drop(c);
        self.wake.notify_one();
    }

    /// The changes so far, oldest first, each key once with its latest wish.
    fn take(&self) -> Vec<(Key, bool)> {
        let c = std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()));
        let mut latest = c.latest;
        c.order
            .into_iter()
            .filter_map(|k| latest.remove(&k).map(|w| (k, w)))
            .collect()
    }
}

/// Runs until shutdown: follows interest, delivers what NATS brings.
pub async fn run(
    local: Local,
    client: async_nats::Client,
    naming: Naming,
    wanted: Arc<Wanted>,
    metrics: ClusterMetrics,
) {
    let mut subs: StreamMap<Key, Subscriber> = StreamMap::new();
    let mut batch: Vec<(Key, Message)> = Vec::new();
    let mut rx = Receiver {
        local: &local,
        naming: &naming,
        metrics: &metrics,
        tally: Tally::default(),
    };
    loop {
        // Cancel safety: `cancelled` and `notified` are cancel safe (a notification not
        // awaited stays stored), and so is `StreamMap::next` (an item is taken only when
        // returned).
        tokio::select! {
            biased;
            _ = local.shutdown.begun() => break,
            _ = wanted.wake.notified() => {
                follow(&client, &naming, &mut subs, wanted.take()).await;
                metrics.interest.set(subs.len() as i64);
            }
            Some(first) = subs.next(), if !subs.is_empty() => {
                batch.push(first);
                sweep(&mut subs, &mut batch);
                restore_order(&mut batch);
                rx.deliver(batch.drain(..));
                // A busy bridge still lets the client connections on this worker run.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Carries interest changes to NATS.
async fn follow(
    client: &async_nats::Client,
    naming: &Naming,
    subs: &mut StreamMap<Key, Subscriber>,
    changes: Vec<(Key, bool)>,
) {
    for (key, want) in changes {
        let held = subs.contains_key(&key);
        let (pattern, group) = (&key.0, key.1.as_deref());
        if want && !held {
            let subject = naming.subject(pattern);
            let queue = naming.queue(group).to_owned();
            match client.queue_subscribe(subject, queue).await {
                Ok(s) => {
                    debug!(pattern, group, "cluster: subscribed in NATS");
                    subs.insert(key, s);
                }
                Err(e) => warn!(
                    pattern,
                    group,
                    error = %e,
                    "cluster: cannot subscribe in NATS; other nodes' messages for it will not arrive"
                ),
            }
        } else if !want && held {
            // Dropping the subscriber unsubscribes in NATS.
            subs.remove(&key);
            debug!(pattern, group, "cluster: unsubscribed in NATS");
        }
    }
}

/// Takes every message already waiting in any subscription, sweeping until a whole sweep finds
/// none.
fn sweep(subs: &mut StreamMap<Key, Subscriber>, batch: &mut Vec<(Key, Message)>) {
    loop {
        let mut found = false;
        for (key, s) in subs.iter_mut() {
            // `now_or_never` polls once: a message that is there is taken, an empty channel
            // answers at once. The task runs unconstrained (see `super::start`), so tokio's
            // cooperative budget never makes a non-empty channel look empty.
            while let Some(Some(m)) = s.next().now_or_never() {
                batch.push((key.clone(), m));
                found = true;
            }
        }
        if !found {
            return;
        }
    }
}

/// Puts each origin's messages back in the order it numbered them, when they came through more
/// than one subscription. Messages of different origins keep no order between them (none is
/// promised), and messages without the header (not from mphub) sort first.
fn restore_order(batch: &mut [(Key, Message)]) {
    let Some((first, _)) = batch.first() else {
        return;
    };
    if batch.iter().all(|(k, _)| Arc::ptr_eq(k, first)) {
        return;
    }
    batch.sort_by_cached_key(|(_, m)| {
        origin(m.headers.as_ref()).map(|(node, seq)| (node.to_owned(), seq))
    });
}

struct Receiver<'a> {
    local: &'a Local,
    naming: &'a Naming,
    metrics: &'a ClusterMetrics,
    tally: Tally,
}

impl Receiver<'_> {
    fn deliver(&mut self, batch: impl Iterator<Item = (Key, Message)>) {
        let at = Instant::now();
        let (mut n, mut bytes) = (0u64, 0u64);
        let router = &self.local.router;
        for (key, m) in batch {
            n += 1;
            bytes += m.payload.len() as u64;
            let Some(topic) = self.valid_topic(&m) else {
                self.metrics.inbound_dropped(InboundDropped::Invalid);
                continue;
            };
            let audience = match key.1.as_deref() {
                None => Audience::Plain,
                Some(group) if served(m.headers.as_ref(), group) => {
                    self.metrics.group_skips.inc();
                    continue;
                }
                Some(group) => Audience::Group(group),
            };
            let wire = frame::encode(&m.payload);
            let matches = router.lookup(topic);
            if router
                .route(&matches, audience, topic, &wire, at, &mut self.tally)
                .no_member
            {
                self.metrics.inbound_dropped(InboundDropped::NoMember);
            }
        }
        self.metrics.received.inc_by(n);
        self.metrics.received_bytes.inc_by(bytes);
        router.fold(&mut self.tally);
    }

    /// The topic, when the subject is under the prefix and the payload is a pickled
    /// `(topic, payload)` naming that same topic, within this node's frame limit.
    fn valid_topic<'m>(&self, m: &'m Message) -> Option<&'m str> {
        if m.payload.len() as u64 > self.local.max_frame {
            return None;
        }
        let topic = self.naming.topic(m.subject.as_str())?;
        match mphub_protocol::classify(&m.payload) {
            Envelope::Publish { topic: t } if t == topic => Some(topic),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gained(p: &str) -> InterestChange {
        InterestChange::Gained {
            pattern: p.into(),
            group: None,
        }
    }

    fn lost(p: &str) -> InterestChange {
        InterestChange::Lost {
            pattern: p.into(),
            group: None,
        }
    }

    #[test]
    fn changes_come_out_in_first_change_order_with_the_latest_wish() {
        let w = Wanted::default();
        for i in [
            gained("b"),
            gained("a"),
            lost("b"),
            gained("c"),
            gained("b"),
        ] {
            w.note(&i);
        }
        let got: Vec<(String, bool)> = w
            .take()
            .into_iter()
            .map(|(k, v)| (k.0.clone(), v))
            .collect();
        assert_eq!(
            got,
            vec![("b".into(), true), ("a".into(), true), ("c".into(), true)]
        );
        assert!(w.take().is_empty());
    }
}
