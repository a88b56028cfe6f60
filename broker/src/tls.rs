//! TLS on client connections (`tls://` listeners): the server handshake, what a failed one was
//! (for `mphub_tls_failures_total{kind}`), and a TLS stream split into a read and a write half
//! for the connection's reader and writer tasks.
//!
//! The certificate comes from the configuration in force when the connection was accepted
//! ([`ServerTls`], which a reload rebuilds): a connection keeps the session it started with.
//! The whole TLS handshake runs before the HMAC handshake and under the same deadline
//! (`handshake_timeout`), so a peer that never finishes it costs one task for that long and
//! nothing else. A peer whose first byte cannot start a TLS record is a plain client on the
//! wrong port: it is answered with a `$error` frame it can read, and closed at once.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use mphub_protocol::reply;
use rustls::AlertDescription;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::ServerTls;

/// A TLS connection over TCP, after the handshake.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The first byte of every TLS record that can open a connection: a handshake record (RFC
/// 8446 §5.1, `ContentType.handshake`).
const HANDSHAKE_RECORD: u8 = 0x16;

/// What the plain client on a TLS port reads: it speaks multiprocessing's wire, so a frame.
const NOT_TLS_REASON: &str =
    "this mphub listener speaks TLS: connect with tls://HOST:PORT (client-py, client-rs) or \
     through a local TLS tunnel (stunnel, socat); see docs/tls.md";

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The peer closed before sending a byte (a port probe, a health check): not a failure of
    /// TLS, and not counted as one.
    #[error("closed before sending a byte")]
    Probe,
    /// The first byte cannot start a TLS handshake: a plain client, or garbage.
    #[error("not TLS (first byte {0:#04x}): a plain client on a TLS listener?")]
    NotTls(u8),
    /// The handshake did not finish within `handshake_timeout`.
    #[error("the TLS handshake did not finish in time")]
    Timeout,
    /// Client certificates are required and the client sent none.
    #[error("the client sent no certificate (tls_client_ca requires one)")]
    NoClientCert,
    /// The client's certificate is not signed by `tls_client_ca`, expired, or unusable.
    #[error("the client's certificate is not accepted: {0}")]
    BadClientCert(rustls::CertificateError),
    /// The client refused the broker's certificate (an alert such as `unknown_ca`).
    #[error("the client refused the broker's certificate ({0:?})")]
    ServerCertRejected(AlertDescription),
    /// Anything else: a malformed ClientHello, no common version or cipher suite, a reset.
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
}

impl Failure {
    /// Every `kind` label, for series that exist from the start at zero.
    pub const KINDS: [&'static str; 6] = [
        "not_tls",
        "timeout",
        "handshake",
        "no_client_cert",
        "bad_client_cert",
        "server_cert_rejected",
    ];

    /// The `kind` label of `mphub_tls_failures_total`; `None` for [`Failure::Probe`].
    pub fn kind(&self) -> Option<&'static str> {
        Some(match self {
            Failure::Probe => return None,
            Failure::NotTls(_) => "not_tls",
            Failure::Timeout => "timeout",
            Failure::NoClientCert => "no_client_cert",
            Failure::BadClientCert(_) => "bad_client_cert",
            Failure::ServerCertRejected(_) => "server_cert_rejected",
            Failure::Handshake(_) => "handshake",
        })
    }

    /// Tells the rustls error inside `e` apart (tokio-rustls wraps it in an `io::Error`).
    fn classify(e: io::Error) -> Failure {
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        match inner {
            Some(rustls::Error::NoCertificatesPresented) => Failure::NoClientCert,
            Some(rustls::Error::InvalidCertificate(c)) => Failure::BadClientCert(c.clone()),
            Some(rustls::Error::AlertReceived(a)) if is_certificate_alert(*a) => {
                Failure::ServerCertRejected(*a)
            }
            _ => Failure::Handshake(e),
        }
    }
}

/// Alerts a client sends when it does not accept the server's certificate (RFC 8446 §6.2).
fn is_certificate_alert(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
    )
}

/// Runs the server side of the TLS handshake on `tcp` with `tls`, giving up at `deadline`.
///
/// A first byte that cannot start TLS gets a `("$error", reason)` frame (what a plain
/// multiprocessing client can read) and the connection is closed without waiting for more.
pub async fn accept(
    tls: &ServerTls,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<TlsStream, Failure> {
    let work = async {
        let mut first = [0u8; 1];
        // `peek` leaves the byte for rustls to read.
        let n = tcp.peek(&mut first).await.map_err(Failure::Handshake)?;
        if n == 0 {
            return Err(Failure::Probe);
        }
        if first[0] != HANDSHAKE_RECORD {
            let mut tcp = tcp;
            let _ = tcp.write_all(&reply::error(NOT_TLS_REASON)).await;
            let _ = tcp.shutdown().await;
            return Err(Failure::NotTls(first[0]));
        }
        tokio_rustls::TlsAcceptor::from(tls.server_config())
            .accept(tcp)
            .await
            .map_err(Failure::classify)
    };
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// Splits a TLS stream into halves that two tasks can use at once: one rustls session, behind a
/// mutex each poll takes briefly (what `tokio::io::split` does), with the TCP socket still in
/// reach for [`ReadHalf::quickack`].
pub fn split(stream: TlsStream) -> (ReadHalf, WriteHalf) {
    let shared = Arc::new(Mutex::new(stream));
    (ReadHalf(shared.clone()), WriteHalf(shared))
}

/// The reading half of a [`TlsStream`].
#[derive(Debug)]
pub struct ReadHalf(Arc<Mutex<TlsStream>>);

/// The writing half of a [`TlsStream`].
#[derive(Debug)]
pub struct WriteHalf(Arc<Mutex<TlsStream>>);

/// A poll never panics while holding the lock with the stream half-changed, and the stream is
/// only polled, so a poisoned lock still holds a usable stream.
fn lock(m: &Mutex<TlsStream>) -> MutexGuard<'_, TlsStream> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ReadHalf {
    /// Asks the kernel to acknowledge what the TCP socket received at once (see
    /// `net::ReadHalf::quickack`).
    pub fn quickack(&self) {
        let stream = lock(&self.0);
        let _ = socket2::SockRef::from(stream.get_ref().0).set_quickack(true);
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_shutdown(cx)
    }
}
