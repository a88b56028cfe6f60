//! The broker's shutdown, in three phases named in one type.
//!
//! 1. [`Shutdown::begin`]: stop accepting and reading; each connection's writer flushes what is
//!    queued, then the connection closes.
//! 2. [`Shutdown::expire`]: the flush deadline passed; whatever is still queued is dropped.
//! 3. [`Shutdown::finish`]: every connection is closed; the HTTP endpoint (which answered 503
//!    on `/healthz` meanwhile) and the cluster bridge's last flush end here.
//!
//! Everyone holds a clone and waits on the phase that concerns them; all waits are cancel safe.

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The phases of one broker's shutdown. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    begun: CancellationToken,
    expired: CancellationToken,
    finished: CancellationToken,
}

impl Shutdown {
    /// Phase 1: stop accepting and reading, flush.
    pub fn begin(&self) {
        self.begun.cancel();
    }

    /// True once phase 1 has begun.
    pub fn is_begun(&self) -> bool {
        self.begun.is_cancelled()
    }

    /// Completes when phase 1 begins.
    pub fn begun(&self) -> WaitForCancellationFuture<'_> {
        self.begun.cancelled()
    }

    /// Phase 2: the flush deadline passed.
    pub fn expire(&self) {
        self.expired.cancel();
    }

    /// A token cancelled at phase 2 or earlier by its holder: a connection's own kill switch
    /// (slow consumer) is a child of the deadline.
    pub fn kill_switch(&self) -> CancellationToken {
        self.expired.child_token()
    }

    /// Phase 3: every connection is closed.
    pub fn finish(&self) {
        self.finished.cancel();
    }

    /// Completes at phase 3.
    pub fn finished(&self) -> WaitForCancellationFuture<'_> {
        self.finished.cancelled()
    }
}
