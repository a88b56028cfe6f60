"""TLS for the threaded hub: a socket-like object over `ssl.SSLObject` and memory BIOs.

Why not `ssl.SSLSocket`: the hub reads on one thread while others write, and an OpenSSL
connection must not be used by two threads at once; `SSLSocket.recv` refuses the
`MSG_DONTWAIT` flag the hub reads with; and bytes decrypted ahead can wait inside an
`SSLSocket` where `poll()` on its descriptor never sees them. Here ciphertext moves through the
plain socket, every call into the `SSLObject` holds one lock, records leave in the order they
were made, and each `recv` decrypts everything it read, so nothing waits unseen: `poll()` on
`fileno()` stays exact. (The asyncio hub needs none of this: asyncio's own TLS transport is
used there.)
"""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Optional

_READ = 64 * 1024
# The largest TLS record on the wire: 16 KiB of plaintext, 256 bytes of expansion, a 5-byte
# header (RFC 8446 §5.2).
_MAX_RECORD = (1 << 14) + 256 + 5


class TlsSocket:
    """A client TLS connection over a connected blocking `sock`, with the methods the threaded
    hub uses: `recv(size, flags)`, `sendall`, `shutdown`, `close`, `fileno`, `settimeout`.

    `handshake()` must run first. Errors are `OSError`s, as for a socket: `ssl.SSLError` (an
    `OSError`) for TLS failures, `BlockingIOError` from `recv` with `MSG_DONTWAIT` when no whole
    record has arrived.
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: Optional[str]) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._lock = threading.Lock()  # the SSLObject and its BIOs
        self._send_lock = threading.Lock()  # taking records from `_outgoing` and sending them
        self._plain = b""  # decrypted and not returned yet (only after a recv smaller than a record)
        self._eof = False

    def handshake(self) -> None:
        """Run the TLS handshake (blocking, within the socket's timeout)."""
        while not self._handshake_step():
            self._send_pending()
            data = self._sock.recv(_READ)
            if not data:
                raise ssl.SSLEOFError("the broker closed the connection during the TLS handshake")
            self._incoming.write(data)
        self._send_pending()

    def _handshake_step(self) -> bool:
        """One try at the handshake: True when done, False when it needs the broker's bytes."""
        try:
            self._tls.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError:
            # The alert that says why (unknown_ca, ...) waits in the outgoing BIO: send it, so
            # the broker can tell a refused certificate from a lost connection.
            try:
                self._send_pending()
            except OSError:
                pass
            raise

    @property
    def version(self) -> Optional[str]:
        """The TLS version agreed ("TLSv1.3")."""
        return self._tls.version()

    def getpeercert(self) -> object:
        """The broker's certificate, as `ssl.SSLSocket.getpeercert()` gives it."""
        return self._tls.getpeercert()

    # ------------------------------------------------------------------ reading

    def recv(self, size: int, flags: int = 0) -> bytes:
        """Up to `size` decrypted bytes; b"" at the end of the stream."""
        if self._plain:
            out, self._plain = self._plain[:size], self._plain[size:]
            return out
        while not self._eof:
            # Never read more ciphertext than `size` less one whole record (OpenSSL may hold a
            # partial one, taken out of the BIO) and what the BIO holds: what it decrypts to
            # then fits in `size`, and nothing is left over for poll() to miss. (The hub reads
            # 64 KiB at a time; only the handshake's small reads can leave some in `_plain`,
            # and it reads that before anything else.)
            room = max(size - _MAX_RECORD - self._incoming.pending, 1)
            data = self._sock.recv(room, flags)
            if not data:
                self._eof = True
                break
            out = self._decrypt(data)
            if out:
                if len(out) > size:
                    out, self._plain = out[:size], out[size:]
                return out
            if flags:
                raise BlockingIOError("no whole TLS record yet")
        return b""

    def _decrypt(self, data: bytes) -> bytes:
        parts = []
        with self._lock:
            self._incoming.write(data)
            try:
                while True:
                    chunk = self._tls.read(_READ)
                    if not chunk:
                        self._eof = True
                        break
                    parts.append(chunk)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:  # the broker's close_notify
                self._eof = True
            answer = self._outgoing.pending  # e.g. a KeyUpdate to acknowledge
        if answer:
            self._send_pending()
        return b"".join(parts)

    # ------------------------------------------------------------------ writing

    def sendall(self, data: bytes) -> None:
        """Encrypt and send all of `data`."""
        with self._send_lock:
            with self._lock:
                view = memoryview(data)
                while view:
                    view = view[self._tls.write(view) :]
                records = self._outgoing.read()
            self._sock.sendall(records)

    def _send_pending(self) -> None:
        with self._send_lock:
            with self._lock:
                records = self._outgoing.read()
            if records:
                self._sock.sendall(records)

    # ------------------------------------------------------------------ the socket

    def shutdown(self, how: int) -> None:
        """`SHUT_WR` first says close_notify, so the broker sees a clean end; `SHUT_RDWR` (a
        connection already lost) only shuts the socket, waking a send blocked on it."""
        if how == socket.SHUT_WR:
            try:
                with self._send_lock:
                    with self._lock:
                        try:
                            self._tls.unwrap()
                        except ssl.SSLWantReadError:
                            pass  # close_notify is written; the broker's own is not awaited
                        records = self._outgoing.read()
                    self._sock.sendall(records)
            except (OSError, ValueError):
                pass
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def settimeout(self, timeout: Optional[float]) -> None:
        self._sock.settimeout(timeout)
