"""`mphub.aio`: the same API for asyncio.

    from mphub import aio
    async with await aio.connect("127.0.0.1:6000", authkey=b"secret") as hub:
        sub = await hub.subscribe("sensors.>")
        await hub.publish("sensors.temp", {"v": 21.5})
        async for msg in sub: ...

It drives the same `_core.Core` as the threaded hub, with one reader task per hub; publishes
collect in the core's buffer, written once per event-loop turn.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Union

from . import _topics
from ._address import AddressLike
from ._connect import open_streams
from ._core import NO_LOCK, NOW, SOON, Lock
from ._hub import HubBase
from .errors import MphubError, SubscriptionClosed, TimeoutError
from .message import Message
from .subscription import Link, SubscriptionBase

AsyncCallback = Callable[[Message], Union[Awaitable[Any], Any]]
log = logging.getLogger("mphub")
_dumps = pickle.dumps
_new = tuple.__new__


class FutureWaiter:
    """One answer awaited by one task (`_core.Waiter` with an asyncio future)."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def set(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        f = self._future
        if f.done():  # timed out and cancelled: nobody waits any more
            return
        if error is not None:
            f.set_exception(error)
        else:
            f.set_result(value)

    async def wait(self, timeout: Optional[float], what: str) -> Any:
        try:
            return await asyncio.wait_for(self._future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"{what}: no answer within {timeout}s") from None


def _no_direct_reads(timeout: float) -> bool:
    return False  # the reader task always reads; a consumer awaits it


class Subscription(SubscriptionBase):
    """Messages matching `pattern`; `await sub.next(timeout=)` or `async for msg in sub`.

    Bounded like the threaded one: past `max_pending`, new messages are dropped, counted in
    `dropped`, and the next `next()` raises `SlowConsumerError` once. With a callback (sync
    or async), a task hands it every message.
    """

    _label = "aio.Subscription"

    _waiter: Optional[asyncio.Future[None]] = None  # what `next()` awaits while the queue is empty
    _task: Optional[asyncio.Task[None]] = None  # the callback's

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def next(self, timeout: Optional[float] = None) -> Message:
        """The next message; raises TimeoutError, SubscriptionClosed or SlowConsumerError."""
        if self.dropped > self._reported or self._callback is not None:
            self._check_next()
        return await self._take(timeout)

    async def _take(self, timeout: Optional[float]) -> Message:
        while not self._queue:
            if self._closed:
                raise SubscriptionClosed(f"{self!r} is closed")
            self._waiter = asyncio.get_running_loop().create_future()
            self._waiting = True
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"no message on {self.pattern!r} within {timeout}s") from None
            finally:
                self._waiter = None
                self._waiting = False
        return _new(Message, self._queue.popleft())

    def __aiter__(self) -> AsyncIterator[Message]:
        """Messages as they come; ends once unsubscribed (or the hub closed) and drained."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.next()
            except SubscriptionClosed:
                return

    async def unsubscribe(self) -> None:
        """Stop receiving; what is queued can still be taken, then iteration ends."""
        if not self._closed:
            await self._link.unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()

    async def _run(self, callback: AsyncCallback) -> None:
        while True:  # not `next()`: drops were reported to on_error, and must not end the task
            try:
                msg = await self._take(None)
            except SubscriptionClosed:
                return
            try:
                result = callback(msg)
                if inspect.isawaitable(result):
                    await result
            except Exception as e:
                log.exception("mphub: callback for %r raised", self.pattern)
                self._link.report(e, log_it=False)


class Hub(HubBase[FutureWaiter]):
    """An asyncio connection to an mphub broker: `hub = await mphub.aio.connect(...)`.

    Options and methods as `mphub.Hub`; those that wait for the broker are coroutines
    (`publish`, `flush`, `subscribe`, `request`, `serve`, `close`), the worker-metrics ones
    (`counter`, `gauge`, `histogram`, `summary`) are not.
    """

    _name = "mphub.aio.Hub"
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter

    def _setup(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("make an mphub.aio.Hub in a coroutine: `await aio.connect(...)`") from None
        self._closed = asyncio.Event()
        self._task: Optional[asyncio.Task[None]] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._link = Link(self._report, self._unsubscribe, _no_direct_reads)

    def _new_waiter(self) -> FutureWaiter:
        return FutureWaiter()

    def _core_lock(self) -> Lock:
        return NO_LOCK  # every call comes from the loop's thread

    async def _start(self) -> Hub:
        reader, writer = await open_streams(self.address, self._authkey, self._timeout)
        self._restore(reader, writer)
        self._task = self._loop.create_task(self._read_forever())
        return self

    # ------------------------------------------------------------------ publishing

    async def publish(self, topic: str, payload: Any) -> None:
        """Send `(topic, payload)`; buffered and written once per loop turn (past `flush_size`
        at once, awaiting `drain()`)."""
        if topic not in _topics._valid_topics:
            _topics.check_topic(topic)
        todo = self._core.put(_dumps((topic, payload), self._protocol), 0.0)
        if todo == NOW:
            self._write()
            await self._drain()
        elif todo == SOON:
            self._loop.call_soon(self._write)

    def _write(self) -> None:
        data = self._core.take_output()
        if data is not None:
            self._writer.write(data)

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except OSError:
            pass  # the connection is lost: the reader task sees it and handles it

    async def flush(self, timeout: Optional[float] = 5.0) -> None:
        """Return once the broker has routed everything published before (a `$ping` barrier)."""
        core = self._core
        ready = core.when_connected()
        if ready is not None:
            await ready.wait(timeout, "flush (waiting for the reconnect)")
        token, pong = core.ping()
        try:
            self._write()
            await self._drain()
            await pong.wait(timeout, "flush")
        finally:
            core.forget_pong(token)

    # ------------------------------------------------------------------ subscribing

    async def subscribe(
        self,
        pattern: str,
        *,
        group: Optional[str] = None,
        callback: Optional[AsyncCallback] = None,
        max_pending: Optional[int] = None,
        timeout: Optional[float] = 5.0,
    ) -> Subscription:
        """Subscribe; returns once the broker has it. `callback` (sync or async) runs in a task."""
        _topics.check_pattern(pattern)
        _topics.check_group(group)
        sub = Subscription(self._link, pattern, group, max_pending or self.max_pending, callback)
        await self._confirm(sub, self._core.add(sub), timeout)
        if callback is not None:
            sub._task = self._loop.create_task(sub._run(callback))
        return sub

    async def _confirm(self, sub: Any, ack: Optional[FutureWaiter], timeout: Optional[float]) -> None:
        """Write a `$sub` the core buffered and wait for the broker's answer."""
        if ack is None:
            return
        self._write()
        try:
            await ack.wait(timeout, f"subscribe {sub.pattern!r}")
        except BaseException as e:
            if self._core.failed(sub, e):
                raise

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._core.remove(sub):
            self._write()

    # ------------------------------------------------------------------ request / reply

    async def request(self, topic: str, payload: Any, timeout: float = 2.0) -> Any:
        """Publish `{"reply_to": inbox, "body": payload}` and return the first reply's payload."""
        core = self._core
        reply_to, reply, inbox_ack = core.expect_reply()
        try:
            await self._confirm(core.inbox, inbox_ack, 5.0)
            await self.publish(topic, {"reply_to": reply_to, "body": payload})
            return await reply.wait(timeout, f"request on {topic!r}")
        finally:
            core.forget_reply(reply_to)

    async def serve(
        self, topic: str, handler: Callable[[Any], Any], *, group: Optional[str] = None
    ) -> Subscription:
        """Answer requests on `topic` with `handler(body)` (sync or async); returns the Subscription."""

        async def respond(msg: Message) -> None:
            p = msg.payload
            is_request = isinstance(p, dict) and isinstance(p.get("reply_to"), str)
            result = handler(p.get("body") if is_request else p)
            if inspect.isawaitable(result):
                result = await result
            if is_request:
                await self.publish(p["reply_to"], result)

        return await self.subscribe(topic, group=group, callback=respond)

    # ------------------------------------------------------------------ worker metrics timer

    def _start_timer(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._tick_now)
        except RuntimeError:
            pass  # the loop has ended: nothing could send the metrics any more

    def _tick_now(self) -> None:
        """One timer chain at most: a tick asked for now replaces the one scheduled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._tick()

    def _tick(self) -> None:
        self._timer = None
        delay = self._core.tick(self._loop.time())
        self._write()
        if delay is not None and not self._core.closing:
            self._timer = self._loop.call_later(delay, self._tick)

    def _kill(self) -> None:
        self._writer.transport.abort()  # the reader task sees the end and reconnects

    # ------------------------------------------------------------------ reading

    async def _read_forever(self) -> None:
        while True:
            error = await self._read()
            retry = self._lost(error)
            self._writer.close()
            if not retry or not await self._reconnect():
                return

    async def _read(self) -> BaseException:
        core = self._core
        core.start_reading()
        read = self._reader.read
        while True:
            try:
                data = await read(core.read_size())
            except (OSError, asyncio.IncompleteReadError) as e:
                return e
            error = core.receive(data)
            if error is not None:
                return error

    # ------------------------------------------------------------------ connecting again

    async def _reconnect(self) -> bool:
        plan = self._core.reconnect_plan()
        for delay in plan:
            try:
                await asyncio.wait_for(self._closed.wait(), delay)
                continue  # closing: the plan gives up
            except asyncio.TimeoutError:
                pass
            try:
                reader, writer = await open_streams(self.address, self._authkey, self._timeout)
            except (OSError, MphubError) as e:
                plan.failed(e)
                continue
            if self._restore(reader, writer):
                self._restored()
                return True
        return False

    def _restore(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Make (reader, writer) the connection and write what goes first; False if closing."""
        self._reader, self._writer = reader, writer
        first = self._core.on_connect()
        if first is None:
            writer.close()
            return False
        writer.write(first)
        return True

    # ------------------------------------------------------------------ closing

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is buffered, say goodbye, wait for the broker to finish, close."""
        last = self._core.close()
        if last is None:
            return
        self._closed.set()
        if self._timer is not None:
            self._timer.cancel()
        if last:
            self._writer.write(last)
            await self._drain()
            try:
                if self._writer.can_write_eof():
                    self._writer.write_eof()
            except OSError:
                pass
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
        self._writer.close()
        subs = self._core.close_subscriptions()
        tasks = [s._task for s in subs if isinstance(s, Subscription) and s._task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(address: Optional[AddressLike] = None, **options: Any) -> Hub:
    """`hub = await mphub.aio.connect("127.0.0.1:6000", authkey=b"...")`; options as `mphub.Hub`."""
    return await Hub(address, **options)._start()


__all__ = ["Hub", "Message", "Subscription", "connect"]
