"""client-py across a broker restart: it reconnects, restores subscriptions, sends what waited."""

import threading
from multiprocessing.connection import Client

import mphub
import pytest
from conftest import KEY
from mphub import errors
from scenarios import barrier


def test_a_hub_reconnects_after_a_broker_restart_and_loses_nothing_it_buffered(start_broker):
    first = start_broker()
    addr = first.addrs[0]
    down, up = threading.Event(), threading.Event()
    hub = mphub.connect(
        addr, authkey=KEY, reconnect_wait=(0.01, 0.2), reconnect_buffer=1 << 20,
        on_disconnected=down.set, on_reconnected=up.set,
    )
    try:
        sub = hub.subscribe("r.>")
        grp = hub.subscribe("jobs", group="w")
        first.stop()
        assert down.wait(10) and not hub.is_connected
        for i in range(100):
            hub.publish("r.during", i)
        with pytest.raises(errors.BufferFullError):
            hub.publish("r.big", bytes(2 << 20))

        start_broker(listen=(addr,))
        assert up.wait(30)
        hub.flush()
        assert [sub.next(timeout=10).payload for _ in range(100)] == list(range(100))

        stock = Client(tuple_addr(addr), authkey=KEY)
        stock.send(("r.after", "restored"))
        stock.send(("jobs", "for the group"))
        barrier(stock)
        assert sub.next(timeout=10) == ("r.after", "restored")
        assert grp.next(timeout=10) == ("jobs", "for the group")
        assert hub.reconnects == 1
    finally:
        hub.close()


def test_a_flush_while_disconnected_waits_for_the_reconnect(start_broker):
    first = start_broker()
    addr = first.addrs[0]
    down = threading.Event()
    hub = mphub.connect(addr, authkey=KEY, reconnect_wait=(0.01, 0.2), on_disconnected=down.set)
    try:
        first.stop()
        assert down.wait(10)
        hub.publish("p", 1)
        start_broker(listen=(addr,))
        hub.flush(timeout=30)
        assert hub.is_connected
    finally:
        hub.close()


def test_giving_up_closes_subscriptions_and_says_why(start_broker):
    first = start_broker()
    gave_up = threading.Event()
    reasons = []

    def on_error(e):
        reasons.append(e)
        gave_up.set()

    hub = mphub.connect(
        first.addrs[0], authkey=KEY, reconnect_wait=(0.01, 0.01), max_reconnect_attempts=3,
        on_error=on_error,
    )
    sub = hub.subscribe("x")
    first.stop()
    assert gave_up.wait(30)
    assert "gave up" in str(reasons[-1])
    with pytest.raises(errors.SubscriptionClosed):
        sub.next(timeout=10)
    with pytest.raises(errors.ConnectionClosed):
        hub.publish("x", 1)
    hub.close()


def tuple_addr(text):
    host, port = text.rsplit(":", 1)
    return (host, int(port))
