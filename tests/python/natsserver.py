"""Debian's nats-server on loopback for the cluster tests: one server or a routed cluster."""

import os
import shutil
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nats_server_binary():
    return shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)


class NatsServer:
    """One nats-server process; `restart()` brings it back on the same ports."""

    def __init__(self, name, port=None, cluster_port=None, routes=(), extra=()):
        self.name = name
        self.port = port or free_port()
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.extra = list(extra)
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name, *self.extra]
        if self.cluster_port:
            args += ["--cluster_name", "mphub-test", "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_accepting()

    def wait_accepting(self, timeout=20):
        """Returns once the client port takes connections (the server is up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server {self.name} did not start")
                time.sleep(0.02)  # polling a port: this is a readiness probe, not synchronisation

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        self.stop()
        self.start()


def routed_cluster(n=3):
    """`n` nats-servers, each routed to every other."""
    ports = [free_port() for _ in range(n)]
    routes = [f"nats://127.0.0.1:{p}" for p in ports]
    return [
        NatsServer(f"n{i}", cluster_port=ports[i], routes=[r for j, r in enumerate(routes) if j != i])
        for i in range(n)
    ]
