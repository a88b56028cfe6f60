"""`python -m mphub info|req|reply`: asking the broker, and request/reply from a shell."""

import json
import subprocess
from multiprocessing.connection import Client

import pytest
from conftest import KEY
from scenarios import barrier, subscribe
from test_client_py_cli import cli


@pytest.fixture
def mbroker(start_broker):
    return start_broker(metrics="127.0.0.1:0")


def env_for(broker):
    return {
        "MPHUB_ADDRESS": broker.addrs[0],
        "MPHUB_AUTHKEY": KEY.decode(),
        "MPHUB_HTTP": broker.metrics_url.rsplit("/metrics", 1)[0],
    }


def test_info_prints_connections_and_subscriptions_as_tables(mbroker):
    c = Client(mbroker.address, authkey=KEY)
    c.send(("$hello", {"name": "table-row"}))
    c.recv()
    subscribe(c, "sensors.>")
    subscribe(c, ("jobs.*", "w"))
    barrier(c)
    p = cli("info", env_extra=env_for(mbroker))
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "connections (1, by id)"
    assert lines[1].split() == ["ID", "NAME", "USER", "PEER", "SUBSCRIPTIONS", "QUEUED", "IN", "OUT", "SINCE"]
    row = lines[2]
    assert "table-row" in row and "default" in row and "jobs.* <w>, sensors.>" in row and "0 B" in row
    at = lines.index("subscriptions (2)")
    assert lines[at + 1].split() == ["PATTERN", "GROUP", "SUBSCRIBERS"]
    assert [line.split() for line in lines[at + 2 :]] == [["jobs.*", "w", "1"], ["sensors.>", "-", "1"]]
    c.close()


def test_info_as_json_and_a_clear_error_without_the_endpoint(mbroker):
    p = cli("info", "--json", "--sort", "queued_bytes", env_extra=env_for(mbroker))
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert set(json.loads(out)) == {"connections", "subscriptions"}
    bad = cli("info", "--sort", "colour", env_extra=env_for(mbroker))
    _, err = bad.communicate(timeout=30)
    assert bad.returncode == 1 and "unknown variant `colour`" in err
    gone = cli("info", "--http", "http://127.0.0.1:9", env_extra=env_for(mbroker))
    _, err = gone.communicate(timeout=30)
    assert gone.returncode == 1 and "is --metrics on?" in err


def test_req_gets_the_reply_of_a_stock_responder(mbroker):
    responder = Client(mbroker.address, authkey=KEY)
    subscribe(responder, "svc.double")
    p = cli("req", "svc.double", "[1, 2]", env_extra=env_for(mbroker))
    topic, request = responder.recv()
    assert topic == "svc.double" and request["body"] == [1, 2]
    responder.send((request["reply_to"], request["body"] * 2))
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out == "[1, 2, 1, 2]\n"


def test_reply_answers_stock_requesters_with_a_value_or_an_echo(mbroker):
    fixed = cli("reply", "svc.answer", "{'answer': 42}", "-n", "1", env_extra=env_for(mbroker))
    echo = cli("reply", "svc.echo", "-n", "2", env_extra=env_for(mbroker))
    for p in (fixed, echo):
        assert "answering requests" in p.stderr.readline()
    asker = Client(mbroker.address, authkey=KEY)
    subscribe(asker, "_INBOX.test.>")
    for topic, body in [("svc.answer", "what?"), ("svc.echo", (1, "two")), ("svc.echo", None)]:
        asker.send((topic, {"reply_to": "_INBOX.test.1", "body": body}))
        expected = {"answer": 42} if topic == "svc.answer" else body
        assert asker.recv() == ("_INBOX.test.1", expected)
    out, err = fixed.communicate(timeout=30)
    assert fixed.returncode == 0, err
    assert out == "svc.answer 'what?'\n"
    out, err = echo.communicate(timeout=30)
    assert echo.returncode == 0, err
    assert out.splitlines() == ["svc.echo (1, 'two')", "svc.echo None"]


def test_values_are_python_literals_or_json_or_plain_text_from_arguments_or_stdin(mbroker):
    sub = Client(mbroker.address, authkey=KEY)
    subscribe(sub, "v")
    for value, expected in [
        ("(1, 'a')", (1, "a")),
        ('{"x": null, "ok": true}', {"x": None, "ok": True}),
        ("b'\\x00'", b"\x00"),
        ("plain words", "plain words"),
    ]:
        p = cli("pub", "v", value, env_extra=env_for(mbroker))
        assert p.wait(30) == 0, p.stderr.read()
        assert sub.recv() == ("v", expected)
    p = cli("pub", "v", env_extra=env_for(mbroker), stdin=subprocess.PIPE)
    _, err = p.communicate('[1]\n\n{"k": false}\n', timeout=30)
    assert p.returncode == 0, err
    assert [sub.recv(), sub.recv()] == [("v", [1]), ("v", {"k": False})]
