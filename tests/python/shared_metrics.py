"""`$metrics` batches in which the same dict, tuple and list appear more than once, pickled by
the stock `pickle.dumps` at every protocol and sent with `Connection.send_bytes`, for any CPython:

    python3.13 tests/python/shared_metrics.py HOST:PORT AUTHKEY_HEX

CPython's pickler writes the second appearance of an object as a memo reference, and at
protocol 1 and up memoizes a dict or list while it is still empty, filling it afterwards. The
broker must read every batch as Python would: silence, then the totals below on /metrics.
"""

import pickle
import sys
from multiprocessing.connection import Client

from scenarios import barrier, parse_addr


def batch(proto):
    """One batch per protocol, its families suffixed with the protocol."""
    p = f"p{proto}"
    lbl = {"queue": "a"}  # under two incs: the second is a memo reference
    names = ("queue", "host")  # the label names of two families
    opts = {"buckets": [0.5, 1.0]}  # the options of two histograms
    series = {"queue": "b", "host": "h1"}
    inc = ("inc", f"shared_{p}_total", lbl, 1)  # the same op tuple twice
    return [
        ("declare", f"shared_{p}_total", "counter", "Shared", ("queue",), {}),
        inc,
        inc,
        ("inc", f"shared_{p}_total", lbl, 1),
        ("declare", f"shared_{p}_seconds", "histogram", "H", names, opts),
        ("declare", f"shared_{p}_other", "histogram", "H", names, opts),
        ("observe", f"shared_{p}_seconds", series, 0.7),
        ("observe", f"shared_{p}_seconds", series, 0.2),
        ("declare", f"shared_{p}_gauge", "gauge", "G", names, {"mode": "max"}),  # kept after close
        ("set", f"shared_{p}_gauge", series, 2**70),
    ]


def main(addr, key):
    conn = Client(addr, authkey=key)
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        conn.send_bytes(pickle.dumps(("$metrics", batch(proto)), protocol=proto))
    errors = barrier(conn)
    assert errors == [], errors
    conn.close()


if __name__ == "__main__":
    main(parse_addr(sys.argv[1]), bytes.fromhex(sys.argv[2]))
    print("ok", "%d.%d" % sys.version_info[:2])
