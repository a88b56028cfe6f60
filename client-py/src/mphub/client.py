"""`Hub`: the threaded client. One connection, buffered both ways, many subscriptions.

It drives `_core.Core` with threads: a reader pulls big chunks off the socket and hands them to
the core (it also reconnects); a flusher sends the write buffer as soon as it gets the GIL, so
under load many publishes go out in one `send`; a timer thread (keepalive, worker metrics)
starts with the connection, or with the first worker metric when keepalive is off; it never
writes to the socket itself, so a write stuck on a broker that stopped reading cannot stop it
from noticing. Callback subscriptions each have a worker thread.
"""

from __future__ import annotations

import logging
import pickle
import select
import socket
import threading
import time
from typing import Any, Callable, Optional

from . import _topics
from ._address import AddressLike
from ._connect import open_socket
from ._core import NOW, SOON, Lock
from ._hub import HubBase
from .errors import MphubError, TimeoutError
from .subscription import Callback, Link, Subscription

log = logging.getLogger("mphub")
_dumps = pickle.dumps
_monotonic = time.monotonic
_IDLE = 0.0005  # seconds without a publish after which the next is sent from the caller
_DEFER = 0.05  # how long the reader thread leaves the socket to a consumer that read last
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_DIRECT = bool(_DONTWAIT) and hasattr(select, "poll")  # consumers may read for themselves


def _poller(sock: socket.socket) -> Any:
    p = select.poll()
    p.register(sock, select.POLLIN)
    return p


class EventWaiter:
    """One answer awaited by one thread (`_core.Waiter` with a `threading.Event`)."""

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


class Hub(HubBase[EventWaiter]):
    """A connection to an mphub broker. Use `mphub.connect(...)`; close it (or use `with`).

    Options: `help(mphub.Hub.__init__)`, or the README.
    """

    _idle = _IDLE

    def _setup(self) -> None:
        self._slock = threading.Lock()  # one sender on the socket at a time
        self._read_lock = threading.Lock()  # one reader of the socket at a time
        self._direct_ok = False
        self._direct_until = 0.0
        self._wake = threading.Event()
        self._closed_event = threading.Event()
        self._timer: Optional[threading.Thread] = None
        self._timer_lock = threading.Lock()
        self._timer_wake = threading.Event()
        self._link = Link(self._report, self._unsubscribe, self._read_for)
        self._restore(open_socket(self.address, self._authkey, self._timeout))
        self._reader = threading.Thread(target=self._read_forever, name="mphub-reader", daemon=True)
        self._flusher = threading.Thread(target=self._flush_forever, name="mphub-flusher", daemon=True)
        self._reader.start()
        self._flusher.start()

    def _new_waiter(self) -> EventWaiter:
        return EventWaiter()

    def _core_lock(self) -> Lock:
        return threading.Lock()  # publishers, consumers, the reader and the timer all call

    # ------------------------------------------------------------------ publishing

    def publish(self, topic: str, payload: Any) -> None:
        """Send `(topic, payload)` to every matching subscriber. Buffered; see `flush()`."""
        if topic not in _topics._valid_topics:
            _topics.check_topic(topic)
        todo = self._core.put(_dumps((topic, payload), self._protocol), _monotonic())
        if todo == NOW:
            self._send_now()
        elif todo == SOON:
            self._wake.set()

    def _send_now(self) -> None:
        """Write out the buffer (in the calling thread)."""
        with self._slock:
            data = self._core.take_output()
            if data is not None:
                self._send(data)

    def _send(self, data: bytearray) -> None:
        try:
            self._sock.sendall(data)
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
        core = self._core
        ready = core.when_connected()
        if ready is not None:
            ready.wait(timeout, "flush (waiting for the reconnect)")
        token, pong = core.ping()
        try:
            self._send_now()
            pong.wait(timeout, "flush")
        finally:
            core.forget_pong(token)

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
        sub = Subscription(self._link, pattern, group, max_pending or self.max_pending, callback)
        self._confirm(sub, self._core.add(sub), timeout)
        return sub

    def _confirm(self, sub: Any, ack: Optional[EventWaiter], timeout: Optional[float]) -> None:
        """Send a `$sub` the core buffered and wait for the broker's answer."""
        if ack is None:
            return
        self._send_now()
        try:
            ack.wait(timeout, f"subscribe {sub.pattern!r}")
        except BaseException as e:
            if self._core.failed(sub, e):
                raise

    def _unsubscribe(self, sub: Subscription) -> None:
        if self._core.remove(sub):
            self._send_now()

    # ------------------------------------------------------------------ request / reply

    def request(self, topic: str, payload: Any, timeout: float = 2.0) -> Any:
        """Publish `{"reply_to": inbox, "body": payload}` and return the first reply's payload."""
        core = self._core
        reply_to, reply, inbox_ack = core.expect_reply()
        try:
            self._confirm(core.inbox, inbox_ack, 5.0)
            self.publish(topic, {"reply_to": reply_to, "body": payload})
            self._send_now()
            return reply.wait(timeout, f"request on {topic!r}")
        finally:
            core.forget_reply(reply_to)

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

    # ------------------------------------------------------------------ worker metrics timer

    def _start_timer(self) -> None:
        with self._timer_lock:
            if self._timer is None:
                self._timer = threading.Thread(target=self._tick_forever, name="mphub-timer", daemon=True)
                self._timer.start()
            else:
                self._timer_wake.set()

    def _tick_forever(self) -> None:
        while True:
            self._timer_wake.clear()
            delay = self._core.tick(_monotonic())
            self._wake.set()  # the flusher writes what the tick buffered
            if delay is None:
                return
            self._timer_wake.wait(delay)

    def _kill(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end; a stuck send fails
        except (OSError, AttributeError):
            pass

    # ------------------------------------------------------------------ reading

    def _read_forever(self) -> None:
        while True:
            sock = self._sock
            error = self._read(sock)
            self._direct_ok = False
            retry = self._lost(error)
            try:
                sock.shutdown(socket.SHUT_RDWR)  # a send blocked on it returns now
            except OSError:
                pass
            with self._slock:  # never under a send: the descriptor could be reused
                sock.close()
            if not retry or not self._reconnect():
                return

    # Reading. The reader thread waits for data without holding `_read_lock` and reads with it.
    # A consumer whose queue is empty (`Subscription.next`) may take the lock and read for
    # itself (`_read_for`): a message then reaches it with no hand-off between threads, which
    # is what keeps latency at the stock client's and saves the GIL ping-pong under load.

    def _read(self, sock: socket.socket) -> BaseException:
        with self._read_lock:
            self._core.start_reading()
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
            if outcome is not None:
                return outcome

    def _read_once(self, sock: socket.socket, flags: Optional[int]) -> Optional[BaseException]:
        """One read and its delivery (caller holds `_read_lock`); an error ends the connection."""
        size = self._core.read_size()
        try:
            data = sock.recv(size, _DONTWAIT) if flags is not None else sock.recv(size)
        except BlockingIOError:
            return None
        except OSError as e:
            return e
        return self._core.receive(data)

    def _read_for(self, timeout: float) -> bool:
        """Read on the caller's thread for up to `timeout` seconds; False if it may not now."""
        if not self._direct_ok or not self._core.connected or not self._read_lock.acquire(False):
            return False
        try:
            sock = self._sock
            if not self._direct_ok or not self._core.connected:
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

    # ------------------------------------------------------------------ connecting again

    def _reconnect(self) -> bool:
        plan = self._core.reconnect_plan()
        for delay in plan:
            if self._closed_event.wait(delay):
                continue  # closing: the plan gives up
            try:
                sock = open_socket(self.address, self._authkey, self._timeout)
            except (OSError, MphubError) as e:
                plan.failed(e)
                continue
            if self._restore(sock):
                self._restored()
                return True
        return False

    def _restore(self, sock: socket.socket) -> bool:
        """Make `sock` the connection and send what goes first on it; False if closing."""
        with self._slock:
            self._sock = sock
            first = self._core.on_connect()
            if first is None:
                sock.close()
                return False
            self._send(first)
        return True

    # ------------------------------------------------------------------ closing

    def close(self, timeout: float = 5.0) -> None:
        """Send what is buffered, say goodbye, wait for the broker to finish, close.

        Nothing published before `close()` is lost on a clean close. Queued messages stay
        readable from their subscriptions; callbacks finish what is queued.
        """
        last = self._core.close()
        if last is None:
            return
        self._closed_event.set()
        self._wake.set()
        self._timer_wake.set()
        if last:
            with self._slock:
                self._send(last)
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
        for s in self._core.close_subscriptions():
            if isinstance(s, Subscription):
                s._join(timeout)

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: Optional[AddressLike] = None, **options: Any) -> Hub:
    """Connect to a broker: `mphub.connect("127.0.0.1:6000", authkey=b"...")`. See `Hub`."""
    return Hub(address, **options)
