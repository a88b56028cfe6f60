"""Signals: only SIGTERM and SIGINT stop the broker; SIGHUP reloads the configuration, SIGUSR1
and SIGUSR2 are logged and ignored."""

import signal
from multiprocessing.connection import Client

import pytest
from conftest import KEY
from scenarios import barrier, subscribe


@pytest.mark.parametrize("sig, logged", [
    (signal.SIGUSR1, "signal ignored"),
    (signal.SIGUSR2, "signal ignored"),
    (signal.SIGHUP, "configuration reloaded"),
])
def test_a_signal_other_than_term_or_int_leaves_the_broker_serving(broker, sig, logged):
    sub = Client(broker.address, authkey=KEY)
    subscribe(sub, "after.signal")
    for n in range(1, 3):  # twice: the second one must be handled like the first
        broker.proc.send_signal(sig)
        assert broker.wait_for_log(logged, count=n), broker.log()
    assert sig.name in broker.log()
    pub = Client(broker.address, authkey=KEY)
    pub.send(("after.signal", 1))
    barrier(pub)
    assert sub.recv() == ("after.signal", 1)
    assert broker.proc.poll() is None
    assert broker.stop(signal.SIGTERM) == 0


def test_sigint_stops_the_broker_with_exit_zero_after_the_others(broker):
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        broker.proc.send_signal(sig)
    assert broker.wait_for_log("configuration reloaded") and broker.wait_for_log("signal ignored", count=2)
    barrier(Client(broker.address, authkey=KEY))
    assert broker.stop(signal.SIGINT) == 0
    assert "SIGINT" in broker.log() and "mphub stopped" in broker.log()
