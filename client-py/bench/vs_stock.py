"""client-py against the stock `multiprocessing.connection.Client`, through the same broker.

    python3 client-py/bench/vs_stock.py [--quick] [--runs N]      (or: make bench-py)

Starts the release `mphub` binary on a free port and, for each run, measures both clients back
to back (stock, mphub, stock, mphub, ...); prints medians, min-max and the ratio mphub/stock.

- publish: one process publishes N small dicts, then waits for the broker's `$pong`, so every
  message has been read and routed (no subscribers: this is the client's cost plus parsing).
- receive: a subscriber process is stopped (SIGSTOP) while N small dicts queue up for it in the
  broker, then continued; it times its first to its last message.
- The broker and this process run on CPU 0, each measured subscriber on CPU 1 (when there are
  two CPUs): unpinned, the same run varied 2x with the scheduler's placement.
- latency: 1,000 msgs/s for 2 s, each carrying `time.monotonic_ns()`; the subscriber (another
  process) records now - sent. Stock publisher to stock subscriber vs client-py to client-py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from multiprocessing.connection import Client
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "client-py" / "src"))
import mphub  # noqa: E402

KEY = b"bench-key"
PAYLOAD = {"sensor": "t-17", "v": 21.5, "seq": 123456}


def pin(pid: int, cpu: int) -> None:
    """On 2+ CPUs, keep the broker and this process on CPU 0 and the measured subscriber on
    CPU 1, so a run does not depend on where the scheduler happens to put them."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(pid, {cpu})


def start_broker() -> tuple[subprocess.Popen, str]:
    binary = os.environ.get("MPHUB_BIN", str(ROOT / "target" / "release" / "mphub"))
    env = {**os.environ, "MPHUB_AUTHKEY": KEY.decode()}
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--metrics", "off", "--outbound-limit", "1GiB"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    pin(proc.pid, 0)
    for line in proc.stderr:
        m = re.search(r"mphub listening on (\S+)", line)
        if m:
            return proc, m.group(1)
    raise RuntimeError("mphub did not start")


def tcp(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


# ----------------------------------------------------------------------------- roles (children)


def role_receive(kind: str, addr: str, n: int) -> None:
    """Subscribe, say ready, then time the first to the last of n messages."""
    if kind == "stock":
        c = Client(tcp(addr), authkey=KEY)
        c.send(("$sub", "bench.rx"))
        c.recv()
        print("ready", flush=True)
        c.recv()
        t0 = time.perf_counter()
        for _ in range(n - 1):
            c.recv()
    else:
        hub = mphub.connect(addr, authkey=KEY, max_pending=n + 1)
        sub = hub.subscribe("bench.rx")
        print("ready", flush=True)
        sub.next()
        t0 = time.perf_counter()
        left = n - 1
        for _ in sub:  # the natural loop; next() costs about the same
            left -= 1
            if not left:
                break
    print(json.dumps({"rate": (n - 1) / (time.perf_counter() - t0)}), flush=True)


def role_latency(kind: str, addr: str, n: int) -> None:
    lat = []
    if kind == "stock":
        c = Client(tcp(addr), authkey=KEY)
        c.send(("$sub", "bench.lat"))
        c.recv()
        print("ready", flush=True)
        for _ in range(n):
            sent = c.recv()[1]
            lat.append(time.monotonic_ns() - sent)
    else:
        hub = mphub.connect(addr, authkey=KEY)
        sub = hub.subscribe("bench.lat")
        print("ready", flush=True)
        for msg in sub:
            lat.append(time.monotonic_ns() - msg.payload)
            if len(lat) == n:
                break
    lat.sort()
    print(json.dumps({"p50": lat[len(lat) // 2] / 1e3, "p99": lat[int(len(lat) * 0.99)] / 1e3}), flush=True)


# ----------------------------------------------------------------------------- measurements


def child(role: str, kind: str, addr: str, n: int) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, __file__, "--role", role, kind, addr, str(n)], stdout=subprocess.PIPE, text=True
    )
    pin(p.pid, 1)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def result(p: subprocess.Popen) -> dict:
    out, _ = p.communicate(timeout=300)
    return json.loads(out.strip().splitlines()[-1])


def publisher(kind: str, addr: str):
    if kind == "stock":
        c = Client(tcp(addr), authkey=KEY)

        def send(topic, obj):
            c.send((topic, obj))

        def done():
            c.send(("$ping", 1))
            while c.recv() != ("$pong", 1):
                pass
            c.close()

        return send, done
    hub = mphub.connect(addr, authkey=KEY)
    return hub.publish, hub.close


def measure_publish(kind: str, addr: str, n: int) -> float:
    send, done = publisher(kind, addr)
    t0 = time.perf_counter()
    for _ in range(n):
        send("bench.pub", PAYLOAD)
    done()  # stock: waits for the $pong; mphub: close() waits until the broker closed us
    return n / (time.perf_counter() - t0)


def measure_receive(kind: str, addr: str, n: int) -> float:
    sub = child("receive", kind, addr, n)
    os.kill(sub.pid, signal.SIGSTOP)
    try:
        hub = mphub.connect(addr, authkey=KEY)
        for _ in range(n):
            hub.publish("bench.rx", PAYLOAD)
        hub.flush(timeout=120)
        hub.close()
    finally:
        os.kill(sub.pid, signal.SIGCONT)
    return result(sub)["rate"]


def measure_latency(kind: str, addr: str, rate: int, seconds: float) -> dict:
    n = int(rate * seconds)
    sub = child("latency", kind, addr, n)
    send, done = publisher(kind, addr)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.0005))
        send("bench.lat", time.monotonic_ns())
    done()
    return result(sub)


def med(xs):
    return statistics.median(xs)


def cell(xs, unit):
    def fmt(x):
        return f"{x:,.0f}{unit}"

    return f"{fmt(med(xs))} [{fmt(min(xs))}-{fmt(max(xs))}]"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        role = {"receive": role_receive, "latency": role_latency}[sys.argv[2]]
        role(sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer messages, 3 runs")
    ap.add_argument("--runs", type=int, default=None)
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    n = 50_000 if args.quick else 200_000
    seconds = 1.0 if args.quick else 2.0
    pin(0, 0)
    broker, addr = start_broker()
    res: dict = {k: {"stock": [], "mphub": []} for k in ("publish", "receive", "p50", "p99")}
    try:
        for r in range(runs):
            for kind in ("stock", "mphub"):
                res["publish"][kind].append(measure_publish(kind, addr, n))
                res["receive"][kind].append(measure_receive(kind, addr, n))
                lat = measure_latency(kind, addr, 1000, seconds)
                res["p50"][kind].append(lat["p50"])
                res["p99"][kind].append(lat["p99"])
            print(f"run {r + 1}/{runs} done", file=sys.stderr, flush=True)
    finally:
        broker.terminate()
        broker.wait()
    print(
        f"\nclient-py vs stock Client, {runs} runs, {n} messages of {len(repr(PAYLOAD))}-char dicts, "
        f"Python {sys.version.split()[0]}, medians [min-max]\n"
    )
    print(f"{'':22} {'stock':>26} {'client-py':>26} {'ratio':>7}")
    for key, label, unit in [
        ("publish", "publish msgs/s", ""),
        ("receive", "receive msgs/s", ""),
        ("p50", "latency p50 @1k/s", " µs"),
        ("p99", "latency p99 @1k/s", " µs"),
    ]:
        s, m = res[key]["stock"], res[key]["mphub"]
        print(f"{label:22} {cell(s, unit):>26} {cell(m, unit):>26} {med(m) / med(s):>6.2f}x")


if __name__ == "__main__":
    main()
