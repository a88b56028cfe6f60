//! [`Connection`]: one multiprocessing peer, no broker needed.
//!
//! Talks to a broker, or to any Python `multiprocessing.connection.Listener`: the same frames
//! and handshake as CPython's `Client` (answering a 3.11 Listener's MD5 challenge and a 3.12+
//! one's `{sha256}`, then challenging back with sha256).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mphub_protocol::{frame, handshake::Handshake, io as hsio};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::address::{dial, Address, Io};
use crate::error::{Error, Result};
use crate::tls;

/// Default largest frame accepted (the broker's default too).
pub const DEFAULT_MAX_FRAME: u64 = 64 * 1024 * 1024;

/// A connected, authenticated multiprocessing peer: send and receive pickles or raw frames.
///
/// ```no_run
/// # async fn demo() -> mphub_client::Result<()> {
/// let mut conn = mphub_client::Connection::connect("127.0.0.1:6000", Some(b"secret")).await?;
/// conn.send(&("greeting", "hello")).await?;
/// let reply: serde_pickle::Value = conn.recv_value().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Connection {
    io: Box<dyn Io>,
    buf: BytesMut,
    max_frame: u64,
}

impl Connection {
    /// Dials `address` and runs the handshake when `authkey` is given (a Listener or broker
    /// without a key does none). A `tls://` address trusts the system's CAs (feature `tls`; use
    /// [`Client`](crate::Client) with [`ConnectOptions::tls`](crate::ConnectOptions::tls) for
    /// others). Gives up after 10 seconds.
    pub async fn connect(address: &str, authkey: Option<&[u8]>) -> Result<Connection> {
        let addr = Address::parse(address)?;
        Self::open(&addr, authkey, Duration::from_secs(10), None).await
    }

    /// Dials `addr` (with TLS for a `tls://` address, or with `tls` when given) and runs the
    /// handshake, all within `timeout`.
    pub(crate) async fn open(
        addr: &Address,
        authkey: Option<&[u8]>,
        timeout: Duration,
        tls: Option<&tls::Config>,
    ) -> Result<Connection> {
        let work = async {
            let mut io = dial(addr, tls).await?;
            let mut buf = BytesMut::with_capacity(64 * 1024);
            if let Some(key) = authkey {
                let challenge = hsio::random_challenge().map_err(|source| Error::Auth {
                    addr: addr.to_string(),
                    source,
                })?;
                hsio::drive(&mut io, &mut buf, Handshake::client(key, challenge))
                    .await
                    .map_err(|source| Error::Auth {
                        addr: addr.to_string(),
                        source,
                    })?;
            }
            Ok(Connection {
                io,
                buf,
                max_frame: DEFAULT_MAX_FRAME,
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// Sets the largest frame `recv_bytes` accepts (default 64 MiB).
    pub fn set_max_frame(&mut self, max: u64) {
        self.max_frame = max;
    }

    /// Sends one frame with `body` (what CPython's `send_bytes` does).
    pub async fn send_bytes(&mut self, body: &[u8]) -> Result<()> {
        let (head, n) = frame::header(body.len() as u64);
        self.io.write_all(&head[..n]).await?;
        self.io.write_all(body).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Receives one frame's body (what `recv_bytes` does); [`Error::Closed`] at the end.
    ///
    /// Cancel safety: safe; a partial frame stays buffered for the next call.
    pub async fn recv_bytes(&mut self) -> Result<Bytes> {
        loop {
            if let Some(f) = frame::decode(&mut self.buf, self.max_frame)? {
                let wire = f.wire().clone();
                return Ok(wire.slice(f.header_len()..));
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(Error::Closed);
            }
        }
    }

    /// Pickles `value` with serde-pickle and sends it (Python's `send`).
    pub async fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let body = serde_pickle::to_vec(&value, serde_pickle::SerOptions::new())?;
        self.send_bytes(&body).await
    }

    /// Receives one pickle and decodes it into `T` (Python's `recv`).
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        let body = self.recv_bytes().await?;
        Ok(serde_pickle::from_slice(
            &body,
            serde_pickle::DeOptions::new(),
        )?)
    }

    /// Receives one pickle as a dynamic [`serde_pickle::Value`].
    pub async fn recv_value(&mut self) -> Result<serde_pickle::Value> {
        let body = self.recv_bytes().await?;
        Ok(serde_pickle::value_from_slice(
            &body,
            serde_pickle::DeOptions::new(),
        )?)
    }

    /// Shuts down the write side; the peer sees the end of the stream.
    pub async fn close(mut self) -> Result<()> {
        self.io.shutdown().await?;
        Ok(())
    }

    pub(crate) fn into_parts(self) -> (Box<dyn Io>, BytesMut) {
        (self.io, self.buf)
    }
}
