"""Subscriptions: what both flavours share (`SubscriptionBase`, and the `Link` to the hub that
made one), and the threaded client's `Subscription`: a bounded queue of messages, or a callback."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Iterator, List, Optional, Tuple

from .errors import SlowConsumerError, SubscriptionClosed, TimeoutError
from .message import Message

log = logging.getLogger("mphub")
Callback = Callable[[Message], Any]
_new = tuple.__new__
_WAIT_SLICE = 0.5  # seconds a consumer reads before it looks at its own state again


class Link:
    """What a subscription may ask of the hub that made it; each hub hands one to its own.

    report(error, log_it=True)  tell the hub's `on_error` (a `SlowConsumerError`, an
                                exception a callback raised)
    unsubscribe(sub)            end `sub` (the asyncio hub's returns an awaitable)
    read_for(seconds) -> bool   read the connection on the caller's thread for up to `seconds`;
                                False if it may not now (always, in the asyncio hub)
    """

    __slots__ = ("read_for", "report", "unsubscribe")

    def __init__(
        self,
        report: Callable[..., None],
        unsubscribe: Callable[[Any], Any],
        read_for: Callable[[float], bool],
    ) -> None:
        self.report = report
        self.unsubscribe = unsubscribe
        self.read_for = read_for


class SubscriptionBase:
    """Messages whose topic matches `pattern` (as a member of `group` if given), either flavour.

    At most `max_pending` messages wait in its queue; past that, new ones are dropped, counted
    in `dropped`, and reported: the next `next()` raises `SlowConsumerError` once with the
    count, and the hub's `on_error` hears of it when dropping starts. Messages the hub's
    payload policy refused (`payloads="data"`) are never delivered: counted in `refused`, each
    reported to `on_error` as `PayloadRefused`. A subscription with a
    callback hands every message to it instead, and `next()` raises TypeError.
    """

    _label = "Subscription"

    def __init__(
        self,
        link: Link,
        pattern: str,
        group: Optional[str],
        max_pending: int,
        callback: Optional[Callable[[Message], Any]],
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.pattern = pattern
        self.group = group
        self.max_pending = max_pending
        self.dropped = 0
        self.refused = 0
        self.delivered = 0
        self._link = link
        self._callback = callback
        self._queue: Deque[Tuple[str, Any]] = deque()
        self._waiting = False  # a consumer waits for `_wake`
        self._reported = 0
        self._dropping = False
        self._closed = False
        self._setup()

    def _setup(self) -> None:
        """The flavour's own state, made last in `__init__`."""

    def __repr__(self) -> str:
        group = f" group={self.group!r}" if self.group else ""
        return f"<{self._label} {self.pattern!r}{group}>"

    @property
    def key(self) -> Tuple[str, Optional[str]]:
        """What the broker knows this subscription by: (pattern, group)."""
        return (self.pattern, self.group)

    @property
    def pending(self) -> int:
        """Messages received and not yet taken."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        """True after `unsubscribe()` or the hub's close."""
        return self._closed

    # Called by the hub's reader with the messages of one read for this subscription. The
    # consumer sets `_waiting` before it looks at the queue, and the reader appends before it
    # reads `_waiting`, so a wake-up is never missed.
    def _push_many(self, batch: List[Tuple[str, Any]]) -> None:
        q = self._queue
        room = self.max_pending - len(q)
        if room < len(batch):
            self._drop(len(batch) - max(room, 0))
            batch = batch[: max(room, 0)]
            if not batch:
                return
        self._dropping = False
        self.delivered += len(batch)
        q.extend(batch)
        if self._waiting:
            self._wake()

    def _drop(self, n: int) -> None:
        self.dropped += n
        if not self._dropping:
            self._dropping = True
            self._link.report(SlowConsumerError(self, self.dropped))

    def _refuse(self) -> None:
        """A message for this subscription was refused by the hub's payload policy."""
        self.refused += 1

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wake_all()

    def _check_next(self) -> None:
        """Before `next()` hands out a message: raise what its caller must hear first."""
        if self._callback is not None:
            raise TypeError("this subscription delivers to its callback")
        if self.dropped > self._reported:
            n = self.dropped - self._reported
            self._reported = self.dropped
            raise SlowConsumerError(self, n)

    def _wake(self) -> None:
        """Wake the consumer waiting for a message."""
        raise NotImplementedError

    def _wake_all(self) -> None:
        """Wake every consumer: the subscription is closed."""
        self._wake()


class Subscription(SubscriptionBase):
    """A subscription of the threaded `mphub.Hub`: iterate it, call `next(timeout=)`, or give
    `callback=` to `Hub.subscribe` (it then runs on a worker thread of its own)."""

    def _setup(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._signalled = False  # one notify per wait
        self._worker: Optional[threading.Thread] = None
        callback = self._callback
        if callback is not None:
            self._worker = threading.Thread(
                target=self._run_callback,
                args=(callback,),
                name=f"mphub-callback-{self.pattern}",
                daemon=True,
            )
            self._worker.start()

    def _wake(self) -> None:
        if not self._signalled:
            self._signalled = True
            with self._cond:
                self._cond.notify()

    def _wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _take(self, timeout: Optional[float]) -> Tuple[str, Any]:
        """Pop the next message, waiting up to `timeout`; raises at the end or on timeout."""
        q = self._queue
        try:
            return q.popleft()
        except IndexError:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        read_for = self._link.read_for
        while True:  # read for ourselves while the hub lets us: no thread hand-off
            left = _WAIT_SLICE if deadline is None else min(deadline - time.monotonic(), _WAIT_SLICE)
            if self._closed or left <= 0 or not read_for(left):
                break
            try:
                return q.popleft()
            except IndexError:
                pass
        with self._cond:
            self._waiting = True
            self._signalled = False
            try:
                while True:
                    try:
                        return q.popleft()
                    except IndexError:
                        pass
                    if self._closed:
                        raise SubscriptionClosed(f"{self!r} is closed")
                    rest = None if deadline is None else deadline - time.monotonic()
                    if rest is not None and rest <= 0:
                        raise TimeoutError(f"no message on {self.pattern!r} within {timeout}s")
                    self._cond.wait(rest)
                    self._signalled = False
            finally:
                self._waiting = False

    def next(self, timeout: Optional[float] = None) -> Message:
        """The next message; waits up to `timeout` seconds (None: forever).

        Raises `TimeoutError` if none came, `SubscriptionClosed` once unsubscribed and drained,
        `SlowConsumerError` once after messages were dropped (then carries on).
        """
        if self.dropped > self._reported or self._callback is not None:
            self._check_next()
        try:
            return _new(Message, self._queue.popleft())
        except IndexError:
            return _new(Message, self._take(timeout))

    def __iter__(self) -> Iterator[Message]:
        """Messages as they come; ends once unsubscribed (or the hub closed) and drained."""
        if self._callback is not None:
            self._check_next()
        popleft = self._queue.popleft
        while True:
            if self.dropped > self._reported:
                self._check_next()
            try:
                item = popleft()
            except IndexError:
                try:
                    item = self._take(None)
                except SubscriptionClosed:
                    return
            yield _new(Message, item)

    def unsubscribe(self) -> None:
        """Stop receiving; messages already queued can still be taken, then iteration ends."""
        if not self._closed:
            self._link.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()

    def _run_callback(self, callback: Callback) -> None:
        while True:
            try:
                item = self._take(None)
            except SubscriptionClosed:
                return
            try:
                callback(_new(Message, item))
            except Exception as e:  # a user's callback must not kill the worker
                log.exception("mphub: callback for %r raised", self.pattern)
                self._link.report(e, log_it=False)

    def _join(self, timeout: float) -> None:
        w = self._worker
        if w is not None and w is not threading.current_thread():
            w.join(timeout)
