//! One client connection: the handshake, then a reader that feeds every frame to the commands
//! (`command/`), beside a writer task (`writer.rs`) that drains the connection's outbox.

mod reader;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use mphub_protocol::handshake::Handshake;
use mphub_protocol::HandshakeError;
use tracing::{debug, info, Instrument};

use crate::command::{Services, Session};
use crate::config::Config;
use crate::connections::Connections;
use crate::net::{HandshakeRead, Stream};
use crate::outbox::Outbox;
use crate::shutdown::Shutdown;
use crate::writer::{self, Ended};

/// What a connection needs from the broker.
#[derive(Debug, Clone)]
pub struct Context {
    /// The configuration (one value; a reload swaps it whole).
    pub config: Arc<Config>,
    /// What commands use.
    pub services: Services,
    /// The open connections.
    pub connections: Arc<Connections>,
    /// The broker's shutdown phases.
    pub shutdown: Shutdown,
}

/// Serves one accepted connection to its end. `peer_addr` is the remote address, printable.
pub async fn serve(ctx: Arc<Context>, stream: Stream, peer_addr: String, id: u64) {
    let span = tracing::info_span!("conn", id);
    async move {
        let started = Instant::now();
        let config = ctx.config.clone();
        let metrics = &ctx.services.metrics;
        let (mut r, mut w) = stream.into_split();
        let mut buf = BytesMut::new();
        if let Some(key) = &config.authkey {
            metrics.handshakes_in_progress.inc();
            let mut read = HandshakeRead::new(&mut r);
            let result = async {
                let challenge = mphub_protocol::io::random_challenge()?;
                let mut both = tokio::io::join(&mut read, &mut w);
                let hs = Handshake::listener(key.expose(), challenge);
                mphub_protocol::io::drive(&mut both, &mut buf, hs).await
            };
            let deadline = config.settings.handshake_timeout.duration();
            let err = match tokio::time::timeout(deadline, result).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(HandshakeError::Timeout),
            };
            metrics.handshakes_in_progress.dec();
            match err {
                None => {}
                // Connect and close (a port probe, a load balancer's health check) is not an
                // authentication failure: nothing was tried.
                Some(HandshakeError::Closed | HandshakeError::Io(_)) if read.received() == 0 => {
                    metrics.connections_probed.inc();
                    debug!(peer = %peer_addr, "closed before sending a byte (a probe?)");
                    return;
                }
                Some(e) => {
                    metrics.auth_failures.with_label_values(&[e.kind()]).inc();
                    info!(peer = %peer_addr, reason = %e, "authentication failed; connection closed");
                    return;
                }
            }
        }
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
        let wait = s.metrics.addr().map(|_| metrics.queue_wait.clone());
        let writer = tokio::spawn(writer::run(w, rx, outbox.clone(), finish.clone(), wait));
        ctx.connections.insert(outbox.clone());

        let mut session = Session::new(&ctx.services, &config, &outbox);
        let why = reader::read_loop(&mut session, &ctx, &outbox, &mut r, &mut buf).await;
        session.close();
        let received = session.received_total();
        ctx.connections.remove(id);
        finish.cancel();
        let (ended, sent) = writer.await.unwrap_or((Ended::Killed, 0));
        metrics.connections.dec();
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
