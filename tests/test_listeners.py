"""Listeners meet the rest of the machine: connect bursts, a second broker on the same address,
and the open-files limit. A second broker must never disturb a live one."""

import os
import resource
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Client
from pathlib import Path

import pytest
from conftest import KEY, ROOT, mphub_binary, wait_until
from scenarios import barrier, subscribe

HELPERS = ROOT / "tests" / "python"


def mphub_env(key=KEY):
    env = {k: v for k, v in os.environ.items() if k != "MPHUB_AUTHKEY"}
    if key is not None:
        env["MPHUB_AUTHKEY"] = key.decode()
    return env


def run_mphub(*args):
    """Runs mphub expecting it to exit on its own (a refused start)."""
    return subprocess.run([str(mphub_binary()), *args], capture_output=True, text=True,
                          env=mphub_env(), timeout=30, check=False)


def somaxconn():
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


def accept_queue(port):
    """Connections waiting in the accept queue of the IPv4 listener on `port` (/proc/net/tcp
    shows a listening socket's accept backlog as its receive queue)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no listener on port {port}")


def test_a_burst_of_stock_clients_connecting_at_once_all_get_through_the_handshake(start_broker):
    # The worst case of a busy broker: stopped while the burst arrives, so every connect waits
    # in the kernel's accept queue. A client whose connection did not fit was dropped there
    # after it counted itself connected, and waits forever for the challenge; so the burst
    # runs in its own process, which reports and exits. (A long handshake deadline: the clients
    # all answer their challenges from one Python process.)
    broker = start_broker("--handshake-timeout", "120")
    n = min(2000, somaxconn())
    host, port = broker.address
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        p = subprocess.Popen(
            [sys.executable, str(HELPERS / "connect_burst.py"), host, str(port), KEY.decode(), str(n), "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # Until every connect waits in the queue; past its size they never will.
        wait_until(lambda: accept_queue(port) >= n, 30)
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    out, err = p.communicate(timeout=180)
    assert out.split()[:2] == [str(n), str(n)], f"connected, of {n}: {out} {err[-2000:]}"


def test_a_burst_past_a_small_connection_limit_is_answered_never_left_hanging(start_broker):
    # With --max-connections 8 the accept queue still holds the whole burst (the backlog is
    # never below 1024), so the broker takes every connect and refuses those past its limit.
    broker = start_broker("--max-connections", "8", "--handshake-timeout", "120")
    host, port = broker.address
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        p = subprocess.Popen(
            [sys.executable, str(HELPERS / "connect_burst.py"), host, str(port), KEY.decode(), "200", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        wait_until(lambda: accept_queue(port) >= 200, 30)
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    out, err = p.communicate(timeout=180)
    connected, n, _, refused = out.split()
    assert (int(connected), int(refused)) == (8, 192), f"{out} {err[-2000:]}"


def test_the_log_says_when_somaxconn_caps_the_listen_backlog(start_broker):
    cap = somaxconn()
    b = start_broker("--max-connections", str(cap + 1))
    assert b.wait_for_log("net.core.somaxconn"), b.log()
    assert f"backlog={cap}" in b.log()
    quiet = start_broker("--max-connections", str(cap))
    client = Client(quiet.address, authkey=KEY)
    barrier(client)
    assert "somaxconn" not in quiet.log()


def test_a_second_broker_on_a_live_unix_socket_refuses_to_start_and_leaves_the_first_serving(
        start_broker, tmp_path):
    path = tmp_path / "hub.sock"
    first = start_broker(listen=(f"unix:{path}",))
    sub = Client(str(path), authkey=KEY)
    subscribe(sub, "still.here")
    inode = path.stat().st_ino

    r = run_mphub("--listen", f"unix:{path}", "--metrics", "off")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "address in use" in lines[0] and str(path) in lines[0], r.stderr

    # The file is the first broker's own, and new clients still reach its subscribers.
    assert path.stat().st_ino == inode
    pub = Client(str(path), authkey=KEY)
    pub.send(("still.here", 1))
    barrier(pub)
    assert sub.recv() == ("still.here", 1)
    assert first.proc.poll() is None


def test_a_stale_unix_socket_file_is_replaced(start_broker, tmp_path):
    path = tmp_path / "hub.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening, then closed: nothing answers on it
    stale.close()
    b = start_broker(listen=(f"unix:{path}",))
    barrier(Client(str(path), authkey=KEY))
    assert b.stop() == 0
    assert not path.exists()


def test_a_file_that_is_not_a_socket_is_never_removed(tmp_path):
    path = tmp_path / "hub.sock"
    path.write_text("precious")
    r = run_mphub("--listen", f"unix:{path}", "--metrics", "off")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert path.read_text() == "precious"


def test_at_exit_a_broker_removes_only_a_socket_file_that_is_still_its_own(start_broker, tmp_path):
    path = tmp_path / "hub.sock"
    first = start_broker(listen=(f"unix:{path}",))
    # Someone removes the file by hand and a second broker binds the path.
    path.unlink()
    second = start_broker(listen=(f"unix:{path}",))
    inode = path.stat().st_ino
    assert first.stop() == 0
    assert path.stat().st_ino == inode, "the first broker removed the second one's socket"
    barrier(Client(str(path), authkey=KEY))
    assert second.stop() == 0
    assert not path.exists()


def test_a_second_broker_on_a_live_abstract_socket_refuses_to_start(start_broker):
    name = f"mphub-test-twice-{os.getpid()}"
    first = start_broker(listen=(f"unix:@{name}",))
    r = run_mphub("--listen", f"unix:@{name}", "--metrics", "off")
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "in use" in r.stderr, r.stderr
    barrier(Client("\0" + name, authkey=KEY))
    assert first.proc.poll() is None


def test_a_second_broker_on_a_live_tcp_port_refuses_to_start(broker):
    host, port = broker.address
    r = run_mphub("--listen", f"{host}:{port}", "--metrics", "off")
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "in use" in r.stderr, r.stderr
    barrier(Client(broker.address, authkey=KEY))


def _open_files(pid):
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


def _start_with_soft_limit(soft, *args):
    """Starts mphub with the open-files soft limit lowered to `soft`; returns it once listening."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The child inherits this process's limits (a preexec_fn is unsafe with threads running).
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        p = subprocess.Popen([str(mphub_binary()), "--listen", "127.0.0.1:0", "--metrics", "off", *args],
                             stderr=subprocess.PIPE, text=True, env=mphub_env())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)
    lines = []
    for line in p.stderr:
        lines.append(line)
        if "mphub listening on" in line:
            break
    return p, lines


def test_the_soft_open_files_limit_is_raised_to_the_hard_one_at_start():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"the hard open-files limit ({hard}) leaves nothing to raise")
    p, lines = _start_with_soft_limit(1024, "--max-connections", "100")
    try:
        assert _open_files(p.pid) == (hard, hard), "".join(lines)
        assert not any("open-files limit is below" in line for line in lines), "".join(lines)
    finally:
        p.kill()
        p.wait()


def test_a_warning_says_when_the_open_files_limit_is_below_what_max_connections_needs():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard open-files limit")
    p, lines = _start_with_soft_limit(min(1024, hard), "--max-connections", str(hard + 1000))
    try:
        warning = [line for line in lines if "open-files limit is below" in line]
        assert len(warning) == 1, "".join(lines)
        assert f"open_files={hard}" in warning[0] and f"max_connections={hard + 1000}" in warning[0]
    finally:
        p.kill()
        p.wait()
