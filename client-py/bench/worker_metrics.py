"""Worker metrics through client-py: what 16 processes can push, what the broker pays per op,
and how long a scrape of 10,000 series takes while messages are being routed.

    python3 client-py/bench/worker_metrics.py [--quick]      (or: make bench-metrics)

- push: 16 forked processes, each a client-py hub, each does N `counter.labels(...).inc()`
  across 8 label values and then `flush()`. Increments/s over the wall time of all 16; the
  hubs sum increments per batch, so the broker applies fewer ops than increments: both shown,
  with the broker's CPU (utime+stime from /proc) per applied op and per increment.
- raw: the same with 16 stock Clients sending explicit `inc` ops in lists of 1,000, so every
  op reaches the broker: ops/s and broker CPU per op (decode + apply).
- scrape: one connection declares a family with 10,000 series; then a publisher and a
  subscriber move messages through the broker while /metrics is scraped 20 times. Scrape
  latency p50/max, and the routing rate with and without scrapes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "client-py" / "src"))
import mphub  # noqa: E402

KEY = b"bench-key"


def start_broker():
    binary = os.environ.get("MPHUB_BIN", str(ROOT / "target" / "release" / "mphub"))
    env = {**os.environ, "MPHUB_AUTHKEY": KEY.decode()}
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--outbound-limit", "1GiB"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    addr = url = None
    for line in proc.stderr:
        if m := re.search(r"mphub listening on (\S+)", line):
            addr = m.group(1)
        if m := re.search(r"mphub metrics on (\S+)", line):
            url = m.group(1)
        if addr and url:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, addr, url
    raise RuntimeError("mphub did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def pusher(addr: str, n: int, go, done) -> None:
    hub = mphub.connect(addr, authkey=KEY)
    c = hub.counter("bench_incs_total", "Increments", labels=("shard",))
    children = [c.labels(shard=str(i)) for i in range(8)]
    go.wait()
    for i in range(n):
        children[i & 7].inc()
    hub.flush(timeout=120)
    hub.close()
    done.put(n)


def raw_pusher(addr: str, n: int, go, done) -> None:
    """Stock Client, explicit ops in batches of 1,000: every op reaches the broker."""
    from multiprocessing.connection import Client

    host, port = addr.rsplit(":", 1)
    c = Client((host, int(port)), authkey=KEY)
    c.send(("$metrics", [("declare", "bench_raw_total", "counter", "Raw ops", ("shard",), {})]))
    batch = [("inc", "bench_raw_total", {"shard": str(i & 7)}, 1) for i in range(1000)]
    go.wait()
    for _ in range(n // 1000):
        c.send(("$metrics", batch))
    c.send(("$ping", 1))
    assert c.recv() == ("$pong", 1)
    done.put(n // 1000 * 1000)


def push(addr: str, url: str, pid: int, n: int, target=pusher) -> dict:
    ctx = multiprocessing.get_context("fork")
    go, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(addr, n, go, done)) for _ in range(16)]
    for p in procs:
        p.start()
    ops0, cpu0 = sample(scrape(url), "mphub_metrics_ops_total"), cpu_seconds(pid)
    t = time.perf_counter()
    go.set()
    total = sum(done.get(timeout=300) for _ in procs)
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    ops = sample(scrape(url), "mphub_metrics_ops_total") - ops0
    cpu = cpu_seconds(pid) - cpu0
    return {"incs_per_s": total / wall, "ops": ops, "incs": total, "cpu": cpu,
            "cpu_us_per_op": cpu / max(ops, 1) * 1e6, "cpu_ns_per_inc": cpu / total * 1e9}


def route_rate(addr: str, seconds: float, scrape_url: str | None, lat: list) -> float:
    """Messages/s one client-py publisher gets to one subscriber, scraping meanwhile if asked."""
    sub_hub = mphub.connect(addr, authkey=KEY, max_pending=10_000_000)
    sub = sub_hub.subscribe("bench.route")
    pub = mphub.connect(addr, authkey=KEY)
    stop = threading.Event()

    def scraper():
        while not stop.is_set():
            t = time.perf_counter()
            scrape(scrape_url)
            lat.append(time.perf_counter() - t)

    th = threading.Thread(target=scraper) if scrape_url else None
    if th:
        th.start()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        for _ in range(1000):
            pub.publish("bench.route", n)
            n += 1
    pub.flush(timeout=120)
    got = 0
    while got < n:
        sub.next(timeout=60)
        got += 1
    elapsed = time.perf_counter() - t
    stop.set()
    if th:
        th.join()
    pub.close()
    sub_hub.close()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 20_000 if args.quick else 100_000
    runs = 3
    broker, addr, url = start_broker()
    url = url.rstrip("/")
    try:
        pushes = [push(addr, url, broker.pid, n) for _ in range(runs)]
        raws = [push(addr, url, broker.pid, n, raw_pusher) for _ in range(runs)]
        wide = mphub.connect(addr, authkey=KEY)
        fam = wide.counter("bench_wide_total", "10,000 series", labels=("i",))
        for i in range(10_000):
            fam.labels(i=str(i)).inc()
        wide.flush(timeout=120)
        series = sample(scrape(url), "mphub_metrics_series")
        quiet, busy, lat = [], [], []
        seconds = 1.0 if args.quick else 3.0
        for _ in range(runs):
            quiet.append(route_rate(addr, seconds, None, []))
            busy.append(route_rate(addr, seconds, url, lat))
        wide.close()
    finally:
        broker.terminate()
        broker.wait()
    med = statistics.median
    print(f"\nworker metrics, {runs} runs, medians [min-max]\n")
    print(f"16 processes x {n} increments: {med([p['incs_per_s'] for p in pushes]):,.0f} increments/s "
          f"[{min(p['incs_per_s'] for p in pushes):,.0f}-{max(p['incs_per_s'] for p in pushes):,.0f}]")
    print(f"  ops applied by the broker per run: {med([p['ops'] for p in pushes]):,.0f} "
          f"(the hubs sum increments per batch)")
    print(f"  broker CPU for a whole run (all connections, handshakes included): "
          f"{med([p['cpu'] for p in pushes]) * 1e3:.0f} ms")
    print(f"16 stock clients x {n} explicit inc ops (batches of 1,000): "
          f"{med([p['incs_per_s'] for p in raws]):,.0f} ops/s "
          f"[{min(p['incs_per_s'] for p in raws):,.0f}-{max(p['incs_per_s'] for p in raws):,.0f}]; "
          f"broker CPU {med([p['cpu_us_per_op'] for p in raws]):.2f} µs per op")
    lat.sort()
    print(f"scrape with {series:,.0f} worker series: p50 {lat[len(lat) // 2] * 1e3:.1f} ms, "
          f"max {lat[-1] * 1e3:.1f} ms over {len(lat)} scrapes")
    print(f"routing 1 -> 1 (client-py): {med(quiet):,.0f} msgs/s without scrapes, "
          f"{med(busy):,.0f} msgs/s while scraping back to back ({med(busy) / med(quiet):.2f}x)")


if __name__ == "__main__":
    main()
