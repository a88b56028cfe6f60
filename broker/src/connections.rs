//! The open connections, by id: what scrapes (and later introspection) read.

use std::sync::Arc;

use dashmap::DashMap;

use crate::outbox::Outbox;

/// Every open connection's outbox, keyed by connection id.
#[derive(Debug, Default)]
pub struct Connections {
    open: DashMap<u64, Arc<Outbox>>,
}

impl Connections {
    /// A connection finished its handshake.
    pub fn insert(&self, outbox: Arc<Outbox>) {
        self.open.insert(outbox.id, outbox);
    }

    /// A connection closed.
    pub fn remove(&self, id: u64) {
        self.open.remove(&id);
    }

    /// Bytes queued for each open connection now.
    pub fn queued(&self) -> Vec<u64> {
        self.open.iter().map(|o| o.value().queued()).collect()
    }
}
