"""client-py run under another CPython: a round trip through its own subscription, then 100
publishes to `from313` for a stock peer to check.

    PYTHONPATH=client-py/src python clientpy_peer.py ADDR KEY_HEX
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client-py" / "src"))

import mphub  # noqa: E402
from peer import payload  # noqa: E402


def publish(addr, key):
    with mphub.connect(addr, authkey=key) as hub:
        sub = hub.subscribe("self.>")
        hub.publish("self.check", {"n": 1})
        assert sub.next(timeout=10) == ("self.check", {"n": 1})
        for i in range(100):
            hub.publish("from313", payload(i))
    print("ok %d.%d" % sys.version_info[:2], flush=True)


if __name__ == "__main__":
    publish(sys.argv[1], bytes.fromhex(sys.argv[2]))
