//! What one measurement does against a running server: throughput of a fan-out or fan-in
//! shape, one-way latency at a fixed rate, memory per idle connection, and hot topics with
//! or without subscription churn beside them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::servers::{Addr, Server};
use crate::wire::Conn;

/// Bytes written per system call by a publisher, as a buffering client would.
const BATCH: usize = 64 << 10;

/// Client keys: publishers use the first, subscribers the second (mphub users).
pub type Keys = Option<Arc<(Vec<u8>, Vec<u8>)>>;

async fn open(s: &Addr, keys: &Keys, publisher: bool) -> Conn {
    let key = keys
        .as_ref()
        .map(|k| if publisher { &k.0[..] } else { &k.1[..] });
    Conn::open(&s.addr, s.proto, key).await
}

/// Writes `per_pub` copies of `msg` in batches of whole messages, then keeps the connection
/// open (reading whatever comes) until aborted.
async fn publish(mut c: Conn, msg: Arc<Vec<u8>>, per_pub: u64) {
    let per_batch = (BATCH / msg.len()).max(1) as u64;
    let batch: Vec<u8> = msg.repeat(per_batch as usize);
    let mut sent = 0;
    while sent < per_pub {
        let k = per_batch.min(per_pub - sent);
        c.s.write_all(&batch[..k as usize * msg.len()])
            .await
            .unwrap();
        sent += k;
    }
    c.drain().await;
}

/// What a throughput run measured: messages delivered, the seconds they took, and the
/// server's CPU seconds over the same time (setting up connections not included).
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub delivered: u64,
    pub secs: f64,
    pub cpu: f64,
    /// Subscription churn achieved, operations per second (hot-topic runs).
    pub churn: f64,
}

/// `pubs` publishers → `subs` subscribers on one topic, `per_pub` messages each.
pub async fn throughput(
    s: &Addr,
    keys: &Keys,
    pubs: usize,
    subs: usize,
    size: usize,
    per_pub: u64,
) -> Run {
    let msg = Arc::new(s.proto.publish("bench.t", &vec![7u8; size]));
    let mut readers = Vec::new();
    for i in 0..subs {
        let mut c = open(s, keys, false).await;
        c.subscribe_all(&["bench.t".to_string()], i as u64 + 1)
            .await;
        readers.push(c);
    }
    let mut writers = Vec::new();
    for _ in 0..pubs {
        writers.push(open(s, keys, true).await);
    }
    let total = per_pub * pubs as u64;
    let cpu0 = s.cpu_seconds();
    let start = Instant::now();
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|mut r| tokio::spawn(async move { r.read(total, |_| {}).await }))
        .collect();
    let pubs: Vec<_> = writers
        .into_iter()
        .map(|w| tokio::spawn(publish(w, msg.clone(), per_pub)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = s.cpu_seconds() - cpu0;
    for p in pubs {
        p.abort();
    }
    Run {
        delivered: total * subs as u64,
        secs,
        cpu,
        churn: 0.0,
    }
}

/// One-way latency percentiles p50, p99, p99.9 (µs) at `rate` messages/s of 64 bytes, 1 → 1:
/// every millisecond the publisher sends `rate / 1000` messages stamped with the time.
pub async fn latency(s: &Addr, keys: &Keys, rate: u64, seconds: u64) -> [f64; 3] {
    let mut sub = open(s, keys, false).await;
    sub.subscribe_all(&["lat.t".to_string()], 1).await;
    let mut publ = open(s, keys, true).await;
    let base = Instant::now();
    let total = rate * seconds;
    let proto = s.proto;
    let reader = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total as usize);
        sub.read(total, |msg| {
            let sent = proto.tail8(msg);
            lat.push(base.elapsed().as_nanos() as u64 - sent);
        })
        .await;
        lat
    });
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_tick = rate / 1000;
    let mut sent = 0;
    let mut payload = [0u8; 64];
    while sent < total {
        interval.tick().await;
        let mut batch = Vec::new();
        for _ in 0..per_tick.min(total - sent) {
            let now = base.elapsed().as_nanos() as u64;
            payload[56..].copy_from_slice(&now.to_le_bytes());
            batch.extend_from_slice(&proto.publish("lat.t", &payload));
            sent += 1;
        }
        publ.s.write_all(&batch).await.unwrap();
    }
    let mut lat = reader.await.unwrap();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    [p(0.5), p(0.99), p(0.999)]
}

/// RSS per idle (connected and subscribed) connection, in KiB.
pub async fn idle_rss(server: &Server, keys: &Keys, n: usize) -> f64 {
    let s = &server.at();
    let before = server.rss_kib();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = open(s, keys, false).await;
        c.subscribe_all(&[format!("idle.{i}")], 1).await;
        conns.push(c);
    }
    let after = server.rss_kib();
    drop(conns);
    after.saturating_sub(before) as f64 / n as f64
}

/// A small, fast generator for inbox names (no cryptographic need).
struct XorShift(u64);

impl XorShift {
    fn token(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..22)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ALPHABET[(self.0 % ALPHABET.len() as u64) as usize] as char
            })
            .collect()
    }
}

/// One connection subscribing and unsubscribing request inboxes (`_INBOX.<22 chars>.>`),
/// `ops` operations per second in all (each inbox is one subscribe and one unsubscribe), until
/// `stop`; returns the operations sent.
async fn churn(s: &Addr, keys: &Keys, ops: u64, stop: Arc<AtomicBool>) -> u64 {
    let c = open(s, keys, false).await;
    let proto = s.proto;
    let (mut rd, mut wr) = c.s.into_split();
    // The replies (`$ok` on mphub) are read and thrown away.
    let sink = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while rd.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut sent, mut sid, start) = (0u64, 0u64, Instant::now());
    while !stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let due = (start.elapsed().as_secs_f64() * ops as f64) as u64;
        let mut out = Vec::new();
        while sent + 2 <= due {
            let inbox = format!("_INBOX.{}.>", rng.token());
            sid += 1;
            out.extend_from_slice(&proto.subscribe(&inbox, sid));
            out.extend_from_slice(&proto.unsubscribe(&inbox, sid));
            sent += 2;
        }
        wr.write_all(&out).await.unwrap();
    }
    sink.abort();
    sent
}

/// One publisher cycling over `topics` topics (`hot.<i>`) to one subscriber holding a
/// subscription to each, `total` messages, with `churn_ops` subscribe/unsubscribe operations
/// per second beside them (0: none).
pub async fn hot(s: &Addr, keys: &Keys, topics: usize, total: u64, churn_ops: u64) -> Run {
    let names: Vec<String> = (0..topics).map(|i| format!("hot.{i}")).collect();
    let mut sub = open(s, keys, false).await;
    sub.subscribe_all(&names, 1).await;
    // One cycle over every topic, and where each message ends in it.
    let mut cycle = Vec::new();
    let mut ends = Vec::new();
    for n in &names {
        cycle.extend_from_slice(&s.proto.publish(n, &[7u8; 64]));
        ends.push(cycle.len());
    }
    let mut publ = open(s, keys, true).await;
    let stop = Arc::new(AtomicBool::new(false));
    let churner = (churn_ops > 0).then(|| {
        let (s2, k2, st) = (s.clone(), keys.clone(), stop.clone());
        tokio::spawn(async move { churn(&s2, &k2, churn_ops, st).await })
    });
    let cpu0 = s.cpu_seconds();
    let start = Instant::now();
    let reader = tokio::spawn(async move { sub.read(total, |_| {}).await });
    let writer = tokio::spawn(async move {
        let (mut i, mut sent) = (0usize, 0u64);
        while sent < total {
            let from = if i == 0 { 0 } else { ends[i - 1] };
            let mut j = i;
            while j < ends.len() && ends[j] - from <= BATCH && sent + ((j - i) as u64) < total {
                j += 1;
            }
            publ.s.write_all(&cycle[from..ends[j - 1]]).await.unwrap();
            sent += (j - i) as u64;
            i = if j == ends.len() { 0 } else { j };
        }
        publ.drain().await;
    });
    reader.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let cpu = s.cpu_seconds() - cpu0;
    writer.abort();
    stop.store(true, Ordering::Relaxed);
    let ops = match churner {
        Some(t) => t.await.unwrap() as f64 / secs,
        None => 0.0,
    };
    Run {
        delivered: total,
        secs,
        cpu,
        churn: ops,
    }
}
