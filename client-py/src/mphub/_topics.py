"""Topic and pattern rules (NATS's, as the broker enforces them), checked before sending.

Checking locally means a bad topic raises at the call that made it, instead of an `$error` that
arrives later and cannot be tied to one call.
"""

from __future__ import annotations

from typing import Dict, List, Optional

MAX_TOPIC_BYTES = 255
MAX_TOKENS = 16
_valid_topics: Dict[str, None] = {}
_VALID_CACHE = 4096


def _check_tokens(text: str, what: str, wildcards: bool) -> List[str]:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    if not text:
        raise ValueError(f"{what} is empty")
    if len(text.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise ValueError(f"{what} {text!r} is over {MAX_TOPIC_BYTES} bytes")
    if text.startswith("$"):
        raise ValueError(f"{what} {text!r} starts with '$', which is reserved for the broker")
    tokens = text.split(".")
    if len(tokens) > MAX_TOKENS:
        raise ValueError(f"{what} {text!r} has more than {MAX_TOKENS} tokens")
    for i, t in enumerate(tokens):
        if not t:
            raise ValueError(f"{what} {text!r} has an empty token")
        if any(c.isspace() for c in t):
            raise ValueError(f"{what} {text!r} contains whitespace")
        if not wildcards and ("*" in t or ">" in t):
            raise ValueError(f"{what} {text!r} contains a wildcard ('*' or '>'); only patterns may")
        if t in ("*", ">"):
            if t == ">" and i != len(tokens) - 1:
                raise ValueError(f"pattern {text!r}: '>' may only be the last token")
        elif "*" in t or ">" in t:
            raise ValueError(f"pattern {text!r}: a wildcard must be a whole token")
    return tokens


def check_topic(topic: str) -> None:
    """Raise ValueError/TypeError unless `topic` may be published to (results are cached)."""
    if topic in _valid_topics:
        return
    _check_tokens(topic, "topic", wildcards=False)
    if len(_valid_topics) >= _VALID_CACHE:
        _valid_topics.clear()
    _valid_topics[topic] = None


def check_pattern(pattern: str) -> None:
    """Raise ValueError/TypeError unless `pattern` may be subscribed to."""
    _check_tokens(pattern, "pattern", wildcards=True)


def check_group(group: Optional[str]) -> None:
    """Queue group names follow the token rules."""
    if group is None:
        return
    tokens = _check_tokens(group, "group", wildcards=False)
    if len(tokens) != 1:
        raise ValueError(f"group {group!r} must be a single token (no '.')")


def matches(pattern: str, topic: str) -> bool:
    """True if `topic` matches `pattern` (`*` one token, `>` one or more trailing tokens)."""
    if pattern == topic:
        return True
    p = pattern.split(".")
    t = topic.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(t) > i
        if i >= len(t):
            return False
        if tok != "*" and tok != t[i]:
            return False
    return len(p) == len(t)
