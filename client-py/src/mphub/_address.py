"""Broker addresses: "host:port", "[v6]:port", ("host", port), "unix:/path", "unix:@abstract",
and "tls://host:port" (TCP with TLS)."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Optional, Tuple, Union

if TYPE_CHECKING:  # `ssl` is imported only by hubs that use TLS
    import ssl

AddressLike = Union[str, Tuple[str, int]]
TlsOption = Union["ssl.SSLContext", bool, None]
DEFAULT_ADDRESS = "127.0.0.1:6000"
TLS_SCHEME = "tls://"


class Address:
    """A parsed address: a socket family, what `connect()` takes for it, and for TLS the
    `ssl.SSLContext` and the name the broker's certificate must carry (`server_hostname`)."""

    def __init__(
        self,
        family: int,
        target: Union[str, Tuple[str, int]],
        text: str,
        tls: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.family = family
        self.target = target
        self.text = text
        self.tls = tls

    @property
    def server_hostname(self) -> Optional[str]:
        """The host the broker's certificate is checked against (TLS only)."""
        if self.tls is None or isinstance(self.target, str):
            return None
        return self.target[0]

    def __repr__(self) -> str:
        return self.text


def parse(address: Optional[AddressLike], tls: TlsOption = None) -> Address:
    """Parse an address; None means `$MPHUB_ADDRESS`, then 127.0.0.1:6000.

    TLS is on for a "tls://host:port" address or when `tls` is an `ssl.SSLContext` or True. The
    context is `tls`, else `ssl.create_default_context()`: the system's CAs, the broker's
    certificate and host name verified.
    """
    if address is None:
        address = os.environ.get("MPHUB_ADDRESS") or DEFAULT_ADDRESS
    if isinstance(address, str) and address.startswith(TLS_SCHEME):
        address = address[len(TLS_SCHEME) :]
        if tls is None or tls is False:
            tls = True
    plain = _parse(address)
    if tls is None or tls is False:
        return plain
    if plain.family == getattr(socket, "AF_UNIX", None):
        raise ValueError(f"TLS over a Unix socket ({plain}) is not supported: use tls://host:port")
    import ssl

    if tls is True:
        context = ssl.create_default_context()
    elif isinstance(tls, ssl.SSLContext):
        context = tls
    else:
        raise TypeError(f"tls must be an ssl.SSLContext or a bool, not {type(tls).__name__}")
    return Address(plain.family, plain.target, TLS_SCHEME + plain.text, tls=context)


def _parse(address: AddressLike) -> Address:
    if isinstance(address, tuple):
        host, port = address
        return _tcp(str(host), int(port))
    if not isinstance(address, str):
        raise TypeError(f"address must be a str or (host, port), not {type(address).__name__}")
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if not path:
            raise ValueError("unix: address without a path")
        if not hasattr(socket, "AF_UNIX"):
            raise ValueError("unix addresses are not supported on this platform")
        target = "\0" + path[1:] if path.startswith("@") else path
        return Address(socket.AF_UNIX, target, address)
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"address {address!r} is not host:port, [v6]:port, unix:/path or tls://host:port")
    return _tcp(host, int(port_text))


def _tcp(host: str, port: int) -> Address:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    return Address(family, (host, port), shown)
