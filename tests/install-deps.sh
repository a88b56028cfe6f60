#!/usr/bin/env bash
# Installs what the tests run that a fresh machine may lack, and nothing when it is all there
# (`make check` runs this first; pip packages go into .venv/ through tests/requirements.txt):
#   prometheus (promtool), systemd (systemd-analyze)  deploy/check.sh validates deploy/
#   nats-server, openssl                              the cluster tests, over TLS too; TLS listeners
#   socat, stunnel4                                   stock clients through a TLS tunnel (docs/tls.md)
#   chromium                                          the status page, tested in a real browser
#   iproute2 (ss)                                     the keepalive timer on the broker's sockets
#   python3-venv                                      .venv/ where python3 lacks ensurepip (Debian)
#   rustfmt, clippy (rustup components)               make fmt, make clippy
# Debian packages come from apt-get, as root or through `sudo -n`. CPython 3.13 is fetched apart,
# into .cache/ (tests/python/fetch-cpython313.sh, which needs apt-get and dpkg too).
set -euo pipefail

missing=()
need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || missing+=("$2")
}
need promtool prometheus
need systemd-analyze systemd
need nats-server nats-server
need openssl openssl
need socat socat
need stunnel4 stunnel4
need chromium chromium
need ss iproute2
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "install-deps: apt-get not found; install these Debian packages by hand: ${missing[*]}" >&2
    exit 1
  fi
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! sudo -n true 2>/dev/null; then
      echo "install-deps: need root or passwordless sudo to install: ${missing[*]}" >&2
      exit 1
    fi
    as_root=(sudo -n)
  fi
  echo "install-deps: installing from Debian: ${missing[*]}" >&2
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

for tool in dpkg apt-get; do
  command -v "$tool" >/dev/null || { echo "install-deps: $tool is needed to fetch CPython 3.13" >&2; exit 1; }
done

if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
