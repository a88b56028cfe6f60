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


# --------------------------------------------------------------------------- the cluster files


def test_every_metric_the_cluster_alerts_use_is_in_a_real_scrape_of_a_cluster_node(start_broker):
    from natsserver import free_port

    # No NATS there: the bridge's metrics exist from the start all the same.
    node = start_broker("--cluster", f"nats://127.0.0.1:{free_port()}", metrics="127.0.0.1:0")
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts-cluster.yml").read_text())
    used = set().union(*(queried(r["expr"]) for g in rules["groups"] for r in g["rules"]))
    missing = used - sample_names(scrape(node))
    assert not missing, f"cluster alerts use metrics the broker does not export: {missing}"


def strategic_merge(base, patch):
    """The part of kubectl's strategic merge these manifests use: maps merge, lists of named
    objects merge by name (mountPath for volume mounts), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and patch and isinstance(patch[0], dict):
        key = "mountPath" if "mountPath" in patch[0] else "name"
        out = list(base)
        for item in patch:
            same = [i for i, b in enumerate(out) if b.get(key) == item.get(key)]
            if same:
                out[same[0]] = strategic_merge(out[same[0]], item)
            else:
                out.append(item)
        return out
    return patch


def test_the_cluster_kustomization_makes_a_valid_deployment_beside_nats(tmp_path):
    import subprocess
    import sys

    k = DEPLOY / "kubernetes/cluster"
    kust = yaml.safe_load((k / "kustomization.yaml").read_text())
    assert all((k / r).exists() for r in kust["resources"])
    base = yaml.safe_load((DEPLOY / "kubernetes/deployment.yaml").read_text())
    deploy = strategic_merge(base, yaml.safe_load((k / "mphub-cluster.yaml").read_text()))
    merged = tmp_path / "deployment.yaml"
    merged.write_text(yaml.safe_dump(deploy))
    r = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(merged)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

    nats = {d["kind"] + "/" + d["metadata"]["name"]: d for d in yaml.safe_load_all((k / "nats.yaml").read_text())}
    secret = yaml.safe_load((k / "nats-secret.yaml").read_text())
    pod = deploy["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert deploy["spec"]["replicas"] == 3
    assert args[args.index("--cluster") + 1] == "nats://nats:4222" and "Service/nats" in nats
    token = args[args.index("--cluster-token-file") + 1]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if token.startswith(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert "/run/secrets/mphub/authkey" in args  # the base's settings are kept
    sts = nats["StatefulSet/nats"]
    assert sts["spec"]["serviceName"] == "nats-cluster" and "Service/nats-cluster" in nats
    config = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    assert config["configMap"]["name"] == kust["configMapGenerator"][0]["name"]
    routes = re.findall(r"nats://(nats-\d)\.nats-cluster:6222", (k / "nats.conf").read_text())
    assert routes == [f"nats-{i}" for i in range(sts["spec"]["replicas"])]


def test_the_cluster_compose_file_wires_nodes_to_nats_and_prometheus_to_nodes():
    compose = yaml.safe_load((DEPLOY / "compose-cluster.yaml").read_text())
    services = compose["services"]
    nodes = [n for n in services if n.startswith("mphub-")]
    nats = [n for n in services if n.startswith("nats-")]
    assert len(nodes) == 3 and len(nats) == 3
    aliases = {a for n in nats for a in services[n]["networks"]["default"]["aliases"]}
    for n in nodes:
        cmd = services[n]["command"]
        hosts = set(re.findall(r"nats://([^:,]+):4222", cmd[cmd.index("--cluster") + 1]))
        assert hosts == aliases, n
        assert (DEPLOY / services[n]["build"]["context"] / services[n]["build"]["dockerfile"]).exists()
    for s in services.values():
        for volume in s.get("volumes", []):
            assert (DEPLOY / volume.split(":")[0]).exists(), volume
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus-cluster.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"{n}:6001" for n in nodes]
