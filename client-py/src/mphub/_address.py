"""Broker addresses: "host:port", "[v6]:port", ("host", port), "unix:/path", "unix:@abstract"."""

from __future__ import annotations

import os
import socket
from typing import Optional, Tuple, Union

AddressLike = Union[str, Tuple[str, int]]
DEFAULT_ADDRESS = "127.0.0.1:6000"


class Address:
    """A parsed address: a socket family and what `connect()` takes for it."""

    def __init__(self, family: int, target: Union[str, Tuple[str, int]], text: str) -> None:
        self.family = family
        self.target = target
        self.text = text

    def __repr__(self) -> str:
        return self.text


def parse(address: Optional[AddressLike]) -> Address:
    """Parse an address; None means `$MPHUB_ADDRESS`, then 127.0.0.1:6000."""
    if address is None:
        address = os.environ.get("MPHUB_ADDRESS") or DEFAULT_ADDRESS
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
        raise ValueError(f"address {address!r} is not host:port, [v6]:port or unix:/path")
    return _tcp(host, int(port_text))


def _tcp(host: str, port: int) -> Address:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    return Address(family, (host, port), shown)
