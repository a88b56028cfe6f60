//! mphub-client throughput against the real broker binary, beside the broker's own load
//! generator (raw pre-encoded frames) measured in the same run.
//!
//!     cargo bench -p mphub-client --bench throughput [-- --quick] [--runs N]
//!
//! Runs `target/release/mphub` (or `$MPHUB_BIN`) on loopback without an authkey. Payload: a
//! tuple of an int and a 48-character string (frames of about 80 bytes). Every figure is the
//! median of `--runs` runs with min and max.
//! - publish, 1 task / 8 tasks: messages/s until a `flush` returns (the broker routed all),
//!   one subscriber present (a raw socket that only counts bytes).
//! - receive: one `Subscription` takes N messages that 8 raw connections publish; messages/s.
//! - baseline: the same 1 -> 1 delivery with raw pre-encoded frames on both ends (the load
//!   generator's method), so the client's own cost shows as the gap.

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
    addr: String,
}

impl Broker {
    fn start() -> Broker {
        let bin = std::env::var("MPHUB_BIN").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/mphub").to_string()
        });
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--outbound-limit", "2GiB"])
            .args(["--metrics", "off", "--log-level", "warn,mphub_broker=info"])
            .env_remove("MPHUB_AUTHKEY")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin}: {e} (cargo build --release -p mphub-broker)")
            });
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("mphub exited").unwrap();
            if let Some(rest) = line.split("mphub listening on ").nth(1) {
                break rest.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Broker { child, addr }
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
