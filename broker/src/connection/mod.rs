//! One client connection: the TLS handshake on a `tls://` listener, the HMAC handshake, then a
//! reader that feeds every frame to the commands (`command/`), beside a writer task
//! (`writer.rs`) that drains the connection's outbox. `arriving.rs` holds the broker-wide
//! budget for large frames still arriving.

mod arriving;
mod reader;

pub use arriving::Arriving;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use mphub_protocol::{reply, HandshakeError};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::command::{Services, Session};
use crate::config::{Config, User};
use crate::connections::{Connections, Entry};
use crate::net::{HandshakeRead, ReadHalf, Stream, WriteHalf};
use crate::outbox::Outbox;
use crate::shutdown::Shutdown;
use crate::tls;
use crate::writer::{self, Ended};

/// What a connection needs from the broker.
#[derive(Debug, Clone)]
pub struct Context {
    /// The configuration: one value, which a reload replaces whole; every connection watches
    /// it and applies a change to its next frame.
    pub config: watch::Receiver<Arc<Config>>,
    /// What commands use.
    pub services: Services,
    /// The open connections.
    pub connections: Arc<Connections>,
    /// The broker's shutdown phases.
    pub shutdown: Shutdown,
    /// Memory for large frames still arriving, shared by every connection.
    pub arriving: Arc<Arriving>,
}

/// Serves one accepted connection to its end. `peer_addr` is the remote address, printable;
/// with `tls` the stream is TCP and starts with a TLS handshake.
pub async fn serve(ctx: Arc<Context>, stream: Stream, peer_addr: String, id: u64, tls: bool) {
    // `name` is recorded when the client says `$hello` (command/hello.rs).
    let span = tracing::info_span!(
        "conn",
        id,
        user = tracing::field::Empty,
        name = tracing::field::Empty
    );
    async move {
        let started = Instant::now();
        let mut config_rx = ctx.config.clone();
        let config = config_rx.borrow_and_update().clone();
        let metrics = &ctx.services.metrics;
        // On the TCP socket itself, before TLS (if any) wraps it.
        if let Err(e) = stream.set_keepalive(config.settings.keepalive.duration()) {
            tracing::debug!(error = %e, "cannot turn on TCP keepalive");
        }
        // The TLS handshake and the HMAC handshake share one deadline.
        let deadline = tokio::time::Instant::now() + config.settings.handshake_timeout.duration();
        let stream = match (tls, stream) {
            (true, Stream::Tcp(tcp)) => {
                match secure(&ctx, &config, tcp, deadline, &peer_addr).await {
                    Some(s) => s,
                    None => return,
                }
            }
            (_, stream) => stream,
        };
        let (mut r, mut w) = stream.into_split();
        let mut buf = BytesMut::new();
        let auth = authenticate(
            &ctx, &config, &mut r, &mut w, &mut buf, &peer_addr, deadline,
        )
        .await;
        let Some(user) = auth else {
            return;
        };
        tracing::Span::current().record("user", tracing::field::display(&user.name));
        let Some(admission) = ctx.connections.admit(&user) else {
            metrics
                .permission_denied
                .with_label_values(&[&user.name, "connect"])
                .inc();
            let max = user.max_connections.unwrap_or_default();
            let reason = format!(
                "permission denied: user '{}' already has {max} connections (max_connections)",
                user.name
            );
            info!(peer = %peer_addr, "{reason}; connection closed");
            let _ = w.write_all(&reply::error(&reason)).await;
            let _ = w.shutdown().await;
            return;
        };
        metrics.connections.inc();
        info!(peer = %peer_addr, "connection opened");

        let s = &config.settings;
        let (outbox, rx) = Outbox::new(
            id,
            s.outbound_limit.bytes(),
            s.slow_consumer,
            ctx.shutdown.kill_switch(),
        );
        let outbox = Arc::new(outbox);
        let finish = tokio_util::sync::CancellationToken::new();
        let timing = s.metrics.addr().is_some();
        let writer = tokio::spawn(writer::run(
            w,
            rx,
            outbox.clone(),
            finish.clone(),
            metrics.clone(),
            timing,
        ));
        let entry = Entry::new(outbox.clone(), config.clone(), &user, peer_addr.clone());
        let entry = ctx.connections.insert(entry);

        let mut session = Session::new(&ctx.services, config.clone(), user, &entry);
        let why = reader::read_loop(&mut session, &ctx, &mut config_rx, &mut r, &mut buf).await;
        session.close();
        let received = session.received_total();
        ctx.connections.remove(id);
        finish.cancel();
        let summary = writer.await.unwrap_or(writer::Summary {
            ended: Ended::Killed,
            written: 0,
            discarded: 0,
        });
        metrics.connections.dec();
        // The user's place is free before the close is logged: whoever reads the log line can
        // connect again as that user.
        drop(admission);
        let ended = match summary.ended {
            Ended::Flushed => "flushed".to_string(),
            Ended::Killed => format!("dropped {} queued messages", summary.discarded),
            Ended::Failed(e) => format!("write failed: {e}"),
        };
        let sent = summary.written;
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

/// Runs the TLS handshake with the certificate in force (`config.tls`); `None` when it failed
/// (counted in `mphub_tls_failures_total` and logged here).
async fn secure(
    ctx: &Context,
    config: &Config,
    tcp: tokio::net::TcpStream,
    deadline: tokio::time::Instant,
    peer_addr: &str,
) -> Option<Stream> {
    let Some(server) = &config.tls else {
        // Resolving a configuration with a tls:// listener builds `tls`, and a reload keeps it.
        warn!(peer = %peer_addr, "TLS listener without a certificate; connection closed");
        return None;
    };
    let metrics = &ctx.services.metrics;
    metrics.handshakes_in_progress.inc();
    let secured = tls::accept(server, tcp, deadline).await;
    metrics.handshakes_in_progress.dec();
    match secured {
        Ok(s) => Some(Stream::Tls(Box::new(s))),
        Err(e) => {
            match e.kind() {
                Some(kind) => {
                    metrics.tls_failures.with_label_values(&[kind]).inc();
                    info!(peer = %peer_addr, reason = %e, "TLS handshake failed; connection closed");
                }
                None => {
                    metrics.connections_probed.inc();
                    debug!(peer = %peer_addr, "closed before sending a byte (a probe?)");
                }
            }
            None
        }
    }
}

/// Runs the handshake (when a key is configured) by `deadline` and says which user the client
/// is; `None` when it failed (counted and logged here).
async fn authenticate(
    ctx: &Context,
    config: &Config,
    r: &mut ReadHalf,
    w: &mut WriteHalf,
    buf: &mut BytesMut,
    peer_addr: &str,
    deadline: tokio::time::Instant,
) -> Option<Arc<User>> {
    let users = &config.users;
    let Some(ring) = users.ring() else {
        return users.anonymous().cloned();
    };
    let metrics = &ctx.services.metrics;
    metrics.handshakes_in_progress.inc();
    let mut read = HandshakeRead::new(r);
    let result = async {
        let challenge = mphub_protocol::io::random_challenge()?;
        let mut both = tokio::io::join(&mut read, &mut *w);
        mphub_protocol::io::accept(&mut both, buf, ring.clone(), challenge).await
    };
    let outcome = tokio::time::timeout_at(deadline, result).await;
    metrics.handshakes_in_progress.dec();
    let err = match outcome {
        Ok(Ok(index)) => match users.get(index) {
            Some(user) => return Some(user.clone()),
            None => HandshakeError::WrongKey,
        },
        // Connect and close (a port probe, a load balancer's health check) is not an
        // authentication failure: nothing was tried.
        Ok(Err(HandshakeError::Closed | HandshakeError::Io(_))) if read.received() == 0 => {
            metrics.connections_probed.inc();
            debug!(peer = %peer_addr, "closed before sending a byte (a probe?)");
            return None;
        }
        Ok(Err(e)) => e,
        Err(_) => HandshakeError::Timeout,
    };
    metrics.auth_failures.with_label_values(&[err.kind()]).inc();
    info!(peer = %peer_addr, reason = %err, "authentication failed; connection closed");
    None
}
