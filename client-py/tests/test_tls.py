"""The threaded hub's TLS socket against a TLS server made of `ssl.SSLObject`, over a socket pair:
whatever way records are cut, every byte decrypted is handed out while poll() can still see
that there is more to read."""

import select
import socket
import ssl
import subprocess
import threading

import pytest

from mphub._tls import TlsSocket


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    """A server context with a self-signed certificate for localhost, and a client trusting it."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(d / "cert.pem", d / "key.pem")
    return server, ssl.create_default_context(cafile=str(d / "cert.pem"))


def connected(contexts):
    """A client TlsSocket after its handshake, and the server's SSLObject and raw socket."""
    server_ctx, client_ctx = contexts
    a, b = socket.socketpair()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(incoming, outgoing, server_side=True)
    client = TlsSocket(a, client_ctx, "localhost")
    b.setblocking(False)
    a.settimeout(5)

    def pump():
        try:
            incoming.write(b.recv(1 << 20))
        except BlockingIOError:
            pass
        try:
            server.do_handshake()
        except ssl.SSLWantReadError:
            pass
        b.sendall(outgoing.read())

    done = threading.Event()

    def serve():
        while not done.is_set():
            select.select([b], [], [], 0.05)
            pump()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client.handshake()
    done.set()
    t.join()
    pump()  # the client's last flight
    b.setblocking(True)
    return client, server, outgoing, b


def readable(sock):
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(0))


def test_data_decrypted_is_never_left_where_poll_cannot_see_it(contexts):
    client, server, outgoing, raw = connected(contexts)
    records = [bytes([i]) * 16000 for i in range(6)]
    for r in records:
        server.write(r)  # one record each: 16,022 bytes on the wire
    wire = outgoing.read()
    raw.sendall(wire[:15000])  # most of the first record: OpenSSL keeps it, out of the BIO
    with pytest.raises(BlockingIOError):
        client.recv(64 * 1024, socket.MSG_DONTWAIT)
    # 64 KiB more completes five records, 80,000 bytes of plaintext: more than one read may
    # return. Whatever is not returned must still show as readable to poll().
    raw.sendall(wire[15000 : 15000 + 64 * 1024])
    got = b""
    while readable(client):
        try:
            chunk = client.recv(64 * 1024, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        assert 0 < len(chunk) <= 64 * 1024
        got += chunk
    assert got == b"".join(records[:5])


def test_small_reads_take_what_one_record_holds_in_order(contexts):
    client, server, outgoing, raw = connected(contexts)
    server.write(b"\x00\x00\x00\x05hello")
    raw.sendall(outgoing.read())
    assert client.recv(4) == b"\x00\x00\x00\x05"
    assert client.recv(5) == b"hello"
