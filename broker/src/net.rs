//! Listeners and streams of every kind the broker serves: TCP (v4, v6) and Unix sockets
//! (paths and Linux abstract names), behind one type each.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpListener, UnixListener};

use crate::config::ListenAddr;

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A bound listener and the address it really has (port 0 resolved).
pub async fn bind(addr: &ListenAddr) -> io::Result<(Listener, ListenAddr)> {
    match addr {
        ListenAddr::Tcp(a) => {
            let l = TcpListener::bind(a).await?;
            let local = l.local_addr()?;
            Ok((Listener::Tcp(l), ListenAddr::Tcp(local)))
        }
        ListenAddr::Unix(path) => {
            // A socket file left by an earlier run would make bind fail; only remove a socket.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    std::fs::remove_file(path)?;
                }
            }
            Ok((Listener::Unix(UnixListener::bind(path)?), addr.clone()))
        }
        ListenAddr::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            let std_listener = std::os::unix::net::UnixListener::bind_addr(&sa)?;
            std_listener.set_nonblocking(true)?;
            Ok((
                Listener::Unix(UnixListener::from_std(std_listener)?),
                addr.clone(),
            ))
        }
    }
}

impl Listener {
    /// Accepts one connection: the stream and a printable peer address.
    ///
    /// Cancel safety: cancel safe (tokio's `accept` is).
    pub async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), peer.to_string()))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), "unix".to_owned()))
            }
        }
    }
}

/// A client connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Stream {
    /// Turns on TCP keepalive: the kernel probes a peer silent for `idle`, then every `idle`,
    /// and drops it after its default count of unanswered probes (9 on Linux), as Go's net
    /// package (and so NATS) does. Whole seconds, at least one: the kernel takes no less. A
    /// Unix socket needs none (its peer cannot vanish without the kernel knowing).
    pub fn set_keepalive(&self, idle: Duration) -> io::Result<()> {
        if let Stream::Tcp(s) = self {
            let every = Duration::from_secs(idle.as_secs_f64().ceil().max(1.0) as u64);
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(every)
                .with_interval(every);
            socket2::SockRef::from(s).set_tcp_keepalive(&keepalive)?;
        }
        Ok(())
    }

    /// Owned read and write halves, with no lock between them.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
}

impl ReadHalf {
    /// Asks the kernel to acknowledge what it received at once. Stock Python clients leave
    /// Nagle on: without a quick ACK their next small send can wait for our delayed ACK.
    pub fn quickack(&self) {
        if let ReadHalf::Tcp(r) = self {
            let sock = socket2::SockRef::from(r.as_ref());
            let _ = sock.set_quickack(true);
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Unix(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Unix(w) => Pin::new(w).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Unix(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
