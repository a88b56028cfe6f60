//! Listeners and streams of every kind the broker serves: TCP (v4, v6), Unix sockets (paths
//! and Linux abstract names) and TLS over TCP (`tls.rs` does the TLS), behind one type each.
//!
//! Binding is where a broker meets the rest of the machine, so the rules live here: the listen
//! backlog is sized for a burst of `max_connections` connects ([`Backlog`]); a Unix socket path
//! that a live server answers on is never taken over, and at exit only a socket file that is
//! still this broker's own is removed ([`SocketFile`]).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpListener, UnixListener};

use crate::config::ListenAddr;
use crate::tls;

/// Where Linux publishes the cap it puts on every listen backlog.
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

/// The listen backlog: room in the kernel's accept queue for connections the broker has not
/// accepted yet.
///
/// A connection whose final ACK arrives while the accept queue is full is dropped by the kernel
/// (`ListenOverflows` in `/proc/net/netstat`), yet the client already counts it as established.
/// With an authkey the broker speaks first, so a stock `Client` then waits forever for a
/// challenge. Hence the backlog is sized for a burst of `max_connections` simultaneous
/// connects, not tokio's fixed 1024. Linux silently caps it at `net.core.somaxconn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// What the settings ask for (`max_connections`).
    pub wanted: u32,
    /// `net.core.somaxconn`, when it can be read.
    pub somaxconn: Option<u32>,
}

/// The smallest listen backlog asked for, whatever `max_connections` says: tokio's (and
/// Go's, which nats-server uses) default. Connects past `max_connections` must still fit in the
/// accept queue, so the broker can take each one and refuse it cleanly; one dropped from a full
/// queue waits forever for the challenge.
pub const MIN_BACKLOG: u32 = 1024;

impl Backlog {
    /// The backlog for `max_connections` (at least [`MIN_BACKLOG`]), with the kernel's cap read
    /// from `/proc`.
    pub fn for_connections(max_connections: usize) -> Self {
        let somaxconn = std::fs::read_to_string(SOMAXCONN)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Backlog {
            wanted: u32::try_from(max_connections)
                .unwrap_or(u32::MAX)
                .max(MIN_BACKLOG),
            somaxconn,
        }
    }

    /// The backlog the kernel will really use.
    pub fn effective(self) -> u32 {
        match self.somaxconn {
            Some(cap) => self.wanted.min(cap),
            None => self.wanted,
        }
    }

    /// True when `net.core.somaxconn` is below what the settings ask for.
    pub fn is_clamped(self) -> bool {
        self.effective() < self.wanted
    }

    fn as_c_int(self) -> i32 {
        i32::try_from(self.wanted).unwrap_or(i32::MAX)
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    /// A Unix socket; `file` is set for a path. Fields drop in order, so the file is removed
    /// (if still ours) while the socket is still bound: a bound socket pins its file's inode,
    /// so the inode number cannot yet have been given to a file someone else made since.
    Unix {
        file: Option<SocketFile>,
        listener: UnixListener,
    },
    /// A TCP listener whose connections start with a TLS handshake (`tls::accept`).
    Tls(TcpListener),
}

/// Binds `addr` and listens with `backlog`; returns the listener and the address it really
/// has (port 0 resolved). Dropping a listener on a Unix socket path removes its socket file,
/// if that is still the one it created.
///
/// Errors: the address is in use (`AddrInUse`; for a Unix socket path also when a live server
/// answers on an existing socket file), or any error of `socket`, `bind` or `listen`.
pub fn bind(addr: &ListenAddr, backlog: Backlog) -> io::Result<(Listener, ListenAddr)> {
    match addr {
        ListenAddr::Tcp(a) => {
            let l = bind_tcp(*a, backlog)?;
            let local = l.local_addr()?;
            Ok((Listener::Tcp(l), ListenAddr::Tcp(local)))
        }
        ListenAddr::Tls(a) => {
            let l = bind_tcp(*a, backlog)?;
            let local = l.local_addr()?;
            Ok((Listener::Tls(l), ListenAddr::Tls(local)))
        }
        ListenAddr::Unix(path) => {
            clear_stale_socket(path)?;
            let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            let sock = listen(sock, &SockAddr::unix(path)?, backlog)?;
            let file = Some(SocketFile::created(path)?);
            let listener = UnixListener::from_std(sock.into())?;
            Ok((Listener::Unix { file, listener }, addr.clone()))
        }
        ListenAddr::Abstract(name) => {
            // A name held by a live server fails here with `AddrInUse`; there is no file to
            // go stale, and the name vanishes with its last socket.
            // socket2 reads a path starting with a NUL byte as an abstract name.
            let raw = [b"\0", name.as_bytes()].concat();
            let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            let sock = listen(sock, &SockAddr::unix(OsStr::from_bytes(&raw))?, backlog)?;
            let listener = UnixListener::from_std(sock.into())?;
            Ok((
                Listener::Unix {
                    file: None,
                    listener,
                },
                addr.clone(),
            ))
        }
    }
}

fn bind_tcp(a: std::net::SocketAddr, backlog: Backlog) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(a), Type::STREAM, None)?;
    // As tokio and every server do: a restarted broker can bind while connections of the
    // previous one linger in TIME_WAIT. (Two listeners on one port still fail.)
    sock.set_reuse_address(true)?;
    let sock = listen(sock, &SockAddr::from(a), backlog)?;
    TcpListener::from_std(sock.into())
}

fn listen(sock: Socket, addr: &SockAddr, backlog: Backlog) -> io::Result<Socket> {
    sock.bind(addr)?;
    sock.listen(backlog.as_c_int())?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Makes way for a new socket at `path`, or says why not.
///
/// A socket file left by a broker that died would make `bind` fail, so it is removed, but only
/// when nothing answers on it (connect is refused). When a server answers, this is an address
/// in use, as for a TCP port. Anything else (no permission, not a socket) is left for `bind`
/// to report. The connect is non-blocking, so a live server with a full backlog cannot hang
/// the start.
fn clear_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Ok(());
    }
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        // Accepted, or `EAGAIN` (its backlog is full): someone is serving there.
        Ok(()) => Err(in_use()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(in_use()),
        Err(e) => Err(e),
    }
}

fn in_use() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        "address in use: a live server answers on this socket",
    )
}

/// A Unix socket file this broker created, identified by device and inode. Dropping it
/// removes the file if it is still that one, so a file another process has put at the same
/// path since (after removing ours by hand) is never removed. Part of [`Listener::Unix`].
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn created(path: &Path) -> io::Result<Self> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Listener {
    /// True when accepted streams must go through `tls::accept` before anything else.
    pub fn is_tls(&self) -> bool {
        matches!(self, Listener::Tls(_))
    }

    /// Accepts one connection: the stream and a printable peer address. (On a TLS listener,
    /// the TCP stream, before the TLS handshake.)
    ///
    /// Cancel safety: cancel safe (tokio's `accept` is).
    pub async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) | Listener::Tls(l) => {
                let (s, peer) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), peer.to_string()))
            }
            Listener::Unix { listener, .. } => {
                let (s, _) = listener.accept().await?;
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
    /// TLS over TCP, after the TLS handshake.
    Tls(Box<tls::TlsStream>),
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
            Stream::Tls(s) => {
                let (r, w) = tls::split(*s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
    Tls(tls::ReadHalf),
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
    Tls(tls::WriteHalf),
}

impl ReadHalf {
    /// Asks the kernel to acknowledge what it received at once. Stock Python clients leave
    /// Nagle on: without a quick ACK their next small send can wait for our delayed ACK.
    pub fn quickack(&self) {
        match self {
            ReadHalf::Tcp(r) => {
                let sock = socket2::SockRef::from(r.as_ref());
                let _ = sock.set_quickack(true);
            }
            ReadHalf::Tls(r) => r.quickack(),
            ReadHalf::Unix(_) => {}
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
            ReadHalf::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// A [`ReadHalf`] as the handshake reads it: every read is acknowledged at once, and the bytes
/// received are counted.
///
/// The quick ACK matters most for the client's last handshake frame (`#WELCOME#`): the broker
/// answers it with nothing, so the kernel would delay its ACK (~40 ms), and Nagle on a stock
/// client holds the client's first message until that ACK arrives. The count tells a peer that
/// closed without sending a byte (a port probe) from a failed handshake.
#[derive(Debug)]
pub struct HandshakeRead<'a> {
    inner: &'a mut ReadHalf,
    received: u64,
}

impl<'a> HandshakeRead<'a> {
    /// Wraps `inner` for the handshake.
    pub fn new(inner: &'a mut ReadHalf) -> Self {
        HandshakeRead { inner, received: 0 }
    }

    /// Bytes read so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

impl AsyncRead for HandshakeRead<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.inner.quickack();
            this.received += n as u64;
        }
        polled
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
            WriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
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
            WriteHalf::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("mphub-net-{}-{name}.sock", std::process::id()))
    }

    #[test]
    fn somaxconn_caps_the_backlog_and_says_so() {
        let b = Backlog {
            wanted: 10_000,
            somaxconn: Some(4096),
        };
        assert_eq!((b.effective(), b.is_clamped()), (4096, true));
        let b = Backlog {
            wanted: 100,
            somaxconn: Some(4096),
        };
        assert_eq!((b.effective(), b.is_clamped()), (100, false));
    }

    #[tokio::test]
    async fn a_live_unix_socket_is_never_taken_over_and_a_stale_one_is_replaced() {
        let path = socket_path("live");
        let addr = ListenAddr::Unix(path.clone());
        let backlog = Backlog::for_connections(16);
        let first = bind(&addr, backlog).unwrap();
        let err = bind(&addr, backlog).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(first);
        assert!(!path.exists(), "its own file is removed with the listener");
        // A file left by a server that died: nothing answers, so it is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let second = bind(&addr, backlog).unwrap();
        // Removed by hand, and the path taken by another server: not ours to remove.
        std::fs::remove_file(&path).unwrap();
        let other = bind(&addr, backlog).unwrap();
        drop(second);
        assert!(path.exists());
        drop(other);
        assert!(!path.exists());
    }
}
