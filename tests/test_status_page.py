"""The status page at `/`, rendered by a real browser (headless Chromium): it fills in live as
connections come, subscribe, publish and back up, with nothing fetched from elsewhere."""

import urllib.request
from multiprocessing.connection import Client

import mphub
import pytest
from cdp import Browser, chromium_binary
from conftest import KEY
from http_json import base_url
from scenarios import barrier, subscribe


@pytest.fixture
def browser(tmp_path):
    if chromium_binary() is None:
        pytest.fail("chromium missing: apt-get install chromium (.ci/run does)")
    with Browser(tmp_path / "profile") as b:
        yield b


def named(broker, name, *patterns):
    c = Client(broker.address, authkey=KEY)
    c.send(("$hello", {"name": name}))
    assert c.recv()[0] == "$ok"
    for p in patterns:
        subscribe(c, p)
    return c


def row_texts(page):
    return page.evaluate("[...document.querySelectorAll('#connections tbody tr')].map((tr) => tr.innerText)")


def test_the_page_is_served_whole_with_a_policy_that_forbids_anything_outside(start_broker):
    b = start_broker(metrics="127.0.0.1:0")
    with urllib.request.urlopen(base_url(b) + "/", timeout=10) as r:
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert "<script>" in r.read().decode()


def test_a_named_connection_and_its_subscription_appear_live_in_the_rendered_page(start_broker, browser, tmp_path):
    b = start_broker(metrics="127.0.0.1:0")
    page = browser.open(base_url(b) + "/")
    assert page.wait_for_text(["live", "No connection."]), page.text()

    # Connections made after the page loaded: the page shows them without a reload.
    worker = named(b, "status-page-worker", ("orders.*", "billing"))
    hub = mphub.connect(b.addrs[0], authkey=KEY, name="py-dashboard-feed")
    hub.subscribe("metrics.>")
    hub.flush()
    assert page.wait_for_text(["status-page-worker", "orders.*", "billing", "py-dashboard-feed"],
                              selector="#connections"), page.text()
    rows = row_texts(page)
    (mine,) = [r for r in rows if "status-page-worker" in r]
    assert "orders.*" in mine and "default" in mine and "127.0.0.1:" in mine
    assert page.wait_for_text(["orders.*", "billing", "metrics.>"], selector="#subscriptions")

    # Traffic: the busiest topic shows, with a rate.
    pub = named(b, "publisher")
    for i in range(3000):
        pub.send(("orders.created", i))
    barrier(pub)
    assert page.wait_for_text(["orders.created"], selector="#topics"), page.text("#topics")

    # A connection gone is gone from the page.
    worker.close()
    assert page.wait_for("!document.querySelector('#connections').innerText.includes('status-page-worker')")
    page.screenshot(tmp_path / "status.png")
    assert (tmp_path / "status.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hub.close()
    pub.close()


def test_a_backed_up_subscriber_is_flagged_as_a_slow_consumer(start_broker, browser):
    b = start_broker("--outbound-limit", "4MiB", "--slow-consumer", "drop", metrics="127.0.0.1:0")
    page = browser.open(base_url(b) + "/")
    assert page.wait_for_text(["live"])
    stuck = named(b, "stuck-reader", "flood")  # never reads
    pub = named(b, "flooder")
    for _ in range(64):
        pub.send(("flood", bytes(512 << 10)))
    barrier(pub)
    assert page.wait_for_text(["stuck-reader", "of the outbound limit"], selector="#warnings"), page.text()
    (row,) = [r for r in row_texts(page) if "stuck-reader" in r]
    assert "slow" in row
    stuck.close()
    pub.close()


def test_the_page_shows_the_nats_bridge_of_a_cluster_node(nats, node, browser):
    (server,) = nats(1)
    n = node(server.url)
    assert n.wait_for_log("cluster: connected to NATS")
    page = browser.open(base_url(n) + "/")
    assert page.wait_for("document.querySelector('#c-state').innerText === 'connected'"), page.text()
    assert page.wait_for_text(["NATS BRIDGE", server.url, "max payload 1.0 MiB", "backlog to NATS (limit",
                               "NATS subscriptions"], selector="#cluster"), page.text("#cluster")
    c = named(n, "cluster-publisher")
    for i in range(100):
        c.send(("x.y", i))
    barrier(c)
    server.stop()
    assert page.wait_for("document.querySelector('#c-state').innerText === 'not connected'"), page.text()
    c.close()


def test_names_and_topics_from_clients_are_shown_as_text_never_run_as_markup(start_broker, browser):
    # A client chooses its name and its topics: the page must print them, not parse them.
    b = start_broker(metrics="127.0.0.1:0")
    page = browser.open(base_url(b) + "/")
    assert page.wait_for_text(["live"])
    name = "<img src=x onerror=window.pwned=1>"
    topic = "t&amp;<i"  # no '>' in a topic (a wildcard): an entity shows whether it was parsed
    c = named(b, name, topic)
    for i in range(500):
        c.send((topic, i))
    barrier(c)
    assert page.wait_for_text([name], selector="#connections"), page.text("#connections")
    assert page.wait_for_text([topic], selector="#subscriptions"), page.text("#subscriptions")
    assert page.evaluate("document.querySelectorAll('img, [onerror]').length") == 0
    assert page.evaluate("typeof window.pwned") == "undefined"
    c.close()
