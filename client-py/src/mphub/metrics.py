"""Worker metrics: counters, gauges, histograms and summaries the broker aggregates.

    jobs = hub.counter("jobs_done_total", "Jobs finished", labels=("queue",))
    jobs.labels(queue="fast").inc()
    inflight = hub.gauge("jobs_inflight", "Jobs in progress", mode="livesum")
    inflight.inc(); ...; inflight.dec()
    seconds = hub.histogram("job_seconds", "Job duration", buckets=(0.1, 1, 10))
    seconds.observe(0.42)

Both `mphub.Hub` and `mphub.aio.Hub` offer them. Updates are batched per hub and sent as one
`("$metrics", ops)` frame on a short interval, on `hub.flush()` and on `hub.close()` (never
lost on a clean close). Counter increments in one batch are summed; gauges are tracked here and
sent as their current value (so a reconnect restores them); every observation is sent.
PROTOCOL §10 is the wire.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED = {"le", "quantile", "conn"}
_LIVE_MODES = ("liveall", "livesum", "livemax", "livemin", "livemostrecent")
MODES = (*_LIVE_MODES, "sum", "max", "min", "mostrecent", "all")  # prometheus_client's ten
Key = Tuple[str, Tuple[str, ...]]
OpTuple = Tuple[Any, ...]


class Batch:
    """Pending metric ops of one hub (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._declares: Dict[str, OpTuple] = {}  # every family, to re-declare after a reconnect
        self._new: List[OpTuple] = []
        self._incs: Dict[Key, List[Any]] = {}
        self._gauges: Dict[Key, List[Any]] = {}  # key -> [labels, value, dirty]
        self._observes: List[OpTuple] = []

    def declare(self, op: OpTuple) -> None:
        with self._lock:
            if op[1] in self._declares:
                if self._declares[op[1]] != op:
                    raise ValueError(f"metric {op[1]!r} is already declared differently on this hub")
                return
            self._declares[op[1]] = op
            self._new.append(op)

    def inc(self, name: str, key: Tuple[str, ...], labels: Dict[str, str], amount: float) -> None:
        with self._lock:
            slot = self._incs.get((name, key))
            if slot is None:
                self._incs[(name, key)] = [labels, amount]
            else:
                slot[1] += amount

    def gauge(self, name: str, key: Tuple[str, ...], labels: Dict[str, str], op: str, x: float) -> None:
        with self._lock:
            slot = self._gauges.setdefault((name, key), [labels, 0.0, True])
            slot[1] = x if op == "set" else slot[1] + (x if op == "inc" else -x)
            slot[2] = True

    def observe(self, name: str, labels: Dict[str, str], x: float) -> None:
        with self._lock:
            self._observes.append(("observe", name, labels, x))

    def take(self, everything: bool = False) -> List[OpTuple]:
        """The ops to send now; `everything` also re-declares and re-sets (after a reconnect)."""
        with self._lock:
            ops: List[OpTuple] = list(self._declares.values()) if everything else self._new
            self._new = []
            ops += [("inc", n, labels, amount) for (n, _), (labels, amount) in self._incs.items()]
            self._incs = {}
            for (n, _), slot in self._gauges.items():
                if slot[2] or everything:
                    ops.append(("set", n, slot[0], slot[1]))
                    slot[2] = False
            ops += self._observes
            self._observes = []
            return ops

    def __bool__(self) -> bool:
        return bool(self._new or self._incs or self._observes or any(s[2] for s in self._gauges.values()))


class _Child:
    """One series: a family with its label values."""

    __slots__ = ("_family", "_key", "_labels")

    def __init__(self, family: Family, key: Tuple[str, ...], labels: Dict[str, str]) -> None:
        self._family = family
        self._key = key
        self._labels = labels

    def inc(self, amount: float = 1.0) -> None:
        f = self._family
        if f.kind == "counter":
            if amount < 0:
                raise ValueError("a counter only goes up: inc() takes an amount >= 0")
            f._batch.inc(f.name, self._key, self._labels, amount)
        elif f.kind == "gauge":
            f._batch.gauge(f.name, self._key, self._labels, "inc", amount)
        else:
            raise TypeError(f"inc() does not apply to a {f.kind}")
        f._changed()

    def dec(self, amount: float = 1.0) -> None:
        self._gauge_only("dec", amount)

    def set(self, value: float) -> None:
        self._gauge_only("set", value)

    def observe(self, value: float) -> None:
        f = self._family
        if f.kind not in ("histogram", "summary"):
            raise TypeError(f"observe() does not apply to a {f.kind}")
        f._batch.observe(f.name, self._labels, float(value))
        f._changed()

    def _gauge_only(self, op: str, x: float) -> None:
        f = self._family
        if f.kind != "gauge":
            raise TypeError(f"{op}() applies to gauges, not to a {f.kind}")
        f._batch.gauge(f.name, self._key, self._labels, op, float(x))
        f._changed()


class Family:
    """A declared metric; `.labels(**values)` picks a series, or call the methods directly
    when it has no labels (as with prometheus_client)."""

    def __init__(
        self,
        batch: Batch,
        changed: Any,
        name: str,
        kind: str,
        help: str,
        labels: Sequence[str],
        options: Dict[str, Any],
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name) or name.startswith("mphub_"):
            raise ValueError(f"metric name {name!r}: [a-zA-Z_:][a-zA-Z0-9_:]*, not starting mphub_")
        for label in labels:
            if not _LABEL.match(label) or label.startswith("__") or label in _RESERVED:
                raise ValueError(f"label {label!r} is not allowed (reserved: le, quantile, conn)")
        self.name, self.kind, self.help = name, kind, help
        self.labelnames = tuple(labels)
        self._batch = batch
        self._changed = changed
        self._children: Dict[Tuple[str, ...], _Child] = {}
        batch.declare(("declare", name, kind, help, self.labelnames, options))

    def labels(self, *values: str, **named: str) -> _Child:
        if values and named:
            raise ValueError("give label values by position or by name, not both")
        if named:
            if set(named) != set(self.labelnames):
                raise ValueError(f"{self.name}: labels must be exactly {self.labelnames}")
            values = tuple(str(named[n]) for n in self.labelnames)
        elif len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels must be exactly {self.labelnames}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = _Child(self, key, dict(zip(self.labelnames, key)))
        return child

    def _only(self) -> _Child:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use .labels(...) first")
        return self.labels()

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._only().dec(amount)

    def set(self, value: float) -> None:
        self._only().set(value)

    def observe(self, value: float) -> None:
        self._only().observe(value)


def options(
    kind: str, mode: Optional[str] = None, buckets: Optional[Sequence[float]] = None
) -> Dict[str, Any]:
    """The declare op's options dict, checked."""
    if kind == "gauge":
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        return {"mode": mode}
    if kind == "histogram" and buckets is not None:
        b = [float(x) for x in buckets]
        if b and b[-1] == float("inf"):
            b.pop()
        if not b:
            # As prometheus_client's Histogram: +Inf alone counts nothing a _count does not.
            raise ValueError("a histogram needs at least one bucket besides +Inf")
        if any(x >= y for x, y in zip(b, b[1:])):
            raise ValueError("buckets must be strictly increasing")
        return {"buckets": b}
    return {}


class HubMetrics:
    """A hub's metric families and their pending batch; no thread of its own.

    `on_start` is called once, at the first update: the hub then sends the batch every
    interval (`_core.Core.tick`), as well as on flush, on close and after a reconnect.
    """

    def __init__(self, on_start: Callable[[], None]) -> None:
        self.batch = Batch()
        self.started = False
        self._on_start = on_start
        self._lock = threading.Lock()
        self._families: Dict[str, Family] = {}

    def family(self, name: str, kind: str, help: str, labels: Sequence[str], opts: Dict[str, Any]) -> Family:
        f = self._families.get(name)
        if f is not None and (f.kind, f.help, f.labelnames) == (kind, help, tuple(labels)):
            return f
        f = Family(self.batch, self._changed, name, kind, help, labels, opts)
        self._families[name] = f
        return f

    def _changed(self) -> None:
        if not self.started:
            with self._lock:
                first, self.started = not self.started, True
            if first:
                self._on_start()

    def take(self, everything: bool = False) -> List[OpTuple]:
        """The ops to send now (everything: all declarations and gauges again, after a reconnect)."""
        if everything or self.batch:
            return self.batch.take(everything)
        return []
