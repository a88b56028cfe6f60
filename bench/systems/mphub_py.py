"""mphub with client-py on both ends."""

import sys

from . import ROOT
from .mphub_stock import KEY, start  # noqa: F401  (same broker)

sys.path.insert(0, str(ROOT / "client-py/src"))
import mphub  # noqa: E402

NAME, LABEL = "mphub-py", "mphub + client-py"


def publisher(server, paced=False):
    hub = mphub.connect(server.addr, authkey=KEY)
    return hub.publish, hub.close


def subscribe(server, topic, ready):
    hub = mphub.connect(server.addr, authkey=KEY, max_pending=10_000_000)
    sub = hub.subscribe(topic)
    ready()
    for msg in sub:
        yield msg.payload
