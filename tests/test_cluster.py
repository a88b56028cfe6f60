"""mphub nodes on a NATS cluster behave as one hub (`--cluster`), through stock Python clients.

Every test starts Debian's nats-server (a routed three-server cluster where it matters) and real
mphub nodes on loopback. `settle` is the cross-node barrier: interest made before it is known
everywhere after it.
"""

import pickle
import signal
import threading
from multiprocessing.connection import Client

import pytest

from cluster_helpers import healthz, raw_nats_publish, recv_until, scrape, settle, wait_for_interest
from conftest import KEY, ROOT
from natsserver import NatsServer, free_port
from scenarios import WILDCARD_EXPECTED, WILDCARD_TOPICS, barrier, subscribe

END = ("end", None)
CONNECTED = "cluster: connected to NATS"  # the node's log line


def connect(node):
    return Client(node.address, authkey=KEY)


def listener(node, *patterns):
    """A stock client on `node` subscribed to `patterns` and to the END marker's topic."""
    c = connect(node)
    for p in patterns:
        subscribe(c, p)
    subscribe(c, "end")
    return c


def test_a_publish_on_one_node_reaches_subscribers_on_the_others_unchanged(nats, node):
    servers = nats(3)
    a, b, c = (node(s.url) for s in servers)
    subs = {}
    for name, n in [("a", a), ("b", b), ("c", c)]:
        subs[name] = listener(n, "sensors.*")
    settle([a, b, c])
    pub = connect(a)
    payloads = [{"i": 1, "v": 21.5}, b"\x00" * 100_000, ("nested", [1, 2.5, None]), "ü" * 10, 2**100]
    for p in payloads:
        pub.send(("sensors.temp", p))
    pub.send(END)
    for name, conn in subs.items():
        assert recv_until(conn, END) == [("sensors.temp", p) for p in payloads], name
    sent = scrape(a)
    assert sent["mphub_cluster_messages_sent_total"] >= len(payloads) + 1
    for n in (b, c):
        got = scrape(n)
        assert got["mphub_cluster_connected"] == 1
        assert got["mphub_cluster_messages_received_total"] >= len(payloads) + 1
        assert got["mphub_cluster_bytes_received_total"] > 100_000
        # Nothing was lost inside the node: all the NATS client read reached the bridge.
        assert got["mphub_cluster_nats_messages_in_total"] == got["mphub_cluster_messages_received_total"]


def test_stock_clients_of_each_python_version_talk_across_nodes(nats, node, interpreter):
    from conftest import run_py313

    (server,) = nats(1)
    a, b = node(server.url), node(server.url)
    if interpreter is None:
        import cluster_scenario

        cluster_scenario.main(a.address, b.address, KEY)
    else:
        r = run_py313(ROOT / "tests/python/cluster_scenario.py", a.addrs[0], b.addrs[0], KEY.hex())
        assert r.returncode == 0 and r.stdout.startswith("ok 3.13"), r.stderr


def test_wildcards_follow_nats_rules_across_nodes(nats, node):
    (server,) = nats(1)
    a, b = node(server.url), node(server.url)
    subs = {}
    for pattern in [*WILDCARD_EXPECTED, ("a.*", "a.>")]:
        subs[pattern] = listener(b, *(pattern if isinstance(pattern, tuple) else (pattern,)))
    settle([a, b])
    pub = connect(a)
    for topic in WILDCARD_TOPICS:
        pub.send((topic, topic))
    pub.send(END)
    got = {p: [m[0] for m in recv_until(c, END)] for p, c in subs.items()}
    # A connection holding two matching patterns gets each message once.
    assert got == {**WILDCARD_EXPECTED, ("a.*", "a.>"): ["a.b", "a.b.c"]}


def test_a_queue_group_on_three_nodes_gets_each_of_3000_messages_exactly_once(nats, node):
    servers = nats(3)
    nodes = [node(s.url) for s in servers]
    members = []  # (node index, connection)
    for i, n in enumerate(nodes):
        members += [(i, listener(n, ("jobs.*", "workers"))) for _ in range(2)]
    settle(nodes)
    pubs = [connect(n) for n in nodes]
    for k in range(3000):
        pubs[k % 3].send(("jobs.run", k))
    for p in pubs:
        p.send(END)
    got = {}  # message -> node indexes that received it
    for i, m in members:
        seen_ends = 0
        while seen_ends < 3:
            for msg in recv_until(m, END):
                got.setdefault(msg[1], []).append(i)
            seen_ends += 1
    assert sorted(got) == list(range(3000))
    assert all(len(v) == 1 for v in got.values()), "a message reached the group twice"
    # Each node has members, so NATS and mphub alike keep every message on its publisher's node.
    assert all(v == [k % 3] for k, v in got.items())


def test_a_group_with_no_member_on_the_publishing_node_is_served_once_elsewhere(nats, node):
    servers = nats(3)
    a, b, c = (node(s.url) for s in servers)
    members = [listener(n, ("jobs.>", "workers")) for n in (b, c)]
    watcher = listener(c, "jobs.>")  # a plain subscriber still gets everything
    settle([a, b, c])
    pub = connect(a)
    for k in range(3000):
        pub.send(("jobs.run", k))
    pub.send(END)
    everything = sorted(msg[1] for m in members for msg in recv_until(m, END))
    assert everything == list(range(3000))
    assert [msg[1] for msg in recv_until(watcher, END)] == list(range(3000))


def test_order_per_publisher_holds_across_nodes_and_overlapping_patterns(nats, node):
    (server,) = nats(1)
    a, b = node(server.url), node(server.url)
    both = connect(b)  # NATS may pick either pattern's subscription for a.x: order must hold
    subscribe(both, "a.*")
    subscribe(both, "a.>")
    deep = connect(b)
    subscribe(deep, "a.>")
    settle([a, b])
    pub = connect(a)
    sent = []
    for k in range(5000):
        topic = "a.x" if k % 3 else "a.x.y"
        pub.send((topic, k))
        sent.append((topic, k))
    pub.send(("a.end", None))
    assert recv_until(both, ("a.end", None)) == sent
    assert recv_until(deep, ("a.end", None)) == sent
    # NATS sent b every a.x twice (one per pattern): the copies were skipped, and counted.
    assert scrape(b)["mphub_cluster_copies_total"] >= sum(1 for t, _ in sent if t == "a.x")


def test_publishers_on_one_node_publishing_at_once_lose_nothing_on_another(nats, node):
    (server,) = nats(1)
    a, b = node(server.url), node(server.url)
    sub = listener(b, "a.>")
    settle([a, b])
    pubs = [connect(a) for _ in range(4)]
    n = 20_000

    def publish(i, pub):
        for k in range(n):
            pub.send((f"a.{i}", k))
        barrier(pub)

    threads = [threading.Thread(target=publish, args=(i, p)) for i, p in enumerate(pubs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pubs[0].send(END)
    got = {}
    for topic, k in recv_until(sub, END):
        got.setdefault(topic, []).append(k)
    assert {t: len(ks) for t, ks in got.items()} == {f"a.{i}": n for i in range(4)}
    assert all(ks == list(range(n)) for ks in got.values()), "a publisher's order broke"


def test_a_node_without_local_interest_receives_none_of_the_traffic(nats, node):
    (server,) = nats(1)
    a, b = node(server.url), node(server.url)
    sub = connect(b)
    subscribe(sub, "other.*")
    settle([a, b])
    before = scrape(b)["mphub_cluster_messages_received_total"]
    assert scrape(b)["mphub_cluster_interest"] == 1
    pub = connect(a)
    for k in range(500):
        pub.send(("quiet.x", k))
    pub.send(("other.end", None))
    assert recv_until(sub, ("other.end", None)) == []
    assert scrape(b)["mphub_cluster_messages_received_total"] - before == 1


def test_a_message_over_the_nats_payload_limit_stays_local_and_is_counted(nats, node):
    (server,) = nats(1)  # nats-server's default max_payload: 1 MiB
    a, b = node(server.url), node(server.url)
    local, remote = listener(a, "big"), listener(b, "big")
    settle([a, b])
    pub = connect(a)
    pub.send(("big", b"x" * (2 << 20)))
    pub.send(END)
    assert recv_until(local, END) == [("big", b"x" * (2 << 20))]
    assert recv_until(remote, END) == []
    assert scrape(a)['mphub_cluster_not_forwarded_total{reason="too_large"}'] == 1


def test_any_nats_client_can_publish_a_pickled_tuple_and_garbage_is_counted(nats, node):
    (server,) = nats(1)
    b = node(server.url, "--max-frame", "4096")
    # Two overlapping patterns: NATS sends b a copy for each; the subscriber gets one.
    sub = listener(b, "x.*", "x.>")
    wait_for_interest(server, "mphub.x.y")  # NATS routes the publishes below to b
    raw_nats_publish(server.url, "mphub.x.y", b"not a pickle")
    raw_nats_publish(server.url, "mphub.x.y", pickle.dumps(("x.other", 1)))  # topic mismatch
    raw_nats_publish(server.url, "mphub.x.y", pickle.dumps(("x.y", b"z" * 8192)))  # over max_frame
    raw_nats_publish(server.url, "mphub.x.y", pickle.dumps(("x.y", {"from": "nats"})))
    # The end marker on the same subscription: a plain NATS publisher's messages carry no
    # number, so their order holds only within one subscription.
    raw_nats_publish(server.url, "mphub.x.end", pickle.dumps(("x.end", None)))
    assert recv_until(sub, ("x.end", None)) == [("x.y", {"from": "nats"})]
    assert scrape(b)['mphub_cluster_inbound_dropped_total{reason="invalid"}'] == 3


def test_nats_unreachable_at_start_the_node_serves_locally_and_says_so(node):
    port = free_port()
    n = node(f"nats://127.0.0.1:{port}")
    sub, pub = connect(n), connect(n)
    subscribe(sub, "t")
    pub.send(("t", 1))
    barrier(pub)
    assert barrier(sub) == [("t", 1)]
    status, text = healthz(n)
    assert status == 200 and "not connected to NATS" in text, text
    got = scrape(n)
    assert got["mphub_cluster_connected"] == 0
    # The publish waits in the reconnect buffer for NATS.
    assert got["mphub_cluster_outbound_queued_bytes"] > 0
    assert n.wait_for_log("cannot reach NATS")
    late = NatsServer("late", port=port)
    try:
        assert n.wait_for_log(CONNECTED)
        assert "connected to NATS" in healthz(n)[1]
    finally:
        late.stop()


def test_a_nats_restart_restores_interest_and_without_a_reconnect_buffer_counts_the_losses(nats, node):
    (server,) = nats(1)
    a, b = node(server.url, "--cluster-reconnect-buffer", "0"), node(server.url)
    sub = listener(b, "t.*")
    settle([a, b])
    pub = connect(a)
    for k in range(100):
        pub.send(("t.x", k))
    pub.send(END)
    assert len(recv_until(sub, END)) == 100

    server.stop()
    assert a.wait_for_log("lost the NATS connection")
    before = scrape(a)['mphub_cluster_not_forwarded_total{reason="disconnected"}']
    for k in range(50):
        pub.send(("t.x", k))
    barrier(pub)
    lost = scrape(a)['mphub_cluster_not_forwarded_total{reason="disconnected"}'] - before
    assert lost == 50

    server.start()
    assert a.wait_for_log(CONNECTED, count=2) and b.wait_for_log(CONNECTED, count=2)
    settle([a, b])  # b's subscriptions came back without its client doing anything
    for k in range(100):
        pub.send(("t.x", 1000 + k))
    pub.send(END)
    assert [m[1] for m in recv_until(sub, END)] == [1000 + k for k in range(100)]
    assert scrape(a)["mphub_cluster_disconnects_total"] == 1


def test_a_node_restart_restores_interest_from_reconnecting_clients(nats, node):
    import mphub

    (server,) = nats(1)
    a = node(server.url)
    port = free_port()
    b = node(server.url, listen=(f"127.0.0.1:{port}",))
    back = threading.Event()
    hub = mphub.connect(b.addrs[0], authkey=KEY, on_reconnected=back.set)
    try:
        s = hub.subscribe("t.*")
        settle([a, b])
        pub = connect(a)
        pub.send(("t.x", "before"))
        assert s.next(timeout=30).payload == "before"

        b.stop(signal.SIGKILL)
        b = node(server.url, listen=(f"127.0.0.1:{port}",))
        assert back.wait(30), "client-py did not reconnect"
        hub.flush()  # its subscriptions are restored on the new node
        settle([a, b])
        pub.send(("t.x", "after"))
        assert s.next(timeout=30).payload == "after"
    finally:
        hub.close()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--cluster", "http://127.0.0.1:4222"], "cluster URL"),
        (["--cluster", "http//nope"], "cluster URL"),
        (["--cluster", "nats://127.0.0.1:4222", "--cluster-prefix", "no-dot"], "cluster_prefix"),
        (["--cluster-prefix", "x."], "no cluster"),
        (["--cluster", "nats://127.0.0.1:4222", "--cluster-user", "u"], "go together"),
        (["--cluster", "nats://127.0.0.1:4222", "--cluster-token-file", "/nonexistent"], "cannot read"),
    ],
)
def test_cluster_settings_that_cannot_work_stop_the_node_with_one_clear_line(args, says):
    import subprocess

    from conftest import mphub_binary

    r = subprocess.run([str(mphub_binary()), "--metrics", "off", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr


@pytest.mark.parametrize("with_nats", [True, False], ids=["nats up", "nats away"])
def test_a_node_on_nats_stops_cleanly_on_sigterm(nats, node, with_nats):
    url = nats(1)[0].url if with_nats else f"nats://127.0.0.1:{free_port()}"
    n = node(url)
    sub, pub = connect(n), connect(n)
    subscribe(sub, "t")
    pub.send(("t", 1))
    barrier(pub)
    assert n.stop(signal.SIGTERM) == 0
    assert sub.recv() == ("t", 1)
    assert n.wait_for_log("mphub stopped")


def test_nodes_with_different_prefixes_are_different_hubs_on_one_nats(nats, node):
    (server,) = nats(1)
    a, b = node(server.url, "--cluster-prefix", "hub1."), node(server.url, "--cluster-prefix", "hub1.")
    other = node(server.url, "--cluster-prefix", "hub2.")
    on_b, on_other = listener(b, "t"), listener(other, "t")
    settle([a, b])
    wait_for_interest(server, "hub2.end")  # the other hub's node is no part of `settle`
    pub = connect(a)
    pub.send(("t", 1))
    pub.send(END)
    assert recv_until(on_b, END) == [("t", 1)]
    # The other hub's node is on the same NATS but hears nothing of hub1.
    raw_nats_publish(server.url, "hub2.end", pickle.dumps(END))
    assert recv_until(on_other, END) == []


@pytest.mark.parametrize("right", [True, False], ids=["right credentials", "wrong credentials"])
@pytest.mark.parametrize("kind", ["token", "user"])
def test_nats_credentials_from_files(node, tmp_path, kind, right):
    secret = tmp_path / "secret"
    secret.write_text(("s3cret" if right else "wrong") + "\n")
    if kind == "token":
        server = NatsServer("auth", extra=["--auth", "s3cret"])
        args = ["--cluster-token-file", str(secret)]
    else:
        server = NatsServer("auth", extra=["--user", "mphub", "--pass", "s3cret"])
        args = ["--cluster-user", "mphub", "--cluster-password-file", str(secret)]
    try:
        n = node(server.url, *args)
        if right:
            assert n.wait_for_log(CONNECTED)
        else:
            assert n.wait_for_log("cannot reach NATS")
            status, text = healthz(n)
            assert status == 200 and "not connected to NATS" in text, text
            assert scrape(n)["mphub_cluster_connected"] == 0
    finally:
        server.stop()


def make_certs(d):
    """A CA and a server certificate for 127.0.0.1, with openssl."""
    import subprocess

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=mphub test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "san.cnf")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem",
        "-days", "1", "-subj", "/CN=someone else")


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted CA", "unknown CA"])
def test_tls_to_nats_checks_the_server_certificate(node, tmp_path, trusted):
    make_certs(tmp_path)
    server = NatsServer("tls", extra=["--tls", "--tlscert", str(tmp_path / "server.pem"),
                                      "--tlskey", str(tmp_path / "server.key")])
    try:
        ca = tmp_path / ("ca.pem" if trusted else "other.pem")
        n = node(f"tls://127.0.0.1:{server.port}", "--cluster-tls-required", "--cluster-tls-ca", str(ca))
        if trusted:
            assert n.wait_for_log(CONNECTED)
        else:
            assert n.wait_for_log("cannot reach NATS")
            assert scrape(n)["mphub_cluster_connected"] == 0
    finally:
        server.stop()
