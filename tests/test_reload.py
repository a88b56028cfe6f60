"""SIGHUP re-reads the config file: users, keys, permissions and limits change while the broker
runs and its connections stay open; a config that fails to load changes nothing."""

import pickle
import signal
import urllib.request
from multiprocessing.connection import AuthenticationError, Client

import pytest
from conftest import KEY
from scenarios import barrier, subscribe

KEYS = {"ingest": b"ingest key", "reader": b"reader key", "temp": b"temp key", "rotated": b"old key"}

BEFORE = """
[[users]]
name = "ingest"
authkey_file = "{d}/ingest"
publish = ["a.>"]

[[users]]
name = "reader"
authkey_file = "{d}/reader"

[[users]]
name = "temp"
authkey_file = "{d}/temp"

[[users]]
name = "rotated"
authkey_file = "{d}/rotated"
"""

# ingest gains every topic, reader loses `>` (keeps x.>), temp is gone, rotated has a new key.
AFTER = """
max_frame = 1000

[[users]]
name = "ingest"
authkey_file = "{d}/ingest"

[[users]]
name = "reader"
authkey_file = "{d}/reader"
subscribe = ["x.>"]

[[users]]
name = "rotated"
authkey_file = "{d}/rotated"
"""


def scrape(broker):
    with urllib.request.urlopen(broker.metrics_url, timeout=10) as r:
        return r.read().decode()


@pytest.fixture
def hub(start_broker, tmp_path):
    for name, key in KEYS.items():
        (tmp_path / name).write_bytes(key)
    conf = tmp_path / "mphub.toml"
    conf.write_text(BEFORE.format(d=tmp_path))
    b = start_broker("--config", str(conf), metrics="127.0.0.1:0")
    b.conf, b.dir = conf, tmp_path
    return b


def reload(broker, text=None, count=1):
    if text is not None:
        broker.conf.write_text(text.format(d=broker.dir))
    broker.proc.send_signal(signal.SIGHUP)
    assert broker.wait_for_log("configuration reloaded", count=count), broker.log()


def test_a_reload_grants_revokes_and_removes_users_while_their_connections_are_open(hub):
    ingest = Client(hub.address, authkey=KEYS["ingest"])
    reader = Client(hub.address, authkey=KEYS["reader"])
    temp = Client(hub.address, authkey=KEYS["temp"])
    rotated = Client(hub.address, authkey=KEYS["rotated"])
    subscribe(reader, ">")
    ingest.send(("b.x", "before"))
    assert barrier(ingest) == [("$error", "permission denied: publish to 'b.x'")]

    (hub.dir / "rotated").write_bytes(b"new key")
    reload(hub, AFTER)

    # Granted: ingest may publish anywhere now, on the same connection.
    ingest.send(("b.x", "after"))
    assert barrier(ingest) == []
    # Revoked: reader's `>` is no longer allowed; it is told, and receives nothing more.
    assert barrier(reader) == [("$error", "permission denied: subscribe to '>'")]
    ingest.send(("x.y", 1))
    barrier(ingest)
    assert barrier(reader) == []
    subscribe(reader, "x.>")
    ingest.send(("x.y", 2))
    barrier(ingest)
    assert barrier(reader) == [("x.y", 2)]
    # Removed, and rotated: their connections are closed; the old keys no longer work.
    for conn in (temp, rotated):
        with pytest.raises(EOFError):
            conn.recv()
    for key in (KEYS["temp"], KEYS["rotated"]):
        with pytest.raises(AuthenticationError):
            Client(hub.address, authkey=key)
    assert barrier(Client(hub.address, authkey=b"new key")) == []
    assert hub.wait_for_log("was removed by a configuration reload")
    assert hub.wait_for_log("has a new key since a configuration reload")
    assert 'mphub_config_reloads_total{result="ok"} 1' in scrape(hub)


def test_new_limits_apply_to_the_next_frame_of_an_open_connection(hub):
    ingest = Client(hub.address, authkey=KEYS["ingest"])
    ingest.send(("a.big", "x" * 5000))
    assert barrier(ingest) == []
    reload(hub, AFTER)
    ingest.send(("a.big", "x" * 5000))
    reply = ingest.recv()
    assert reply[0] == "$error" and "1000" in reply[1], reply


def test_a_config_that_fails_to_load_changes_nothing(hub):
    reader = Client(hub.address, authkey=KEYS["reader"])
    subscribe(reader, ">")
    hub.conf.write_text("[[users]]\nname = \"broken\"\nauthkey_file = \"/nonexistent/key\"\n")
    hub.proc.send_signal(signal.SIGHUP)
    assert hub.wait_for_log("configuration reload failed, nothing changed")
    assert 'user \\"broken\\": cannot read' in hub.log() or 'user "broken": cannot read' in hub.log()
    assert 'mphub_config_reloads_total{result="error"} 1' in scrape(hub)
    ingest = Client(hub.address, authkey=KEYS["ingest"])
    ingest.send(("a.still", 1))
    barrier(ingest)
    assert barrier(reader) == [("a.still", 1)]
    assert hub.proc.poll() is None


def test_settings_that_need_a_restart_are_kept_and_logged(hub):
    # (listen and metrics come from flags here, which beat the file on a reload too.)
    reload(hub, 'log_format = "json"\n' + BEFORE)
    assert hub.wait_for_log("need a restart")
    assert "log_format" in hub.log()
    c = Client(hub.address, authkey=KEYS["reader"])
    assert barrier(c) == []


def test_the_shared_key_reloads_from_its_file(start_broker, tmp_path):
    keyfile = tmp_path / "shared"
    keyfile.write_bytes(KEY)
    conf = tmp_path / "mphub.toml"
    conf.write_text(f'authkey_file = "{keyfile}"\n')
    b = start_broker("--config", str(conf), key=None)
    old = Client(b.address, authkey=KEY)
    keyfile.write_bytes(b"rotated shared key")
    b.proc.send_signal(signal.SIGHUP)
    assert b.wait_for_log("configuration reloaded")
    with pytest.raises(EOFError):
        old.recv()
    assert barrier(Client(b.address, authkey=b"rotated shared key")) == []


def test_a_reload_cannot_turn_protected_mode_off_while_an_open_address_stays(start_broker, tmp_path):
    (tmp_path / "ingest").write_bytes(KEYS["ingest"])
    conf = tmp_path / "mphub.toml"
    conf.write_text(f'listen = ["0.0.0.0:0"]\n\n[[users]]\nname = "ingest"\nauthkey_file = "{tmp_path}/ingest"\n')
    b = start_broker("--config", str(conf), key=None, listen=(), metrics="127.0.0.1:0")
    # Alone, this file passes protected mode (loopback only, no keys); but a reload keeps the
    # listener the broker has, which is open to the network.
    conf.write_text('listen = ["127.0.0.1:0"]\n')
    b.proc.send_signal(signal.SIGHUP)
    assert b.wait_for_log("configuration reload failed, nothing changed"), b.log()
    assert "protected mode" in b.log()
    assert 'mphub_config_reloads_total{result="error"} 1' in scrape(b)
    # Still keyed: a client without the key gets nothing through; the user still gets in.
    port = int(b.addrs[0].rsplit(":", 1)[1])
    watcher = Client(("127.0.0.1", port), authkey=KEYS["ingest"])
    subscribe(watcher, ">")
    # (A keyless stock client reads the broker's challenge as a pickle: UnpicklingError.)
    with pytest.raises((AuthenticationError, EOFError, ConnectionError, pickle.UnpicklingError)):
        keyless = Client(("127.0.0.1", port))
        keyless.send(("a.x", "through"))
        keyless.recv()
    assert barrier(watcher) == []


def test_a_reload_with_a_log_level_it_cannot_read_changes_nothing(hub):
    hub.conf.write_text('log_level = "x=nolevel"\n' + AFTER.format(d=hub.dir))
    hub.proc.send_signal(signal.SIGHUP)
    assert hub.wait_for_log("configuration reload failed, nothing changed"), hub.log()
    assert "log_level" in hub.log()
    # The users of the file it refused did not apply: temp is still there, ingest still limited.
    assert barrier(Client(hub.address, authkey=KEYS["temp"])) == []
    ingest = Client(hub.address, authkey=KEYS["ingest"])
    ingest.send(("b.x", 1))
    assert barrier(ingest) == [("$error", "permission denied: publish to 'b.x'")]


def test_the_limit_gauges_follow_a_reload(hub):
    reload(hub, "max_connections = 77\noutbound_limit = \"1MiB\"\n" + AFTER)
    text = scrape(hub)
    assert "mphub_max_connections 77" in text
    assert f"mphub_outbound_limit_bytes {1 << 20}" in text
