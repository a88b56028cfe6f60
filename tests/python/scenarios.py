"""Scenarios that use only the standard library's multiprocessing.connection.Client.

pytest runs each one in-process (CPython 3.11) and, through this file as a script, under
CPython 3.13:

    python3.13 tests/python/scenarios.py NAME HOST:PORT AUTHKEY_HEX

Each scenario asserts what a user would see and raises on any difference.
"""

import os
import sys
from multiprocessing.connection import Client

# --------------------------------------------------------------------------- helpers


def connect(addr, key):
    return Client(addr, authkey=key)


def barrier(conn, token="sync"):
    """Send $ping and return every message that arrived before the $pong."""
    conn.send(("$ping", token))
    before = []
    while True:
        msg = conn.recv()
        if msg == ("$pong", token):
            return before
        before.append(msg)


def subscribe(conn, arg):
    conn.send(("$sub", arg))
    reply = conn.recv()
    assert reply == ("$ok", ("$sub", arg)), reply


# The NATS wildcard rules as a user sees them: each pattern and the topics it receives, in order,
# when WILDCARD_TOPICS are published (on one node or across a cluster).
WILDCARD_TOPICS = ["a", "a.b", "a.b.c", "x.b"]
WILDCARD_EXPECTED = {
    "a.*": ["a.b"],
    "a.>": ["a.b", "a.b.c"],
    ">": ["a", "a.b", "a.b.c", "x.b"],
    "*.b": ["a.b", "x.b"],
    "a.b.c": ["a.b.c"],
}

# --------------------------------------------------------------------------- scenarios


def scenario_publish_reaches_subscriber_unchanged(addr, key):
    sub, pub = connect(addr, key), connect(addr, key)
    subscribe(sub, "sensors.temp")
    payloads = [{"i": 1, "v": 21.5}, b"\x00" * 100_000, ("nested", [1, 2.5, None]), "ü" * 10, 2**100]
    for p in payloads:
        pub.send(("sensors.temp", p))
    barrier(pub)
    got = [sub.recv() for _ in payloads]
    assert got == [("sensors.temp", p) for p in payloads], got
    assert barrier(sub) == []


def scenario_subscribe_acknowledges_with_ok(addr, key):
    c = connect(addr, key)
    c.send(("$sub", "a.*"))
    assert c.recv() == ("$ok", ("$sub", "a.*"))
    c.send(("$sub", ("jobs.*", "workers")))
    assert c.recv() == ("$ok", ("$sub", ("jobs.*", "workers")))
    c.send(("$unsub", "a.*"))
    assert c.recv() == ("$ok", ("$unsub", "a.*"))
    c.send(("$unsub", ("jobs.*", "workers")))
    assert c.recv() == ("$ok", ("$unsub", ("jobs.*", "workers")))


def scenario_ping_echoes_every_token_kind(addr, key):
    c = connect(addr, key)
    for token in [None, True, False, 0, -7, 2**40, 2**100, -(2**70), "tök", b"\x00raw"]:
        c.send(("$ping", token))
        assert c.recv() == ("$pong", token), token


def scenario_unsubscribe_stops_delivery(addr, key):
    sub, pub = connect(addr, key), connect(addr, key)
    subscribe(sub, "u.t")
    pub.send(("u.t", 1))
    barrier(pub)
    assert sub.recv() == ("u.t", 1)
    sub.send(("$unsub", "u.t"))
    assert sub.recv() == ("$ok", ("$unsub", "u.t"))
    pub.send(("u.t", 2))
    barrier(pub)
    assert barrier(sub) == []


def scenario_bad_messages_get_errors_and_the_connection_stays(addr, key):
    c = connect(addr, key)
    bad = [
        ("a", 1, 2), ["a", 1], {"a": 1}, 5, None, (1, 2), ("a.*", 1), ("a..b", 1), ("a b", 1),
        ("", 1), ("$nope", 1), ("$sub", 5), ("$sub", "a.>.b"), ("$sub", ("a", "g.h")),
        ("$ping", [1]), ("x" * 300, 1),
    ]
    for obj in bad:
        c.send(obj)
        reply = c.recv()
        assert isinstance(reply, tuple) and reply[0] == "$error", (obj, reply)
        assert isinstance(reply[1], str) and len(reply[1]) > 10, reply
    assert barrier(c) == []


def scenario_close_flushes_then_closes(addr, key):
    c = connect(addr, key)
    c.send(("$ping", 1))
    c.send("close")
    assert c.recv() == ("$pong", 1)
    try:
        c.recv()
    except EOFError:
        return
    raise AssertionError("connection stayed open after close")


def scenario_own_messages_come_back(addr, key):
    c = connect(addr, key)
    subscribe(c, "echo.>")
    c.send(("echo.me", "hi"))
    assert barrier(c) == [("echo.me", "hi")]


def scenario_one_copy_per_connection_however_many_patterns(addr, key):
    sub, pub = connect(addr, key), connect(addr, key)
    for p in ["m.a", "m.*", "m.>", ">"]:
        subscribe(sub, p)
    pub.send(("m.a", "once"))
    barrier(pub)
    assert barrier(sub) == [("m.a", "once")]


SCENARIOS = {name[len("scenario_"):]: f for name, f in globals().items() if name.startswith("scenario_")}


def parse_addr(text):
    if text.startswith("unix:@"):
        return "\0" + text[len("unix:@"):]
    if text.startswith("unix:"):
        return text[len("unix:"):]
    host, _, port = text.rpartition(":")
    return (host.strip("[]"), int(port))


if __name__ == "__main__":
    name, addr, key = sys.argv[1], parse_addr(sys.argv[2]), bytes.fromhex(sys.argv[3])
    SCENARIOS[name](addr, key or None)
    print("ok", name, "%d.%d" % sys.version_info[:2])
