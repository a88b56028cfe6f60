"""The broker's memory under the loads that used to keep it: subscriptions, big frames, frames
that never finish. Stock `multiprocessing.connection.Client`s against the release binary.

    python3 bench/memory.py [--runs N] [--only subs|frames|partial]   (or: make bench-memory)

- subs: 20 connections each subscribe 10,000 distinct `_INBOX.<22 chars>.>` patterns
  (200,000 in all); reports resident bytes per subscription, then RSS once they have closed.
- frames: 8 publishers each send one 50 MiB message to one reading subscriber (outbound limit
  1 GiB, so nothing is cut off), then idle;
  reports RSS at the peak and once everything was delivered, with the publishers connected.
- partial: 10 connections each send 59 MiB of a 60 MiB frame and hold; reports RSS while they
  hold and after --frame-timeout (2 s here) closed them.

Every figure is the median of --runs fresh brokers (min and max beside it). RSS is VmRSS from
/proc; "idle" is RSS before any client connected; "after" is RSS once within 5 MiB of idle,
or 30 s after the load ended. `MPHUB_BIN` picks another binary.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import struct
import subprocess
import threading
import time
from multiprocessing.connection import Client
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = b"bench-key"
MIB = 1 << 20


class Broker:
    def __init__(self, *flags):
        binary = os.environ.get("MPHUB_BIN", str(ROOT / "target/release/mphub"))
        env = {**os.environ, "MPHUB_AUTHKEY": KEY.decode()}
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--metrics", "off", "--log-level", "warn,mphub_broker=info", *flags],
            stderr=subprocess.PIPE, text=True, env=env)
        for line in self.proc.stderr:
            m = re.search(r"mphub listening on (\S+):(\d+)", line)
            if m:
                self.addr = (m.group(1), int(m.group(2)))
                threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
                return
        raise RuntimeError("mphub did not start")

    def rss_mib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def settle(self, below_mib, timeout=30.0):
        """RSS once it is under `below_mib`, or after `timeout` seconds: the allocator gives
        freed memory back to the system within seconds (jemalloc's background purge)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.rss_mib()
            if now <= below_mib:
                return now
            time.sleep(0.5)
        return self.rss_mib()

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def subscriptions(conns=20, each=10_000):
    b = Broker("--max-subscriptions", str(each))
    try:
        idle = b.rss_mib()
        clients = [Client(b.addr, authkey=KEY) for _ in range(conns)]
        connected = b.rss_mib()
        for c in clients:
            for _ in range(each):
                c.send(("$sub", f"_INBOX.{secrets.token_urlsafe(16)}.>"))
            for _ in range(each):
                assert c.recv()[0] == "$ok"
        held = b.rss_mib()
        per_sub = (held - connected) * MIB / (conns * each)
        for c in clients:
            c.close()
        after = b.settle(idle + 5)
        return {"bytes per subscription": per_sub, "RSS idle MiB": idle, "RSS holding MiB": held,
                "RSS after close MiB": after}
    finally:
        b.stop()


def big_frames(pubs=8, size=50 * MIB):
    # The subscriber may hold all eight at once: this measures buffers, not the slow-consumer cut.
    b = Broker("--outbound-limit", "1GiB")
    try:
        idle = b.rss_mib()
        sub = Client(b.addr, authkey=KEY)
        sub.send(("$sub", "big"))
        assert sub.recv()[0] == "$ok"
        publishers = [Client(b.addr, authkey=KEY) for _ in range(pubs)]
        body = bytes(size)
        senders = [threading.Thread(target=p.send, args=(("big", body),)) for p in publishers]
        peak = [idle]
        done = threading.Event()

        def watch():
            while not done.wait(0.05):
                peak[0] = max(peak[0], b.rss_mib())

        watcher = threading.Thread(target=watch)
        watcher.start()
        for s in senders:
            s.start()
        for _ in range(pubs):
            assert len(sub.recv()[1]) == size
        for s in senders:
            s.join()
        done.set()
        watcher.join()
        after = b.settle(idle + 5)
        return {"RSS idle MiB": idle, "RSS peak MiB": peak[0], "RSS after, publishers idle MiB": after}
    finally:
        b.stop()


def partial_frames(conns=10, claim=60 * MIB, send=59 * MIB):
    b = Broker("--frame-timeout", "2", "--arriving-limit", "1GiB")
    try:
        idle = b.rss_mib()
        clients = [Client(b.addr, authkey=KEY) for _ in range(conns)]
        chunk = struct.pack("!i", claim) + bytes(send)
        senders = [threading.Thread(target=c._send, args=(chunk,)) for c in clients]
        for s in senders:
            s.start()
        for s in senders:
            s.join()
        holding = b.rss_mib()
        for c in clients:
            try:
                c.recv()  # the reason, then the close
            except (EOFError, OSError):
                pass
        after = b.settle(idle + 5)
        return {"RSS idle MiB": idle, "RSS holding MiB": holding, "RSS after the timeout MiB": after}
    finally:
        b.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=["subs", "frames", "partial"])
    args = ap.parse_args()
    for name, fn in [("subs", subscriptions), ("frames", big_frames), ("partial", partial_frames)]:
        if args.only and args.only != name:
            continue
        results = [fn() for _ in range(args.runs)]
        print(f"## {name} ({args.runs} runs)")
        for key in results[0]:
            values = [r[key] for r in results]
            print(f"{key}: {statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()
