//! What a client's frames ask for, one function per message (as mini-redis keeps one file per
//! command): `publish.rs`, `subscribe.rs` (`$sub` and `$unsub`), `ping.rs`, `metrics.rs`
//! (`$metrics`), `hello.rs` (`$hello`). [`Session::handle`] classifies a frame and calls the one
//! that applies.
//!
//! Commands do no I/O: they route, change the index, and queue replies on the connection's
//! outbox. The reader (`connection/`) feeds them frames and folds their counts once per batch.

mod hello;
mod metrics;
mod ping;
mod publish;
mod subscribe;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use mphub_protocol::{reply, Envelope, Frame, Refused, Scanner};
use prometheus::local::LocalHistogram;
use tracing::debug;

use crate::config::{Config, User};
use crate::connections::{held, unheld, Entry, Held};
use crate::index::Recent;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::route::{Forward, Router, Tally};
use crate::topics::{Sampler, Topics};
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
    /// Sampled publish topics (the status page's busiest topics).
    pub topics: Arc<Topics>,
}

/// Whether the connection goes on after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next frame.
    Continue,
    /// The client said `"close"`: flush what is queued for it and close.
    Goodbye,
}

/// Topics a restricted publisher's permission was decided for, kept per connection so the
/// allow and deny lists are matched once per topic, not once per publish; cleared when full.
const VERDICTS: usize = 1024;

/// What a user was refused, for `mphub_permission_denied_total{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publishing to a topic.
    Publish,
    /// Subscribing (or joining a queue group).
    Subscribe,
    /// Sending `$metrics`.
    Metrics,
}

impl Action {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Metrics => "metrics",
        }
    }
}

/// Why a reload ends a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The connection's user is no longer configured.
    UserRemoved(String),
    /// The connection's user has another key now.
    KeyChanged(String),
}

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Revoked::UserRemoved(u) => {
                write!(f, "user {u:?} was removed by a configuration reload")
            }
            Revoked::KeyChanged(u) => {
                write!(f, "user {u:?} has a new key since a configuration reload")
            }
        }
    }
}

/// One connection's state as commands see it.
#[derive(Debug)]
pub struct Session<'a> {
    services: &'a Services,
    config: Arc<Config>,
    user: Arc<User>,
    /// Publish verdicts per topic, for a user with publish rules. Hashed with foldhash, as the
    /// match cache is: one lookup per publish, and the map is capped at [`VERDICTS`] anyway.
    verdicts: HashMap<Box<str>, bool, foldhash::fast::RandomState>,
    /// The connection as introspection sees it: its subscriptions, name and counts live there.
    conn: &'a Arc<Entry>,
    outbox: &'a Arc<Outbox>,
    scanner: Scanner,
    sampler: Sampler,
    received: u64,
    received_bytes: u64,
    received_total: u64,
    tally: Tally,
    /// This connection's last lookup, reused while the index is unchanged.
    recent: Recent,
    /// Whether metrics are served: only then are publishes timed and fan-out observed.
    timing: bool,
    /// When routing started, for the queue-wait histogram: read from the clock at the first
    /// publish of each read batch and again after every [`RESTAMP_AFTER`] deliveries.
    stamp: Instant,
    /// Deliveries (at least one per publish) routed since `stamp` was read.
    unstamped: u64,
    /// `mphub_publish_fanout`, observed here and added to the shared histogram once per read
    /// batch: the shared one's atomics, written per publish from both cores, showed in
    /// profiles.
    fanout: LocalHistogram,
}

/// Deliveries that may share one clock read. A clock read per publish was 4% of the broker's
/// CPU at 1 → 1 (perf); the histogram takes one sample per write, of its oldest frame, so a
/// stamp may be early by the time 16 deliveries take to route (a few microseconds).
const RESTAMP_AFTER: u64 = 16;

impl<'a> Session<'a> {
    /// A session for `user`'s connection `conn`.
    pub fn new(
        services: &'a Services,
        config: Arc<Config>,
        user: Arc<User>,
        conn: &'a Arc<Entry>,
    ) -> Self {
        let outbox = &conn.outbox;
        outbox.set_deny(&user.permissions.deny_subscribe);
        let timing = config.settings.metrics.addr().is_some();
        Session {
            services,
            config,
            user,
            verdicts: HashMap::default(),
            conn,
            outbox,
            scanner: Scanner::default(),
            sampler: Sampler::new(outbox.id),
            received: 0,
            received_bytes: 0,
            received_total: 0,
            tally: Tally::default(),
            recent: Recent::default(),
            timing,
            stamp: Instant::now(),
            unstamped: RESTAMP_AFTER,
            fanout: services.metrics.fanout.local(),
        }
    }

    /// When this publish's routing starts, for the queue-wait histogram (see [`RESTAMP_AFTER`]).
    fn routing_stamp(&mut self) -> Instant {
        if self.timing && self.unstamped >= RESTAMP_AFTER {
            self.stamp = Instant::now();
            self.unstamped = 0;
        }
        self.stamp
    }

    /// Handles one frame.
    pub fn handle(&mut self, frame: &Frame) -> Flow {
        self.received += 1;
        self.received_bytes += frame.wire().len() as u64;
        let envelope = match self.user.payloads.data() {
            None => self.scanner.classify(frame.body()),
            Some(policy) => match self.scanner.classify_with(frame.body(), policy) {
                Ok(envelope) => envelope,
                Err(refused) => {
                    self.refuse_payload(&refused);
                    return Flow::Continue;
                }
            },
        };
        match envelope {
            Envelope::Publish { topic } => publish::publish(self, &topic, frame),
            Envelope::Subscribe(i) => subscribe::subscribe(self, &i),
            Envelope::Unsubscribe(i) => subscribe::unsubscribe(self, &i),
            Envelope::Ping(token) => ping::ping(self, &token),
            Envelope::Metrics { has_code } => metrics::metrics(self, frame.body(), has_code),
            Envelope::Hello { .. } => hello::hello(self, frame.body()),
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

    /// Answers `("$error", "permission denied: ...")` and counts it; the connection stays.
    pub fn deny(&mut self, action: Action, what: &str) {
        self.services
            .metrics
            .permission_denied
            .with_label_values(&[&self.user.name, action.label()])
            .inc();
        let target = match action {
            Action::Metrics => "$metrics".to_owned(),
            _ => format!("{} to '{what}'", action.label()),
        };
        self.outbox
            .reply(reply::error(&format!("permission denied: {target}")));
    }

    /// A publish the user's payload policy refuses: answered, counted, never routed.
    fn refuse_payload(&mut self, refused: &Refused<'_>) {
        debug!(topic = %refused.topic, reason = %refused.reason, "payload refused");
        self.services
            .metrics
            .messages_refused
            .with_label_values(&["code", &self.user.name])
            .inc();
        self.outbox.reply(reply::error(&refused.reason.to_string()));
    }

    /// Whether this connection's user may publish to `topic`.
    fn may_publish(&mut self, topic: &str) -> bool {
        let p = &self.user.permissions;
        if p.publish.is_none() && p.deny_publish.is_empty() {
            return true;
        }
        if let Some(v) = self.verdicts.get(topic) {
            return *v;
        }
        let v = p.may_publish(topic);
        if self.verdicts.len() >= VERDICTS {
            self.verdicts.clear();
        }
        self.verdicts.insert(topic.into(), v);
        v
    }

    /// The connection's user.
    pub fn user(&self) -> &Arc<User> {
        &self.user
    }

    /// The configuration this connection follows now.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The connection's outbox.
    pub fn outbox(&self) -> &Arc<Outbox> {
        self.outbox
    }

    /// The connection as introspection sees it.
    pub fn conn(&self) -> &Arc<Entry> {
        self.conn
    }

    /// A reload brought `new`: the connection follows it from its next frame. Its user's new
    /// permissions apply (subscriptions they no longer allow are removed, each answered with a
    /// `permission denied` error), as do the new limits. `Err` when the user is gone or has
    /// another key: the connection must close.
    pub fn reconfigure(&mut self, new: Arc<Config>) -> Result<(), Revoked> {
        let name = &self.user.name;
        let user = match new.users.ring() {
            None => new.users.anonymous(),
            Some(_) => new.users.by_name(name),
        };
        let user = match user {
            None => return Err(Revoked::UserRemoved(name.clone())),
            Some(u) if u.key != self.user.key => return Err(Revoked::KeyChanged(name.clone())),
            Some(u) => u.clone(),
        };
        let s = &new.settings;
        self.outbox
            .set_limits(s.outbound_limit.bytes(), s.slow_consumer);
        self.outbox.set_deny(&user.permissions.deny_subscribe);
        self.verdicts.clear();
        let revoked: Vec<Held> = {
            let mut subs = self.conn.subscriptions();
            let revoked = subs
                .iter()
                .filter(|h| !user.permissions.may_subscribe(unheld(h).0))
                .cloned()
                .collect();
            subs.retain(|h| user.permissions.may_subscribe(unheld(h).0));
            revoked
        };
        self.user = user;
        self.config = new;
        for h in revoked {
            let (pattern, group) = unheld(&h);
            self.services
                .router
                .index()
                .unsubscribe(self.outbox.id, pattern, group);
            self.deny(Action::Subscribe, pattern);
        }
        Ok(())
    }

    /// Folds this batch's counts into the shared metrics.
    pub fn fold(&mut self) {
        // The next batch reads the clock again before its first publish.
        self.unstamped = RESTAMP_AFTER;
        self.fanout.flush();
        self.services.router.index().fold_hits(&mut self.recent);
        let m = &self.services.metrics;
        if self.received > 0 {
            m.messages_received.inc_by(self.received);
            m.bytes_received.inc_by(self.received_bytes);
            self.conn.fold_received(self.received, self.received_bytes);
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
        let held = std::mem::take(&mut *self.conn.subscriptions());
        for h in held {
            let (pattern, group) = unheld(&h);
            self.services
                .router
                .index()
                .unsubscribe(self.outbox.id, pattern, group);
        }
        self.services.workers.connection_closed(self.outbox.id);
    }
}

#[cfg(test)]
mod tests;
