//! client-rs over TLS (feature `tls`) against the real broker in-process, with a CA and
//! certificates made by `openssl` for the test.

#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use mphub_broker::config::{MetricsAddr, Secret, Settings};
use mphub_broker::{Config, ListenAddr};
use mphub_client::rustls::pki_types::pem::PemObject;
use mphub_client::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use mphub_client::rustls::{ClientConfig, RootCertStore};
use mphub_client::{Client, ConnectOptions, Error};

/// A temporary directory of certificates, removed when the test ends.
struct Pki(PathBuf);

impl std::ops::Deref for Pki {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A directory with a CA (`ca.pem`), a server certificate for localhost and 127.0.0.1
/// (`server.pem`, `server.key`) and a client certificate (`client.pem`, `client.key`).
fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("mphub-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=ca",
            ],
        ]
        .concat(),
    );
    for (who, ext) in [
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(dir.join(format!("{who}.ext")), ext).unwrap();
        let (key, csr, pem) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
        );
        let subj = format!("/CN={who}");
        openssl(
            &[
                &["req"],
                &ec[..],
                &["-keyout", &key, "-out", &csr, "-subj", &subj],
            ]
            .concat(),
        );
        let extfile = format!("{who}.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "7",
            "-days",
            "1",
            "-out",
            &pem,
            "-extfile",
            &extfile,
        ]);
    }
    Pki(dir)
}

async fn tls_broker(dir: &Path, client_ca: bool) -> mphub_broker::Broker {
    let settings = Settings {
        listen: vec![ListenAddr::parse("tls://127.0.0.1:0").unwrap()],
        metrics: MetricsAddr::Off,
        tls_cert: Some(dir.join("server.pem")),
        tls_key: Some(dir.join("server.key")),
        tls_client_ca: client_ca.then(|| dir.join("ca.pem")),
        ..Settings::default()
    };
    broker_with(Config::resolve(settings, Some(Secret::new(KEY.to_vec()))).unwrap()).await
}

fn tls_addr(b: &mphub_broker::Broker) -> String {
    b.addrs()[0].to_string()
}

/// Trusts the test CA; shows the client certificate when `with_cert`.
fn client_config(dir: &Path, with_cert: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
        .unwrap();
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = if with_cert {
        let chain = vec![CertificateDer::from_pem_file(dir.join("client.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

fn options(config: Arc<ClientConfig>) -> ConnectOptions {
    ConnectOptions::new()
        .authkey(KEY)
        .reconnect(false)
        .tls(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_over_tls_comes_back_to_a_subscriber_over_tls() {
    let dir = pki("roundtrip");
    let b = tls_broker(&dir, false).await;
    let addr = tls_addr(&b);
    assert!(addr.starts_with("tls://127.0.0.1:"), "{addr}");
    let c = Client::connect(&addr, options(client_config(&dir, false)))
        .await
        .unwrap();
    let mut sub = c.subscribe("over.tls").await.unwrap();
    let big = "x".repeat(300_000);
    c.publish("over.tls", &("hello", 1)).await.unwrap();
    c.publish("over.tls", &big).await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(
        recv(&mut sub).await.decode::<(String, i32)>().unwrap(),
        ("hello".into(), 1)
    );
    assert_eq!(recv(&mut sub).await.decode::<String>().unwrap(), big);
    c.close().await.unwrap();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_ca_the_client_does_not_trust_is_refused_for_good() {
    let dir = pki("untrusted");
    let b = tls_broker(&dir, false).await;
    // The default: the system's CAs, which do not include the test CA.
    let err = Client::connect(&tls_addr(&b), ConnectOptions::new().authkey(KEY))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_certificates_required_only_a_client_showing_one_gets_in() {
    let dir = pki("mtls");
    let b = tls_broker(&dir, true).await;
    let addr = tls_addr(&b);
    let c = Client::connect(&addr, options(client_config(&dir, true)))
        .await
        .unwrap();
    c.flush().await.unwrap();
    c.close().await.unwrap();
    // TLS 1.3 finishes the client's side before the broker has checked its certificate: the
    // refusal arrives as the broker's alert during the multiprocessing handshake.
    let err = Client::connect(&addr, options(client_config(&dir, false)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("CertificateRequired") || matches!(err, Error::Tls { .. }),
        "{err}"
    );
    b.shutdown().await;
}
