"""mphub against what people use instead, on this machine, in one run; writes BENCHMARKS.md.

    python3 bench/compare.py [--quick] [--runs N]        (or: make bench-compare)

Systems (all on loopback, started and stopped here): mphub with stock clients, mphub with
client-py, a hand-written multiprocessing Listener hub, Redis (plain and pipelined), NATS, and
ZeroMQ through an XPUB/XSUB proxy. Runs are interleaved (A B C ... A B C ...). Needs
redis-server and nats-server (Debian), redis, nats-py, pyzmq and matplotlib (pip), and the
release mphub binary; `make bench-compare` builds it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from systems import SYSTEMS  # noqa: E402  (bench/ on the path first)

SMALL = {"sensor": "t-17", "v": 21.5, "seq": 123456}
BIG = b"x" * 4096
PROBE = "__probe__"


def spawn_subs(system, server, topic, mode, n, k):
    procs = []
    for _ in range(k):
        p = subprocess.Popen([sys.executable, str(HERE / "sub.py"), system, server.addr, topic, mode, str(n)],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
    for p in procs:
        line = p.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{system} subscriber: {line!r}")
    return procs


def probe(send, procs):
    """Publish probes until every subscriber has one: subscriptions have reached the publisher
    side (ZeroMQ's slow joiner, NATS's and Redis's asynchronous subscribe)."""
    pending = set(range(len(procs)))
    got = {}

    def wait(i, p):
        line = p.stdout.readline().strip()
        got[i] = line
    threads = [threading.Thread(target=wait, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        send(PROBE)
        time.sleep(0.01)
        pending = {i for i in pending if got.get(i) != "probed"}
    if pending:
        raise RuntimeError("subscribers never saw a probe")


def collect(procs):
    out = []
    for p in procs:
        line = p.stdout.readline()
        p.wait(60)
        out.append(json.loads(line))
    return out


def throughput(mod, system, server, k, payload, n):
    topic = f"bench.t{k}"
    procs = spawn_subs(system, server, topic, "count", n, k)
    send, done = mod.publisher(server)
    probe(lambda p: send(topic, p), procs)
    cpu0 = server.cpu_seconds()
    t0 = time.monotonic()
    pub0 = time.process_time()
    for _ in range(n):
        send(topic, payload)
    pub_cpu = time.process_time() - pub0
    done()
    res = collect(procs)
    cpu = server.cpu_seconds() - cpu0
    received = sum(r["received"] for r in res)
    last = max((r["last"] for r in res if r["last"]), default=t0)
    # Client CPU while messages flowed: the publishing loop, and each subscriber's CPU from its
    # first message to its last (bench/sub.py), so interpreter start-up is not counted.
    return {"rate": received / max(last - t0, 1e-9), "loss": k * n - received, "cpu": cpu,
            "delivered": received, "pub_cpu": pub_cpu, "sub_cpu": sum(r.get("cpu", 0.0) for r in res)}


def latency(mod, system, server, rate, seconds):
    topic = "bench.lat"
    n = int(rate * seconds)
    procs = spawn_subs(system, server, topic, "latency", n, 1)
    send, done = mod.publisher(server, paced=True)
    probe(lambda p: send(topic, p), procs)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        while time.perf_counter() < due:
            time.sleep(max(0.0, min(due - time.perf_counter(), 0.0005)))
        send(topic, (time.monotonic_ns(),))
    done()
    res = collect(procs)[0]
    lat = sorted(res.get("lat_us", []))
    if not lat:
        return {"p50": float("nan"), "p99": float("nan"), "p999": float("nan"), "all": [], "loss": n}
    q = lambda f: lat[min(len(lat) - 1, int(len(lat) * f))]  # noqa: E731
    return {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "all": lat, "loss": n - len(lat)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-rust", action="store_true", help="leave out the broker-to-broker part")
    args = ap.parse_args()
    n = 2_000 if args.quick else 5_000
    seconds = 1.0 if args.quick else 3.0
    mods = {s: importlib.import_module(f"systems.{s}") for s in SYSTEMS}
    servers = {s: mods[s].start() for s in SYSTEMS}
    results = {"throughput": {}, "latency": {}}
    try:
        for run in range(args.runs):
            for payload_name, payload in (("small dict", SMALL), ("4 KiB bytes", BIG)):
                for k in (1, 4, 16):
                    for s in SYSTEMS:
                        r = throughput(mods[s], s, servers[s], k, payload, n)
                        results["throughput"].setdefault(f"{payload_name}|{k}|{s}", []).append(r)
                        print(f"run {run + 1}: {s:16} {payload_name:12} 1->{k:<2} "
                              f"{r['rate']:>10,.0f} msgs/s loss {r['loss']}", file=sys.stderr, flush=True)
            for s in SYSTEMS:
                r = latency(mods[s], s, servers[s], 1000, seconds)
                results["latency"].setdefault(s, []).append(r)
                print(f"run {run + 1}: {s:16} latency p50 {r['p50']:.0f} µs p99 {r['p99']:.0f} µs",
                      file=sys.stderr, flush=True)
    finally:
        for srv in servers.values():
            srv.stop()
    rust = None if args.skip_rust else broker_to_broker(args.quick, args.runs)
    (HERE / "results").mkdir(exist_ok=True)
    meta = {"args": {"quick": args.quick, "runs": args.runs}, "n": n, "seconds": seconds, "versions": versions()}
    (HERE / "results" / "results.json").write_text(json.dumps(
        {"throughput": results["throughput"], "latency": results["latency"], "rust": rust, "meta": meta}))
    import report
    report.write(results, rust, mods, args, n, seconds, meta["versions"])


def broker_to_broker(quick, runs=3):
    """bench/rust: mphub-client against async-nats, the same load generator design."""
    cmd = ["cargo", "run", "--release", "-q", "--manifest-path", str(HERE / "rust/Cargo.toml"),
           "--", "--json", "--runs", str(runs)]
    if quick:
        cmd.append("--quick")
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    sys.stderr.write(r.stderr[-3000:])
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def versions():
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except Exception as e:  # noqa: BLE001
            return f"unavailable ({e})"
    def dist(name):
        # The installed distribution's own record: a module's __version__ is not always there
        # (nats-py has none at the top level).
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    import zmq
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "mphub": out([str(ROOT / "target/release/mphub"), "--version"]),
        "redis-server": out(["redis-server", "--version"]),
        "nats-server": out(["nats-server", "--version"]),
        "redis-py": dist("redis"), "nats-py": dist("nats-py"),
        "pyzmq": dist("pyzmq"), "libzmq": zmq.zmq_version(),
    }


if __name__ == "__main__":
    main()
