"""Authentication: right key, wrong key, no key, and a broker without a key."""

import socket
import struct
from multiprocessing.connection import AuthenticationError, Client

import pytest
from conftest import KEY
from scenarios import barrier, subscribe


def test_right_key_connects_and_wrong_key_is_refused(broker):
    c = Client(broker.address, authkey=KEY)
    assert barrier(c) == []
    with pytest.raises(AuthenticationError):
        Client(broker.address, authkey=b"not the key")
    assert broker.wait_for_log("wrong authkey")


def test_a_client_without_authkey_is_refused_and_never_routed(broker):
    sub = Client(broker.address, authkey=KEY)
    subscribe(sub, "guarded")
    intruder = Client(broker.address)  # authkey=None: no handshake at all
    intruder.send(("guarded", "evil"))
    # The broker answers the pickle with #FAILURE# and closes.
    with pytest.raises((EOFError, OSError, Exception)):
        intruder.recv()
    pub = Client(broker.address, authkey=KEY)
    pub.send(("guarded", "good"))
    barrier(pub)
    assert sub.recv() == ("guarded", "good")
    assert barrier(sub) == []


def test_a_silent_peer_is_dropped_at_the_handshake_deadline(start_broker):
    b = start_broker("--handshake-timeout", "0.5")
    s = socket.create_connection(b.address)
    # The broker's challenge arrives, then (no answer from us) the connection closes.
    head = s.recv(4)
    (n,) = struct.unpack("!i", head)
    challenge = b""
    while len(challenge) < n:
        challenge += s.recv(n - len(challenge))
    assert challenge.startswith(b"#CHALLENGE#{sha256}")
    s.settimeout(30)
    assert s.recv(100) == b""
    c = Client(b.address, authkey=KEY)
    assert barrier(c) == []


def test_without_authkey_loopback_works_with_plain_client(start_broker):
    b = start_broker(key=None)
    c = Client(b.address)
    subscribe(c, "open.t")
    c.send(("open.t", 1))
    assert barrier(c) == [("open.t", 1)]
