"""A subscriber that stops reading never slows the others, and never grows the broker."""

import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Client

import pytest
from conftest import KEY
from scenarios import barrier, subscribe
from test_metrics import scrape

CHUNK = 64 * 1024
COUNT = 3200  # 200 MiB in all
WINDOW = 32  # 2 MiB


def peak_rss_mib(broker):
    return broker.peak_rss_kib() / 1024


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


# A stock subscriber that reads until the broker closes, then says how it ended.
COUNTING_SUBSCRIBER = """
import sys
from multiprocessing.connection import Client
c = Client(("127.0.0.1", int(sys.argv[1])), authkey=bytes.fromhex(sys.argv[2]))
c.send(("$sub", "flood"))
assert c.recv()[0] == "$ok"
print("ready", flush=True)
n = 0
try:
    while True:
        topic, data = c.recv()
        assert topic == "flood" and data[:8] == n.to_bytes(8, "big"), n
        n += 1
except EOFError:
    print("eof", n, flush=True)
except OSError as e:
    print("torn", n, e, flush=True)
"""


def test_a_stopped_subscriber_cut_off_reads_whole_frames_and_every_loss_is_counted(start_broker):
    b = start_broker("--outbound-limit", "1MiB", metrics="127.0.0.1:0")
    port = b.addrs[0].rsplit(":", 1)[1]
    sub = subprocess.Popen([sys.executable, "-c", COUNTING_SUBSCRIBER, port, KEY.hex()],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout.readline().strip() == "ready"
        sub.send_signal(signal.SIGSTOP)
        pub = Client(b.address, authkey=KEY)
        before = scrape(b)
        body = bytes(CHUNK - 8)
        published = 0
        # Publish one at a time until the broker cuts the stopped subscriber off, so every
        # message went to it while it was still subscribed.
        while True:
            pub.send(("flood", published.to_bytes(8, "big") + body))
            published += 1
            barrier(pub)
            if scrape(b)["mphub_slow_consumers_total"] > before["mphub_slow_consumers_total"]:
                break
            assert published < 100_000
        sub.send_signal(signal.SIGCONT)
        out, _ = sub.communicate(timeout=60)
    finally:
        sub.kill()
    ended, received = out.split()[:2]
    assert ended == "eof", out  # never "got end of file during message"
    after = scrape(b)
    dropped = (after["mphub_messages_dropped_total{reason=slow_consumer}"]
               - before["mphub_messages_dropped_total{reason=slow_consumer}"])
    assert dropped == published - int(received), (published, received, dropped)
    assert after["mphub_slow_consumers_total"] - before["mphub_slow_consumers_total"] == 1
