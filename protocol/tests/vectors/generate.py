"""Generate test vectors from the running CPython: pickles of many shapes, `$metrics` batches that
share objects, and handshake transcripts.

    python3 protocol/tests/vectors/generate.py            # writes cpython-<major>.<minor>.json here

The Rust tests in protocol/tests/ read every cpython-*.json beside this file: "pickles" and their
envelope, "metrics" and the ops the `$metrics` decoder must read from them, "handshakes". Run it with each
CPython we support (`make vectors` runs 3.11 and 3.13); the output depends only on the interpreter,
except for the random challenge bytes in the handshakes.
"""

import _compat_pickle
import collections
import copyreg
import datetime
import decimal
import hmac
import io
import json
import os
import pickle
import sys
import threading
from multiprocessing import connection
from multiprocessing.reduction import ForkingPickler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import recorder  # noqa: E402 - beside this file

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOCOLS = range(0, pickle.HIGHEST_PROTOCOL + 1)


def publish(topic):
    return {"kind": "publish", "topic": topic}


def interest(kind, arg):
    if isinstance(arg, tuple):
        return {"kind": kind, "pattern": arg[0], "group": arg[1]}
    return {"kind": kind, "pattern": arg, "group": None}


def token(value):
    if value is None:
        return {"type": "none"}
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": str(value)}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    return {"type": "bytes", "value": value.hex()}


class Point:
    def __init__(self, x):
        self.x = x


def legal_messages():
    """(name, object, expected) for everything a client may legally send."""
    shared = "shared-string"
    rec = []
    rec.append(rec)
    memo_heavy = [shared] * 50 + [{"k": shared, "r": rec}] * 50
    yield "small-dict", ("sensors.temp", {"i": 1, "v": 21.5}), publish("sensors.temp")
    yield "big-bytes", ("blob.raw", b"\x00\xff" * 35_000), publish("blob.raw")
    yield "big-str", ("blob.text", "x" * 70_000), publish("blob.text")
    yield "globals", ("calc.fns", [int, sum, len, Point]), publish("calc.fns")
    yield "object", ("obj.point", Point(3)), publish("obj.point")
    yield "reduce", ("when", datetime.datetime(2020, 1, 2, 3, 4, 5)), publish("when")
    yield "ordered", ("od", collections.OrderedDict(a=1)), publish("od")
    yield "memo-heavy", ("memo.heavy", memo_heavy), publish("memo.heavy")
    yield "nested", ("a.b", ((1, 2), (3, (4, 5)), [], {}, set(), frozenset([1]))), publish("a.b")
    yield "floats-ints", ("n", (1.5, -2, 2**40, 2**100, -(2**70), True, None)), publish("n")
    yield "non-ascii-topic", ("Ä.ö.日本.😀", "payload"), publish("Ä.ö.日本.😀")
    yield "backslash-topic", ("a\\b.c", 1), publish("a\\b.c")
    yield "topic-is-payload", ("same.topic", "same.topic"), publish("same.topic")
    yield "wildcard-like-payload", ("x", "a.*"), publish("x")
    yield "inbox", ("_INBOX.abc.1", {"reply_to": "_INBOX.abc.2", "body": [1]}), publish("_INBOX.abc.1")
    yield "bytearray", ("ba", bytearray(b"abc")), publish("ba")
    yield "sixteen-tokens", (".".join("t" * 16), 0), publish(".".join("t" * 16))
    yield "long-topic", ("a" * 255, 0), publish("a" * 255)
    yield "sub", ("$sub", "a.*"), interest("sub", "a.*")
    yield "sub-gt", ("$sub", ">"), interest("sub", ">")
    yield "sub-group", ("$sub", ("jobs.*", "workers")), interest("sub", ("jobs.*", "workers"))
    yield "unsub", ("$unsub", "a.>"), interest("unsub", "a.>")
    yield "unsub-group", ("$unsub", ("a", "g")), interest("unsub", ("a", "g"))
    for name, tok in [("none", None), ("true", True), ("false", False), ("zero", 0),
                      ("neg", -1), ("int40", 2**40), ("big", 2**100), ("negbig", -(2**70)),
                      ("str", "tok-ä"), ("bytes", b"\x00tok"), ("ping", "$ping")]:
        yield f"ping-{name}", ("$ping", tok), {"kind": "ping", "token": token(tok)}
    yield "close", "close", {"kind": "close"}
    yield "metrics", ("$metrics", [("inc", "jobs_total", {}, 1)]), {"kind": "metrics", "has_code": False}
    yield "metrics-global", ("$metrics", [int]), {"kind": "metrics", "has_code": True}


def invalid_messages():
    yield "three-tuple", ("a", 1, 2)
    yield "one-tuple", ("a",)
    yield "list", ["a", 1]
    yield "dict", {"a": 1}
    yield "str-not-close", "closed"
    yield "int", 5
    yield "none", None
    yield "topic-int", (1, 2)
    yield "topic-bytes", (b"a", 2)
    yield "topic-wildcard", ("a.*", 1)
    yield "topic-gt", ("a.>", 1)
    yield "topic-empty", ("", 1)
    yield "topic-empty-token", ("a..b", 1)
    yield "topic-space", ("a b", 1)
    yield "topic-too-long", ("a" * 256, 1)
    yield "topic-too-many-tokens", (".".join("t" * 17), 1)
    yield "unknown-control", ("$foo", 1)
    yield "reply-topic", ("$ok", 1)
    yield "sub-int", ("$sub", 5)
    yield "sub-bad-pattern", ("$sub", "a..b")
    yield "sub-gt-middle", ("$sub", "a.>.b")
    yield "sub-bad-group", ("$sub", ("a", "g.h"))
    yield "sub-three", ("$sub", ("a", "g", "x"))
    yield "ping-list", ("$ping", [1])
    yield "ping-float", ("$ping", 1.5)


def dumps_all():
    out = []
    for name, obj, expect in legal_messages():
        for proto in PROTOCOLS:
            # Protocols 0-2 pickle bytes as a call to _codecs.encode: not a plain token.
            old_bytes = proto < 3 and expect.get("token", {}).get("type") == "bytes"
            out.append({"name": f"{name}/p{proto}", "hex": pickle.dumps(obj, protocol=proto).hex(),
                        "expect": {"kind": "invalid"} if old_bytes else expect})
        out.append({"name": f"{name}/send", "hex": bytes(ForkingPickler.dumps(obj)).hex(),
                    "expect": expect})
    for name, obj in invalid_messages():
        for proto in PROTOCOLS:
            out.append({"name": f"{name}/p{proto}", "hex": pickle.dumps(obj, protocol=proto).hex(),
                        "expect": {"kind": "invalid"}})
    good = pickle.dumps(("sensors.temp", {"i": 1, "v": 21.5}), protocol=4)
    for cut in range(len(good) - 1):
        out.append({"name": f"truncated-at-{cut}", "hex": good[:cut].hex(), "expect": {"kind": "invalid"}})
    buffers = []
    oob = pickle.dumps(("a", pickle.PickleBuffer(b"abc")), protocol=5, buffer_callback=buffers.append)
    broken = {
        "garbage": b"\xde\xad\xbe\xef" * 8,
        "empty": b"",
        "unknown-opcode": b"\x80\x04\xff.",
        "future-protocol": b"\x80\x09N.",
        "stop-on-empty": b".",
        "tuple2-underflow": b"\x80\x04N\x86.",
        "memo-missing": b"\x80\x04h\x05.",
        "no-mark": b"\x80\x02Nt.",
        "mark-fence": b"\x80\x02N(\x86.",
        "frame-past-end": b"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00N.",
        "out-of-band": oob,
        "bytes-past-end": b"\x80\x04B\xff\xff\xff\x00abc.",
        "append-to-str": b"\x80\x04\x8c\x01aN\x61.",
        # APPEND, SETITEM and BUILD cannot reach below a MARK (else these are ("t", x)).
        "append-below-mark": b"\x80\x02X\x01\x00\x00\x00t](K\x01a1\x86.",
        "setitem-below-mark": b"\x80\x02X\x01\x00\x00\x00t}(K\x01K\x02s1\x86.",
        "build-below-mark": b"\x80\x02X\x01\x00\x00\x00tcdatetime\ndate\n(Nb1\x86.",
    }
    for name, data in broken.items():
        out.append({"name": name, "hex": data.hex(), "expect": {"kind": "invalid"}})
    return out


def number(x):
    """A number as the decoder reads it, written as repr(float): an int past float's range is
    infinite (Python's float() would raise)."""
    try:
        return repr(float(x))
    except OverflowError:
        return "inf" if x > 0 else "-inf"


def metric_op(op):
    """What the `$metrics` decoder reads from a well-formed op."""
    if op[0] == "declare":
        opts = op[5] if len(op) > 5 and op[5] is not None else {}
        buckets = opts.get("buckets")
        return {"op": "declare", "name": op[1], "kind": op[2], "help": op[3], "labels": list(op[4]),
                "buckets": None if buckets is None else [number(b) for b in buckets],
                "mode": opts.get("mode")}
    return {"op": op[0], "name": op[1], "labels": [[k, str(v)] for k, v in op[2].items()],
            "value": number(op[3])}


def metrics_batches():
    """(name, ops, expect): `expect` maps an op's index to the error it must give ("shape" or
    "value"), or is the error of the whole batch ("code", "decode", "not_a_list")."""
    lbl = {"queue": "a"}
    counter = ("declare", "k_total", "counter", "k", ("queue",), {})
    # The example: one labels dict under two ops is a memo reference the second time.
    yield "shared-labels", [counter, ("inc", "k_total", lbl, 1), ("inc", "k_total", lbl, 1)], {}
    # The same op tuple twice, a label-names tuple and an options dict shared by two declares,
    # one buckets list under two options dicts.
    inc = ("inc", "k_total", {"queue": "b"}, 2.5)
    names = ("queue", "host")
    opts = {"mode": "livesum"}
    bounds = [0.1, 1, 10]
    yield "shared-tuples-and-dicts", [
        counter, inc, inc,
        ("declare", "g1", "gauge", "g", names, opts),
        ("declare", "g2", "gauge", "g", names, opts),
        ("declare", "h1", "histogram", "h", (), {"buckets": bounds}),
        ("declare", "h2", "histogram", "h", names, {"buckets": bounds}),
        ("set", "g1", {"queue": "a", "host": "x"}, -3),
        ("observe", "h2", {"queue": "a", "host": "x"}, 0.5),
    ], {}
    # The same dict as a family's options and as an op's labels.
    both = {"mode": "max"}
    yield "dict-as-options-and-labels", [
        ("declare", "m", "gauge", "m", ("mode",), both), ("set", "m", both, 7)], {}
    # What client-py sends: a child's labels dict under every observation of the batch.
    yield "client-py-100", client_py_batch(100), {}
    # What client-py/bench/worker_metrics.py's stock senders send: a dict of its own per op.
    yield "stock-100", [("inc", "bench_raw_total", {"shard": str(i & 7)}, 1) for i in range(100)], {}
    yield "numbers", [
        ("declare", "n", "gauge", "n", (), None),
        ("declare", "n2", "gauge", "n", ()),
        ("set", "n", {}, 2**70), ("set", "n", {}, -(2**70)), ("set", "n", {}, 2**63),
        ("set", "n", {}, -(2**31) - 1), ("set", "n", {}, 2**31), ("set", "n", {}, 1e300),
        ("set", "n", {}, float("inf")), ("set", "n", {}, -0.0), ("set", "n", {}, True),
        ("set", "n", {}, 0.1 + 0.2), ("set", "n", {}, 2**1100),
        ("declare", "h", "histogram", "h", (), {"buckets": (-float("inf"), 0, 2**64, float("inf"))}),
    ], {}
    text = "ä\\x \u2028 😀 \"q\"\n\\u0041"
    yield "text", [
        ("declare", "t_total", "counter", text, ("k", "n", "b"), {}),
        ("inc", "t_total", {"k": text, "n": 5, "b": False}, 1),
    ], {}
    yield "bad-ops", [
        ("bogus", "x", {}, 1), ("inc", "x", {}), ("inc", "x", {}, float("nan")), ("inc", "x", {}, "1"),
        ("inc", "x", [], 1), ("inc", "x", {"k": [1]}, 1), ("inc", "x", {"k": "\ud800"}, 1),
        ("declare", "h", "histogram", "h", (), {"buckets": [1, float("nan")]}),
        ("declare", "g", "gauge", "g", (), {"mode": "nope"}),
        ("declare", "g", "gauge", "g", (), {"buckets": [1]}),
        ("declare", "c", "counter", "c", tuple(f"l{i}" for i in range(17)), {}),
        ("declare", "c", "counter", "c", (), {}, "extra"), 5, (), ["inc", "x", {}, 1],
    ], {0: "shape", 1: "shape", 2: "value", 3: "value", 4: "shape", 5: "shape", 6: "value",
        7: "value", 8: "shape", 9: "shape", 10: "value", 11: "shape", 12: "shape", 13: "shape"}
    # A list holding itself: the second op is the batch, whose first item is not a str.
    rec = [counter]
    rec.append(rec)
    yield "recursive-list", rec, {1: "shape"}
    yield "code", [("inc", "x", {}, 1), int], "code"
    yield "not-a-list", 5, "not_a_list"
    yield "dict-not-a-list", {"inc": 1}, "not_a_list"


def client_py_batch(n):
    """A batch as client-py's Batch.take() builds it: declares, summed incs, set gauges, then
    every observation with its child's labels dict (the same dict object each time)."""
    ops = [("declare", "jobs_total", "counter", "Jobs", ("queue",), {}),
           ("declare", "inflight", "gauge", "In flight", (), {"mode": "livesum"}),
           ("declare", "job_seconds", "histogram", "Job time", ("queue",), {"buckets": [0.1, 1.0, 10.0]}),
           ("declare", "db_seconds", "summary", "DB time", (), {})]
    children = [{"queue": q} for q in ("fast", "slow", "bulk")]
    ops += [("inc", "jobs_total", c, 3.0) for c in children]
    ops.append(("set", "inflight", {}, 4.0))
    i = 0
    while len(ops) < n:
        ops.append(("observe", "job_seconds", children[i % 3], 0.05 * (i % 40)))
        i += 1
    return ops


def metrics_all():
    out = []
    for name, ops, expect in metrics_batches():
        if isinstance(expect, str):
            want = {"error": expect}
        else:
            want = {"ops": [{"error": expect[i]} if i in expect else metric_op(op) for i, op in enumerate(ops)]}
        has_code = expect == "code"
        for proto in PROTOCOLS:
            out.append({"name": f"{name}/p{proto}", "hex": pickle.dumps(("$metrics", ops), protocol=proto).hex(),
                        "has_code": has_code, "expect": want})
        out.append({"name": f"{name}/send", "hex": bytes(ForkingPickler.dumps(("$metrics", ops))).hex(),
                    "has_code": has_code, "expect": want})
    return out


class RunsCommand:
    """Pickles as a call of os.system (the attack the payload policy exists for)."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


class Marker:
    """Pickled as a persistent id by PersistentPickler."""


class PersistentPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return "marker-1" if isinstance(obj, Marker) else None


def p4(payload):
    """("t", <payload>) at protocol 4; payload is opcodes that push one value."""
    return b"\x80\x04\x8c\x01t" + payload + b"\x86."


def p0(payload):
    """("t", <payload>) at protocol 0."""
    return b"(Vt\n" + payload + b"t."


def policy_pickles():
    """(name, pickle bytes) of publishes that import things, every one a ("t", payload)."""
    stock = {
        "datetime": datetime.datetime(2020, 1, 2, 3, 4, 5),
        "date-and-datetime": [datetime.date(2020, 1, 2), datetime.datetime(2021, 1, 1)],
        "decimal": decimal.Decimal("1.25"),
        "set": {1, 2},
        "frozenset": frozenset([3]),
        "bytearray": bytearray(b"ab"),
        "bytes": b"ab",
        "ordered-dict": collections.OrderedDict(a=1),
        "plain-data": {"i": 1, "l": [1.5, None, True], "t": (1, "x")},
        "runs-command": RunsCommand(),
        "point-object": Point(3),
    }
    for name, obj in stock.items():
        for proto in PROTOCOLS:
            yield f"{name}/p{proto}", pickle.dumps(("t", obj), protocol=proto)
        yield f"{name}/send", bytes(ForkingPickler.dumps(("t", obj)))
    for proto in PROTOCOLS:
        f = io.BytesIO()
        PersistentPickler(f, protocol=proto).dump(("t", [1, Marker()]))
        yield f"persistent-id/p{proto}", f.getvalue()
    # copyreg extensions: a pickler writes EXT1/2/4 for registered globals at protocol 2+.
    extensions = [("datetime", "date", 240), ("datetime", "time", 0x1234), ("decimal", "Decimal", 0x123456)]
    for module, name, code in extensions:
        copyreg.add_extension(module, name, code)
    try:
        value = [datetime.date(2020, 1, 2), datetime.time(1, 2), decimal.Decimal("2")]
        for proto in (2, 3, 4, 5):
            yield f"extensions/p{proto}", pickle.dumps(("t", value), protocol=proto)
    finally:
        for module, name, code in extensions:
            copyreg.remove_extension(module, name, code)
    crafted = {
        "os-system-global-p0": p0(b"cos\nsystem\n(Vecho pwned\ntR"),
        "os-system-stack-global-p4": p4(b"\x8c\x02os\x8c\x06system\x93\x8c\x0aecho pwned\x85R"),
        "builtin-eval-p2": b"\x80\x02X\x01\x00\x00\x00tc__builtin__\neval\nX\x01\x00\x00\x001\x85R\x86.",
        "copy-reg-p2": b"\x80\x02X\x01\x00\x00\x00tccopy_reg\n_reconstructor\n\x86.",
        "builtin-set-p3-unmapped": b"\x80\x03X\x01\x00\x00\x00tc__builtin__\nset\n\x86.",
        "proto-switch-midway": b"\x80\x04\x8c\x01t\x80\x02c__builtin__\nset\n\x86.",
        # STACK_GLOBAL takes "os", "system": the two strings seen last went into a popped tuple.
        "stack-global-last-strings-not-consumed": p4(
            b"\x8c\x02os\x8c\x06system\x8c\x08datetime\x8c\x08datetime\x860\x93"),
        # ... or were discarded with their mark.
        "stack-global-after-pop-mark": p4(
            b"\x8c\x02os\x8c\x06system(\x8c\x08datetime\x8c\x08datetime1\x93"),
        # The names come from the memo, stored and popped long before.
        "stack-global-from-memo": p4(
            b"\x8c\x02os\x94\x8c\x06system\x9400\x8c\x08datetime\x940h\x00h\x01\x93"),
        "stack-global-from-put-get-p4": p4(
            b"\x8c\x02osp7\n0\x8c\x06systemp8\n0g7\ng8\n\x93"),
        # Memo entry 0 held "datetime", then is overwritten with "os" (BINPUT 0).
        "stack-global-memo-overwritten": p4(
            b"\x8c\x08datetime\x940\x8c\x02osq\x000h\x00\x8c\x06system\x93"),
        "stack-global-raw-unicode-escape": p4(b"Vo\\u0073\nVsystem\n\x93"),
        "stack-global-computed-name": p4(
            b"\x8c\x02os\x8c\x08builtins\x8c\x03str\x93\x8c\x06system\x85R\x93"),
        "stack-global-int-module": p4(b"K\x01\x8c\x06system\x93"),
        "inst-p0": p0(b"(i__main__\nPoint\n(dVx\nI3\nsb"),
        "inst-builtin-p0": p0(b"(i__builtin__\nobject\n"),
        "obj-p1": b"(X\x01\x00\x00\x00t(c__main__\nPoint\no}X\x01\x00\x00\x00xK\x03sbt.",
        "obj-from-memo-p1": b"(X\x01\x00\x00\x00tc__main__\nPoint\nq\x000(h\x00ot.",
        "obj-list-class-p1": b"(X\x01\x00\x00\x00t(]ot.",
        "ext1-unregistered": p4(b"\x82\x07"),
        "persid-p0": p0(b"Pkey\n"),
    }
    yield from crafted.items()


def policy_vectors():
    out = []
    for name, data in policy_pickles():
        out.append({"name": name, "hex": data.hex(), **recorder.record(data)})
    return out


class Recorder:
    """A Connection wrapper that records the frames one side sends and receives."""

    def __init__(self, conn):
        self.conn, self.frames = conn, []

    def send_bytes(self, data):
        self.frames.append(["send", bytes(data).hex()])
        self.conn.send_bytes(data)

    def recv_bytes(self, maxlength=None):
        data = self.conn.recv_bytes(maxlength)
        self.frames.append(["recv", data.hex()])
        return data


def modern_listener(conn, key):
    """What the mphub broker does, written out (CPython 3.12+ Listener.accept behaves the same)."""
    message = b"{sha256}" + os.urandom(40)
    conn.send_bytes(b"#CHALLENGE#" + message)
    response = conn.recv_bytes(256)
    if len(response) == 16:
        ok = hmac.compare_digest(hmac.new(key, message, "md5").digest(), response)
    else:
        name, _, mac = response[1:].partition(b"}")
        ok = hmac.compare_digest(hmac.new(key, message, name.decode()).digest(), mac)
    if not ok:
        conn.send_bytes(b"#FAILURE#")
        raise connection.AuthenticationError("digest received was wrong")
    conn.send_bytes(b"#WELCOME#")
    challenge = conn.recv_bytes(256)[len(b"#CHALLENGE#"):]
    if len(challenge) == 20:
        conn.send_bytes(hmac.new(key, challenge, "md5").digest())
    else:
        name = challenge[1:challenge.index(b"}")].decode()
        conn.send_bytes(b"{%s}%s" % (name.encode(), hmac.new(key, challenge, name).digest()))
    if conn.recv_bytes(256) != b"#WELCOME#":
        raise connection.AuthenticationError("digest sent was rejected")


def native_listener(conn, key):
    connection.deliver_challenge(conn, key)
    connection.answer_challenge(conn, key)


def transcript(name, listener, listener_key, client_key):
    a, b = connection.Pipe()
    rec = Recorder(a)
    errors = {}

    def run_listener():
        try:
            listener(rec, listener_key)
        except Exception as e:  # noqa: BLE001 - the transcript records the outcome
            errors["listener"] = repr(e)
            a.close()

    t = threading.Thread(target=run_listener)
    t.start()
    try:
        connection.answer_challenge(b, client_key)
        connection.deliver_challenge(b, client_key)
    except Exception as e:  # noqa: BLE001
        errors["client"] = repr(e)
    b.close()
    t.join()
    return {"name": name, "authkey": listener_key.hex(), "client_key": client_key.hex(),
            "frames": rec.frames, "ok": not errors}


def main():
    key = b"mphub test key"
    handshakes = [
        transcript("native", native_listener, key, key),
        transcript("modern-listener", modern_listener, key, key),
        transcript("modern-listener-wrong-key", modern_listener, key, b"other key"),
        transcript("native-wrong-key", native_listener, key, b"other key"),
    ]
    version = "%d.%d" % sys.version_info[:2]
    doc = {"python": sys.version.split()[0], "pickles": dumps_all(), "metrics": metrics_all(),
           "handshakes": handshakes,
           "policy": policy_vectors(),
           "compat_pickle": {"import_mapping": _compat_pickle.IMPORT_MAPPING,
                             "name_mapping": [[list(k), list(v)]
                                              for k, v in sorted(_compat_pickle.NAME_MAPPING.items())]}}
    path = os.path.join(HERE, f"cpython-{version}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=0, ensure_ascii=True)
        f.write("\n")
    print(f"wrote {path}: {len(doc['pickles'])} pickles, {len(doc['metrics'])} metrics batches, "
          f"{len(handshakes)} handshakes")


if __name__ == "__main__":
    main()
