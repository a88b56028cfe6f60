"""Fixtures: the real mphub binary on port 0, and the CPython interpreters to test with."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "client-py" / "src"))  # the client-py package under test

KEY = b"mphub-test-key"


def wait_until(condition, timeout=60, step=0.02):
    """True once `condition()` holds, False after `timeout` seconds.

    For what no `$ping` barrier reaches: the kernel's accept queue, a process's RSS, another
    server's state. It checks every `step` seconds; the pause paces the checks and synchronises
    nothing.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def mphub_binary():
    path = Path(os.environ.get("MPHUB_BIN", ROOT / "target" / "release" / "mphub"))
    if not path.exists():
        pytest.exit(f"{path} not built: run `cargo build --release -p mphub-broker` (make test does)")
    return path


class Broker:
    """A running mphub process; its log lines are collected as they come."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen(
            [str(mphub_binary()), *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            env=env, text=True,
        )
        self.lines = []
        self.addrs = []
        self.metrics_url = None
        flag = args.index("--metrics") if "--metrics" in args else None
        self._want_metrics = flag is None or args[flag + 1] != "off"
        self._expected = max(1, sum(1 for a in args if a == "--listen"))
        self._listening = threading.Event()
        self._new_line = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(30):
            self.stop()
            raise RuntimeError("mphub did not start:\n" + "\n".join(self.lines))

    def _read(self):
        for line in self.proc.stderr:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
            u = re.search(r"mphub metrics on (http://\S+)", line)
            if u:
                self.metrics_url = u.group(1)
            m = re.search(r"mphub listening on (\S+)", line)
            if m:
                self.addrs.append(m.group(1))
            if len(self.addrs) >= self._expected and (self.metrics_url or not self._want_metrics):
                self._listening.set()
        self._listening.set()

    @property
    def address(self):
        """The first listener as a Client address."""
        from scenarios import parse_addr
        return parse_addr(self.addrs[0])

    def log(self):
        return "\n".join(self.lines)

    def wait_for_log(self, text, timeout=30, count=1):
        """True once `count` log lines contain `text` (lines arrive through a pipe, a little late)."""
        with self._new_line:
            return self._new_line.wait_for(lambda: sum(text in l for l in self.lines) >= count, timeout)

    def rss_kib(self):
        """Resident memory now."""
        return self._status_kib("VmRSS:")

    def peak_rss_kib(self):
        """The most resident memory since start (the kernel's high-water mark)."""
        return self._status_kib("VmHWM:")

    def _status_kib(self, field):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for pid {self.proc.pid}")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


@pytest.fixture
def start_broker():
    """Starts brokers with extra flags; stops every one at the end of the test."""
    started = []

    def start(*args, key=KEY, listen=("127.0.0.1:0",), metrics="off"):
        env = {k: v for k, v in os.environ.items() if k != "MPHUB_AUTHKEY"}
        if key is not None:
            env["MPHUB_AUTHKEY"] = key.decode()
        flags = []
        for addr in listen:
            flags += ["--listen", addr]
        flags += ["--metrics", metrics, *args]
        b = Broker(flags, env)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop(signal.SIGKILL)


@pytest.fixture
def broker(start_broker):
    """One broker with the test authkey on a free loopback port."""
    return start_broker()


def python313():
    """CPython 3.13 from Debian trixie (tests/python/fetch-cpython313.sh), or None."""
    path = ROOT / ".cache" / "cpython313" / "python3.13"
    return path if path.exists() else None


@pytest.fixture(params=["3.11", "3.13"])
def interpreter(request):
    """Each stock CPython we test against; 3.11 runs in-process, 3.13 as a subprocess."""
    if request.param == "3.13":
        p = python313()
        if p is None:
            pytest.fail("CPython 3.13 missing: run tests/python/fetch-cpython313.sh (make test does)")
        return p
    return None


def run_py313(*args, timeout=120):
    p = python313()
    assert p is not None, "CPython 3.13 missing: run tests/python/fetch-cpython313.sh"
    return subprocess.run([str(p), *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def hubs(broker):
    """`hubs()` connects a client-py Hub to the test broker; every one is closed at the end."""
    import mphub

    made = []

    def make(**options):
        options.setdefault("authkey", KEY)
        h = mphub.connect(broker.addrs[0], **options)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def nats():
    """`nats(n)` starts one nats-server (n=1) or n routed into a cluster; all stop at the end."""
    from natsserver import NatsServer, nats_server_binary, routed_cluster

    if nats_server_binary() is None:
        pytest.fail("nats-server missing: apt-get install nats-server (.ci/run does)")
    started = []

    def start(n=1):
        servers = [NatsServer("n0")] if n == 1 else routed_cluster(n)
        started.extend(servers)
        return servers

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def node(start_broker):
    """`node(url)` starts an mphub node joined to NATS at `url`, metrics on."""

    def start(url, *args, **kw):
        kw.setdefault("metrics", "127.0.0.1:0")
        return start_broker("--cluster", url, *args, **kw)

    return start
