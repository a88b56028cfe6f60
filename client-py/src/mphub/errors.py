"""Every exception mphub raises; all derive from `MphubError`."""

from __future__ import annotations

import builtins
from typing import Optional


class MphubError(Exception):
    """Base class of every mphub error."""


class AuthenticationError(MphubError):
    """The broker refused the authkey, or the handshake did not follow the protocol."""


class ConnectionClosed(MphubError):
    """The connection is closed (by `close()`, or lost and not coming back)."""


class BufferFullError(ConnectionClosed):
    """Disconnected, and the publishes waiting for the reconnect have reached their limit."""


class SubscriptionClosed(MphubError):
    """The subscription was unsubscribed, or its connection closed."""


class SlowConsumerError(MphubError):
    """A subscription's queue was full and messages were dropped.

    `dropped` is how many since the last report; `subscription` the one that dropped them.
    """

    def __init__(self, subscription: object, dropped: int) -> None:
        super().__init__(f"{subscription!r} dropped {dropped} message(s): its queue is full")
        self.subscription = subscription
        self.dropped = dropped


class BrokerError(MphubError):
    """The broker answered `("$error", reason)`; `reason` is its text."""

    def __init__(self, reason: str, request: Optional[object] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request = request


class PayloadRefused(MphubError):
    """A message's pickle would import something its payload policy does not allow
    (`payloads="data"`): it was not unpickled. `reason` says what (`payload refused: it imports
    'os.system'`); `topic` is the topic it was published to, when it could be read."""

    def __init__(self, reason: str, topic: Optional[str] = None) -> None:
        super().__init__(reason if topic is None else f"{reason} (topic {topic!r})")
        self.reason = reason
        self.topic = topic


class MaxPayloadWarning(UserWarning):
    """A publish is larger than the cluster's `max_payload` (the NATS server's, which the broker
    reports in its answer to `$hello`): the broker delivers it to subscribers on its own node
    only. Issued once per limit through `warnings`, so the usual filters apply
    (`warnings.simplefilter("error", MaxPayloadWarning)` turns it into an exception)."""


class TimeoutError(MphubError, builtins.TimeoutError):
    """Nothing came in time; also a builtin `TimeoutError`, so either `except` catches it."""


class HandshakeTimeout(AuthenticationError, TimeoutError):
    """A hub with an authkey got no challenge from the broker in time. Most likely the broker
    runs without an authkey (it then waits for the client, which waits for it, as stock
    clients do); else it is stopped or overloaded. Both an `AuthenticationError` and a
    `TimeoutError`; a reconnect keeps trying after one (the broker may be coming back)."""


__all__ = [
    "AuthenticationError",
    "BrokerError",
    "BufferFullError",
    "ConnectionClosed",
    "HandshakeTimeout",
    "MphubError",
    "PayloadRefused",
    "SlowConsumerError",
    "SubscriptionClosed",
    "TimeoutError",
]
