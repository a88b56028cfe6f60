"""client-py's receiving side of `payloads="data"`: a subscriber that need not trust the broker
or the other publishers. A refused message is never unpickled: counted on the subscription and
reported to on_error as PayloadRefused; everything else arrives."""

import asyncio
import datetime
import os
import threading
from multiprocessing.connection import Client

import mphub
import pytest
from conftest import KEY
from mphub import aio
from mphub.errors import PayloadRefused
from scenarios import barrier


class RunsCommand:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def publish_all(broker):
    """A stock publisher (the broker lets anything through here) sends code between two data."""
    pub = Client(broker.address, authkey=KEY)
    when = datetime.datetime(2026, 11, 30, 12, 0)
    pub.send(("jobs.a", when))
    pub.send(("jobs.b", RunsCommand()))
    pub.send(("jobs.c", {"n": 1}))
    barrier(pub)  # routed: a subscriber's own barrier after this comes after all three
    return when


def guarded_hub(broker, errors, seen):
    """A threaded hub that takes data and datetimes only; what it reports lands in `errors`."""

    def on_error(e):
        errors.append(e)
        seen.set()

    return mphub.connect(broker.addrs[0], authkey=KEY, payloads="data",
                         allow_globals=["datetime.datetime"], on_error=on_error)


def test_a_threaded_subscriber_never_unpickles_what_its_policy_refuses(broker):
    errors, seen = [], threading.Event()
    with guarded_hub(broker, errors, seen) as hub:
        sub = hub.subscribe("jobs.*")
        when = publish_all(broker)
        got = [sub.next(timeout=10), sub.next(timeout=10)]
        assert [tuple(m) for m in got] == [("jobs.a", when), ("jobs.c", {"n": 1})]
        assert seen.wait(10)
        assert sub.refused == 1
        (e,) = errors
        assert isinstance(e, PayloadRefused) and e.topic == "jobs.b"
        assert e.reason == "payload refused: it imports 'posix.system'"


def test_a_refused_message_for_a_local_queue_group_is_counted_on_one_member(broker):
    errors, seen = [], threading.Event()
    with guarded_hub(broker, errors, seen) as hub:
        members = [hub.subscribe("jobs.*", group="w") for _ in range(2)]
        when = publish_all(broker)
        assert seen.wait(10)
        hub.flush()
        got = []
        for sub in members:
            while sub.pending:
                got.append(tuple(sub.next(timeout=10)))
        assert sorted(got, key=str) == sorted([("jobs.a", when), ("jobs.c", {"n": 1})], key=str)
        assert sum(sub.refused for sub in members) == 1
        (e,) = errors
        assert isinstance(e, PayloadRefused) and e.topic == "jobs.b"
        assert hub.is_connected  # the reader lived on


def test_an_asyncio_subscriber_does_the_same(broker):
    errors = []

    async def main():
        async with await aio.connect(broker.addrs[0], authkey=KEY, payloads="data",
                                     allow_globals=["datetime.datetime"],
                                     on_error=errors.append) as hub:
            sub = await hub.subscribe("jobs.*")
            when = publish_all(broker)
            got = [await sub.next(timeout=10), await sub.next(timeout=10)]
            assert [tuple(m) for m in got] == [("jobs.a", when), ("jobs.c", {"n": 1})]
            assert sub.refused == 1

    asyncio.run(asyncio.wait_for(main(), 60))
    assert [type(e) for e in errors] == [PayloadRefused]


def test_a_bad_policy_is_refused_at_connect(broker):
    with pytest.raises(ValueError):
        mphub.connect(broker.addrs[0], authkey=KEY, payloads="code")
    with pytest.raises(ValueError):
        mphub.connect(broker.addrs[0], authkey=KEY, payloads="data", allow_globals=["datetime"])
