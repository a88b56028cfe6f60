"""ZeroMQ: pyzmq PUB -> an XSUB/XPUB proxy process -> SUB. High-water marks are 0 (unlimited)
on every socket, so nothing is dropped for want of queue space."""

import pickle
import subprocess
import sys
from pathlib import Path

import zmq

from . import Server, free_port, wait_port

NAME, LABEL = "zmq", "ZeroMQ XPUB/XSUB proxy + pyzmq"


def proxy(front, back):
    ctx = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    for s in (xsub, xpub):
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
    xsub.bind(f"tcp://127.0.0.1:{front}")
    xpub.bind(f"tcp://127.0.0.1:{back}")
    zmq.proxy(xsub, xpub)


def start(_port=None):
    front, back = free_port(), free_port()
    p = subprocess.Popen([sys.executable, "-m", "systems.zmq_proxy", str(front), str(back)],
                         cwd=str(Path(__file__).resolve().parents[1]))
    wait_port(front)
    wait_port(back)
    return Server([p], f"{front},{back}")


def publisher(server, paced=False):
    front = server.addr.split(",")[0]
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.PUB)
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(f"tcp://127.0.0.1:{front}")

    def send(topic, obj):
        s.send_multipart([topic.encode(), pickle.dumps(obj)])

    def done():
        s.close(linger=-1)  # blocks until everything queued is handed to the proxy
    return send, done


def subscribe(server, topic, ready):
    back = server.addr.split(",")[1]
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, 0)
    s.connect(f"tcp://127.0.0.1:{back}")
    s.setsockopt(zmq.SUBSCRIBE, topic.encode())
    ready()
    while True:
        _, data = s.recv_multipart()
        yield pickle.loads(data)


if __name__ == "__main__":
    proxy(int(sys.argv[1]), int(sys.argv[2]))
