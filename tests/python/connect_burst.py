"""Starts N stock `Client(addr, authkey)` at once (threads released together) and prints how
many finished the handshake by the deadline, N, the seconds from the release to the last one
that finished, and how many were refused (an exception: closed by a broker at its connection
limit): `connected n seconds refused`. Used by tests/test_listeners.py and bench/connect.py.

    python3 connect_burst.py HOST PORT KEY N DEADLINE_SECONDS

A client whose connection the kernel dropped from a full accept queue waits forever for the
broker's challenge, so the process exits with os._exit once the deadline has passed.
"""

import os
import sys
import threading
import time
from multiprocessing.connection import Client


def burst(address, key, n, deadline):
    """Connects n clients at once; returns (connected, seconds from release to the last one,
    refused)."""
    threading.stack_size(256 * 1024)
    start = threading.Barrier(n + 1)
    done = []
    refused = []
    lock = threading.Lock()
    conns = []

    def one():
        start.wait()
        try:
            c = Client(address, authkey=key)
        except Exception as e:  # refused by the broker (EOFError, AuthenticationError...): an answer, not a hang
            with lock:
                refused.append(e)
            return
        with lock:
            done.append(time.perf_counter())
            conns.append(c)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    end = time.monotonic() + deadline
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    with lock:
        return len(done), (max(done) - t0 if done else 0.0), len(refused)


def main():
    host, port, key, n, deadline = sys.argv[1:6]
    connected, seconds, refused = burst((host, int(port)), key.encode(), int(n), float(deadline))
    print(connected, n, f"{seconds:.3f}", refused, flush=True)
    os._exit(0)  # threads still waiting on a dropped connection never return


if __name__ == "__main__":
    main()
