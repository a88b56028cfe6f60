"""Redis pub/sub with redis-py, publishes pipelined 1,000 at a time."""

import pickle

from .redis_plain import client, start, subscribe  # noqa: F401

NAME, LABEL = "redis-pipe", "Redis + redis-py, pipelined"


def publisher(server, paced=False):
    if paced:  # one message at a time: a pipeline would only add delay
        from .redis_plain import publisher as plain
        return plain(server)
    r = client(server)
    pipe = r.pipeline(transaction=False)
    pending = [0]

    def send(topic, obj):
        pipe.publish(topic, pickle.dumps(obj))
        pending[0] += 1
        if pending[0] >= 1000:
            pipe.execute()
            pending[0] = 0

    def done():
        pipe.execute()
        r.close()
    return send, done
