"""Opening a connection: connect, then `_wire.ClientHandshake`, for either flavour of hub.

`open_socket` gives the threaded hub a blocking socket, `open_streams` the asyncio hub a
reader/writer pair. Both run the same handshake state machine and raise the same typed errors;
only the reading and writing differ. For a TLS address (`Address.tls`) the TLS handshake comes
first: `_tls.TlsSocket` in the threaded hub, asyncio's own TLS transport in the other. A broker
certificate that does not verify, or a TLS alert from the broker (say, a client certificate it
requires), is an `AuthenticationError`; a connection lost on the way is `ConnectionClosed`.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import TYPE_CHECKING, Awaitable, Callable, Optional, Tuple, Union

from ._address import Address
from ._wire import HANDSHAKE_FRAME_LIMIT, ClientHandshake, frame
from .errors import AuthenticationError, ConnectionClosed, HandshakeTimeout, TimeoutError

if TYPE_CHECKING:  # the threaded client does not pay for importing asyncio (nor ssl without TLS)
    import asyncio

    from ._tls import TlsSocket

# 64 KiB reads measured 1.8x faster than 256 KiB: a chunk's messages stay in cache.
READ_SIZE = 64 * 1024
_I32 = struct.Struct("!i")


def authkey_from_env(authkey: Optional[bytes]) -> Optional[bytes]:
    """The given authkey, else `$MPHUB_AUTHKEY`, else None (a broker without a key)."""
    if authkey is not None:
        if not isinstance(authkey, bytes):
            raise TypeError("authkey must be bytes")
        return authkey
    env = os.environ.get("MPHUB_AUTHKEY")
    if env:
        return env.encode()
    return None


def _handshake_timeout(address: Address, timeout: float, hs: ClientHandshake) -> TimeoutError:
    """The error for a handshake that got no answer in time, saying what most likely happened."""
    if hs.awaiting_challenge:
        return HandshakeTimeout(
            f"handshake with {address}: no challenge within {timeout}s. The broker most likely "
            "runs without an authkey while this client has one: connect without a key (no "
            "authkey= and no MPHUB_AUTHKEY), or start the broker with the same key "
            "(--authkey-file or MPHUB_AUTHKEY). Else it is stopped or overloaded"
        )
    return TimeoutError(f"handshake with {address}: no answer within {timeout}s")


def _small_frame_size(head: bytes) -> int:
    (size,) = _I32.unpack(head)
    if not 0 <= size <= HANDSHAKE_FRAME_LIMIT:
        raise AuthenticationError(f"handshake frame of {size} bytes: is this an mphub broker?")
    return int(size)


def _recv_exact(sock: Union[socket.socket, TlsSocket], n: int) -> bytes:
    parts = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise AuthenticationError("the broker closed the connection during the handshake")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _tls_failed(address: Address, e: OSError) -> Exception:
    """The typed error for a failed TLS handshake: refusals are final, a lost connection not."""
    import ssl

    if isinstance(e, ssl.SSLCertVerificationError):
        return AuthenticationError(
            f"TLS with {address}: the broker's certificate is not trusted: {e.verify_message}"
            " (a private CA: tls=ssl.create_default_context(cafile=CA), or --tls-ca CA on the"
            " command line)"
        )
    if isinstance(e, ssl.SSLError) and not isinstance(e, ssl.SSLEOFError):
        return AuthenticationError(f"TLS handshake with {address} failed: {e}{_refused_hint(e)}")
    return ConnectionClosed(f"TLS handshake with {address}: connection lost: {e}")


def _refused_hint(e: BaseException) -> str:
    """What to do when the broker ended TLS with an alert: it refused this client's certificate
    (or its absence), the one refusal a broker with `tls_client_ca` makes. With TLS 1.3 the
    alert arrives at the first read after the TLS handshake, so it shows here too."""
    import ssl

    if isinstance(e, ssl.SSLError) and "ALERT" in str(e.reason or ""):
        return (
            "; a broker with tls_client_ca wants a client certificate its CA signed:"
            " ctx.load_cert_chain(CERT, KEY), or --tls-cert CERT --tls-key KEY on the command line"
        )
    return ""


def open_socket(address: Address, authkey: Optional[bytes], timeout: float) -> socket.socket:
    """A connected, authenticated, blocking socket (a `TlsSocket` for a TLS address, which has
    the methods the hub uses); raises a typed mphub error otherwise."""
    raw = socket.socket(address.family, socket.SOCK_STREAM)
    sock: Union[socket.socket, TlsSocket] = raw
    try:
        raw.settimeout(timeout)
        try:
            raw.connect(address.target)
        except socket.timeout as e:
            raise TimeoutError(f"connecting to {address}: no answer within {timeout}s") from e
        except OSError as e:
            raise ConnectionClosed(f"cannot connect to {address}: {e.strerror or e}") from e
        if address.family != socket.AF_UNIX:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if address.tls is not None:
            from ._tls import TlsSocket

            sock = TlsSocket(raw, address.tls, address.server_hostname)
            try:
                sock.handshake()
            except socket.timeout as e:
                raise TimeoutError(f"TLS handshake with {address}: no answer within {timeout}s") from e
            except OSError as e:
                raise _tls_failed(address, e) from e
        hs = ClientHandshake(authkey)
        try:
            for body in hs.start():
                sock.sendall(frame(body))
            while not hs.done:
                for body in hs.step(_recv_exact(sock, _small_frame_size(_recv_exact(sock, 4)))):
                    sock.sendall(frame(body))
        except socket.timeout as e:
            raise _handshake_timeout(address, timeout, hs) from e
        except OSError as e:
            raise AuthenticationError(f"handshake with {address} failed: {e}{_refused_hint(e)}") from e
        sock.settimeout(None)
        return sock  # type: ignore[return-value]  # a TlsSocket quacks like the socket it wraps
    except BaseException:
        raw.close()
        raise


async def open_streams(
    address: Address, authkey: Optional[bytes], timeout: float
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """`open_socket` for asyncio: a connected, authenticated (reader, writer) pair."""
    import asyncio

    conn: Awaitable[Tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    if isinstance(address.target, str):
        conn = asyncio.open_unix_connection(address.target, limit=READ_SIZE)
    elif address.tls is not None:
        host, port = address.target
        conn = asyncio.open_connection(
            host, port, limit=READ_SIZE, ssl=address.tls, server_hostname=address.server_hostname
        )
    else:
        conn = asyncio.open_connection(*address.target, limit=READ_SIZE)
    try:
        reader, writer = await asyncio.wait_for(conn, timeout)
    except asyncio.TimeoutError as e:
        raise TimeoutError(f"connecting to {address}: no answer within {timeout}s") from e
    except OSError as e:
        if address.tls is not None and not isinstance(e, ConnectionRefusedError):
            raise _tls_failed(address, e) from e
        raise ConnectionClosed(f"cannot connect to {address}: {e.strerror or e}") from e
    recv: Callable[[int], Awaitable[bytes]] = reader.readexactly

    hs = ClientHandshake(authkey)

    async def handshake() -> None:
        for body in hs.start():
            writer.write(frame(body))
        while not hs.done:
            for body in hs.step(await recv(_small_frame_size(await recv(4)))):
                writer.write(frame(body))

    try:
        await asyncio.wait_for(handshake(), timeout)
    except asyncio.TimeoutError as e:
        writer.close()
        raise _handshake_timeout(address, timeout, hs) from e
    except (OSError, asyncio.IncompleteReadError) as e:
        writer.close()
        raise AuthenticationError(f"handshake with {address} failed: {e}{_refused_hint(e)}") from e
    except BaseException:
        writer.close()
        raise
    return reader, writer
