"""Cross-node delivery against the same workload on one node: what `--cluster` costs.

    python3 bench/cluster.py [--quick] [--runs N]        (or: make bench-cluster)

Topologies, all on loopback and measured in the same run, interleaved:
  one node          publisher and subscribers on one mphub, no NATS (the baseline)
  one node+NATS     the same on a node joined to NATS (the bridge's cost on local traffic)
  cross-node        publisher on node A, subscribers on node B, one nats-server
  cross-node routed A on nats-server n0, B on n1, the two NATS servers routed
Workloads: throughput of 5,000 small dicts to 1 and 4 subscribers (client-py, and the stock
Client), and one-way latency at 1,000 msgs/s (stock Client). Reports medians of the runs and the
ratio to the baseline. Needs nats-server (Debian) and the release mphub binary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "python"))

from compare import SMALL, latency, throughput  # noqa: E402
from natsserver import NatsServer, routed_cluster  # noqa: E402
from systems import Server  # noqa: E402
from systems import mphub_py, mphub_stock  # noqa: E402


def start_node(*args):
    """An mphub node (optionally on NATS); returns (process, address)."""
    server = mphub_stock.start(None, *args)
    return server.procs[0], server.addr


class Topology:
    """Where the publisher and the subscribers connect, and every process to charge CPU to."""

    def __init__(self, name, pub, sub, procs, nats=()):
        self.name, self.pub, self.sub, self.nats = name, pub, sub, list(nats)
        self.cpu = Server(procs + [n.proc for n in self.nats], sub)

    def adapter(self, base):
        """`base` (an adapter of bench/systems) with the publisher on `pub`, subscribers on `sub`."""
        pub_server = Server([], self.pub)
        return types.SimpleNamespace(publisher=lambda _server, paced=False: base.publisher(pub_server, paced),
                                     subscribe=base.subscribe)

    def stop(self):
        self.cpu.stop()
        for n in self.nats:
            n.stop()


def topologies():
    out = []
    p, a = start_node()
    out.append(Topology("one node", a, a, [p]))
    n = NatsServer("solo")
    p, a = start_node("--cluster", n.url)
    out.append(Topology("one node+NATS", a, a, [p], [n]))
    n = NatsServer("shared")
    (pa, a), (pb, b) = start_node("--cluster", n.url), start_node("--cluster", n.url)
    out.append(Topology("cross-node", a, b, [pa, pb], [n]))
    n0, n1 = routed_cluster(2)
    (pa, a), (pb, b) = start_node("--cluster", n0.url), start_node("--cluster", n1.url)
    out.append(Topology("cross-node routed", a, b, [pa, pb], [n0, n1]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n = 2_000 if args.quick else 5_000
    seconds = 1.0 if args.quick else 3.0
    tops = topologies()
    res: dict[str, list] = {}
    try:
        for run in range(args.runs):
            for t in tops:
                for system, base in (("mphub_py", mphub_py), ("mphub_stock", mphub_stock)):
                    for k in (1, 4):
                        r = throughput(t.adapter(base), system, t.cpu, k, SMALL, n)
                        res.setdefault(f"{system} 1->{k}|{t.name}", []).append(r)
                        print(f"run {run + 1}: {t.name:18} {system:12} 1->{k} {r['rate']:>10,.0f} msgs/s "
                              f"loss {r['loss']}", file=sys.stderr, flush=True)
                r = latency(t.adapter(mphub_stock), "mphub_stock", t.cpu, 1000, seconds)
                r.pop("all")
                res.setdefault(f"latency|{t.name}", []).append(r)
                print(f"run {run + 1}: {t.name:18} latency p50 {r['p50']:.0f} µs p99 {r['p99']:.0f} µs",
                      file=sys.stderr, flush=True)
    finally:
        for t in tops:
            t.stop()
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cluster.json").write_text(json.dumps({"runs": args.runs, "n": n, "results": res}))
    print(report(res, [t.name for t in tops], args.runs, n))


def report(res, names, runs, n):
    med = statistics.median
    lines = [f"Medians of {runs} runs, {n:,} small dicts per throughput run; ratio to `one node` in brackets.", "",
             "| workload | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for w in ("mphub_py 1->1", "mphub_py 1->4", "mphub_stock 1->1", "mphub_stock 1->4"):
        base = med(r["rate"] for r in res[f"{w}|{names[0]}"])
        cells = []
        for name in names:
            rate = med(r["rate"] for r in res[f"{w}|{name}"])
            loss = sum(r["loss"] for r in res[f"{w}|{name}"])
            cells.append(f"{rate:,.0f}/s ({rate / base:.2f}x)" + (f", lost {loss}" if loss else ""))
        lines.append(f"| {w.replace('mphub_py', 'client-py').replace('mphub_stock', 'stock')} delivered | "
                     + " | ".join(cells) + " |")
    for q in ("p50", "p99"):
        base = med(r[q] for r in res[f"latency|{names[0]}"])
        cells = [f"{med(r[q] for r in res[f'latency|{name}']):.0f} µs "
                 f"({med(r[q] for r in res[f'latency|{name}']) / base:.2f}x)" for name in names]
        lines.append(f"| latency {q} at 1k msgs/s (stock) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
