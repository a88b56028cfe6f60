//! Messages from NATS, and NATS subscriptions retired without losing what they carry.
//!
//! One task owns the node's NATS subscriptions ([`super::interest`] makes them and tells this
//! task) and delivers what they bring to local subscribers.
//!
//! Order: async-nats gives each subscription its own channel, filled in the order messages come
//! off the socket. When one publisher's messages reach this node through two subscriptions
//! (say `a.*` and `a.>`, which NATS may pick between), reading the channels one by one could
//! swap them. So the task collects a batch — it keeps sweeping every channel until a whole sweep
//! finds nothing — and sorts it by the `Mphub-Origin` sequence. Anything that entered a channel
//! before a message already collected is in the batch by then, because the sweep that ends the
//! batch starts after that message was taken.
//!
//! Retiring: NATS hands each message to one of a queue's subscriptions, so a subscription
//! dropped at once would lose what NATS had already sent it, though an unchanged subscription
//! wanted it (the async-nats client discards messages for a subscription it no longer knows).
//! A subscription no longer wanted is instead told to end after a number of messages more than
//! the bridge has taken from it (NATS `UNSUB <sid> <max>`, which the client and the server
//! count alike), and keeps delivering until then: whatever NATS sent it before it heard of the
//! change is taken and routed to whoever wants it now. The number is [`LINGER`], which covers
//! what even a node that was frozen for a moment finds waiting. Once the NATS connection has
//! brought nothing at all for [`QUIET`], nothing is on its way any more, and retired
//! subscriptions are let go at once (until then, under steady traffic, a retired subscription
//! of a queue keeps a share of it for up to [`LINGER`] messages, which go to the node's other
//! members or back to NATS). A group
//! message no local member can take any more is handed back to NATS for a member elsewhere
//! (`Mphub-Group`), at most [`MAX_HOPS`] times.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_nats::{Message, Subscriber};
use futures_util::{FutureExt, Stream, StreamExt};
use mphub_protocol::{frame, Envelope, Scanner};
use tokio::sync::mpsc;
use tracing::debug;

use super::interest::{Handoff, Key};
use super::metrics::{ClusterMetrics, InboundDropped};
use super::outbound::Outbound;
use super::subject::{self, origin, served, Naming};
use super::Local;
use crate::config::Config;
use crate::route::{Audience, Tally};

/// Messages a retired subscription may still take beyond what the bridge took from it: as many
/// as the NATS client holds for one subscription (`connect::SUBSCRIPTION_CAPACITY`), more than
/// NATS has on its way to a node that was frozen for a moment.
pub const LINGER: u64 = super::connect::SUBSCRIPTION_CAPACITY as u64;
/// A NATS connection that brought nothing for this long has nothing on its way: retired
/// subscriptions are let go.
pub const QUIET: Duration = Duration::from_millis(250);
/// Most retired subscriptions kept at once; past it the oldest is let go.
pub const MAX_RETIRING: usize = 4096;
/// How many times one group message is handed back to NATS before it is counted as lost.
pub const MAX_HOPS: u32 = 3;
/// How often retirements are looked after.
const TIDY: Duration = Duration::from_millis(50);

/// A message, the subscription it came through, and that subscription's key.
type Taken = (u64, Key, Message);

/// Runs until shutdown: takes subscriptions from `handoffs`, delivers what NATS brings;
/// `stats` are the NATS client's counters.
pub async fn run(
    local: Local,
    naming: Naming,
    metrics: ClusterMetrics,
    mut handoffs: mpsc::UnboundedReceiver<Handoff>,
    out: Arc<Outbound>,
    stats: Arc<async_nats::Statistics>,
) {
    let mut subs = Subs::default();
    let mut batch: Vec<Taken> = Vec::new();
    let mut rx = Receiver {
        local: &local,
        naming: &naming,
        metrics: &metrics,
        out: &out,
        tally: Tally::default(),
        scanner: Scanner::default(),
    };
    let mut tidy = tokio::time::interval(TIDY);
    tidy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        // Cancel safety: `begun`, `recv` and `tick` are cancel safe, and so is `Subs::next`
        // (a message is taken only when returned).
        tokio::select! {
            biased;
            _ = local.shutdown.begun() => break,
            h = handoffs.recv() => {
                let Some(mut h) = h else { break };
                loop {
                    match h {
                        Handoff::Add(id, key, sub) => subs.add(id, key, sub),
                        Handoff::Retire(id) => {
                            // Take what waits everywhere first, in order: the retired
                            // subscription's own queue is then empty, and it may take LINGER
                            // more.
                            subs.sweep(&mut batch);
                            rx.deliver(&mut batch);
                            subs.retire(id);
                        }
                    }
                    match handoffs.try_recv() {
                        Ok(next) => h = next,
                        Err(_) => break,
                    }
                }
                metrics.retiring.set(subs.retiring() as i64);
            }
            first = subs.next(), if !subs.list.is_empty() => {
                batch.push(first);
                subs.sweep(&mut batch);
                rx.deliver(&mut batch);
                // A busy bridge still lets the client connections on this worker run.
                tokio::task::yield_now().await;
            }
            _ = tidy.tick(), if !subs.retiring.is_empty() => {
                // What waits is delivered first: a subscription let go has nothing left.
                subs.sweep(&mut batch);
                rx.deliver(&mut batch);
                subs.tidy(Instant::now(), stats.in_messages.load(Ordering::Relaxed));
                metrics.retiring.set(subs.retiring() as i64);
            }
        }
    }
}

/// One NATS subscription as the bridge holds it.
struct Sub {
    id: u64,
    key: Key,
    inner: Subscriber,
    /// Messages taken from it.
    pulled: u64,
    state: State,
}

enum State {
    Live,
    /// No longer wanted; the NATS client had no room yet for the command that retires it.
    Retire,
    /// Told to end after [`LINGER`] more messages.
    Retiring,
}

impl Sub {
    fn took(&mut self) {
        self.pulled += 1;
    }

    /// Tells the NATS client (and through it the server) to end this subscription after `more`
    /// messages beyond those taken. False when the client has no room for the command now.
    fn end_after(&mut self, more: u64) -> bool {
        let max = self.pulled + more;
        // Polled once, as in `interest`: a command that finds no room is not sent.
        tokio::task::unconstrained(self.inner.unsubscribe_after(max))
            .now_or_never()
            .is_some()
    }

    /// Starts the retirement (or tries again when the NATS client had no room for it).
    fn retire(&mut self) {
        self.state = if self.end_after(LINGER) {
            State::Retiring
        } else {
            State::Retire
        };
    }
}

/// The node's NATS subscriptions: O(1) to add and remove, polled together.
#[derive(Default)]
struct Subs {
    list: Vec<Sub>,
    at: HashMap<u64, usize>,
    /// The ids of retired subscriptions, oldest first.
    retiring: Vec<u64>,
    /// Where the next poll starts, so that no subscription is always served last.
    next: usize,
    /// The NATS client's count of messages read at the last look, and since when it has not
    /// moved.
    read: u64,
    quiet_since: Option<Instant>,
    /// When retirements were last looked after.
    tidied: Option<Instant>,
}

impl Subs {
    fn add(&mut self, id: u64, key: Key, inner: Subscriber) {
        self.at.insert(id, self.list.len());
        self.list.push(Sub {
            id,
            key,
            inner,
            pulled: 0,
            state: State::Live,
        });
    }

    fn remove(&mut self, id: u64) {
        let Some(i) = self.at.remove(&id) else { return };
        let sub = self.list.swap_remove(i);
        if let Some(moved) = self.list.get(i) {
            self.at.insert(moved.id, i);
        }
        if !matches!(sub.state, State::Live) {
            self.retiring.retain(|r| *r != id);
        }
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Sub> {
        let i = *self.at.get(&id)?;
        self.list.get_mut(i)
    }

    fn retire(&mut self, id: u64) {
        let Some(sub) = self.get_mut(id) else { return };
        if !matches!(sub.state, State::Live) {
            return;
        }
        sub.retire();
        debug!(pattern = %sub.key.0, group = ?sub.key.1, "cluster: retiring a NATS subscription");
        self.retiring.push(id);
    }

    fn retiring(&self) -> usize {
        self.retiring.len()
    }

    /// Looks after retirements, `read` being the NATS client's count of messages read off its
    /// connection: retries those the client had no room for; lets go of all of them once the
    /// connection has been quiet for [`QUIET`], and of the oldest past [`MAX_RETIRING`].
    fn tidy(&mut self, now: Instant, read: u64) {
        // A long gap since the last look means this process did not run (frozen, starved):
        // what was on its way may still be unread, so quiet is measured afresh.
        let paused = self.tidied.is_none_or(|t| now.duration_since(t) > TIDY * 4);
        self.tidied = Some(now);
        if read != self.read || paused {
            self.read = read;
            self.quiet_since = Some(now);
        }
        let quiet = self
            .quiet_since
            .is_some_and(|t| now.duration_since(t) >= QUIET);
        let ids = self.retiring.clone();
        let mut go = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            let over = ids.len() - n > MAX_RETIRING;
            let Some(sub) = self.get_mut(*id) else {
                continue;
            };
            match sub.state {
                State::Live => {}
                State::Retire => sub.retire(),
                State::Retiring if quiet || over => go.push(*id),
                State::Retiring => {}
            }
        }
        // Dropping a Subscriber unsubscribes it in NATS at once.
        for id in go {
            self.remove(id);
        }
    }

    /// The next message of any subscription; pending while there is none. A subscription the
    /// NATS client ended (a retirement done) is removed on the way.
    fn poll_next_message(&mut self, cx: &mut Context<'_>) -> Poll<Taken> {
        let len = self.list.len();
        let mut ended = Vec::new();
        let mut found = None;
        for j in 0..len {
            let i = (self.next + j) % len;
            let Some(sub) = self.list.get_mut(i) else {
                break;
            };
            match Pin::new(&mut sub.inner).poll_next(cx) {
                Poll::Ready(Some(m)) => {
                    sub.took();
                    found = Some((sub.id, sub.key.clone(), m));
                    self.next = i + 1;
                    break;
                }
                Poll::Ready(None) => ended.push(sub.id),
                Poll::Pending => {}
            }
        }
        for id in ended {
            self.remove(id);
        }
        match found {
            Some(t) => Poll::Ready(t),
            None => Poll::Pending,
        }
    }

    /// Completes with the next message of any subscription.
    async fn next(&mut self) -> Taken {
        std::future::poll_fn(|cx| self.poll_next_message(cx)).await
    }

    /// Takes every message already waiting in any subscription, sweeping until a whole sweep
    /// finds none.
    fn sweep(&mut self, batch: &mut Vec<Taken>) {
        loop {
            let mut found = false;
            let mut ended = Vec::new();
            for sub in &mut self.list {
                // `now_or_never` polls once: a message that is there is taken, an empty channel
                // answers at once. The task runs unconstrained (see `super::start`), so tokio's
                // cooperative budget never makes a non-empty channel look empty.
                loop {
                    match sub.inner.next().now_or_never() {
                        Some(Some(m)) => {
                            sub.took();
                            batch.push((sub.id, sub.key.clone(), m));
                            found = true;
                        }
                        Some(None) => {
                            ended.push(sub.id);
                            break;
                        }
                        None => break,
                    }
                }
            }
            for id in ended {
                self.remove(id);
            }
            if !found {
                return;
            }
        }
    }
}

/// Puts each origin's messages back in the order it numbered them, when they came through more
/// than one subscription. Messages of different origins keep no order between them (none is
/// promised), and messages without the header (not from mphub) sort first.
fn restore_order(batch: &mut [Taken]) {
    let Some((first, _, _)) = batch.first() else {
        return;
    };
    let first = *first;
    if batch.iter().all(|(id, _, _)| *id == first) {
        return;
    }
    batch.sort_by_cached_key(|(_, _, m)| {
        origin(m.headers.as_ref()).map(|(node, seq)| (node.to_owned(), seq))
    });
}

struct Receiver<'a> {
    local: &'a Local,
    naming: &'a Naming,
    metrics: &'a ClusterMetrics,
    out: &'a Outbound,
    tally: Tally,
    /// Reused for every message's envelope.
    scanner: Scanner,
}

impl Receiver<'_> {
    /// Delivers a batch in origin order, and empties it.
    fn deliver(&mut self, batch: &mut Vec<Taken>) {
        if batch.is_empty() {
            return;
        }
        restore_order(batch);
        let at = Instant::now();
        let (mut n, mut bytes) = (0u64, 0u64);
        let config = self.local.config.borrow().clone();
        let router = &self.local.router;
        for (_, key, m) in batch.drain(..) {
            n += 1;
            bytes += m.payload.len() as u64;
            let topic = match self.valid_topic(&m, &config) {
                Ok(topic) => topic,
                Err(why) => {
                    self.metrics.inbound_dropped(why);
                    continue;
                }
            };
            let headers = m.headers.as_ref();
            let audience = match (key.1.as_deref(), subject::only_for(headers)) {
                // Handed back for one group: not for plain subscribers, nor other groups.
                (None, Some(_)) => None,
                (Some(group), Some(only)) => (group == only).then_some(Audience::Group(group)),
                (None, None) => Some(Audience::Plain),
                (Some(group), None) => (!served(headers, group)).then_some(Audience::Group(group)),
            };
            let Some(audience) = audience else {
                self.metrics.group_skips.inc();
                continue;
            };
            let wire = frame::encode(&m.payload);
            let matches = router.lookup(topic);
            let routed = router.route(&matches, audience, topic, &wire, at, &mut self.tally);
            if let (true, Audience::Group(group)) = (routed.no_member, audience) {
                self.hand_back(&m, group);
            }
        }
        self.metrics.received.inc_by(n);
        self.metrics.received_bytes.inc_by(bytes);
        router.fold(&mut self.tally);
    }

    /// A group message no local member can take: back to NATS for a member elsewhere (this
    /// node's own subscriptions never get it: the connection is `no_echo`).
    fn hand_back(&self, m: &Message, group: &str) {
        let headers = m.headers.as_ref();
        let back = subject::hops(headers) < MAX_HOPS
            && self.out.connected.load(Ordering::Acquire)
            && self.out.hand_back(
                m.subject.as_str(),
                subject::handed_back(headers, group),
                m.payload.clone(),
            );
        if !back {
            self.metrics.inbound_dropped(InboundDropped::NoMember);
        }
    }

    /// The topic, when the subject is under the prefix and the payload is a pickled
    /// `(topic, payload)` naming that same topic, within this node's frame limit and allowed by
    /// its top-level payload policy (a NATS publisher has no user here: it gets the default).
    fn valid_topic<'m>(
        &mut self,
        m: &'m Message,
        config: &Config,
    ) -> Result<&'m str, InboundDropped> {
        if m.payload.len() as u64 > config.settings.max_frame.bytes() {
            return Err(InboundDropped::Invalid);
        }
        let topic = self
            .naming
            .topic(m.subject.as_str())
            .ok_or(InboundDropped::Invalid)?;
        let envelope = match config.payloads.data() {
            None => self.scanner.classify(&m.payload),
            Some(policy) => self
                .scanner
                .classify_with(&m.payload, policy)
                .map_err(|_| InboundDropped::Refused)?,
        };
        match envelope {
            Envelope::Publish { topic: t } if t == topic => Ok(topic),
            _ => Err(InboundDropped::Invalid),
        }
    }
}
