"""Every byte queued for a connection counts against its outbound limit, the broker's own replies
included: a client that pipelines requests and never reads cannot grow the broker, and replies
are never dropped."""

import os
import socket
import threading
from multiprocessing.connection import Client

from conftest import KEY
from scenarios import barrier, subscribe
from test_metrics import scrape

TOKEN = b"t" * (1 << 20)


def small_receive_buffer(conn, size=64 << 10):
    """Fixes `conn`'s receive buffer at `size` (setting it turns Linux's autotuning off, which
    may otherwise grow it to tcp_rmem's maximum, 32 MiB on some hosts): what the broker writes
    then stays queued in the broker until the client reads."""
    with socket.socket(fileno=os.dup(conn.fileno())) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def pinger(conn, count, errors):
    """Sends `count` pings with 1 MiB tokens, never reading; records how sending ended."""

    def run():
        try:
            for i in range(count):
                conn.send(("$ping", (i).to_bytes(4, "big") + TOKEN))
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_pipelined_pings_that_are_never_read_cannot_grow_the_broker(start_broker):
    b = start_broker("--outbound-limit", "8MiB", metrics="127.0.0.1:0")
    before = scrape(b)
    start = b.rss_kib()
    c = Client(b.address, authkey=KEY)
    errors = []
    t = pinger(c, 200, errors)  # 200 MiB of replies it will never read
    # The broker stops reading from it once its replies pass the limit; with nothing read for
    # long, it is cut off as a slow consumer and the sender's pipe breaks.
    t.join(120)
    assert not t.is_alive(), "the client was never cut off"
    assert errors and isinstance(errors[0], (BrokenPipeError, ConnectionResetError)), errors
    assert b.wait_for_log("slow consumer: replies over the outbound limit")
    after = scrape(b)
    assert after["mphub_slow_consumers_total"] - before["mphub_slow_consumers_total"] == 1
    grown_mib = (b.peak_rss_kib() - start) / 1024
    # The limit, a reply or two in flight and a frame being read; never the 200 MiB sent.
    assert grown_mib < 48, f"the broker grew {grown_mib:.0f} MiB"


def test_replies_past_the_limit_all_arrive_in_order_once_the_client_reads(start_broker):
    b = start_broker("--outbound-limit", "8MiB", metrics="127.0.0.1:0")
    start = b.rss_kib()
    c = Client(b.address, authkey=KEY)
    errors = []
    t = pinger(c, 48, errors)
    # Wait until the broker has more queued for it than the limit (it has stopped reading).
    for _ in range(600):
        if scrape(b)["mphub_outbound_queued_bytes"] > 8 << 20:
            break
        threading.Event().wait(0.05)
    else:
        raise AssertionError("the replies never passed the limit")
    for i in range(48):
        assert c.recv() == ("$pong", (i).to_bytes(4, "big") + TOKEN), i
    t.join(60)
    assert not errors, errors
    assert barrier(c) == []
    grown_mib = (b.peak_rss_kib() - start) / 1024
    assert grown_mib < 48, f"the broker grew {grown_mib:.0f} MiB"


def test_a_client_publishing_more_than_its_limit_to_itself_is_never_stopped_by_its_own_messages(
    start_broker,
):
    # A message larger than the limit goes into an empty queue and over the limit; that alone
    # must never stop the broker reading what the same client sends next.
    b = start_broker("--outbound-limit", "1MiB", "--slow-consumer", "drop")
    c = Client(b.address, authkey=KEY)
    small_receive_buffer(c)
    subscribe(c, "me")
    big = bytes(24 << 20)  # more than the socket buffers hold both ways
    c.send(("me", big))
    c.send(("me", big))  # dropped: the queue is full; but it is read
    c.send(("me", "small"))  # dropped as well
    got = barrier(c)
    assert [(t, len(p)) for t, p in got] == [("me", len(big))]
