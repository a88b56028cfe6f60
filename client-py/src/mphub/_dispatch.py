"""Local dispatch: which of this connection's subscriptions a delivered topic goes to."""

from __future__ import annotations

import pickle
from typing import Any, Callable, Dict, Generic, List, Optional, Tuple, TypeVar

from ._topics import matches

S = TypeVar("S")
_CACHE_LIMIT = 4096


class Router(Generic[S]):
    """Subscriptions by pattern, with a topic -> subscriptions cache cleared on every change.

    Each delivered message goes to every local subscription whose pattern matches.
    """

    def __init__(self) -> None:
        self._subs: List[Tuple[str, S]] = []
        self._cache: Dict[str, Tuple[S, ...]] = {}

    # Writers replace the list, then the cache; readers take the cache, then the list. A reader
    # racing a writer thus stores a stale answer only into a cache that is already discarded.
    def add(self, pattern: str, sub: S) -> None:
        self._subs = [*self._subs, (pattern, sub)]
        self._cache = {}

    def remove(self, sub: S) -> None:
        self._subs = [(p, s) for p, s in self._subs if s is not sub]
        self._cache = {}

    def lookup(self, topic: str) -> Tuple[Any, ...]:
        """Every plain subscription matching `topic`, and one target per queue group.

        The broker sends a connection one copy for a queue group that picked it; when several
        subscriptions of this connection are members of that group, a `_Group` target hands
        each message to one of them in turn.
        """
        cache = self._cache
        hit: Optional[Tuple[Any, ...]] = cache.get(topic)
        if hit is not None:
            return hit
        plain: List[Any] = []
        groups: Dict[Tuple[str, str], List[Any]] = {}
        for p, s in self._subs:
            if matches(p, topic):
                group = getattr(s, "group", None)
                if group is None:
                    plain.append(s)
                else:
                    groups.setdefault((p, group), []).append(s)
        found = tuple(plain) + tuple(m[0] if len(m) == 1 else _Group(m) for m in groups.values())
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[topic] = found
        return found

    def all(self) -> List[S]:
        return [s for _, s in self._subs]


class _Group:
    """Several local members of one queue group: each message goes to one, in turn."""

    def __init__(self, members: List[Any]) -> None:
        self.members = members
        self.next = 0

    def _push_many(self, batch: List[Any]) -> None:
        n = len(self.members)
        shares: List[List[Any]] = [[] for _ in range(n)]
        i = self.next
        for msg in batch:
            shares[i].append(msg)
            i = (i + 1) % n
        self.next = i
        for member, share in zip(self.members, shares):
            if share:
                member._push_many(share)

    def _refuse(self) -> None:
        """A message for the group was refused unread: counted on the member whose turn it was."""
        self.members[self.next]._refuse()
        self.next = (self.next + 1) % len(self.members)


def deliver(
    bodies: List[memoryview],
    router: Router[Any],
    on_control: Callable[[Any], None],
    on_bad: Callable[[BaseException], None],
    loads: Callable[[Any], Any] = pickle.loads,
) -> None:
    """Unpickle each frame body (with `loads`: `pickle.loads`, or a payload policy's) and hand
    messages to their subscriptions, a batch per chunk; a body that fails goes to `on_bad`.

    Messages for one subscription are gathered and pushed together (one queue operation and at
    most one wake-up per chunk). Batches are pushed before any control frame is handled, so a
    `$pong` is seen only after every message that came before it is queued.
    """
    cache = router._cache
    lookup = router.lookup
    batches: Dict[Any, List[Any]] = {}
    last_topic: Optional[str] = None  # a run of one topic for one subscription: the common case
    last_append: Any = None
    for body in bodies:
        try:
            obj = loads(body)
        except Exception as e:
            on_bad(e)
            continue
        if type(obj) is tuple and len(obj) == 2:
            topic = obj[0]
            if topic == last_topic:
                last_append(obj)
                continue
            if type(topic) is str and topic[:1] != "$":
                subs = cache.get(topic)
                if subs is None:
                    subs = lookup(topic)
                    cache = router._cache
                last_topic = None
                for sub in subs:
                    batch = batches.get(sub)
                    if batch is None:
                        batch = batches[sub] = []
                    batch.append(obj)
                    if len(subs) == 1:
                        last_topic, last_append = topic, batch.append
                continue
        if batches:
            _push_all(batches)
            batches = {}
            last_topic = None
        on_control(obj)
    if batches:
        _push_all(batches)


def _push_all(batches: Dict[Any, List[Any]]) -> None:
    for sub, batch in batches.items():
        sub._push_many(batch)
