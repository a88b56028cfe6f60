"""A cluster under faults: what still holds when NATS or a node stalls, goes away or churns.

Every test runs real nats-server and mphub processes and stock Python clients, and builds the
fault it is about on purpose, deterministically: a node or nats-server is frozen with SIGSTOP
(it keeps its connections and reads and writes nothing, as in a VM stall), or a node is given
so much work in front of the step under test that it cannot be quick about it.
"""

import re
import signal
import threading
import time

import pytest

from cluster_helpers import (
    drain,
    frozen,
    healthz,
    recv_until,
    scrape,
    settle,
    small_receive_buffer,
    wait_until,
)
from conftest import KEY, ROOT
from natsserver import free_port
from scenarios import barrier, subscribe
from test_cluster import CONNECTED, END, connect, listener


# ---- 1. A subscription's $ok means the cluster knows it before anything published after it.


@pytest.mark.parametrize("group", [None, "workers"], ids=["plain", "queue group"])
def test_a_publish_never_overtakes_its_connections_earlier_subscription_into_nats(nats, node, group):
    (server,) = nats(1)
    a, b = node(server.url), node(server.url)
    worker = listener(a, "ready")
    settle([a, b])
    # Thousands of other subscriptions are being carried to NATS in front of this one.
    bulk = [connect(b) for _ in range(2)]
    for i, c in enumerate(bulk):
        for k in range(8000):
            c.send(("$sub", f"bulk.{i}.{k}"))
    lost = []
    for round_ in range(5):
        topic = f"work.{round_}"
        sub = connect(b)
        subscribe(sub, topic if group is None else (topic, group))
        sub.send(("ready", topic))  # after the $ok: NATS must know the subscription by now
        assert drain(worker, 1) == [("ready", topic)]
        pub = connect(a)
        pub.send((topic, "job"))
        settle([a, b])  # from here on the subscription is known in any case
        pub.send((topic, "end"))
        if recv_until(sub, (topic, "end")) != [(topic, "job")]:
            lost.append(round_)
    assert lost == [], f"work published in answer to 'ready' was lost in rounds {lost}"


def test_requests_from_short_lived_clients_across_nodes_get_every_reply(nats, node):
    import mphub

    (server,) = nats(1)
    a, b = node(server.url), node(server.url)
    responder = mphub.connect(a.addrs[0], authkey=KEY)
    responder.serve("svc.echo", lambda body: body)
    settle([a, b])
    bulk = connect(b)
    try:
        for round_ in range(20):
            # A thousand other subscriptions go to NATS in front of each request's inbox.
            for k in range(1000):
                bulk.send(("$sub", f"bulk.{round_}.{k}"))
            with mphub.connect(b.addrs[0], authkey=KEY) as requester:
                assert requester.request("svc.echo", round_, timeout=30) == round_
    finally:
        responder.close()


# ---- 2. Interest changes never lose a message that an unchanged subscription wants.


@pytest.mark.parametrize("group", [None, "g"], ids=["plain", "queue group"])
@pytest.mark.parametrize("churn", [">", "s.*"])
def test_a_steady_subscriber_loses_nothing_while_an_overlapping_pattern_churns(nats, node, group, churn):
    (server,) = nats(1)
    a, b = node(server.url), node(server.url)

    def arg(pattern):
        return pattern if group is None else (pattern, group)

    steady, churner = listener(b, arg("s.t")), listener(b, arg(churn))
    settle([a, b])
    pub = connect(a)
    n = 20_000
    # While b is frozen, NATS splits the stream between b's two NATS subscriptions (the churner's
    # pattern matches s.t too); the churner's changes wait in b's socket and run on waking.
    with frozen(b.proc):
        for k in range(n):
            pub.send(("s.t", k))
        barrier(pub)
        for _ in range(50):
            churner.send(("$unsub", arg(churn)))
            churner.send(("$sub", arg(churn)))
        churner.send(("$unsub", arg(churn)))
    # b delivers what NATS brought while it works through the churner's changes: what the
    # churner took as a member may come before the $pong, so it is kept, not skipped.
    taken = barrier(churner)
    pub.send(END)
    got = [m[1] for m in recv_until(steady, END)]
    if group is not None:
        # A queue group's message may go to the churner while it is a member (a plain
        # subscriber's copy does too, but that one is extra).
        got += [m[1] for m in taken + recv_until(churner, END) if m[0] == "s.t"]
    assert sorted(got) == list(range(n)), f"lost {n - len(set(got))} of {n}"
    if group is None:
        assert got == list(range(n)), "the steady subscriber's messages came out of order"


@pytest.mark.parametrize("group", [None, "g"], ids=["plain", "queue group"])
def test_a_steady_subscriber_loses_nothing_while_a_thousand_overlapping_patterns_churn(nats, node, group):
    (server,) = nats(1)
    a, b = node(server.url), node(server.url)

    def arg(pattern):
        return pattern if group is None else (pattern, group)

    steady = listener(b, arg("s.>"))
    churner = connect(b)  # its answers and messages queue in b for it, well under the limit
    settle([a, b])
    stop, churning = threading.Event(), threading.Event()

    def churn():
        while not stop.is_set():
            for k in range(1000):
                churner.send(("$sub", arg(f"s.{k}.*")))
            for k in range(1000):
                churner.send(("$unsub", arg(f"s.{k}.*")))
            churning.set()

    t = threading.Thread(target=churn)
    t.start()
    try:
        pub = connect(a)
        n = 100_000
        for i in range(n):
            if i == n // 2:
                assert churning.wait(60)  # half the stream meets a churn already under way
            pub.send((f"s.{i % 1000}.x", i))
        barrier(pub)
    finally:
        stop.set()
        t.join()
    got = []
    if group is not None:
        # What the churner took while it was a member counts; a plain subscriber's copy does
        # not (it is extra).
        churner.send(("$sub", "end"))  # its $ok comes after all the churn's answers
        got += [m[1] for m in barrier(churner) if str(m[0]).startswith("s.")]
        settle([a, b])
    pub.send(END)
    steady_got = [m[1] for m in recv_until(steady, END)]
    if group is not None:
        got += [m[1] for m in recv_until(churner, END) if m[0].startswith("s.")]
    got += steady_got
    assert sorted(got) == list(range(n)), f"lost {n - len(set(got))} of {n}"
    if group is None:
        assert got == list(range(n)), "the steady subscriber's messages came out of order"
    assert scrape(b)["mphub_cluster_interest_retired_early_total"] == 0


def test_group_messages_on_their_way_to_a_member_that_leaves_go_to_another_member(nats, node):
    (server,) = nats(1)
    a, b, c = node(server.url), node(server.url), node(server.url)
    leaving, staying = listener(b, ("jobs", "g")), listener(c, ("jobs", "g"))
    settle([a, b, c])
    pub = connect(a)
    n = 10_000
    with frozen(b.proc):  # b's share of the stream waits in its socket...
        for k in range(n):
            pub.send(("jobs", k))
        barrier(pub)
        leaving.send(("$unsub", ("jobs", "g")))  # ...and its only member leaves before b wakes
    # What it took before its $unsub ran: b delivers while it reads the $unsub, so some may come
    # before the $pong, and some after it (routed before the $unsub, queued after the $pong).
    taken = barrier(leaving)
    pub.send(END)
    got = [m[1] for m in taken + recv_until(leaving, END) if m[0] == "jobs"]
    got += [m[1] for m in recv_until(staying, END)]
    got += [m[1] for m in drain(staying, n - len(got))]  # handed back to NATS by b
    assert sorted(got) == list(range(n))
    assert scrape(b)["mphub_cluster_requeued_total"] > 0


# ---- 3. SIGTERM finishes within shutdown_timeout, whatever NATS does.


@pytest.mark.parametrize("nats_state", ["unreachable", "frozen"])
def test_sigterm_stops_a_node_with_thousands_of_changes_for_nats_waiting(nats, node, nats_state):
    if nats_state == "unreachable":
        n = node(f"nats://127.0.0.1:{free_port()}")
    else:
        (server,) = nats(1)
        n = node(server.url)
        assert n.wait_for_log(CONNECTED)
        server.freeze()
    try:
        c = connect(n)
        for k in range(3000):
            c.send(("$sub", f"p.{k}"))
            c.send((f"p.{k}", b"x" * 8192))
        barrier(c)  # the node has handled every frame: all of it is waiting for NATS
        # The default shutdown_timeout is 5 s; a node that hangs is killed after 30 and fails.
        assert n.stop(signal.SIGTERM, timeout=30) == 0, "the node did not stop on SIGTERM"
        assert n.wait_for_log("mphub stopped")
    finally:
        if nats_state == "frozen":
            server.thaw()


# ---- 4. A member's share of a queue group depends neither on its node nor on its patterns.


def shares(members, publisher_node, n, nodes, topic="jobs.x"):
    # Subscriptions a member's later patterns made redundant are retired: once they are gone,
    # each member is one NATS subscription per pattern it needs.
    for x in nodes:
        wait_until(lambda: scrape(x)["mphub_cluster_interest_retiring"] == 0, what="retirements")
    pub = connect(publisher_node)
    for k in range(n):
        pub.send((topic, k))
    pub.send(END)
    got = [len(recv_until(m, END)) for m in members]
    assert sum(got) == n
    return got


def test_a_lone_member_on_another_node_gets_a_members_share_not_a_nodes(nats, node):
    (server,) = nats(1)
    a, b, c = node(server.url), node(server.url), node(server.url)
    members = [listener(a, ("jobs.*", "g")) for _ in range(10)] + [listener(b, ("jobs.*", "g"))]
    settle([a, b, c])
    got = shares(members, c, 2200, [a, b])  # c has no member: NATS chooses, 200 each when fair
    assert 100 < got[-1] < 350, f"the member on b got {got[-1]} of 2200 (fair: 200): {got}"
    assert min(got) > 100, got


def test_a_member_subscribed_through_three_overlapping_patterns_counts_once(nats, node):
    (server,) = nats(1)
    a, b, c = node(server.url), node(server.url), node(server.url)
    plain = listener(a, ("jobs.*", "g"))
    triple = listener(b, ("jobs.x", "g"), ("jobs.*", "g"), ("jobs.>", "g"))
    settle([a, b, c])
    got = shares([plain, triple], c, 2000, [a, b])  # fair: 1000 each
    assert 700 < got[1] < 1300, f"the member with three patterns got {got[1]} of 2000"


# ---- 5. A stalled NATS: publishers never wait; the backlog it leaves cannot cut off a subscriber.


def test_a_backlog_released_after_nats_froze_does_not_cut_off_a_subscriber(nats, node):
    (server,) = nats(1)
    a, b = node(server.url), node(server.url)
    local, remote = listener(a, "big"), listener(b, "big")
    small_receive_buffer(remote)  # a subscriber that reads nothing while the backlog arrives
    settle([a, b])
    pub = connect(a)
    payload = b"x" * (256 << 10)
    n = 200  # 50 MiB: more than a subscriber may have queued (32 MiB by default)
    sent, received = (scrape(a)["mphub_cluster_messages_sent_total"],
                      scrape(b)["mphub_cluster_messages_received_total"])
    with frozen(server.proc):
        for k in range(n):
            pub.send(("big", (k, payload)))
            assert local.recv() == ("big", (k, payload))  # local delivery never waits on NATS
        barrier(pub)
        held = scrape(a)

    def released():  # everything a handed to NATS has reached b (or b has cut remote off)
        a_now, b_now = scrape(a), scrape(b)
        return b_now["mphub_slow_consumers_total"] > 0 or (
            a_now["mphub_cluster_outbound_queued_bytes"] == 0
            and b_now["mphub_cluster_messages_received_total"] - received
            == a_now["mphub_cluster_messages_sent_total"] - sent)

    wait_until(released, what="the release of the backlog")
    pub.send(END)
    got = [m[1][0] for m in recv_until(remote, END)]  # nothing was read while it arrived
    assert scrape(b)["mphub_slow_consumers_total"] == 0
    # In order; the ones that found the backlog full are missing, and counted.
    assert got == sorted(set(got)) and 0 < len(got) < n
    assert scrape(a)['mphub_cluster_not_forwarded_total{reason="backlog"}'] == n - len(got)
    # What waited for NATS was bounded (the default cluster_outbound_limit, 16 MiB).
    assert held["mphub_cluster_outbound_queued_bytes"] <= 16 << 20


def shipped_nats_setting(key):
    """A setting of the NATS configuration deploy/ ships for a cluster."""
    text = (ROOT / "deploy/kubernetes/cluster/nats.conf").read_text()
    m = re.search(rf"^{key}:\s*(\S+)", text, re.M)
    assert m, f"deploy/kubernetes/cluster/nats.conf sets no {key}"
    return m.group(1)


def test_with_the_shipped_nats_settings_a_frozen_node_does_not_cost_a_healthy_one_anything(node):
    """NATS slows a publisher sending to a node that stopped reading (once half of its
    max_pending is queued for it) until write_deadline cuts that node off; the publishing
    node's backlog must outlast that."""
    from natsserver import NatsServer

    server = NatsServer("shipped", conf=f"write_deadline: {shipped_nats_setting('write_deadline')}\n")
    try:
        a, b, c = node(server.url), node(server.url), node(server.url)
        listener(b, "t")
        healthy = listener(c, "t")
        settle([a, b, c])
        got = []
        reader = threading.Thread(target=lambda: got.extend(m[1][0] for m in recv_until(healthy, END)))
        reader.start()
        pub = connect(a)
        payload = b"x" * (64 << 10)
        n = 2300  # 144 MiB at about 12 MiB/s: the load is paced, nothing waits on a sleep
        with frozen(b.proc):
            for k in range(n):
                pub.send(("t", (k, payload)))
                if k % 4 == 3:
                    time.sleep(0.02)
            barrier(pub)
        pub.send(END)
        reader.join(120)
        assert scrape(a)['mphub_cluster_not_forwarded_total{reason="backlog"}'] == 0
        assert got == list(range(n)), f"the healthy node lost {n - len(got)} of {n}"
    finally:
        server.stop()


# ---- 6. A short NATS outage: what is published meanwhile is held and sent when NATS is back.


def outage(node, server, a, b, pub, n, size=0):
    """Publishes `n` messages on a while NATS is away, and brings NATS back with b connected
    and subscribed again before a reconnects (a is frozen meanwhile), so none can miss b."""
    server.stop()
    assert a.wait_for_log("lost the NATS connection") and b.wait_for_log("lost the NATS connection")
    for k in range(n):
        pub.send(("t.x", (k, b"y" * size)))
    barrier(pub)
    with frozen(a.proc):
        server.start()
        assert b.wait_for_log(CONNECTED, count=2)
        # b sends its subscriptions again first thing: once a probe it made later is known,
        # they are too.
        settle([b, node(server.url)])
    assert a.wait_for_log(CONNECTED, count=2)


def test_what_is_published_while_nats_is_away_is_sent_in_order_when_it_is_back(nats, node):
    (server,) = nats(1)
    a, b = node(server.url), node(server.url)
    sub = listener(b, "t.*")
    settle([a, b])
    pub = connect(a)
    outage(node, server, a, b, pub, 1000)
    pub.send(END)
    assert [m[1][0] for m in recv_until(sub, END)] == list(range(1000))
    assert scrape(a)['mphub_cluster_not_forwarded_total{reason="disconnected"}'] == 0


def test_past_the_reconnect_buffer_publishes_are_counted_and_the_first_ones_still_go(nats, node):
    (server,) = nats(1)
    a, b = node(server.url, "--cluster-reconnect-buffer", "64KiB"), node(server.url)
    sub = listener(b, "t.*")
    settle([a, b])
    pub = connect(a)
    outage(node, server, a, b, pub, 1000, size=1000)  # about 1 MiB
    pub.send(END)
    got = [m[1][0] for m in recv_until(sub, END)]
    dropped = scrape(a)['mphub_cluster_not_forwarded_total{reason="disconnected"}']
    assert got == list(range(len(got))) and 0 < len(got) < 1000
    assert len(got) + dropped == 1000


# ---- 7. NATS's max_payload is visible.


def test_the_nats_max_payload_is_a_gauge_and_larger_limits_let_larger_messages_cross(nats, node):
    from natsserver import NatsServer

    (default,) = nats(1)
    n = node(default.url)
    assert n.wait_for_log(CONNECTED)
    assert scrape(n)["mphub_cluster_nats_max_payload_bytes"] == 1 << 20
    assert "max_payload 1048576 bytes" in healthz(n)[1]
    roomy = NatsServer("roomy", conf="max_payload: 4MB\n")
    try:
        a, b = node(roomy.url), node(roomy.url)
        remote = listener(b, "big")
        settle([a, b])
        assert scrape(a)["mphub_cluster_nats_max_payload_bytes"] == 4 << 20
        pub = connect(a)
        pub.send(("big", b"z" * (2 << 20)))
        pub.send(END)
        assert recv_until(remote, END) == [("big", b"z" * (2 << 20))]
    finally:
        roomy.stop()



def test_client_py_warns_of_a_publish_over_the_nats_max_payload_and_it_still_reaches_its_node(nats, node):
    import pickle
    import warnings

    import mphub
    from test_cluster import KEY

    (server,) = nats(1)  # nats-server's default max_payload: 1 MiB
    a, b = node(server.url), node(server.url)
    near, far = listener(a, "big"), listener(b, "big")
    settle([a, b])
    # A stock client's $hello comes back whole, with the limit added.
    stock = connect(a)
    stock.send(("$hello", {"name": "stock", "pid": 7}))
    answer = stock.recv()
    limit = answer[1][1].pop("max_payload")
    assert answer == ("$ok", ("$hello", {"name": "stock", "pid": 7}))
    assert 1 << 20 > limit > (1 << 20) - 100  # NATS's limit less the node's own headers

    def payload(body_len):  # a payload whose pickled publish is exactly body_len bytes
        overhead = len(pickle.dumps(("big", b"z" * body_len), pickle.HIGHEST_PROTOCOL)) - body_len
        data = b"z" * (body_len - overhead)
        assert len(pickle.dumps(("big", data), pickle.HIGHEST_PROTOCOL)) == body_len
        return data

    # The limit counts the node's headers at their longest (the sequence number's 20 digits), so a
    # pickle up to ~20 bytes over it may still cross; 40 over never does.
    fits, over = payload(limit), payload(limit + 40)
    with mphub.connect(a.addrs[0], authkey=KEY) as hub, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        hub.flush()  # a $ping barrier: the $hello answer, which carries the limit, came first
        assert hub.max_payload == limit
        hub.publish("big", fits)
        hub.flush()
        assert seen == []
        hub.publish("big", over)
        hub.publish("big", b"after")
        hub.flush()
    assert [w.category for w in seen] == [mphub.MaxPayloadWarning]
    assert f"max_payload ({limit} bytes" in str(seen[0].message)
    assert seen[0].filename == __file__  # the caller's line, not the library's
    # Warned, not refused: the node's own subscriber has all three, the other node the rest.
    stock.send(END)
    assert recv_until(near, END) == [("big", fits), ("big", over), ("big", b"after")]
    assert recv_until(far, END) == [("big", fits), ("big", b"after")]
    assert scrape(a)['mphub_cluster_not_forwarded_total{reason="too_large"}'] == 1
