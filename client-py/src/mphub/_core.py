"""The hub's state and decisions, with no sockets, threads or event loop.

`mphub.Hub` (threads) and `mphub.aio.Hub` (asyncio) are drivers: they connect, read, write,
wait and run a timer. Everything they decide alike is decided here, once:

- subscriptions: local routing (`_dispatch.Router`) and one broker subscription per
  (pattern, group) key, counted: the first local subscriber sends `$sub`, the last `$unsub`;
- answers: `$sub`/`$unsub` wait for `$ok`/`$error` in order (the broker answers in order),
  `$ping` tokens for their `$pong`, requests for their reply on the hub's inbox;
- the write buffer: every frame goes into one bytearray; `put` tells the driver when to write
  it, and bounds what may wait for a reconnect;
- the connection's life: what goes first on every connect (each key's `$sub`, all worker
  metrics, then what was buffered meanwhile), what a loss fails, whether and how to reconnect
  (`_reconnect.ReconnectPlan`), giving up;
- what each control frame from the broker means (`_on_control`);
- what is done on a timer (`tick`): worker metrics every `metrics_interval`, and keepalive:
  after `ping_interval` with nothing received, a `$ping`; past `max_outstanding_pings`
  unanswered, the connection is dead (`kill`), and the driver's loss path takes over;
- `("$hello", {"name": ...})` first on every connect, so the broker's logs and status page
  name the connection; a node in a cluster answers it with the cluster's `max_payload`, and a
  larger publish is warned about (`MaxPayloadWarning`): it would reach that node's subscribers
  only.

Drivers wait on waiters the core makes with their factory (a `threading.Event` in
`client.EventWaiter`, an asyncio future in `aio.FutureWaiter`); the core only calls
`waiter.set(value, error)`. State changes under the lock the driver gives: a
`threading.Lock` when any thread may call (the threaded hub), `NO_LOCK` when all calls come
from one thread (the asyncio hub's loop: a publish then takes no lock at all). Waiters are set and
callbacks called outside it.

Where features to come belong, so that both hubs get them at once:
- TLS: the drivers' connection setup (`_connect`); nothing here changes.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import struct
import sys
import threading
import time
import warnings
from collections import deque
from typing import Any, Callable, Deque, Dict, Generic, List, Optional, Protocol, Tuple, TypeVar, Union

from ._connect import READ_SIZE
from ._dispatch import Router, deliver
from ._reconnect import ReconnectPlan
from ._wire import FrameSplitter, ProtocolError, frame, header
from .errors import (
    AuthenticationError,
    BrokerError,
    BufferFullError,
    ConnectionClosed,
    MaxPayloadWarning,
    MphubError,
    PayloadRefused,
)
from .metrics import HubMetrics

log = logging.getLogger("mphub")
Key = Tuple[str, Optional[str]]

# What `put` asks of the driver.
IDLE = 0  # nothing: a write is already due, or the hub is disconnected
SOON = 1  # write soon: wake the flusher thread, or schedule a write on the event loop
NOW = 2  # write now, from the caller

_pack_len = struct.Struct("!i").pack
_dumps = pickle.dumps
_monotonic = time.monotonic
_CLOSE = pickle.dumps("close")  # the goodbye of the seed's convention (PROTOCOL §4)


class Waiter(Protocol):
    """One answer awaited by one caller; the driver's own type adds the waiting."""

    def set(self, value: Any = None, error: Optional[BaseException] = None) -> None: ...


W = TypeVar("W", bound=Waiter)


class _HelloAck:
    """Where the broker's answer to `$hello` goes: nobody waits for it. A node in a cluster
    answers `{"name": ..., "max_payload": bytes}`, which becomes the core's second limit. A
    broker from before `$hello` answers `$error`; the connection works all the same, so that
    is only logged."""

    __slots__ = ("core",)

    def __init__(self, core: Core[Any]) -> None:
        self.core = core

    def set(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        if error is not None:
            log.debug("mphub: the broker did not take the connection's name: %s", error)
            return
        if type(value) is tuple and len(value) == 2 and type(value[1]) is dict:
            limit = value[1].get("max_payload")
            if type(limit) is int and limit > 0:
                self.core.cluster_limit(limit)


def wire_arg(key: Key) -> Any:
    """The `$sub`/`$unsub` argument for a key: the pattern, or (pattern, group)."""
    pattern, group = key
    return pattern if group is None else (pattern, group)


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


class Inbox:
    """The hub's reply subscription, `_INBOX.<random>.>`: each reply sets the waiter of the
    request it answers (PROTOCOL §9)."""

    group: Optional[str] = None

    def __init__(self, replies: Dict[str, Any]) -> None:
        self.prefix = "_INBOX." + os.urandom(8).hex()
        self.pattern = self.prefix + ".>"
        self._replies = replies

    def _push_many(self, batch: List[Tuple[str, Any]]) -> None:
        for topic, payload in batch:
            waiter = self._replies.pop(topic, None)
            if waiter is not None:
                waiter.set(payload)

    def _close(self) -> None:
        """Nothing to end: a request still waiting times out on its own."""


class NoLock:
    """The lock of a core whose every call comes from one thread."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None


NO_LOCK = NoLock()
Lock = Union["threading.Lock", NoLock]


class Core(Generic[W]):
    """One hub's state. The driver gives it a waiter factory, `report` (the hub's `on_error`
    path), `start_timer` (called when `tick` has work: at the first worker metric, and on each
    connect while keepalive is on; the driver starts its timer, or wakes it if it runs), its
    `lock` (see the module's doc) and `kill` (close the connection now: keepalive found it
    dead); the options are the hub's (see `mphub.Hub`), `idle` is the flavour's quiet spell
    after which a publish is written at once (`put`). Without `name` no `$hello` is sent;
    `ping_interval` 0 turns keepalive off."""

    def __init__(
        self,
        new_waiter: Callable[[], W],
        report: Callable[[BaseException], None],
        start_timer: Callable[[], None],
        lock: Lock,
        *,
        address: object,
        idle: float,
        max_frame: int,
        flush_size: int,
        reconnect: bool,
        max_reconnect_attempts: int,
        reconnect_wait: Tuple[float, float],
        reconnect_buffer: int,
        pickle_protocol: int,
        metrics_interval: float,
        name: Optional[str] = None,
        ping_interval: float = 0.0,
        max_outstanding_pings: int = 2,
        kill: Optional[Callable[[], None]] = None,
        loads: Callable[[Any], Any] = pickle.loads,
    ) -> None:
        self.address = address
        self.name = name
        self.max_frame = max_frame
        # The cluster's max_payload, when the node reported one; `_over` is the smaller of the
        # two limits, so a publish under both pays one comparison.
        self.max_payload: Optional[int] = None
        self._over = max_frame
        self.protocol = pickle_protocol
        self.reconnect = reconnect
        self.max_attempts = max_reconnect_attempts
        self.wait_range = reconnect_wait
        self.connected = False
        self.closing = False
        self.lost: Optional[BaseException] = None
        self.router: Router[Any] = Router()
        self.metrics = HubMetrics(start_timer)
        self.inbox: Optional[Inbox] = None
        self._new_waiter = new_waiter
        self._report = report
        self._start_timer = start_timer
        self._idle = idle
        self._flush_size = flush_size
        self._offline_limit = reconnect_buffer
        self._metrics_interval = metrics_interval
        self._lock = lock
        self._acquire, self._release = lock.acquire, lock.release
        # Every publish calls `put` (see `_put`): with one thread there is no lock to take.
        self.put: Callable[[bytes, float], int] = self._put if lock is NO_LOCK else self._put_locked
        self._subs: List[Any] = []
        self._keys: Dict[Key, int] = {}
        self._acks: Deque[Optional[Waiter]] = deque()  # one per $hello/$sub/$unsub sent, in order
        self._pongs: Dict[Any, W] = {}
        self._ready: List[W] = []  # waiting for a connection
        self._replies: Dict[str, W] = {}
        self._tokens = itertools.count(1)
        self._wbuf = bytearray()
        self._asks: List[Tuple[int, int]] = []  # where $sub/$unsub frames stand in _wbuf
        self._write_due = False
        self._last_put = 0.0
        self._metrics_due: Optional[float] = None
        self._splitter = FrameSplitter(max_frame)
        self._control = self._on_control  # bound once: `receive` passes them every chunk
        self._bad = self._on_bad
        # Keepalive: when something last arrived, and `$ping`s sent since without an answer.
        self._ping_interval = ping_interval
        self._max_pings = max_outstanding_pings
        self._kill = kill
        self._heard = 0.0
        self._outstanding = 0
        self.dead: Optional[BaseException] = None  # why keepalive killed the connection
        self._loads = loads  # pickle.loads, or a PayloadPolicy's restricted one

    # ------------------------------------------------------------------ the write buffer

    def _put_locked(self, body: bytes, now: float) -> int:
        self._acquire()  # not `with`: this is every publish's path, and the `with` costs more
        try:
            return self._put(body, now)
        finally:
            self._release()

    def _put(self, body: bytes, now: float) -> int:
        """`put`: frame a pickled `body` into the write buffer; returns what the driver should do.

        `now` is a monotonic clock in seconds. The first put after `idle` seconds without one
        is to be written NOW (a lone message then costs what the stock client's send does);
        later ones SOON, so that under load many share one write; NOW again past `flush_size`
        buffered bytes; IDLE while a write is already due or the hub is disconnected. Raises
        ValueError over `max_frame`; while disconnected, `BufferFullError` past
        `reconnect_buffer` bytes and `ConnectionClosed` once closed or given up.
        """
        n = len(body)
        if n > self._over:
            if n > self.max_frame:
                raise ValueError(f"message of {n} bytes is over max_frame ({self.max_frame})")
            self._warn_max_payload()
        connected = self.connected
        if not connected:
            self._check_offline(n)
        buf = self._wbuf
        buf += _pack_len(n) if n <= 0x7FFFFFFF else header(n)
        buf += body
        todo = IDLE
        if not self._write_due:
            self._write_due = True
            todo = NOW if now - self._last_put >= self._idle else SOON
        self._last_put = now
        if len(buf) >= self._flush_size:
            todo = NOW
        return todo if connected else IDLE

    def cluster_limit(self, max_payload: int) -> None:
        """The node reported the cluster's `max_payload` (bytes) in its `$hello` answer."""
        self.max_payload = max_payload
        self._over = min(self.max_frame, max_payload)

    def _warn_max_payload(self) -> None:
        limit = self.max_payload
        if limit is not None:
            # Attributed to the caller's line, the first frame outside this package; the text
            # names the limit, not the size, so under the default filters it shows once there.
            level, f = 2, sys._getframe(1)
            while f.f_back is not None and f.f_globals.get("__name__", "").startswith("mphub."):
                level, f = level + 1, f.f_back
            warnings.warn(
                f"a publish over the cluster's max_payload ({limit} bytes: the NATS server's, "
                "less the node's own headers) may reach subscribers on this node only; raise "
                "max_payload in nats-server to send it to the other nodes",
                MaxPayloadWarning,
                stacklevel=level,
            )

    def take_output(self) -> Optional[bytearray]:
        """Everything buffered, to write now; None while disconnected or if there is nothing."""
        with self._lock:
            self._write_due = False
            if not self.connected or not self._wbuf:
                return None
            data, self._wbuf = self._wbuf, bytearray()
            self._asks = []
            return data

    def _check_offline(self, n: int) -> None:
        """Raise unless `n` more bytes may wait for a reconnect (caller holds the lock)."""
        if self.closing:
            raise ConnectionClosed("the hub is closed")
        if self.lost is not None:
            raise ConnectionClosed(f"the connection is lost: {self.lost}")
        if len(self._wbuf) + n > self._offline_limit:
            raise BufferFullError(
                f"disconnected, and {len(self._wbuf)} bytes of publishes already wait "
                f"(reconnect_buffer={self._offline_limit})"
            )

    def _frame(self, obj: Any) -> bytes:
        return frame(_dumps(obj, self.protocol))

    def _ask(self, request: Any, waiter: Optional[W]) -> None:
        """Buffer a request the broker answers with `$ok`/`$error` (caller holds the lock)."""
        self._acks.append(waiter)
        start = len(self._wbuf)
        self._wbuf += self._frame(request)
        self._asks.append((start, len(self._wbuf)))

    def _metrics_ops(self, everything: bool) -> bytes:
        ops = self.metrics.take(everything)
        return self._frame(("$metrics", ops)) if ops else b""

    # ------------------------------------------------------------------ subscriptions

    def add(self, sub: Any) -> Optional[W]:
        """Register `sub` (it has `pattern`, `group`, `_close()` and takes `_push_many`).

        The first of its (pattern, group) key buffers `$sub` and returns the waiter of the
        broker's answer; None when the broker has the key already, or while disconnected (the
        reconnect sends every key). Raises `ConnectionClosed`, closing `sub`, once the hub is
        closed or has given up.
        """
        with self._lock:
            if not self.closing and self.lost is None:
                return self._add(sub)
        sub._close()
        raise ConnectionClosed("the hub is closed")

    def _add(self, sub: Any) -> Optional[W]:
        key = (sub.pattern, sub.group)
        self.router.add(sub.pattern, sub)
        self._subs.append(sub)
        count = self._keys.get(key, 0)
        self._keys[key] = count + 1
        if count or not self.connected:
            return None
        waiter = self._new_waiter()
        self._ask(("$sub", wire_arg(key)), waiter)
        return waiter

    def remove(self, sub: Any) -> bool:
        """Forget and close `sub`; the last of its key buffers `$unsub`. True if it did."""
        asked = False
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
                self.router.remove(sub)
                key = (sub.pattern, sub.group)
                count = self._keys.get(key, 0) - 1
                if count > 0:
                    self._keys[key] = count
                else:
                    self._keys.pop(key, None)
                    if self.connected:  # nobody waits for this answer: an $error goes to on_error
                        self._ask(("$unsub", wire_arg(key)), None)
                        asked = True
                if sub is self.inbox:
                    self.inbox = None
        sub._close()
        return asked

    def failed(self, sub: Any, error: BaseException) -> bool:
        """The answer to `sub`'s `$sub` did not come: True if the caller should raise `error`.

        A connection lost while reconnects are on keeps `sub`: the reconnect restores its key.
        Anything else (a refusal, a timeout, giving up) removes it.
        """
        if isinstance(error, ConnectionClosed) and self.reconnect and not self.closing and self.lost is None:
            return False
        self.remove(sub)
        return True

    def close_subscriptions(self) -> List[Any]:
        """Close every subscription (what is queued stays readable); returns them."""
        with self._lock:
            subs = list(self._subs)
        for s in subs:
            s._close()
        return subs

    # ------------------------------------------------------------------ barrier, request/reply

    def when_connected(self) -> Optional[W]:
        """None if connected; else a waiter set at the reconnect, or failed when the hub gives up
        or closes. Raises as `put` does while disconnected."""
        with self._lock:
            if self.connected:
                return None
            self._check_offline(0)
            waiter = self._new_waiter()
            self._ready.append(waiter)
            return waiter

    def ping(self) -> Tuple[int, W]:
        """Buffer pending worker metrics and a `$ping`: returns its token and the waiter its
        `$pong` sets, once the broker has routed everything this hub sent before."""
        with self._lock:
            token = next(self._tokens)
            waiter = self._pongs[token] = self._new_waiter()
            self._wbuf += self._metrics_ops(False) + self._frame(("$ping", token))
        return token, waiter

    def forget_pong(self, token: int) -> None:
        with self._lock:
            self._pongs.pop(token, None)

    def expect_reply(self) -> Tuple[str, W, Optional[W]]:
        """A reply topic on this hub's inbox, and the waiter its reply sets.

        The first call also subscribes the inbox and returns the waiter of that `$sub` third
        (else None). It is buffered ahead of anything published next, so the broker has it
        before it routes the request.
        """
        with self._lock:
            if self.closing or self.lost is not None:
                raise ConnectionClosed("the hub is closed")
            ack = None
            if self.inbox is None:
                self.inbox = Inbox(self._replies)
                ack = self._add(self.inbox)
            reply_to = f"{self.inbox.prefix}.{next(self._tokens)}"
            waiter = self._replies[reply_to] = self._new_waiter()
        return reply_to, waiter, ack

    def forget_reply(self, reply_to: str) -> None:
        self._replies.pop(reply_to, None)

    # ------------------------------------------------------------------ receiving

    def start_reading(self) -> None:
        """A connection's first read is next: no partial frame carries over."""
        self._splitter = FrameSplitter(self.max_frame)

    def read_size(self) -> int:
        """How much the next read should ask for."""
        return self._splitter.read_size(READ_SIZE)

    def receive(self, data: bytes) -> Optional[BaseException]:
        """Hand what one read returned to the subscriptions and control frames to
        `_on_control`. Returns the error that ends the connection: the broker closed it
        (`data` is empty), or sent something that is not a frame."""
        if not data:
            return ConnectionClosed("the broker closed the connection")
        # Anything from the broker shows it is alive (keepalive; see `tick`).
        self._heard = _monotonic()
        self._outstanding = 0
        try:
            bodies = self._splitter.feed(data)
        except ProtocolError as e:
            return e
        deliver(bodies, self.router, self._control, self._bad, self._loads)
        return None

    def _on_control(self, obj: Any) -> None:
        """A frame that is not a message: `$pong`, `$ok` or `$error`; anything else is reported."""
        if type(obj) is tuple and len(obj) == 2 and type(obj[0]) is str:
            topic, arg = obj
            if topic == "$pong":
                with self._lock:
                    pong = self._pongs.pop(arg, None) if _hashable(arg) else None
                if pong is not None:
                    pong.set()
                return
            if topic == "$ok" or topic == "$error":
                error = BrokerError(str(arg)) if topic == "$error" else None
                with self._lock:
                    head = self._acks.popleft() if self._acks else None
                if head is not None:
                    head.set(arg, error)
                elif error is not None:
                    self._report(error)  # e.g. a key the reconnect could not restore
                return
        self._report(MphubError(f"unexpected frame from the broker: {obj!r:.200}"))

    def _on_bad(self, error: BaseException) -> None:
        if isinstance(error, PayloadRefused):
            # Counted on every subscription it was for, then reported once.
            if error.topic is not None and error.topic[:1] != "$":
                for sub in self.router.lookup(error.topic):
                    sub._refuse()
            self._report(error)
            return
        self._report(MphubError(f"a message could not be unpickled: {error!r}"))

    # ------------------------------------------------------------------ the connection's life

    def on_connect(self) -> Optional[bytearray]:
        """A connection is up and authenticated: what to write on it first, or None if the hub
        is closing (drop the connection).

        The `$hello` naming the connection, every key's `$sub` (their answers come first), all
        worker metrics again, then what was buffered meanwhile, minus `$sub`/`$unsub` frames a
        lost connection never sent: the keys say what holds now, and a late `$unsub` would
        undo a key restored before it.
        """
        with self._lock:
            if self.closing:
                return None
            out = bytearray()
            # The node connected to now reports its own cluster's limit, if any.
            self.max_payload, self._over = None, self.max_frame
            if self.name is not None:
                out += self._frame(("$hello", {"name": self.name}))
                self._acks.append(_HelloAck(self))
            for key in self._keys:
                out += self._frame(("$sub", wire_arg(key)))
                self._acks.append(None)
            out += self._metrics_ops(True)
            pos = 0
            for start, end in self._asks:
                out += self._wbuf[pos:start]
                pos = end
            out += self._wbuf[pos:]
            self._wbuf, self._asks, self._write_due = bytearray(), [], False
            self.connected = True
            self.dead = None
            self._heard, self._outstanding = _monotonic(), 0
            ready, self._ready = self._ready, []
        for w in ready:
            w.set()
        if self._ping_interval > 0:
            self._start_timer()
        return out

    def lose(self, error: BaseException) -> bool:
        """The connection ended with `error`: fail what waited for an answer on it. True if the
        driver should reconnect; else the hub has given up (see `give_up`). When keepalive
        killed the connection, that is the error, whatever the socket said after."""
        with self._lock:
            error, self.dead = self.dead or error, None
            self.connected = False
            pending = [*self._acks, *self._pongs.values()]
            self._acks.clear()
            self._pongs.clear()
            retry = self.reconnect and not self.closing and not isinstance(error, AuthenticationError)
        gone = ConnectionClosed(f"connection lost: {error}")
        for w in pending:
            if w is not None:
                w.set(error=gone)
        if retry:
            log.warning("mphub: connection to %s lost (%s); reconnecting", self.address, error)
        else:
            self._end(error, gone)
        return retry

    def reconnect_plan(self) -> ReconnectPlan:
        """The attempts of the outage that just began (see `_reconnect`)."""
        return ReconnectPlan(
            self.address, self.max_attempts, self.wait_range, self.give_up, lambda: self.closing
        )

    def give_up(self, error: BaseException) -> None:
        """No more connections: fail what waits for one, close every subscription, and report
        `error` unless the hub is closing."""
        self._end(error, error)

    def _end(self, cause: BaseException, report: BaseException) -> None:
        with self._lock:
            self.lost = cause
            ready, self._ready = self._ready, []
            closing = self.closing
        for w in ready:
            w.set(error=ConnectionClosed(f"the connection is lost: {cause}"))
        self.close_subscriptions()
        if not closing:
            self._report(report)

    def close(self) -> Optional[bytearray]:
        """Start closing. None if already closing; else the last bytes to write: pending worker
        metrics, everything buffered and the goodbye (empty while disconnected). From now on
        `put` raises `ConnectionClosed`."""
        with self._lock:
            if self.closing:
                return None
            self.closing = True
            out = bytearray()
            if self.connected:
                self.connected = False
                self._wbuf += self._metrics_ops(False) + frame(_CLOSE)
                out, self._wbuf = self._wbuf, bytearray()
            ready, self._ready = self._ready, []
        for w in ready:
            w.set(error=ConnectionClosed("the hub is closed"))
        return out

    # ------------------------------------------------------------------ the timer

    def tick(self, now: float) -> Optional[float]:
        """Do what is due at `now` (monotonic seconds) and return the seconds until the next
        call is due, or None when nothing is scheduled. The driver writes the buffer after.

        Pending worker metrics every `metrics_interval` once a metric has changed (not while
        disconnected: the reconnect sends them all); keepalive (`_keepalive`).
        """
        if self.closing:
            return None
        waits = []
        if self.metrics.started:
            waits.append(self._metrics_tick(now))
        if self._ping_interval > 0:
            waits.append(self._keepalive(now))
        return min(waits) if waits else None

    def _keepalive(self, now: float) -> float:
        """Keepalive, as NATS clients do it but only when the connection is otherwise idle:
        `ping_interval` after the last thing received, a `$ping`; another every `ping_interval`
        while nothing comes; once `max_outstanding_pings` are unanswered for another
        `ping_interval`, the connection is dead: `kill` it (the driver's loss path then
        reconnects as after any loss). So a broker that stopped answering (stopped, frozen,
        its host gone without a FIN) is noticed within `ping_interval * (max_outstanding_pings
        + 1)` of the last thing it sent. Any frame resets the count (`receive`); the `$pong`s
        of these pings match no waiter and are dropped. Returns the seconds until due again."""
        interval = self._ping_interval
        with self._lock:
            if not self.connected:
                return interval
            heard, sent = self._heard, self._outstanding
            due = heard + interval * (sent + 1)
            if now < due:
                return due - now
            if sent < self._max_pings:
                self._outstanding = sent + 1
                self._wbuf += self._frame(("$ping", next(self._tokens)))
                return max(due + interval - now, 0.0)
            silent = now - heard
            self.dead = ConnectionClosed(
                f"no answer from the broker for {silent:.1f}s ({sent} keepalive pings unanswered): "
                "it stopped or cannot be reached"
            )
        if self._kill is not None:
            self._kill()
        return interval

    def _metrics_tick(self, now: float) -> float:
        due = self._metrics_due
        if due is not None and now < due:
            return due - now
        if due is not None:
            with self._lock:
                if self.connected:
                    self._wbuf += self._metrics_ops(False)
        self._metrics_due = now + self._metrics_interval
        return self._metrics_interval
