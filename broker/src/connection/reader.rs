//! A connection's reader: reads into a buffer and hands each whole frame to the session,
//! *check, then parse* (`mphub_protocol::frame`).

use std::time::Duration;

use std::sync::Arc;

use bytes::BytesMut;
use mphub_protocol::{frame, FrameError};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tracing::info;

use super::Context;
use crate::command::{Flow, Revoked, Session};
use crate::config::Config;
use crate::net::ReadHalf;

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
pub(super) enum Close {
    Revoked(Revoked),
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
            Close::Revoked(r) => write!(f, "{r}"),
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
    let mut room = READ_MIN;
    let mut heard = !buf.is_empty() || session.config().users.ring().is_some();
    let mut watching = true;
    loop {
        // A reload applies to the next frame: check before handling what was just read.
        if watching && config.has_changed().unwrap_or(false) {
            if let Err(revoked) = follow(session, ctx, config) {
                return Close::Revoked(revoked);
            }
        }
        let max = session.config().settings.max_frame.bytes();
        // Check, then parse: handle every whole frame already buffered.
        loop {
            match frame::decode_copying(buf, max, COPY_BELOW) {
                Ok(Some(f)) => {
                    if session.handle(&f) == Flow::Goodbye {
                        session.fold();
                        return Close::Goodbye;
                    }
                }
                Ok(None) => {
                    if let Ok(frame::Check::Incomplete { missing }) = frame::check(buf, max) {
                        buf.reserve((missing as usize).min(FRAME_STEP).max(room));
                    }
                    break;
                }
                Err(e) => {
                    let kind = match e {
                        FrameError::TooLarge { .. } => "too_large",
                        FrameError::NegativeLength(_) => "bad_frame",
                    };
                    session.refuse(kind, &format!("{e}; closing the connection"));
                    session.fold();
                    return Close::BadFrame(e);
                }
            }
        }
        session.fold();
        let spare = buf.capacity() - buf.len();
        // Cancel safety: `read_buf` is cancel safe (no bytes are lost when another branch
        // wins), and so are `cancelled`, `changed` (a change not seen stays marked) and `sleep`.
        let read = tokio::select! {
            biased;
            _ = outbox.kill.cancelled() => return Close::Killed,
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
