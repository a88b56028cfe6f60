"""One adapter per system the comparison measures; see bench/compare.py.

Each adapter module defines:
    NAME, LABEL                      short key and the name shown in tables
    start(port_base) -> Server       starts the server process(es) on loopback
    publisher(server) -> (send, done)   send(topic, obj); done() returns once all is sent
    subscribe(server, topic, ready)  -> iterator of received payload objects; calls ready()
                                        once the subscription is in place
Server has .procs (the server processes, for CPU accounting), .addr, .stop().
"""

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The adapters, in the order the comparison runs them and the tables list them.
SYSTEMS = ["mphub_stock", "mphub_py", "handhub", "redis_plain", "redis_pipelined", "nats_py", "zmq_proxy"]


class Server:
    def __init__(self, procs, addr):
        self.procs = procs
        self.addr = addr

    def cpu_seconds(self):
        total = 0.0
        for p in self.procs:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_port(port, timeout=10.0):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)  # a server starting up: nothing to synchronise on but the port
    raise RuntimeError(f"nothing listening on {port}")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
