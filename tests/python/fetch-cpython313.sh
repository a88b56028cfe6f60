#!/usr/bin/env bash
# Fetch CPython 3.13 from Debian trixie into a private folder, without touching the machine's own
# apt setup, and print the path of a `python3.13` wrapper that runs it.
#
# Idempotent and cached: a second run only prints the path. The mirror is the one this machine's
# apt already uses (read from its sources), with the suite switched to trixie.
#
#   PY313=$(tests/python/fetch-cpython313.sh)   # then: "$PY313" -c 'import sys; print(sys.version)'
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
cache=${MPHUB_PY313_CACHE:-$here/.cache/cpython313}
wrapper=$cache/python3.13

if [ -x "$wrapper" ] && "$wrapper" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
  echo "$wrapper"
  exit 0
fi

mkdir -p "$cache/apt/lists/partial" "$cache/apt/archives/partial" "$cache/debs" "$cache/root"

# The machine's Debian mirror: first URI of a deb822 or one-line source that serves "debian".
mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -oE 'https?://[^ ]+/debian' | head -n 1 || true)
if [ -z "$mirror" ]; then
  echo "fetch-cpython313: no Debian mirror found in /etc/apt sources" >&2
  exit 1
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] $mirror trixie main" > "$cache/apt/sources.list"

apt_opts=(
  -o "Dir::Etc::sourcelist=$cache/apt/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$cache/apt/lists"
  -o "Dir::Cache::archives=$cache/apt/archives"
  -o "Dir::State::status=/dev/null"
  -o "APT::Get::List-Cleanup=0"
  -o "Debug::NoLocking=1"
)
apt-get "${apt_opts[@]}" -qq update >&2

# python3.13 and what it links against, newest trixie builds (libc6 first: the loader).
pkgs=(libc6 python3.13 python3.13-minimal libpython3.13-minimal libpython3.13-stdlib
      libexpat1 zlib1g libssl3t64 libffi8 libbz2-1.0 liblzma5 libzstd1 libsqlite3-0
      libncursesw6 libtinfo6 libreadline8t64 libuuid1 libgdbm6t64 libdb5.3t64 libmpdec4 libcrypt1)
(cd "$cache/debs" && apt-get "${apt_opts[@]}" -o APT::Sandbox::User=root -qq download "${pkgs[@]}" >&2)
for deb in "$cache"/debs/*.deb; do dpkg -x "$deb" "$cache/root"; done

root=$cache/root
libs=$root/usr/lib/x86_64-linux-gnu
cat > "$wrapper" <<WRAP
#!/bin/sh
# CPython 3.13 from Debian trixie, run through its own loader and libraries.
PYTHONHOME=$root/usr exec $root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $libs $root/usr/bin/python3.13 "\$@"
WRAP
chmod +x "$wrapper"
"$wrapper" -c 'import sys, multiprocessing.connection; assert sys.version_info[:2] == (3, 13)' >&2
echo "$wrapper"
