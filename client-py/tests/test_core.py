"""The hub core without sockets: what both hubs send, match and decide, fed bytes by hand."""

import pickle
import threading

import pytest

from mphub import errors
from mphub._core import IDLE, NO_LOCK, NOW, SOON, Core
from mphub._wire import FrameSplitter, frame


class Waiter:
    """What a driver's waiter is to the core: something `set` once."""

    def __init__(self):
        self.done, self.value, self.error = False, None, None

    def set(self, value=None, error=None):
        self.done, self.value, self.error = True, value, error


class Sub:
    """A subscription as the core and the dispatch see one."""

    def __init__(self, pattern, group=None):
        self.pattern, self.group = pattern, group
        self.got, self.closed = [], False

    def _push_many(self, batch):
        self.got += batch

    def _close(self):
        self.closed = True


class Hub:
    """A driver with no I/O: the core, what it reported, and how often it asked for a timer."""

    def __init__(self, waiter=Waiter, lock=None, **options):
        self.reports, self.timers = [], 0
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
        self.core = Core(waiter, self.reports.append, self._timer, lock or threading.Lock(), **settings)
        assert self.core.on_connect() == b""

    def _timer(self):
        self.timers += 1

    def sent(self):
        """What the driver would write now, as the objects the broker unpickles."""
        return unpickle(self.core.take_output() or b"")

    def answer(self, *objs):
        """Feed the core frames as the broker would send them."""
        assert self.core.receive(b"".join(frame(pickle.dumps(o)) for o in objs)) is None


def unpickle(data):
    return [pickle.loads(body) for body in FrameSplitter(1 << 30).feed(bytes(data))]


def publish(core, topic, payload, now=100.0):
    return core.put(pickle.dumps((topic, payload)), now)


# ------------------------------------------------------------------ subscriptions and answers


def test_two_subscriptions_to_one_key_send_one_sub_and_one_unsub_after_the_last():
    hub = Hub()
    a, b = Sub("jobs.*"), Sub("jobs.*")
    ack = hub.core.add(a)
    assert hub.core.add(b) is None
    assert hub.sent() == [("$sub", "jobs.*")]
    hub.answer(("$ok", ("$sub", "jobs.*")))
    assert ack.done and ack.error is None

    assert hub.core.remove(a) is False and a.closed
    assert hub.sent() == []
    assert hub.core.remove(b) is True and b.closed
    assert hub.sent() == [("$unsub", "jobs.*")]


def test_a_queue_group_is_a_key_of_its_own():
    hub = Hub()
    hub.core.add(Sub("jobs.*"))
    hub.core.add(Sub("jobs.*", group="w"))
    hub.core.add(Sub("jobs.*", group="w"))
    assert hub.sent() == [("$sub", "jobs.*"), ("$sub", ("jobs.*", "w"))]


def test_answers_are_matched_to_requests_in_order():
    hub = Hub()
    first, second = hub.core.add(Sub("a")), hub.core.add(Sub("b"))
    hub.answer(("$ok", ("$sub", "a")), ("$error", "subscription limit reached"))
    assert first.value == ("$sub", "a") and first.error is None
    assert (
        isinstance(second.error, errors.BrokerError) and second.error.reason == "subscription limit reached"
    )
    assert hub.reports == []


def test_an_error_nobody_waits_for_and_an_unknown_frame_go_to_on_error():
    hub = Hub()
    sub = Sub("x")
    hub.core.add(sub)
    hub.answer(("$ok", ("$sub", "x")))
    hub.core.remove(sub)  # nobody waits for the $unsub's answer
    hub.answer(("$error", "refused"), ("$what", 1), ["not", "a", "tuple"])
    assert [type(e) for e in hub.reports] == [errors.BrokerError, errors.MphubError, errors.MphubError]
    assert "refused" in str(hub.reports[0]) and "unexpected frame" in str(hub.reports[1])


def test_messages_go_to_matching_subscriptions_and_a_pong_is_handled_after_them():
    deep, seen = Sub("a.>"), []

    class Snapshot(Waiter):
        def set(self, value=None, error=None):
            seen.append(list(deep.got))
            super().set(value, error)

    hub = Hub(waiter=Snapshot)
    a = Sub("a.*")
    hub.core.add(a)
    hub.core.add(deep)
    token, pong = hub.core.ping()
    hub.answer(("a.x", 1), ("a.x.y", 2), ("$pong", token))
    assert a.got == [("a.x", 1)] and deep.got == [("a.x", 1), ("a.x.y", 2)]
    assert pong.done and seen[-1] == [("a.x", 1), ("a.x.y", 2)]  # it saw every message before it


def test_a_frame_split_over_reads_is_delivered_once_whole_and_an_empty_read_ends_the_connection():
    hub = Hub()
    sub = Sub("big")
    hub.core.add(sub)
    data = frame(pickle.dumps(("big", b"x" * 300_000)))
    hub.core.start_reading()
    for i in range(0, len(data), 65536):
        assert hub.core.receive(data[i : i + 65536]) is None
    assert sub.got == [("big", b"x" * 300_000)]
    assert isinstance(hub.core.receive(b""), errors.ConnectionClosed)


def test_a_pong_sets_only_its_own_waiter():
    hub = Hub()
    t1, p1 = hub.core.ping()
    t2, p2 = hub.core.ping()
    assert [m for m in hub.sent() if m[0] == "$ping"] == [("$ping", t1), ("$ping", t2)]
    hub.answer(("$pong", t2), ("$pong", [1]), ("$pong", "stranger"))
    assert p2.done and not p1.done and hub.reports == []


# ------------------------------------------------------------------ the write buffer


@pytest.mark.parametrize("lock", [threading.Lock(), NO_LOCK], ids=["threads", "one thread"])
def test_a_publish_after_a_quiet_spell_is_written_now_and_a_burst_shares_one_write(lock):
    hub = Hub(lock=lock, flush_size=1000)
    assert publish(hub.core, "t", 1, now=100.0) == NOW
    assert hub.sent() == [("t", 1)]
    assert publish(hub.core, "t", 2, now=100.0001) == SOON  # soon after the last: a flush is due
    assert publish(hub.core, "t", 3, now=100.0002) == IDLE  # ...and already on its way
    assert publish(hub.core, "t", b"x" * 1000, now=100.0003) == NOW  # past flush_size
    assert hub.sent() == [("t", 2), ("t", 3), ("t", b"x" * 1000)]


def test_a_publish_over_max_frame_raises_before_anything_is_buffered():
    hub = Hub(max_frame=100)
    with pytest.raises(ValueError, match="max_frame"):
        publish(hub.core, "t", b"x" * 200)
    assert hub.sent() == []


def test_while_disconnected_publishes_wait_up_to_the_reconnect_buffer():
    hub = Hub(reconnect_buffer=1024)
    assert hub.core.lose(OSError("reset")) is True
    assert publish(hub.core, "t", b"x" * 500) == IDLE
    with pytest.raises(errors.BufferFullError, match="reconnect_buffer=1024"):
        publish(hub.core, "t", b"x" * 600)
    assert hub.core.take_output() is None  # nothing goes out while disconnected
    assert unpickle(hub.core.on_connect()) == [("t", b"x" * 500)]


# ------------------------------------------------------------------ losing and restoring


def test_a_loss_fails_what_waited_and_the_reconnect_restores_keys_then_metrics_then_publishes():
    hub = Hub()
    hub.core.add(Sub("a.>"))
    hub.core.add(Sub("jobs", group="w"))
    hub.answer(("$ok", ("$sub", "a.>")), ("$ok", ("$sub", ("jobs", "w"))))
    hub.sent()
    unsent = Sub("b")
    ack = hub.core.add(unsent)  # its $sub is buffered, not yet written
    _, pong = hub.core.ping()
    jobs = hub.core.metrics.family("jobs_total", "counter", "Jobs", (), {})

    assert hub.core.lose(OSError("reset")) is True
    assert isinstance(ack.error, errors.ConnectionClosed) and isinstance(pong.error, errors.ConnectionClosed)
    assert hub.core.failed(unsent, ack.error) is False  # kept: the reconnect restores its key
    jobs.inc(2)
    publish(hub.core, "a.x", "while down")

    first = unpickle(hub.core.on_connect())
    assert first[:3] == [("$sub", "a.>"), ("$sub", ("jobs", "w")), ("$sub", "b")]
    assert first[3][0] == "$metrics" and [op[0] for op in first[3][1]] == ["declare", "inc"]
    assert first[4:] == [("$ping", 1), ("a.x", "while down")]  # the stale $sub is gone
    hub.answer(*[("$ok", ("$sub", k)) for k in ("a.>", ("jobs", "w"), "b")])
    later = hub.core.add(Sub("c"))
    hub.answer(("$ok", ("$sub", "c")))
    assert later.value == ("$sub", "c")  # the restored keys' answers did not take its place


def test_an_unsub_a_lost_connection_never_sent_does_not_undo_a_key_restored_before_it():
    hub = Hub()
    first = Sub("k")
    hub.core.add(first)
    hub.sent()
    hub.core.remove(first)  # $unsub buffered...
    hub.core.lose(OSError("reset"))  # ...and never written
    hub.core.add(Sub("k"))  # subscribed again while down
    assert unpickle(hub.core.on_connect()) == [("$sub", "k")]


def test_without_reconnects_a_loss_gives_up_closes_subscriptions_and_says_why():
    hub = Hub(reconnect=False)
    sub = Sub("x")
    hub.core.add(sub)
    assert hub.core.lose(OSError("reset")) is False
    assert sub.closed
    assert [str(e) for e in hub.reports] == ["connection lost: reset"]
    with pytest.raises(errors.ConnectionClosed, match="lost: reset"):
        publish(hub.core, "x", 1)
    with pytest.raises(errors.ConnectionClosed):
        hub.core.add(Sub("y"))


def test_a_flush_while_disconnected_waits_for_the_connection():
    hub = Hub()
    hub.core.lose(OSError("reset"))
    ready = hub.core.when_connected()
    assert not ready.done
    hub.core.on_connect()
    assert ready.done and ready.error is None
    assert hub.core.when_connected() is None


def test_the_reconnect_plan_doubles_its_waits_with_jitter_and_gives_up_after_the_attempts():
    hub = Hub(max_reconnect_attempts=4, reconnect_wait=(0.1, 0.3))
    assert hub.core.lose(OSError("reset")) is True
    waiting = hub.core.when_connected()
    plan = hub.core.reconnect_plan()
    waits = list(plan)
    for got, base in zip(waits, [0.1, 0.2, 0.3, 0.3]):
        assert base * 0.5 <= got <= base * 1.5
    assert len(waits) == 4 and plan.attempt == 4
    assert [str(e) for e in hub.reports] == ["gave up reconnecting to test after 4 attempts"]
    assert isinstance(waiting.error, errors.ConnectionClosed)


def test_a_refused_authkey_ends_the_reconnect_plan_at_once():
    hub = Hub(max_reconnect_attempts=-1)
    hub.core.lose(OSError("reset"))
    plan = hub.core.reconnect_plan()
    tried = 0
    for _ in plan:
        tried += 1
        plan.failed(
            OSError("refused") if tried < 3 else errors.AuthenticationError("the broker refused the authkey")
        )
    assert tried == 3
    assert isinstance(hub.reports[-1], errors.AuthenticationError)


def test_close_hands_over_metrics_the_buffer_and_the_goodbye_once():
    hub = Hub()
    hub.core.metrics.family("n_total", "counter", "N", (), {}).inc()
    publish(hub.core, "t", 1)
    last = unpickle(hub.core.close())
    assert last[0] == ("t", 1) and last[1][0] == "$metrics" and last[2] == "close"
    assert hub.core.close() is None
    with pytest.raises(errors.ConnectionClosed, match="closed"):
        publish(hub.core, "t", 2)
    assert hub.core.lose(OSError("eof")) is False and hub.reports == []  # closing: nothing to report


# ------------------------------------------------------------------ request / reply


def test_the_first_request_subscribes_the_inbox_and_a_reply_sets_its_waiter():
    hub = Hub()
    reply_to, reply, ack = hub.core.expect_reply()
    other, _, again = hub.core.expect_reply()
    assert ack is not None and again is None
    inbox = hub.core.inbox.pattern
    assert inbox.endswith(".>") and reply_to.startswith(inbox[:-1]) and other != reply_to
    assert hub.sent() == [("$sub", inbox)]
    hub.answer(("$ok", ("$sub", inbox)), (reply_to, {"answer": 42}))
    assert reply.value == {"answer": 42}


# ------------------------------------------------------------------ worker metrics and the timer


def test_worker_metrics_are_batched_and_sent_on_the_timer_interval():
    hub = Hub(metrics_interval=2.0)
    jobs = hub.core.metrics.family("jobs_total", "counter", "Jobs", ("q",), {})
    assert hub.core.tick(0.0) is None and hub.timers == 0  # nothing changed yet: no timer
    for _ in range(5):
        jobs.labels(q="a").inc()
    assert hub.timers == 1
    jobs.labels(q="a").inc()
    assert hub.timers == 1  # asked once
    assert hub.core.tick(10.0) == 2.0 and hub.sent() == []  # the first tick only starts the clock
    assert hub.core.tick(11.0) == 1.0 and hub.sent() == []
    assert hub.core.tick(12.0) == 2.0
    (ops,) = [m[1] for m in hub.sent()]
    assert ops == [
        ("declare", "jobs_total", "counter", "Jobs", ("q",), {}),
        ("inc", "jobs_total", {"q": "a"}, 6),
    ]
    assert hub.core.tick(14.0) == 2.0 and hub.sent() == []  # nothing new: nothing sent


def test_worker_metrics_wait_for_the_reconnect_instead_of_the_offline_buffer():
    hub = Hub(metrics_interval=1.0)
    g = hub.core.metrics.family("temp", "gauge", "T", (), {"mode": "mostrecent"})
    g.set(20)
    hub.core.tick(0.0)
    hub.core.lose(OSError("reset"))
    g.set(21)
    hub.core.tick(5.0)
    ops = unpickle(hub.core.on_connect())[0][1]
    assert ops == [("declare", "temp", "gauge", "T", (), {"mode": "mostrecent"}), ("set", "temp", {}, 21.0)]
