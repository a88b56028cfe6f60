#!/usr/bin/env bash
# Run both fuzz targets for SECONDS each (default 600), one after the other, seeding the scanner
# with the CPython vectors. Needs cargo-fuzz (`cargo install cargo-fuzz`); the stable toolchain
# is told to allow the nightly flags it uses.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
export RUSTC_BOOTSTRAP=1
for target in frame_decoder envelope_scanner; do
  mkdir -p "corpus/$target"
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 \
    | tee "/tmp/fuzz-$target.log" | grep -E '^(#[0-9]+ +DONE|Done|==|SUMMARY)|panicked' || true
done
