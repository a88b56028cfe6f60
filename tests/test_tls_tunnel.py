"""A stock `multiprocessing.connection.Client` cannot speak TLS; a local tunnel on the client's
host can (docs/tls.md): socat or stunnel listens on plain TCP on loopback and speaks TLS to the
broker's tls:// listener, checking the broker's certificate (and showing a client certificate
for mutual TLS). These are the commands docs/tls.md gives, run for real."""

import re
import shutil
import subprocess
import threading
from multiprocessing.connection import Client
from pathlib import Path

import pytest
from certs import Pki
from conftest import KEY, run_py313
from natsserver import free_port
from scenarios import barrier, subscribe

SCENARIOS = Path(__file__).resolve().parent / "python" / "scenarios.py"


class Tunnel:
    """A tunnel process; `port` is its plain loopback port once it is listening."""

    def __init__(self, args, ready, port=None):
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.port = port
        self.lines = []
        listening = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                m = re.search(ready, line)
                if m:
                    if m.groups():
                        self.port = int(m.group(1))
                    listening.set()
            listening.set()

        threading.Thread(target=read, daemon=True).start()
        if not listening.wait(30) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("tunnel did not start:\n" + "\n".join(self.lines))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def tunnels():
    made = []
    yield made
    for t in made:
        t.stop()


def need(tool):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} missing: tests/install-deps.sh installs it")


def broker_port(broker):
    return next(a for a in broker.addrs if a.startswith("tls://")).rsplit(":", 1)[1]


def stock_round_trip(port, interpreter):
    """Two stock clients through the tunnel: one subscribes, one publishes, both see it."""
    if interpreter == "3.13":
        r = run_py313(SCENARIOS, "publish_reaches_subscriber_unchanged", f"127.0.0.1:{port}", KEY.hex())
        assert r.returncode == 0, r.stderr
        return
    sub, pub = Client(("127.0.0.1", port), authkey=KEY), Client(("127.0.0.1", port), authkey=KEY)
    subscribe(sub, "via.tunnel")
    pub.send(("via.tunnel", {"n": 1}))
    barrier(pub)
    assert sub.recv() == ("via.tunnel", {"n": 1})
    sub.close()
    pub.close()


@pytest.mark.parametrize("interpreter", ["3.11", "3.13"])
def test_a_stock_client_reaches_a_tls_listener_through_socat(start_broker, tmp_path, tunnels, interpreter):
    need("socat")
    pki = Pki(tmp_path)
    cert, key = pki.server()
    broker = start_broker("--tls-cert", str(cert), "--tls-key", str(key), listen=("tls://127.0.0.1:0",))
    tunnels.append(Tunnel(
        ["socat", "-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr,fork",
         f"OPENSSL:localhost:{broker_port(broker)},cafile={pki.ca}"],
        r"listening on AF=2 127\.0\.0\.1:(\d+)"))
    stock_round_trip(tunnels[-1].port, interpreter)


def test_a_stock_client_reaches_an_mtls_listener_through_stunnel_with_a_client_certificate(
    start_broker, tmp_path, tunnels
):
    need("stunnel4")
    pki = Pki(tmp_path)
    cert, key = pki.server()
    client_cert, client_key = pki.client("worker")
    broker = start_broker("--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(pki.ca),
                          listen=("tls://127.0.0.1:0",))
    port = free_port()
    conf = tmp_path / "stunnel.conf"
    conf.write_text(f"""foreground = yes
pid =
[mphub]
client = yes
accept = 127.0.0.1:{port}
connect = 127.0.0.1:{broker_port(broker)}
CAfile = {pki.ca}
verifyChain = yes
checkHost = localhost
cert = {client_cert}
key = {client_key}
""")
    tunnels.append(Tunnel(["stunnel4", str(conf)], r"Configuration successful", port=port))
    stock_round_trip(port, "3.11")
    # Without the client certificate the broker refuses the tunnel, and so the stock client.
    conf.write_text(conf.read_text().replace(f"cert = {client_cert}\n", "").replace(f"key = {client_key}\n", ""))
    tunnels[-1].stop()
    tunnels.append(Tunnel(["stunnel4", str(conf)], r"Configuration successful", port=port))
    with pytest.raises((EOFError, ConnectionError)):
        Client(("127.0.0.1", port), authkey=KEY)
    assert broker.wait_for_log("TLS handshake failed")
