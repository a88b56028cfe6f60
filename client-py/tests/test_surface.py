"""What a user meets: both hubs offer the same methods and options, and connect the same way."""

import inspect
import pickle

import pytest

import mphub
from mphub import aio
from mphub._wire import CHALLENGE, FAILURE, WELCOME, ClientHandshake, answer, new_challenge, verify


def public(cls):
    return {name for name in dir(cls) if not name.startswith("_")}


def test_the_asyncio_hub_has_every_public_method_and_option_of_the_threaded_one():
    assert public(aio.Hub) == public(mphub.Hub)
    assert {"counter", "gauge", "histogram", "summary", "publish", "flush", "request"} <= public(aio.Hub)
    assert aio.Hub.__init__ is mphub.Hub.__init__  # the options are declared once
    assert "metrics_interval" in inspect.signature(aio.Hub.__init__).parameters
    for name in public(mphub.Hub):
        threaded, asynchronous = getattr(mphub.Hub, name), getattr(aio.Hub, name)
        if callable(threaded):
            assert (
                inspect.signature(asynchronous).parameters.keys()
                == inspect.signature(threaded).parameters.keys()
            )
    waits = {name for name in public(aio.Hub) if inspect.iscoroutinefunction(getattr(aio.Hub, name))}
    assert waits == {"publish", "flush", "subscribe", "request", "serve", "close"}


def test_both_subscriptions_offer_the_same_methods_and_state():
    assert public(aio.Subscription) == public(mphub.Subscription)
    assert {"next", "unsubscribe", "key", "pending", "closed"} <= public(mphub.Subscription)


def test_without_an_authkey_only_the_pong_of_the_probe_proves_an_mphub_broker():
    hs = ClientHandshake(None)
    assert [pickle.loads(body) for body in hs.start()] == [("$ping", 0)]
    assert hs.step(pickle.dumps(("$pong", 0))) == [] and hs.done
    for reply, reason in [
        (CHALLENGE + b"{sha256}" + b"x" * 40, "asks for an authkey"),
        (pickle.dumps(("$pong", 1)), "is this an mphub broker"),
        (b"HTTP/1.1 400", "is this an mphub broker"),
    ]:
        hs = ClientHandshake(None)
        hs.start()
        with pytest.raises(mphub.AuthenticationError, match=reason):
            hs.step(reply)


def test_with_an_authkey_the_handshake_proves_the_key_both_ways():
    hs = ClientHandshake(b"key")
    assert hs.start() == []
    challenge, message = new_challenge()
    (response,) = hs.step(challenge)
    assert verify(b"key", message, response)
    (ours,) = hs.step(WELCOME)
    assert hs.step(answer(b"key", ours)) == [WELCOME] and hs.done

    refused = ClientHandshake(b"wrong")
    refused.step(challenge)
    with pytest.raises(mphub.AuthenticationError, match="refused the authkey"):
        refused.step(FAILURE)
