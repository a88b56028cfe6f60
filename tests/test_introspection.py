"""Introspection on the metrics listener: /connections, /subscriptions, /topics and /status, as
JSON, against stock clients and client-py."""

import socket
from datetime import datetime, timezone
from multiprocessing.connection import Client

import mphub
import pytest
from conftest import KEY
from http_json import by_name, connections, get
from scenarios import barrier, subscribe


@pytest.fixture
def mbroker(start_broker):
    return start_broker(metrics="127.0.0.1:0")


def local_addr(conn):
    """host:port of a stock Client's end of the connection."""
    s = socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM)  # a duplicate
    try:
        host, port = s.getsockname()[:2]
    finally:
        s.close()
    return f"{host}:{port}"


def named(broker, name, *patterns):
    c = Client(broker.address, authkey=KEY)
    c.send(("$hello", {"name": name}))
    assert c.recv()[0] == "$ok"
    for p in patterns:
        subscribe(c, p)
    return c


def test_each_connection_shows_its_user_name_peer_subscriptions_and_counts(mbroker):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    c = named(mbroker, "stock-sub", "sensors.>", ("jobs.*", "workers"))
    barrier(c)
    me = by_name(mbroker, "stock-sub")
    assert me["user"] == "default"
    assert me["peer"] == local_addr(c)
    assert me["subscriptions"] == [
        {"pattern": "jobs.*", "group": "workers"},
        {"pattern": "sensors.>", "group": None},
    ]
    since = datetime.strptime(me["since"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before <= since <= datetime.now(timezone.utc)
    # Exact at the barrier: $hello, two $sub and the $ping came in; $ok three times went out
    # before the pong (which may or may not be counted yet).
    assert me["messages_in"] == 4
    assert me["messages_out"] in (3, 4)
    assert me["bytes_in"] > 0 and me["queued_bytes"] == 0 and me["dropped"] == 0
    c.send(("$unsub", "sensors.>"))
    c.recv()
    barrier(c)
    assert by_name(mbroker, "stock-sub")["subscriptions"] == [{"pattern": "jobs.*", "group": "workers"}]
    c.close()


def test_connections_sort_page_and_filter_as_nats_connz_does(mbroker):
    conns = []
    for i in range(5):
        c = named(mbroker, f"pub-{i}")
        for n in range(i * 10):
            c.send(("busy.t", n))
        barrier(c)
        conns.append(c)
    everyone = connections(mbroker, "?sort=messages_in")
    assert everyone["total"] == 5 and everyone["offset"] == 0 and everyone["limit"] == 1024
    assert [c["name"] for c in everyone["connections"]] == ["pub-4", "pub-3", "pub-2", "pub-1", "pub-0"]
    page = connections(mbroker, "?sort=messages_in&offset=1&limit=2")
    assert [c["name"] for c in page["connections"]] == ["pub-3", "pub-2"]
    assert (page["total"], page["offset"], page["limit"]) == (5, 1, 2)
    oldest_first = connections(mbroker, "?sort=id")["connections"]
    assert [c["id"] for c in oldest_first] == sorted(c["id"] for c in oldest_first)
    assert [c["name"] for c in connections(mbroker, "?name=pub-2")["connections"]] == ["pub-2"]
    assert connections(mbroker, "?user=nobody") == {
        "total": 0, "offset": 0, "limit": 1024, "outbound_limit": 32 << 20, "connections": []}
    for c in conns:
        c.close()


def test_a_backed_up_subscriber_comes_first_by_queued_bytes(start_broker):
    b = start_broker("--outbound-limit", "256MiB", metrics="127.0.0.1:0")
    stuck = named(b, "stuck", "flood")  # never reads again
    pub = named(b, "flooder")
    for _ in range(48):
        pub.send(("flood", bytes(1 << 20)))
    barrier(pub)
    top = connections(b, "?sort=queued_bytes&limit=1")
    assert top["total"] == 2
    (first,) = top["connections"]
    assert first["name"] == "stuck"
    assert first["queued_bytes"] > 8 << 20  # more than any socket buffer holds
    stuck.close()
    pub.close()


def test_subscriptions_count_subscribers_per_pattern_and_group(mbroker):
    plain = [named(mbroker, f"s{i}", "a.>") for i in range(3)]
    group = [named(mbroker, f"w{i}", ("jobs.*", "w")) for i in range(2)]
    hub = mphub.connect(mbroker.addrs[0], authkey=KEY, name="client-py")
    hub.subscribe("a.>")
    hub.subscribe("x.y")
    hub.flush()
    status, body = get(mbroker, "/subscriptions")
    assert status == 200
    assert body["total"] == 3
    assert body["subscriptions"] == [
        {"pattern": "a.>", "group": None, "subscribers": 4},
        {"pattern": "jobs.*", "group": "w", "subscribers": 2},
        {"pattern": "x.y", "group": None, "subscribers": 1},
    ]
    _, matching = get(mbroker, "/subscriptions?topic=a.b.c")
    assert [s["pattern"] for s in matching["subscriptions"]] == ["a.>"]
    _, by_pattern = get(mbroker, "/subscriptions?sort=pattern&limit=1&offset=1")
    assert by_pattern["subscriptions"] == [{"pattern": "jobs.*", "group": "w", "subscribers": 2}]
    for c in plain + group:
        c.close()
    hub.close()


def test_bad_queries_get_a_400_with_a_reason_and_the_broker_goes_on(mbroker):
    for path, why in [
        ("/connections?sort=bogus", "queued_bytes"),
        ("/connections?limit=many", "limit"),
        ("/connections?colour=red", "colour"),
        ("/subscriptions?topic=a.*", "wildcard"),
        ("/topics?limit=-1", "limit"),
    ]:
        status, body = get(mbroker, path)
        assert status == 400, (path, body)
        assert why in body["error"], (path, body)
    assert connections(mbroker)["total"] == 0


def test_the_busiest_topics_are_estimated_from_samples(mbroker):
    pub = named(mbroker, "publisher")
    for i in range(4000):
        pub.send(("busy.topic" if i % 10 else "quiet.topic", i))
    barrier(pub)
    status, body = get(mbroker, "/topics?limit=5")
    assert status == 200
    assert body["sampled_one_in"] == 32 and 0 < body["window_seconds"] <= 10
    assert body["topics"][0]["topic"] == "busy.topic"
    assert body["topics"][0]["messages_per_second"] > 0
    assert sum(t["share"] for t in body["topics"]) == pytest.approx(1.0)
    pub.close()


def test_status_sums_up_the_broker(mbroker):
    c = named(mbroker, "only", "t")
    c.send(("t", 1))
    assert c.recv() == ("t", 1)
    barrier(c)
    status, s = get(mbroker, "/status")
    assert status == 200
    assert s["connections"] == 1 and s["subscriptions"] == 1
    assert s["messages_delivered"] == 1 and s["messages_received"] == 4
    assert s["outbound_limit"] == 32 << 20 and s["max_connections"] == 10000
    assert s["cluster"] is None and s["messages_dropped"] == {"slow_consumer": 0, "closed": 0}
    assert s["uptime_seconds"] >= 0 and s["version"]
    c.close()


def test_client_py_hubs_show_their_names_and_counts(mbroker):
    with mphub.connect(mbroker.addrs[0], authkey=KEY, name="py-pub") as pub, mphub.connect(
        mbroker.addrs[0], authkey=KEY, name="py-sub"
    ) as sub:
        s = sub.subscribe("m.>")
        for i in range(100):
            pub.publish("m.x", i)
        pub.flush()
        assert [s.next(timeout=10).payload for _ in range(100)] == list(range(100))
        sub.flush()
        assert by_name(mbroker, "py-pub")["messages_in"] >= 102  # $hello, 100 messages, $ping
        # Written before the pong the flush waited for: two $ok and the 100 messages.
        assert by_name(mbroker, "py-sub")["messages_out"] >= 102
