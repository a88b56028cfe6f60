//! TLS towards a broker's `tls://` listener (cargo feature `tls`): rustls through tokio-rustls,
//! with the *ring* provider the broker uses. Without [`ConnectOptions::tls`] a `tls://` address
//! trusts the system's CAs (rustls-native-certs), as Python's `ssl.create_default_context()`
//! does; the broker's certificate must name the host dialled either way.
//!
//! [`ConnectOptions::tls`]: crate::ConnectOptions::tls

use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// The stream [`wrap`] gives: TLS over TCP.
#[cfg(feature = "tls")]
pub(crate) type Stream = tokio_rustls::client::TlsStream<TcpStream>;

/// The stream [`wrap`] gives (never, without the `tls` feature).
#[cfg(not(feature = "tls"))]
pub(crate) type Stream = TcpStream;

/// A rustls client configuration, or (without the `tls` feature) nothing that can exist.
#[cfg(feature = "tls")]
pub(crate) type Config = std::sync::Arc<rustls::ClientConfig>;

/// A rustls client configuration, or (without the `tls` feature) nothing that can exist.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub(crate) enum Config {}

/// Runs the TLS handshake on `tcp`, dialled at `addr` (`host:port`), with `config` or the
/// default (system CAs).
#[cfg(feature = "tls")]
pub(crate) async fn wrap(addr: &str, tcp: TcpStream, config: Option<&Config>) -> Result<Stream> {
    use rustls::pki_types::ServerName;

    let shown = format!("tls://{addr}");
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| Error::Address(shown.clone(), "the host is not a DNS name or IP address"))?;
    let config = match config {
        Some(c) => c.clone(),
        None => default_config()?,
    };
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|source| {
            // A refusal (certificate, alert) is final; a connection lost on the way is not.
            let refused = source
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some());
            if refused {
                Error::Tls {
                    addr: shown.clone(),
                    source,
                }
            } else {
                Error::Connect {
                    addr: shown.clone(),
                    source,
                }
            }
        })?;
    Ok(stream)
}

/// Without the `tls` feature, a `tls://` address cannot be dialled.
#[cfg(not(feature = "tls"))]
pub(crate) async fn wrap(addr: &str, _tcp: TcpStream, _config: Option<&Config>) -> Result<Stream> {
    Err(Error::Address(
        format!("tls://{addr}"),
        "TLS needs the `tls` feature of mphub-client",
    ))
}

/// The configuration a `tls://` address uses when none is given: the system's CAs, read once.
///
/// Errors: no CA certificate could be loaded from the system ([`Error::Tls`]).
#[cfg(feature = "tls")]
pub fn default_config() -> Result<std::sync::Arc<rustls::ClientConfig>> {
    use std::sync::{Arc, OnceLock};

    static DEFAULT: OnceLock<std::result::Result<Config, String>> = OnceLock::new();
    let made = DEFAULT.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(format!(
                "no CA certificate found on this system ({:?})",
                found.errors
            ));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(config))
    });
    made.clone().map_err(|why| Error::Tls {
        addr: "tls://".into(),
        source: std::io::Error::other(why),
    })
}
