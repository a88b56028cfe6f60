//! A connection's writer: drains its outbound queue, many frames per system call.

use std::io::{self, IoSlice};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::net::WriteHalf;
use crate::outbox::{Outbox, Queued};

/// Frames taken from the queue per batch.
const BATCH: usize = 256;
/// Slices per `writev` (Linux allows 1024).
const IOV_MAX: usize = 512;

/// How the writer ended.
#[derive(Debug)]
pub enum Ended {
    /// Everything queued was written, then the socket was shut down.
    Flushed,
    /// The connection was killed; what was queued is dropped.
    Killed,
    /// Writing failed (the peer went away).
    Failed(io::Error),
}

/// Writes queued frames until `finish` (then drains what is left) or the connection is killed.
/// Returns how it ended and the number of frames written.
pub async fn run(
    mut w: WriteHalf,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    outbox: Arc<Outbox>,
    finish: CancellationToken,
    wait: Option<prometheus::Histogram>,
) -> (Ended, u64) {
    let mut written = 0u64;
    // Starts empty (an idle connection costs nothing here) and grows with bursts.
    let mut batch: Vec<Queued> = Vec::new();
    loop {
        // Cancel safety: `recv_many` and `cancelled` are cancel safe; `biased` drains the queue
        // before honouring `finish`, so a clean close flushes everything queued before it.
        let n = tokio::select! {
            biased;
            _ = outbox.kill.cancelled() => return (Ended::Killed, written),
            n = rx.recv_many(&mut batch, BATCH) => n,
            _ = finish.cancelled() => break,
        };
        if n == 0 {
            break;
        }
        let bytes: u64 = batch.iter().map(|b| b.0.len() as u64).sum();
        // A blocked write must not outlive a kill: the write is abandoned with the connection.
        let res = tokio::select! {
            r = write_all(&mut w, &batch) => r,
            _ = outbox.kill.cancelled() => return (Ended::Killed, written),
        };
        outbox.written(bytes, batch.len() as u64);
        written += batch.len() as u64;
        if let (Some(h), Some((_, at))) = (&wait, batch.first()) {
            // One sample per write: the oldest frame of the batch, which waited longest.
            h.observe(at.elapsed().as_secs_f64());
        }
        batch.clear();
        if n < BATCH / 8 {
            // After a burst, give the room back once traffic is light again.
            batch.shrink_to(BATCH / 8);
        }
        if let Err(e) = res {
            return (Ended::Failed(e), written);
        }
    }
    let _ = w.shutdown().await;
    (Ended::Flushed, written)
}

/// Writes every frame, with as few `writev` calls as the socket allows.
async fn write_all(w: &mut WriteHalf, frames: &[Queued]) -> io::Result<()> {
    let (mut i, mut off) = (0usize, 0usize);
    while i < frames.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&frames[i].0[off..])
            .chain(frames[i + 1..].iter().map(|b| &b.0[..]))
            .take(IOV_MAX)
            .map(IoSlice::new)
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 && i < frames.len() {
            let left = frames[i].0.len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(())
}
