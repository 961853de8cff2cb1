#!/usr/bin/env bash
# Build the fuzz targets and run each once over its committed seeds and regression inputs and
# the real test files (no fuzzing): a finding that comes back fails. Used by .ci/run; needs
# cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")"
cargo fuzz build --sanitizer none -O
bin=target/x86_64-unknown-linux-gnu/release
data=${MEDSEG_TESTDATA:-../target/testdata}
for t in checkpoint dicom nifti png prompt; do
  # One folder per target (libFuzzer takes folders or files, not both): the committed seeds
  # and regressions, and the real files when tests/data/fetch.sh has run.
  dir=target/replay/$t
  rm -rf "$dir" && mkdir -p "$dir"
  for d in seeds/$t regressions/$t; do
    if [ -d "$d" ]; then find "$d" -type f -exec cp {} "$dir"/ \;; fi
  done
  case $t in
    checkpoint) cp ../tests/fixtures/hostile/* "$dir"/ ;;
    dicom) cp "$data"/*.dcm "$dir"/ 2>/dev/null || true ;;
    nifti) cp "$data"/*.nii "$data"/*.nii.gz "$dir"/ 2>/dev/null || true ;;
  esac
  n=$(ls "$dir" | wc -l)
  # -runs=0: run every input once, no fuzzing.
  "$bin/$t" -runs=0 -rss_limit_mb=2048 -timeout=30 "$dir" >"target/replay-$t.log" 2>&1 \
    || { tail -30 "target/replay-$t.log"; echo "fuzz replay: $t FAILED"; exit 1; }
  echo "fuzz replay: $t: $n inputs, no finding"
done
