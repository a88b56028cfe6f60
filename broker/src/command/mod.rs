//! What a client's frames ask for, one function per message (as mini-redis keeps one file per
//! command): `publish`, `subscribe` (`$sub` and `$unsub`), `ping`, `metrics`
//! (`$metrics`). [`Session::handle`] classifies a frame and calls the one that applies.
//!
//! Commands do no I/O: they route, change the index, and queue replies on the connection's
//! outbox. The reader (`connection/`) feeds them frames and folds their counts once per batch.

mod metrics;
mod ping;
mod publish;
mod subscribe;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use mphub_protocol::{reply, Envelope, Frame, Scanner};
use tracing::debug;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::route::{Forward, Router, Tally};
use crate::worker_metrics;

/// What commands need from the broker: a narrow handle, cheap to clone.
#[derive(Debug, Clone)]
pub struct Services {
    /// The index and the delivery counters.
    pub router: Router,
    /// The broker's metrics.
    pub metrics: Arc<Metrics>,
    /// Worker metrics (`$metrics`).
    pub workers: Arc<worker_metrics::Store>,
    /// Where publishes go beyond this node (the cluster bridge), if anywhere.
    pub forward: Option<Arc<dyn Forward>>,
}

/// Whether the connection goes on after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next frame.
    Continue,
    /// The client said `"close"`: flush what is queued for it and close.
    Goodbye,
}

/// A subscription a connection holds, as one string: the pattern, then a space and the queue
/// group if any (neither can hold whitespace). One allocation per subscription, a third of a
/// `(String, Option<String>)`, for connections that hold thousands.
type Held = Box<str>;

/// The [`Held`] form of a pattern and group.
fn held(pattern: &str, group: Option<&str>) -> Held {
    match group {
        None => pattern.into(),
        Some(g) => format!("{pattern} {g}").into(),
    }
}

/// The pattern and group of a [`Held`].
fn unheld(h: &str) -> (&str, Option<&str>) {
    match h.split_once(' ') {
        Some((pattern, group)) => (pattern, Some(group)),
        None => (h, None),
    }
}

/// One connection's state as commands see it.
#[derive(Debug)]
pub struct Session<'a> {
    services: &'a Services,
    config: &'a Config,
    outbox: &'a Arc<Outbox>,
    scanner: Scanner,
    subs: HashSet<Held>,
    received: u64,
    received_bytes: u64,
    received_total: u64,
    tally: Tally,
    /// Whether metrics are served: only then is each publish timed and its fan-out observed.
    timing: bool,
    epoch: Instant,
}

impl<'a> Session<'a> {
    /// A session for the connection whose outbox is `outbox`.
    pub fn new(services: &'a Services, config: &'a Config, outbox: &'a Arc<Outbox>) -> Self {
        Session {
            services,
            config,
            outbox,
            scanner: Scanner::default(),
            subs: HashSet::new(),
            received: 0,
            received_bytes: 0,
            received_total: 0,
            tally: Tally::default(),
            timing: config.settings.metrics.addr().is_some(),
            epoch: Instant::now(),
        }
    }

    /// Handles one frame.
    pub fn handle(&mut self, frame: &Frame) -> Flow {
        self.received += 1;
        self.received_bytes += frame.wire().len() as u64;
        match self.scanner.classify(frame.body()) {
            Envelope::Publish { topic } => publish::publish(self, &topic, frame),
            Envelope::Subscribe(i) => subscribe::subscribe(self, &i),
            Envelope::Unsubscribe(i) => subscribe::unsubscribe(self, &i),
            Envelope::Ping(token) => ping::ping(self, &token),
            Envelope::Metrics { has_code } => metrics::metrics(self, frame.body(), has_code),
            Envelope::Close => return Flow::Goodbye,
            Envelope::Invalid(reason) => {
                debug!(%reason, "invalid message");
                self.refuse("invalid_message", &reason);
            }
        }
        Flow::Continue
    }

    /// Answers `("$error", reason)` and counts a protocol error of `kind`; the connection stays.
    pub fn refuse(&mut self, kind: &str, reason: &str) {
        self.services
            .metrics
            .protocol_errors
            .with_label_values(&[kind])
            .inc();
        self.outbox.reply(reply::error(reason));
    }

    /// Folds this batch's counts into the shared metrics.
    pub fn fold(&mut self) {
        let m = &self.services.metrics;
        if self.received > 0 {
            m.messages_received.inc_by(self.received);
            m.bytes_received.inc_by(self.received_bytes);
            self.received_total += self.received;
            self.received = 0;
            self.received_bytes = 0;
        }
        self.services.router.fold(&mut self.tally);
    }

    /// Frames received over the connection's life (after the last [`fold`](Self::fold)).
    pub fn received_total(&self) -> u64 {
        self.received_total
    }

    /// The connection ends: its subscriptions and `live*` worker gauges go.
    pub fn close(&mut self) {
        self.fold();
        for h in std::mem::take(&mut self.subs) {
            let (pattern, group) = unheld(&h);
            self.services
                .router
                .index()
                .unsubscribe(self.outbox.id, pattern, group);
        }
        self.services.workers.connection_closed(self.outbox.id);
    }
}
