//! One client connection: handshake, then a reader that classifies and routes every frame,
//! beside a writer task that drains the connection's outbound queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mphub_protocol::frame::{self, Check};
use mphub_protocol::handshake::Handshake;
use mphub_protocol::{reply, Envelope, FrameError, Scanner};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Instrument};

use crate::cluster::Served;
use crate::net::{ReadHalf, Stream};
use crate::peer::Peer;
use crate::route::{pick_live, Tally};
use crate::writer::{self, Ended};
use crate::Shared;

/// Frames smaller than this are copied out of the read buffer once (not per subscriber), so a
/// slow subscriber holding a small frame never pins a whole read buffer.
const COPY_BELOW: usize = 16 << 10;
/// The read buffer's spare room starts here and halves back towards it when reads are small,
/// so an idle connection costs little memory...
const READ_MIN: usize = 1 << 10;
/// ...and doubles up to here while reads fill it, so a busy one needs few system calls.
const READ_MAX: usize = 256 << 10;
/// Most reserved at once for one large frame (the buffer grows as its bytes arrive).
const FRAME_STEP: usize = 1 << 20;
/// In no-auth mode, silence this long from a new client earns a hint in the log.
const SILENT_HINT: Duration = Duration::from_secs(3);

/// Why a connection ended.
#[derive(Debug)]
enum Close {
    Eof,
    Truncated,
    Goodbye,
    BadFrame(FrameError),
    Killed,
    Shutdown,
    ReadError(std::io::Error),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Eof => write!(f, "client closed"),
            Close::Truncated => write!(f, "client closed inside a frame"),
            Close::Goodbye => write!(f, "client sent \"close\""),
            Close::BadFrame(e) => write!(f, "{e}"),
            Close::Killed => write!(
                f,
                "closed by the broker (slow consumer or shutdown deadline)"
            ),
            Close::Shutdown => write!(f, "broker shutting down"),
            Close::ReadError(e) => write!(f, "read error: {e}"),
        }
    }
}

/// Counts kept by the reader and folded into the metrics once per read batch.
#[derive(Default)]
struct Counts {
    received: u64,
    received_bytes: u64,
    routed: Tally,
}

/// Serves one accepted connection to its end.
pub async fn serve(shared: Arc<Shared>, stream: Stream, peer_addr: String, id: u64) {
    let span = tracing::info_span!("conn", id);
    async move {
        let started = Instant::now();
        let (mut r, mut w) = stream.into_split();
        let mut buf = BytesMut::new();
        if let Some(key) = shared.config.authkey.as_deref() {
            let result = async {
                let challenge = mphub_protocol::io::random_challenge()?;
                let mut both = tokio::io::join(&mut r, &mut w);
                mphub_protocol::io::drive(&mut both, &mut buf, Handshake::listener(key, challenge))
                    .await
            };
            let outcome = tokio::time::timeout(shared.config.handshake_timeout, result).await;
            let err = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(mphub_protocol::HandshakeError::Timeout),
            };
            if let Some(e) = err {
                shared
                    .metrics
                    .auth_failures
                    .with_label_values(&[e.kind()])
                    .inc();
                info!(peer = %peer_addr, reason = %e, "authentication failed; connection closed");
                return;
            }
        }
        shared.metrics.connections.inc();
        info!(peer = %peer_addr, "connection opened");

        let kill = shared.hard_stop.child_token();
        let (peer, rx) = Peer::new(
            id,
            shared.config.outbound_limit,
            shared.config.slow_consumer,
            kill.clone(),
        );
        let peer = Arc::new(peer);
        let finish = CancellationToken::new();
        let timing = shared.config.metrics.is_some();
        let wait = timing.then(|| shared.metrics.queue_wait.clone());
        let writer = tokio::spawn(writer::run(w, rx, peer.clone(), finish.clone(), wait));
        shared.peers.insert(id, peer.clone());

        let mut conn = Conn {
            shared: &shared,
            peer: &peer,
            scanner: Scanner::default(),
            subs: HashSet::new(),
            counts: Counts::default(),
            received_total: 0,
            fanout: shared.metrics.fanout.clone(),
            timing,
            epoch: Instant::now(),
        };
        let why = conn.read_loop(&mut r, &mut buf).await;
        let received = conn.received_total;
        conn.unsubscribe_all();
        conn.shared.worker_metrics.connection_closed(conn.peer.id);
        shared.peers.remove(&id);
        finish.cancel();
        let (ended, sent) = writer.await.unwrap_or((Ended::Killed, 0));
        shared.metrics.connections.dec();
        let ended = match ended {
            Ended::Flushed => "flushed".to_string(),
            Ended::Killed => "dropped its queue".to_string(),
            Ended::Failed(e) => format!("write failed: {e}"),
        };
        info!(
            peer = %peer_addr,
            duration_s = started.elapsed().as_secs_f64(),
            messages_in = received,
            messages_out = sent,
            reason = %why,
            writer = %ended,
            "connection closed"
        );
    }
    .instrument(span)
    .await
}

struct Conn<'a> {
    shared: &'a Shared,
    peer: &'a Arc<Peer>,
    scanner: Scanner,
    subs: HashSet<(String, Option<String>)>,
    counts: Counts,
    received_total: u64,
    /// Subscribers per publish. (Observed directly: prometheus 0.14's `LocalHistogram` loses
    /// flushed samples after a scrape has flipped the histogram's shards.)
    fanout: prometheus::Histogram,
    /// Whether metrics are served: only then is each publish timed and its fan-out observed.
    timing: bool,
    epoch: Instant,
}

impl Conn<'_> {
    async fn read_loop(&mut self, r: &mut ReadHalf, buf: &mut BytesMut) -> Close {
        let max = self.shared.config.max_frame;
        let mut room = READ_MIN;
        let mut heard = !buf.is_empty() || self.shared.config.authkey.is_some();
        loop {
            // Check, then parse: route every whole frame already buffered.
            loop {
                match frame::check(buf, max) {
                    Ok(Check::Complete { header, body }) => {
                        let total = header + body as usize;
                        let wire = if total < COPY_BELOW {
                            let f = Bytes::copy_from_slice(&buf[..total]);
                            buf.advance(total);
                            f
                        } else {
                            buf.split_to(total).freeze()
                        };
                        if let Some(stop) = self.handle(wire, header) {
                            self.fold();
                            return stop;
                        }
                    }
                    Ok(Check::Incomplete { missing }) => {
                        buf.reserve((missing as usize).min(FRAME_STEP).max(room));
                        break;
                    }
                    Err(e) => {
                        let kind = match e {
                            FrameError::TooLarge { .. } => "too_large",
                            FrameError::NegativeLength(_) => "bad_frame",
                        };
                        self.shared
                            .metrics
                            .protocol_errors
                            .with_label_values(&[kind])
                            .inc();
                        self.peer
                            .reply(reply::error(&format!("{e}; closing the connection")));
                        self.fold();
                        return Close::BadFrame(e);
                    }
                }
            }
            self.fold();
            let spare = buf.capacity() - buf.len();
            // Cancel safety: `read_buf` is cancel safe (no bytes are lost when another branch
            // wins), and so are `cancelled` and `sleep`.
            let read = tokio::select! {
                biased;
                _ = self.peer.kill.cancelled() => return Close::Killed,
                _ = self.shared.shutdown.cancelled() => return Close::Shutdown,
                r = r.read_buf(buf) => r,
                _ = tokio::time::sleep(SILENT_HINT), if !heard => {
                    info!(
                        "no data after {}s: if this client passes an authkey, it is waiting for a \
                         challenge that this broker (running without an authkey) never sends",
                        SILENT_HINT.as_secs()
                    );
                    heard = true;
                    continue;
                }
            };
            match read {
                Ok(0) if buf.is_empty() => return Close::Eof,
                Ok(0) => return Close::Truncated,
                Ok(n) => {
                    heard = true;
                    r.quickack();
                    room = if n >= spare {
                        (room * 2).min(READ_MAX)
                    } else if n < room / 4 {
                        (room / 2).max(READ_MIN)
                    } else {
                        room
                    };
                }
                Err(e) => return Close::ReadError(e),
            }
        }
    }

    /// Folds this batch's counts into the shared metrics.
    fn fold(&mut self) {
        let mut c = std::mem::take(&mut self.counts);
        let m = &self.shared.metrics;
        if c.received > 0 {
            m.messages_received.inc_by(c.received);
            m.bytes_received.inc_by(c.received_bytes);
            self.received_total += c.received;
        }
        c.routed.fold(m);
    }

    /// Handles one frame; `Some` ends the connection.
    fn handle(&mut self, wire: Bytes, header: usize) -> Option<Close> {
        self.counts.received += 1;
        self.counts.received_bytes += wire.len() as u64;
        match self.scanner.classify(&wire[header..]) {
            Envelope::Publish { topic } => {
                let matches = self.shared.index.lookup(&topic);
                let at = if self.timing {
                    Instant::now()
                } else {
                    self.epoch
                };
                let before = self.counts.routed.delivered;
                for p in &matches.plain {
                    self.offer(p, &wire, at);
                }
                let cluster = self.shared.cluster.as_ref();
                let mut served = Served::default();
                for g in &matches.groups {
                    if let Some(p) = pick_live(g) {
                        self.offer(p, &wire, at);
                        if cluster.is_some() {
                            served.add(&g.name);
                        }
                    }
                }
                if self.timing {
                    self.fanout
                        .observe((self.counts.routed.delivered - before) as f64);
                }
                if let Some(cluster) = cluster {
                    cluster.forward(&topic, wire.slice(header..), served);
                }
            }
            Envelope::Subscribe(i) => {
                let key = (i.pattern.to_string(), i.group.as_deref().map(str::to_owned));
                if !self.subs.contains(&key)
                    && self.subs.len() >= self.shared.config.max_subscriptions
                {
                    self.refuse(&format!(
                        "subscription limit reached: this connection holds {} (max_subscriptions)",
                        self.subs.len()
                    ));
                    return None;
                }
                // A repeated $sub (a client restoring after a reconnect, say) changes nothing.
                if self.subs.insert(key) {
                    self.shared
                        .index
                        .subscribe(self.peer, &i.pattern, i.group.as_deref());
                }
                self.peer.reply(reply::ok("$sub", &i));
            }
            Envelope::Unsubscribe(i) => {
                let key = (i.pattern.to_string(), i.group.as_deref().map(str::to_owned));
                if self.subs.remove(&key) {
                    self.shared
                        .index
                        .unsubscribe(self.peer.id, &i.pattern, i.group.as_deref());
                }
                self.peer.reply(reply::ok("$unsub", &i));
            }
            Envelope::Ping(token) => {
                // Make the metrics agree with the barrier: whoever sees the pong can scrape.
                self.fold();
                self.peer.reply(reply::pong(&token));
            }
            Envelope::Metrics { has_code } => {
                let out =
                    self.shared
                        .worker_metrics
                        .apply_frame(self.peer.id, &wire[header..], has_code);
                let m = &self.shared.metrics;
                m.metrics_ops.inc_by(out.applied);
                for r in &out.rejected {
                    m.metrics_rejected.with_label_values(&[r.label()]).inc();
                }
                if let Some(reason) = out.reason() {
                    self.peer.reply(reply::error(&reason));
                }
            }
            Envelope::Close => return Some(Close::Goodbye),
            Envelope::Invalid(reason) => {
                debug!(%reason, "invalid message");
                self.refuse(&reason);
            }
        }
        None
    }

    fn refuse(&mut self, reason: &str) {
        self.shared
            .metrics
            .protocol_errors
            .with_label_values(&["invalid_message"])
            .inc();
        self.peer.reply(reply::error(reason));
    }

    fn offer(&mut self, p: &Arc<Peer>, wire: &Bytes, at: Instant) {
        let s = self.shared;
        self.counts
            .routed
            .offer(&s.metrics, s.config.outbound_limit, p, wire, at);
    }

    fn unsubscribe_all(&mut self) {
        for (pattern, group) in self.subs.drain() {
            self.shared
                .index
                .unsubscribe(self.peer.id, &pattern, group.as_deref());
        }
    }
}
