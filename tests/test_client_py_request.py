"""Request and reply (PROTOCOL §9) with client-py, and with stock Python on the other side."""

import threading
from multiprocessing.connection import Client

from conftest import KEY
from scenarios import subscribe


def test_request_gets_the_reply_of_a_served_handler(hubs):
    hubs().serve("svc.echo", lambda body: {"echo": body})
    assert hubs().request("svc.echo", [1, 2], timeout=10) == {"echo": [1, 2]}


def test_responders_in_a_group_share_the_requests(hubs):
    served = {"a": 0, "b": 0}

    def responder(name):
        def handle(body):
            served[name] += 1
            return body * 2
        return handle

    hubs().serve("svc.double", responder("a"), group="doublers")
    hubs().serve("svc.double", responder("b"), group="doublers")
    client = hubs()
    assert [client.request("svc.double", i, timeout=10) for i in range(20)] == [i * 2 for i in range(20)]
    assert served["a"] + served["b"] == 20 and served["a"] > 0 and served["b"] > 0


def test_a_stock_python_responder_answers_a_client_py_request(broker, hubs):
    stock = Client(broker.address, authkey=KEY)
    subscribe(stock, "svc.upper")

    def respond():
        topic, req = stock.recv()
        stock.send((req["reply_to"], req["body"].upper()))

    t = threading.Thread(target=respond)
    t.start()
    assert hubs().request("svc.upper", "shout", timeout=10) == "SHOUT"
    t.join()


def test_a_stock_python_requester_gets_a_client_py_reply(broker, hubs):
    hubs().serve("svc.len", len)
    stock = Client(broker.address, authkey=KEY)
    subscribe(stock, "_INBOX.stock.>")
    stock.send(("svc.len", {"reply_to": "_INBOX.stock.1", "body": "four"}))
    assert stock.recv() == ("_INBOX.stock.1", 4)
