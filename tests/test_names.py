"""Connection names: `("$hello", {"name": ...})` from stock clients and client-py, in the log
lines and in /connections."""

import asyncio
import os
import subprocess
from multiprocessing.connection import Client

import mphub
import pytest
from conftest import KEY, ROOT
from hello_scenario import name_a_connection
from http_json import by_name, connections
from mphub import aio
from scenarios import barrier


@pytest.fixture
def mbroker(start_broker):
    return start_broker(metrics="127.0.0.1:0")


def test_a_stock_client_names_its_connection_and_bad_hellos_get_a_reason(mbroker, interpreter):
    if interpreter is None:
        conn = name_a_connection(mbroker.address, KEY, "stock-3.11")
        name = "stock-3.11"
    else:
        name = "stock-3.13"
        peer = subprocess.Popen(
            [str(interpreter), str(ROOT / "tests/python/hello_scenario.py"), mbroker.addrs[0], KEY.hex(), name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "tests/python")},
        )
    try:
        if interpreter is not None:
            assert peer.stdout.readline().strip() == "ready"
        c = by_name(mbroker, name)
        assert c["subscriptions"] == [{"pattern": "hello.world", "group": None}]
        assert c["user"] == "default"
    finally:
        if interpreter is None:
            conn.close()
        else:
            peer.stdin.close()
            assert peer.wait(30) == 0
    # The connection's log lines carry the name from the moment it is given.
    assert mbroker.wait_for_log(f"name={name}")
    closed = [line for line in mbroker.lines if "connection closed" in line and f"name={name}" in line]
    assert closed, mbroker.log()


def test_a_connection_may_rename_itself(mbroker):
    c = Client(mbroker.address, authkey=KEY)
    c.send(("$hello", {"name": "first"}))
    c.send(("$hello", {"name": "second name", "pid": 7}))
    assert c.recv() == ("$ok", ("$hello", {"name": "first"}))
    assert c.recv() == ("$ok", ("$hello", {"name": "second name", "pid": 7}))
    barrier(c)
    assert by_name(mbroker, "second name")["id"] > 0
    c.close()


def test_a_hello_that_imports_anything_is_refused_unread(mbroker):
    c = Client(mbroker.address, authkey=KEY)
    c.send(("$hello", {"name": os.urandom}))  # a global: never decoded
    reply = c.recv()
    assert reply[0] == "$error" and "plain data" in reply[1], reply
    c.close()


def test_client_py_names_its_connection_after_the_program_unless_told(mbroker):
    default = mphub.connect(mbroker.addrs[0], authkey=KEY)
    named = mphub.connect(mbroker.addrs[0], authkey=KEY, name="ingest-7")
    try:
        named.subscribe("jobs.*", group="w")
        named.flush()
        default.flush()
        names = {c["name"] for c in connections(mbroker)["connections"]}
        assert default.name in names and default.name.endswith(f"[{os.getpid()}]")
        assert by_name(mbroker, "ingest-7")["subscriptions"] == [{"pattern": "jobs.*", "group": "w"}]
    finally:
        default.close()
        named.close()


def test_client_py_keeps_its_name_across_a_reconnect(start_broker):
    first = start_broker(metrics="127.0.0.1:0")
    addr = first.addrs[0]
    hub = mphub.connect(addr, authkey=KEY, name="survivor", reconnect_wait=(0.01, 0.1))
    try:
        first.stop()
        second = start_broker(listen=(addr,), metrics="127.0.0.1:0")
        hub.flush(timeout=30)
        assert by_name(second, "survivor")
    finally:
        hub.close()


def test_an_asyncio_hub_names_its_connection_too(mbroker):
    async def main():
        async with await aio.connect(mbroker.addrs[0], authkey=KEY, name="async-worker") as hub:
            await hub.subscribe("a.>")
            await hub.flush()
            return by_name(mbroker, "async-worker")

    assert asyncio.run(main())["subscriptions"] == [{"pattern": "a.>", "group": None}]


def test_client_py_refuses_a_name_the_broker_would_refuse(mbroker):
    for bad in ["", "x" * 65, "tab\there"]:
        with pytest.raises(ValueError):
            mphub.connect(mbroker.addrs[0], authkey=KEY, name=bad)

