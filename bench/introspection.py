"""Does introspection slow routing down? A broker with 10,000 named, subscribed connections
routes a 1 -> 10 fan-out while /connections and /subscriptions are scraped 10 times a second
each, against the same load with nobody scraping; and how long each scrape takes.

    python3 bench/introspection.py [--connections 10000] [--seconds 8] [--runs 3]

Runs target/release/mphub (or $MPHUB_BIN) on loopback without an authkey. The load is raw
sockets writing pre-pickled 64-byte publishes in 64 KiB batches from one process, and ten
subscribers draining theirs in another; the delivered rate is the subscribers' bytes over the
frame size, over the measured seconds. Phases alternate (quiet, scraped, quiet, ...) and every
figure is the median of --runs, with min and max.
"""

import argparse
import json
import multiprocessing
import os
import pickle
import re
import resource
import selectors
import socket
import statistics
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FANOUT = 10
PAYLOAD = b"x" * 64


def frame(obj):
    body = pickle.dumps(obj, 4)
    return struct.pack("!i", len(body)) + body


def start_broker(connections):
    binary = os.environ.get("MPHUB_BIN", str(ROOT / "target" / "release" / "mphub"))
    env = {k: v for k, v in os.environ.items() if k != "MPHUB_AUTHKEY"}
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--outbound-limit", "2GiB",
         "--max-connections", str(connections + 1000), "--log-level", "warn,mphub_broker=info"],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    addr = http = None
    for line in proc.stderr:
        m = re.search(r"mphub listening on (\S+)", line)
        addr = m.group(1) if m else addr
        m = re.search(r"mphub metrics on (http://\S+)/metrics", line)
        http = m.group(1) if m else http
        if addr and http:
            break
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    host, port = addr.rsplit(":", 1)
    return proc, (host, int(port)), http


def idle_connections(addr, n):
    """n connections, each named and subscribed to a pattern of its own (replies left unread)."""
    socks = []
    for i in range(n):
        s = socket.create_connection(addr)
        s.sendall(frame(("$hello", {"name": f"idle-{i}"})) + frame(("$sub", f"idle.{i}.>")))
        socks.append(s)
    return socks


def publisher(addr, stop):
    s = socket.create_connection(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    one = frame(("load.t", PAYLOAD))
    batch = one * (65536 // len(one))
    while not stop.is_set():
        s.sendall(batch)
    s.close()


def subscribers(addr, ready, counts, stop):
    """FANOUT subscribers on one selector; counts[0] is bytes received after `ready`."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(FANOUT):
        s = socket.create_connection(addr)
        s.sendall(frame(("$sub", "load.t")) + frame(("$ping", 0)))
        socks.append(s)
    pong = len(frame(("$ok", ("$sub", "load.t")))) + len(frame(("$pong", 0)))
    for s in socks:  # the subscription is in place once its pong came
        got = b""
        while len(got) < pong:
            got += s.recv(pong - len(got))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    ready.set()
    buf = bytearray(1 << 20)
    total = 0
    while not stop.is_set():
        for key, _ in sel.select(0.1):
            try:
                total += key.fileobj.recv_into(buf)
            except BlockingIOError:
                pass
        counts.value = total


def scraper(http, stop, latencies):
    paths = ["/connections?sort=queued_bytes&limit=100", "/subscriptions?limit=100"]
    while not stop.is_set():
        start = time.monotonic()
        for p in paths:
            t = time.perf_counter()
            with urllib.request.urlopen(http + p, timeout=10) as r:
                json.load(r)
            latencies.setdefault(p, []).append(time.perf_counter() - t)
        stop.wait(max(0.0, 0.1 - (time.monotonic() - start)))


def timed(http, path, n=20):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        with urllib.request.urlopen(http + path, timeout=30) as r:
            size = len(r.read())
        times.append(time.perf_counter() - t)
    return statistics.median(times), max(times), size


def stats(values):
    return statistics.median(values), min(values), max(values)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    proc, addr, http = start_broker(args.connections)
    try:
        t = time.monotonic()
        idle = idle_connections(addr, args.connections)
        print(f"{len(idle)} idle connections open in {time.monotonic() - t:.1f} s")
        while json.load(urllib.request.urlopen(http + "/connections?limit=0"))["total"] < args.connections:
            time.sleep(0.1)  # the broker is still accepting the last of them
        for path in ["/connections?sort=queued_bytes&limit=100", "/connections", "/connections?limit=10000",
                     "/subscriptions?limit=100", "/subscriptions"]:
            med, worst, size = timed(http, path)
            print(f"  GET {path:45} median {med * 1e3:6.1f} ms, max {worst * 1e3:6.1f} ms, {size / 1024:7.0f} KiB")

        stop_load = multiprocessing.Event()
        ready = multiprocessing.Event()
        counts = multiprocessing.Value("q", 0, lock=False)
        subs = multiprocessing.Process(target=subscribers, args=(addr, ready, counts, stop_load))
        subs.start()
        ready.wait(60)
        pub = multiprocessing.Process(target=publisher, args=(addr, stop_load))
        pub.start()
        time.sleep(1.0)  # warm up
        rates = {"quiet": [], "scraped": []}
        latencies = {}
        per_frame = len(frame(("load.t", PAYLOAD)))
        for _ in range(args.runs):
            for phase in ("quiet", "scraped"):
                stop_scrape = threading.Event()
                scr = None
                if phase == "scraped":
                    scr = threading.Thread(target=scraper, args=(http, stop_scrape, latencies))
                    scr.start()
                before, t0 = counts.value, time.monotonic()
                time.sleep(args.seconds)
                after, t1 = counts.value, time.monotonic()
                stop_scrape.set()
                if scr:
                    scr.join()
                rate = (after - before) / per_frame / (t1 - t0)
                rates[phase].append(rate)
                print(f"  {phase:8} {rate / 1e6:.2f} M delivered msgs/s")
        stop_load.set()
        pub.join(10)
        subs.join(10)
        q, s = stats(rates["quiet"]), stats(rates["scraped"])
        print(f"\nfan-out 1 -> {FANOUT}, 64 B, {args.connections} idle connections, medians of {args.runs}:")
        print(f"  nobody scraping:  {q[0] / 1e6:.2f} M msgs/s ({q[1] / 1e6:.2f}-{q[2] / 1e6:.2f})")
        print(f"  scraped 10/s:     {s[0] / 1e6:.2f} M msgs/s ({s[1] / 1e6:.2f}-{s[2] / 1e6:.2f})")
        print(f"  ratio scraped/quiet: {s[0] / q[0]:.2f}")
        for path, ls in latencies.items():
            ls = sorted(ls)
            p99 = ls[min(len(ls) - 1, int(len(ls) * 0.99))]
            print(f"  under load GET {path}: median {statistics.median(ls) * 1e3:.1f} ms, "
                  f"p99 {p99 * 1e3:.1f} ms ({len(ls)} requests)")
        for s in idle:
            s.close()
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
