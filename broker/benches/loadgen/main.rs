//! The load generator: drives servers over loopback with raw clients and prints Markdown
//! tables. One command per question:
//!
//!     cargo bench -p mphub-broker --bench loadgen -- --compare     # mphub against nats-server
//!     cargo bench -p mphub-broker --bench loadgen                  # mphub alone, more shapes
//!     cargo bench -p mphub-broker --bench loadgen -- --churn       # hot topics beside churn
//!     cargo bench -p mphub-broker --bench loadgen -- --users       # permission checks' cost
//!
//! Options: `--quick` (a fifth of the messages, 1 s of latency, 2,000 idle connections),
//! `--runs N` (default 3; medians with min–max), `--metrics-off` (mphub without its metrics
//! endpoint and per-publish timing), `--baseline [LABEL=]BIN` (another mphub binary measured in
//! the same runs, for before/after; repeatable), `--only TEXT` (workloads whose name contains TEXT),
//! `--perf DIR` (a `perf record -g` profile of the server per measurement, into DIR).
//!
//! It builds nothing itself: it runs `target/release/mphub` (or `$MPHUB_BIN`) and Debian's
//! `nats-server`. Runs are interleaved: each run measures every workload on every server (in
//! an order that rotates from run to run) before the next run starts, so a slow spell on this
//! shared machine lands on all of them. Every server gets a fresh process per measurement and
//! 1 GiB of queue per subscriber, so no run measures drops. CPU is the server's utime + stime
//! from `/proc/PID/stat` over the delivery (not the set-up), per delivered message.
//!
//! Latency is also measured through a plain relay (`relay.rs`: this binary again, copying the
//! publisher's bytes to the subscriber), in the same rotation: the floor this machine's loopback
//! and wake-ups set before any broker work. A second table gives it and what each server adds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod relay;
mod report;
mod servers;
mod users;
mod wire;
mod workloads;

use std::path::PathBuf;
use std::sync::Arc;

use report::{cell, num, ratio, stats};
use servers::{default_mphub, Profile, Server, Target};
use workloads::{Keys, Run};

/// One measurement's recipe.
#[derive(Debug, Clone)]
enum Work {
    /// `pubs` → `subs` on one topic, `size`-byte payloads, `per_pub` messages per publisher.
    Throughput {
        name: String,
        pubs: usize,
        subs: usize,
        size: usize,
        per_pub: u64,
    },
    /// 1 → 1 at a fixed rate for some seconds.
    Latency { rate: u64, secs: u64 },
    /// N idle subscribed connections.
    Idle { n: usize },
    /// One publisher over `topics` topics, `total` messages, `churn` sub/unsub ops/s beside.
    Hot {
        topics: usize,
        total: u64,
        churn: u64,
    },
}

impl Work {
    fn name(&self) -> String {
        match self {
            Work::Throughput { name, .. } => name.clone(),
            Work::Latency { rate, .. } => {
                format!("latency 1 → 1 at {} msgs/s", num(*rate as f64, 0))
            }
            Work::Idle { n } => format!(
                "RSS per idle subscribed connection ({}), KiB",
                num(*n as f64, 0)
            ),
            Work::Hot {
                topics, churn: 0, ..
            } => {
                format!("1 → 1 over {} hot topics, 64 B", num(*topics as f64, 0))
            }
            Work::Hot { topics, churn, .. } => format!(
                "1 → 1 over {} hot topics, 64 B, beside {} sub/unsub per s",
                num(*topics as f64, 0),
                num(*churn as f64, 0)
            ),
        }
    }
}

/// What one measurement gave.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rate: f64,
    cpu_ns: f64,
    churn: f64,
    lat: [f64; 3],
    rss: f64,
}

struct Opts {
    quick: bool,
    runs: usize,
    only: Option<String>,
    perf: Option<PathBuf>,
}

fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn throughput(name: &str, pubs: usize, subs: usize, size: usize, per_pub: u64, scale: f64) -> Work {
    Work::Throughput {
        name: name.into(),
        pubs,
        subs,
        size,
        per_pub: ((per_pub as f64 * scale) as u64).max(1000),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    if has("--relay") {
        // Started by `Server::start` for the latency floor, not by hand.
        relay::main();
        return;
    }
    wire::check_against_cpython();
    let quick = has("--quick");
    let opts = Opts {
        quick,
        runs: arg_value(&args, "--runs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
        only: arg_value(&args, "--only"),
        perf: arg_value(&args, "--perf").map(PathBuf::from),
    };
    let scale = if quick { 0.2 } else { 1.0 };
    let metrics = !has("--metrics-off");
    let this = default_mphub();
    let mut targets = vec![Target::mphub("mphub", &this, metrics)];
    let latency = Work::Latency {
        rate: 20_000,
        secs: if quick { 1 } else { 3 },
    };
    let idle = Work::Idle {
        n: if quick { 2_000 } else { 10_000 },
    };
    // Kept alive until the end: the users' key files live in it.
    let mut _scratch = None;
    let works: Vec<Work> = if has("--compare") {
        targets.push(Target::nats());
        vec![
            throughput("1 → 1, 64 B", 1, 1, 64, 2_000_000, scale),
            throughput("1 → 10, 64 B", 1, 10, 64, 300_000, scale),
            throughput("1 → 100, 64 B", 1, 100, 64, 40_000, scale),
            throughput("10 → 1, 64 B", 10, 1, 64, 200_000, scale),
            latency,
            idle,
        ]
    } else if has("--churn") {
        targets.push(Target::nats());
        let total = (2_000_000.0 * scale) as u64;
        let ops = arg_value(&args, "--churn-rate")
            .and_then(|v| v.parse().ok())
            .unwrap_or(65_000);
        vec![
            Work::Hot {
                topics: 10_000,
                total,
                churn: 0,
            },
            Work::Hot {
                topics: 10_000,
                total,
                churn: ops,
            },
        ]
    } else if has("--users") {
        let (scratch, restricted) = users::target(&this, metrics);
        _scratch = Some(scratch);
        targets = vec![restricted, Target::mphub("no users", &this, metrics)];
        vec![
            throughput("1 → 1, 64 B", 1, 1, 64, 2_000_000, scale),
            throughput("1 → 10, 64 B", 1, 10, 64, 300_000, scale),
            throughput("10 → 1, 64 B", 10, 1, 64, 200_000, scale),
        ]
    } else {
        vec![
            throughput("1 → 1, 64 B", 1, 1, 64, 2_000_000, scale),
            throughput("1 → 10, 64 B", 1, 10, 64, 300_000, scale),
            throughput("1 → 100, 64 B", 1, 100, 64, 40_000, scale),
            throughput("1 → 1, 4 KiB", 1, 1, 4096, 300_000, scale),
            throughput("1 → 10, 4 KiB", 1, 10, 4096, 60_000, scale),
            throughput("1 → 100, 4 KiB", 1, 100, 4096, 8_000, scale),
            throughput("10 → 1, 64 B", 10, 1, 64, 200_000, scale),
            latency,
            idle,
        ]
    };
    // `--baseline BIN` or `--baseline LABEL=BIN`, as often as wanted: other builds measured in
    // the same runs (before/after, or several steps of one change).
    for (i, a) in args.iter().enumerate() {
        if a != "--baseline" {
            continue;
        }
        let Some(v) = args.get(i + 1) else { continue };
        let (label, bin) = match v.split_once('=') {
            Some((l, b)) => (l.to_string(), b.to_string()),
            None => ("baseline".to_string(), v.clone()),
        };
        targets.push(Target::mphub(&label, &bin, metrics));
    }
    let works: Vec<Work> = works
        .into_iter()
        .filter(|w| {
            opts.only
                .as_ref()
                .is_none_or(|o| w.name().contains(o.as_str()))
        })
        .collect();
    run_all(&targets, &works, &opts, metrics);
}

/// Measures every work on every target, `runs` times interleaved; prints the table. Latency is
/// also measured through a plain relay (the floor: no broker at all) in the same rotation.
fn run_all(targets: &[Target], works: &[Work], opts: &Opts, metrics: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let relay = Target::relay();
    // samples[work][target]; floor[work]: the relay's, for latency works only.
    let mut samples = vec![vec![Vec::<Sample>::new(); targets.len()]; works.len()];
    let mut floor = vec![Vec::<Sample>::new(); works.len()];
    for run in 0..opts.runs {
        for (w, work) in works.iter().enumerate() {
            let n = targets.len() + usize::from(matches!(work, Work::Latency { .. }));
            for k in 0..n {
                let t = (k + run) % n;
                // One past the targets: the relay (latency works only).
                let is_floor = t == targets.len();
                let target = if is_floor { &relay } else { &targets[t] };
                let s = measure(&rt, target, work, opts, run);
                eprintln!(
                    "run {} {} {}: {}",
                    run + 1,
                    work.name(),
                    target.label,
                    describe(work, &s)
                );
                if is_floor {
                    floor[w].push(s);
                } else {
                    samples[w][t].push(s);
                }
            }
        }
    }
    print_table(targets, works, &samples, metrics);
    print_floor(targets, works, &samples, &floor);
}

/// The latency floor and what each server adds to it (median against median).
fn print_floor(
    targets: &[Target],
    works: &[Work],
    samples: &[Vec<Vec<Sample>>],
    floor: &[Vec<Sample>],
) {
    for (w, work) in works.iter().enumerate() {
        if floor[w].is_empty() {
            continue;
        }
        let median = |v: &[Sample], i: usize| stats(v.iter().map(|s| s.lat[i]).collect()).0;
        println!();
        println!(
            "| {}: the floor, and what each server adds | p50 µs | p99 µs | p99.9 µs |",
            work.name()
        );
        println!("|---|---|---|---|");
        let mut line = String::from("| plain relay (no broker: one process copying bytes) |");
        for i in 0..3 {
            let v: Vec<f64> = floor[w].iter().map(|s| s.lat[i]).collect();
            line += &format!(" {} |", cell(&v, 0));
        }
        println!("{line}");
        for (t, target) in targets.iter().enumerate() {
            let mut line = format!("| {} over the relay |", target.label);
            for i in 0..3 {
                // Rounded first (and -0 made 0), so that no cell reads `-0` or `+-0`.
                let added = (median(&samples[w][t], i) - median(&floor[w], i)).round() + 0.0;
                let sign = if added > 0.0 { "+" } else { "" };
                line += &format!(" {sign}{} |", num(added, 0));
            }
            println!("{line}");
        }
    }
}

fn describe(work: &Work, s: &Sample) -> String {
    match work {
        Work::Throughput { .. } | Work::Hot { .. } => format!(
            "{} msgs/s, {:.0} ns CPU per delivered{}",
            num(s.rate, 0),
            s.cpu_ns,
            if s.churn > 0.0 {
                format!(", churn {} ops/s", num(s.churn, 0))
            } else {
                String::new()
            }
        ),
        Work::Latency { .. } => format!(
            "p50/p99/p99.9 {:.0}/{:.0}/{:.0} µs",
            s.lat[0], s.lat[1], s.lat[2]
        ),
        Work::Idle { .. } => format!("{:.2} KiB", s.rss),
    }
}

fn measure(
    rt: &tokio::runtime::Runtime,
    t: &Target,
    work: &Work,
    opts: &Opts,
    run: usize,
) -> Sample {
    let server = Server::start(t);
    let at = server.at();
    let keys: Keys = t.keys.clone().map(Arc::new);
    let _profile = opts.perf.as_ref().map(|dir| {
        std::fs::create_dir_all(dir).unwrap();
        let name: String = format!("{}-{}-{}", t.label, work.name(), run + 1)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Profile::start(server.pid(), dir.join(format!("{name}.data")))
    });
    let of = |r: Run| Sample {
        rate: r.delivered as f64 / r.secs,
        cpu_ns: r.cpu * 1e9 / r.delivered as f64,
        churn: r.churn,
        ..Sample::default()
    };
    let _ = opts.quick;
    match *work {
        Work::Throughput {
            pubs,
            subs,
            size,
            per_pub,
            ..
        } => of(rt.block_on(workloads::throughput(&at, &keys, pubs, subs, size, per_pub))),
        Work::Latency { rate, secs } => Sample {
            lat: rt.block_on(workloads::latency(&at, &keys, rate, secs)),
            ..Sample::default()
        },
        Work::Idle { n } => Sample {
            rss: rt.block_on(workloads::idle_rss(&server, &keys, n)),
            ..Sample::default()
        },
        Work::Hot {
            topics,
            total,
            churn,
        } => of(rt.block_on(workloads::hot(&at, &keys, topics, total, churn))),
    }
}

fn print_table(targets: &[Target], works: &[Work], samples: &[Vec<Vec<Sample>>], metrics: bool) {
    println!(
        "mphub metrics: {}; medians of {} runs (min–max); CPU = server CPU ns per delivered message",
        if metrics { "on" } else { "off" },
        samples.first().and_then(|s| s.first()).map_or(0, Vec::len)
    );
    // A blank line: a Markdown table must not continue a paragraph.
    println!();
    let first = &targets[0].label;
    let mut head = String::from("| workload |");
    for t in targets {
        head += &format!(" {} |", t.label);
    }
    for t in &targets[1..] {
        head += &format!(" {first} / {} |", t.label);
    }
    println!("{head}");
    println!("{}", "|---".repeat(1 + targets.len() * 2 - 1) + "|");
    let row = |name: String, per: &dyn Fn(&Sample) -> f64, decimals: usize, w: usize| {
        let cols: Vec<Vec<f64>> = samples[w]
            .iter()
            .map(|v| v.iter().map(per).collect())
            .collect();
        let mut line = format!("| {name} |");
        for c in &cols {
            line += &format!(" {} |", cell(c, decimals));
        }
        for c in &cols[1..] {
            line += &format!(" {} |", ratio(&cols[0], c));
        }
        println!("{line}");
    };
    for (w, work) in works.iter().enumerate() {
        let name = work.name();
        match work {
            Work::Throughput { .. } | Work::Hot { .. } => {
                row(format!("{name}, delivered msgs/s"), &|s| s.rate, 0, w);
                row(format!("{name}, CPU ns per message"), &|s| s.cpu_ns, 0, w);
                if matches!(work, Work::Hot { churn, .. } if *churn > 0) {
                    row(format!("{name}, churn achieved, ops/s"), &|s| s.churn, 0, w);
                }
            }
            Work::Latency { .. } => {
                for (i, p) in ["p50", "p99", "p99.9"].iter().enumerate() {
                    row(format!("{name}, {p} µs"), &|s| s.lat[i], 0, w);
                }
            }
            Work::Idle { .. } => row(name, &|s| s.rss, 2, w),
        }
    }
    // Hot topics with churn against without, per server.
    let hot: Vec<usize> = (0..works.len())
        .filter(|&w| matches!(works[w], Work::Hot { .. }))
        .collect();
    if let [quiet, busy] = hot[..] {
        println!();
        println!("| churn's cost, per server | delivered rate with / without | CPU per message with / without |");
        println!("|---|---|---|");
        for (t, target) in targets.iter().enumerate() {
            let rate = |w: usize| samples[w][t].iter().map(|s| s.rate).collect::<Vec<_>>();
            let cpu = |w: usize| samples[w][t].iter().map(|s| s.cpu_ns).collect::<Vec<_>>();
            println!(
                "| {} | {} | {} |",
                target.label,
                ratio(&rate(busy), &rate(quiet)),
                ratio(&cpu(busy), &cpu(quiet))
            );
        }
    }
}
