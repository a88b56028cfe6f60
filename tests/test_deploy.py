"""deploy/ against the real broker: every metric the dashboard and the alerts query exists in a
real /metrics scrape, and the files agree with each other and with the code."""

import json
import re
import urllib.request
from multiprocessing.connection import Client

import pytest
from conftest import KEY, ROOT
from scenarios import barrier, subscribe

yaml = pytest.importorskip("yaml")  # PyYAML: CI installs it
DEPLOY = ROOT / "deploy"


def scrape(broker):
    with urllib.request.urlopen(broker.metrics_url, timeout=10) as r:
        return r.read().decode()


def sample_names(text):
    return {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            for line in text.splitlines() if line and not line.startswith("#")}


def queried(expr):
    names = set(re.findall(r"\b((?:mphub|process)_[a-z_]+)\b", expr))
    return names


@pytest.fixture
def live(start_broker):
    """A broker with metrics on that has carried a little traffic."""
    b = start_broker(metrics="127.0.0.1:0")
    c = Client(b.address, authkey=KEY)
    subscribe(c, "d.x")
    c.send(("d.x", 1))
    barrier(c)
    return b


def test_every_metric_the_dashboard_queries_is_in_a_real_scrape(live):
    dashboard = json.loads((DEPLOY / "grafana/mphub-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 14
    have = sample_names(scrape(live))
    missing = {n for e in exprs for n in queried(e)} - have
    assert not missing, f"the dashboard queries metrics the broker does not export: {missing}"


def test_every_metric_the_alerts_use_is_in_a_real_scrape(live):
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    have = sample_names(scrape(live))
    missing = {n for e in exprs for n in queried(e)} - have
    assert not missing, f"alerts use metrics the broker does not export: {missing}"
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} >= {
        "MphubDown", "MphubSlowConsumersDisconnected", "MphubAuthFailuresSpiking",
        "MphubOutboundQueueNearLimit", "MphubConnectionsNearCap",
    }


def test_the_kubernetes_manifests_agree_with_each_other():
    docs = {}
    for f in (DEPLOY / "kubernetes").glob("*.yaml"):
        d = yaml.safe_load(f.read_text())
        docs[d["kind"]] = d
    service, monitor, deploy = docs["Service"], docs["ServiceMonitor"], docs["Deployment"]
    assert set(docs["Kustomization"]["resources"]) == {
        p.name for p in (DEPLOY / "kubernetes").glob("*.yaml") if p.name != "kustomization.yaml"}
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert all(e["port"] in ports for e in monitor["spec"]["endpoints"])
    assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "/run/secrets/mphub/authkey" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_compose_file_builds_the_dockerfile_and_mounts_the_prometheus_files():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    build = compose["services"]["mphub"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).exists()
    for volume in compose["services"]["prometheus"]["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).exists(), volume
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["mphub:6001"]


def test_the_image_refuses_to_start_without_an_authkey():
    """What the Dockerfile's CMD does with no secret mounted: one clear line, non-zero exit."""
    import os
    import subprocess
    from conftest import mphub_binary
    env = {k: v for k, v in os.environ.items() if k != "MPHUB_AUTHKEY"}
    r = subprocess.run([str(mphub_binary()), "--config", str(DEPLOY / "mphub.toml"),
                        "--listen", "0.0.0.0:0", "--metrics", "off",
                        "--authkey-file", "/run/secrets/does-not-exist"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode != 0
    assert "does-not-exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([str(mphub_binary()), "--config", str(DEPLOY / "mphub.toml"),
                        "--listen", "0.0.0.0:0", "--metrics", "off"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode != 0 and "authkey" in r.stderr
