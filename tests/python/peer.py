"""A stock-Client peer for cross-version tests, run under another CPython.

    python peer.py pub ADDR KEY_HEX TOPIC N   # publishes N messages, then waits for its $pong
    python peer.py sub ADDR KEY_HEX PATTERN N # prints "ready", then checks N messages in order
"""

import sys
from multiprocessing.connection import Client

from scenarios import barrier, parse_addr, subscribe


def payload(i):
    return {"i": i, "text": "ü" * (i % 7), "blob": bytes(i % 251), "big": 2**70 + i, "f": i / 3}


def main():
    mode, addr, key, topic, n = sys.argv[1], parse_addr(sys.argv[2]), bytes.fromhex(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    c = Client(addr, authkey=key)
    if mode == "pub":
        for i in range(n):
            c.send((topic, payload(i)))
        barrier(c)
    else:
        subscribe(c, topic)
        print("ready", flush=True)
        for i in range(n):
            msg = c.recv()
            assert msg[1] == payload(i), (i, msg)
    print("ok", mode, "%d.%d" % sys.version_info[:2], flush=True)


if __name__ == "__main__":
    main()
