"""NATS (Debian's nats-server) with nats-py (asyncio). Payloads pickled by the client. The
threaded harness drives nats-py on its own event loop thread, handing it publishes 1,000 at a
time (one at a time when paced for latency)."""

import asyncio
import pickle
import subprocess
import threading

import nats

from . import Server, free_port, wait_port

NAME, LABEL = "nats", "NATS + nats-py"


def start(_port=None):
    port = free_port()
    p = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return Server([p], f"nats://127.0.0.1:{port}")


class _Loop:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


def publisher(server, paced=False):
    lp = _Loop()
    nc = lp.run(nats.connect(server.addr, pending_size=64 * 1024 * 1024))
    batch = []

    async def flush_batch(items):
        for topic, data in items:
            await nc.publish(topic, data)

    def send(topic, obj):
        batch.append((topic, pickle.dumps(obj)))
        if paced or len(batch) >= 1000:
            lp.run(flush_batch(list(batch)))
            batch.clear()

    def done():
        lp.run(flush_batch(list(batch)))
        lp.run(nc.flush(timeout=60))
        lp.run(nc.close())
    return send, done


def subscribe(server, topic, ready):
    import queue
    q = queue.SimpleQueue()
    lp = _Loop()

    async def go():
        nc = await nats.connect(server.addr)

        async def cb(msg):
            q.put(msg.data)
        await nc.subscribe(topic, cb=cb, pending_msgs_limit=10_000_000, pending_bytes_limit=2**31)
        await nc.flush()
        return nc
    lp.run(go())
    ready()
    while True:
        yield pickle.loads(q.get())
