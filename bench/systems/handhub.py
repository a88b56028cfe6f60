"""The hub a user writes from the Python docs: a multiprocessing Listener, a thread per
connection, each publish's bytes (recv_bytes) forwarded to every subscriber (send_bytes).
Subscribers say ("$sub", topic) first; exact topics only. It forgets a subscriber whose send
fails, and its Listener has a backlog of 128 (the default of 1 stalls 16 connecting at once)."""

import pickle
import subprocess
import sys
import threading
from multiprocessing.connection import Listener

from . import Server, free_port, wait_port

NAME, LABEL = "handhub", "hand-written Listener hub"
KEY = b"bench-key"


def serve(port):
    subs = {}  # topic -> list of (conn, lock)
    guard = threading.Lock()

    def handle(conn):
        lock = threading.Lock()
        try:
            while True:
                raw = conn.recv_bytes()
                topic, payload = pickle.loads(raw)
                if topic == "$sub":
                    with guard:
                        subs.setdefault(payload, []).append((conn, lock))
                    with lock:
                        conn.send(("$ok", payload))
                    continue
                if topic == "$ping":
                    with lock:
                        conn.send(("$pong", payload))
                    continue
                with guard:
                    targets = list(subs.get(topic, ()))
                for c, l in targets:
                    try:
                        with l:
                            c.send_bytes(raw)
                    except OSError:  # that subscriber is gone: forget it
                        with guard:
                            if (c, l) in subs.get(topic, []):
                                subs[topic].remove((c, l))
        except (EOFError, OSError):
            pass

    with Listener(("127.0.0.1", port), backlog=128, authkey=KEY) as listener:
        while True:
            try:
                conn = listener.accept()
            except (EOFError, OSError, Exception):  # a probe or a failed handshake
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()


def start(_port=None):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "systems.handhub", str(port)],
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    wait_port(port)
    return Server([p], f"127.0.0.1:{port}")


# Clients are the stock Client on the same wire, exactly as for mphub.
from .mphub_stock import publisher, subscribe  # noqa: E402, F401


if __name__ == "__main__":
    serve(int(sys.argv[1]))
