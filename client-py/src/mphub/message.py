"""`Message`: what a subscription yields; it unpacks like the `(topic, payload)` tuple."""

from __future__ import annotations

from typing import Any, NamedTuple


class Message(NamedTuple):
    """One delivered message: `msg.topic`, `msg.payload`, or `topic, payload = msg`."""

    topic: str
    payload: Any
