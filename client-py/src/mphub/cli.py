"""`python -m mphub sub|pub|ping`: the hub from a shell.

    python -m mphub sub 'sensors.>'            print messages as they come
    python -m mphub pub sensors.temp '{"v": 21.5}'   VALUE is a Python literal
    python -m mphub ping                       round trip to the broker

Address and authkey: --address / --authkey, else $MPHUB_ADDRESS / $MPHUB_AUTHKEY.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from typing import List, Optional

from .client import Hub
from .errors import MphubError, SubscriptionClosed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mphub", description="Talk to an mphub broker.")
    p.add_argument(
        "-a", "--address", help="host:port or unix:/path (default $MPHUB_ADDRESS, else 127.0.0.1:6000)"
    )
    p.add_argument("-k", "--authkey", help="the authkey (default $MPHUB_AUTHKEY)")
    cmds = p.add_subparsers(dest="command", required=True)
    sub = cmds.add_parser("sub", help="print messages on a pattern as they come")
    sub.add_argument("pattern")
    sub.add_argument("-g", "--group", help="join this queue group")
    sub.add_argument("-n", "--count", type=int, help="exit after this many messages")
    pub = cmds.add_parser("pub", help="publish one message")
    pub.add_argument("topic")
    pub.add_argument("value", help="a Python literal: 1, 'text', {'v': 1.5}, [1, 2]; else taken as a string")
    ping = cmds.add_parser("ping", help="round trip to the broker")
    ping.add_argument("-n", "--count", type=int, default=1)
    return p


def _literal(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    key = args.authkey.encode() if args.authkey is not None else None
    try:
        with Hub(args.address, authkey=key, reconnect=args.command == "sub") as hub:
            if args.command == "pub":
                hub.publish(args.topic, _literal(args.value))
                hub.flush()
            elif args.command == "ping":
                for _ in range(args.count):
                    t = time.perf_counter()
                    hub.flush()
                    print(f"pong from {hub.address} in {(time.perf_counter() - t) * 1e3:.3f} ms", flush=True)
            else:
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
                    print(f"{msg.topic} {msg.payload!r}", flush=True)
                    seen += 1
    except KeyboardInterrupt:
        return 130
    except (MphubError, ValueError, TypeError) as e:
        print(f"mphub: {e}", file=sys.stderr)
        return 1
    return 0
