"""The Python side of client-rs's interop tests, stock multiprocessing.connection only.

    peer.py listener KEY_HEX              a Listener on a free port: prints "port N", accepts one
                                          connection, checks EXPECTED arrive in order, sends
                                          EXPECTED back, then answers `("echo", x)` until "close"
    peer.py publish ADDR KEY_HEX TOPIC    publishes every EXPECTED object to TOPIC via the broker
    peer.py subscribe ADDR KEY_HEX TOPIC  prints "ready", then checks EXPECTED arrive on TOPIC
"""

import sys
from multiprocessing.connection import Client, Listener

# Keep in step with client-rs/tests/common/mod.rs `expected()`.
EXPECTED = [
    {"name": "sensor-7", "v": 21.5, "tags": ["a", "b"], "ok": True, "none": None},
    [1, 2, 3],
    (1, "two", 3.0),
    "ü text ✓",
    b"\x00\x01bytes",
    -0.125,
    None,
    True,
    False,
    2**100,
    -(2**70),
    -5,
]


def check(got, i):
    want = EXPECTED[i]
    if got != want or type(got) is not type(want):
        raise SystemExit(f"object {i}: got {got!r}, want {want!r}")


def parse(addr):
    host, port = addr.rsplit(":", 1)
    return (host, int(port))


def main():
    mode = sys.argv[1]
    tag = "%d.%d" % sys.version_info[:2]
    if mode == "listener":
        with Listener(("127.0.0.1", 0), authkey=bytes.fromhex(sys.argv[2])) as listener:
            print("port", listener.address[1], flush=True)
            with listener.accept() as conn:
                for i in range(len(EXPECTED)):
                    check(conn.recv(), i)
                for obj in EXPECTED:
                    conn.send(obj)
                while True:
                    msg = conn.recv()
                    if msg == "close":
                        break
                    conn.send(("echo", msg))
    elif mode == "publish":
        conn = Client(parse(sys.argv[2]), authkey=bytes.fromhex(sys.argv[3]))
        for obj in EXPECTED:
            conn.send((sys.argv[4], obj))
        conn.send(("$ping", 1))
        assert conn.recv() == ("$pong", 1)
    elif mode == "subscribe":
        conn = Client(parse(sys.argv[2]), authkey=bytes.fromhex(sys.argv[3]))
        conn.send(("$sub", sys.argv[4]))
        assert conn.recv() == ("$ok", ("$sub", sys.argv[4]))
        print("ready", flush=True)
        for i in range(len(EXPECTED)):
            topic, obj = conn.recv()
            check(obj, i)
    print("ok", mode, tag, flush=True)


if __name__ == "__main__":
    main()
