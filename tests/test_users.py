"""Named users: each with a key of its own, permissions checked on every frame, still with
stock clients (CPython 3.11 answers the handshake with legacy MD5, 3.13 with {sha256})."""

import urllib.request
from multiprocessing.connection import AuthenticationError, Client

import pytest
from conftest import KEY, ROOT, python313, run_py313
from scenarios import barrier, subscribe
from test_lifecycle import run_mphub


def scrape(broker):
    """The /metrics page as text."""
    with urllib.request.urlopen(broker.metrics_url, timeout=10) as r:
        return r.read().decode()

INGEST = b"ingest's own key"
READER = b"reader's own key"
CAPPED = b"capped's own key"

USERS = """
[[users]]
name = "ingest"
authkey_file = "{dir}/ingest.key"
publish = ["sensors.>"]
deny_publish = ["sensors.secret.>"]
subscribe = ["_INBOX.>", "cmd.ingest.*"]
deny_subscribe = ["_INBOX.secret.>"]

[[users]]
name = "reader"
authkey_file = "{dir}/reader.key"
publish = []
metrics = false

[[users]]
name = "capped"
authkey_file = "{dir}/capped.key"
max_connections = 1
"""


@pytest.fixture
def hub(start_broker, tmp_path):
    """A broker with the shared test key (user `default`) and three named users."""
    for name, key in (("ingest", INGEST), ("reader", READER), ("capped", CAPPED)):
        (tmp_path / f"{name}.key").write_bytes(key + b"\n")
    conf = tmp_path / "mphub.toml"
    conf.write_text(USERS.format(dir=tmp_path))
    return start_broker("--config", str(conf), metrics="127.0.0.1:0")


def error_after(conn, frame):
    """Sends `frame`, then a barrier; returns the one reply that came before the pong."""
    conn.send(frame)
    replies = barrier(conn)
    assert len(replies) == 1, replies
    return replies[0]


def test_each_key_names_its_user_in_logs_and_metrics(hub):
    conns = [Client(hub.address, authkey=k) for k in (INGEST, READER, KEY)]
    for c in conns:
        assert barrier(c) == []
    text = scrape(hub)
    for user in ("ingest", "reader", "default"):
        assert f'mphub_connections_by_user{{user="{user}"}} 1' in text, text
    assert hub.wait_for_log("user=ingest")
    with pytest.raises(AuthenticationError):
        Client(hub.address, authkey=b"nobody's key")


def test_a_forbidden_publish_is_refused_and_nothing_reaches_a_subscriber(hub):
    watcher = Client(hub.address, authkey=KEY)
    subscribe(watcher, "sensors.>")
    ingest = Client(hub.address, authkey=INGEST)
    for topic in ("sensors.secret.key", "cmd.other"):
        assert error_after(ingest, (topic, "x")) == ("$error", f"permission denied: publish to '{topic}'")
    ingest.send(("sensors.temp", 21.5))
    barrier(ingest)
    assert barrier(watcher) == [("sensors.temp", 21.5)]
    reader = Client(hub.address, authkey=READER)
    assert error_after(reader, ("sensors.temp", 1))[1] == "permission denied: publish to 'sensors.temp'"
    assert barrier(watcher) == []
    text = scrape(hub)
    assert 'mphub_permission_denied_total{action="publish",user="ingest"} 2' in text, text
    assert 'mphub_permission_denied_total{action="publish",user="reader"} 1' in text, text


def test_a_wildcard_subscription_needs_an_allow_pattern_that_covers_it(hub):
    ingest = Client(hub.address, authkey=INGEST)
    for arg in ("cmd.ingest.>", "cmd.>", ">", ("cmd.>", "workers")):
        assert error_after(ingest, ("$sub", arg)) == ("$error", f"permission denied: subscribe to '{arg if isinstance(arg, str) else arg[0]}'")
    subscribe(ingest, "cmd.ingest.*")
    subscribe(ingest, ("cmd.ingest.start", "workers"))
    pub = Client(hub.address, authkey=KEY)
    pub.send(("cmd.ingest.start", 1))
    pub.send(("cmd.other.start", 2))
    barrier(pub)
    # Once through the plain subscription, once as the only member of `workers`: two deliveries
    # of the same publish (a connection gets a message once per plain match, once per group).
    got = barrier(ingest)
    assert got == [("cmd.ingest.start", 1)] * 2, got


def test_a_subscription_overlapping_a_deny_pattern_never_receives_the_denied_topics(hub):
    ingest = Client(hub.address, authkey=INGEST)
    subscribe(ingest, "_INBOX.>")
    pub = Client(hub.address, authkey=KEY)
    for topic in ("_INBOX.secret.a", "_INBOX.ab.1", "_INBOX.secret.b.c", "_INBOX.ab.2"):
        pub.send((topic, topic))
    barrier(pub)
    assert barrier(ingest) == [("_INBOX.ab.1", "_INBOX.ab.1"), ("_INBOX.ab.2", "_INBOX.ab.2")]


def test_a_group_message_a_member_may_not_receive_goes_to_another_member(hub):
    # ingest may not receive _INBOX.secret.>; the default user may. Both are members of w.
    restricted = Client(hub.address, authkey=INGEST)
    allowed = Client(hub.address, authkey=KEY)
    for member in (restricted, allowed):
        subscribe(member, ("_INBOX.>", "w"))
    pub = Client(hub.address, authkey=KEY)
    for i in range(10):
        pub.send(("_INBOX.secret.x", i))
        pub.send(("_INBOX.open.x", i))
    barrier(pub)
    got_restricted, got_allowed = barrier(restricted), barrier(allowed)
    assert not any(t.startswith("_INBOX.secret.") for t, _ in got_restricted), got_restricted
    # Every message reached the group once: the secret ones all at the member allowed them.
    assert sorted(got_restricted + got_allowed) == sorted(
        [("_INBOX.secret.x", i) for i in range(10)] + [("_INBOX.open.x", i) for i in range(10)]
    )


def test_a_wrong_key_gets_nothing_through_even_with_a_publish_pipelined_behind_it(hub):
    # A raw client answers the challenge with a key no user has and, without waiting for the
    # verdict, sends a publish: the broker refuses the answer and never reads the publish.
    import hmac
    import socket
    from multiprocessing.connection import CHALLENGE, Connection

    watcher = Client(hub.address, authkey=KEY)
    subscribe(watcher, ">")
    raw = Connection(socket.create_connection(hub.address).detach())
    challenge = raw.recv_bytes(256)
    assert challenge.startswith(CHALLENGE)
    raw.send_bytes(hmac.new(b"nobody's key", challenge[len(CHALLENGE):], "md5").digest())
    raw.send(("sensors.evil", "through"))
    assert raw.recv_bytes(256) == b"#FAILURE#"
    with pytest.raises((EOFError, OSError)):
        raw.recv_bytes()
    assert barrier(watcher) == []
    assert hub.wait_for_log("wrong authkey")


def test_a_user_without_metrics_permission_cannot_send_metrics(hub):
    reader = Client(hub.address, authkey=READER)
    ops = [("declare", "jobs_total", "counter", "Jobs", (), {}), ("inc", "jobs_total", {}, 1)]
    assert error_after(reader, ("$metrics", ops)) == ("$error", "permission denied: $metrics")
    assert "jobs_total" not in scrape(hub)
    assert 'mphub_permission_denied_total{action="metrics",user="reader"} 1' in scrape(hub)


def test_a_user_at_its_connection_limit_is_refused_with_a_reason(hub):
    first = Client(hub.address, authkey=CAPPED)
    assert barrier(first) == []
    second = Client(hub.address, authkey=CAPPED)
    assert second.recv() == ("$error", "permission denied: user 'capped' already has 1 connections (max_connections)")
    with pytest.raises(EOFError):
        second.recv()
    first.close()
    assert hub.wait_for_log("reason=client closed")
    third = Client(hub.address, authkey=CAPPED)
    assert barrier(third) == []


def test_a_cpython_313_client_is_named_by_its_sha256_answer(hub):
    assert python313() is not None
    watcher = Client(hub.address, authkey=KEY)
    subscribe(watcher, "sensors.>")
    host, port = hub.address
    r = run_py313(ROOT / "tests/python/user_peer.py", f"{host}:{port}", INGEST.hex(), "sensors.secret.x", "sensors.ok")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "permission denied: publish to 'sensors.secret.x'"
    assert barrier(watcher) == [("sensors.ok", "from 3.13")]


@pytest.mark.parametrize(
    "users, says",
    [
        ('[[users]]\nname = "a"\nauthkey_file = "{dir}/same"\n[[users]]\nname = "b"\nauthkey_file = "{dir}/same"\n', '"a" and "b" have the same key'),
        ('[[users]]\nname = "a"\nauthkey_file = "{dir}/missing"\n', 'user "a": cannot read'),
        ('[[users]]\nname = "a"\nauthkey_file = "{dir}/same"\npublish = ["a.>.b"]\n', 'user "a": publish: pattern "a.>.b"'),
        ('[[users]]\nname = "a"\nauthkey_file = "{dir}/same"\npayloads = "code"\n', "payloads"),
        ('[[users]]\nname = "default"\nauthkey_file = "{dir}/same"\n', 'user "default"'),
        ('[[users]]\nname = "a"\nauthkey_file = "{dir}/shared"\n', '"default" and "a" have the same key'),
    ],
)
def test_a_bad_user_config_stops_the_broker_with_one_line_that_never_shows_a_key(tmp_path, users, says):
    (tmp_path / "same").write_bytes(b"the-same-secret")
    (tmp_path / "shared").write_bytes(KEY)
    conf = tmp_path / "bad.toml"
    conf.write_text(users.format(dir=tmp_path))
    r = run_mphub("--config", str(conf), "--metrics", "off", key=KEY.decode())
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr
    assert "the-same-secret" not in r.stderr and KEY.decode() not in r.stderr


def test_users_work_without_a_shared_key(start_broker, tmp_path):
    (tmp_path / "ingest.key").write_bytes(INGEST)
    conf = tmp_path / "only.toml"
    conf.write_text(f'[[users]]\nname = "ingest"\nauthkey_file = "{tmp_path}/ingest.key"\n')
    b = start_broker("--config", str(conf), key=None, listen=("0.0.0.0:0",))
    c = Client(("127.0.0.1", int(b.addrs[0].rsplit(":", 1)[1])), authkey=INGEST)
    assert barrier(c) == []
    with pytest.raises(AuthenticationError):
        Client(("127.0.0.1", int(b.addrs[0].rsplit(":", 1)[1])), authkey=KEY)
