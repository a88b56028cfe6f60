"""Every row of the message table, with stock Client from CPython 3.11 and 3.13."""

import pytest
import scenarios
from conftest import KEY, ROOT, run_py313


@pytest.mark.parametrize("name", sorted(scenarios.SCENARIOS))
def test_stock_client_behaviour(name, interpreter, broker):
    if interpreter is None:
        scenarios.SCENARIOS[name](broker.address, KEY)
    else:
        r = run_py313(ROOT / "tests/python/scenarios.py", name, broker.addrs[0], KEY.hex())
        assert r.returncode == 0, r.stderr + "\n" + broker.log()
        assert f"ok {name} 3.13" in r.stdout
