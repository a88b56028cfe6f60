//! The open connections, by id, and how many each user has: what scrapes (and introspection)
//! read, and what enforces a user's `max_connections`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use prometheus::IntGaugeVec;

use crate::config::{Config, User};
use crate::outbox::Outbox;

/// One open connection as the rest of the broker sees it.
#[derive(Debug)]
pub struct Entry {
    /// Its outbound queue.
    pub outbox: Arc<Outbox>,
    /// The configuration it follows now (a reload waits until every connection follows the
    /// new one).
    applied: ArcSwap<Config>,
}

/// Every open connection, keyed by connection id, and the count per user.
#[derive(Debug)]
pub struct Connections {
    open: DashMap<u64, Entry>,
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

    /// A connection finished its handshake; it follows `config`.
    pub fn insert(&self, outbox: Arc<Outbox>, config: Arc<Config>) {
        let entry = Entry {
            outbox: outbox.clone(),
            applied: ArcSwap::new(config),
        };
        self.open.insert(outbox.id, entry);
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
}
