"""Big frames cost memory only while they are in flight: a connection gives a burst's memory
back, a frame that never finishes is given up after --frame-timeout, and frames still arriving
share one broker-wide budget."""

import struct
import threading
from multiprocessing.connection import Client

from conftest import KEY, wait_until
from scenarios import barrier, subscribe

MIB = 1 << 20


def test_eight_idle_publishers_of_50_mib_each_leave_the_broker_at_its_idle_size(start_broker):
    b = start_broker("--outbound-limit", "1GiB")
    sub = Client(b.address, authkey=KEY)
    subscribe(sub, "big")
    pubs = [Client(b.address, authkey=KEY) for _ in range(8)]
    for p in pubs:
        barrier(p)
    start = b.rss_kib()
    body = bytes(50 * MIB)
    senders = [threading.Thread(target=p.send, args=(("big", body),)) for p in pubs]
    for s in senders:
        s.start()
    for _ in pubs:
        topic, got = sub.recv()
        assert topic == "big" and len(got) == len(body)
    for s in senders:
        s.join()
    # Everything delivered; the publishers stay connected, idle.
    assert barrier(sub) == []
    assert wait_until(lambda: b.rss_kib() < start + 32 * 1024), (
        f"RSS {b.rss_kib() // 1024} MiB, {start // 1024} MiB before the burst"
    )
    for p in pubs:
        assert barrier(p) == []  # still connected and served


def test_a_backlog_of_small_messages_leaves_the_broker_at_its_idle_size_once_read(start_broker):
    # A subscriber's queue keeps 48 bytes of bookkeeping per queued message. When its room was
    # kept after a backlog, the broker stayed 22 MiB over its idle size once these 600,000 were
    # read, for the connection's life; the room is now given back once the queue runs empty.
    b = start_broker("--outbound-limit", "1GiB")
    sub = Client(b.address, authkey=KEY)
    subscribe(sub, "small")
    pub = Client(b.address, authkey=KEY)
    barrier(pub)
    start = b.rss_kib()
    n = 600_000
    for i in range(n):
        pub.send(("small", i))
    assert barrier(pub) == []  # every message is queued for the subscriber, which reads none yet
    for i in range(n):
        assert sub.recv() == ("small", i)
    assert barrier(sub) == []
    assert wait_until(lambda: b.rss_kib() < start + 16 * 1024), (
        f"RSS {b.rss_kib() // 1024} MiB, {start // 1024} MiB before the backlog"
    )
    assert barrier(sub) == []  # still connected and served


def hold_partial_frames(b, count, claim, send):
    """`count` clients each send the header of a `claim`-byte frame and `send` bytes of it, from
    threads (the broker may not read them all at once); returns the clients and threads."""
    clients = [Client(b.address, authkey=KEY) for _ in range(count)]
    chunk = struct.pack("!i", claim) + bytes(send)

    def send(c):
        try:
            c._send(chunk)
        except OSError:
            pass  # given up by the broker before it read it all

    threads = [threading.Thread(target=send, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    return clients, threads


def test_frames_that_never_finish_are_given_up_and_their_memory_freed(start_broker):
    b = start_broker("--frame-timeout", "3", "--arriving-limit", "1GiB")
    sub = Client(b.address, authkey=KEY)
    subscribe(sub, "calm")
    start = b.rss_kib()
    clients, threads = hold_partial_frames(b, 10, 60 * MIB, 59 * MIB)
    for t in threads:
        t.join(60)
    assert b.rss_kib() > start + 400 * 1024  # they really are held for now
    for c in clients:
        reply = c.recv()
        assert reply[0] == "$error" and "not complete within 3s" in reply[1], reply
        try:
            c.recv()
            raise AssertionError("still open after the frame timeout")
        except (EOFError, ConnectionResetError):
            pass
    assert b.wait_for_log("a frame was not complete within", count=10)
    assert wait_until(lambda: b.rss_kib() < start + 32 * 1024), f"RSS {b.rss_kib() // 1024} MiB"
    pub = Client(b.address, authkey=KEY)
    pub.send(("calm", "still here"))
    barrier(pub)
    assert sub.recv() == ("calm", "still here")


def test_large_frames_still_arriving_never_hold_more_than_the_arriving_limit(start_broker):
    b = start_broker("--frame-timeout", "2", "--arriving-limit", "64MiB", "--max-frame", "64MiB")
    start = b.rss_kib()
    clients, _ = hold_partial_frames(b, 5, 60 * MIB, 59 * MIB)
    # The first frame gets the budget; the others are not read until it is free again, and the
    # frame timeout gives every one of them up in turn.
    assert b.wait_for_log("a frame was not complete within", count=5, timeout=120)
    grown_mib = (b.peak_rss_kib() - start) / 1024
    assert grown_mib < 64 + 48, f"the broker grew {grown_mib:.0f} MiB for 295 MiB of frames"
    # A whole large frame still goes through once the budget is free.
    sub = Client(b.address, authkey=KEY)
    subscribe(sub, "big")
    pub = Client(b.address, authkey=KEY)
    pub.send(("big", bytes(50 * MIB)))
    assert len(sub.recv()[1]) == 50 * MIB
    for c in clients:
        c.close()


def test_subscriptions_cost_well_under_a_kilobyte_and_their_memory_returns_once_closed(start_broker):
    # 200,000 request-inbox patterns over 20 connections: about 1.5 KiB each once, and the
    # broker kept ~300 MiB after they closed; now ~275 B each, and RSS comes back down.
    import secrets

    b = start_broker("--max-subscriptions", "10000")
    clients = [Client(b.address, authkey=KEY) for _ in range(20)]
    for c in clients:
        barrier(c)
    before = b.rss_kib()
    for c in clients:
        for _ in range(10_000):
            c.send(("$sub", f"_INBOX.{secrets.token_urlsafe(16)}.>"))
    for c in clients:
        for _ in range(10_000):
            assert c.recv()[0] == "$ok"
    per_sub = (b.rss_kib() - before) * 1024 / 200_000
    assert per_sub < 700, f"{per_sub:.0f} bytes per subscription"
    for c in clients:
        c.close()
    assert wait_until(lambda: b.rss_kib() < before + 24 * 1024), (
        f"RSS {b.rss_kib() // 1024} MiB after every subscription closed, {before // 1024} MiB before"
    )
