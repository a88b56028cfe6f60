"""TLS listeners (`--listen tls://HOST:PORT`): client-py over TLS meets stock clients on plain
listeners, certificates are checked both ways, a plain client or garbage on a TLS port fails
fast and is counted, and SIGHUP re-reads the certificate. Every certificate is made by openssl
for the test (tests/python/certs.py)."""

import asyncio
import signal
import socket
import ssl
import struct
import subprocess
from multiprocessing.connection import Client

import mphub
import mphub.aio
import pytest
from certs import Pki
from conftest import KEY, mphub_binary
from scenarios import barrier, parse_addr, subscribe
from test_metrics import scrape


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


def context(ca=None, cert=None):
    """What a client-py user writes: verify the broker against `ca`, show `cert` if given."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def tls_broker(start_broker, pki, *extra, listen=("127.0.0.1:0", "tls://127.0.0.1:0"), **kw):
    cert, key = pki.server()
    kw.setdefault("metrics", "127.0.0.1:0")
    return start_broker("--tls-cert", str(cert), "--tls-key", str(key), *extra, listen=listen, **kw)


def tls_addr(broker):
    return next(a for a in broker.addrs if a.startswith("tls://"))


def plain_addr(broker):
    return parse_addr(next(a for a in broker.addrs if not a.startswith("tls://")))


def failures(broker, kind, count=1):
    """`mphub_tls_failures_total{kind}` once the broker has logged `count` failed handshakes."""
    assert broker.wait_for_log("TLS handshake failed", count=count), broker.log()
    return scrape(broker)[f"mphub_tls_failures_total{{kind={kind}}}"]


def peer_serial(addr, ca):
    """The serial number of the certificate the broker shows a new connection."""
    host, port = addr[len("tls://") :].rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    with context(ca).wrap_socket(raw, server_hostname="localhost") as s:
        return int(s.getpeercert()["serialNumber"], 16)


# --------------------------------------------------------------------------- client-py over TLS


@pytest.mark.parametrize("flavour", ["threads", "asyncio"])
def test_client_py_over_tls_and_a_stock_client_on_a_plain_listener_reach_each_other(
    start_broker, pki, flavour
):
    broker = tls_broker(start_broker, pki)
    stock = Client(plain_addr(broker), authkey=KEY)
    subscribe(stock, "from.tls")
    payloads = [{"v": 21.5}, b"\x00" * 200_000, "ü" * 10]

    def stock_receives_then_sends():
        assert barrier(stock) == [("from.tls", p) for p in payloads]
        for p in payloads:
            stock.send(("to.tls", p))
        assert barrier(stock) == []

    if flavour == "threads":
        with mphub.connect(tls_addr(broker), authkey=KEY, tls=context(pki.ca)) as hub:
            sub = hub.subscribe("to.tls")
            for p in payloads:
                hub.publish("from.tls", p)
            hub.flush()
            stock_receives_then_sends()
            assert [sub.next(timeout=10).payload for _ in payloads] == payloads
    else:

        async def main():
            async with await mphub.aio.connect(tls_addr(broker), authkey=KEY, tls=context(pki.ca)) as hub:
                sub = await hub.subscribe("to.tls")
                for p in payloads:
                    await hub.publish("from.tls", p)
                await hub.flush()
                await asyncio.get_running_loop().run_in_executor(None, stock_receives_then_sends)
                return [(await sub.next(timeout=10)).payload for _ in payloads]

        assert asyncio.run(main()) == payloads


def test_the_tls_scheme_alone_verifies_against_the_system_cas_and_so_refuses_a_private_ca(start_broker, pki):
    broker = tls_broker(start_broker, pki)
    with pytest.raises(mphub.AuthenticationError, match="not trusted"):
        mphub.connect(tls_addr(broker), authkey=KEY, reconnect=False)
    assert failures(broker, "server_cert_rejected") == 1
    other = Pki(pki.dir / "other", "other")
    with pytest.raises(mphub.AuthenticationError, match="not trusted"):
        mphub.connect(tls_addr(broker), authkey=KEY, tls=context(other.ca))
    assert failures(broker, "server_cert_rejected", count=2) == 2

    async def aio_connect():
        await mphub.aio.connect(tls_addr(broker), authkey=KEY, tls=context(other.ca), reconnect=False)

    with pytest.raises(mphub.AuthenticationError, match="not trusted"):
        asyncio.run(aio_connect())
    # asyncio's TLS hangs up without an alert: the broker cannot tell why.
    assert failures(broker, "handshake", count=3) == 1


def test_the_host_name_must_match_the_certificate(start_broker, pki):
    cert, key = pki.server("named", sans="DNS:localhost")
    broker = start_broker("--tls-cert", str(cert), "--tls-key", str(key), listen=("tls://127.0.0.1:0",))
    port = tls_addr(broker).rsplit(":", 1)[1]
    with pytest.raises(mphub.AuthenticationError, match="not trusted"):
        mphub.connect(f"tls://127.0.0.1:{port}", authkey=KEY, tls=context(pki.ca), reconnect=False)
    with mphub.connect(f"tls://localhost:{port}", authkey=KEY, tls=context(pki.ca)) as hub:
        hub.flush()


# --------------------------------------------------------------------------- client certificates


def test_mtls_admits_a_certificate_from_the_client_ca_and_refuses_none_or_another_cas(start_broker, pki):
    clients = Pki(pki.dir / "clients", "clients")
    strangers = Pki(pki.dir / "strangers", "strangers")
    broker = tls_broker(start_broker, pki, "--tls-client-ca", str(clients.ca), listen=("tls://127.0.0.1:0",))
    addr = tls_addr(broker)

    with mphub.connect(addr, authkey=KEY, tls=context(pki.ca, clients.client("alice"))) as hub:
        sub = hub.subscribe("m")
        hub.publish("m", "hello")
        assert sub.next(timeout=10).payload == "hello"

    with pytest.raises(mphub.AuthenticationError):
        mphub.connect(addr, authkey=KEY, tls=context(pki.ca), reconnect=False)
    assert failures(broker, "no_client_cert") == 1

    with pytest.raises(mphub.AuthenticationError):
        mphub.connect(addr, authkey=KEY, tls=context(pki.ca, strangers.client("mallory")), reconnect=False)
    assert failures(broker, "bad_client_cert", count=2) == 1


# --------------------------------------------------------------------------- the wrong peers


def test_a_plain_client_and_garbage_on_the_tls_port_fail_fast_are_counted_and_harm_nothing(start_broker, pki):
    broker = tls_broker(start_broker, pki, "--handshake-timeout", "2")
    host, port = tls_addr(broker)[len("tls://") :].rsplit(":", 1)
    hub = mphub.connect(tls_addr(broker), authkey=KEY, tls=context(pki.ca))
    sub = hub.subscribe("still.here")

    # Garbage that is not TLS: answered with an error frame a multiprocessing peer can read,
    # then closed without waiting for the deadline.
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        head = s.recv(4, socket.MSG_WAITALL)
        body = s.recv(struct.unpack("!i", head)[0], socket.MSG_WAITALL)
        assert b"speaks TLS" in body
        assert s.recv(1) == b""
    assert failures(broker, "not_tls") == 1

    # Garbage that starts like a TLS record: rustls refuses it.
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello")
        while s.recv(4096):
            pass
    assert failures(broker, "handshake", count=2) == 1

    # A stock client with a key waits for a challenge a TLS listener never sends in clear: the
    # handshake deadline ends it.
    with pytest.raises((EOFError, ConnectionError)):
        Client((host, int(port)), authkey=KEY)
    assert failures(broker, "timeout", count=3) == 1

    hub.publish("still.here", 1)
    assert sub.next(timeout=10).payload == 1
    hub.close()
    assert broker.proc.poll() is None


def test_a_port_probe_on_the_tls_port_is_counted_as_a_probe_not_a_tls_failure(start_broker, pki):
    broker = tls_broker(start_broker, pki, "--log-level", "debug")
    host, port = tls_addr(broker)[len("tls://") :].rsplit(":", 1)
    socket.create_connection((host, int(port))).close()
    assert broker.wait_for_log("closed before sending a byte"), broker.log()
    values = scrape(broker)
    assert values["mphub_connections_probed_total"] == 1
    assert sum(v for k, v in values.items() if k.startswith("mphub_tls_failures_total")) == 0
    assert values["mphub_handshakes_in_progress"] == 0


def test_a_stock_client_without_a_key_on_a_tls_port_reads_why(start_broker, pki):
    broker = tls_broker(start_broker, pki, key=None)
    host, port = tls_addr(broker)[len("tls://") :].rsplit(":", 1)
    c = Client((host, int(port)))
    c.send(("$ping", 1))
    topic, reason = c.recv()
    assert topic == "$error" and "speaks TLS" in reason and "docs/tls.md" in reason
    with pytest.raises(EOFError):
        c.recv()


# --------------------------------------------------------------------------- SIGHUP


def test_sighup_rereads_the_certificate_for_new_connections_while_open_ones_keep_working(
    start_broker, pki, tmp_path
):
    cert, key = pki.server("first", serial=1000)
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    live_cert.write_bytes(cert.read_bytes())
    live_key.write_bytes(key.read_bytes())
    config = tmp_path / "mphub.toml"
    config.write_text(f'tls_cert = "{live_cert}"\ntls_key = "{live_key}"\n')
    broker = start_broker("--config", str(config), listen=("tls://127.0.0.1:0",))
    addr = tls_addr(broker)
    assert peer_serial(addr, pki.ca) == 1000
    hub = mphub.connect(addr, authkey=KEY, tls=context(pki.ca))
    sub = hub.subscribe("t")

    cert, key = pki.server("second", serial=1001)
    live_cert.write_bytes(cert.read_bytes())
    live_key.write_bytes(key.read_bytes())
    broker.proc.send_signal(signal.SIGHUP)
    assert broker.wait_for_log("configuration reloaded")
    assert peer_serial(addr, pki.ca) == 1001
    hub.publish("t", "after")
    assert sub.next(timeout=10).payload == "after"

    # A key that is not the certificate's: the reload changes nothing.
    live_key.write_bytes(pki.server("third", serial=1002)[1].read_bytes())
    broker.proc.send_signal(signal.SIGHUP)
    assert broker.wait_for_log("configuration reload failed")
    assert "not the key of the certificate" in broker.log()
    assert peer_serial(addr, pki.ca) == 1001
    hub.close()


# --------------------------------------------------------------------------- configuration


def run_broker(*args, env_key=True):
    env = {"PATH": "/usr/bin:/bin"}
    if env_key:
        env["MPHUB_AUTHKEY"] = KEY.decode()
    return subprocess.run([str(mphub_binary()), "--metrics", "off", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=30, env=env)


def test_tls_configuration_errors_stop_the_broker_with_one_line_naming_the_setting(pki, tmp_path):
    cert, key = pki.server()
    other_key = pki.client("someone")[1]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    tls = ["--listen", "tls://127.0.0.1:0"]
    cases = [
        (tls, True, "no certificate"),
        ([*tls, "--tls-cert", cert], True, "tls_cert and tls_key go together"),
        ([*tls, "--tls-cert", tmp_path / "missing.pem", "--tls-key", key], True, "tls_cert: cannot read"),
        ([*tls, "--tls-cert", garbage, "--tls-key", key], True, "does not parse"),
        ([*tls, "--tls-cert", key, "--tls-key", key], True, "no PEM certificate"),
        ([*tls, "--tls-cert", cert, "--tls-key", other_key], True, "not the key of the certificate"),
        (["--tls-cert", cert, "--tls-key", key], True, "no listener is tls://"),
        (["--listen", "tls://0.0.0.0:0", "--tls-cert", cert, "--tls-key", key], False, "protected mode"),
    ]
    for args, with_key, expected in cases:
        r = run_broker(*args, env_key=with_key)
        assert r.returncode != 0, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, r.stderr)


def test_named_users_and_their_permissions_hold_over_tls(start_broker, pki, tmp_path):
    # The HMAC handshake, and so users, run inside TLS unchanged.
    (tmp_path / "alice").write_bytes(b"alice's key")
    (tmp_path / "bob").write_bytes(b"bob's key")
    conf = tmp_path / "mphub.toml"
    conf.write_text(
        f'[[users]]\nname = "alice"\nauthkey_file = "{tmp_path}/alice"\npublish = ["a.>"]\n\n'
        f'[[users]]\nname = "bob"\nauthkey_file = "{tmp_path}/bob"\n'
    )
    broker = tls_broker(start_broker, pki, "--config", str(conf), key=None)
    errors = []
    with mphub.connect(tls_addr(broker), authkey=b"bob's key", tls=context(pki.ca)) as bob, \
            mphub.connect(tls_addr(broker), authkey=b"alice's key", tls=context(pki.ca),
                          on_error=errors.append) as alice:
        sub = bob.subscribe(">")
        bob.flush()
        alice.publish("a.ok", 1)
        alice.publish("b.no", 2)
        alice.flush()  # the refusal came before the pong
        assert [str(e) for e in errors] == ["permission denied: publish to 'b.no'"]
        assert sub.next(timeout=10).topic == "a.ok"
        bob.flush()
        assert sub.pending == 0  # b.no never arrived
    with pytest.raises(mphub.AuthenticationError):
        mphub.connect(tls_addr(broker), authkey=b"nobody's key", tls=context(pki.ca), reconnect=False)
    assert broker.wait_for_log("user=alice")
