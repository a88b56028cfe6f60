"""mphub.aio: the same API on asyncio, against the real broker and stock clients."""

import asyncio
import threading
from multiprocessing.connection import Client

import pytest
from conftest import KEY
from mphub import aio, errors
from scenarios import barrier, subscribe


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_aio_publish_reaches_a_stock_subscriber_and_back(broker):
    stock = Client(broker.address, authkey=KEY)
    subscribe(stock, "a.>")

    async def main():
        async with await aio.connect(broker.addrs[0], authkey=KEY) as hub:
            sub = await hub.subscribe("b.*")
            await hub.publish("a.x", {"v": 1})
            await hub.flush()
            assert stock.recv() == ("a.x", {"v": 1})
            stock.send(("b.y", [1, 2]))
            msg = await sub.next(timeout=10)
            topic, payload = msg
            assert (topic, payload) == ("b.y", [1, 2])

    run(main())


def test_aio_async_for_ends_when_unsubscribed(broker):
    async def main():
        async with await aio.connect(broker.addrs[0], authkey=KEY) as hub:
            sub = await hub.subscribe("it")
            for i in range(1000):
                await hub.publish("it", i)
            await hub.flush()
            await sub.unsubscribe()
            return [m.payload async for m in sub]

    assert run(main()) == list(range(1000))


def test_aio_queue_group_request_and_callbacks(broker):
    async def main():
        async with await aio.connect(broker.addrs[0], authkey=KEY) as a, \
                await aio.connect(broker.addrs[0], authkey=KEY) as b:
            seen = []
            done = asyncio.Event()

            async def on_msg(msg):
                seen.append(msg.payload)
                if len(seen) == 100:
                    done.set()

            await a.subscribe("jobs", group="w", callback=on_msg)
            await b.subscribe("jobs", group="w", callback=on_msg)
            for i in range(100):
                await a.publish("jobs", i)
            await asyncio.wait_for(done.wait(), 10)
            assert sorted(seen) == list(range(100))

            async def double(x):
                return x * 2

            await b.serve("svc.double", double, group="d")
            assert await a.request("svc.double", 21, timeout=10) == 42

    run(main())


def test_aio_errors_are_the_typed_ones(broker):
    async def main():
        with pytest.raises(errors.AuthenticationError):
            await aio.connect(broker.addrs[0], authkey=b"wrong")
        async with await aio.connect(broker.addrs[0], authkey=KEY) as hub:
            sub = await hub.subscribe("q", max_pending=5)
            with pytest.raises(TimeoutError):
                await sub.next(timeout=0.05)
            with pytest.raises(errors.TimeoutError):
                await hub.request("svc.none", 1, timeout=0.1)
            for i in range(20):
                await hub.publish("q", i)
            await hub.flush()
            with pytest.raises(errors.SlowConsumerError) as e:
                await sub.next()
            assert e.value.dropped == 15 and sub.dropped == 15
            with pytest.raises(ValueError):
                await hub.publish("bad topic", 1)
        with pytest.raises(errors.ConnectionClosed):
            await hub.publish("q", 1)

    run(main())


def test_aio_close_sends_every_buffered_publish(broker):
    stock = Client(broker.address, authkey=KEY)
    subscribe(stock, "c")

    async def main():
        hub = await aio.connect(broker.addrs[0], authkey=KEY)
        for i in range(5000):
            await hub.publish("c", i)
        await hub.close()

    run(main())
    assert [stock.recv()[1] for _ in range(5000)] == list(range(5000))


def test_aio_reconnects_across_a_broker_restart(start_broker):
    first = start_broker()
    addr = first.addrs[0]
    restarted = threading.Event()

    async def main():
        loop = asyncio.get_running_loop()
        down, up = asyncio.Event(), asyncio.Event()
        hub = await aio.connect(
            addr, authkey=KEY, reconnect_wait=(0.01, 0.2), on_disconnected=down.set, on_reconnected=up.set,
        )
        sub = await hub.subscribe("r")
        await loop.run_in_executor(None, first.stop)
        await asyncio.wait_for(down.wait(), 10)
        await hub.publish("r", "buffered")
        await loop.run_in_executor(None, lambda: (start_broker(listen=(addr,)), restarted.set()))
        await asyncio.wait_for(up.wait(), 30)
        await hub.flush()
        assert await sub.next(timeout=10) == ("r", "buffered")
        await hub.close()

    run(main())
    assert restarted.is_set()


def test_aio_works_beside_a_stock_barrier(broker):
    stock = Client(broker.address, authkey=KEY)

    async def main():
        async with await aio.connect(broker.addrs[0], authkey=KEY) as hub:
            sub = await hub.subscribe("s")
            stock.send(("s", 1))
            barrier(stock)
            assert (await sub.next(timeout=10)).payload == 1

    run(main())
