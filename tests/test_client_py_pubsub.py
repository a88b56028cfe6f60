"""client-py's threaded Hub: publish, subscribe, local dispatch, queue groups, interop with stock."""

import subprocess
import threading
from multiprocessing.connection import Client

import mphub
import pytest
from conftest import KEY, ROOT, python313, run_py313
from peer import payload
from scenarios import barrier, subscribe

PEER = ROOT / "tests/python/peer.py"
CLIENT_PEER = ROOT / "tests/python/clientpy_peer.py"


def test_a_publish_reaches_a_stock_subscriber_unchanged(broker, hubs):
    stock = Client(broker.address, authkey=KEY)
    subscribe(stock, "s.t")
    hub = hubs()
    values = [{"v": 21.5}, b"\x00" * 70_000, ("t", [1, None]), 2**100, "ü"]
    for v in values:
        hub.publish("s.t", v)
    hub.flush()
    assert [stock.recv() for _ in values] == [("s.t", v) for v in values]


def test_a_stock_publisher_reaches_a_subscription_as_messages(broker, hubs):
    hub = hubs()
    sub = hub.subscribe("s.>")
    stock = Client(broker.address, authkey=KEY)
    stock.send(("s.a.b", {"k": [1, 2]}))
    barrier(stock)
    msg = sub.next(timeout=10)
    assert msg == mphub.Message("s.a.b", {"k": [1, 2]})
    topic, payload_ = msg
    assert (topic, payload_) == (msg.topic, msg.payload) == ("s.a.b", {"k": [1, 2]})


def test_every_matching_local_subscription_gets_the_message(hubs):
    hub = hubs()
    one, deep, other = hub.subscribe("a.*"), hub.subscribe("a.>"), hub.subscribe("b.*")
    hub.publish("a.x", 1)
    hub.publish("a.x.y", 2)
    hub.flush()
    assert one.next(timeout=10).payload == 1
    assert [deep.next(timeout=10).payload for _ in range(2)] == [1, 2]
    hub.flush()
    assert one.pending == 0 and deep.pending == 0 and other.pending == 0


def test_order_per_publisher_holds_across_many_messages(hubs):
    pub, rx = hubs(), hubs()
    sub = rx.subscribe("seq")
    for i in range(20_000):
        pub.publish("seq", i)
    pub.flush()
    assert [sub.next(timeout=10).payload for _ in range(20_000)] == list(range(20_000))


def test_a_queue_group_gets_each_message_exactly_once(hubs):
    members = [hubs() for _ in range(3)]
    subs = [m.subscribe("jobs.*", group="workers") for m in members]
    pub = hubs()
    for i in range(3000):
        pub.publish("jobs.x", i)
    pub.flush()
    for m in members:
        m.flush()
    got = []
    for s in subs:
        got += [s.next().payload for _ in range(s.pending)]
    assert sorted(got) == list(range(3000))
    assert all(s.delivered > 0 for s in subs)


def test_a_callback_subscription_runs_on_a_worker_thread(hubs):
    hub = hubs()
    seen, done = [], threading.Event()

    def on_msg(msg):
        seen.append((msg.payload, threading.current_thread().name))
        if len(seen) == 3:
            done.set()

    hub.subscribe("cb", callback=on_msg)
    for i in range(3):
        hub.publish("cb", i)
    assert done.wait(10)
    assert [p for p, _ in seen] == [0, 1, 2]
    assert all(name != threading.main_thread().name for _, name in seen)


def test_iteration_ends_when_unsubscribed_after_the_queued_messages(hubs):
    hub = hubs()
    sub = hub.subscribe("it")
    for i in range(5):
        hub.publish("it", i)
    hub.flush()
    sub.unsubscribe()
    assert [m.payload for m in sub] == [0, 1, 2, 3, 4]
    with pytest.raises(mphub.SubscriptionClosed):
        sub.next(timeout=1)


def test_flush_means_the_broker_has_routed_every_earlier_publish(broker, hubs):
    stock = Client(broker.address, authkey=KEY)
    subscribe(stock, "f")
    hub = hubs()
    for i in range(1000):
        hub.publish("f", i)
    hub.flush()
    assert barrier(stock) == [("f", i) for i in range(1000)]


def test_a_clean_close_sends_every_buffered_publish(broker, hubs):
    stock = Client(broker.address, authkey=KEY)
    subscribe(stock, "c")
    hub = mphub.connect(broker.addrs[0], authkey=KEY)
    for i in range(10_000):
        hub.publish("c", i)
    hub.close()
    assert [stock.recv()[1] for _ in range(10_000)] == list(range(10_000))


def test_a_unix_socket_address_works(start_broker, tmp_path):
    path = tmp_path / "hub.sock"
    start_broker(listen=(f"unix:{path}",))
    with mphub.connect(f"unix:{path}", authkey=KEY) as hub:
        sub = hub.subscribe("u")
        hub.publish("u", "over unix")
        assert sub.next(timeout=10).payload == "over unix"


def test_a_313_stock_publisher_reaches_a_client_py_subscriber(broker, hubs):
    sub = hubs().subscribe("x.v")
    r = run_py313(PEER, "pub", broker.addrs[0], KEY.hex(), "x.v", 300)
    assert r.returncode == 0, r.stderr
    assert [sub.next(timeout=10).payload for _ in range(300)] == [payload(i) for i in range(300)]


def test_client_py_publishes_to_a_313_stock_subscriber(broker, hubs):
    proc = subprocess.Popen(
        [str(python313()), str(PEER), "sub", broker.addrs[0], KEY.hex(), "x.v", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        hub = hubs()
        for i in range(300):
            hub.publish("x.v", payload(i))
        hub.flush()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "ok sub 3.13" in out
    finally:
        proc.kill()


def test_client_py_itself_runs_under_313_against_a_311_stock_peer(broker):
    stock = Client(broker.address, authkey=KEY)
    subscribe(stock, "from313")
    r = run_py313(CLIENT_PEER, broker.addrs[0], KEY.hex())
    assert r.returncode == 0, r.stderr
    assert "ok 3.13" in r.stdout
    assert barrier(stock) == [("from313", payload(i)) for i in range(100)]


def test_a_thread_iterating_a_subscription_finishes_when_the_hub_closes(hubs):
    hub = hubs()
    sub = hub.subscribe("t")
    got = []
    t = threading.Thread(target=lambda: got.extend(m.payload for m in sub))
    t.start()
    other = hubs()
    for i in range(100):
        other.publish("t", i)
    other.flush()
    hub.flush()
    hub.close()
    t.join(30)
    assert not t.is_alive()
    assert got == list(range(100))


def test_messages_for_other_subscriptions_arrive_while_one_consumer_reads(hubs):
    hub = hubs()
    busy, quiet = hub.subscribe("busy"), hub.subscribe("quiet")
    pub = hubs()
    for i in range(5000):
        pub.publish("busy", i)
        if i % 1000 == 0:
            pub.publish("quiet", i)
    pub.flush()
    assert [busy.next(timeout=10).payload for _ in range(5000)] == list(range(5000))
    assert [quiet.next(timeout=10).payload for _ in range(5)] == [0, 1000, 2000, 3000, 4000]


def test_group_members_on_one_hub_share_the_messages(hubs):
    hub = hubs()
    members = [hub.subscribe("jobs.*", group="workers") for _ in range(3)]
    pub = hubs()
    for i in range(300):
        pub.publish("jobs.x", i)
    pub.flush()
    hub.flush()
    got = [m.next().payload for s in members for m in [s] * s.pending]
    assert sorted(got) == list(range(300))
    assert [s.pending for s in members] == [0, 0, 0] and all(s.delivered == 100 for s in members)


def test_outside_a_cluster_there_is_no_max_payload_and_large_publishes_pass_without_a_warning(broker):
    import warnings

    with mphub.connect(broker.addrs[0], authkey=KEY) as hub, warnings.catch_warnings():
        warnings.simplefilter("error")
        hub.flush()
        assert hub.max_payload is None
        sub = hub.subscribe("big")
        hub.publish("big", b"z" * (2 << 20))
        assert sub.next(timeout=30).payload == b"z" * (2 << 20)
