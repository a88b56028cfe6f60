"""Bad input closes at most the connection that sent it; everyone else carries on."""

import os
import struct
from multiprocessing.connection import Client

from conftest import KEY, ROOT, run_py313
from scenarios import barrier, subscribe


def bystander(broker):
    sub = Client(broker.address, authkey=KEY)
    subscribe(sub, "calm")
    return sub


def still_fine(broker, sub):
    pub = Client(broker.address, authkey=KEY)
    pub.send(("calm", "still here"))
    barrier(pub)
    assert sub.recv() == ("calm", "still here")


def test_a_frame_claiming_one_tebibyte_gets_an_error_and_a_close(broker):
    sub = bystander(broker)
    c = Client(broker.address, authkey=KEY)
    c._send(struct.pack("!i", -1) + struct.pack("!Q", 1 << 40))
    reply = c.recv()
    assert reply[0] == "$error" and "exceeds the limit" in reply[1], reply
    try:
        c.recv()
        raise AssertionError("connection stayed open")
    except EOFError:
        pass
    still_fine(broker, sub)


def test_garbage_bodies_get_errors_and_the_connection_stays(broker):
    sub = bystander(broker)
    c = Client(broker.address, authkey=KEY)
    rnd = os.urandom(64 * 200)
    for i in range(200):
        c.send_bytes(rnd[i * 64:(i + 1) * 64])
        reply = c.recv()
        assert reply[0] == "$error", reply
    assert barrier(c) == []
    still_fine(broker, sub)


def test_random_bytes_instead_of_frames_close_only_that_connection(broker):
    sub = bystander(broker)
    c = Client(broker.address, authkey=KEY)
    c._send(b"\xfe\xff\xff\xff" + os.urandom(1000))
    reply = c.recv()
    assert reply[0] == "$error" and "not a frame" in reply[1], reply
    try:
        c.recv()
        raise AssertionError("connection stayed open")
    except (EOFError, ConnectionResetError):
        pass
    still_fine(broker, sub)


def test_a_peer_vanishing_mid_frame_harms_no_one(broker):
    sub = bystander(broker)
    c = Client(broker.address, authkey=KEY)
    c._send(struct.pack("!i", 1000) + b"partial")
    c.close()
    still_fine(broker, sub)


def test_a_frame_over_the_limit_is_refused_before_it_is_read(start_broker):
    b = start_broker("--max-frame", "1KiB")
    c = Client(b.address, authkey=KEY)
    c.send(("t", b"x" * 500))
    assert barrier(c) == []
    c.send(("t", b"x" * 2000))
    reply = c.recv()
    assert reply[0] == "$error" and "1024" in reply[1], reply


def test_a_stock_client_sending_8_mb_against_a_1_kib_limit_reads_why_it_was_refused(
    start_broker, interpreter
):
    b = start_broker("--max-frame", "1KiB")
    sub = bystander(b)
    size = 8_000_000
    if interpreter is None:
        from oversized import send_oversized

        reply = send_oversized(b.address, KEY, size)
        assert reply[0] == "$error" and "exceeds the limit" in reply[1] and "1024" in reply[1], reply
    else:
        r = run_py313(ROOT / "tests/python/oversized.py", b.addrs[0], KEY.hex(), size)
        assert r.returncode == 0, r.stderr + "\n" + b.log()
        assert "ok oversized 3.13" in r.stdout
    still_fine(b, sub)
