//! Following local interest with NATS subscriptions, in order with what this node publishes.
//!
//! The index tells [`NatsInterest::note`] of every change, under its lock, on the thread of the
//! client that made it. A new NATS subscription is handed to the NATS client right there,
//! before that client's `$ok` is queued: the NATS client writes commands in the order it is
//! given them, so a subscription is on the wire ahead of anything published after its `$ok`, on
//! any connection of this node (as a NATS client's SUB then PUB on one connection are ordered).
//! When the NATS client takes no command now (disconnected, or its queue full because NATS
//! stalls), the change is *parked*: the `$ok` is not held back, and [`super::outbound`] hands no
//! further publish to NATS until the parked changes have gone ahead of it.
//!
//! What is subscribed:
//! - A pattern with plain local subscribers: one plain NATS subscription. NATS sends each
//!   matching subscription its own copy, so one that goes takes nothing from the others; the
//!   node delivers the first copy of a message and skips the rest ([`super::inbound`]).
//! - A queue group: one NATS queue subscription in queue `g` per local member and per pattern
//!   of that member's that none of its other patterns covers. NATS picks among a group's
//!   subscriptions evenly, so each member weighs one (not each node, nor each pattern it used).
//!
//! A plain subscription no longer wanted goes at once. A group's is *retired*, never dropped at
//! once: NATS gave what it had already sent it to no other member, so [`super::inbound`] keeps
//! taking it (see there).
//!
//! A subscription is handed to [`super::inbound`] under the same lock as it is made, so
//! [`NatsInterest::settle`] lets that task see every subscription that can have brought a
//! message.

use std::collections::VecDeque;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Subscriber;
use futures_util::FutureExt;
use prometheus::IntGauge;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use super::member::Member;
use super::subject::Naming;
use crate::index::InterestChange;

/// A pattern, and the queue group for a group membership.
pub type Key = Arc<(String, Option<String>)>;

/// What the inbound side is told about NATS subscriptions.
#[derive(Debug)]
pub enum Handoff {
    /// A new NATS subscription, with the bridge's own id for it.
    Add(u64, Key, Subscriber),
    /// Retire subscription `id`: take what NATS already sent it, then let it go.
    Retire(u64),
    /// A group subscription went idle: look after it (see [`IDLE`]) even if nothing comes.
    Wake,
}

/// The node's interest as NATS should see it, and the NATS subscriptions that carry it.
#[derive(Debug)]
pub struct NatsInterest {
    client: async_nats::Client,
    naming: Naming,
    inbound: mpsc::UnboundedSender<Handoff>,
    state: Mutex<State>,
    /// Set while a change waits to be handed to NATS: publishes wait behind it.
    parked: AtomicBool,
    /// Wakes the task that retries parked changes (`outbound::run`).
    wake: Notify,
    live: IntGauge,
    /// Subscriptions held but no longer wanted: idle here, and retiring in the inbound task
    /// (whose count is `inbound_retiring`).
    retiring: IntGauge,
    inbound_retiring: AtomicUsize,
    /// Whether some group subscription is idle: read by the inbound task on every pass, so it
    /// takes no lock.
    any_idle: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    slots: HashMap<Key, Slot>,
    /// Each group member's patterns, by (group, member).
    members: HashMap<(String, u64), Member>,
    /// Keys whose subscriptions could not all be made, oldest first.
    parked: Vec<Key>,
    parked_set: HashSet<Key>,
    /// Subscriptions carrying wanted interest.
    live: usize,
    /// Group subscriptions kept idle, and when each key last got one, oldest first (entries
    /// for keys whose idle ones were taken back are skipped).
    idle: usize,
    idled: VecDeque<(Instant, Key)>,
}

/// One key's wanted NATS subscriptions and the live ones.
#[derive(Debug, Default)]
struct Slot {
    want: usize,
    live: Vec<u64>,
    /// A group's subscriptions no longer wanted, kept for [`IDLE`] in case the key is wanted
    /// again (then one is taken back, with nothing to tell NATS), with when each went idle.
    idle: Vec<(u64, Instant)>,
}

/// How long a group's NATS subscription no longer wanted is kept before it retires. A member
/// that leaves and comes back (or a connection toggling patterns) then reuses it: retiring is
/// slow under steady traffic, and new ones for each toggle would pile up.
pub const IDLE: Duration = Duration::from_secs(1);

/// Whether a change reached the NATS client.
enum Handed {
    Yes,
    /// The NATS client takes no command now.
    Parked,
}

impl NatsInterest {
    /// Follows interest through `client`, telling `inbound` of every subscription made or
    /// retired; `live` is the gauge of NATS subscriptions carrying wanted interest, `retiring`
    /// of those held that are not wanted any more.
    pub fn new(
        client: async_nats::Client,
        naming: Naming,
        inbound: mpsc::UnboundedSender<Handoff>,
        live: IntGauge,
        retiring: IntGauge,
    ) -> Self {
        NatsInterest {
            client,
            naming,
            inbound,
            state: Mutex::default(),
            parked: AtomicBool::new(false),
            wake: Notify::new(),
            live,
            retiring,
            inbound_retiring: AtomicUsize::new(0),
            any_idle: AtomicBool::new(false),
        }
    }

    /// The inbound task's count of retiring subscriptions.
    pub fn set_inbound_retiring(&self, n: usize) {
        self.inbound_retiring.store(n, Ordering::Relaxed);
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.gauges(&st);
    }

    /// Publishes `st`'s counts: the gauges, and whether anything is idle.
    fn gauges(&self, st: &State) {
        self.any_idle.store(st.idle > 0, Ordering::Release);
        self.live.set(st.live as i64);
        let retiring = st.idle + self.inbound_retiring.load(Ordering::Relaxed);
        self.retiring.set(retiring as i64);
    }

    /// Whether some group subscription is idle (see [`IDLE`]).
    pub fn has_idle(&self) -> bool {
        self.any_idle.load(Ordering::Acquire)
    }

    /// Retires the group subscriptions idle for [`IDLE`] by `now`.
    pub fn retire_idle(&self, now: Instant) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *st;
        while let Some((since, _)) = st.idled.front() {
            if now.duration_since(*since) < IDLE {
                break;
            }
            let Some((_, k)) = st.idled.pop_front() else {
                break;
            };
            let Some(slot) = st.slots.get_mut(&k) else {
                continue;
            };
            let before = slot.idle.len();
            slot.idle.retain(|(id, since)| {
                let keep = now.duration_since(*since) < IDLE;
                if !keep {
                    let _ = self.inbound.send(Handoff::Retire(*id));
                    debug!(pattern = %k.0, group = ?k.1, "cluster: retiring a NATS subscription");
                }
                keep
            });
            st.idle -= before - slot.idle.len();
            if st.idle == 0 {
                st.idled.clear();
            }
            if slot.want == 0 && slot.live.is_empty() && slot.idle.is_empty() {
                st.slots.remove(&k);
            }
        }
        self.gauges(st);
    }

    /// Takes one change (called by the index under its lock: it never waits on NATS).
    pub fn note(&self, change: &InterestChange) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let touched = match change {
            InterestChange::Gained {
                pattern,
                group: None,
            } => st.want(key(pattern, None), 1),
            InterestChange::Lost {
                pattern,
                group: None,
            } => st.want(key(pattern, None), 0),
            // A group's interest is weighed member by member (below).
            InterestChange::Gained { .. } | InterestChange::Lost { .. } => Vec::new(),
            InterestChange::Joined {
                member,
                pattern,
                group,
            } => st.member(group, *member, pattern, true),
            InterestChange::Left {
                member,
                pattern,
                group,
            } => st.member(group, *member, pattern, false),
        };
        for k in touched {
            if let Handed::Parked = self.reconcile(&mut st, &k) {
                if st.parked_set.insert(k.clone()) {
                    st.parked.push(k);
                }
            }
        }
        let parked = !st.parked.is_empty();
        self.parked.store(parked, Ordering::Release);
        self.gauges(&st);
        drop(st);
        if parked {
            self.wake.notify_one();
        }
    }

    /// Completes when a change was parked (cancel safe: a wake-up not awaited is kept).
    pub async fn parked_now(&self) {
        self.wake.notified().await;
    }

    /// Whether a change waits to be handed to NATS.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Acquire)
    }

    /// Tries the parked changes again, oldest first; true while some still wait.
    pub fn retry_parked(&self) -> bool {
        if !self.is_parked() {
            return false;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let parked = std::mem::take(&mut st.parked);
        let mut left = Vec::new();
        for k in parked {
            if !left.is_empty() {
                left.push(k);
                continue;
            }
            match self.reconcile(&mut st, &k) {
                Handed::Yes => {
                    st.parked_set.remove(&k);
                }
                Handed::Parked => left.push(k),
            }
        }
        st.parked = left;
        let still = !st.parked.is_empty();
        self.parked.store(still, Ordering::Release);
        self.gauges(&st);
        still
    }

    /// Returns once every NATS subscription made so far has been handed to the inbound task
    /// (made and handed under one lock, so taking the lock is enough).
    pub fn settle(&self) {
        drop(self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// NATS subscriptions held for local interest now.
    pub fn live(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).live
    }

    /// Brings `k`'s live NATS subscriptions to the number wanted.
    fn reconcile(&self, st: &mut State, k: &Key) -> Handed {
        let Some(slot) = st.slots.get_mut(k) else {
            return Handed::Yes;
        };
        while slot.live.len() > slot.want {
            if let Some(id) = slot.live.pop() {
                st.live -= 1;
                if k.1.is_some() {
                    let now = Instant::now();
                    slot.idle.push((id, now));
                    st.idle += 1;
                    st.idled.push_back((now, k.clone()));
                    if st.idle == 1 {
                        // Seen by the inbound task when the wake-up brings it round.
                        self.any_idle.store(true, Ordering::Release);
                        let _ = self.inbound.send(Handoff::Wake);
                    }
                } else {
                    let _ = self.inbound.send(Handoff::Retire(id));
                    debug!(pattern = %k.0, "cluster: unsubscribing in NATS");
                }
            }
        }
        while slot.live.len() < slot.want {
            // A group's idle subscription is still in NATS: taken back, nothing to tell it.
            if let Some((id, _)) = slot.idle.pop() {
                slot.live.push(id);
                st.idle -= 1;
                st.live += 1;
                if st.idle == 0 {
                    st.idled.clear();
                }
                continue;
            }
            let subject = self.naming.subject(&k.0);
            // Polled once: the NATS client's command queue takes it now, or the change is
            // parked. Unconstrained, so that tokio's cooperative budget of the calling task
            // never makes a queue with room look full. A future dropped unfinished sends nothing
            // (tokio's `Sender::send` is cancel safe).
            let made = match &k.1 {
                None => tokio::task::unconstrained(self.client.subscribe(subject)).now_or_never(),
                Some(group) => {
                    tokio::task::unconstrained(self.client.queue_subscribe(subject, group.clone()))
                        .now_or_never()
                }
            };
            match made {
                None => return Handed::Parked,
                Some(Ok(sub)) => {
                    st.next_id += 1;
                    slot.live.push(st.next_id);
                    st.live += 1;
                    let _ = self.inbound.send(Handoff::Add(st.next_id, k.clone(), sub));
                    debug!(pattern = %k.0, group = ?k.1, "cluster: subscribed in NATS");
                }
                Some(Err(e)) => {
                    // Not worth retrying: the subject was refused, or the client is gone.
                    warn!(
                        pattern = %k.0,
                        group = ?k.1,
                        error = %e,
                        "cluster: cannot subscribe in NATS; other nodes' messages for it will \
                         not arrive"
                    );
                    slot.want = slot.live.len();
                }
            }
        }
        if slot.want == 0 && slot.live.is_empty() && slot.idle.is_empty() {
            st.slots.remove(k);
        }
        Handed::Yes
    }
}

fn key(pattern: &str, group: Option<&str>) -> Key {
    Arc::new((pattern.to_owned(), group.map(str::to_owned)))
}

impl State {
    /// Sets how many NATS subscriptions `k` wants; the keys to reconcile.
    fn want(&mut self, k: Key, want: usize) -> Vec<Key> {
        self.slots.entry(k.clone()).or_default().want = want;
        vec![k]
    }

    /// A member joined or left `group` on `pattern`: the keys whose weight changed.
    fn member(&mut self, group: &str, member: u64, pattern: &str, joined: bool) -> Vec<Key> {
        let id = (group.to_owned(), member);
        let m = self.members.entry(id.clone()).or_default();
        let change = if joined {
            m.join(pattern)
        } else {
            m.leave(pattern)
        };
        if m.is_empty() {
            self.members.remove(&id);
        }
        let mut touched = Vec::new();
        for (p, delta) in change
            .lost
            .iter()
            .map(|p| (p, -1isize))
            .chain(change.gained.iter().map(|p| (p, 1isize)))
        {
            let k = key(p, Some(group));
            let slot = self.slots.entry(k.clone()).or_default();
            slot.want = slot.want.saturating_add_signed(delta);
            touched.push(k);
        }
        touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(st: &State) -> Vec<(String, String, usize)> {
        let mut w: Vec<_> = st
            .slots
            .iter()
            .filter(|(_, s)| s.want > 0)
            .map(|(k, s)| (k.0.clone(), k.1.clone().unwrap_or_default(), s.want))
            .collect();
        w.sort();
        w
    }

    #[test]
    fn a_member_weighs_one_whatever_patterns_it_nests() {
        let mut st = State::default();
        for p in ["jobs.x", "jobs.*", "jobs.>"] {
            st.member("g", 1, p, true);
        }
        st.member("g", 2, "jobs.*", true);
        assert_eq!(
            weights(&st),
            vec![
                ("jobs.*".into(), "g".into(), 1),
                ("jobs.>".into(), "g".into(), 1)
            ]
        );
        // Leaving the covering pattern uncovers the one below it.
        st.member("g", 1, "jobs.>", false);
        assert_eq!(weights(&st), vec![("jobs.*".into(), "g".into(), 2)]);
        st.member("g", 1, "jobs.*", false);
        st.member("g", 1, "jobs.x", false);
        st.member("g", 2, "jobs.*", false);
        assert_eq!(weights(&st), vec![]);
        assert!(st.members.is_empty());
    }

    #[test]
    fn members_of_different_groups_and_disjoint_patterns_count_apart() {
        let mut st = State::default();
        st.member("g", 1, "a.*", true);
        st.member("g", 1, "b.*", true);
        st.member("h", 1, "a.*", true);
        assert_eq!(
            weights(&st),
            vec![
                ("a.*".into(), "g".into(), 1),
                ("a.*".into(), "h".into(), 1),
                ("b.*".into(), "g".into(), 1)
            ]
        );
    }
}
