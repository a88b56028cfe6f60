"""Helpers for the cluster tests: mphub nodes on NATS, a cross-node readiness barrier, metrics."""

import contextlib
import itertools
import os
import re
import signal
import socket
import time
import urllib.request
from multiprocessing.connection import Client

from conftest import KEY, wait_until as poll
from scenarios import subscribe

_probe_ids = itertools.count()


def settle(nodes, timeout=30):
    """Returns once a publish on any node reaches a fresh subscriber on every other node.

    NATS spreads interest between its servers asynchronously and in order, so once a probe
    subscription made now on Y is seen from X, every subscription made earlier on Y is too.
    A node's own messages take no NATS path, so this is the cluster's `$ping`.
    """
    for y in nodes:
        topic = f"probe.{next(_probe_ids)}"
        probe = Client(y.address, authkey=KEY)
        subscribe(probe, topic)
        for x in nodes:
            if x is y:
                continue
            pub = Client(x.address, authkey=KEY)
            deadline = time.monotonic() + timeout
            i = 0
            while not probe.poll(0.05):  # a condition wait with a timeout, retried
                assert time.monotonic() < deadline, f"{x.address} never reached {y.address}"
                pub.send((topic, i))
                i += 1
            # Everything this publisher sent comes in order: wait for a last one, so no probe
            # is still in flight when the test starts counting.
            pub.send((topic, "last"))
            while probe.recv() != (topic, "last"):
                pass
            pub.close()
        probe.close()


def scrape(node):
    """The node's metrics as {series: value}."""
    text = urllib.request.urlopen(node.metrics_url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def healthz(node):
    url = node.metrics_url.replace("/metrics", "/healthz")
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def recv_until(conn, marker, timeout=60):
    """Everything `conn` receives before `marker` (but `settle`'s probes, which a `>` subscriber
    sees too); fails if the marker does not come."""
    got = []
    while True:
        assert conn.poll(timeout), f"no {marker!r} within {timeout}s; got {len(got)} before"
        m = conn.recv()
        if m == marker:
            return got
        if not (isinstance(m, tuple) and str(m[0]).startswith("probe.")):
            got.append(m)


def wait_for_interest(server, subject, timeout=30):
    """Returns once nats-server `server` routes a message published on `subject` to a subscriber.

    The readiness condition for a publisher that is not an mphub node (`raw_nats_publish`):
    `settle` is a barrier for publishes between the nodes of one hub, while a plain NATS
    client's publish goes wherever the server's subscription list says when it arrives.
    """
    wait_until(lambda: server.interest(subject), timeout, what=f"a subscription for {subject}")


def raw_nats_publish(url, subject, payload):
    """Publishes through NATS's text protocol, as any non-mphub NATS client would."""
    host, port = url.removeprefix("nats://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"INFO ")
        s.sendall(b'CONNECT {"verbose":false}\r\n')
        s.sendall(b"PUB %s %d\r\n%s\r\nPING\r\n" % (subject.encode(), len(payload), payload))
        assert f.readline() == b"PONG\r\n"


@contextlib.contextmanager
def frozen(proc):
    """SIGSTOPs a process (an mphub node's or nats-server's) for the block: it keeps its
    connections but reads and writes nothing, like a VM stall or a long GC pause."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def drain(conn, count, timeout=60):
    """The next `count` messages `conn` receives (settle's probes left out)."""
    got = []
    while len(got) < count:
        assert conn.poll(timeout), f"only {len(got)} of {count} within {timeout}s"
        m = conn.recv()
        if not (isinstance(m, tuple) and str(m[0]).startswith("probe.")):
            got.append(m)
    return got


def small_receive_buffer(conn, size=64 << 10):
    """Shrinks the socket receive buffer of client `conn`: what the broker sends it then waits
    in the broker's queue for it, where the outbound limit applies, not in the kernel (which
    on loopback would take tens of MiB)."""
    s = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    finally:
        s.close()  # the duplicate only


def wait_until(condition, timeout=60, what="the condition"):
    """Returns once `condition()` holds; fails after `timeout` s."""
    assert poll(condition, timeout), f"{what} did not hold within {timeout}s"
