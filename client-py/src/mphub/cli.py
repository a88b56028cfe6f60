"""`python -m mphub` (also the `mphub-cli` script): the hub from a shell.

    python -m mphub sub 'sensors.>'                  print messages as they come
    python -m mphub pub sensors.temp '{"v": 21.5}'   publish (VALUE as JSON or a Python literal)
    python -m mphub req svc.echo '[1, 2]'            a request; prints the reply
    python -m mphub reply svc.echo '"pong"'          answer requests (echo them without VALUE)
    python -m mphub ping                             round trip to the broker
    python -m mphub info                             connections and subscriptions, as tables

A VALUE is read as a Python literal (`'text'`, `(1, 2)`, `True`), else as JSON (`true`,
`null`), else taken as a plain string; without VALUE, `pub` and `req` read one value per line
from stdin. Address: --address, else $MPHUB_ADDRESS. Key: --authkey-file (the file's bytes, one
trailing newline stripped, as the broker reads its own), else $MPHUB_AUTHKEY; never on the
command line, where `ps` and shell history would show it. `info` reads the broker's HTTP
endpoint: --http, else $MPHUB_HTTP, else http://127.0.0.1:6001.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Sequence

from .client import Hub
from .errors import MphubError, SubscriptionClosed

DEFAULT_HTTP = "http://127.0.0.1:6001"


class _KeyOnCommandLine(argparse.Action):
    """`-k`/`--authkey` was the old way; refuse it and say why."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            "keys never go on the command line (ps and shell history show them): "
            "use --authkey-file PATH or the MPHUB_AUTHKEY environment variable"
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mphub",
        description="Talk to an mphub broker.",
        epilog="VALUE: a Python literal, else JSON, else a plain string; '-' or none reads stdin.",
    )
    p.add_argument(
        "-a",
        "--address",
        help="host:port, unix:/path or tls://host:port (default $MPHUB_ADDRESS, else 127.0.0.1:6000)",
    )
    p.add_argument("--authkey-file", metavar="PATH", help="file holding the authkey (default $MPHUB_AUTHKEY)")
    p.add_argument("-k", "--authkey", nargs="?", action=_KeyOnCommandLine, help=argparse.SUPPRESS)
    p.add_argument("--name", help="this connection's name on the broker (default mphub-cli COMMAND[pid])")
    p.add_argument("--tls-ca", metavar="PATH", help="TLS: the CA certificates (PEM) that signed the broker's")
    p.add_argument(
        "--tls-cert",
        metavar="PATH",
        help="TLS: this client certificate (PEM), for a broker with tls_client_ca",
    )
    p.add_argument("--tls-key", metavar="PATH", help="TLS: the client certificate's private key (PEM)")
    cmds = p.add_subparsers(dest="command", required=True)

    sub = cmds.add_parser("sub", help="print messages on a pattern as they come")
    sub.add_argument("pattern")
    sub.add_argument("-g", "--group", help="join this queue group")
    sub.add_argument("-n", "--count", type=int, help="exit after this many messages")
    sub.add_argument("-j", "--json", action="store_true", help="print payloads as JSON")

    pub = cmds.add_parser("pub", help="publish a message (or one per line of stdin)")
    pub.add_argument("topic")
    pub.add_argument("value", nargs="?", default="-", help="the payload (default: stdin, one per line)")

    req = cmds.add_parser("req", help="send a request and print the reply (PROTOCOL §9)")
    req.add_argument("topic")
    req.add_argument("value", nargs="?", default="-", help="the request body (default: stdin, one per line)")
    req.add_argument("-t", "--timeout", type=float, default=5.0, help="seconds to wait for a reply (5)")
    req.add_argument("-j", "--json", action="store_true", help="print replies as JSON")

    rep = cmds.add_parser("reply", help="answer requests on a topic")
    rep.add_argument("topic")
    rep.add_argument("value", nargs="?", help="the answer to every request (default: echo the body)")
    rep.add_argument(
        "-g", "--group", default="mphub-cli", help="queue group, so several responders share (mphub-cli)"
    )
    rep.add_argument("-n", "--count", type=int, help="exit after this many requests")

    ping = cmds.add_parser("ping", help="round trip to the broker")
    ping.add_argument("-n", "--count", type=int, default=1)

    info = cmds.add_parser("info", help="the broker's connections and subscriptions, as tables")
    info.add_argument("--http", help=f"the broker's HTTP endpoint (default $MPHUB_HTTP, else {DEFAULT_HTTP})")
    info.add_argument(
        "--sort",
        default="id",
        help="order of connections: id, queued_bytes, messages_in, messages_out, subscriptions, ...",
    )
    info.add_argument("--limit", type=int, default=100, help="most rows per table (100)")
    info.add_argument("-j", "--json", action="store_true", help="print the endpoints' JSON as it is")
    return p


# ------------------------------------------------------------------ values


def parse_value(text: str) -> object:
    """A Python literal, else JSON, else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def _values(arg: str) -> Iterator[object]:
    """The argument's value, or one per non-empty line of stdin for '-'."""
    if arg != "-":
        yield parse_value(arg)
        return
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line.strip():
            yield parse_value(line)


def _show(value: object, as_json: bool) -> str:
    if as_json:
        return json.dumps(value, default=repr, ensure_ascii=False)
    return repr(value)


def read_authkey(path: Optional[str]) -> Optional[bytes]:
    """The bytes of `path` with one trailing newline stripped (as the broker reads its key);
    None without a path (the hub then takes $MPHUB_AUTHKEY)."""
    if path is None:
        return None
    with open(path, "rb") as f:
        key = f.read()
    if key.endswith(b"\r\n"):
        key = key[:-2]
    elif key.endswith(b"\n"):
        key = key[:-1]
    if not key:
        raise ValueError(f"{path} is empty")
    return key


# ------------------------------------------------------------------ commands over a connection


def _sub(hub: Hub, args: argparse.Namespace) -> None:
    sub = hub.subscribe(args.pattern, group=args.group)
    print(f"listening on {args.pattern!r} at {hub.address}", file=sys.stderr, flush=True)
    seen = 0
    while args.count is None or seen < args.count:
        try:
            msg = sub.next()
        except SubscriptionClosed:
            break
        except MphubError as e:  # e.g. SlowConsumerError: say so and go on
            print(f"mphub: {e}", file=sys.stderr, flush=True)
            continue
        print(f"{msg.topic} {_show(msg.payload, args.json)}", flush=True)
        seen += 1


def _req(hub: Hub, args: argparse.Namespace) -> None:
    for value in _values(args.value):
        print(_show(hub.request(args.topic, value, timeout=args.timeout), args.json), flush=True)


def _reply(hub: Hub, args: argparse.Namespace) -> None:
    answer = None if args.value is None else parse_value(args.value)
    sub = hub.subscribe(args.topic, group=args.group or None)
    print(f"answering requests on {args.topic!r} at {hub.address}", file=sys.stderr, flush=True)
    served = 0
    while args.count is None or served < args.count:
        try:
            msg = sub.next()
        except SubscriptionClosed:
            break
        except MphubError as e:
            print(f"mphub: {e}", file=sys.stderr, flush=True)
            continue
        p = msg.payload
        if not (isinstance(p, dict) and isinstance(p.get("reply_to"), str)):
            print(f"{msg.topic} {p!r} (not a request: no reply_to)", file=sys.stderr, flush=True)
            continue
        body = p.get("body")
        print(f"{msg.topic} {body!r}", flush=True)
        hub.publish(p["reply_to"], body if answer is None else answer)
        hub.flush()
        served += 1


def _ping(hub: Hub, args: argparse.Namespace) -> None:
    for _ in range(args.count):
        t = time.perf_counter()
        hub.flush()
        print(f"pong from {hub.address} in {(time.perf_counter() - t) * 1e3:.3f} ms", flush=True)


# ------------------------------------------------------------------ info, from the HTTP endpoint


def _get(base: str, path: str, query: Dict[str, Any]) -> Any:
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        try:
            reason = json.load(e).get("error", e.reason)
        except ValueError:
            reason = e.reason
        raise MphubError(f"{url}: {reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise MphubError(f"cannot read {url}: {getattr(e, 'reason', e)} (is --metrics on?)") from None


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """Rows under their headers, columns padded to their widest cell (`right`: right-aligned)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    x = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        x /= 1024
        if x < 1024 or unit == "GiB":
            break
    return f"{x:.1f} {unit}"


def _pattern(s: Dict[str, Any]) -> str:
    return s["pattern"] if s.get("group") is None else f"{s['pattern']} <{s['group']}>"


def _info(args: argparse.Namespace) -> None:
    base = args.http or os.environ.get("MPHUB_HTTP") or DEFAULT_HTTP
    conns = _get(base, "/connections", {"sort": args.sort, "limit": args.limit})
    subs = _get(base, "/subscriptions", {"limit": args.limit})
    if args.json:
        print(json.dumps({"connections": conns, "subscriptions": subs}, indent=2))
        return
    rows = [
        (
            c["id"],
            c["name"] if c["name"] is not None else "-",
            c["user"],
            c["peer"],
            ", ".join(_pattern(s) for s in c["subscriptions"]) or "-",
            _size(c["queued_bytes"]),
            c["messages_in"],
            c["messages_out"],
            c["since"],
        )
        for c in conns["connections"]
    ]
    shown = f"{len(rows)} of {conns['total']}" if conns["total"] > len(rows) else str(conns["total"])
    print(f"connections ({shown}, by {args.sort})")
    print(
        table(
            ("ID", "NAME", "USER", "PEER", "SUBSCRIPTIONS", "QUEUED", "IN", "OUT", "SINCE"),
            rows,
            right=(0, 5, 6, 7),
        )
    )
    lines = [(s["pattern"], s["group"] or "-", s["subscribers"]) for s in subs["subscriptions"]]
    shown = f"{len(lines)} of {subs['total']}" if subs["total"] > len(lines) else str(subs["total"])
    print(f"\nsubscriptions ({shown})")
    print(table(("PATTERN", "GROUP", "SUBSCRIBERS"), lines, right=(2,)))


# ------------------------------------------------------------------ main


def _tls(args: argparse.Namespace) -> Dict[str, Any]:
    """`tls=` for the hub when a `--tls-*` flag is given (the flags of `nats --tlsca --tlscert
    --tlskey`); without them a `tls://` address verifies against the system's CAs."""
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return {}
    import ssl

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    ctx = ssl.create_default_context(cafile=args.tls_ca)
    if args.tls_cert:
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    return {"tls": ctx}


_COMMANDS = {"sub": _sub, "req": _req, "reply": _reply, "ping": _ping}


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "info":
            _info(args)
            return 0
        key = read_authkey(args.authkey_file)
        name = args.name or f"mphub-cli {args.command}[{os.getpid()}]"
        reconnect = args.command in ("sub", "reply")
        with Hub(args.address, authkey=key, name=name, reconnect=reconnect, **_tls(args)) as hub:
            if args.command == "pub":
                for value in _values(args.value):
                    hub.publish(args.topic, value)
                hub.flush()
            else:
                _COMMANDS[args.command](hub, args)
    except KeyboardInterrupt:
        return 130
    except (MphubError, ValueError, TypeError, OSError) as e:
        print(f"mphub: {e}", file=sys.stderr)
        return 1
    return 0
