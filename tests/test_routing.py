"""Wildcards, queue groups, ordering and scale, through stock clients."""

from multiprocessing.connection import Client

from conftest import KEY
from scenarios import WILDCARD_EXPECTED, WILDCARD_TOPICS, barrier, subscribe


def test_wildcards_follow_nats_rules(broker):
    pub = Client(broker.address, authkey=KEY)
    subs = {}
    for pattern in WILDCARD_EXPECTED:
        c = Client(broker.address, authkey=KEY)
        subscribe(c, pattern)
        subs[pattern] = c
    for topic in WILDCARD_TOPICS:
        pub.send((topic, topic))
    barrier(pub)
    got = {p: [m[0] for m in barrier(c)] for p, c in subs.items()}
    assert got == WILDCARD_EXPECTED


def test_a_queue_group_gets_each_message_once_shared_fairly(broker):
    members = [Client(broker.address, authkey=KEY) for _ in range(3)]
    for m in members:
        subscribe(m, ("jobs.*", "workers"))
    watcher = Client(broker.address, authkey=KEY)
    subscribe(watcher, "jobs.*")
    pub = Client(broker.address, authkey=KEY)
    for i in range(3000):
        pub.send(("jobs.run", i))
    barrier(pub)
    per_member = [[m[1] for m in barrier(c)] for c in members]
    everything = sorted(i for got in per_member for i in got)
    assert everything == list(range(3000))  # none lost, none duplicated
    assert all(900 <= len(got) <= 1100 for got in per_member), [len(g) for g in per_member]
    assert [m[1] for m in barrier(watcher)] == list(range(3000))  # plain subscribers see all


def test_ordering_holds_for_100k_messages(broker):
    sub = Client(broker.address, authkey=KEY)
    subscribe(sub, "seq")
    pub = Client(broker.address, authkey=KEY)
    n = 100_000
    for i in range(n):
        pub.send(("seq", i))
    barrier(pub)
    for i in range(n):
        assert sub.recv() == ("seq", i)
    assert barrier(sub) == []


def test_a_thousand_connections_all_receive(broker):
    conns = [Client(broker.address, authkey=KEY) for _ in range(1000)]
    for c in conns:
        c.send(("$sub", "fan.out"))
    for c in conns:
        assert c.recv() == ("$ok", ("$sub", "fan.out"))
    pub = Client(broker.address, authkey=KEY)
    pub.send(("fan.out", "hello all"))
    barrier(pub)
    for c in conns:
        assert c.recv() == ("fan.out", "hello all")
    for c in conns:
        c.close()
