"""The core's `$hello` and keepalive, on a clock the test holds: what is sent when, and when a
silent broker counts as dead."""

import pickle
import threading

import pytest

from mphub import errors
from mphub._core import Core
from mphub._hub import check_name, default_name
from mphub._wire import FrameSplitter, frame


class Waiter:
    def __init__(self):
        self.done, self.value, self.error = False, None, None

    def set(self, value=None, error=None):
        self.done, self.value, self.error = True, value, error


class Sub:
    def __init__(self, pattern, group=None):
        self.pattern, self.group = pattern, group

    def _push_many(self, batch):
        pass

    def _close(self):
        pass


class Driver:
    """A driver with no I/O: counts timer starts and kills; sends nothing by itself."""

    def __init__(self, **options):
        self.reports, self.timers, self.kills = [], 0, 0
        settings = dict(
            address="test",
            idle=0.0005,
            max_frame=1 << 20,
            flush_size=1 << 16,
            reconnect=True,
            max_reconnect_attempts=3,
            reconnect_wait=(0.1, 0.4),
            reconnect_buffer=1024,
            pickle_protocol=pickle.HIGHEST_PROTOCOL,
            metrics_interval=1.0,
        )
        settings.update(options)
        self.core = Core(
            Waiter, self.reports.append, self._timer, threading.Lock(), kill=self._kill, **settings
        )

    def _timer(self):
        self.timers += 1

    def _kill(self):
        self.kills += 1

    def sent(self, data=None):
        data = self.core.take_output() if data is None else data
        return [pickle.loads(b) for b in FrameSplitter(1 << 30).feed(bytes(data or b""))]

    def answer(self, *objs):
        assert self.core.receive(b"".join(frame(pickle.dumps(o)) for o in objs)) is None


def test_a_named_core_says_hello_first_on_every_connect_and_takes_the_ok_in_order():
    d = Driver(name="worker-3")
    d.core.add(Sub("a.>"))  # disconnected: the connect sends its key
    first = d.sent(d.core.on_connect())
    assert first == [("$hello", {"name": "worker-3"}), ("$sub", "a.>")]
    d.answer(("$ok", ("$hello", {"name": "worker-3"})), ("$ok", ("$sub", "a.>")))
    assert d.reports == []
    d.core.lose(errors.ConnectionClosed("gone"))
    assert d.sent(d.core.on_connect())[0] == ("$hello", {"name": "worker-3"})


def test_an_old_broker_refusing_hello_is_not_reported_as_an_error():
    d = Driver(name="w")
    d.core.on_connect()
    d.answer(("$error", "unknown control topic '$hello'"))
    assert d.reports == []


def test_keepalive_pings_only_after_silence_and_declares_death_after_the_limit(caplog):
    d = Driver(ping_interval=10.0, max_outstanding_pings=2)
    d.core.on_connect()
    assert d.timers == 1  # keepalive starts the timer on connect
    t0 = d.core._heard
    assert d.core.tick(t0 + 5) == pytest.approx(5)
    assert d.sent() == []
    # Traffic resets the clock: nothing is due 10 s after the connect any more.
    d.answer(("x", 1))
    heard = d.core._heard
    assert d.core.tick(heard + 9.5) == pytest.approx(0.5)
    assert d.sent() == []
    # Silence: a ping at 10 s, another at 20 s, and dead at 30 s = interval * (max + 1).
    assert d.core.tick(heard + 10) == pytest.approx(10)
    assert [m[0] for m in d.sent()] == ["$ping"]
    d.core.tick(heard + 20)
    assert [m[0] for m in d.sent()] == ["$ping"]
    d.core.tick(heard + 29.9)
    assert d.kills == 0
    d.core.tick(heard + 30)
    assert d.kills == 1
    # The driver's loss path then gives keepalive's reason, not the socket's, and reconnects.
    with caplog.at_level("WARNING", logger="mphub"):
        assert d.core.lose(errors.ConnectionClosed("the broker closed the connection"))
    assert "2 keepalive pings unanswered" in caplog.text
    assert d.core.dead is None


def test_any_frame_resets_the_count_and_the_pongs_match_no_waiter():
    d = Driver(ping_interval=1.0, max_outstanding_pings=1)
    d.core.on_connect()
    heard = d.core._heard
    d.core.tick(heard + 1)
    (ping,) = d.sent()
    d.answer(("$pong", ping[1]))
    assert d.reports == []
    heard = d.core._heard
    d.core.tick(heard + 1)  # one ping out again, not two
    assert len(d.sent()) == 1
    d.core.tick(heard + 1.9)
    assert d.kills == 0
    d.core.tick(heard + 2)
    assert d.kills == 1


def test_keepalive_is_quiet_while_disconnected_and_off_with_a_zero_interval():
    d = Driver(ping_interval=1.0)
    assert d.core.tick(100.0) == 1.0  # never connected
    off = Driver(ping_interval=0.0)
    off.core.on_connect()
    assert off.timers == 0 and off.core.tick(1e9) is None


def test_names_are_checked_as_the_broker_checks_them():
    assert check_name("worker-3 (eu)") == "worker-3 (eu)"
    for bad in ["", "x" * 65, "a\nb"]:
        with pytest.raises(ValueError):
            check_name(bad)
    with pytest.raises(TypeError):
        check_name(3)
    name = default_name()
    assert name.endswith("]") and "[" in name and len(name) <= 64 and name.isprintable()
