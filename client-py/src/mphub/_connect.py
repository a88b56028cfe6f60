"""Blocking socket setup for the threaded client: connect, then the handshake."""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Optional

from ._address import Address
from ._wire import CHALLENGE, HANDSHAKE_FRAME_LIMIT, ClientHandshake, frame
from .errors import AuthenticationError, ConnectionClosed, TimeoutError


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise AuthenticationError("the broker closed the connection during the handshake")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _recv_small_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack("!i", _recv_exact(sock, 4))
    if not 0 <= size <= HANDSHAKE_FRAME_LIMIT:
        raise AuthenticationError(f"handshake frame of {size} bytes: is this an mphub broker?")
    return _recv_exact(sock, size)


def _probe(sock: socket.socket) -> None:
    """Without an authkey: a `$ping` round trip proves the broker wants none."""
    sock.sendall(frame(pickle.dumps(("$ping", 0), 2)))
    reply = _recv_small_frame(sock)
    if reply.startswith(CHALLENGE):
        raise AuthenticationError("the broker asks for an authkey; none was given")
    try:
        pong = pickle.loads(reply)
    except Exception:
        pong = None
    if pong != ("$pong", 0):
        raise AuthenticationError("unexpected answer to $ping: is this an mphub broker?")


def open_socket(address: Address, authkey: Optional[bytes], timeout: float) -> socket.socket:
    """A connected, authenticated, blocking socket; raises a typed mphub error otherwise."""
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(address.target)
        except socket.timeout as e:
            raise TimeoutError(f"connecting to {address}: no answer within {timeout}s") from e
        except OSError as e:
            raise ConnectionClosed(f"cannot connect to {address}: {e.strerror or e}") from e
        if address.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handshake = ClientHandshake(authkey or b"")
        try:
            while authkey is not None and not handshake.done:
                for body in handshake.step(_recv_small_frame(sock)):
                    sock.sendall(frame(body))
            if authkey is None:
                _probe(sock)
        except socket.timeout as e:
            raise TimeoutError(f"handshake with {address}: no answer within {timeout}s") from e
        except OSError as e:
            raise AuthenticationError(f"handshake with {address} failed: {e}") from e
        sock.settimeout(None)
        return sock
    except BaseException:
        sock.close()
        raise
