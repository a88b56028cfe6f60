//! The open connections, by id: what introspection (`/connections`, `/subscriptions`) and
//! scrapes read, and what enforces a user's `max_connections`.
//!
//! Each connection's [`Entry`] is shared between its reader (which updates it) and the HTTP
//! endpoint (which reads it). Nothing here adds a lock to the per-message path: message counts
//! are atomics folded in once per read batch (like the metrics), the writer adds its counts
//! to the outbox once per write, and the subscription set and the name change only on `$sub`,
//! `$unsub` and `$hello`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use prometheus::IntGaugeVec;

use crate::config::{Config, User};
use crate::outbox::Outbox;

/// A subscription a connection holds, as one string: the pattern, then a space and the queue
/// group if any (neither can hold whitespace). One allocation per subscription, a third of a
/// `(String, Option<String>)`, for connections that hold thousands.
pub type Held = Box<str>;

/// The [`Held`] form of a pattern and group.
pub fn held(pattern: &str, group: Option<&str>) -> Held {
    match group {
        None => pattern.into(),
        Some(g) => format!("{pattern} {g}").into(),
    }
}

/// The pattern and group of a [`Held`].
pub fn unheld(h: &str) -> (&str, Option<&str>) {
    match h.split_once(' ') {
        Some((pattern, group)) => (pattern, Some(group)),
        None => (h, None),
    }
}

/// One open connection as the rest of the broker sees it.
#[derive(Debug)]
pub struct Entry {
    /// Its outbound queue (queued, sent and dropped counts too).
    pub outbox: Arc<Outbox>,
    /// The configuration it follows now (a reload waits until every connection follows the
    /// new one).
    applied: ArcSwap<Config>,
    /// Its user's name (a reload that removes the user or changes its key closes it).
    pub user: String,
    /// The remote address, printable (`unix` for a Unix socket).
    pub peer: String,
    /// When its handshake finished.
    pub since: SystemTime,
    /// What it called itself with `$hello`, if it did.
    name: ArcSwapOption<String>,
    /// Its subscriptions: the one copy, which its commands change. A B-tree gives its memory
    /// back node by node as subscriptions go, and lists them in order.
    subscriptions: Mutex<BTreeSet<Held>>,
    /// Frames and bytes received, folded in once per read batch.
    received: AtomicU64,
    received_bytes: AtomicU64,
}

impl Entry {
    /// A connection of `user` from `peer`, just authenticated, following `config`.
    pub fn new(outbox: Arc<Outbox>, config: Arc<Config>, user: &User, peer: String) -> Self {
        Entry {
            outbox,
            applied: ArcSwap::new(config),
            user: user.name.clone(),
            peer,
            since: SystemTime::now(),
            name: ArcSwapOption::empty(),
            subscriptions: Mutex::default(),
            received: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
        }
    }

    /// The connection id.
    pub fn id(&self) -> u64 {
        self.outbox.id
    }

    /// The name it gave with `$hello`, if any.
    pub fn name(&self) -> Option<Arc<String>> {
        self.name.load_full()
    }

    /// Names the connection (`$hello`).
    pub fn set_name(&self, name: &str) {
        self.name.store(Some(Arc::new(name.to_owned())));
    }

    /// Its subscriptions, to read or change (held briefly: the HTTP endpoint reads them too).
    pub fn subscriptions(&self) -> MutexGuard<'_, BTreeSet<Held>> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one read batch's counts.
    pub fn fold_received(&self, frames: u64, bytes: u64) {
        self.received.fetch_add(frames, Ordering::Relaxed);
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Frames and bytes received so far (as of the last read batch).
    pub fn received(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.received_bytes.load(Ordering::Relaxed),
        )
    }
}

/// Every open connection, keyed by connection id, and the count per user.
#[derive(Debug)]
pub struct Connections {
    open: DashMap<u64, Arc<Entry>>,
    per_user: Mutex<HashMap<String, usize>>,
    /// `mphub_connections_by_user{user}`.
    by_user: IntGaugeVec,
}

/// A user's place among the open connections; dropping it gives the place back.
#[derive(Debug)]
pub struct Admission {
    connections: Arc<Connections>,
    user: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut per = self
            .connections
            .per_user
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&self.user);
            }
        }
        self.connections
            .by_user
            .with_label_values(&[&self.user])
            .dec();
    }
}

impl Connections {
    /// Counting into `by_user`.
    pub fn new(by_user: IntGaugeVec) -> Self {
        Connections {
            open: DashMap::new(),
            per_user: Mutex::default(),
            by_user,
        }
    }

    /// Takes a place for one more connection of `user`; `None` when the user already holds
    /// its `max_connections`.
    pub fn admit(self: &Arc<Self>, user: &User) -> Option<Admission> {
        let mut per = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let n = per.entry(user.name.clone()).or_default();
        if user.max_connections.is_some_and(|max| *n >= max) {
            return None;
        }
        *n += 1;
        self.by_user.with_label_values(&[&user.name]).inc();
        Some(Admission {
            connections: self.clone(),
            user: user.name.clone(),
        })
    }

    /// A connection finished its handshake: it is open from now on.
    pub fn insert(&self, entry: Entry) -> Arc<Entry> {
        let entry = Arc::new(entry);
        self.open.insert(entry.id(), entry.clone());
        entry
    }

    /// Connection `id` follows `config` now.
    pub fn applied(&self, id: u64, config: &Arc<Config>) {
        if let Some(e) = self.open.get(&id) {
            e.applied.store(config.clone());
        }
    }

    /// How many open connections do not follow `config` yet.
    pub fn behind(&self, config: &Arc<Config>) -> usize {
        self.open
            .iter()
            .filter(|e| !Arc::ptr_eq(&e.applied.load(), config))
            .count()
    }

    /// A connection closed.
    pub fn remove(&self, id: u64) {
        self.open.remove(&id);
    }

    /// Bytes queued for each open connection now.
    pub fn queued(&self) -> Vec<u64> {
        self.open.iter().map(|e| e.outbox.queued()).collect()
    }

    /// Every open connection now, in no particular order. Each map shard is read-locked only
    /// while its entries' handles are cloned: no entry's lock is taken.
    pub fn snapshot(&self) -> Vec<Arc<Entry>> {
        self.open.iter().map(|e| e.value().clone()).collect()
    }

    /// How many connections are open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}
