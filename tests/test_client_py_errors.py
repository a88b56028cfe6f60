"""client-py raises the typed error a user can act on, where it happens."""

import builtins
import socket
import threading

import mphub
import pytest
from conftest import KEY
from mphub import errors


def test_a_wrong_authkey_raises_authentication_error(broker):
    with pytest.raises(errors.AuthenticationError, match="refused the authkey"):
        mphub.connect(broker.addrs[0], authkey=b"wrong")


def test_no_authkey_against_a_keyed_broker_says_a_key_is_needed(broker, monkeypatch):
    monkeypatch.delenv("MPHUB_AUTHKEY", raising=False)
    with pytest.raises(errors.AuthenticationError, match="asks for an authkey") as e:
        mphub.connect(broker.addrs[0])
    assert "MPHUB_AUTHKEY" in str(e.value)  # and so says how to give one


def test_a_broker_without_a_key_takes_a_client_without_one(start_broker, monkeypatch):
    monkeypatch.delenv("MPHUB_AUTHKEY", raising=False)
    b = start_broker(key=None)
    with mphub.connect(b.addrs[0]) as hub:
        sub = hub.subscribe("k")
        hub.publish("k", 1)
        assert sub.next(timeout=10).payload == 1


def test_a_key_against_a_broker_without_one_says_that_is_the_likely_cause(start_broker, monkeypatch):
    monkeypatch.delenv("MPHUB_AUTHKEY", raising=False)
    b = start_broker(key=None)
    with pytest.raises(errors.AuthenticationError, match="most likely runs without an authkey") as e:
        mphub.connect(b.addrs[0], authkey=KEY, connect_timeout=0.5)
    assert isinstance(e.value, errors.HandshakeTimeout) and isinstance(e.value, builtins.TimeoutError)
    assert "--authkey-file" in str(e.value)


def test_the_authkey_can_come_from_the_environment(broker, monkeypatch):
    monkeypatch.setenv("MPHUB_AUTHKEY", KEY.decode())
    monkeypatch.setenv("MPHUB_ADDRESS", broker.addrs[0])
    with mphub.connect() as hub:
        hub.flush()


def test_nothing_listening_raises_connection_closed():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(errors.ConnectionClosed, match="cannot connect"):
        mphub.connect(f"127.0.0.1:{port}", authkey=KEY)


def test_invalid_topics_and_patterns_raise_before_anything_is_sent(hubs):
    hub = hubs()
    for bad in ["", "a..b", "a b", "a.*", "$sys", "a.>"]:
        with pytest.raises(ValueError):
            hub.publish(bad, 1)
    for bad in ["a.>.b", "a*", "", "$x"]:
        with pytest.raises(ValueError):
            hub.subscribe(bad)
    with pytest.raises(TypeError):
        hub.publish(b"bytes", 1)
    hub.flush()


def test_a_refused_subscription_raises_broker_error_with_the_reason(start_broker):
    b = start_broker("--max-subscriptions", "1")
    with mphub.connect(b.addrs[0], authkey=KEY) as hub:
        hub.subscribe("one")
        with pytest.raises(errors.BrokerError) as e:
            hub.subscribe("two")
        assert "subscription" in e.value.reason
        hub.publish("one", "still works")
        hub.flush()


def test_next_with_nothing_raises_a_timeout_error_that_is_also_the_builtin(hubs):
    sub = hubs().subscribe("quiet")
    with pytest.raises(builtins.TimeoutError):
        sub.next(timeout=0.05)
    with pytest.raises(errors.TimeoutError):
        sub.next(timeout=0.05)


def test_a_request_without_responder_times_out(hubs):
    with pytest.raises(errors.TimeoutError, match="svc.none"):
        hubs().request("svc.none", 1, timeout=0.2)


def test_a_full_subscription_counts_drops_and_raises_slow_consumer_once(hubs):
    reported = []
    hub = hubs(on_error=reported.append)
    sub = hub.subscribe("burst", max_pending=10)
    for i in range(100):
        hub.publish("burst", i)
    hub.flush()
    assert sub.dropped == 90
    with pytest.raises(errors.SlowConsumerError) as e:
        sub.next()
    assert e.value.dropped == 90 and e.value.subscription is sub
    assert [sub.next().payload for _ in range(10)] == list(range(10))
    assert any(isinstance(r, errors.SlowConsumerError) for r in reported)


def test_publishing_after_close_raises_connection_closed(hubs):
    hub = hubs()
    sub = hub.subscribe("x")
    hub.close()
    with pytest.raises(errors.ConnectionClosed):
        hub.publish("x", 1)
    with pytest.raises(errors.SubscriptionClosed):
        sub.next(timeout=1)


def test_without_reconnect_a_lost_broker_closes_subscriptions_and_publishes_raise(broker):
    lost = threading.Event()
    hub = mphub.connect(broker.addrs[0], authkey=KEY, reconnect=False, on_error=lambda e: lost.set())
    sub = hub.subscribe("x")
    broker.stop()
    assert lost.wait(10)
    with pytest.raises(errors.SubscriptionClosed):
        sub.next(timeout=10)
    with pytest.raises(errors.ConnectionClosed):
        hub.publish("x", 1)
    hub.close()


def test_every_error_is_an_mphub_error():
    for cls in [
        errors.AuthenticationError, errors.ConnectionClosed, errors.BufferFullError,
        errors.SubscriptionClosed, errors.SlowConsumerError, errors.BrokerError, errors.TimeoutError,
        errors.HandshakeTimeout,
    ]:
        assert issubclass(cls, errors.MphubError)
