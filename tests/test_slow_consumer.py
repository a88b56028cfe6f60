"""A subscriber that stops reading never slows the others, and never grows the broker."""

import threading
from multiprocessing.connection import Client

import pytest
from conftest import KEY
from scenarios import barrier, subscribe

CHUNK = 64 * 1024
COUNT = 3200  # 200 MiB in all
WINDOW = 32  # 2 MiB


def peak_rss_mib(broker):
    for line in open(f"/proc/{broker.proc.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("policy", ["disconnect", "drop"])
def test_a_stalled_subscriber_costs_others_nothing(start_broker, policy):
    b = start_broker("--slow-consumer", policy, "--outbound-limit", "8MiB")
    stalled = Client(b.address, authkey=KEY)
    subscribe(stalled, "flood")
    readers = [Client(b.address, authkey=KEY) for _ in range(2)]
    for r in readers:
        subscribe(r, "flood")
    counts = [0, 0]
    progress = threading.Condition()

    def read(i):
        for n in range(COUNT):
            topic, data = readers[i].recv()
            assert topic == "flood" and len(data) == CHUNK and data[:8] == n.to_bytes(8, "big")
            with progress:
                counts[i] += 1
                progress.notify_all()

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    pub = Client(b.address, authkey=KEY)
    body = bytes(CHUNK - 8)
    for n in range(COUNT):
        # The reading subscribers are Python threads: keep them within WINDOW messages of the
        # publisher so that only the stalled one is ever over the limit.
        with progress:
            progress.wait_for(lambda: min(counts) >= n - WINDOW, timeout=60)
        pub.send(("flood", n.to_bytes(8, "big") + body))
    barrier(pub)
    for t in threads:
        t.join(120)
    assert counts == [COUNT, COUNT]
    # 200 MiB flowed past a subscriber that read nothing; the broker kept within its limits.
    assert peak_rss_mib(b) < 120, f"peak RSS {peak_rss_mib(b):.0f} MiB"
    if policy == "disconnect":
        assert b.wait_for_log("slow consumer")
    # Whatever happened to the stalled one, the broker still serves everyone else.
    assert barrier(readers[0]) == []
