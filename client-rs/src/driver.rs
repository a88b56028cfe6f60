//! The task behind a [`Client`](crate::Client): one connection at a time, a reader that routes
//! what arrives, a writer that batches what the handles send, keepalive pings when the broker
//! has been silent, and reconnects.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mphub_protocol::{frame, Envelope, Scanner};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::address::{Address, Io};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::options::ConnectOptions;
use crate::state::State;
use crate::wire::{self, Reply};

/// Frames a writer takes per batch, and the bytes it gathers before a write.
const BATCH: usize = 256;
const GATHER: usize = 256 * 1024;
/// How long a closing client waits for the broker to finish after saying goodbye.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// An empty frame on the send queue: "say goodbye now" (from `Client::close`).
pub(crate) fn close_marker() -> Bytes {
    Bytes::new()
}

enum End {
    /// The client closed: goodbye said and the broker finished.
    Closed,
    /// The connection broke.
    Lost(Error),
}

/// Runs the client's connections until it closes or gives up. `pings` reaches the send queue
/// without keeping it open: once every handle is gone, the queue closes and the client says
/// goodbye.
pub(crate) async fn run(
    state: Arc<State>,
    addr: Address,
    opts: ConnectOptions,
    mut rx: mpsc::Receiver<Bytes>,
    pings: mpsc::WeakSender<Bytes>,
    first: Connection,
) {
    let mut conn = first;
    loop {
        let end = session(&state, &opts, &mut rx, &pings, conn).await;
        state.connected.send_replace(false);
        state.fail_waiters();
        let error = match end {
            End::Closed => break,
            End::Lost(e) => e,
        };
        if !opts.reconnect || state.closing.load(Ordering::Relaxed) {
            tracing::warn!(%addr, %error, "mphub: connection lost");
            break;
        }
        tracing::warn!(%addr, %error, "mphub: connection lost; reconnecting");
        match reconnect(&state, &addr, &opts).await {
            Some(c) => conn = c,
            None => break,
        }
    }
    // Every subscription ends once its queue is drained; later calls answer Closed.
    state.router().clear();
    rx.close();
    state.finished.send_replace(true);
}

async fn session(
    state: &State,
    opts: &ConnectOptions,
    rx: &mut mpsc::Receiver<Bytes>,
    pings: &mpsc::WeakSender<Bytes>,
    conn: Connection,
) -> End {
    let (io, buf) = conn.into_parts();
    let (r, mut w) = tokio::io::split(io);
    let restore = match state.restore_frames(&opts.name) {
        Ok(r) => r,
        Err(e) => return End::Lost(e),
    };
    if let Err(e) = w.write_all(&restore).await {
        return End::Lost(e.into());
    }
    state.connected.send_replace(true);

    let heard = Heard::new();
    let reader = read_loop(state, r, buf, opts.max_frame, &heard);
    tokio::pin!(reader);
    // Cancel safety: `read_loop` keeps partial frames in its own buffer and `write_loop` only
    // loses a batch it was writing when the other side has failed, i.e. the socket is dead;
    // `keepalive` holds nothing but its counts, which die with the connection.
    tokio::select! {
        e = &mut reader => return End::Lost(e),
        res = write_loop(state, rx, &mut w) => if let Err(e) = res { return End::Lost(e) },
        e = keepalive(state, opts, pings, &heard) => return End::Lost(e),
    }
    // Goodbye said: read on until the broker has sent everything queued for us and closed.
    let _ = tokio::time::timeout(CLOSE_WAIT, &mut reader).await;
    End::Closed
}

/// When the broker was last heard from on this connection, and keepalive pings sent since.
struct Heard {
    start: Instant,
    /// Milliseconds after `start` of the last read.
    at: AtomicU64,
    /// Pings sent since then.
    pings: AtomicU32,
}

impl Heard {
    fn new() -> Self {
        Heard {
            start: Instant::now(),
            at: AtomicU64::new(0),
            pings: AtomicU32::new(0),
        }
    }

    fn now(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at.store(ms, Ordering::Relaxed);
        self.pings.store(0, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.at.load(Ordering::Relaxed))
    }
}

/// Keepalive, as NATS clients do it but only on an otherwise idle connection: `ping_interval`
/// after the last read, a `$ping`; another every `ping_interval` while nothing comes; once
/// `max_outstanding_pings` are out for another interval, the connection is dead. So a broker
/// that stops answering (stopped, frozen, its host gone without a FIN: the kernel keeps the
/// socket open) is noticed within `ping_interval * (max_outstanding_pings + 1)` of its last
/// word. A ping that finds the send queue full counts as sent: a queue that does not drain is
/// no sign of life. Never returns while keepalive is off.
async fn keepalive(
    state: &State,
    opts: &ConnectOptions,
    pings: &mpsc::WeakSender<Bytes>,
    heard: &Heard,
) -> Error {
    let every = opts.ping_interval;
    if every.is_zero() {
        return std::future::pending().await;
    }
    loop {
        let sent = heard.pings.load(Ordering::Relaxed);
        let due = heard.last() + every * (sent + 1);
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
            continue;
        }
        if sent >= opts.max_outstanding_pings {
            return Error::Unresponsive(heard.last().elapsed());
        }
        heard.pings.store(sent + 1, Ordering::Relaxed);
        let token = state.tokens.fetch_add(1, Ordering::Relaxed);
        if let (Some(tx), Ok(ping)) = (pings.upgrade(), wire::pickled_frame(&("$ping", token))) {
            // Its `$pong` matches no waiter: any frame read is the sign of life.
            let _ = tx.try_send(ping);
        }
    }
}

/// Reads and routes until the connection ends; returns why.
async fn read_loop(
    state: &State,
    mut r: ReadHalf<Box<dyn Io>>,
    mut buf: BytesMut,
    max_frame: u64,
    heard: &Heard,
) -> Error {
    let mut scanner = Scanner::with_limit(Scanner::DEFAULT_LIMIT);
    loop {
        loop {
            let f = match frame::decode(&mut buf, max_frame) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return e.into(),
            };
            let header = f.header_len();
            route(state, &mut scanner, f.into_wire().slice(header..));
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) => return Error::Closed,
            Ok(_) => heard.now(),
            Err(e) => return e.into(),
        }
    }
}

fn route(state: &State, scanner: &mut Scanner, body: Bytes) {
    if let Envelope::Publish { topic } = scanner.classify(&body) {
        state.deliver(&topic, body.clone());
        return;
    }
    match wire::reply(&body) {
        Ok(Reply::Ok(op, pattern, group)) => state.ok(&op, (pattern, group)),
        Ok(Reply::Pong(token)) => state.pong(token),
        Ok(Reply::Error(reason)) => state.error(reason),
        Err(e) => tracing::warn!(error = %e, "mphub: ignored a frame from the broker"),
    }
}

/// Writes queued frames in batches until the client closes (Ok) or the socket fails.
async fn write_loop(
    state: &State,
    rx: &mut mpsc::Receiver<Bytes>,
    w: &mut WriteHalf<Box<dyn Io>>,
) -> Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut out = Vec::with_capacity(GATHER);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return goodbye(w).await; // every handle is gone
        }
        let mut closing = false;
        for f in batch.drain(..) {
            if f.is_empty() {
                closing = true;
                break;
            }
            if f.len() >= GATHER / 4 {
                write(state, w, &out).await?; // a big frame goes out without a copy
                out.clear();
                write(state, w, &f).await?;
            } else {
                out.extend_from_slice(&f);
            }
        }
        write(state, w, &out).await?;
        out.clear();
        if closing {
            return goodbye(w).await;
        }
    }
}

async fn write(state: &State, w: &mut WriteHalf<Box<dyn Io>>, bytes: &[u8]) -> Result<()> {
    if let Err(e) = w.write_all(bytes).await {
        state.lost_frames.fetch_add(1, Ordering::Relaxed);
        return Err(e.into());
    }
    Ok(())
}

async fn goodbye(w: &mut WriteHalf<Box<dyn Io>>) -> Result<()> {
    w.write_all(&wire::pickled_frame("close")?).await?;
    w.shutdown().await?;
    Ok(())
}

async fn reconnect(state: &State, addr: &Address, opts: &ConnectOptions) -> Option<Connection> {
    let (first, most) = opts.reconnect_wait;
    let mut wait = first;
    let mut attempt = 0u32;
    loop {
        if state.closing.load(Ordering::Relaxed) {
            return None;
        }
        if opts
            .max_reconnect_attempts
            .is_some_and(|max| attempt >= max)
        {
            tracing::error!(%addr, attempt, "mphub: gave up reconnecting");
            return None;
        }
        let jitter = 0.5 + f64::from(getrandom::u32().unwrap_or(0) % 1000) / 1000.0;
        tokio::time::sleep(wait.mul_f64(jitter)).await;
        attempt += 1;
        wait = (wait * 2).min(most);
        match Connection::open(
            addr,
            opts.authkey.as_deref(),
            opts.connect_timeout,
            opts.tls.as_ref(),
        )
        .await
        {
            Ok(c) => {
                tracing::warn!(%addr, attempt, "mphub: reconnected");
                return Some(c);
            }
            Err(e @ (Error::Auth { .. } | Error::Tls { .. })) => {
                tracing::error!(%addr, error = %e, "mphub: reconnect refused; giving up");
                return None;
            }
            Err(e) => tracing::info!(%addr, attempt, error = %e, "mphub: reconnect failed"),
        }
    }
}
