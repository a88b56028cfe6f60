//! Memory for large frames still arriving, shared by every connection (`arriving_limit`).
//!
//! A frame larger than a connection's ordinary read buffer ([`LARGE`]) reserves its whole
//! length here when its header arrives, before the reader makes room for it; the reservation is
//! released when the frame is complete (or the connection ends). While nothing is left, the
//! connection is not read, so the peer's bytes wait in its own socket, not in the broker. This
//! is Kafka's `queued.max.request.bytes` (a memory pool that mutes a channel until its request
//! fits). Reserving the whole frame at once, first come first served, means no reader ever
//! holds part of the budget while waiting for the rest, so waiting readers cannot deadlock;
//! each holder either completes or meets its frame timeout.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Frames longer than this (header included) reserve their length; smaller ones fit in the
/// ordinary read buffer and never wait.
pub const LARGE: u64 = 256 << 10;

/// The broker-wide budget, in KiB (a semaphore's permits).
#[derive(Debug)]
pub struct Arriving {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

/// A frame's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Reserved {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Arriving {
    /// A budget of `bytes` (rounded up to KiB; at most 4 TiB).
    pub fn new(bytes: u64) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        Arriving {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Waits until `bytes` (a whole frame) fit, first come first served, and reserves them. A
    /// frame larger than the whole budget waits for all of it.
    ///
    /// Cancel safe: nothing is reserved unless this completes (a cancelled call only loses its
    /// place in the queue).
    pub async fn reserve(&self, bytes: u64) -> Reserved {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.total_kib);
        // The semaphore is never closed, so this cannot fail; if it ever did, the frame would
        // simply go on unreserved.
        Reserved {
            _permit: self.kib.clone().acquire_many_owned(kib).await.ok(),
        }
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        u64::from(self.total_kib).saturating_sub(self.kib.available_permits() as u64) * 1024
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn reservations_wait_their_turn_and_come_back_when_dropped() {
        let budget = Arriving::new(3 << 20);
        let a = budget.reserve(2 << 20).await;
        assert_eq!(budget.in_use(), 2 << 20);
        let waiting = budget.reserve(2 << 20);
        tokio::pin!(waiting);
        assert!(waiting.as_mut().now_or_never().is_none());
        drop(a);
        let _b = waiting.await;
        assert_eq!(budget.in_use(), 2 << 20);
        // More than the whole budget waits for all of it, and gets it.
        let big = Arriving::new(1 << 20);
        let _all = big.reserve(5 << 20).await;
        assert_eq!(big.in_use(), 1 << 20);
    }
}
