"""`$hello` with a stock Client, run in-process (3.11) or as a script under another CPython:

    python hello_scenario.py HOST:PORT AUTHKEY_HEX NAME

Names the connection NAME, checks the answers to good and bad hellos (a good one comes back
whole, at every pickle protocol, and reads the same with the C and the pure-Python unpickler),
subscribes to `hello.world` and prints "ready"; stays connected until stdin closes.
"""

import pickle
import pickletools
import sys
from multiprocessing.connection import Client

from scenarios import barrier, parse_addr, subscribe


def name_a_connection(addr, key, name):
    c = Client(addr, authkey=key)
    c.send(("$hello", {"name": name, "lang": "python", "version": sys.version_info[:2]}))
    assert c.recv() == ("$ok", ("$hello", {"name": name, "lang": "python", "version": sys.version_info[:2]}))
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        extra = {"big": 2**80, "none": None, "list": [1.5, "é"], "nested": {"k": (1, 2)}}
        if protocol >= 3:
            extra["bytes"] = b"\x00\xff"  # older protocols pickle bytes as a call: refused
        request = ("$hello", {"name": name, **extra})
        for body in (pickle.dumps(request, protocol), pickletools.optimize(pickle.dumps(request, protocol))):
            c.send_bytes(body)
            answer = c.recv_bytes()
            assert pickle.loads(answer) == pickle._loads(answer) == ("$ok", request), (protocol, answer)
    for bad, why in [
        (("$hello", "just a str"), "$hello takes a dict"),
        (("$hello", {"name": ""}), "empty"),
        (("$hello", {"name": "x" * 65}), "at most 64"),
        (("$hello", {"name": "two\nlines"}), "printable"),
        (("$hello", {"nom": name}), 'no "name"'),
    ]:
        c.send(bad)
        reply = c.recv()
        assert reply[0] == "$error" and why in reply[1], reply
    assert barrier(c) == []  # still open and in order
    subscribe(c, "hello.world")
    return c


if __name__ == "__main__":
    conn = name_a_connection(parse_addr(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3])
    print("ready", flush=True)
    sys.stdin.read()
    conn.close()
