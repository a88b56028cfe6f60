"""mphub: a pub-sub client for the mphub broker, standard library only.

    import mphub
    with mphub.connect("127.0.0.1:6000", authkey=b"secret") as hub:
        sub = hub.subscribe("sensors.>")
        hub.publish("sensors.temp", {"v": 21.5})
        print(sub.next(timeout=1.0))

The asyncio flavour is `mphub.aio`; errors are in `mphub.errors`.
"""

from . import errors
from ._version import __version__ as __version__
from .client import Hub, connect
from .errors import (
    AuthenticationError,
    BrokerError,
    BufferFullError,
    ConnectionClosed,
    HandshakeTimeout,
    MaxPayloadWarning,
    MphubError,
    SlowConsumerError,
    SubscriptionClosed,
    TimeoutError,
)
from .message import Message
from .subscription import Subscription

__all__ = [
    "AuthenticationError",
    "BrokerError",
    "BufferFullError",
    "ConnectionClosed",
    "HandshakeTimeout",
    "Hub",
    "MaxPayloadWarning",
    "Message",
    "MphubError",
    "SlowConsumerError",
    "Subscription",
    "SubscriptionClosed",
    "TimeoutError",
    "connect",
    "errors",
]
