//! Driving a [`Handshake`] over a tokio stream.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::HandshakeError;
use crate::frame;
use crate::handshake::{self, Challenge, Digest, Handshake};

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
    mut hs: Handshake,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        flush(stream, &mut hs).await?;
        if hs.is_done() {
            return Ok(());
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
        if let Err(e) = hs.receive(body.body()) {
            // Best effort: the peer may already be gone.
            let _ = flush(stream, &mut hs).await;
            return Err(e);
        }
    }
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
