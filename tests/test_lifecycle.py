"""Starting, listening in every way, configuration errors, and a graceful stop."""

import os
import signal
import socket
import subprocess
from multiprocessing import connection
from multiprocessing.connection import Client

from conftest import KEY, mphub_binary
from scenarios import barrier, subscribe
from test_metrics import scrape


def run_mphub(*args, key=None):
    env = {k: v for k, v in os.environ.items() if k != "MPHUB_AUTHKEY"}
    if key:
        env["MPHUB_AUTHKEY"] = key
    return subprocess.run([str(mphub_binary()), *args], capture_output=True, text=True, env=env, timeout=30)


def test_protected_mode_refuses_an_open_address_without_a_key_and_names_every_way_out():
    r = run_mphub("--listen", "0.0.0.0:0", "--metrics", "off")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "MPHUB_AUTHKEY" in lines[0] and "0.0.0.0" in lines[0], r.stderr
    assert "[[users]]" in lines[0], r.stderr  # named users with keys of their own also open it


def test_configuration_errors_are_one_clear_line(tmp_path):
    for args in (["--max-frame", "12 parsecs"], ["--listen", "nowhere"], ["--config", str(tmp_path / "missing.toml")]):
        r = run_mphub(*args, "--metrics", "off")
        assert r.returncode != 0, args
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("max_frames = 10\n")
    r = run_mphub("--config", str(bad))
    assert r.returncode != 0 and "max_frames" in r.stderr


def test_sigterm_flushes_queued_messages_and_exits_zero(broker):
    sub = Client(broker.address, authkey=KEY)
    subscribe(sub, "bye")
    pub = Client(broker.address, authkey=KEY)
    for i in range(1000):
        pub.send(("bye", i))
    barrier(pub)  # everything is routed into sub's queue
    broker.proc.send_signal(signal.SIGTERM)
    for i in range(1000):
        assert sub.recv() == ("bye", i)
    try:
        sub.recv()
        raise AssertionError("still open after shutdown")
    except EOFError:
        pass
    assert broker.proc.wait(30) == 0


def test_unix_abstract_ipv6_and_tcp_listeners_form_one_hub(start_broker, tmp_path):
    path = tmp_path / "hub.sock"
    name = f"mphub-test-{os.getpid()}"
    b = start_broker(listen=("127.0.0.1:0", f"unix:{path}", f"unix:@{name}", "[::1]:0"))
    assert len(b.addrs) == 4
    sub_unix = Client(str(path), authkey=KEY)
    sub_abstract = Client("\0" + name, authkey=KEY)
    # Stock Client only dials IPv4 for (host, port); do what it does over an IPv6 socket.
    sock = socket.create_connection(("::1", int(b.addrs[3].rsplit(":", 1)[1])))
    sub_v6 = connection.Connection(sock.detach())
    connection.answer_challenge(sub_v6, KEY)
    connection.deliver_challenge(sub_v6, KEY)
    for s in (sub_unix, sub_abstract, sub_v6):
        subscribe(s, "everywhere")
    pub = Client(b.address, authkey=KEY)
    pub.send(("everywhere", 42))
    barrier(pub)
    for s in (sub_unix, sub_abstract, sub_v6):
        assert s.recv() == ("everywhere", 42)


def test_the_config_file_is_read_and_flags_beat_it(start_broker, tmp_path):
    cfg = tmp_path / "mphub.toml"
    cfg.write_text('max_frame = "1KiB"\nslow_consumer = "drop"\n')
    b = start_broker("--config", str(cfg))
    c = Client(b.address, authkey=KEY)
    c.send(("t", b"x" * 2000))
    assert c.recv()[0] == "$error"
    b2 = start_broker("--config", str(cfg), "--max-frame", "1MiB")
    c2 = Client(b2.address, authkey=KEY)
    c2.send(("t", b"x" * 2000))
    assert barrier(c2) == []


def test_the_authkey_file_is_read(start_broker, tmp_path):
    keyfile = tmp_path / "key"
    keyfile.write_bytes(b"from-a-file\n")
    b = start_broker("--authkey-file", str(keyfile), key=None)
    c = Client(b.address, authkey=b"from-a-file")
    assert barrier(c) == []


def test_connections_past_the_cap_are_closed_and_the_others_kept(start_broker):
    b = start_broker("--max-connections", "2", metrics="127.0.0.1:0")
    kept = [Client(b.address, authkey=KEY) for _ in range(2)]
    try:
        Client(b.address, authkey=KEY)
        raise AssertionError("a third connection was served")
    except (EOFError, ConnectionError, OSError):
        pass
    # Counted before the refused socket is closed, so the client's EOF orders it.
    assert scrape(b)["mphub_connections_rejected_total"] == 1
    for c in kept:
        assert barrier(c) == []
    kept[0].close()
    # A freed place is served again (the broker learns of the close when it reads EOF).
    for _ in range(50):
        try:
            c = Client(b.address, authkey=KEY)
            break
        except (EOFError, ConnectionError, OSError):
            continue
    assert barrier(c) == []
