"""Pieces the threaded and the asyncio clients share."""

from __future__ import annotations

import os
import pickle
from typing import Any, Iterable, Optional, Tuple

from ._wire import frame

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
