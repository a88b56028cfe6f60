//! Driving a [`Handshake`] over a tokio stream.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::HandshakeError;
use crate::frame;
use crate::handshake::{self, Challenge, Digest, Handshake, KeyRing};

/// Rings with more keys than this check a client's answer on tokio's blocking pool
/// ([`tokio::task::spawn_blocking`]) rather than on the connection's task. One key costs about
/// 0.3 µs to try for a `{sha256}` answer (3.12+), 0.65 µs for a legacy MD5 one (<= 3.11) and
/// 1.6 µs for `{sha3_384}` (`cargo bench -p mphub-protocol --bench handshake`, two shared
/// vCPUs), so 128 keys cost some 40 to 80 µs for stock clients: the top of tokio's advice of
/// 10 to 100 µs between awaits, and more than handing the work to another thread costs.
pub const BLOCKING_RING_KEYS: usize = 128;

/// A fresh modern challenge (`{sha256}` + 40 random bytes), as CPython 3.12+ sends.
pub fn random_challenge() -> Result<Challenge, HandshakeError> {
    let mut nonce = [0u8; handshake::NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| HandshakeError::Io(std::io::Error::other(e.to_string())))?;
    Ok(Challenge::Modern(Digest::Sha256, nonce))
}

/// Runs `hs` to the end over `stream`. Bytes read past the handshake stay in `buf` for the
/// caller. On a failed check the `#FAILURE#` reply is written before the error is returned.
///
/// Cancel safety: not cancel safe; wrap the whole call in a timeout and drop the connection
/// when it fires.
pub async fn drive<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    hs: Handshake,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    run(stream, buf, hs).await.map(drop)
}

/// The listener's side with many keys: delivers `challenge`, finds which key of `ring` made
/// the client's answer, answers the client's challenge with that key, and returns the key's
/// index in `ring` (the user). Built on [`Handshake::listener_ring`]; rings of more than
/// [`BLOCKING_RING_KEYS`] keys check the answer on the blocking pool. Bytes read past the
/// handshake stay in `buf`; a wrong answer gets `#FAILURE#` before the error is returned.
///
/// Errors: as [`drive`]; [`HandshakeError::WrongKey`] when no key of `ring` made the answer.
///
/// Cancel safety: not cancel safe; wrap the whole call in a timeout and drop the connection
/// when it fires (a key check already on the blocking pool then finishes unobserved).
pub async fn accept<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    ring: Arc<KeyRing>,
    challenge: Challenge,
) -> Result<usize, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hs = run(stream, buf, Handshake::listener_ring(ring, challenge)).await?;
    hs.key_index().ok_or(HandshakeError::WrongKey)
}

/// Runs `hs` to the end and hands it back, done.
async fn run<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    mut hs: Handshake,
) -> Result<Handshake, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        flush(stream, &mut hs).await?;
        if hs.is_done() {
            return Ok(hs);
        }
        let body = loop {
            if let Some(f) = frame::decode(buf, handshake::MAX_FRAME).map_err(|e| match e {
                crate::FrameError::TooLarge { len, .. } => HandshakeError::TooLarge(len),
                other => HandshakeError::Frame(other),
            })? {
                break f;
            }
            if stream.read_buf(buf).await? == 0 {
                return Err(HandshakeError::Closed);
            }
        };
        let received;
        (hs, received) = receive(hs, body).await?;
        if let Err(e) = received {
            // Best effort: the peer may already be gone.
            let _ = flush(stream, &mut hs).await;
            return Err(e);
        }
    }
}

/// `hs.receive(frame)`, on the blocking pool when it may try more than [`BLOCKING_RING_KEYS`]
/// keys; the handshake moves there and back. The outer error is the blocking task failing.
async fn receive(
    mut hs: Handshake,
    frame: frame::Frame,
) -> Result<(Handshake, Result<(), HandshakeError>), HandshakeError> {
    if hs.next_receive_cost() <= BLOCKING_RING_KEYS {
        let received = hs.receive(frame.body());
        return Ok((hs, received));
    }
    tokio::task::spawn_blocking(move || {
        let received = hs.receive(frame.body());
        (hs, received)
    })
    .await
    .map_err(|e| HandshakeError::Io(std::io::Error::other(e.to_string())))
}

async fn flush<S: AsyncWrite + Unpin>(
    stream: &mut S,
    hs: &mut Handshake,
) -> Result<(), HandshakeError> {
    let mut wrote = false;
    while let Some(out) = hs.transmit() {
        stream.write_all(&frame::encode(&out)).await?;
        wrote = true;
    }
    if wrote {
        stream.flush().await?;
    }
    Ok(())
}
