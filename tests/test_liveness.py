"""Liveness: TCP keepalive on the broker's sockets, and client-py's keepalive pings against a
broker that is alive to the kernel and deaf to everyone (SIGSTOP): the hub notices, reconnects
once a broker is back on the address, and delivers again."""

import asyncio
import logging
import re
import signal
import subprocess
import threading
import time
from multiprocessing.connection import Client

import mphub
from conftest import KEY
from http_json import by_name
from mphub import aio
from scenarios import barrier, subscribe

EVERY, PINGS = 0.3, 2
# The most a stopped broker may go unnoticed: ping_interval * (max_outstanding_pings + 1) after
# its last word, plus a second for the timer and the scheduler of a busy test machine.
NOTICED_WITHIN = EVERY * (PINGS + 1) + 1.0


def keepalive_timer(port):
    """The keepalive timer `ss -tno` shows on the broker's side of its one connection.

    While the broker's last bytes wait for their ACK (the client delays it), ss shows the
    retransmission timer instead: ask again until the keepalive timer shows."""
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(
            ["ss", "-tnoH", "state", "established", f"( sport = :{port} )"],
            capture_output=True, text=True, check=True,
        ).stdout
        timers = re.findall(r"timer:\((\w+),([^,]+),", out)
        assert len(timers) <= 1, out
        if timers and timers[0][0] == "keepalive":
            return timers[0][1]
        assert time.monotonic() < deadline, f"no keepalive timer: {out!r}"


def port_of(broker):
    return int(broker.addrs[0].rsplit(":", 1)[1])


def test_the_broker_turns_on_tcp_keepalive_with_the_configured_idle_time(start_broker):
    default = start_broker()
    c = Client(default.address, authkey=KEY)
    barrier(c)
    timer = keepalive_timer(port_of(default))
    assert 20 < seconds(timer) <= 30, timer
    c.close()
    short = start_broker("--keepalive", "7")
    c = Client(short.address, authkey=KEY)
    barrier(c)
    timer = keepalive_timer(port_of(short))
    assert 0 < seconds(timer) <= 7, timer
    c.close()


def seconds(timer):
    """`29sec`, `1min2sec`, `500ms` as seconds."""
    total = 0.0
    for n, unit in re.findall(r"([\d.]+)(min|sec|ms)", timer):
        total += float(n) * {"min": 60, "sec": 1, "ms": 0.001}[unit]
    return total


def quick_hub(addr, **options):
    return mphub.connect(
        addr, authkey=KEY, ping_interval=EVERY, max_outstanding_pings=PINGS, connect_timeout=1.0,
        reconnect_wait=(0.05, 0.2), max_reconnect_attempts=-1, **options,
    )


def test_a_hub_notices_a_stopped_broker_and_resumes_when_it_continues(start_broker, caplog):
    b = start_broker()
    down, up = threading.Event(), threading.Event()
    hub = quick_hub(b.addrs[0], on_disconnected=down.set, on_reconnected=up.set)
    try:
        sub = hub.subscribe("k.>")
        pub = Client(b.address, authkey=KEY)
        pub.send(("k.before", 1))
        assert sub.next(timeout=10) == ("k.before", 1)

        with caplog.at_level(logging.WARNING, logger="mphub"):
            stopped = time.monotonic()
            b.proc.send_signal(signal.SIGSTOP)
            assert down.wait(30)
            noticed = time.monotonic() - stopped
        assert noticed <= NOTICED_WITHIN, noticed
        assert "keepalive pings unanswered" in caplog.text
        assert not hub.is_connected

        b.proc.send_signal(signal.SIGCONT)
        assert up.wait(30)
        hub.flush()  # the restored subscription is in place
        pub.send(("k.after", 2))
        barrier(pub)
        assert sub.next(timeout=10) == ("k.after", 2)
    finally:
        b.proc.send_signal(signal.SIGCONT)
        hub.close()


def test_an_asyncio_hub_moves_to_a_new_broker_after_the_stopped_one_is_killed(start_broker):
    first = start_broker()
    addr = first.addrs[0]

    async def main():
        down, up = asyncio.Event(), asyncio.Event()
        hub = await aio.connect(
            addr, authkey=KEY, ping_interval=EVERY, max_outstanding_pings=PINGS, connect_timeout=1.0,
            reconnect_wait=(0.05, 0.2), max_reconnect_attempts=-1,
            on_disconnected=down.set, on_reconnected=up.set,
        )
        try:
            sub = await hub.subscribe("k.>")
            stopped = time.monotonic()
            first.proc.send_signal(signal.SIGSTOP)
            await asyncio.wait_for(down.wait(), 30)
            noticed = time.monotonic() - stopped
            first.stop(signal.SIGKILL)
            second = start_broker(listen=(addr,))
            await asyncio.wait_for(up.wait(), 30)
            await hub.flush()
            pub = Client(second.address, authkey=KEY)
            subscribe(pub, "unrelated")  # a stock client on the new broker
            pub.send(("k.after", 3))
            barrier(pub)
            return noticed, await sub.next(timeout=10)
        finally:
            await hub.close()

    noticed, msg = asyncio.run(main())
    assert noticed <= NOTICED_WITHIN, noticed
    assert msg == ("k.after", 3)


def test_a_hub_that_hears_traffic_sends_no_ping(start_broker):
    b = start_broker(metrics="127.0.0.1:0")
    hub = quick_hub(b.addrs[0], name="busy-hub")
    try:
        sub = hub.subscribe("t")
        pub = Client(b.address, authkey=KEY)
        # A message every tenth of an interval for four intervals (the pause paces the traffic;
        # it synchronises nothing): the hub hears the broker all along, so it never pings.
        for i in range(40):
            pub.send(("t", i))
            assert sub.next(timeout=10).payload == i
            time.sleep(EVERY / 10)
        barrier(pub)
        # What the hub sent: its $hello and its $sub, no $ping.
        assert by_name(b, "busy-hub")["messages_in"] == 2
        assert hub.is_connected and hub.reconnects == 0
    finally:
        hub.close()
