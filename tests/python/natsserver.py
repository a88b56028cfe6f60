"""Debian's nats-server on loopback for the cluster tests: one server or a routed cluster."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nats_server_binary():
    return shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)


class NatsServer:
    """One nats-server process; `restart()` brings it back on the same ports."""

    def __init__(self, name, port=None, cluster_port=None, routes=(), extra=(), conf=None):
        """`conf`: text of a configuration file (nats-server -c) for settings without a flag."""
        self.name = name
        self.port = port or free_port()
        self.monitor_port = free_port()  # nats-server's HTTP monitoring (-m), for `interest`
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.extra = list(extra)
        if conf is not None:
            fd, path = tempfile.mkstemp(prefix="nats-", suffix=".conf")
            with os.fdopen(fd, "w") as f:
                f.write(conf)
            self.extra += ["-c", path]
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout=20):
        """Starts the server and returns once it logs that it is ready."""
        args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port),
                "-n", self.name, *self.extra]
        if self.cluster_port:
            args += ["--cluster_name", "mphub-test", "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def read(stream):
            for line in stream:  # keep draining, so the server never blocks on its log
                if "Server is ready" in line:
                    ready.set()
            ready.set()  # exited

        threading.Thread(target=read, args=(self.proc.stderr,), daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"nats-server {self.name} did not start")

    def interest(self, subject):
        """The subscriptions of this server's clients that a message published on `subject` to it
        now reaches, read by nats-server's monitoring (`/subsz?test=`) from the very subscription
        list it routes with: `[{"subject": ..., "qgroup": ..., "cid": ...}, ...]`."""
        url = f"http://127.0.0.1:{self.monitor_port}/subsz?subs=1&test={subject}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r).get("subscriptions_list", [])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server could not act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        self.stop()
        self.start()

    def freeze(self):
        """SIGSTOP: the server keeps its connections but reads and writes nothing (a stalled VM)."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)


def routed_cluster(n=3):
    """`n` nats-servers, each routed to every other."""
    ports = [free_port() for _ in range(n)]
    routes = [f"nats://127.0.0.1:{p}" for p in ports]
    return [
        NatsServer(f"n{i}", cluster_port=ports[i], routes=[r for j, r in enumerate(routes) if j != i])
        for i in range(n)
    ]
