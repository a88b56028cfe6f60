"""The metrics HTTP listener can never starve the broker: idle connections are closed after
10 s and at most 256 are held at once, so clients still connect and /metrics still answers."""

import resource
import socket
import subprocess
import sys

from conftest import KEY, ROOT
from test_metrics import healthz, scrape

IDLE_DEADLINE = 30  # seconds; the broker closes idle HTTP connections after 10


def metrics_hostport(broker):
    hostport = broker.metrics_url.split("//", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def closed_by_peer(sock):
    """True when the broker closes `sock` (EOF or reset) before the deadline."""
    sock.settimeout(IDLE_DEADLINE)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_http_connections_are_closed_whether_fresh_or_kept_alive(start_broker):
    b = start_broker(metrics="127.0.0.1:0")
    addr = metrics_hostport(b)
    fresh = [socket.create_connection(addr) for _ in range(20)]
    kept = socket.create_connection(addr)
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: mphub\r\n\r\n")
    kept.settimeout(IDLE_DEADLINE)
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    assert closed_by_peer(kept), "a kept-alive connection idle after its response stayed open"
    assert all(closed_by_peer(s) for s in fresh), "an idle connection that never sent a request stayed open"
    assert healthz(b) == 200


def test_a_flood_of_idle_http_connections_leaves_descriptors_for_clients_and_scrapes(start_broker):
    b = start_broker(metrics="127.0.0.1:0")
    # A descriptor budget the flood alone would exhaust (on this machine the broker raised its
    # soft limit to the hard one): 400, of which the HTTP listener may hold at most 256.
    resource.prlimit(b.proc.pid, resource.RLIMIT_NOFILE, (400, 400))
    addr = metrics_hostport(b)
    flood = [socket.create_connection(addr) for _ in range(600)]
    try:
        # A stock client still gets through the handshake (in its own process: one whose
        # connection the broker cannot accept would wait forever for the challenge).
        host, port = b.address
        p = subprocess.run(
            [sys.executable, str(ROOT / "tests/python/connect_burst.py"), host, str(port), KEY.decode(), "5", "20"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert p.stdout.split()[:2] == ["5", "5"], p.stdout + p.stderr
        assert b.wait_for_log("metrics endpoint: connection limit reached"), b.log()
        # Every idle connection is closed: past the cap at once, the rest when idle too long.
        assert all(closed_by_peer(s) for s in flood)
    finally:
        for s in flood:
            s.close()
    assert scrape(b)["mphub_connections_total"] >= 5
