# One entry point for every check. `make check` is what CI runs (through .ci/run).
PYTHON ?= python3
CARGO ?= cargo

.PHONY: check fmt clippy doc test test-rust test-e2e build py313 vectors fuzz bench loadgen

check: fmt clippy doc test

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --all-features

test: test-rust test-e2e

test-rust: py313
	$(CARGO) test --workspace --all-features

build:
	$(CARGO) build --release -p mphub-broker

# CPython 3.13 from Debian trixie into .cache/ (idempotent, cached).
py313:
	tests/python/fetch-cpython313.sh >/dev/null

test-e2e: build py313
	cd tests && $(PYTHON) -m pytest -q

# Regenerate the protocol test vectors with both CPythons.
vectors: py313
	$(PYTHON) protocol/tests/vectors/generate.py
	.cache/cpython313/python3.13 protocol/tests/vectors/generate.py

# Both fuzz targets, 10 minutes each (needs `cargo install cargo-fuzz`).
fuzz:
	protocol/fuzz/run.sh 600

bench:
	$(CARGO) bench -p mphub-protocol

# Throughput, latency, CPU and memory figures against the release binary (see docs/performance.md).
loadgen: build
	$(CARGO) bench -p mphub-broker --bench loadgen
