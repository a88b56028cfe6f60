"""Redis pub/sub (Debian's redis-server, no persistence) with redis-py, one PUBLISH per call.
Payloads are pickled by the client, as a Python user would."""

import pickle
import subprocess

import redis

from . import Server, free_port, wait_port

NAME, LABEL = "redis", "Redis + redis-py"


def start(_port=None):
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--client-output-buffer-limit", "pubsub 0 0 0",
                          "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    wait_port(port)
    return Server([p], f"127.0.0.1:{port}")


def client(server):
    host, port = server.addr.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port))


def publisher(server, paced=False):
    r = client(server)
    return (lambda topic, obj: r.publish(topic, pickle.dumps(obj))), r.close


def subscribe(server, topic, ready):
    r = client(server)
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(topic)
    while ps.get_message(timeout=5.0) is None and not ps.subscribed:
        pass
    ready()
    while True:
        m = ps.get_message(timeout=30.0)
        if m is None:
            continue
        yield pickle.loads(m["data"])
