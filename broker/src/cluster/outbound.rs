//! Local publishes on their way to NATS.
//!
//! A client's reader hands each publish over without waiting: into an unbounded channel guarded
//! by a byte count, as a connection's outbound queue is. One task hands them to the NATS client
//! in order, so everything this node forwards keeps its order, and never while an interest
//! change is parked ([`super::interest`]): a publish never overtakes a subscription made before
//! it. The byte count covers a publish until the NATS client has taken it off its own command
//! queue (its statistics say how many it took), so what waits for NATS is bounded wherever it
//! waits:
//! - connected, by `cluster_outbound_limit` (past it: `reason="backlog"`);
//! - while NATS is away, by `cluster_reconnect_buffer` (past it: `reason="disconnected"`), as
//!   nats.go's reconnect buffer: what fits is sent in order once NATS is back.
//!
//! A publisher never waits on NATS. The limits are kept below a subscriber's outbound limit
//! (docs/cluster.md): a backlog released at once when NATS comes back must not cut off
//! subscribers on other nodes that were keeping up. At shutdown the task hands over what it can
//! until the shutdown deadline, and counts the rest.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_nats::client::PublishErrorKind;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::poll;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::warn;

use super::interest::NatsInterest;
use super::metrics::{ClusterMetrics, InboundDropped, NotForwarded};
use super::subject::{self, Naming};
use crate::route::Served;
use crate::shutdown::Shutdown;

/// Publishes handed to the NATS client before the task lets other tasks run.
const BATCH: usize = 256;
/// How often the task looks again while it waits for the NATS client: to settle the byte count
/// for what the client has taken, and to retry parked interest changes.
const TICK: Duration = Duration::from_millis(1);

/// One message waiting to be handed to NATS.
#[derive(Debug)]
pub struct Item {
    subject: String,
    head: Head,
    payload: Bytes,
}

/// The headers an item travels with.
#[derive(Debug)]
enum Head {
    /// A local publish, naming the groups served here. It is numbered when it is handed to
    /// the NATS client, by the one task that hands them in order: numbered earlier, two
    /// publishers' items could reach the queue in the other order, and a receiver would take
    /// the later-numbered one's successor for a copy.
    Own { served: Option<String> },
    /// A group message handed back to NATS (`subject::handed_back`).
    HandedBack(HeaderMap),
}

/// The publishers' side of the queue towards NATS.
#[derive(Debug)]
pub struct Outbound {
    tx: mpsc::UnboundedSender<Item>,
    queued: AtomicU64,
    limit: u64,
    reconnect_limit: u64,
    seq: AtomicU64,
    /// Mirrors the NATS connection state (set by the event handler).
    pub connected: AtomicBool,
    naming: Naming,
    metrics: ClusterMetrics,
    /// Per [`NotForwarded`] reason: whether its first occurrence was logged.
    warned: [AtomicBool; 4],
}

impl Outbound {
    /// The queue, holding up to `limit` bytes while connected and `reconnect_limit` while NATS
    /// is away, and the receiving end [`run`] drains.
    pub fn new(
        limit: u64,
        reconnect_limit: u64,
        naming: Naming,
        metrics: ClusterMetrics,
    ) -> (Self, mpsc::UnboundedReceiver<Item>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let out = Outbound {
            tx,
            queued: AtomicU64::new(0),
            limit,
            reconnect_limit,
            seq: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            naming,
            metrics,
            warned: Default::default(),
        };
        (out, rx)
    }

    /// Hands one publish (the pickled body, exactly as received) to the bridge.
    pub fn forward(&self, topic: &str, payload: Bytes, served: &Served<'_>) {
        if let Err(why) = self.admit(payload.len() as u64) {
            self.not_forwarded(why);
            return;
        }
        let item = Item {
            subject: self.naming.subject(topic),
            head: Head::Own {
                served: subject::served_header(served),
            },
            payload,
        };
        self.send(item);
    }

    /// Hands a group message back to NATS, for a member on another node; false when it cannot
    /// go (the caller counts it).
    pub fn hand_back(&self, subject: &str, headers: HeaderMap, payload: Bytes) -> bool {
        if self.admit(payload.len() as u64).is_err() {
            return false;
        }
        self.send(Item {
            subject: subject.to_owned(),
            head: Head::HandedBack(headers),
            payload,
        });
        true
    }

    /// Counts `len` bytes in, within the limit that applies now.
    fn admit(&self, len: u64) -> Result<(), NotForwarded> {
        let (limit, why) = if self.connected.load(Ordering::Acquire) {
            (self.limit, NotForwarded::Backlog)
        } else {
            (self.reconnect_limit, NotForwarded::Disconnected)
        };
        if limit == 0 {
            return Err(why);
        }
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        // Always room for one message, as in a connection's queue.
        if before != 0 && before + len > limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(why);
        }
        Ok(())
    }

    fn send(&self, item: Item) {
        let len = item.payload.len() as u64;
        if self.tx.send(item).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.not_forwarded(NotForwarded::Error);
        }
    }

    /// Counts a publish that did not go, and says why in the log the first time.
    fn not_forwarded(&self, why: NotForwarded) {
        let label = why.label();
        self.metrics.not_forwarded.with_label_values(&[label]).inc();
        let hint = match why {
            NotForwarded::Disconnected => {
                "NATS is away and cluster_reconnect_buffer is full: publishes for other nodes are \
                 counted and dropped until NATS is back"
            }
            NotForwarded::Backlog => {
                "NATS is not keeping up; raise cluster_outbound_limit or add NATS capacity"
            }
            NotForwarded::TooLarge => {
                "the payload is over the NATS server's max_payload \
                 (mphub_cluster_nats_max_payload_bytes); raise max_payload in the NATS server \
                 configuration"
            }
            NotForwarded::Error => "the NATS client failed or the bridge has stopped; see the log",
        };
        if !self.warned[why as usize].swap(true, Ordering::Relaxed) {
            warn!(
                reason = label,
                "cluster: a publish was not forwarded to NATS ({hint}); further ones are counted \
                 in mphub_cluster_not_forwarded_total"
            );
        }
    }

    /// Bytes waiting now (the NATS client's own queue included).
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Bytes that may wait while connected, and while NATS is away.
    pub fn limits(&self) -> (u64, u64) {
        (self.limit, self.reconnect_limit)
    }
}

/// What the NATS client holds of what was handed to it: the sizes of the publishes it has not
/// taken off its command queue yet, oldest first. Its statistics count the publishes it took.
struct Ledger {
    stats: Arc<async_nats::Statistics>,
    taken: u64,
    sizes: VecDeque<u64>,
}

impl Ledger {
    fn new(stats: Arc<async_nats::Statistics>) -> Self {
        let taken = stats.out_messages.load(Ordering::Relaxed);
        Ledger {
            stats,
            taken,
            sizes: VecDeque::new(),
        }
    }

    /// Takes the bytes the client has taken off the count.
    fn settle(&mut self, out: &Outbound) {
        let now = self.stats.out_messages.load(Ordering::Relaxed);
        while self.taken < now {
            self.taken += 1;
            match self.sizes.pop_front() {
                Some(len) => {
                    out.queued.fetch_sub(len, Ordering::AcqRel);
                }
                None => self.taken = now,
            }
        }
    }
}

/// Hands items to NATS until shutdown finishes (every local connection has closed), then
/// hands over what it can until `grace` after shutdown began, and counts the rest.
pub async fn run(
    client: async_nats::Client,
    out: Arc<Outbound>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    interest: Arc<NatsInterest>,
    shutdown: Shutdown,
    grace: Duration,
) {
    let mut ledger = Ledger::new(client.statistics());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut begun: Option<Instant> = None;
    // The item being handed when the NATS client's queue had no room for it at once.
    let pending = None;
    tokio::pin!(pending);
    let mut pending_item = (0u64, false);
    // An item taken from the queue and not handed yet.
    let mut held: Option<Item> = None;
    loop {
        ledger.settle(&out);
        let mut handed = 0;
        // Parked interest changes go to NATS first.
        interest.retry_parked();
        while pending.is_none() {
            let Some(item) = held.take() else { break };
            // An interest change parked before this item was taken goes to NATS first (so a
            // publish never overtakes a subscription whose `$ok` went before it).
            if interest.retry_parked() {
                held = Some(item);
                break;
            }
            let what = (
                item.payload.len() as u64,
                matches!(item.head, Head::Own { .. }),
            );
            pending.set(Some(publish(&client, &out, item)));
            let Some(f) = pending.as_mut().as_pin_mut() else {
                break;
            };
            match poll!(f) {
                Poll::Ready(r) => {
                    pending.set(None);
                    finish(&out, &mut ledger, r, what);
                }
                Poll::Pending => pending_item = what,
            }
            handed += 1;
            if handed == BATCH {
                // Unconstrained (see `super::start`): let the client connections run.
                tokio::task::yield_now().await;
                handed = 0;
            }
            held = rx.try_recv().ok();
        }
        let waiting = held.is_some() || interest.is_parked();
        // Cancel safety: `finished`, `begun`, `recv`, `parked_now` and `tick` lose nothing when
        // another branch wins; the pending publish is kept (pinned outside) until it completes.
        tokio::select! {
            biased;
            _ = shutdown.finished() => break,
            _ = shutdown.begun(), if begun.is_none() => begun = Some(Instant::now()),
            r = maybe(pending.as_mut()), if pending.is_some() => {
                pending.set(None);
                finish(&out, &mut ledger, r, pending_item);
            }
            item = rx.recv(), if pending.is_none() && !waiting => {
                let Some(item) = item else { break };
                held = Some(item);
            }
            _ = interest.parked_now() => {}
            // While something waits on parked interest (or for the NATS client to take what it
            // was handed): look again soon.
            _ = tick.tick(), if waiting || !ledger.sizes.is_empty() => {}
        }
    }
    // Shutdown: hand over what is left while NATS takes it and time remains.
    let deadline = tokio::time::Instant::from_std(begun.unwrap_or_else(Instant::now) + grace);
    let connected = || out.connected.load(Ordering::Acquire);
    let mut lost = 0usize;
    if let Some(f) = pending.as_mut().as_pin_mut() {
        match tokio::time::timeout_at(deadline, f).await {
            Ok(r) => finish(&out, &mut ledger, r, pending_item),
            Err(_) => lost += 1,
        }
    }
    pending.set(None);
    while connected() {
        let Some(item) = held.take().or_else(|| rx.try_recv().ok()) else {
            break;
        };
        let what = (
            item.payload.len() as u64,
            matches!(item.head, Head::Own { .. }),
        );
        match tokio::time::timeout_at(deadline, publish(&client, &out, item)).await {
            Ok(r) => finish(&out, &mut ledger, r, what),
            Err(_) => {
                lost += 1;
                break;
            }
        }
    }
    if connected() {
        let _ = tokio::time::timeout_at(deadline, client.flush()).await;
    }
    ledger.settle(&out);
    lost += ledger.sizes.len() + usize::from(held.is_some());
    while rx.try_recv().is_ok() {
        lost += 1;
    }
    let why = if connected() {
        NotForwarded::Backlog
    } else {
        NotForwarded::Disconnected
    };
    for _ in 0..lost {
        out.not_forwarded(why);
    }
}

/// Completes with the output of the future in `f`; never, without one.
async fn maybe<F: Future>(f: Pin<&mut Option<F>>) -> F::Output {
    match f.as_pin_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The NATS client's publish of `item`, with its headers.
fn publish<'a>(
    client: &'a async_nats::Client,
    out: &Outbound,
    item: Item,
) -> impl Future<Output = Result<(), async_nats::client::PublishError>> + 'a {
    let headers = match item.head {
        Head::Own { served } => {
            let seq = out.seq.fetch_add(1, Ordering::Relaxed);
            out.naming.headers(seq, served.as_deref())
        }
        Head::HandedBack(h) => h,
    };
    client.publish_with_headers(item.subject, headers, item.payload)
}

/// Accounts one handed item: `len` payload bytes, `own` for a local publish (else handed back).
fn finish(
    out: &Outbound,
    ledger: &mut Ledger,
    r: Result<(), async_nats::client::PublishError>,
    (len, own): (u64, bool),
) {
    match r {
        Ok(()) => {
            ledger.sizes.push_back(len);
            if own {
                out.metrics.sent.inc();
                out.metrics.sent_bytes.inc_by(len);
            } else {
                out.metrics.requeued.inc();
            }
            return;
        }
        Err(e) if !own => {
            warn!(error = %e, "cluster: cannot hand a group message back to NATS");
            out.metrics.inbound_dropped(InboundDropped::NoMember);
        }
        Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
            out.not_forwarded(NotForwarded::TooLarge)
        }
        Err(e) => {
            warn!(error = %e, "cluster: publish to NATS failed");
            out.not_forwarded(NotForwarded::Error);
        }
    }
    out.queued.fetch_sub(len, Ordering::AcqRel);
}
