//! The `tls_*` keys: the certificate, its key and the client CA of `tls://` listeners, read and
//! checked into a rustls [`ServerConfig`] when the configuration is resolved. A reload (SIGHUP)
//! resolves the configuration again and so reads the files again: new connections get the new
//! certificate, open ones keep the session they have. A file that cannot be read or parsed, or
//! a key that does not match the certificate, is a configuration error like any other: the
//! broker does not start, or a reload changes nothing.
//!
//! Crypto comes from rustls with the *ring* provider, the one async-nats already uses, named
//! explicitly so that the process-wide default provider never matters.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::{ConfigError, Settings};

/// TLS for `tls://` listeners, ready to accept with.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    /// What was read, so two loads of the same files compare equal.
    chain: Vec<CertificateDer<'static>>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("certificates", &self.chain.len())
            .field(
                "client_ca",
                &self.client_ca.as_ref().map(|c| c.len()).unwrap_or(0),
            )
            .finish_non_exhaustive()
    }
}

impl PartialEq for ServerTls {
    /// The same certificates (and client CAs); the key matches the certificate, so it goes
    /// with it.
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain && self.client_ca == other.client_ca
    }
}

impl ServerTls {
    /// Reads and checks `tls_cert`, `tls_key` and `tls_client_ca`; `None` when no listener is
    /// `tls://`.
    ///
    /// Errors: a `tls://` listener without `tls_cert` and `tls_key`; `tls_*` keys without a
    /// `tls://` listener; one of the pair without the other; a file that cannot be read, holds
    /// no PEM certificate (or key), or does not parse; a key that is not the certificate's.
    pub fn from_settings(s: &Settings) -> Result<Option<ServerTls>, ConfigError> {
        let listener = s.listen.iter().find(|l| l.is_tls());
        let (cert, key) = match (listener, &s.tls_cert, &s.tls_key) {
            (_, Some(_), None) => return Err(ConfigError::Together("tls_cert", "tls_key")),
            (_, None, Some(_)) => return Err(ConfigError::Together("tls_key", "tls_cert")),
            (Some(l), None, None) => return Err(ConfigError::TlsWithoutCert(l.to_string())),
            (None, Some(_), Some(_)) => return Err(ConfigError::TlsWithoutListener("tls_cert")),
            (None, None, None) => {
                return match s.tls_client_ca {
                    Some(_) => Err(ConfigError::TlsWithoutListener("tls_client_ca")),
                    None => Ok(None),
                }
            }
            (Some(_), Some(cert), Some(key)) => (cert, key),
        };
        let chain = read_certs("tls_cert", cert)?;
        let key_der = read_key(key)?;
        let client_ca = match &s.tls_client_ca {
            Some(path) => Some(read_certs("tls_client_ca", path)?),
            None => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("tls_cert", cert, e))?;
        let builder = match (&client_ca, &s.tls_client_ca) {
            (Some(cas), Some(path)) => {
                let mut roots = RootCertStore::empty();
                for ca in cas {
                    roots
                        .add(ca.clone())
                        .map_err(|e| tls_error("tls_client_ca", path, e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| tls_error("tls_client_ca", path, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain.clone(), key_der)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => ConfigError::Tls {
                    key: "tls_key",
                    path: key.clone(),
                    why: format!("not the key of the certificate in {}", cert.display()),
                },
                rustls::Error::InvalidCertificate(e) => tls_error(
                    "tls_cert",
                    cert,
                    format!("the certificate does not parse: {e:?}"),
                ),
                other => tls_error("tls_cert", cert, other),
            })?;
        Ok(Some(ServerTls {
            config: Arc::new(config),
            chain,
            client_ca,
        }))
    }

    /// The rustls configuration to accept connections with.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// True when clients must present a certificate (`tls_client_ca`).
    pub fn requires_client_cert(&self) -> bool {
        self.client_ca.is_some()
    }
}

fn tls_error(key: &'static str, path: &Path, e: impl fmt::Display) -> ConfigError {
    ConfigError::Tls {
        key,
        path: path.to_owned(),
        why: e.to_string(),
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::File {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Every PEM certificate in the file, in order; at least one.
fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(key, path, e))?;
    if certs.is_empty() {
        return Err(tls_error(key, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The first PEM private key in the file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read_file("tls_key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => tls_error(
            "tls_key",
            path,
            "no PEM private key in it (PKCS#8, PKCS#1 or SEC1)",
        ),
        other => tls_error("tls_key", path, other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(listen: &str, cert: Option<&str>, key: Option<&str>, ca: Option<&str>) -> Settings {
        Settings {
            listen: vec![listen.parse().unwrap()],
            tls_cert: cert.map(Into::into),
            tls_key: key.map(Into::into),
            tls_client_ca: ca.map(Into::into),
            ..Settings::default()
        }
    }

    #[test]
    fn the_keys_and_the_listener_go_together() {
        let none = ServerTls::from_settings(&with("127.0.0.1:0", None, None, None));
        assert!(matches!(none, Ok(None)));
        let cases = [
            (
                with("tls://127.0.0.1:0", None, None, None),
                "no certificate",
            ),
            (
                with("tls://127.0.0.1:0", Some("c"), None, None),
                "tls_cert and tls_key",
            ),
            (
                with("tls://127.0.0.1:0", None, Some("k"), None),
                "tls_key and tls_cert",
            ),
            (
                with("127.0.0.1:0", Some("c"), Some("k"), None),
                "tls_cert is given",
            ),
            (
                with("127.0.0.1:0", None, None, Some("ca")),
                "tls_client_ca is given",
            ),
            (
                with("tls://127.0.0.1:0", Some("/nonexistent/c"), Some("k"), None),
                "tls_cert: cannot read /nonexistent/c",
            ),
        ];
        for (settings, expected) in cases {
            let err = ServerTls::from_settings(&settings).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
