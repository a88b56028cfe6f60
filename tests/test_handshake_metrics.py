"""What the handshake phase shows an operator: a connect-and-close (a port probe, a load
balancer's health check) is not an authentication failure, and connections still in the
handshake are visible."""

import socket
import struct
from multiprocessing.connection import Client

from conftest import KEY
from scenarios import barrier
from test_metrics import scrape

AUTH_KINDS = ("wrong_key", "malformed", "unknown_digest", "timeout", "closed", "bad_frame", "io")


def auth_failures(values):
    return {k: values[f"mphub_auth_failures_total{{kind={k}}}"] for k in AUTH_KINDS}


def read_challenge(sock):
    """The broker's first frame: it speaks first when it has an authkey."""
    sock.settimeout(30)
    header = sock.recv(4, socket.MSG_WAITALL)
    (n,) = struct.unpack("!i", header)
    return sock.recv(n, socket.MSG_WAITALL)


def test_a_connection_closed_before_sending_a_byte_is_a_probe_not_an_authentication_failure(start_broker):
    b = start_broker("--log-level", "debug", metrics="127.0.0.1:0")
    for _ in range(5):
        socket.create_connection(b.address).close()
    # One that waits for the challenge first, then hangs up, as a TCP health check may.
    s = socket.create_connection(b.address)
    read_challenge(s)
    s.close()
    assert b.wait_for_log("closed before sending a byte", count=6), b.log()
    values = scrape(b)
    assert values["mphub_connections_probed_total"] == 6
    assert set(auth_failures(values).values()) == {0}
    assert "authentication failed" not in b.log()


def test_a_peer_that_hangs_up_mid_handshake_is_still_an_authentication_failure(start_broker):
    b = start_broker(metrics="127.0.0.1:0")
    s = socket.create_connection(b.address)
    read_challenge(s)
    s.sendall(struct.pack("!i", 20) + b"{sha256}")  # half a response, then gone
    s.close()
    assert b.wait_for_log("authentication failed"), b.log()
    values = scrape(b)
    assert auth_failures(values)["closed"] == 1
    assert values["mphub_connections_probed_total"] == 0


def test_connections_still_in_the_handshake_are_visible_as_a_gauge(start_broker):
    b = start_broker("--log-level", "debug", metrics="127.0.0.1:0")
    done = Client(b.address, authkey=KEY)
    barrier(done)
    silent = [socket.create_connection(b.address) for _ in range(50)]
    for s in silent:
        read_challenge(s)  # accepted, and the handshake has begun
    values = scrape(b)
    assert values["mphub_handshakes_in_progress"] == 50
    assert values["mphub_connections"] == 1
    for s in silent:
        s.close()
    assert b.wait_for_log("closed before sending a byte", count=50), b.log()
    assert scrape(b)["mphub_handshakes_in_progress"] == 0
