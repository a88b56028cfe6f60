//! One client connection: the handshake, then a reader that feeds every frame to the commands
//! (`command/`), beside a writer task (`writer.rs`) that drains the connection's outbox.
//! `arriving.rs` holds the broker-wide budget for large frames still arriving.

mod arriving;
mod reader;

pub use arriving::Arriving;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use mphub_protocol::handshake::Handshake;
use tracing::{info, Instrument};

use crate::command::{Services, Session};
use crate::config::Config;
use crate::connections::Connections;
use crate::net::Stream;
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
    /// Memory for large frames still arriving, shared by every connection.
    pub arriving: Arc<Arriving>,
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
            let result = async {
                let challenge = mphub_protocol::io::random_challenge()?;
                let mut both = tokio::io::join(&mut r, &mut w);
                let hs = Handshake::listener(key.expose(), challenge);
                mphub_protocol::io::drive(&mut both, &mut buf, hs).await
            };
            let deadline = config.settings.handshake_timeout.duration();
            let err = match tokio::time::timeout(deadline, result).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(mphub_protocol::HandshakeError::Timeout),
            };
            if let Some(e) = err {
                metrics.auth_failures.with_label_values(&[e.kind()]).inc();
                info!(peer = %peer_addr, reason = %e, "authentication failed; connection closed");
                return;
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
        let timing = s.metrics.addr().is_some();
        let writer = tokio::spawn(writer::run(
            w,
            rx,
            outbox.clone(),
            finish.clone(),
            metrics.clone(),
            timing,
        ));
        ctx.connections.insert(outbox.clone());

        let mut session = Session::new(&ctx.services, &config, &outbox);
        let why = reader::read_loop(&mut session, &ctx, &outbox, &mut r, &mut buf).await;
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
