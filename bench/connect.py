"""Connection set-up with stock clients: handshakes per second in a burst, and how long a new
connection's first message takes, with and without an authkey.

    python3 bench/connect.py [--runs 5] [--burst 2000] [--conns 200] [--baseline OTHER_MPHUB]
    python3 bench/connect.py --users 1,100,5000 [--runs 3] [--burst 2000]

Each run starts the release binary (target/release/mphub, and the baseline binary when given,
interleaved in the same run) on loopback and measures:
  burst          N stock `Client(addr, authkey)` released at once from threads of one process;
                 handshakes/s = clients connected / (last connected - release). A client the
                 kernel dropped from a full accept queue never connects: reported as hung.
  first message  for each of M fresh connections, one after another: the time from `send` of
                 a `$ping` to the `$pong`, the first message after connecting. With an authkey
                 and without (a broker without a key on loopback).
Prints medians over the runs (min-max), and with --baseline the ratio baseline / this.

--users N1,N2,...: the burst only, against a config file of N named users each with a key of
its own, every client answering with the last user's key (the broker tries an answer against
every key, so which one does not matter); one broker per N, interleaved in each run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BURST = ROOT / "tests" / "python" / "connect_burst.py"
KEY = b"bench-connect-key"


def start(binary, key, extra=()):
    """The broker as a process, and its address once it listens."""
    env = {k: v for k, v in os.environ.items() if k != "MPHUB_AUTHKEY"}
    if key:
        env["MPHUB_AUTHKEY"] = key.decode()
    p = subprocess.Popen([str(binary), "--listen", "127.0.0.1:0", "--metrics", "off", "--handshake-timeout", "120",
                          *extra], stderr=subprocess.PIPE, text=True, env=env)
    for line in p.stderr:
        m = re.search(r"mphub listening on (\S+):(\d+)", line)
        if m:
            # Keep reading, so that the log (a line per connection) never fills the pipe.
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, (m.group(1), int(m.group(2)))
    raise RuntimeError(f"{binary} did not start")


def users_config(folder, n):
    """A config file of `n` users with keys of their own in `folder`; returns it and the last key."""
    users = []
    for u in range(n):
        key = f"bench-user-key-{u:05d}".encode()
        (folder / f"u{u}.key").write_bytes(key)
        users.append(f'[[users]]\nname = "u{u}"\nauthkey_file = "{folder / f"u{u}.key"}"\n')
    (folder / "mphub.toml").write_text("\n".join(users))
    return folder / "mphub.toml", key


def burst(binary, n, key=KEY, extra=()):
    p, (host, port) = start(binary, None if extra else key, extra)
    try:
        out = subprocess.run([sys.executable, str(BURST), host, str(port), key.decode(), str(n), "30"],
                             capture_output=True, text=True, timeout=120, check=False).stdout.split()
        connected, seconds = int(out[0]), float(out[2])
        return {"connected": connected, "per_s": connected / seconds if seconds else 0.0}
    finally:
        p.kill()
        p.wait()


def first_message(binary, conns, key):
    p, addr = start(binary, key)
    try:
        times = []
        for i in range(conns):
            c = Client(addr, authkey=key)
            t0 = time.perf_counter()
            c.send(("$ping", i))
            assert c.recv() == ("$pong", i)
            times.append((time.perf_counter() - t0) * 1e3)
            c.close()
        return statistics.median(times)
    finally:
        p.kill()
        p.wait()


def run_once(binary, args):
    b = burst(binary, args.burst)
    return {
        "burst_per_s": b["per_s"],
        "burst_hung": args.burst - b["connected"],
        "first_ms_key": first_message(binary, args.conns, KEY),
        "first_ms_nokey": first_message(binary, args.conns, None),
    }


def summary(values):
    med = statistics.median(values)
    return med, min(values), max(values)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--baseline", type=Path, help="another mphub binary, measured in the same run")
    ap.add_argument("--users", help="comma-separated user counts: handshakes/s with that many users")
    args = ap.parse_args()
    if args.users:
        return users_main(args)
    binaries = {"this": ROOT / "target" / "release" / "mphub"}
    if args.baseline:
        binaries["baseline"] = args.baseline
    results = {name: [] for name in binaries}
    for r in range(args.runs):
        for name, binary in binaries.items():
            results[name].append(run_once(binary, args))
            print(f"run {r + 1} {name}: {json.dumps(results[name][-1])}", file=sys.stderr, flush=True)
    rows = [("burst_per_s", f"handshakes/s, burst of {args.burst}", ",.0f"),
            ("burst_hung", f"clients hung, of {args.burst}", ",.0f"),
            ("first_ms_key", "first message, with an authkey, ms (median)", ".3f"),
            ("first_ms_nokey", "first message, without an authkey, ms (median)", ".3f")]
    print(f"| measure | {' | '.join(binaries)} |" + (" baseline / this |" if args.baseline else ""))
    print("|---" * (len(binaries) + 1 + bool(args.baseline)) + "|")
    for key, label, fmt in rows:
        cells, meds = [], []
        for name in binaries:
            med, lo, hi = summary([r[key] for r in results[name]])
            meds.append(med)
            cells.append(f"{med:{fmt}} ({lo:{fmt}}–{hi:{fmt}})")
        ratio = f" {meds[1] / meds[0]:.2f}x |" if args.baseline and meds[0] else (" — |" if args.baseline else "")
        print(f"| {label} | {' | '.join(cells)} |{ratio}")


def users_main(args):
    counts = [int(n) for n in args.users.split(",")]
    binary = ROOT / "target" / "release" / "mphub"
    results = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for n in counts:
            (Path(tmp) / str(n)).mkdir()
            configs[n] = users_config(Path(tmp) / str(n), n)
        for r in range(args.runs):
            for n in counts:
                config, key = configs[n]
                b = burst(binary, args.burst, key, ["--config", str(config)])
                results[n].append((b["per_s"], args.burst - b["connected"]))
                print(f"run {r + 1} users={n}: {results[n][-1]}", file=sys.stderr, flush=True)
    print(f"| users | handshakes/s, burst of {args.burst} | clients hung |")
    print("|---|---|---|")
    for n in counts:
        med, lo, hi = summary([per_s for per_s, _ in results[n]])
        hung = max(h for _, h in results[n])
        print(f"| {n:,} | {med:,.0f} ({lo:,.0f}–{hi:,.0f}) | {hung} |")


if __name__ == "__main__":
    main()
