"""Draws docs/images/status.png: the status page of a broker with a few named clients, traffic,
a queue group and a slow consumer, rendered by headless Chromium.

    python3 tests/python/status_screenshot.py docs/images/status.png

Uses target/release/mphub (or $MPHUB_BIN) and the client-py package of this repository.
"""

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "client-py" / "src"))
sys.path.insert(0, str(Path(__file__).parent))

import mphub  # noqa: E402
from cdp import Browser  # noqa: E402

KEY = b"screenshot-key"


def start_broker():
    binary = os.environ.get("MPHUB_BIN", str(ROOT / "target" / "release" / "mphub"))
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--outbound-limit", "8MiB",
         "--slow-consumer", "drop"],
        env={**os.environ, "MPHUB_AUTHKEY": KEY.decode()}, stderr=subprocess.PIPE, text=True,
    )
    addr = http = None
    for line in proc.stderr:
        m = re.search(r"mphub listening on (\S+)", line)
        addr = m.group(1) if m else addr
        m = re.search(r"mphub metrics on (http://\S+)/metrics", line)
        http = m.group(1) if m else http
        if addr and http:
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, addr, http


def stock(addr, name, *subs):
    host, port = addr.rsplit(":", 1)
    c = Client((host, int(port)), authkey=KEY)
    c.send(("$hello", {"name": name}))
    c.recv()
    for s in subs:
        c.send(("$sub", s))
        c.recv()
    return c


def main(out):
    proc, addr, http = start_broker()
    stop = threading.Event()
    try:
        hubs = [mphub.connect(addr, authkey=KEY, name=f"resize-worker-{i}") for i in range(1, 4)]
        for h in hubs:
            h.subscribe("jobs.resize", group="workers", callback=lambda m: None)
        dash = mphub.connect(addr, authkey=KEY, name="dashboard[3310]")
        dash.subscribe("sensors.>", callback=lambda m: None)
        billing = mphub.connect(addr, authkey=KEY, name="billing-service")
        billing.serve("orders.price", lambda body: {"price": 42}, group="billing")
        audit = stock(addr, "audit-archiver", ">")  # subscribes to everything, reads nothing
        ingest = stock(addr, "ingest-api[2211]")
        jobs = mphub.connect(addr, authkey=KEY, name="job-scheduler")
        shop = mphub.connect(addr, authkey=KEY, name="web-shop[4412]")

        def traffic():
            i = 0
            while not stop.is_set():
                for room in ("kitchen", "hall", "lab"):
                    ingest.send((f"sensors.temp.{room}", {"c": 21.5, "n": i}))
                ingest.send(("sensors.door.hall", {"open": i % 2 == 0, "blob": bytes(2048)}))
                if i % 3 == 0:
                    jobs.publish("jobs.resize", {"file": f"img-{i}.png", "px": 640})
                if i % 20 == 0:
                    shop.request("orders.price", {"sku": i}, timeout=5)
                i += 1
                time.sleep(0.0005)  # paces the traffic so the page shows steady rates; syncs nothing

        threading.Thread(target=traffic, daemon=True).start()
        with tempfile.TemporaryDirectory() as profile, Browser(profile, width=1360, height=1000) as browser:
            page = browser.open(http + "/")
            page.wait_for_text(["audit-archiver", "of the outbound limit"], selector="#warnings", timeout=60)
            page.wait_for("document.querySelectorAll('#topics tbody tr').length >= 5", timeout=30)
            # Rates need two updates: wait until the page shows them instead of a dash.
            page.wait_for("!['t-in', 't-out'].some((id) => document.getElementById(id).textContent === '\\u2013')",
                          timeout=30)
            page.screenshot(out)
        print(f"wrote {out}")
        audit.close()
    finally:
        stop.set()
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "docs" / "images" / "status.png"))
