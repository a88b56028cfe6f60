"""Pieces the threaded and the asyncio clients share."""

from __future__ import annotations

import logging
import os
import pickle
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ._wire import frame
from .errors import BufferFullError, ConnectionClosed, MphubError, TimeoutError

Key = Tuple[str, Optional[str]]


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


def wire_arg(key: Key) -> Any:
    """The `$sub`/`$unsub` argument for a key: the pattern, or (pattern, group)."""
    pattern, group = key
    return pattern if group is None else (pattern, group)


def hashable(x: Any) -> bool:
    """True if `x` can be a dict key (a `$pong` token from the broker should be)."""
    try:
        hash(x)
    except TypeError:
        return False
    return True


def restore_frames(keys: Iterable[Key], protocol: int) -> bytes:
    """`$sub` frames that put every key back after a reconnect."""
    return b"".join(frame(pickle.dumps(("$sub", wire_arg(k)), protocol)) for k in keys)


class Waiter:
    """One answer awaited by one caller."""

    __slots__ = ("error", "event", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: Optional[BaseException] = None

    def set(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        self.value, self.error = value, error
        self.event.set()

    def wait(self, timeout: Optional[float], what: str) -> Any:
        if not self.event.wait(timeout):
            raise TimeoutError(f"{what}: no answer within {timeout}s")
        if self.error is not None:
            raise self.error
        return self.value


class Inbox:
    """Routes replies on this hub's `_INBOX.<id>.>` to the requests waiting for them."""

    def __init__(self, requests: Dict[str, Waiter]) -> None:
        self._requests = requests

    def _push_many(self, batch: List[Tuple[str, Any]]) -> None:
        for topic, payload in batch:
            waiter = self._requests.pop(topic, None)
            if waiter is not None:
                waiter.set(payload)


log = logging.getLogger("mphub")


class HubBase:
    """What the threaded and the asyncio hub do alike: offline checks and error reporting."""

    on_error: Optional[Callable[[BaseException], Any]]
    _closing: bool
    _lost: Optional[BaseException]
    _wbuf: bytearray
    _offline_limit: int

    def _check_offline(self, n: int) -> None:
        """Raise unless `n` more bytes may wait for a reconnect."""
        if self._closing:
            raise ConnectionClosed("the hub is closed")
        if self._lost is not None:
            raise ConnectionClosed(f"the connection is lost: {self._lost}")
        if len(self._wbuf) + n > self._offline_limit:
            raise BufferFullError(
                f"disconnected, and {len(self._wbuf)} bytes of publishes already wait "
                f"(reconnect_buffer={self._offline_limit})"
            )

    def _report(self, error: BaseException, log_it: bool = True) -> None:
        if self.on_error is not None:
            self._call(self.on_error, error)
        elif log_it:
            log.error("mphub: %s", error)

    def _call(self, fn: Optional[Callable[..., Any]], *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("mphub: callback %r raised", fn)

    def _on_bad(self, error: BaseException) -> None:
        self._report(MphubError(f"a message could not be unpickled: {error!r}"))
