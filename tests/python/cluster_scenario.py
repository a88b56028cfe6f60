"""A cross-node round trip with nothing but the standard library, for any CPython:

    python3.13 tests/python/cluster_scenario.py HOST:PORT_A HOST:PORT_B AUTHKEY_HEX

A subscriber on node B, a publisher on node A; waits (with probes) until B's interest has
reached A through NATS, then checks that every payload arrives unchanged and in order.
"""

import sys
from multiprocessing.connection import Client

from scenarios import parse_addr, subscribe


def main(a, b, key):
    sub, pub = Client(b, authkey=key), Client(a, authkey=key)
    subscribe(sub, "py.*")
    i = 0
    while not sub.poll(0.05):  # retried probe: interest travels through NATS asynchronously
        assert i < 600, "node A never saw node B's subscription"
        pub.send(("py.probe", i))
        i += 1
    payloads = [{"v": sys.version_info[:2]}, b"\x00" * 70_000, ("t", [1, 2.5, None]), 2**80]
    for p in payloads:
        pub.send(("py.data", p))
    pub.send(("py.end", None))
    got = []
    while True:
        m = sub.recv()
        if m == ("py.end", None):
            break
        if m[0] != "py.probe":
            got.append(m)
    assert got == [("py.data", p) for p in payloads], got


if __name__ == "__main__":
    main(parse_addr(sys.argv[1]), parse_addr(sys.argv[2]), bytes.fromhex(sys.argv[3]))
    print("ok", "%d.%d" % sys.version_info[:2])
