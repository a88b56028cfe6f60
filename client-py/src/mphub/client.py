"""`Hub`: the threaded client. One connection, buffered both ways, many subscriptions.

Threads: a reader pulls big chunks off the socket, splits frames and hands each message to the
matching subscriptions (it also reconnects); a flusher sends the publish buffer as soon as it
gets the GIL, so under load many publishes go out in one `send`. Callback subscriptions each
have a worker thread.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import random
import select
import socket
import struct
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from . import _topics
from ._address import AddressLike, parse
from ._common import HubBase, Inbox, Key, Waiter, authkey_from_env, hashable, restore_frames, wire_arg
from ._connect import open_socket
from ._dispatch import Router, deliver
from ._wire import FrameSplitter, ProtocolError, frame, header
from .errors import (
    AuthenticationError,
    BrokerError,
    ConnectionClosed,
    MphubError,
    TimeoutError,
)
from .metrics import Family, HubMetrics, options
from .subscription import Callback, Subscription

log = logging.getLogger("mphub")
_CLOSE = pickle.dumps("close")
# 64 KiB reads measured 1.8x faster than 256 KiB: a chunk's messages stay in cache.
_READ_SIZE = 64 * 1024
_pack_len = struct.Struct("!i").pack
_monotonic = time.monotonic
_IDLE = 0.0005  # seconds without a send that count as idle
_DEFER = 0.05  # how long the reader thread leaves the socket to a consumer that read last
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_DIRECT = bool(_DONTWAIT) and hasattr(select, "poll")  # consumers may read for themselves


def _poller(sock: socket.socket) -> Any:
    p = select.poll()
    p.register(sock, select.POLLIN)
    return p


class Hub(HubBase):
    """A connection to an mphub broker. Use `mphub.connect(...)`; close it (or use `with`).

    Keyword options (all optional):
      authkey            bytes; default `$MPHUB_AUTHKEY`; with neither, no handshake (a broker
                         running without a key, loopback only)
      connect_timeout    seconds for connect + handshake (5.0)
      max_pending        default queue bound of each subscription (65536 messages)
      flush_size         publish buffer size that triggers a send in the caller (64 KiB)
      reconnect          reconnect when the connection is lost (True)
      max_reconnect_attempts   attempts before giving up; -1 forever (60)
      reconnect_wait     (first, most) backoff seconds, doubled per attempt ((0.05, 2.0))
      reconnect_buffer   bytes of publishes kept while disconnected (8 MiB); past it, publish
                         raises `BufferFullError`
      max_frame          largest frame accepted from the broker (64 MiB)
      on_disconnected, on_reconnected   callables without arguments
      on_error           callable taking the exception (default: logs it)
      pickle_protocol    protocol for publishes (pickle.HIGHEST_PROTOCOL)
      metrics_interval   seconds between sends of pending worker metrics (1.0)
    """

    def __init__(
        self,
        address: Optional[AddressLike] = None,
        *,
        authkey: Optional[bytes] = None,
        connect_timeout: float = 5.0,
        max_pending: int = 65536,
        flush_size: int = 64 * 1024,
        reconnect: bool = True,
        max_reconnect_attempts: int = 60,
        reconnect_wait: Tuple[float, float] = (0.05, 2.0),
        reconnect_buffer: int = 8 * 1024 * 1024,
        max_frame: int = 64 * 1024 * 1024,
        on_disconnected: Optional[Callable[[], Any]] = None,
        on_reconnected: Optional[Callable[[], Any]] = None,
        on_error: Optional[Callable[[BaseException], Any]] = None,
        pickle_protocol: int = pickle.HIGHEST_PROTOCOL,
        metrics_interval: float = 1.0,
    ) -> None:
        self.address = parse(address)
        self._authkey = authkey_from_env(authkey)
        self._timeout = connect_timeout
        self.max_pending = max_pending
        self._flush_size = flush_size
        self._reconnect = reconnect
        self._max_attempts = max_reconnect_attempts
        self._wait_range = reconnect_wait
        self._offline_limit = reconnect_buffer
        self._max_frame = max_frame
        self.on_disconnected = on_disconnected
        self.on_reconnected = on_reconnected
        self.on_error = on_error
        self._protocol = pickle_protocol

        self._wlock = threading.Lock()  # buffer, state, acks, keys
        self._slock = threading.Lock()  # one sender on the socket at a time
        self._read_lock = threading.Lock()  # one reader of the socket at a time
        self._direct_ok = False
        self._direct_until = 0.0
        self._state = threading.Condition(self._wlock)
        self._wbuf = bytearray()
        self._flush_pending = False
        self._last_publish = 0.0
        self._wake = threading.Event()
        self._closing = False
        self._closed_event = threading.Event()
        self._lost: Optional[BaseException] = None
        self._connected = False
        self._acks: Deque[Optional[Waiter]] = deque()
        self._pongs: Dict[int, Waiter] = {}
        self._tokens = itertools.count(1)
        self._router: Router[Any] = Router()
        self._keys: Dict[Key, int] = {}
        self._subs: List[Subscription] = []
        self._inbox: Optional[str] = None
        self._requests: Dict[str, Waiter] = {}
        self.reconnects = 0
        self._metrics = HubMetrics(self._send_metrics, metrics_interval)

        self._sock = open_socket(self.address, self._authkey, connect_timeout)
        self._connected = True
        self._reader = threading.Thread(target=self._read_forever, name="mphub-reader", daemon=True)
        self._flusher = threading.Thread(target=self._flush_forever, name="mphub-flusher", daemon=True)
        self._reader.start()
        self._flusher.start()

    def __repr__(self) -> str:
        state = "connected" if self._connected else "closed" if self._closing else "disconnected"
        return f"<mphub.Hub {self.address} {state}>"

    @property
    def is_connected(self) -> bool:
        """True while the connection is up (False while reconnecting and after close)."""
        return self._connected

    # ------------------------------------------------------------------ publishing

    def publish(self, topic: str, payload: Any) -> None:
        """Send `(topic, payload)` to every matching subscriber. Buffered; see `flush()`."""
        if topic not in _topics._valid_topics:
            _topics.check_topic(topic)
        self._enqueue(pickle.dumps((topic, payload), self._protocol))

    def _enqueue(self, body: bytes) -> None:
        n = len(body)
        if n > self._max_frame:
            raise ValueError(f"message of {n} bytes is over max_frame ({self._max_frame})")
        wake = now = False
        with self._wlock:
            if not self._connected:
                self._check_offline(n)
            buf = self._wbuf
            buf += _pack_len(n) if n <= 0x7FFFFFFF else header(n)
            buf += body
            # After a quiet spell, send from this thread at once: a lone message then costs
            # what the stock client's send does, with no thread hand-off.
            t = _monotonic()
            if not self._flush_pending:
                self._flush_pending = True
                now = t - self._last_publish >= _IDLE
                wake = not now
            self._last_publish = t
            now = now or len(buf) >= self._flush_size
        if now and self._connected:
            self._send_now()
        elif wake:
            self._wake.set()

    def _send_now(self) -> None:
        """Write out the buffer (in the calling thread)."""
        with self._slock:
            with self._wlock:
                self._flush_pending = False
                if not self._connected or not self._wbuf:
                    return
                data, self._wbuf = self._wbuf, bytearray()
                sock = self._sock
            try:
                sock.sendall(data)
            except OSError as e:  # the reader sees the loss too and reconnects
                log.warning("mphub: %d bytes not sent, the connection failed: %s", len(data), e)

    def _flush_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed_event.is_set():
                return
            self._send_now()

    def flush(self, timeout: Optional[float] = 5.0) -> None:
        """Return once the broker has routed everything published before (a `$ping` barrier)."""
        self._metrics.send()
        token = next(self._tokens)
        waiter = Waiter()
        with self._wlock:
            if not self._connected:
                self._check_offline(0)
                if not self._state.wait_for(
                    lambda: self._connected or self._lost is not None or self._closing, timeout
                ):
                    raise TimeoutError(f"flush: still disconnected after {timeout}s")
                if not self._connected:
                    self._check_offline(0)
            self._pongs[token] = waiter
            body = pickle.dumps(("$ping", token), self._protocol)
            self._wbuf += frame(body)
        try:
            self._send_now()
            waiter.wait(timeout, "flush")
        finally:
            with self._wlock:
                self._pongs.pop(token, None)

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        pattern: str,
        *,
        group: Optional[str] = None,
        callback: Optional[Callback] = None,
        max_pending: Optional[int] = None,
        timeout: Optional[float] = 5.0,
    ) -> Subscription:
        """Subscribe; returns once the broker has the subscription.

        With `group`, join that queue group: each message goes to one member. With `callback`,
        messages go to `callback(msg)` on a worker thread instead of the subscription's queue.
        """
        _topics.check_pattern(pattern)
        _topics.check_group(group)
        sub = Subscription(self, pattern, group, max_pending or self.max_pending, callback)
        self._add(sub, pattern, sub, timeout)
        return sub

    def _add(self, sub: Subscription, pattern: str, target: Any, timeout: Optional[float]) -> None:
        key: Key = (pattern, sub.group)
        with self._wlock:
            if self._closing or self._lost is not None:
                sub._close()
                raise ConnectionClosed("the hub is closed")
            self._router.add(pattern, target)
            self._subs.append(sub)
            count = self._keys.get(key, 0)
            self._keys[key] = count + 1
            waiter = self._request_locked(("$sub", wire_arg(key))) if count == 0 else None
        if waiter is None:
            return
        self._send_now()
        try:
            waiter.wait(timeout, f"subscribe {pattern!r}")
        except ConnectionClosed:
            if not self._reconnect:
                self._drop(sub)
                raise
            # Registered locally: the reconnect restores it.
        except BaseException:
            self._drop(sub)
            raise

    def _request_locked(self, request: Any) -> Optional[Waiter]:
        """Queue a request the broker answers with `$ok`/`$error` (caller holds _wlock)."""
        if not self._connected:
            return None  # the reconnect restores every key
        waiter = Waiter()
        self._acks.append(waiter)
        self._wbuf += frame(pickle.dumps(request, self._protocol))
        return waiter

    def _unsubscribe(self, sub: Subscription) -> None:
        waiter = self._drop(sub)
        if waiter is not None:
            self._send_now()

    def _drop(self, sub: Subscription) -> Optional[Waiter]:
        key = sub.key
        waiter = None
        with self._wlock:
            if sub in self._subs:
                self._subs.remove(sub)
                self._router.remove(sub)
                count = self._keys.get(key, 0) - 1
                if count <= 0:
                    self._keys.pop(key, None)
                    if not self._closing:
                        waiter = self._request_locked(("$unsub", wire_arg(key)))
                else:
                    self._keys[key] = count
        sub._close()
        return waiter

    # ------------------------------------------------------------------ worker metrics

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Family:
        """A counter the broker sums over every worker (PROTOCOL §10); see `mphub.metrics`."""
        return self._metrics.family(name, "counter", help, labels, options("counter"))

    def gauge(self, name: str, help: str, labels: Sequence[str] = (), mode: str = "liveall") -> Family:
        """A gauge combined over workers by `mode` (liveall, livesum, max, mostrecent, ...)."""
        return self._metrics.family(name, "gauge", help, labels, options("gauge", mode=mode))

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Optional[Sequence[float]] = None
    ) -> Family:
        """A histogram the broker sums over every worker."""
        return self._metrics.family(name, "histogram", help, labels, options("histogram", buckets=buckets))

    def summary(self, name: str, help: str, labels: Sequence[str] = ()) -> Family:
        """A summary (count and sum) the broker sums over every worker."""
        return self._metrics.family(name, "summary", help, labels, options("summary"))

    def _send_metrics(self, ops: List[Any]) -> None:
        self._enqueue(pickle.dumps(("$metrics", ops), self._protocol))

    # ------------------------------------------------------------------ request / reply

    def request(self, topic: str, payload: Any, timeout: float = 2.0) -> Any:
        """Publish `{"reply_to": inbox, "body": payload}` and return the first reply's payload."""
        prefix = self._ensure_inbox()
        reply_to = f"{prefix}.{next(self._tokens)}"
        waiter = Waiter()
        self._requests[reply_to] = waiter
        try:
            self.publish(topic, {"reply_to": reply_to, "body": payload})
            self._send_now()
            return waiter.wait(timeout, f"request on {topic!r}")
        finally:
            self._requests.pop(reply_to, None)

    def _ensure_inbox(self) -> str:
        if self._inbox is None:
            prefix = "_INBOX." + os.urandom(8).hex()
            inbox = Subscription(self, prefix + ".>", None, 1, None)
            self._add(inbox, prefix + ".>", Inbox(self._requests), 5.0)
            self._inbox = prefix
        return self._inbox

    def serve(
        self, topic: str, handler: Callable[[Any], Any], *, group: Optional[str] = None
    ) -> Subscription:
        """Answer requests on `topic` with `handler(body)`; returns the Subscription."""

        def respond(msg: Any) -> None:
            p = msg.payload
            if isinstance(p, dict) and isinstance(p.get("reply_to"), str):
                self.publish(p["reply_to"], handler(p.get("body")))
            else:
                handler(p)

        return self.subscribe(topic, group=group, callback=respond)

    # ------------------------------------------------------------------ reading

    def _read_forever(self) -> None:
        while True:
            sock = self._sock
            error = self._read(sock)
            if not self._lose(sock, error):
                return
            if not self._reconnect_loop():
                return

    # Reading. The reader thread waits for data without holding `_read_lock` and reads with it.
    # A consumer whose queue is empty (`Subscription.next`) may take the lock and read for
    # itself (`read_for`): a message then reaches it with no hand-off between threads, which is
    # what keeps latency at the stock client's and saves the GIL ping-pong under load.

    def _read(self, sock: socket.socket) -> BaseException:
        with self._read_lock:
            self._splitter = FrameSplitter(self._max_frame)
            self._direct_ok = _DIRECT
        poller = _poller(sock)
        while True:
            if _DIRECT:
                try:
                    poller.poll()
                except OSError as e:
                    return e
                # A consumer that read a moment ago will read again when its queue runs dry:
                # leave the data to it rather than bounce the GIL between two threads.
                idle = self._direct_until - _monotonic()
                if idle > 0:
                    time.sleep(idle)
                    continue
            with self._read_lock:
                outcome = self._read_once(sock, 0 if _DIRECT else None)
            if isinstance(outcome, BaseException):
                return outcome

    def _read_once(self, sock: socket.socket, flags: Optional[int]) -> Optional[BaseException]:
        """One read and its delivery (caller holds `_read_lock`); an error ends the connection."""
        size = self._splitter.read_size(_READ_SIZE)
        try:
            data = sock.recv(size, _DONTWAIT) if flags is not None else sock.recv(size)
        except BlockingIOError:
            return None
        except OSError as e:
            return e
        if not data:
            return ConnectionClosed("the broker closed the connection")
        try:
            bodies = self._splitter.feed(data)
        except ProtocolError as e:
            return e
        deliver(bodies, self._router, self._on_message, self._on_bad)
        return None

    def read_for(self, timeout: float) -> bool:
        """Read on the caller's thread for up to `timeout` seconds; False if it may not now."""
        if not self._direct_ok or not self._connected or not self._read_lock.acquire(False):
            return False
        try:
            sock = self._sock
            if not self._direct_ok or not self._connected:
                return False
            self._direct_until = _monotonic() + _DEFER
            if not _poller(sock).poll(max(timeout, 0) * 1000):
                return True
            if self._read_once(sock, 0) is not None:
                self._direct_ok = False  # the reader thread sees the same end and handles it
                return False
            return True
        except OSError:
            return False
        finally:
            self._read_lock.release()

    def _on_message(self, obj: Any) -> None:
        if type(obj) is tuple and len(obj) == 2 and type(obj[0]) is str:
            topic = obj[0]
            if topic[:1] != "$":
                for sub in self._router.lookup(topic):
                    sub._push_many([obj])
                return
            if topic == "$pong":
                with self._wlock:
                    waiter = self._pongs.pop(obj[1], None) if hashable(obj[1]) else None
                if waiter is not None:
                    waiter.set()
                return
            if topic in ("$ok", "$error"):
                error = BrokerError(str(obj[1])) if topic == "$error" else None
                with self._wlock:
                    head = self._acks.popleft() if self._acks else None
                if head is not None:
                    head.set(obj[1], error)
                elif error is not None:
                    self._report(error)  # e.g. a subscription the reconnect could not restore
                return
        self._report(MphubError(f"unexpected frame from the broker: {obj!r:.200}"))

    def _lose(self, sock: socket.socket, error: BaseException) -> bool:
        """The connection ended; True if the reader should try to reconnect."""
        self._direct_ok = False
        with self._wlock:
            self._connected = False
            pending = list(self._acks) + list(self._pongs.values())
            self._acks.clear()
            self._pongs.clear()
            retry = self._reconnect and not self._closing
            if not retry:
                self._lost = error
            self._state.notify_all()
        try:
            sock.close()
        except OSError:
            pass
        gone = ConnectionClosed(f"connection lost: {error}")
        for w in pending:
            if w is not None:
                w.set(error=gone)
        if not retry:
            self._close_subs()
            if not self._closing:
                self._report(gone)
            return False
        log.warning("mphub: connection to %s lost (%s); reconnecting", self.address, error)
        self._call(self.on_disconnected)
        return True

    def _reconnect_loop(self) -> bool:
        first, most = self._wait_range
        wait = first
        attempt = 0
        while self._max_attempts < 0 or attempt < self._max_attempts:
            if self._closed_event.wait(wait * (0.5 + random.random())):
                break
            attempt += 1
            wait = min(wait * 2, most)
            try:
                sock = open_socket(self.address, self._authkey, self._timeout)
            except AuthenticationError as e:
                self._give_up(e)
                return False
            except (OSError, MphubError) as e:
                log.info("mphub: reconnect attempt %d to %s failed: %s", attempt, self.address, e)
                continue
            if self._restore(sock):
                self.reconnects += 1
                log.warning("mphub: reconnected to %s", self.address)
                self._call(self.on_reconnected)
                return True
        self._give_up(ConnectionClosed(f"gave up reconnecting to {self.address} after {attempt} attempts"))
        return False

    def _restore(self, sock: socket.socket) -> bool:
        """Resubscribe every key, then send the publishes buffered meanwhile."""
        with self._slock:
            with self._wlock:
                if self._closing:
                    sock.close()
                    return False
                restore = restore_frames(self._keys, self._protocol)
                ops = self._metrics.batch.take(everything=True)
                if ops:
                    restore += frame(pickle.dumps(("$metrics", ops), self._protocol))
                self._acks.extend([None] * len(self._keys))
                data = restore + bytes(self._wbuf)
                self._wbuf = bytearray()
                self._flush_pending = False
                self._sock = sock
                self._connected = True
                self._state.notify_all()
            try:
                sock.sendall(data)
            except OSError as e:
                log.warning("mphub: lost the new connection while restoring: %s", e)
        return True

    def _give_up(self, error: BaseException) -> None:
        with self._wlock:
            self._lost = error
            self._state.notify_all()
        self._close_subs()
        if not self._closing:
            self._report(error)

    # ------------------------------------------------------------------ errors, closing

    def _close_subs(self) -> None:
        with self._wlock:
            subs = list(self._subs)
        for s in subs:
            s._close()

    def close(self, timeout: float = 5.0) -> None:
        """Send what is buffered, say goodbye, wait for the broker to finish, close.

        Nothing published before `close()` is lost on a clean close. Queued messages stay
        readable from their subscriptions; callbacks finish what is queued.
        """
        self._metrics.stop()
        try:
            self._metrics.send()
        except MphubError:
            pass  # disconnected for good: nothing can carry them
        with self._wlock:
            if self._closing:
                return
            self._closing = True
            connected = self._connected
            if connected:
                self._wbuf += frame(_CLOSE)
        self._closed_event.set()
        self._wake.set()
        if connected:
            self._send_now()
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if self._reader is not threading.current_thread():
            self._reader.join(timeout)
        try:
            self._sock.close()
        except OSError:
            pass
        self._close_subs()
        with self._wlock:
            subs = list(self._subs)
        for s in subs:
            s._join(timeout)

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: Optional[AddressLike] = None, **options: Any) -> Hub:
    """Connect to a broker: `mphub.connect("127.0.0.1:6000", authkey=b"...")`. See `Hub`."""
    return Hub(address, **options)
