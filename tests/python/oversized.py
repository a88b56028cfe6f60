"""A stock client sends one frame far over the broker's --max-frame and reads the reason.

    python oversized.py ADDR KEY_HEX SIZE   # prints "ok oversized X.Y" when all went as expected

pytest imports `send_oversized` (CPython 3.11) and runs this file under CPython 3.13.
"""

import sys
from multiprocessing.connection import Client

from scenarios import parse_addr


def send_oversized(addr, key, size):
    """Sends `size` bytes in one frame; returns the broker's reply, having checked the close."""
    c = Client(addr, authkey=key)
    c.send_bytes(bytes(size))  # must not fail mid-send: the broker reads the rest and discards it
    reply = c.recv()
    try:
        c.recv()
    except EOFError:
        return reply
    raise AssertionError("the connection stayed open after an oversized frame")


if __name__ == "__main__":
    got = send_oversized(parse_addr(sys.argv[1]), bytes.fromhex(sys.argv[2]), int(sys.argv[3]))
    assert got[0] == "$error" and "exceeds the limit" in got[1], got
    print("ok oversized {}.{}".format(*sys.version_info[:2]), flush=True)
