"""A stock client under another CPython (3.13 pickles with protocol 4 and STACK_GLOBAL):

    python3.13 tests/python/payload_peer.py HOST:PORT AUTHKEY_HEX TOPIC

Publishes a payload that would call os.system on whoever unpickles it, expects
("$error", "payload refused: ...") before the barrier's pong, then publishes a datetime, and
prints the error text.
"""

import datetime
import os
import sys
from multiprocessing.connection import Client


class RunsCommand:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    c = Client((host, int(port)), authkey=bytes.fromhex(sys.argv[2]))
    topic = sys.argv[3]
    c.send((topic, RunsCommand()))
    c.send(("$ping", 1))
    reply = c.recv()
    assert reply[0] == "$error", reply
    assert c.recv() == ("$pong", 1)
    c.send((topic, datetime.datetime(2026, 11, 30, 12, 0)))
    c.send(("$ping", 2))
    assert c.recv() == ("$pong", 2)
    print(reply[1])


if __name__ == "__main__":
    main()
