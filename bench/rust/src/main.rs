//! mphub vs nats-server with Rust clients of the same design: one connection per publisher and
//! per subscriber, 64-byte payloads carrying a send timestamp, every subscriber counting.
//!
//!     cargo run --release --manifest-path bench/rust/Cargo.toml -- [--quick] [--runs N] [--json]
//!
//! Workloads: fan-out 1 -> 100 and fan-in 100 -> 1. For each: delivered msgs/s (all receipts /
//! time from the first publish to the last receipt), p99 latency of every 16th message under
//! that load, and the server's CPU seconds per million delivered (utime+stime from /proc).
//!
//!     cargo run --release --manifest-path bench/rust/Cargo.toml -- --cluster [--quick] [--runs N]
//!
//! measures mphub's `--cluster` instead: the same Rust clients with publishers on one node and
//! subscribers on another (both on one nats-server), against all of them on one node; CPU is
//! that of every server process involved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

struct Server {
    child: Child,
    addr: String,
    /// host:port of /metrics, when the server serves it.
    metrics: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The `mphub_cluster_*` series that are not zero, from /metrics.
    fn cluster_counts(&self) -> Vec<String> {
        use std::io::{Read, Write};
        let Some(addr) = &self.metrics else {
            return Vec::new();
        };
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        text.lines()
            .filter(|l| l.starts_with("mphub_cluster_") && !l.ends_with(" 0"))
            .map(str::to_string)
            .collect()
    }

    fn cpu(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    }
}

fn mphub() -> Server {
    mphub_with(&[])
}

fn mphub_with(extra: &[&str]) -> Server {
    let bin = std::env::var("MPHUB_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/mphub").into()
    });
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--outbound-limit", "2GiB"])
        .args([
            "--log-level",
            "warn,mphub_broker=info",
            "--max-connections",
            "20000",
        ])
        .args(if extra.is_empty() {
            &["--metrics", "off"][..]
        } else {
            &["--metrics", "127.0.0.1:0"][..]
        })
        .args(extra)
        .env_remove("MPHUB_AUTHKEY")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut addr, mut metrics) = (None, None);
    while addr.is_none() || (metrics.is_none() && !extra.is_empty()) {
        let l = lines.next().expect("mphub exited").unwrap();
        if let Some(rest) = l.split("mphub listening on ").nth(1) {
            addr = Some(rest.trim().to_string());
        }
        if let Some(rest) = l.split("mphub metrics on http://").nth(1) {
            metrics = rest.split('/').next().map(str::to_string);
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        addr: addr.unwrap(),
        metrics,
    }
}

fn nats() -> Server {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // As mphub runs with a 2 GiB outbound limit, let nats-server queue as much per client
    // (its default of 64 MiB disconnects these subscribers as slow consumers).
    let conf = std::env::temp_dir().join(format!("mphub-vs-nats-{}.conf", std::process::id()));
    std::fs::write(&conf, "max_pending: 2147483647\nwrite_deadline: \"60s\"\n").unwrap();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (apt-get install nats-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        metrics: None,
    }
}

/// 64 bytes: nanoseconds since `epoch`, then padding.
fn payload(epoch: Instant) -> [u8; 64] {
    let mut p = [7u8; 64];
    p[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
    p
}

/// The same 64 bytes as a pickle (`bytes` object), for mphub.
fn pickled(p: &[u8; 64]) -> Vec<u8> {
    let mut v = vec![0x80, 3, b'C', 64];
    v.extend_from_slice(p);
    v.push(b'.');
    v
}

#[derive(Default)]
struct Tally {
    got: AtomicU64,
    last_ns: AtomicU64,
    lat: std::sync::Mutex<Vec<u64>>,
}

impl Tally {
    fn record(&self, epoch: Instant, sent_ns: u64, seq: u64) {
        let now = epoch.elapsed().as_nanos() as u64;
        self.got.fetch_add(1, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        if seq % 16 == 0 {
            self.lat.lock().unwrap().push(now.saturating_sub(sent_ns));
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Mphub,
    Nats,
}

async fn run(
    kind: Kind,
    server: &Server,
    pubs: usize,
    subs: usize,
    per_pub: u64,
) -> (f64, f64, f64, u64) {
    run_on(
        kind,
        &[server],
        &server.addr,
        &server.addr,
        pubs,
        subs,
        per_pub,
    )
    .await
}

/// One run with publishers on `pub_addr` and subscribers on `sub_addr`, charging the CPU of
/// every process in `servers`.
async fn run_on(
    kind: Kind,
    servers: &[&Server],
    pub_addr: &str,
    sub_addr: &str,
    pubs: usize,
    subs: usize,
    per_pub: u64,
) -> (f64, f64, f64, u64) {
    let cpu_now = || servers.iter().map(|s| s.cpu()).sum::<f64>();
    let topic = format!("bench.{pubs}x{subs}");
    // Across nodes, interest reaches the publisher's node through NATS asynchronously: hold it
    // with a probe subscriber that has seen a message from there before anyone counts.
    let probe_client = if pub_addr != sub_addr {
        Some(probe(pub_addr, sub_addr, &topic).await)
    } else {
        None
    };
    let epoch = Instant::now();
    let tally = Arc::new(Tally::default());
    let want = per_pub * pubs as u64 * subs as u64;
    let mut tasks = Vec::new();
    // Subscribers first, each on its own connection.
    for _ in 0..subs {
        let t = tally.clone();
        match kind {
            Kind::Mphub => {
                let c = mphub_client::Client::connect(
                    sub_addr,
                    mphub_client::ConnectOptions::new().max_pending(1 << 24),
                )
                .await
                .unwrap();
                let mut s = c.subscribe(&topic).await.unwrap();
                tasks.push(tokio::spawn(async move {
                    let _keep = c;
                    let mut seq = 0u64;
                    while let Some(m) = s.next().await {
                        let body = m.pickle();
                        let p = &body[body.len() - 66..body.len() - 2];
                        t.record(epoch, u64::from_le_bytes(p[..8].try_into().unwrap()), seq);
                        seq += 1;
                    }
                }));
            }
            Kind::Nats => {
                let c = async_nats::ConnectOptions::new()
                    .subscription_capacity(1 << 20)
                    .connect(format!("nats://{sub_addr}"))
                    .await
                    .unwrap();
                let mut s = c.subscribe(topic.clone()).await.unwrap();
                c.flush().await.unwrap();
                tasks.push(tokio::spawn(async move {
                    let _keep = c;
                    let mut seq = 0u64;
                    while let Some(m) = s.next().await {
                        t.record(
                            epoch,
                            u64::from_le_bytes(m.payload[..8].try_into().unwrap()),
                            seq,
                        );
                        seq += 1;
                    }
                }));
            }
        }
    }
    drop(probe_client); // the subscribers hold the interest now
    let cpu0 = cpu_now();
    let start = epoch.elapsed().as_nanos() as u64;
    let mut senders = Vec::new();
    for _ in 0..pubs {
        let addr = pub_addr.to_string();
        let topic = topic.clone();
        senders.push(tokio::spawn(async move {
            match kind {
                Kind::Mphub => {
                    let c =
                        mphub_client::Client::connect(&addr, mphub_client::ConnectOptions::new())
                            .await
                            .unwrap();
                    for _ in 0..per_pub {
                        c.publish_pickled(&topic, pickled(&payload(epoch)))
                            .await
                            .unwrap();
                    }
                    c.flush().await.unwrap();
                }
                Kind::Nats => {
                    let c = async_nats::connect(format!("nats://{addr}")).await.unwrap();
                    for _ in 0..per_pub {
                        c.publish(
                            topic.clone(),
                            bytes::Bytes::copy_from_slice(&payload(epoch)),
                        )
                        .await
                        .unwrap();
                    }
                    c.flush().await.unwrap();
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while tally.got.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = tally.got.load(Ordering::Relaxed);
    let secs = (tally.last_ns.load(Ordering::Relaxed).saturating_sub(start)) as f64 / 1e9;
    let cpu = cpu_now() - cpu0;
    for t in tasks {
        t.abort();
    }
    let mut lat = tally.lat.lock().unwrap().clone();
    lat.sort_unstable();
    let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or(0) as f64 / 1e3;
    if got < want {
        eprintln!("warning: {got} of {want} delivered");
    }
    (
        got as f64 / secs,
        p99,
        cpu / got.max(1) as f64 * 1e6,
        want - got,
    )
}

/// A subscriber on `sub_addr` that has received a probe published on `pub_addr`, and every
/// probe (so none is still in flight towards the subscribers that come next).
async fn probe(pub_addr: &str, sub_addr: &str, topic: &str) -> mphub_client::Client {
    let opts = mphub_client::ConnectOptions::new;
    let sub = mphub_client::Client::connect(sub_addr, opts())
        .await
        .unwrap();
    let mut s = sub.subscribe(topic).await.unwrap();
    let publ = mphub_client::Client::connect(pub_addr, opts())
        .await
        .unwrap();
    let probe = pickled(&[1u8; 64]);
    let last = [2u8; 64];
    loop {
        publ.publish_pickled(topic, probe.clone()).await.unwrap();
        publ.flush().await.unwrap();
        if tokio::time::timeout(Duration::from_millis(50), s.next())
            .await
            .is_ok()
        {
            break;
        }
    }
    publ.publish_pickled(topic, pickled(&last)).await.unwrap();
    while let Some(m) = s.next().await {
        let body = m.pickle();
        // The payload stands before the tuple's last two opcodes (TUPLE2, STOP).
        if body.len() >= 66 && body[body.len() - 66..body.len() - 2] == last {
            break;
        }
    }
    sub
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(3);
    let fan = if quick { 5_000 } else { 50_000 };
    if args.iter().any(|a| a == "--cluster") {
        return cluster(runs, if quick { 20_000 } else { 200_000 }).await;
    }
    let workloads = [
        ("fan-out 1 → 100, 64 B", 1usize, 100usize, fan),
        ("fan-in 100 → 1, 64 B", 100, 1, fan / 10),
    ];
    let servers = [mphub(), nats()];
    let mut out = Vec::new();
    for (name, pubs, subs, per) in workloads {
        let mut res: [(Vec<f64>, Vec<f64>, Vec<f64>, u64); 2] = Default::default();
        for _ in 0..runs {
            for (i, kind) in [Kind::Mphub, Kind::Nats].into_iter().enumerate() {
                let (r, p, c, lost) = run(kind, &servers[i], pubs, subs, per).await;
                res[i].3 += lost;
                eprintln!(
                    "{name} {}: {r:.0} msgs/s p99 {p:.0} µs cpu {c:.2} s/M",
                    if i == 0 { "mphub" } else { "nats" }
                );
                res[i].0.push(r);
                res[i].1.push(p);
                res[i].2.push(c);
            }
        }
        let side = |r: &(Vec<f64>, Vec<f64>, Vec<f64>, u64)| serde_json::json!({"rate": r.0, "p99": r.1, "cpu_per_m": r.2, "lost": r.3});
        out.push(serde_json::json!({"name": name, "mphub": side(&res[0]), "nats": side(&res[1])}));
    }
    let note = format!(
        "Rust clients on both sides (mphub-client, async-nats {}), one connection per publisher and per subscriber, {runs} runs; p99 is of every 16th message's one-way latency while the run is saturated, so it measures queueing under full load.",
        "0.51"
    );
    let doc = serde_json::json!({"note": note, "workloads": out});
    if json {
        println!("{doc}");
    } else {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
    }
}

/// `--cluster`: the same clients on one node, and across two nodes joined by one nats-server.
async fn cluster(runs: usize, n: u64) {
    let nats = nats();
    let url = format!("nats://{}", nats.addr);
    let one = mphub();
    let (a, b) = (
        mphub_with(&["--cluster", &url]),
        mphub_with(&["--cluster", &url]),
    );
    let workloads = [
        ("1 → 1, 64 B", 1usize, 1usize, n),
        ("1 → 10, 64 B", 1, 10, n / 10),
        ("10 → 1, 64 B", 10, 1, n / 10),
    ];
    println!("| workload | one node msgs/s | cross-node msgs/s | ratio | p99 one / cross µs | CPU s per M one / cross |");
    println!("|---|---|---|---|---|---|");
    for (name, pubs, subs, per) in workloads {
        let (mut one_r, mut cross_r) = (Vec::new(), Vec::new());
        let (mut one_p, mut cross_p, mut one_c, mut cross_c) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (r, p, c, lost) =
                run_on(Kind::Mphub, &[&one], &one.addr, &one.addr, pubs, subs, per).await;
            eprintln!("{name} one node: {r:.0} msgs/s p99 {p:.0} µs cpu {c:.2} s/M lost {lost}");
            one_r.push(r);
            one_p.push(p);
            one_c.push(c);
            let (r, p, c, lost) = run_on(
                Kind::Mphub,
                &[&a, &b, &nats],
                &a.addr,
                &b.addr,
                pubs,
                subs,
                per,
            )
            .await;
            eprintln!("{name} cross-node: {r:.0} msgs/s p99 {p:.0} µs cpu {c:.2} s/M lost {lost}");
            cross_r.push(r);
            cross_p.push(p);
            cross_c.push(c);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|x, y| x.total_cmp(y));
            v[v.len() / 2]
        };
        let (o, x) = (med(&mut one_r), med(&mut cross_r));
        for (node, s) in [("A", &a), ("B", &b)] {
            eprintln!("node {node}: {}", s.cluster_counts().join(", "));
        }
        println!(
            "| {name} | {o:.0} | {x:.0} | {:.2}x | {:.0} / {:.0} | {:.2} / {:.2} |",
            x / o,
            med(&mut one_p),
            med(&mut cross_p),
            med(&mut one_c),
            med(&mut cross_c)
        );
    }
}
