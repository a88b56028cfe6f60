//! A connection's outbox: the handle publishers (and the broker's own replies) use to queue
//! frames for it, which its writer (`writer.rs`) drains.
//!
//! The queue (`queue.rs`) is a vector the writer swaps out whole, guarded by a byte count of
//! everything queued, the broker's replies included. Two kinds of frame go in, under two rules:
//! - **Messages** (publishes routed here) go in only while the bytes queued stay within the
//!   outbound limit, or when the queue is empty (so any frame within the frame limit can be
//!   delivered). Past the limit the slow-consumer policy applies. A publisher never waits.
//! - **Replies** (`$ok`, `$pong`, `$error`) always go in: losing one would break the `$ping`
//!   barrier. Instead, while the connection's own replies are queued past the limit, its reader
//!   stops reading from it ([`Outbox::replies_over_limit`], [`Outbox::drained`]), so a client
//!   that pipelines requests and never reads costs at most its limit and one reply. That is the
//!   back-pressure request/response servers apply (memcached stops reading a connection whose
//!   replies are not written, hyper does not read the next pipelined request), while messages
//!   keep the NATS rule: a slow consumer is cut off, never waited for.
//!
//! Only replies stall the reader, never messages: a client that publishes a frame larger than
//! its limit to itself and goes on sending before reading must not find its reader stopped
//! behind its own message (it would wait for us while we wait for it).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use mphub_protocol::topic::matches;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use tracing::warn;

use crate::config::SlowConsumer;

mod queue;

pub use queue::{Receiver, KEEP};

/// A queued frame: its bytes, when it was queued (for the queue-wait histogram), and whether it
/// is one of the broker's replies rather than a message.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The whole frame, header included.
    pub frame: Bytes,
    /// When it was queued, in nanoseconds since [`epoch`]: 8 bytes where an `Instant` takes 16,
    /// so a queued frame stays 48 bytes (a busy queue holds thousands).
    at: u64,
    /// A reply (`$ok`, `$pong`, `$error`), not a routed message.
    pub reply: bool,
}

impl Queued {
    /// A routed message, routed at `at`.
    pub fn message(frame: Bytes, at: Stamp) -> Queued {
        Queued {
            frame,
            at: at.0,
            reply: false,
        }
    }

    /// How long it has been queued.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(Stamp::of(Instant::now()).0.saturating_sub(self.at))
    }
}

/// The instant queue times count from (the first time one is taken).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// When a frame was routed, as nanoseconds since the process's queue epoch: taken once per
/// publish and handed to every subscriber's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u64);

impl Stamp {
    /// `at` as a stamp (0 for anything before the epoch).
    pub fn of(at: Instant) -> Stamp {
        Stamp(u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX))
    }
}

/// What happened to one message offered to an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the connection's writer.
    Queued,
    /// Not queued because the connection is too slow: the queue is full and the policy is
    /// `drop`, or the connection was already cut off as a slow consumer.
    Dropped,
    /// The queue was full and the policy is `disconnect`: this call cut the connection off.
    Disconnected,
    /// The connection is closing or gone for another reason.
    Closed,
}

/// Why an outbox was closed before its connection ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The broker's shutdown deadline passed (or nothing was recorded).
    Deadline,
    /// A message found the queue past its limit under the `disconnect` policy.
    SlowConsumer,
    /// Its own replies stayed past the limit with nothing written for [`STALL_PATIENCE`].
    Stalled,
    /// Writing to the peer failed: it is gone.
    WriteFailed,
}

impl Closed {
    /// Whether the connection was cut off for being slow (what its discarded queue counts as).
    pub fn slow(self) -> bool {
        matches!(self, Closed::SlowConsumer | Closed::Stalled)
    }

    fn from_u8(v: u8) -> Closed {
        match v {
            1 => Closed::SlowConsumer,
            2 => Closed::Stalled,
            3 => Closed::WriteFailed,
            _ => Closed::Deadline,
        }
    }
}

/// How long a reader stalled behind its own replies waits with nothing at all written to the
/// peer before the connection is cut off as a slow consumer: the peer is then neither reading
/// nor letting us read (a client that pipelines requests and never reads its replies would
/// otherwise hang forever). nats-server's `write_deadline` closes a connection whose write
/// blocks this long by default.
pub const STALL_PATIENCE: Duration = Duration::from_secs(10);

/// The sending side of one connection's outbound queue.
#[derive(Debug)]
pub struct Outbox {
    /// Connection id, unique for the broker's life.
    pub id: u64,
    tx: queue::Sender,
    queued: AtomicU64,
    /// Replies queued and not yet written.
    replies: AtomicU64,
    /// The outbound limit in bytes (a reload may change it).
    limit: AtomicU64,
    /// The slow-consumer policy: true for `drop` (a reload may change it).
    drops: AtomicBool,
    /// Why the outbox was closed early ([`Closed`] as a number; 0 while open).
    closed: AtomicU8,
    /// Told whenever the writer has written something.
    progress: Notify,
    /// Writes made while the reader was stalled (so a waiter can tell progress from a stale
    /// wake-up).
    sent: AtomicU64,
    /// Whether the reader is stalled behind its replies (only then does the writer notify).
    stalled: AtomicBool,
    /// Cancelled when the connection must close (slow consumer, write failure, shutdown
    /// deadline).
    pub kill: CancellationToken,
    /// Topics this connection's user may never receive (`deny_subscribe`); empty for almost
    /// every connection, and swapped whole when a reload changes the user's permissions.
    deny: ArcSwapOption<Vec<String>>,
    /// Whether `deny` holds anything: one relaxed load per delivery instead of an `ArcSwap`
    /// load (which showed in profiles) for the connections that have no deny list.
    denies: AtomicBool,
    /// Frames and bytes written (for introspection): bytes added after each system call,
    /// frames once per batch.
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    /// Frames dropped for this connection by the `drop` policy (only that path counts).
    dropped: AtomicU64,
}

impl Outbox {
    /// An outbox and the receiving end its writer drains.
    pub fn new(
        id: u64,
        limit: u64,
        policy: SlowConsumer,
        kill: CancellationToken,
    ) -> (Outbox, Receiver) {
        let (tx, rx) = queue::queue();
        (
            Outbox {
                id,
                tx,
                queued: AtomicU64::new(0),
                replies: AtomicU64::new(0),
                limit: AtomicU64::new(limit),
                drops: AtomicBool::new(policy == SlowConsumer::Drop),
                closed: AtomicU8::new(0),
                progress: Notify::new(),
                sent: AtomicU64::new(0),
                stalled: AtomicBool::new(false),
                kill,
                deny: ArcSwapOption::empty(),
                denies: AtomicBool::new(false),
                frames_out: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Applies a reloaded outbound limit and slow-consumer policy.
    pub fn set_limits(&self, limit: u64, policy: SlowConsumer) {
        self.limit.store(limit, Ordering::Relaxed);
        self.drops
            .store(policy == SlowConsumer::Drop, Ordering::Relaxed);
    }

    /// Sets the patterns whose topics are never delivered here (none: `Vec::new()`).
    pub fn set_deny(&self, patterns: &[String]) {
        self.deny
            .store((!patterns.is_empty()).then(|| Arc::new(patterns.to_vec())));
        self.denies.store(!patterns.is_empty(), Ordering::Release);
    }

    /// Whether a message on `topic` must not be delivered here (its user's `deny_subscribe`).
    pub fn refuses(&self, topic: &str) -> bool {
        self.denies.load(Ordering::Acquire)
            && self
                .deny
                .load()
                .as_ref()
                .is_some_and(|deny| deny.iter().any(|p| matches(p, topic)))
    }

    /// Offers one message (a shared reference to it: no copy), routed at `at`.
    pub fn deliver(&self, frame: &Bytes, at: Stamp) -> Delivery {
        // `closed` rather than `kill.is_cancelled()`, which takes the token's mutex on every
        // delivery. A kill through the token's parent (the shutdown deadline) sets no reason:
        // it is seen once the writer closes the queue, and `send` below refuses.
        if self.closed.load(Ordering::Acquire) != 0 {
            return self.refused();
        }
        let len = frame.len() as u64;
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        let limit = self.limit.load(Ordering::Relaxed);
        if before != 0 && before + len > limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return match self.drops.load(Ordering::Relaxed) {
                true => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    Delivery::Dropped
                }
                false => {
                    if self.close(Closed::SlowConsumer) {
                        // Logged outside the publisher's span (this runs on its task), which
                        // would name the publisher's user; the subscriber's own close line,
                        // in its span, follows with its user and name.
                        warn!(
                            parent: None,
                            subscriber = self.id,
                            limit,
                            "slow consumer: outbound queue over its limit; closing that connection"
                        );
                        Delivery::Disconnected
                    } else {
                        self.refused()
                    }
                }
            };
        }
        if self.tx.send(Queued::message(frame.clone(), at)).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return self.refused();
        }
        Delivery::Queued
    }

    /// What a message offered to a closed outbox counts as.
    fn refused(&self) -> Delivery {
        if self.closed_why().slow() {
            Delivery::Dropped
        } else {
            Delivery::Closed
        }
    }

    /// Queues a reply of the broker's own (`$ok`, `$pong`, `$error`): never dropped for size.
    /// The reader checks [`replies_over_limit`](Self::replies_over_limit) before its next frame.
    pub fn reply(&self, frame: Bytes) {
        let len = frame.len() as u64;
        self.queued.fetch_add(len, Ordering::AcqRel);
        self.replies.fetch_add(1, Ordering::AcqRel);
        let queued = Queued {
            frame,
            at: Stamp::of(Instant::now()).0,
            reply: true,
        };
        if self.tx.send(queued).is_err() {
            // The writer is gone: keep the counts honest for anyone still reading them.
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.replies.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// True while this connection's own replies are queued and the queue is past its limit:
    /// its reader must not handle another frame until [`drained`](Self::drained).
    pub fn replies_over_limit(&self) -> bool {
        self.queued.load(Ordering::Acquire) > self.limit.load(Ordering::Relaxed)
            && self.replies.load(Ordering::Acquire) > 0
    }

    /// Waits until [`replies_over_limit`](Self::replies_over_limit) is false. Returns `false`
    /// if nothing at all was written for `patience` meanwhile (the peer reads nothing).
    ///
    /// Cancel safe: it only waits on a `Notify` and reads counters.
    pub async fn drained(&self, patience: Duration) -> bool {
        self.stalled.store(true, Ordering::Release);
        let ok = loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            // Registered before the check, so progress made in between is not missed.
            notified.as_mut().enable();
            if !self.replies_over_limit() {
                break true;
            }
            let sent = self.sent.load(Ordering::Acquire);
            if tokio::time::timeout(patience, notified).await.is_err()
                && self.sent.load(Ordering::Acquire) == sent
            {
                break false;
            }
        };
        self.stalled.store(false, Ordering::Release);
        ok
    }

    /// The writer reports bytes it has written (after each system call).
    pub fn written(&self, bytes: u64) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        // Only a stalled reader waits for progress; otherwise this is one load.
        if self.stalled.load(Ordering::Acquire) {
            self.sent.fetch_add(1, Ordering::AcqRel);
            self.progress.notify_one();
        }
    }

    /// The writer reports replies it has written whole, or thrown away.
    pub fn replies_done(&self, replies: u64) {
        if replies > 0 {
            self.replies.fetch_sub(replies, Ordering::AcqRel);
            if self.stalled.load(Ordering::Acquire) {
                self.progress.notify_one();
            }
        }
    }

    /// The writer reports frames it has written whole (once per batch).
    pub fn frames_written(&self, frames: u64) {
        self.frames_out.fetch_add(frames, Ordering::Relaxed);
    }

    /// Frames and bytes written to this connection so far, replies included (for
    /// introspection).
    pub fn written_totals(&self) -> (u64, u64) {
        (
            self.frames_out.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }

    /// Frames dropped for this connection by the `drop` slow-consumer policy so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Closes the outbox for `why`: the connection ends and nothing more is queued. Returns
    /// `true` if this call closed it (the first reason is the one kept).
    pub fn close(&self, why: Closed) -> bool {
        let code = match why {
            Closed::Deadline => 4,
            Closed::SlowConsumer => 1,
            Closed::Stalled => 2,
            Closed::WriteFailed => 3,
        };
        let first = self
            .closed
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.kill.cancel();
        first
    }

    /// Why the outbox was closed early; [`Closed::Deadline`] when no reason was recorded (the
    /// shutdown deadline cancels every outbox at once, through the parent of `kill`).
    pub fn closed_why(&self) -> Closed {
        Closed::from_u8(self.closed.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(limit: u64, policy: SlowConsumer) -> (Outbox, Receiver) {
        Outbox::new(1, limit, policy, CancellationToken::new())
    }

    #[test]
    fn a_queued_frame_stays_small() {
        assert_eq!(std::mem::size_of::<Queued>(), 48);
    }

    #[test]
    fn messages_past_the_limit_follow_the_policy_and_replies_always_go_in() {
        let (o, _rx) = outbox(10, SlowConsumer::Drop);
        let eight = Bytes::from_static(&[0; 8]);
        let now = Instant::now();
        assert_eq!(o.deliver(&eight, Stamp::of(now)), Delivery::Queued);
        assert_eq!(o.deliver(&eight, Stamp::of(now)), Delivery::Dropped);
        assert!(!o.replies_over_limit());
        o.reply(eight.clone());
        assert_eq!(o.queued(), 16);
        assert!(o.replies_over_limit());
        o.written(8);
        assert!(!o.replies_over_limit());
    }

    #[test]
    fn a_message_larger_than_the_limit_alone_never_stalls_the_reader() {
        let (o, _rx) = outbox(10, SlowConsumer::Disconnect);
        assert_eq!(
            o.deliver(&Bytes::from(vec![0; 50]), Stamp::of(Instant::now())),
            Delivery::Queued
        );
        assert!(!o.replies_over_limit());
    }

    #[test]
    fn a_cut_off_connection_counts_what_it_misses_as_slow_and_keeps_its_first_reason() {
        let (o, _rx) = outbox(10, SlowConsumer::Disconnect);
        let eight = Bytes::from_static(&[0; 8]);
        let now = Instant::now();
        assert_eq!(o.deliver(&eight, Stamp::of(now)), Delivery::Queued);
        assert_eq!(o.deliver(&eight, Stamp::of(now)), Delivery::Disconnected);
        assert_eq!(o.deliver(&eight, Stamp::of(now)), Delivery::Dropped);
        assert!(!o.close(Closed::WriteFailed));
        assert_eq!(o.closed_why(), Closed::SlowConsumer);
        let (gone, _) = outbox(10, SlowConsumer::Disconnect);
        gone.close(Closed::WriteFailed);
        assert_eq!(gone.deliver(&eight, Stamp::of(now)), Delivery::Closed);
    }

    #[test]
    fn a_kill_from_the_shutdown_deadline_refuses_once_the_writer_has_closed_the_queue() {
        let parent = CancellationToken::new();
        let (o, mut rx) = Outbox::new(1, 10, SlowConsumer::Drop, parent.child_token());
        parent.cancel();
        // What the writer does when it sees the kill.
        rx.close();
        let eight = Bytes::from_static(&[0; 8]);
        assert_eq!(
            o.deliver(&eight, Stamp::of(Instant::now())),
            Delivery::Closed
        );
        assert_eq!(o.queued(), 0);
    }

    #[test]
    fn a_deny_list_refuses_its_topics_until_a_reload_empties_it() {
        let (o, _rx) = outbox(10, SlowConsumer::Drop);
        assert!(!o.refuses("secret.x"));
        o.set_deny(&["secret.>".to_owned()]);
        assert!(o.refuses("secret.x"));
        assert!(!o.refuses("public.x"));
        o.set_deny(&[]);
        assert!(!o.refuses("secret.x"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_reader_resumes_on_progress_and_gives_up_without_any() {
        let (o, _rx) = outbox(10, SlowConsumer::Drop);
        o.reply(Bytes::from(vec![0; 20]));
        assert!(!o.drained(Duration::from_secs(10)).await);
        let o = std::sync::Arc::new(o);
        let w = o.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            w.written(5);
            tokio::time::sleep(Duration::from_secs(5)).await;
            w.written(15);
            w.replies_done(1);
        });
        assert!(o.drained(Duration::from_secs(6)).await);
        writer.await.unwrap();
    }
}
