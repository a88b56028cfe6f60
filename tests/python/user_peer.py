"""A stock client run under another CPython (3.13 answers the handshake with {sha256}):

    python3.13 tests/python/user_peer.py HOST:PORT AUTHKEY_HEX FORBIDDEN_TOPIC ALLOWED_TOPIC

Publishes to FORBIDDEN_TOPIC, expects ("$error", "permission denied: ..."), then publishes to
ALLOWED_TOPIC and prints the error text it got. Exits non-zero on anything else.
"""

import sys
from multiprocessing.connection import Client


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    key = bytes.fromhex(sys.argv[2])
    forbidden, allowed = sys.argv[3], sys.argv[4]
    c = Client((host, int(port)), authkey=key)
    c.send((forbidden, "nope"))
    c.send(("$ping", 1))
    reply = c.recv()
    assert reply[0] == "$error" and "permission denied" in reply[1], reply
    assert c.recv() == ("$pong", 1)
    c.send((allowed, "from 3.13"))
    c.send(("$ping", 2))
    assert c.recv() == ("$pong", 2)
    print(reply[1])


if __name__ == "__main__":
    main()
