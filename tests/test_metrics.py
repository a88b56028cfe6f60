"""/metrics and /healthz: counts move by exactly what the traffic did, and the text parses."""

import pickle
import signal
import struct
import urllib.error
import urllib.request
from multiprocessing.connection import AuthenticationError, Client

import pytest
from conftest import KEY
from prometheus_client.parser import text_string_to_metric_families
from scenarios import barrier, subscribe


def scrape(broker):
    with urllib.request.urlopen(broker.metrics_url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()))
            values[key] = s.value
    return values


def healthz(broker):
    url = broker.metrics_url.replace("/metrics", "/healthz")
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def mbroker(start_broker):
    return start_broker(metrics="127.0.0.1:0")


def delta(before, after, key):
    return after.get(key, 0) - before.get(key, 0)


def test_traffic_moves_the_counters_by_exactly_what_happened(mbroker):
    sub = Client(mbroker.address, authkey=KEY)
    subscribe(sub, "m.t")
    pub = Client(mbroker.address, authkey=KEY)
    barrier(pub)
    before = scrape(mbroker)
    sizes = 0
    for i in range(10):
        body = pickle.dumps(("m.t", i), protocol=4)
        sizes += 4 + len(body)
        pub.send_bytes(body)
    barrier(pub)
    assert len(barrier(sub)) == 10
    after = scrape(mbroker)
    # 10 publishes and the two $pings.
    assert delta(before, after, "mphub_messages_received_total") == 12
    assert delta(before, after, "mphub_messages_delivered_total") == 10
    assert delta(before, after, "mphub_bytes_delivered_total") == sizes
    assert after["mphub_connections"] == 2
    assert after["mphub_subscriptions"] == 1
    assert delta(before, after, "mphub_publish_fanout_count") == 10
    assert any(k.startswith("process_resident_memory_bytes") for k in after)


def test_auth_failures_and_protocol_errors_are_counted(mbroker):
    before = scrape(mbroker)
    with pytest.raises(AuthenticationError):
        Client(mbroker.address, authkey=b"wrong")
    c = Client(mbroker.address, authkey=KEY)
    c.send(("bad topic", 1))
    assert c.recv()[0] == "$error"
    c._send(struct.pack("!i", -1) + struct.pack("!Q", 1 << 40))
    assert c.recv()[0] == "$error"
    after = scrape(mbroker)
    assert delta(before, after, "mphub_auth_failures_total{kind=wrong_key}") == 1
    assert delta(before, after, "mphub_protocol_errors_total{kind=invalid_message}") == 1
    assert delta(before, after, "mphub_protocol_errors_total{kind=too_large}") == 1


def test_slow_consumer_disconnects_and_drops_are_counted(start_broker):
    b = start_broker("--outbound-limit", "1MiB", metrics="127.0.0.1:0")
    stalled = Client(b.address, authkey=KEY)
    subscribe(stalled, "big")
    pub = Client(b.address, authkey=KEY)
    before = scrape(b)
    for _ in range(200):
        pub.send(("big", bytes(256 * 1024)))
    barrier(pub)
    after = scrape(b)
    assert delta(before, after, "mphub_slow_consumers_total") == 1
    assert delta(before, after, "mphub_messages_dropped_total{reason=slow_consumer}") >= 1


def test_healthz_is_200_while_serving_and_503_while_shutting_down(start_broker):
    b = start_broker("--shutdown-timeout", "5", metrics="127.0.0.1:0")
    assert healthz(b) == 200
    stalled = Client(b.address, authkey=KEY)
    subscribe(stalled, "held")
    pub = Client(b.address, authkey=KEY)
    for _ in range(100):
        pub.send(("held", bytes(256 * 1024)))  # 25 MiB the subscriber never reads
    barrier(pub)
    b.proc.send_signal(signal.SIGTERM)
    # The broker now waits for that queue to drain: /healthz says so until it gives up.
    statuses = [healthz(b) for _ in range(200)]
    assert 503 in statuses
    assert b.proc.wait(30) == 0
    with pytest.raises(urllib.error.URLError):
        healthz(b)  # after exit nothing answers
