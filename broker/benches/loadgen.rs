//! The load generator: drives the real `mphub` binary over loopback and prints a table.
//!
//!     cargo bench -p mphub-broker --bench loadgen             # full run
//!     cargo bench -p mphub-broker --bench loadgen -- --quick  # a short one
//!     cargo bench -p mphub-broker --bench loadgen -- --quick --runs 3 --metrics-off
//!
//! It builds nothing itself: it runs `target/release/mphub` (or `$MPHUB_BIN`), without an authkey
//! on loopback, with a large outbound limit so throughput runs measure routing, not drops.
//! Every figure is the median of `--runs` runs (default 3), with min and max beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mphub_protocol::frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start(metrics: bool) -> Broker {
        let bin = std::env::var("MPHUB_BIN").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/mphub").to_string()
        });
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--outbound-limit", "2GiB"])
            .args(["--metrics", if metrics { "127.0.0.1:0" } else { "off" }])
            .args([
                "--max-connections",
                "20000",
                "--log-level",
                "warn,mphub_broker=info",
            ])
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
        // Keep draining the log so the broker never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Broker { child, addr }
    }

    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pickle `(topic, bytes)` as protocol 4 writes it, payload `size` bytes.
fn publish_frame(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x80, 4, 0x8c, topic.len() as u8];
    body.extend_from_slice(topic.as_bytes());
    body.push(b'B');
    body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    body.extend_from_slice(payload);
    body.extend_from_slice(&[0x86, b'.']);
    frame::encode(&body).to_vec()
}

fn control(op: &str, arg: &str) -> Vec<u8> {
    let mut body = vec![0x80, 4, 0x8c, op.len() as u8];
    body.extend_from_slice(op.as_bytes());
    body.push(0x8c);
    body.push(arg.len() as u8);
    body.extend_from_slice(arg.as_bytes());
    body.extend_from_slice(&[0x86, b'.']);
    frame::encode(&body).to_vec()
}

async fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads frames until `n` have arrived; calls `each` with every body.
async fn read_frames(s: &mut TcpStream, n: u64, mut each: impl FnMut(&[u8])) {
    let mut buf = BytesMut::with_capacity(1 << 18);
    let mut got = 0;
    while got < n {
        while let Some(f) = frame::decode(&mut buf, 1 << 30).unwrap() {
            each(f.body());
            got += 1;
            if got == n {
                return;
            }
        }
        buf.reserve(1 << 16);
        if s.read_buf(&mut buf).await.unwrap() == 0 {
            panic!("broker closed after {got} of {n}");
        }
    }
}

async fn subscribe(addr: &str, pattern: &str) -> TcpStream {
    let mut s = connect(addr).await;
    s.write_all(&control("$sub", pattern)).await.unwrap();
    read_frames(&mut s, 1, |_| {}).await;
    s
}

/// Delivered messages per second for `pubs` publishers → `subs` subscribers.
async fn throughput(addr: &str, pubs: usize, subs: usize, size: usize, per_pub: u64) -> f64 {
    let frame = Arc::new(publish_frame("bench.t", &vec![7u8; size]));
    let mut readers = Vec::new();
    for _ in 0..subs {
        readers.push(subscribe(addr, "bench.t").await);
    }
    let mut writers = Vec::new();
    for _ in 0..pubs {
        writers.push(connect(addr).await);
    }
    let total = per_pub * pubs as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut r in readers {
        tasks.push(tokio::spawn(async move {
            read_frames(&mut r, total, |_| {}).await
        }));
    }
    for mut w in writers {
        let frame = frame.clone();
        tokio::spawn(async move {
            // Write in batches of whole frames, as a buffering client would.
            let per_batch = (64 * 1024 / frame.len()).max(1) as u64;
            let batch: Vec<u8> = frame.repeat(per_batch as usize);
            let mut sent = 0;
            while sent < per_pub {
                let k = per_batch.min(per_pub - sent);
                w.write_all(&batch[..k as usize * frame.len()])
                    .await
                    .unwrap();
                sent += k;
            }
            // Keep the connection open until the readers are done.
            let mut sink = [0u8; 64];
            let _ = w.read(&mut sink).await;
        });
    }
    for t in tasks {
        t.await.unwrap();
    }
    (total * subs as u64) as f64 / start.elapsed().as_secs_f64()
}

/// One-way latency percentiles (µs) at a fixed rate, 1 → 1.
async fn latency(addr: &str, rate: u64, seconds: u64) -> (f64, f64, f64) {
    let mut sub = subscribe(addr, "lat.t").await;
    let mut publ = connect(addr).await;
    let base = Instant::now();
    let total = rate * seconds;
    let reader = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total as usize);
        read_frames(&mut sub, total, |body| {
            let at = body.len() - 2 - 8;
            let sent = u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
            lat.push(base.elapsed().as_nanos() as u64 - sent);
        })
        .await;
        lat
    });
    let tick = Duration::from_millis(1);
    let per_tick = rate / 1000;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    while sent < total {
        interval.tick().await;
        let mut batch = Vec::new();
        for _ in 0..per_tick.min(total - sent) {
            let now = base.elapsed().as_nanos() as u64;
            batch.extend_from_slice(&publish_frame("lat.t", &now.to_le_bytes()));
            sent += 1;
        }
        publ.write_all(&batch).await.unwrap();
    }
    let mut lat = reader.await.unwrap();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    (p(0.5), p(0.99), p(0.999))
}

/// RSS per idle (connected and subscribed) connection, in KiB.
async fn idle_rss(b: &Broker, addr: &str, n: usize) -> f64 {
    let before = b.rss_kib();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        conns.push(subscribe(addr, &format!("idle.{i}")).await);
    }
    let after = b.rss_kib();
    drop(conns);
    (after.saturating_sub(before)) as f64 / n as f64
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let scale = if quick { 0.2 } else { 1.0 };
    // `--metrics-off` runs the broker with `--metrics off` (no endpoint, no per-publish timing).
    let metrics = !args.iter().any(|a| a == "--metrics-off");
    println!("broker metrics: {}", if metrics { "on" } else { "off" });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| workload | median | min | max | broker CPU s per M delivered |");
    println!("|---|---|---|---|---|");
    let shapes: &[(&str, usize, usize, usize, u64)] = &[
        ("1 → 1, 64 B", 1, 1, 64, 2_000_000),
        ("1 → 10, 64 B", 1, 10, 64, 300_000),
        ("1 → 100, 64 B", 1, 100, 64, 40_000),
        ("1 → 1, 4 KiB", 1, 1, 4096, 300_000),
        ("1 → 10, 4 KiB", 1, 10, 4096, 60_000),
        ("1 → 100, 4 KiB", 1, 100, 4096, 8_000),
        ("10 → 1, 64 B", 10, 1, 64, 200_000),
    ];
    for &(name, pubs, subs, size, per_pub) in shapes {
        let per_pub = ((per_pub as f64 * scale) as u64).max(1000);
        let mut rates = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..runs {
            let b = Broker::start(metrics);
            let c0 = b.cpu_seconds();
            let rate = rt.block_on(throughput(&b.addr, pubs, subs, size, per_pub));
            let delivered = (per_pub * pubs as u64 * subs as u64) as f64;
            cpu.push((b.cpu_seconds() - c0) / delivered * 1e6);
            rates.push(rate);
        }
        let (m, lo, hi) = stats(rates);
        let (c, _, _) = stats(cpu);
        println!("| {name} delivered msgs/s | {m:.0} | {lo:.0} | {hi:.0} | {c:.2} |");
    }
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut p999 = Vec::new();
    for _ in 0..runs {
        let b = Broker::start(metrics);
        let (a, c, d) = rt.block_on(latency(&b.addr, 20_000, if quick { 1 } else { 3 }));
        p50.push(a);
        p99.push(c);
        p999.push(d);
    }
    for (name, v) in [("p50", p50), ("p99", p99), ("p99.9", p999)] {
        let (m, lo, hi) = stats(v);
        println!("| latency 1 → 1 at 20,000 msgs/s, {name} µs | {m:.0} | {lo:.0} | {hi:.0} | |");
    }
    let n = if quick { 2_000 } else { 10_000 };
    let mut per = Vec::new();
    for _ in 0..runs {
        let b = Broker::start(metrics);
        per.push(rt.block_on(idle_rss(&b, &b.addr, n)));
    }
    let (m, lo, hi) = stats(per);
    println!("| RSS per idle subscribed connection ({n}), KiB | {m:.1} | {lo:.1} | {hi:.1} | |");
}
