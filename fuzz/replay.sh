#!/usr/bin/env bash
# Build the fuzz targets and run each once over its committed seeds and regression inputs
# (no fuzzing): a finding that comes back fails. Used by .ci/run; needs cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")"
cargo fuzz build --sanitizer none -O
bin=target/x86_64-unknown-linux-gnu/release
for t in checkpoint dicom nifti png prompt; do
  dirs=()
  for d in seeds/$t regressions/$t; do [ -d "$d" ] && dirs+=("$d"); done
  n=$(find "${dirs[@]}" -type f | wc -l)
  # Directories are read as corpora; -runs=0 stops after running every input once.
  "$bin/$t" -runs=0 -rss_limit_mb=2048 -timeout=30 "${dirs[@]}" >"target/replay-$t.log" 2>&1 \
    || { tail -30 "target/replay-$t.log"; echo "fuzz replay: $t FAILED"; exit 1; }
  echo "fuzz replay: $t: $n inputs, no finding"
done
