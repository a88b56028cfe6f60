#!/usr/bin/env bash
# Run both fuzz targets for SECONDS each (default 600), one after the other, seeding the scanner
# with the CPython vectors (every pickle in ../tests/vectors/*.json) and a dictionary of the
# opcodes and names the payload policy judges. Needs cargo-fuzz (`cargo install cargo-fuzz`);
# the stable toolchain is told to allow the nightly flags it uses.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
export RUSTC_BOOTSTRAP=1
mkdir -p corpus/envelope_scanner
python3 - <<'PY'
import glob, hashlib, json, os
for path in glob.glob("../tests/vectors/cpython-*.json"):
    doc = json.load(open(path))
    for v in doc["pickles"] + doc.get("policy", []):
        data = bytes.fromhex(v["hex"])
        name = os.path.join("corpus/envelope_scanner", "vec-" + hashlib.sha1(data).hexdigest())
        if not os.path.exists(name):
            open(name, "wb").write(data)
PY
for target in frame_decoder envelope_scanner; do
  mkdir -p "corpus/$target"
  dict=()
  [ "$target" = envelope_scanner ] && dict=(-dict=pickle.dict)
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=2048 "${dict[@]}" 2>&1 \
    | tee "/tmp/fuzz-$target.log" | grep -E '^(#[0-9]+ +DONE|Done|==|SUMMARY)|panicked' || true
done
