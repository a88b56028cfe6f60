"""payloads = "data": a publish whose pickle would import anything outside allow_globals is
refused unread and never delivered, so no subscriber's recv() can be made to run code."""

import datetime
import decimal
import os
import pickle
import urllib.request
from multiprocessing.connection import Client

import pytest
from cluster_helpers import raw_nats_publish, recv_until, wait_for_interest
from conftest import KEY, ROOT, run_py313
from scenarios import barrier, subscribe

TRUSTED = b"trusted's key"


class RunsCommand:
    """Unpickling this calls os.system (posix.system on Linux)."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def scrape(broker):
    with urllib.request.urlopen(broker.metrics_url, timeout=10) as r:
        return r.read().decode()


@pytest.fixture
def hub(start_broker, tmp_path):
    """Everyone is held to data with datetime.datetime allowed, except `trusted` (any)."""
    (tmp_path / "trusted").write_bytes(TRUSTED)
    conf = tmp_path / "mphub.toml"
    conf.write_text(
        'payloads = "data"\nallow_globals = ["datetime.datetime"]\n'
        f'[[users]]\nname = "trusted"\nauthkey_file = "{tmp_path}/trusted"\npayloads = "any"\n'
    )
    return start_broker("--config", str(conf), metrics="127.0.0.1:0")


def test_a_payload_that_runs_code_is_refused_and_a_datetime_passes(hub):
    sub = Client(hub.address, authkey=KEY)
    subscribe(sub, "jobs.>")
    pub = Client(hub.address, authkey=KEY)
    pub.send(("jobs.evil", RunsCommand()))
    assert barrier(pub) == [("$error", "payload refused: it imports 'posix.system'")]
    when = datetime.datetime(2026, 11, 30, 12, 0)
    pub.send(("jobs.ok", when))
    pub.send(("jobs.plain", {"n": 1, "tags": {"a", "b"}, "raw": b"\x00", "f": 2.5}))
    barrier(pub)
    assert barrier(sub) == [("jobs.ok", when), ("jobs.plain", {"n": 1, "tags": {"a", "b"}, "raw": b"\x00", "f": 2.5})]
    assert 'mphub_messages_refused_total{reason="code",user="default"} 1' in scrape(hub)


def test_a_global_outside_the_list_is_refused_even_when_harmless(hub):
    pub = Client(hub.address, authkey=KEY)
    pub.send(("jobs.money", decimal.Decimal("1.5")))
    assert barrier(pub) == [("$error", "payload refused: it imports 'decimal.Decimal'")]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_every_pickle_protocol_is_judged(hub, protocol):
    sub = Client(hub.address, authkey=KEY)
    subscribe(sub, "p.>")
    pub = Client(hub.address, authkey=KEY)
    pub.send_bytes(pickle.dumps(("p.evil", RunsCommand()), protocol=protocol))
    assert barrier(pub) == [("$error", "payload refused: it imports 'posix.system'")]
    assert barrier(sub) == []


def test_a_user_with_its_own_policy_may_send_what_others_may_not(hub):
    sub = Client(hub.address, authkey=KEY)
    subscribe(sub, "jobs.>")
    trusted = Client(hub.address, authkey=TRUSTED)
    trusted.send(("jobs.money", decimal.Decimal("2.5")))
    assert barrier(trusted) == []
    assert barrier(sub) == [("jobs.money", decimal.Decimal("2.5"))]


def test_a_cpython_313_client_is_judged_the_same(hub):
    sub = Client(hub.address, authkey=KEY)
    subscribe(sub, "jobs.>")
    host, port = hub.address
    r = run_py313(ROOT / "tests/python/payload_peer.py", f"{host}:{port}", KEY.hex(), "jobs.x")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "payload refused: it imports 'posix.system'"
    assert barrier(sub) == [("jobs.x", datetime.datetime(2026, 11, 30, 12, 0))]


def test_a_bad_allow_globals_entry_stops_the_broker(tmp_path):
    from test_lifecycle import run_mphub

    conf = tmp_path / "bad.toml"
    conf.write_text('payloads = "data"\nallow_globals = ["datetime"]\n')
    r = run_mphub("--config", str(conf), "--metrics", "off")
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "allow_globals" in lines[0], r.stderr


def test_code_injected_straight_into_nats_is_refused_by_the_receiving_node(nats, node):
    (server,) = nats(1)
    b = node(server.url, "--payloads", "data")
    sub = Client(b.address, authkey=KEY)
    subscribe(sub, "x.*")
    wait_for_interest(server, "mphub.x.y")  # NATS routes the publishes below to b
    raw_nats_publish(server.url, "mphub.x.y", pickle.dumps(("x.y", RunsCommand())))
    raw_nats_publish(server.url, "mphub.x.y", pickle.dumps(("x.y", "data")))
    raw_nats_publish(server.url, "mphub.x.end", pickle.dumps(("x.end", None)))
    assert recv_until(sub, ("x.end", None)) == [("x.y", "data")]
    assert 'mphub_cluster_inbound_dropped_total{reason="refused"} 1' in scrape(b)
