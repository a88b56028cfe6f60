"""Stock clients end to end against what the stock client itself allows on this machine.

    python3 bench/stock_ceiling.py [--runs 3] [--fanout 16] [--n 20000] [--transport both|tcp|unix]

Each run measures, interleaved:
  ceiling   the CPU a stock `Connection` spends per 4 KiB message on a socketpair: `send()` in
            one process, a `recv()` loop doing what bench/sub.py's loop does in another (both
            by `time.process_time`). Per delivered message of a 1 → K fan-out, the clients
            alone cost recv + send / K: with every core spent on them (a broker that cost
            nothing), cores / (recv + send / K) messages a second.
  mphub     1 publisher and K subscriber processes, stock `Client`s through the release broker
            (bench/compare.py's throughput run): delivered messages a second, and the CPU per
            delivered message of the publishing loop, of the subscribers from their first
            message to their last, and of the broker. Over TCP loopback and over a Unix socket
            (`--listen unix:/path`; the stock `Client` takes the path): the ceiling's socketpair
            is a Unix socket, so that row is like for like, and the TCP row adds loopback TCP's
            own cost on every hop.
Prints medians over the runs (min–max). The share of the ceiling is a ratio of CPU per
delivered message, clients alone / everything through mphub, so other load on the machine does
not move it; the wall-clock rates beside it do move with such load.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import PROBE, throughput  # noqa: E402
from systems import mphub_stock  # noqa: E402

PAYLOAD = b"x" * 4096
TOPIC = "bench.t"


def _send(conn, n, out):
    t = time.process_time()
    for _ in range(n):
        conn.send((TOPIC, PAYLOAD))
    out.send(time.process_time() - t)


def _messages(conn):
    # As systems/mphub_stock.subscribe: a generator yielding the payload of each message.
    while True:
        yield conn.recv()[1]


def stock_costs(n):
    """(send, recv) CPU seconds per 4 KiB message of a stock Connection over a socketpair."""
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe()  # duplex: a socketpair, the stock Connection on both ends
    result_r, result_w = ctx.Pipe(duplex=False)
    sender = ctx.Process(target=_send, args=(writer, n, result_w))
    sender.start()
    # The loop of bench/sub.py, bookkeeping included, so the ceiling is like for like.
    state = {"got": 0, "first": None, "last": None, "seen": 0.0}
    t = time.process_time()
    for obj in _messages(reader):
        now = time.monotonic()
        state["seen"] = now
        if isinstance(obj, str) and obj == PROBE:
            continue
        if state["first"] is None:
            state["first"] = now
        state["last"] = now
        state["got"] += 1
        if state["got"] >= n:
            break
    recv = time.process_time() - t
    send = result_r.recv()
    sender.join()
    return send / n, recv / n


def mphub_run(fanout, n, transport):
    """(delivered/s, broker CPU s per delivery, all CPU s per delivery) through the broker."""
    # The socket's directory goes when the run ends (for TCP it holds nothing).
    with tempfile.TemporaryDirectory(prefix="mphub-bench-") as scratch:
        listen = f"unix:{scratch}/mphub.sock" if transport == "unix" else "127.0.0.1:0"
        server = mphub_stock.start(listen=listen)
        try:
            r = throughput(mphub_stock, "mphub_stock", server, fanout, PAYLOAD, n)
        finally:
            server.stop()
    if r["loss"]:
        raise RuntimeError(f"mphub lost {r['loss']} messages")
    total = r["cpu"] + r["pub_cpu"] + r["sub_cpu"]
    return r["rate"], r["cpu"] / r["delivered"], total / r["delivered"]


def fmt(values, spec):
    return f"{statistics.median(values):{spec}} ({min(values):{spec}}–{max(values):{spec}})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fanout", type=int, default=16)
    ap.add_argument("--n", type=int, default=20_000, help="messages published per run")
    ap.add_argument("--transport", choices=["both", "tcp", "unix"], default="both",
                    help="how the clients reach the broker (default: both, interleaved)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    transports = ["tcp", "unix"] if args.transport == "both" else [args.transport]
    rows = {k: [] for k in ["send", "recv", "alone", "ceiling"]}
    through = {t: {k: [] for k in ["rate", "total", "broker", "share"]} for t in transports}
    for r in range(args.runs):
        send, recv = stock_costs(args.n)
        alone = recv + send / args.fanout
        for key, value in [("send", send * 1e6), ("recv", recv * 1e6), ("alone", alone * 1e6),
                           ("ceiling", cores / alone)]:
            rows[key].append(value)
        for t in transports:
            rate, broker, total = mphub_run(args.fanout, args.n, t)
            for key, value in [("rate", rate), ("total", total * 1e6), ("broker", broker * 1e6),
                               ("share", alone / total)]:
                through[t][key].append(value)
            print(f"run {r + 1}: clients alone {alone * 1e6:.2f} µs, through mphub over {t} {total * 1e6:.2f} µs "
                  f"(broker {broker * 1e6:.2f}) per delivery; {rate:,.0f} delivered/s", file=sys.stderr, flush=True)
    print(f"| 1 → {args.fanout}, 4 KiB bytes, stock clients, {cores} cores | median (min–max) |")
    print("|---|---|")
    print(f"| stock `send()`, µs CPU per message | {fmt(rows['send'], '.2f')} |")
    print(f"| stock `recv()` loop, µs CPU per message | {fmt(rows['recv'], '.2f')} |")
    print(f"| clients alone, µs CPU per delivered message (recv + send / {args.fanout}) | {fmt(rows['alone'], '.2f')} |")
    print(f"| ceiling, delivered msgs/s ({cores} cores / clients alone) | {fmt(rows['ceiling'], ',.0f')} |")
    names = {"tcp": "TCP loopback", "unix": "a Unix socket"}
    for t in transports:
        got = through[t]
        print(f"| over {names[t]}: through mphub, µs CPU per delivered message (publisher, subscribers, broker) "
              f"| {fmt(got['total'], '.2f')} |")
        print(f"| over {names[t]}: of which the broker | {fmt(got['broker'], '.2f')} |")
        print(f"| over {names[t]}: share of the ceiling (clients alone / through mphub) | {fmt(got['share'], '.2f')} |")
        print(f"| over {names[t]}: through mphub, delivered msgs/s (wall clock) | {fmt(got['rate'], ',.0f')} |")


if __name__ == "__main__":
    main()
