"""CPython 3.13 and 3.11 clients on one broker, each way round."""

import subprocess
from multiprocessing.connection import Client

from conftest import KEY, ROOT, python313, run_py313
from peer import payload
from scenarios import subscribe

PEER = ROOT / "tests/python/peer.py"


def test_a_313_publisher_reaches_a_311_subscriber(broker):
    sub = Client(broker.address, authkey=KEY)
    subscribe(sub, "x.v")
    r = run_py313(PEER, "pub", broker.addrs[0], KEY.hex(), "x.v", 500)
    assert r.returncode == 0, r.stderr
    for i in range(500):
        assert sub.recv() == ("x.v", payload(i))


def test_a_311_publisher_reaches_a_313_subscriber(broker):
    proc = subprocess.Popen(
        [str(python313()), str(PEER), "sub", broker.addrs[0], KEY.hex(), "x.v", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        pub = Client(broker.address, authkey=KEY)
        for i in range(500):
            pub.send(("x.v", payload(i)))
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "ok sub 3.13" in out
    finally:
        proc.kill()
