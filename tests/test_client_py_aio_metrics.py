"""mphub.aio has what the threaded hub has: worker metrics, and the same strict handshake."""

import asyncio
import time

import pytest
from conftest import KEY
from mphub import aio, errors
from test_worker_metrics import mbroker, scrape, value  # noqa: F401  (mbroker: the fixture)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_aio_families_batch_and_arrive_on_flush_and_close(mbroker):
    async def main():
        hub = await aio.connect(mbroker.addrs[0], authkey=KEY, metrics_interval=3600)
        jobs = hub.counter("aio_jobs_total", "Jobs", labels=("queue",))
        temp = hub.gauge("aio_temp", "Temperature", mode="mostrecent")
        for _ in range(5):
            jobs.labels(queue="a").inc()
        temp.set(20)
        hub.histogram("aio_seconds", "Latency", buckets=(0.5, 1)).observe(0.7)
        hub.summary("aio_bytes", "Sizes").observe(100)
        await hub.flush()
        text = scrape(mbroker)
        assert value(text, 'aio_jobs_total{queue="a"}') == 5 and value(text, "aio_temp") == 20
        assert value(text, 'aio_seconds_bucket{le="1"}') == 1 and value(text, "aio_bytes_sum") == 100
        jobs.labels(queue="a").inc()
        await hub.close()  # the last increment goes out on close

    run(main())
    assert value(scrape(mbroker), 'aio_jobs_total{queue="a"}') == 6


def test_aio_metrics_go_out_on_the_interval_without_a_flush(mbroker):
    async def main():
        async with await aio.connect(mbroker.addrs[0], authkey=KEY, metrics_interval=0.05) as hub:
            hub.counter("aio_ticks_total", "Ticks").inc(3)
            loop, deadline = asyncio.get_running_loop(), time.monotonic() + 30
            text = ""
            while value(text, "aio_ticks_total") != 3 and time.monotonic() < deadline:
                text = await loop.run_in_executor(None, scrape, mbroker)  # the loop runs the timer meanwhile
            assert value(text, "aio_ticks_total") == 3

    run(main())


def test_aio_without_an_authkey_against_a_keyed_broker_says_a_key_is_needed(broker, monkeypatch):
    monkeypatch.delenv("MPHUB_AUTHKEY", raising=False)

    async def main():
        with pytest.raises(errors.AuthenticationError, match="asks for an authkey"):
            await aio.connect(broker.addrs[0])

    run(main())
