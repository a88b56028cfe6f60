"""mphub with the stock multiprocessing.connection.Client on both ends."""

import os
import pickle
import re
import subprocess
from multiprocessing.connection import Client

from . import ROOT, Server

NAME, LABEL = "mphub-stock", "mphub + stock Client"
KEY = b"bench-key"


def start(_port=None, *extra, listen="127.0.0.1:0"):
    """An mphub broker on `listen` (a free TCP port unless told, or `unix:/path`); `extra` flags
    are added (bench/cluster.py: --cluster)."""
    binary = os.environ.get("MPHUB_BIN", str(ROOT / "target/release/mphub"))
    env = {**os.environ, "MPHUB_AUTHKEY": KEY.decode()}
    p = subprocess.Popen([binary, "--listen", listen, "--metrics", "off", "--outbound-limit", "2GiB",
                          "--log-level", "warn,mphub_broker=info", *extra], stderr=subprocess.PIPE, text=True, env=env)
    for line in p.stderr:
        m = re.search(r"mphub listening on (\S+)", line)
        if m:
            import threading
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return Server([p], m.group(1))
    raise RuntimeError("mphub did not start")


def _addr(server):
    """What the stock `Client` takes: a path (AF_UNIX) or a (host, port) pair."""
    if server.addr.startswith("unix:"):
        return server.addr.removeprefix("unix:")
    host, port = server.addr.rsplit(":", 1)
    return host, int(port)


def publisher(server, paced=False):
    c = Client(_addr(server), authkey=KEY)

    def done():
        c.send(("$ping", 1))
        while c.recv() != ("$pong", 1):
            pass
        c.close()
    return (lambda topic, obj: c.send((topic, obj))), done


def subscribe(server, topic, ready):
    c = Client(_addr(server), authkey=KEY)
    c.send(("$sub", topic))
    c.recv()
    ready()
    while True:
        yield c.recv()[1]


_ = pickle
