//! A connection's reader: reads into a buffer and hands each whole frame to the session,
//! *check, then parse* (`mphub_protocol::frame`).
//!
//! Every byte a peer can make it hold has a bound and a deadline:
//! - its own replies: past the outbound limit the reader stops until the writer catches up
//!   (`Outbox::replies_over_limit`), and cuts the connection off if the peer reads nothing for
//!   `STALL_PATIENCE`;
//! - a frame still arriving: it must be whole within `frame_timeout` of its first byte, and a
//!   large one first reserves its length from the broker-wide `arriving_limit` ([`Arriving`]);
//! - buffers after a burst: a buffer that held a large frame is replaced once the frame is
//!   split off (the frame shares its allocation), and an idle connection gives its read buffer
//!   back after [`IDLE`];
//! - an oversized frame: the rest of it is read and thrown away (at most [`DISCARD_MAX`] or
//!   [`DISCARD_TIME`]) so a client still sending it can read why it was refused.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mphub_protocol::{frame, FrameError};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::arriving::{Reserved, LARGE};
use super::Context;
use crate::command::{Flow, Revoked, Session};
use crate::config::Config;
use crate::net::ReadHalf;
use crate::outbox::{Closed, Outbox, STALL_PATIENCE};

/// Frames smaller than this are copied out of the read buffer once (not per subscriber), so a
/// slow subscriber holding a small frame never pins a whole read buffer.
const COPY_BELOW: usize = 16 << 10;
/// The read buffer's spare room starts here and halves back towards it when reads are small,
/// so an idle connection costs little memory...
const READ_MIN: usize = 1 << 10;
/// ...and doubles up to here while reads fill it, so a busy one needs few system calls.
const READ_MAX: usize = LARGE as usize;
/// A connection with nothing buffered for this long gives its read buffer back.
pub(super) const IDLE: Duration = Duration::from_secs(1);
/// In no-auth mode, silence this long from a new client earns a hint in the log.
const SILENT_HINT: Duration = Duration::from_secs(3);
/// Most bytes of an oversized frame read and thrown away so its sender can read the `$error`.
pub const DISCARD_MAX: u64 = 64 << 20;
/// Longest spent throwing an oversized frame away.
pub const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum Close {
    Revoked(Revoked),
    Eof,
    Truncated,
    Goodbye,
    BadFrame(FrameError),
    FrameTimeout(Duration),
    Killed(Closed),
    Shutdown,
    ReadError(std::io::Error),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Revoked(r) => write!(f, "{r}"),
            Close::Eof => write!(f, "client closed"),
            Close::Truncated => write!(f, "client closed inside a frame"),
            Close::Goodbye => write!(f, "client sent \"close\""),
            Close::BadFrame(e) => write!(f, "{e}"),
            Close::FrameTimeout(t) => write!(f, "a frame was not complete within {t:?}"),
            Close::Killed(Closed::SlowConsumer) => {
                write!(f, "slow consumer: outbound queue over its limit")
            }
            Close::Killed(Closed::Stalled) => write!(
                f,
                "slow consumer: its replies stayed over the outbound limit, nothing read for {}s",
                STALL_PATIENCE.as_secs()
            ),
            Close::Killed(Closed::WriteFailed) => write!(f, "writing to the client failed"),
            Close::Killed(Closed::Deadline) => write!(f, "shutdown deadline passed"),
            Close::Shutdown => write!(f, "broker shutting down"),
            Close::ReadError(e) => write!(f, "read error: {e}"),
        }
    }
}

/// What the read loop's one timer is for.
#[derive(Debug, Clone, Copy)]
enum Timer {
    Frame,
    Idle,
    Silent,
}

/// The frame at the front of the buffer while it is still arriving: when it must be whole,
/// and its share of the broker-wide budget.
#[derive(Debug, Default)]
struct Arrival {
    deadline: Option<Instant>,
    reserved: Option<Reserved>,
}

impl Arrival {
    /// A frame has begun (a no-op if it already had).
    fn begin(&mut self, timeout: Duration) {
        self.deadline
            .get_or_insert_with(|| Instant::now() + timeout);
    }

    /// The broker did not read for `d` (its own stall): the peer's clock stops meanwhile.
    fn pause(&mut self, d: Duration) {
        if let Some(t) = &mut self.deadline {
            *t += d;
        }
    }
}

/// Reads and handles frames until the connection ends; says why. A new configuration
/// (`config`) applies to the next frame.
pub(super) async fn read_loop(
    session: &mut Session<'_>,
    ctx: &Context,
    config: &mut watch::Receiver<Arc<Config>>,
    r: &mut ReadHalf,
    buf: &mut BytesMut,
) -> Close {
    let outbox = session.outbox().clone();
    let outbox = &*outbox;
    let mut room = READ_MIN;
    let mut heard = !buf.is_empty() || session.config().users.ring().is_some();
    let mut watching = true;
    let mut arrival = Arrival::default();
    let silent_at = Instant::now() + SILENT_HINT;
    loop {
        // A reload applies to the next frame: check before handling what was just read.
        if watching && config.has_changed().unwrap_or(false) {
            if let Err(revoked) = follow(session, ctx, config) {
                return Close::Revoked(revoked);
            }
        }
        let settings = &session.config().settings;
        let max = settings.max_frame.bytes();
        let frame_timeout = settings.frame_timeout.duration();
        // Check, then parse: handle every whole frame already buffered, while this
        // connection's own replies fit in its outbound limit.
        while !outbox.replies_over_limit() {
            match frame::decode_copying(buf, max, COPY_BELOW) {
                Ok(Some(f)) => {
                    arrival = Arrival::default();
                    if f.wire().len() > READ_MAX {
                        // The frame shares the buffer's allocation: start a new buffer, so the
                        // connection does not keep the frame's memory once it is delivered.
                        *buf = BytesMut::from(&buf[..]);
                    }
                    if session.handle(&f) == Flow::Goodbye {
                        session.fold();
                        return Close::Goodbye;
                    }
                }
                Ok(None) => break,
                Err(e) => return refuse_frame(session, ctx, outbox, r, buf, e).await,
            }
        }
        session.fold();

        if outbox.replies_over_limit() {
            // Stop reading until the writer has brought this connection's replies back within
            // its limit. Cancel safety: `drained` only waits on a notification.
            let since = Instant::now();
            let ok = tokio::select! {
                biased;
                _ = outbox.kill.cancelled() => return Close::Killed(outbox.closed_why()),
                _ = ctx.shutdown.begun() => return Close::Shutdown,
                ok = outbox.drained(STALL_PATIENCE) => ok,
            };
            if !ok {
                if outbox.close(Closed::Stalled) {
                    ctx.services.metrics.slow_consumers.inc();
                    warn!(
                        queued = outbox.queued(),
                        "slow consumer: replies over the outbound limit and nothing read for {}s; \
                         closing that connection",
                        STALL_PATIENCE.as_secs()
                    );
                }
                return Close::Killed(outbox.closed_why());
            }
            arrival.pause(since.elapsed());
            continue;
        }

        // Plan the next read around the frame at the front of the buffer, if one has begun.
        let total = match frame::announced(buf, max) {
            Ok(t) => t,
            Err(e) => return refuse_frame(session, ctx, outbox, r, buf, e).await,
        };
        if !buf.is_empty() {
            arrival.begin(frame_timeout);
        }
        match total {
            Some(total) if total > LARGE => {
                if arrival.reserved.is_none() {
                    // Not read until the whole frame fits in the broker-wide budget. Cancel
                    // safety: `reserve` holds nothing unless it completes.
                    let since = Instant::now();
                    let reserved = tokio::select! {
                        biased;
                        _ = outbox.kill.cancelled() => return Close::Killed(outbox.closed_why()),
                        _ = ctx.shutdown.begun() => return Close::Shutdown,
                        reserved = ctx.arriving.reserve(total) => reserved,
                    };
                    arrival.reserved = Some(reserved);
                    arrival.pause(since.elapsed());
                }
                // Room for exactly the rest of it, once: the pages are only touched (and
                // resident) as the bytes arrive, and the read stops at the frame's end.
                buf.reserve((total as usize).saturating_sub(buf.len()));
            }
            Some(total) => buf.reserve((total as usize).saturating_sub(buf.len()).max(room)),
            None => buf.reserve(room),
        }

        let spare = buf.capacity() - buf.len();
        // One timer at a time (each costs the connection's task its size): a frame's deadline
        // while one is arriving, else giving an idle buffer back, else the no-auth hint.
        let timer = match arrival.deadline {
            Some(at) => Some((at, Timer::Frame)),
            None if buf.is_empty() && buf.capacity() > READ_MIN => {
                Some((Instant::now() + IDLE, Timer::Idle))
            }
            None if !heard => Some((silent_at, Timer::Silent)),
            None => None,
        };
        // Cancel safety: `read_buf` is cancel safe (no bytes are lost when another branch
        // wins), and so are `cancelled`, `changed` (a change not seen stays marked), `sleep`
        // and `sleep_until`.
        let read = tokio::select! {
            biased;
            _ = outbox.kill.cancelled() => return Close::Killed(outbox.closed_why()),
            _ = ctx.shutdown.begun() => return Close::Shutdown,
            changed = config.changed(), if watching => {
                // Err: the broker dropped the configuration's sender (it is stopping).
                watching = changed.is_ok();
                if watching {
                    if let Err(revoked) = follow(session, ctx, config) {
                        return Close::Revoked(revoked);
                    }
                }
                continue;
            }
            r = r.read_buf(buf) => r,
            _ = tokio::time::sleep_until(timer.map_or_else(Instant::now, |t| t.0)),
                if timer.is_some() =>
            {
                match timer.map(|t| t.1) {
                    Some(Timer::Frame) => {
                        session.refuse(
                            "frame_timeout",
                            &format!(
                                "a frame was not complete within {}s of its first byte \
                                 (--frame-timeout); closing the connection",
                                frame_timeout.as_secs_f64()
                            ),
                        );
                        session.fold();
                        return Close::FrameTimeout(frame_timeout);
                    }
                    Some(Timer::Idle) => {
                        // Nothing buffered for a while: give the buffer back (one grown by a
                        // burst of reads would otherwise stay for the connection's life).
                        *buf = BytesMut::new();
                        room = READ_MIN;
                    }
                    Some(Timer::Silent) | None => {
                        info!(
                            "no data after {}s: if this client passes an authkey, it is \
                             waiting for a challenge that this broker (running without an \
                             authkey) never sends",
                            SILENT_HINT.as_secs()
                        );
                        heard = true;
                    }
                }
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

/// Applies the newest configuration to this connection and says so.
fn follow(
    session: &mut Session<'_>,
    ctx: &Context,
    config: &mut watch::Receiver<Arc<Config>>,
) -> Result<(), Revoked> {
    let new = config.borrow_and_update().clone();
    if let Err(revoked) = session.reconfigure(new.clone()) {
        session.fold();
        return Err(revoked);
    }
    ctx.connections.applied(session.outbox().id, &new);
    Ok(())
}

/// Answers a frame that cannot be read with `("$error", reason)`. For one over the size limit,
/// reads the rest of it and throws it away first (bounded), so a client still sending it gets
/// to read the reason instead of a broken pipe.
async fn refuse_frame(
    session: &mut Session<'_>,
    ctx: &Context,
    outbox: &Outbox,
    r: &mut ReadHalf,
    buf: &mut BytesMut,
    e: FrameError,
) -> Close {
    let kind = match e {
        FrameError::TooLarge { .. } => "too_large",
        FrameError::NegativeLength(_) => "bad_frame",
    };
    session.refuse(kind, &format!("{e}; closing the connection"));
    session.fold();
    if let FrameError::TooLarge { len, .. } = e {
        let header = if buf.starts_with(&[0xff; 4]) {
            frame::LONG_HEADER
        } else {
            frame::SHORT_HEADER
        };
        let left = (header as u64 + len).saturating_sub(buf.len() as u64);
        discard(ctx, outbox, r, buf, left.min(DISCARD_MAX)).await;
    }
    Close::BadFrame(e)
}

/// Reads and drops up to `left` bytes, for at most [`DISCARD_TIME`].
async fn discard(ctx: &Context, outbox: &Outbox, r: &mut ReadHalf, buf: &mut BytesMut, left: u64) {
    const CHUNK: usize = 64 << 10;
    let deadline = Instant::now() + DISCARD_TIME;
    let mut left = left;
    *buf = BytesMut::with_capacity(CHUNK.min(left as usize));
    while left > 0 {
        buf.clear();
        // Cancel safety: as in the read loop.
        let read = tokio::select! {
            biased;
            _ = outbox.kill.cancelled() => return,
            _ = ctx.shutdown.begun() => return,
            _ = tokio::time::sleep_until(deadline) => return,
            r = r.read_buf(buf) => r,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n as u64),
        }
    }
}
