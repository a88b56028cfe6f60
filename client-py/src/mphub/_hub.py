"""What both hubs are above the core: the options, worker metrics, the state they show, and how
errors and callbacks reach the user.

`HubBase.__init__` takes every option, once, for `mphub.Hub` and `mphub.aio.Hub` alike; each
flavour adds its I/O (`_setup`, the methods that write and wait) around one `_core.Core`.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from typing import Any, Callable, Generic, Optional, Sequence, Tuple

from ._address import AddressLike, TlsOption, parse
from ._connect import authkey_from_env
from ._core import Core, Lock, W
from ._policy import payload_policy
from .metrics import Family, options

log = logging.getLogger("mphub")

MAX_NAME = 64  # characters in a connection's name (PROTOCOL §4, `$hello`)


def default_name() -> str:
    """The program's name and pid, as `worker.py[4242]`: what a hub calls its connection
    unless told otherwise (`python -m pkg` gives `pkg`, `python -c` gives `python`)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    prog = ""
    if spec is not None and getattr(spec, "name", None):
        prog = str(spec.name)
        if prog.endswith(".__main__"):
            prog = prog[: -len(".__main__")]
    elif sys.argv and sys.argv[0] not in ("", "-c"):
        prog = os.path.basename(sys.argv[0])
    prog = "".join(c if c.isprintable() else "?" for c in prog) or "python"
    pid = f"[{os.getpid()}]"
    return prog[: MAX_NAME - len(pid)] + pid


def check_name(name: str) -> str:
    """`name` if the broker will take it: a str of 1 to 64 printable characters."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    if not 0 < len(name) <= MAX_NAME:
        raise ValueError(f"name must be 1 to {MAX_NAME} characters, not {len(name)}")
    if not name.isprintable():
        raise ValueError(f"name must be printable: {name!r}")
    return name


class HubBase(Generic[W]):
    """A connection to an mphub broker, either flavour; the options are `__init__`'s."""

    _name = "mphub.Hub"
    # Seconds without a publish after which the next one is written at once (`Core.put`).
    _idle = float("inf")

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
        name: Optional[str] = None,
        ping_interval: float = 20.0,
        max_outstanding_pings: int = 2,
        payloads: str = "any",
        allow_globals: Sequence[str] = (),
        tls: TlsOption = None,
    ) -> None:
        """Every option of both hubs, keyword-only and optional:

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
        name               what the broker's logs and status page call this connection (sent
                           as `$hello` on every connect); default the program and its pid,
                           `worker.py[4242]`. 1 to 64 printable characters
        ping_interval      seconds without anything from the broker after which a `$ping` is
                           sent (20.0; 0 turns keepalive off)
        max_outstanding_pings   unanswered pings after which, one `ping_interval` later, the
                           connection counts as dead and is closed and reconnected as after
                           any loss (2): a broker that stops answering is noticed within
                           `ping_interval * (max_outstanding_pings + 1)`
        payloads           "any" (plain pickle.loads) or "data": unpickle nothing that imports a
                           global outside `allow_globals`; a refused message is counted in its
                           subscription's `refused` and reported to `on_error` as
                           `PayloadRefused` ("any")
        allow_globals      `module.qualname` names a "data" payload may import (())
        tls                an `ssl.SSLContext` for a TLS connection (a "tls://host:port" address
                           without one uses `ssl.create_default_context()`: the system's CAs,
                           certificate and host name verified); True for that default
        """
        self.address = parse(address, tls)
        self.max_pending = max_pending
        self.on_disconnected = on_disconnected
        self.on_reconnected = on_reconnected
        self.on_error = on_error
        self.reconnects = 0
        if ping_interval < 0 or max_outstanding_pings < 0:
            raise ValueError("ping_interval and max_outstanding_pings must be >= 0")
        self.name = check_name(name) if name is not None else default_name()
        self._authkey = authkey_from_env(authkey)
        self._timeout = connect_timeout
        self._protocol = pickle_protocol
        policy = payload_policy(payloads, allow_globals)
        self._core: Core[W] = Core(
            self._new_waiter,
            self._report,
            self._start_timer,
            self._core_lock(),
            address=self.address,
            idle=self._idle,
            max_frame=max_frame,
            flush_size=flush_size,
            reconnect=reconnect,
            max_reconnect_attempts=max_reconnect_attempts,
            reconnect_wait=reconnect_wait,
            reconnect_buffer=reconnect_buffer,
            pickle_protocol=pickle_protocol,
            metrics_interval=metrics_interval,
            name=self.name,
            ping_interval=ping_interval,
            max_outstanding_pings=max_outstanding_pings,
            kill=self._kill,
            loads=pickle.loads if policy is None else policy.loads,
        )
        self._setup()

    # What each flavour provides.
    def _setup(self) -> None:
        """Called last in `__init__`: the threaded hub connects here."""
        raise NotImplementedError

    def _new_waiter(self) -> W:
        raise NotImplementedError

    def _core_lock(self) -> Lock:
        """`threading.Lock()`, or `NO_LOCK` if every call comes from one thread."""
        raise NotImplementedError

    def _start_timer(self) -> None:
        """Start calling `Core.tick` now, or call it now if the timer already runs (it has new
        work); may be called from any thread."""
        raise NotImplementedError

    def _kill(self) -> None:
        """Close the connection now (keepalive found it dead): the reader then sees the loss
        and reconnects as after any other. May be called from any thread."""
        raise NotImplementedError

    def __repr__(self) -> str:
        core = self._core
        state = "connected" if core.connected else "closed" if core.closing else "disconnected"
        return f"<{self._name} {self.address} {state}>"

    @property
    def is_connected(self) -> bool:
        """True while the connection is up (False while reconnecting and after close)."""
        return self._core.connected

    @property
    def max_payload(self) -> Optional[int]:
        """The largest pickled publish, in bytes, that always reaches the cluster's other nodes
        (the NATS server's `max_payload` less the node's own headers), as the node this hub is
        connected to reported it in its answer to `$hello`; None outside a cluster, before that
        answer, or when the hub sends no `$hello` (`name=None`). A larger publish may reach that
        node's subscribers only, and `publish` warns of it (`MaxPayloadWarning`)."""
        return self._core.max_payload

    # ------------------------------------------------------------------ worker metrics

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Family:
        """A counter the broker sums over every worker (PROTOCOL §10); see `mphub.metrics`."""
        return self._core.metrics.family(name, "counter", help, labels, options("counter"))

    def gauge(self, name: str, help: str, labels: Sequence[str] = (), mode: str = "liveall") -> Family:
        """A gauge combined over workers by `mode` (liveall, livesum, max, mostrecent, ...)."""
        return self._core.metrics.family(name, "gauge", help, labels, options("gauge", mode=mode))

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Optional[Sequence[float]] = None
    ) -> Family:
        """A histogram the broker sums over every worker."""
        opts = options("histogram", buckets=buckets)
        return self._core.metrics.family(name, "histogram", help, labels, opts)

    def summary(self, name: str, help: str, labels: Sequence[str] = ()) -> Family:
        """A summary (count and sum) the broker sums over every worker."""
        return self._core.metrics.family(name, "summary", help, labels, options("summary"))

    # ------------------------------------------------------------------ errors and callbacks

    def _report(self, error: BaseException, log_it: bool = True) -> None:
        """Tell `on_error` of an error no call is waiting for (else log it)."""
        if self.on_error is not None:
            self._call(self.on_error, error)
        elif log_it:
            log.error("mphub: %s", error)

    def _call(self, fn: Optional[Callable[..., Any]], *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("mphub: callback %r raised", fn)

    def _lost(self, error: BaseException) -> bool:
        """The connection ended: True if the driver should now reconnect."""
        retry = self._core.lose(error)
        if retry:
            self._call(self.on_disconnected)
        return retry

    def _restored(self) -> None:
        """A reconnect is complete: every key and what was buffered is written."""
        self.reconnects += 1
        log.warning("mphub: reconnected to %s", self.address)
        self._call(self.on_reconnected)
