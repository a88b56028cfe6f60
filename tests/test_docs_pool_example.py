"""The `multiprocessing.Pool` example of docs/worker-metrics.md, run as written (address and key
swapped for the test broker's): every worker closes its hub on exit, so no increment is lost."""

import os
import re
import subprocess
import sys

from conftest import KEY, ROOT
from test_worker_metrics import scrape, value


def pool_example():
    text = (ROOT / "docs" / "worker-metrics.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (code,) = [b for b in blocks if "multiprocessing.Pool(" in b]
    return code


def test_the_pool_example_closes_every_hub_so_the_totals_are_whole(start_broker, tmp_path):
    b = start_broker(metrics="127.0.0.1:0")
    code = pool_example()
    assert 'mphub.connect("127.0.0.1:6000", authkey=b"secret")' in code
    code = code.replace('mphub.connect("127.0.0.1:6000", authkey=b"secret")',
                        f"mphub.connect({b.addrs[0]!r}, authkey={KEY!r})")
    script = tmp_path / "pool_example.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "client-py" / "src")}
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # Ten thousand quick tasks end well within one metrics_interval: without the close on
    # exit, the last batch of every worker would be lost.
    assert value(scrape(b), 'tasks_done_total{kind="resize"}') == 10_000
