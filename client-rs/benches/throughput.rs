//! mphub-client throughput against the real broker binary, beside the broker's own load
//! generator (raw pre-encoded frames) measured in the same run.
//!
//!     cargo bench -p mphub-client --bench throughput [-- --quick] [--runs N]
//!     cargo bench -p mphub-client --features tls --bench throughput -- --tls [--runs N]
//!
//! Runs `target/release/mphub` (or `$MPHUB_BIN`) on loopback without an authkey. Payload: a
//! tuple of an int and a 48-character string (frames of about 80 bytes). Every figure is the
//! median of `--runs` runs with min and max.
//! - publish, 1 task / 8 tasks: messages/s until a `flush` returns (the broker routed all),
//!   one subscriber present (a raw socket that only counts bytes).
//! - receive: one `Subscription` takes N messages that 8 raw connections publish; messages/s.
//! - baseline: the same 1 -> 1 delivery with raw pre-encoded frames on both ends (the load
//!   generator's method), so the client's own cost shows as the gap.
//!
//! `--tls` (feature `tls`) measures TLS against plain TCP instead: one broker with a plain and
//! a `tls://` listener (a certificate made by `openssl` for the run), one publishing `Client`
//! and 10 subscribing `Client`s, all over plain TCP or all over TLS; delivered messages/s
//! (10 per publish) until every subscriber has them all. Plain and TLS runs alternate, so both
//! see the same machine; the figure is the median of each and their ratio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use bytes::BytesMut;
use mphub_client::{Client, ConnectOptions};
use mphub_protocol::frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Broker {
    child: Child,
    /// The first listener's address.
    addr: String,
    /// Every listener's address, in the order of the flags (read by `--tls`).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    addrs: Vec<String>,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(&["--listen", "127.0.0.1:0"])
    }

    /// A broker with these flags (at least one `--listen`).
    fn start_with(flags: &[&str]) -> Broker {
        let listeners = flags.iter().filter(|f| **f == "--listen").count();
        let bin = std::env::var("MPHUB_BIN").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/mphub").to_string()
        });
        let mut child = Command::new(&bin)
            .args(flags)
            .args(["--outbound-limit", "2GiB"])
            .args(["--metrics", "off", "--log-level", "warn,mphub_broker=info"])
            .env_remove("MPHUB_AUTHKEY")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin}: {e} (cargo build --release -p mphub-broker)")
            });
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut addrs = Vec::new();
        while addrs.len() < listeners {
            let line = lines.next().expect("mphub exited").unwrap();
            if let Some(rest) = line.split("mphub listening on ").nth(1) {
                addrs.push(rest.trim().to_string());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Broker {
            child,
            addr: addrs[0].clone(),
            addrs,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PAYLOAD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// A raw subscriber that counts frames by their headers until it has `n`.
async fn raw_sub(addr: &str, pattern: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = serde_pickle::to_vec(&("$sub", pattern), Default::default()).unwrap();
    s.write_all(&frame::encode(&body)).await.unwrap();
    let mut buf = BytesMut::new();
    while frame::decode(&mut buf, 1 << 20).unwrap().is_none() {
        s.read_buf(&mut buf).await.unwrap();
    }
    s
}

async fn count(mut s: TcpStream, n: usize) {
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut seen = 0;
    while seen < n {
        if s.read_buf(&mut buf).await.unwrap() == 0 {
            panic!("closed after {seen}");
        }
        while let Some(_f) = frame::decode(&mut buf, 1 << 20).unwrap() {
            seen += 1;
        }
        if buf.capacity() < 64 * 1024 {
            buf.reserve(1 << 20);
        }
    }
}

fn raw_frame(topic: &str, i: u64) -> bytes::Bytes {
    frame::encode(&serde_pickle::to_vec(&(topic, (i, PAYLOAD)), Default::default()).unwrap())
}

async fn publish_rate(addr: &str, tasks: u64, n: u64) -> f64 {
    let sub = raw_sub(addr, "bench.pub").await;
    let counter = tokio::spawn(count(sub, n as usize));
    let c = Client::connect(addr, ConnectOptions::new()).await.unwrap();
    let t = Instant::now();
    let mut hs = Vec::new();
    for _ in 0..tasks {
        let c = c.clone();
        hs.push(tokio::spawn(async move {
            for i in 0..n / tasks {
                c.publish("bench.pub", &(i, PAYLOAD)).await.unwrap();
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    c.flush().await.unwrap();
    let rate = n as f64 / t.elapsed().as_secs_f64();
    counter.await.unwrap();
    c.close().await.unwrap();
    rate
}

async fn receive_rate(addr: &str, n: u64, raw: bool) -> f64 {
    let c = Client::connect(addr, ConnectOptions::new().max_pending(n as usize + 1))
        .await
        .unwrap();
    let mut sub = c.subscribe("bench.rx").await.unwrap();
    let raw_rx = if raw {
        Some(raw_sub(addr, "bench.raw").await)
    } else {
        None
    };
    let topic = if raw { "bench.raw" } else { "bench.rx" };
    let frames: Vec<bytes::Bytes> = (0..n / 8).map(|i| raw_frame(topic, i)).collect();
    let joined: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    let joined = std::sync::Arc::new(joined);
    let t = Instant::now();
    for _ in 0..8 {
        let joined = joined.clone();
        let addr = addr.to_string();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            for chunk in joined.chunks(64 * 1024) {
                s.write_all(chunk).await.unwrap();
            }
            s.shutdown().await.unwrap();
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        });
    }
    let want = (n / 8) * 8;
    match raw_rx {
        Some(s) => count(s, want as usize).await,
        None => {
            for _ in 0..want {
                sub.next().await.unwrap();
            }
        }
    }
    let rate = want as f64 / t.elapsed().as_secs_f64();
    c.close().await.unwrap();
    rate
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn show(label: &str, v: Vec<f64>) -> f64 {
    let (m, lo, hi) = median(v);
    println!(
        "{label:44} {:>8.0} k/s ({:.0}–{:.0} k)",
        m / 1e3,
        lo / 1e3,
        hi / 1e3
    );
    m
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let n: u64 = if quick { 200_000 } else { 1_000_000 };
    let rt = tokio::runtime::Runtime::new().unwrap();
    if args.iter().any(|a| a == "--tls") {
        return tls::compare(&rt, runs, n / 5);
    }
    let broker = Broker::start();
    let (mut p1, mut p8, mut rx, mut base) = (vec![], vec![], vec![], vec![]);
    rt.block_on(async {
        for _ in 0..runs {
            p1.push(publish_rate(&broker.addr, 1, n).await);
            p8.push(publish_rate(&broker.addr, 8, n).await);
            rx.push(receive_rate(&broker.addr, n, false).await);
            base.push(receive_rate(&broker.addr, n, true).await);
        }
    });
    println!("mphub-client, {n} messages of ~80 bytes, {runs} runs, medians (min–max)");
    show("publish, 1 task (routed to 1 raw subscriber)", p1);
    show("publish, 8 tasks on one Client", p8);
    let r = show("receive, one Subscription (8 raw publishers)", rx);
    let b = show("baseline: the same with a raw subscriber", base);
    println!("receive / baseline: {:.2}", r / b);
}

#[cfg(not(feature = "tls"))]
mod tls {
    pub fn compare(_: &tokio::runtime::Runtime, _: usize, _: u64) {
        eprintln!("--tls needs the feature: cargo bench -p mphub-client --features tls --bench throughput -- --tls");
        std::process::exit(2);
    }
}

#[cfg(feature = "tls")]
mod tls {
    //! Delivered messages/s, 1 publisher to 10 subscribers, over TLS against plain TCP.

    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;
    use std::time::Instant;

    use mphub_client::rustls::pki_types::pem::PemObject;
    use mphub_client::rustls::pki_types::CertificateDer;
    use mphub_client::rustls::{ClientConfig, RootCertStore};
    use mphub_client::{Client, ConnectOptions};

    use super::{median, Broker, PAYLOAD};

    const FANOUT: usize = 10;

    /// A CA and a certificate for 127.0.0.1, made with openssl in a fresh directory.
    fn certificates() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mphub-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sh = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                  -keyout ca.key -out ca.pem -days 1 -subj /CN=ca && \
                  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                  -keyout server.key -out server.csr -subj /CN=localhost && \
                  printf 'subjectAltName=IP:127.0.0.1' > server.ext && \
                  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 1 \
                  -days 1 -extfile server.ext -out server.pem";
        let ok = Command::new("sh")
            .args(["-c", sh])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        dir
    }

    fn client_config(dir: &Path) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
            .unwrap();
        Arc::new(
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Delivered messages/s: `n` publishes, each to `FANOUT` subscribers.
    async fn fanout_rate(addr: &str, opts: ConnectOptions, n: u64) -> f64 {
        let opts = opts.max_pending(n as usize + 1);
        let mut done = Vec::new();
        let mut subs = Vec::new();
        for _ in 0..FANOUT {
            let c = Client::connect(addr, opts.clone()).await.unwrap();
            let mut sub = c.subscribe("bench.fan").await.unwrap();
            c.flush().await.unwrap();
            done.push(tokio::spawn(async move {
                for _ in 0..n {
                    sub.next().await.unwrap();
                }
            }));
            subs.push(c);
        }
        let publisher = Client::connect(addr, opts).await.unwrap();
        let t = Instant::now();
        for i in 0..n {
            publisher.publish("bench.fan", &(i, PAYLOAD)).await.unwrap();
        }
        publisher.flush().await.unwrap();
        for d in done {
            d.await.unwrap();
        }
        let rate = (n as usize * FANOUT) as f64 / t.elapsed().as_secs_f64();
        publisher.close().await.unwrap();
        for c in subs {
            c.close().await.unwrap();
        }
        rate
    }

    pub fn compare(rt: &tokio::runtime::Runtime, runs: usize, n: u64) {
        let dir = certificates();
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let broker = Broker::start_with(&[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "tls://127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ]);
        let (plain_addr, tls_addr) = (&broker.addrs[0], &broker.addrs[1]);
        let config = client_config(&dir);
        let (mut plain, mut tls) = (vec![], vec![]);
        rt.block_on(async {
            for _ in 0..runs {
                plain.push(fanout_rate(plain_addr, ConnectOptions::new(), n).await);
                tls.push(fanout_rate(tls_addr, ConnectOptions::new().tls(config.clone()), n).await);
            }
        });
        println!(
            "mphub-client, 1 publisher -> {FANOUT} subscribers, {n} publishes of ~80 bytes, \
             {runs} interleaved runs, delivered messages/s, medians (min–max)"
        );
        let (p, plo, phi) = median(plain);
        let (t, tlo, thi) = median(tls);
        println!(
            "plain TCP  {:>8.0} k/s ({:.0}–{:.0} k)",
            p / 1e3,
            plo / 1e3,
            phi / 1e3
        );
        println!(
            "TLS        {:>8.0} k/s ({:.0}–{:.0} k)",
            t / 1e3,
            tlo / 1e3,
            thi / 1e3
        );
        println!(
            "TLS / plain: {:.2} (TLS costs {:.0}% of plain's rate)",
            t / p,
            (1.0 - t / p) * 100.0
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
