//! Addresses (`host:port`, `unix:/path`, `unix:@abstract`, `tls://host:port`) and dialling them.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
use crate::tls;

/// Where a broker or Listener is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `host:port` (names resolved by the system; `[v6]:port` for IPv6 literals).
    Tcp(String),
    /// `unix:/path`.
    Unix(std::path::PathBuf),
    /// `unix:@name`: a Linux abstract socket.
    Abstract(String),
    /// `tls://host:port`: TCP with TLS (needs the `tls` feature); the `host:port` part.
    Tls(String),
}

impl Address {
    /// Parses `host:port`, `unix:/path`, `unix:@name` or `tls://host:port`.
    pub fn parse(text: &str) -> Result<Address> {
        if let Some(rest) = text.strip_prefix("tls://") {
            return match Address::parse(rest)? {
                Address::Tcp(a) => Ok(Address::Tls(a)),
                _ => Err(Error::Address(text.into(), "expected tls://host:port")),
            };
        }
        if let Some(rest) = text.strip_prefix("unix:") {
            if rest.is_empty() {
                return Err(Error::Address(text.into(), "unix: without a path"));
            }
            return Ok(match rest.strip_prefix('@') {
                Some(name) => Address::Abstract(name.into()),
                None => Address::Unix(rest.into()),
            });
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Address::Tcp(text.into()))
            }
            _ => Err(Error::Address(
                text.into(),
                "expected host:port, unix:/path, unix:@name or tls://host:port",
            )),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => f.write_str(a),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Abstract(n) => write!(f, "unix:@{n}"),
            Address::Tls(a) => write!(f, "tls://{a}"),
        }
    }
}

/// A connected byte stream of either kind.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

/// Dials `addr` (no multiprocessing handshake yet): TLS for a `tls://` address, or for a
/// `host:port` when `tls` is given.
pub(crate) async fn dial(addr: &Address, tls: Option<&tls::Config>) -> Result<Box<dyn Io>> {
    let fail = |source| Error::Connect {
        addr: addr.to_string(),
        source,
    };
    match addr {
        Address::Tcp(a) | Address::Tls(a) => {
            let s = tokio::net::TcpStream::connect(a.as_str())
                .await
                .map_err(fail)?;
            s.set_nodelay(true).map_err(fail)?;
            if matches!(addr, Address::Tls(_)) || tls.is_some() {
                return Ok(Box::new(tls::wrap(a, s, tls).await?));
            }
            Ok(Box::new(s))
        }
        Address::Unix(_) | Address::Abstract(_) if tls.is_some() => Err(Error::Address(
            addr.to_string(),
            "TLS over a Unix socket is not supported: use tls://host:port",
        )),
        Address::Unix(p) => Ok(Box::new(
            tokio::net::UnixStream::connect(p).await.map_err(fail)?,
        )),
        Address::Abstract(name) => abstract_socket(name).map_err(fail),
    }
}

#[cfg(target_os = "linux")]
fn abstract_socket(name: &str) -> std::io::Result<Box<dyn Io>> {
    use std::os::linux::net::SocketAddrExt;
    let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let s = std::os::unix::net::UnixStream::connect_addr(&sa)?;
    s.set_nonblocking(true)?;
    Ok(Box::new(tokio::net::UnixStream::from_std(s)?))
}

#[cfg(not(target_os = "linux"))]
fn abstract_socket(_name: &str) -> std::io::Result<Box<dyn Io>> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_form_parses() {
        assert_eq!(
            Address::parse("127.0.0.1:6000").unwrap(),
            Address::Tcp("127.0.0.1:6000".into())
        );
        assert_eq!(
            Address::parse("[::1]:6000").unwrap(),
            Address::Tcp("[::1]:6000".into())
        );
        assert_eq!(
            Address::parse("unix:/run/m.sock").unwrap(),
            Address::Unix("/run/m.sock".into())
        );
        assert_eq!(
            Address::parse("unix:@hub").unwrap(),
            Address::Abstract("hub".into())
        );
        assert_eq!(
            Address::parse("tls://localhost:6443").unwrap(),
            Address::Tls("localhost:6443".into())
        );
        assert_eq!(
            Address::parse("tls://[::1]:6443").unwrap().to_string(),
            "tls://[::1]:6443"
        );
        for bad in [
            "",
            "nohost",
            ":6000",
            "h:port",
            "unix:",
            "h:70000",
            "tls://unix:/x",
            "tls://",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }
}
