//! Messages from NATS, copies skipped, and group subscriptions retired without losing what they
//! carry.
//!
//! One task owns the node's NATS subscriptions ([`super::interest`] makes them and tells this
//! task) and delivers what they bring to local subscribers.
//!
//! Order: async-nats gives each subscription its own channel, filled in the order messages come
//! off the socket. When one publisher's messages reach this node through two subscriptions
//! (say `a.*` and `a.>`), reading the channels one by one could swap them. So the task collects
//! a batch — it keeps sweeping every channel until a whole sweep finds nothing — and sorts it by
//! the `Mphub-Origin` sequence. Anything that entered a channel before a message already
//! collected is in the batch by then, because the sweep that ends the batch starts after that
//! message was taken — and after the task has taken every subscription handed to it
//! ([`super::interest::NatsInterest::settle`]), so a subscription made a moment ago is swept too.
//! Each origin's messages therefore come out of the batches in sequence order.
//!
//! Copies: NATS sends a message once per matching plain subscription, so when a node's patterns
//! overlap (`a.*` and `>`) it gets copies, each in order in its own subscription. A plain copy is
//! delivered when its sequence is above the last one delivered from that origin, and skipped
//! (`mphub_cluster_copies_total`) otherwise. A message without `Mphub-Origin` (from a plain NATS
//! client) is delivered through the oldest of the node's plain subscriptions that match it.
//! A plain subscription no longer wanted is dropped at once: what NATS sent it, every other
//! subscription that wants it got too.
//!
//! Retiring (queue groups): NATS hands each message to one of a queue's subscriptions, so a
//! group subscription dropped at once would lose what NATS had already sent it, though another
//! member wanted it (the async-nats client discards messages for a subscription it no longer
//! knows). A subscription no longer wanted is instead told to end after a number of messages
//! more than the bridge has taken from it (NATS `UNSUB <sid> <max>`, which the client and the
//! server count alike), and keeps delivering until then: whatever NATS sent it before it heard
//! of the change is taken and routed to whoever wants it now. The number is [`LINGER`], which
//! covers what even a node that was frozen for a moment finds waiting. Once the NATS connection
//! has brought nothing at all for [`QUIET`], nothing is on its way any more, and retired
//! subscriptions are let go at once (until then, under steady traffic, a retired subscription
//! of a queue keeps a share of it for up to [`LINGER`] messages, which go to the node's other
//! members or back to NATS). Past [`MAX_RETIRING`] the oldest is let go early, and counted
//! (`mphub_cluster_interest_retired_early_total`). A group message no local member can take any
//! more is handed back to NATS for a member elsewhere (`Mphub-Group`), at most [`MAX_HOPS`]
//! times.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_nats::{Message, Subscriber};
use futures_util::{FutureExt, Stream, StreamExt};
use mphub_protocol::topic::matches;
use mphub_protocol::{frame, Envelope, Scanner};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::interest::{Handoff, Key, NatsInterest};
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
/// Most origins (publishing nodes) whose last delivered sequence is kept; past it the one
/// heard from longest ago is forgotten. A node's id is new at every start, so old ones pile up.
pub const MAX_ORIGINS: usize = 4096;
/// How many times one group message is handed back to NATS before it is counted as lost.
pub const MAX_HOPS: u32 = 3;
/// How often retirements are looked after.
const TIDY: Duration = Duration::from_millis(50);

/// A message, the subscription it came through, and that subscription's key.
type Taken = (u64, Key, Message);

/// Runs until shutdown: takes subscriptions from `handoffs` (made by `interest`), delivers what
/// NATS brings; `stats` are the NATS client's counters.
pub async fn run(
    local: Local,
    naming: Naming,
    metrics: ClusterMetrics,
    interest: Arc<NatsInterest>,
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
        delivered: Delivered::default(),
    };
    let mut retire = Vec::new();
    let mut retiring = 0;
    let mut tidy = tokio::time::interval(TIDY);
    tidy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        // Cancel safety: `begun`, `recv` and `tick` are cancel safe, and so is `Subs::next`
        // (a message is taken only when returned).
        tokio::select! {
            biased;
            _ = local.shutdown.begun() => break,
            h = handoffs.recv() => {
                let Some(h) = h else { break };
                subs.take(h, &mut retire);
                while let Ok(h) = handoffs.try_recv() {
                    subs.take(h, &mut retire);
                }
                if !retire.is_empty() {
                    // What waits everywhere is delivered first, in order: a retired
                    // subscription's own queue is then empty.
                    gather(&mut subs, &interest, &mut handoffs, &mut retire, &mut batch);
                    rx.deliver(&mut batch, &subs);
                    subs.retire_all(&mut retire);
                }
            }
            first = subs.next(), if !subs.list.is_empty() => {
                batch.push(first);
                gather(&mut subs, &interest, &mut handoffs, &mut retire, &mut batch);
                rx.deliver(&mut batch, &subs);
                subs.retire_all(&mut retire);
                // A busy bridge still lets the client connections on this worker run.
                tokio::task::yield_now().await;
            }
            _ = tidy.tick(), if !subs.retiring.is_empty() || interest.has_idle() => {
                let now = Instant::now();
                // Idle ones past their time come back as retirements.
                interest.retire_idle(now);
                // What waits is delivered first: a subscription let go has nothing left.
                gather(&mut subs, &interest, &mut handoffs, &mut retire, &mut batch);
                rx.deliver(&mut batch, &subs);
                subs.retire_all(&mut retire);
                let early = subs.tidy(now, stats.in_messages.load(Ordering::Relaxed));
                metrics.retired_early.inc_by(early);
            }
        }
        if subs.retiring() != retiring {
            retiring = subs.retiring();
            interest.set_inbound_retiring(retiring);
        }
    }
}

/// Collects into `batch` every message waiting in any subscription, after taking every
/// subscription handed over so far (the interest lock is the barrier: a subscription that can
/// have brought a message already taken was handed over under it), so that the batch holds
/// everything that came before what it holds.
fn gather(
    subs: &mut Subs,
    interest: &NatsInterest,
    handoffs: &mut mpsc::UnboundedReceiver<Handoff>,
    retire: &mut Vec<u64>,
    batch: &mut Vec<Taken>,
) {
    interest.settle();
    while let Ok(h) = handoffs.try_recv() {
        subs.take(h, retire);
    }
    subs.sweep(batch);
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
    /// The live plain subscriptions' patterns, oldest (lowest id) first.
    plain: BTreeMap<u64, Key>,
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
    /// Takes a handoff: a new subscription is added at once, a retirement is kept in `retire`
    /// for [`Subs::retire_all`].
    fn take(&mut self, h: Handoff, retire: &mut Vec<u64>) {
        match h {
            Handoff::Add(id, key, sub) => self.add(id, key, sub),
            Handoff::Retire(id) => retire.push(id),
            // The loop comes round, and its tick looks after idle subscriptions.
            Handoff::Wake => {}
        }
    }

    /// Retires the subscriptions in `retire` (call after delivering what waits everywhere).
    fn retire_all(&mut self, retire: &mut Vec<u64>) {
        for id in retire.drain(..) {
            self.retire(id);
        }
    }

    fn add(&mut self, id: u64, key: Key, inner: Subscriber) {
        if key.1.is_none() {
            self.plain.insert(id, key.clone());
        }
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
        self.plain.remove(&id);
        if !matches!(sub.state, State::Live) {
            self.retiring.retain(|r| *r != id);
        }
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Sub> {
        let i = *self.at.get(&id)?;
        self.list.get_mut(i)
    }

    /// Lets a plain subscription go at once; starts a group subscription's retirement.
    fn retire(&mut self, id: u64) {
        let Some(sub) = self.get_mut(id) else { return };
        if !matches!(sub.state, State::Live) {
            return;
        }
        if sub.key.1.is_none() {
            debug!(pattern = %sub.key.0, "cluster: unsubscribing in NATS");
            // Dropping a Subscriber unsubscribes it in NATS at once.
            self.remove(id);
            return;
        }
        sub.retire();
        debug!(pattern = %sub.key.0, group = ?sub.key.1, "cluster: retiring a NATS subscription");
        self.retiring.push(id);
    }

    fn retiring(&self) -> usize {
        self.retiring.len()
    }

    /// Whether a message without an origin that came through plain subscription `id` is the
    /// copy to deliver: no older live plain subscription matches `topic`.
    fn first_plain(&self, id: u64, topic: &str) -> bool {
        !self.plain.range(..id).any(|(_, k)| matches(&k.0, topic))
    }

    /// Looks after retirements, `read` being the NATS client's count of messages read off its
    /// connection: retries those the client had no room for; lets go of all of them once the
    /// connection has been quiet for [`QUIET`], and of the oldest past [`MAX_RETIRING`]. Returns
    /// how many were let go before the connection was quiet.
    fn tidy(&mut self, now: Instant, read: u64) -> u64 {
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
        let early = if quiet { 0 } else { go.len() as u64 };
        if early > 0 {
            warn!(
                retiring = ids.len(),
                let_go = early,
                "cluster: more queue-group subscriptions retiring than kept; the oldest are let go \
                 before NATS is quiet, and what was on its way to them is lost"
            );
        }
        // Dropping a Subscriber unsubscribes it in NATS at once.
        for id in go {
            self.remove(id);
        }
        early
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
    delivered: Delivered,
}

/// The last sequence delivered to plain subscribers from each origin, to know a copy.
#[derive(Default)]
struct Delivered {
    /// By origin node: (last sequence, `batches` when it was last heard from).
    last: HashMap<String, (u64, u64)>,
    /// Batches delivered so far.
    batches: u64,
}

impl Delivered {
    /// Whether sequence `seq` from `node` was delivered already (or one after it); the origin
    /// counts as heard from.
    fn copy(&mut self, node: &str, seq: u64) -> bool {
        let now = self.batches;
        self.last.get_mut(node).is_some_and(|(last, heard)| {
            *heard = now;
            seq <= *last
        })
    }

    /// Records sequence `seq` from `node` as delivered.
    fn record(&mut self, node: &str, seq: u64) {
        let now = self.batches;
        if let Some((last, heard)) = self.last.get_mut(node) {
            *heard = now;
            *last = (*last).max(seq);
            return;
        }
        if self.last.len() >= MAX_ORIGINS {
            let oldest = self
                .last
                .iter()
                .min_by_key(|(_, (_, heard))| *heard)
                .map(|(n, _)| n.clone());
            if let Some(n) = oldest {
                self.last.remove(&n);
            }
        }
        self.last.insert(node.to_owned(), (seq, now));
    }

    /// [`Delivered::copy`], and records it when it is not.
    #[cfg(test)]
    fn first(&mut self, node: &str, seq: u64) -> bool {
        let first = !self.copy(node, seq);
        if first {
            self.record(node, seq);
        }
        first
    }
}

impl Receiver<'_> {
    /// Delivers a batch in origin order, and empties it; `subs` says which plain subscription
    /// delivers a message without an origin.
    fn deliver(&mut self, batch: &mut Vec<Taken>, subs: &Subs) {
        if batch.is_empty() {
            return;
        }
        restore_order(batch);
        let at = Instant::now();
        let (mut n, mut bytes) = (0u64, 0u64);
        let config = self.local.config.borrow().clone();
        let router = &self.local.router;
        self.delivered.batches += 1;
        for (id, key, m) in batch.drain(..) {
            n += 1;
            bytes += m.payload.len() as u64;
            let Some(topic) = self.naming.topic(m.subject.as_str()) else {
                self.metrics.inbound_dropped(InboundDropped::Invalid);
                continue;
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
            // Plain messages are known by their number (copies come through several
            // subscriptions); a group's come through one.
            let number = match audience {
                Audience::Plain => origin(headers),
                Audience::Group(_) | Audience::Everyone => None,
            };
            if let Audience::Plain = audience {
                let copy = match number {
                    Some((node, seq)) => self.delivered.copy(node, seq),
                    None => !subs.first_plain(id, topic),
                };
                if copy {
                    self.metrics.copies.inc();
                    continue;
                }
            }
            if let Err(why) = self.check(&m, topic, &config) {
                self.metrics.inbound_dropped(why);
                continue;
            }
            if let Some((node, seq)) = number {
                // Only a valid message counts as delivered: garbage with a forged number
                // silences nobody.
                self.delivered.record(node, seq);
            }
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

    /// Whether the payload is a pickled `(topic, payload)` naming `topic` (the subject's), within
    /// this node's frame limit and allowed by its top-level payload policy (a NATS publisher has
    /// no user here: it gets the default).
    fn check(&mut self, m: &Message, topic: &str, config: &Config) -> Result<(), InboundDropped> {
        if m.payload.len() as u64 > config.settings.max_frame.bytes() {
            return Err(InboundDropped::Invalid);
        }
        let envelope = match config.payloads.data() {
            None => self.scanner.classify(&m.payload),
            Some(policy) => self
                .scanner
                .classify_with(&m.payload, policy)
                .map_err(|_| InboundDropped::Refused)?,
        };
        match envelope {
            Envelope::Publish { topic: t } if t == topic => Ok(()),
            _ => Err(InboundDropped::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_known_by_its_origin_and_sequence() {
        let mut d = Delivered::default();
        assert!(d.first("a", 1));
        assert!(!d.first("a", 1), "the second copy");
        assert!(d.first("b", 1), "another origin counts apart");
        assert!(d.first("a", 3));
        assert!(!d.first("a", 2), "below the last delivered: a copy");
    }

    #[test]
    fn past_the_limit_the_origin_heard_from_longest_ago_is_forgotten() {
        let mut d = Delivered::default();
        for n in 0..MAX_ORIGINS {
            d.batches += 1;
            assert!(d.first(&n.to_string(), 5));
        }
        d.batches += 1;
        assert!(!d.first("0", 5), "heard from again: now the newest");
        assert!(d.first("new", 1));
        assert_eq!(d.last.len(), MAX_ORIGINS);
        assert!(d.last.contains_key("0"));
        assert!(!d.last.contains_key("1"), "the one heard from longest ago");
    }
}
