"""Reading the broker's JSON endpoints (/connections, /subscriptions, /topics, /status)."""

import json
import urllib.error
import urllib.request


def base_url(broker):
    """The HTTP endpoint's root, e.g. http://127.0.0.1:41234."""
    return broker.metrics_url.rsplit("/metrics", 1)[0]


def get(broker, path):
    """(status, decoded JSON) of GET path."""
    try:
        with urllib.request.urlopen(base_url(broker) + path, timeout=10) as r:
            assert r.headers["Content-Type"] == "application/json"
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def connections(broker, query=""):
    status, body = get(broker, "/connections" + query)
    assert status == 200, body
    return body


def by_name(broker, name):
    """The one open connection named `name`."""
    found = [c for c in connections(broker)["connections"] if c["name"] == name]
    assert len(found) == 1, found
    return found[0]
