//! A connection's writer: drains its outbound queue, many frames per system call.
//!
//! When the connection is cut off (slow consumer), what is queued is thrown away at once and
//! counted, one per message, in `mphub_messages_dropped_total{reason="slow_consumer"}`
//! (`closed` when the connection ended for another reason). A frame already half written is
//! finished first if the peer takes it within [`FINISH_FRAME`], so a subscriber never reads a
//! frame cut in half: it reads whole messages, then end of file.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::net::WriteHalf;
use crate::outbox::{Closed, Outbox, Queued, Receiver, KEEP};

/// Slices per `writev` (Linux allows 1024).
const IOV_MAX: usize = 512;
/// How long a cut-off connection gets to take the rest of a frame already half written to it.
/// Only that one frame is held meanwhile; everything else queued is already freed.
pub const FINISH_FRAME: Duration = Duration::from_secs(5);

/// How the writer ended.
#[derive(Debug)]
pub enum Ended {
    /// Everything queued was written, then the socket was shut down.
    Flushed,
    /// The connection was closed early (why: [`Outbox::closed_why`]); what was queued is
    /// dropped and counted.
    Killed,
    /// Writing failed (the peer went away).
    Failed(io::Error),
}

/// What the writer did over the connection's life.
#[derive(Debug)]
pub struct Summary {
    /// How it ended.
    pub ended: Ended,
    /// Frames written whole.
    pub written: u64,
    /// Messages (not replies) thrown away with the queue, counted as dropped.
    pub discarded: u64,
}

/// Where a batch's write stands: the frame being written and the bytes of it already sent.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    frame: usize,
    offset: usize,
}

/// Writes queued frames until `finish` (then drains what is left) or the connection is closed
/// early. `metrics` gets the queue-wait histogram (when `timing`) and every dropped message.
pub async fn run(
    mut w: WriteHalf,
    mut rx: Receiver,
    outbox: Arc<Outbox>,
    finish: CancellationToken,
    metrics: Arc<Metrics>,
    timing: bool,
) -> Summary {
    let mut written = 0u64;
    // Everything queued, taken at once. Starts empty (an idle connection costs nothing here)
    // and grows with bursts; swapped with the queue's own vector each time.
    let mut batch: Vec<Queued> = Vec::new();
    let (ended, cursor) = loop {
        // Cancel safety: `recv_all` and `cancelled` are cancel safe; `biased` drains the queue
        // before honouring `finish`, so a clean close flushes everything queued before it.
        let n = tokio::select! {
            biased;
            _ = outbox.kill.cancelled() => break (Ended::Killed, Cursor::default()),
            n = rx.recv_all(&mut batch) => n,
            _ = finish.cancelled() => break (Ended::Flushed, Cursor::default()),
        };
        if n == 0 {
            break (Ended::Flushed, Cursor::default());
        }
        let mut at = Cursor::default();
        // A blocked write must not outlive a kill. Cancel safety: `write_all` records every
        // byte written in `at` as it goes, so when the kill wins, `at` says exactly where the
        // interrupted frame stands.
        let res = tokio::select! {
            r = write_all(&mut w, &batch, &mut at, &outbox) => r,
            _ = outbox.kill.cancelled() => break (Ended::Killed, at),
        };
        if let Err(e) = res {
            outbox.close(Closed::WriteFailed);
            break (Ended::Failed(e), at);
        }
        written += batch.len() as u64;
        outbox.frames_written(batch.len() as u64);
        outbox.replies_done(batch.iter().filter(|q| q.reply).count() as u64);
        if let (true, Some(q)) = (timing, batch.first()) {
            // One sample per write: the oldest frame of the batch, which waited longest.
            metrics.queue_wait.observe(q.waited().as_secs_f64());
        }
        batch.clear();
        // Room for twice this batch at most (never less than `KEEP` frames): after a burst, the
        // room goes back as soon as batches are smaller again (and all of it past `KEEP` once
        // the queue runs empty: `recv_all`).
        batch.shrink_to(n.saturating_mul(2).max(KEEP));
    };
    let slow = matches!(ended, Ended::Killed) && outbox.closed_why().slow();
    // A batch interrupted by a kill or a failed write: the frames before the cursor went out.
    let before = batch.get(..cursor.frame).unwrap_or_default();
    written += before.len() as u64;
    outbox.replies_done(before.iter().filter(|q| q.reply).count() as u64);
    // Nothing more goes in; what is still queued (and the rest of this batch) is thrown away.
    rx.close();
    let unfinished = batch
        .get(cursor.frame)
        .filter(|_| cursor.offset > 0)
        .cloned();
    let skip = cursor.frame + usize::from(unfinished.is_some());
    let mut discarded = Discarded::default();
    for q in batch.drain(..).skip(skip) {
        discarded.add(&q);
    }
    for q in rx.take() {
        discarded.add(&q);
    }
    // The half-written frame: finish it for a peer cut off as slow (it may read again soon;
    // nothing else is held meanwhile), or count it lost too. Its bytes and its reply are given
    // back here, whatever happens (the bytes before the cursor already were, as written).
    if let Some(q) = &unfinished {
        let rest = &q.frame[cursor.offset..];
        let done = slow
            && tokio::time::timeout(FINISH_FRAME, w.write_all(rest))
                .await
                .is_ok_and(|r| r.is_ok());
        if done {
            written += 1;
        } else if !q.reply {
            discarded.messages += 1;
        }
        outbox.written(rest.len() as u64);
        outbox.replies_done(u64::from(q.reply));
    }
    outbox.written(discarded.bytes);
    outbox.replies_done(discarded.replies);
    // Counted before the socket closes, so whoever sees the close can already see the count.
    if discarded.messages > 0 {
        let reason = if slow { "slow_consumer" } else { "closed" };
        metrics
            .messages_dropped
            .with_label_values(&[reason])
            .inc_by(discarded.messages);
    }
    if matches!(ended, Ended::Flushed) || slow {
        let _ = w.shutdown().await;
    }
    Summary {
        ended,
        written,
        discarded: discarded.messages,
    }
}

/// What was thrown away.
#[derive(Debug, Default)]
struct Discarded {
    messages: u64,
    replies: u64,
    bytes: u64,
}

impl Discarded {
    fn add(&mut self, q: &Queued) {
        self.bytes += q.frame.len() as u64;
        if q.reply {
            self.replies += 1;
        } else {
            self.messages += 1;
        }
    }
}

/// Writes every frame, with as few `writev` calls as the socket allows, recording progress in
/// `at` (and in the outbox's byte count) after each call.
async fn write_all(
    w: &mut WriteHalf,
    frames: &[Queued],
    at: &mut Cursor,
    outbox: &Outbox,
) -> io::Result<()> {
    while at.frame < frames.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&frames[at.frame].frame[at.offset..])
            .chain(frames[at.frame + 1..].iter().map(|q| &q.frame[..]))
            .take(IOV_MAX)
            .map(IoSlice::new)
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        outbox.written(n as u64);
        while n > 0 && at.frame < frames.len() {
            let left = frames[at.frame].frame.len() - at.offset;
            if n >= left {
                n -= left;
                at.frame += 1;
                at.offset = 0;
            } else {
                at.offset += n;
                n = 0;
            }
        }
    }
    // A TLS stream may keep encrypted records it could not write yet (the socket was full):
    // a flush sends them before the writer waits for more. (A no-op for plain sockets.)
    w.flush().await
}
