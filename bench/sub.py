"""A measured subscriber, one process: `python bench/sub.py SYSTEM ADDR TOPIC MODE N`.

Prints "ready" once subscribed and "probed" at the first probe; then counts N messages (MODE
count) or records one-way latency of N timestamped ones (MODE latency), and prints one JSON
line (`cpu`: CPU seconds from the first message to the last, for bench/stock_ceiling.py). Gives up after IDLE seconds without a message and reports what it got (loss).
"""

import importlib
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from systems import Server  # noqa: E402

IDLE = 10.0
PROBE = "__probe__"


def main():
    system, addr, topic, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    mod = importlib.import_module(f"systems.{system}")
    state = {"got": 0, "first": None, "last": None, "lat": [], "seen": time.monotonic(), "probed": False,
             "cpu0": 0.0}

    def report():
        out = {"received": state["got"], "first": state["first"], "last": state["last"],
               "cpu": time.process_time() - state["cpu0"]}
        if mode == "latency":
            out["lat_us"] = state["lat"]
        print(json.dumps(out), flush=True)
        os._exit(0)

    def watchdog():
        while True:
            time.sleep(1)
            if state["probed"] and time.monotonic() - state["seen"] > IDLE:
                report()

    threading.Thread(target=watchdog, daemon=True).start()
    probed = False
    for obj in mod.subscribe(Server([], addr), topic, lambda: print("ready", flush=True)):
        now = time.monotonic()
        state["seen"] = now
        if isinstance(obj, str) and obj == PROBE:
            if not probed:
                probed = state["probed"] = True
                print("probed", flush=True)
            continue
        if state["first"] is None:
            state["first"] = now
            state["cpu0"] = time.process_time()
        state["last"] = now
        state["got"] += 1
        if mode == "latency":
            state["lat"].append((time.monotonic_ns() - obj[0]) / 1e3)
        if state["got"] >= n:
            report()


if __name__ == "__main__":
    main()
