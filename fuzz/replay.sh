#!/usr/bin/env bash
# Build the fuzz targets and run each once over its committed seeds and regression inputs and
# the real test files (no fuzzing): a finding that comes back fails. Used by .ci/run; needs
# cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")"
cargo fuzz build --sanitizer none -O
bin=target/x86_64-unknown-linux-gnu/release
data=${MEDSEG_TESTDATA:-../target/testdata}
# The fuzzing corpus (seeds, findings, hostile checkpoints, real files), plus every real NIfTI.
rm -rf target/replay
bash corpus.sh target/replay >/dev/null
cp "$data"/*.nii.gz target/replay/nifti/
for t in checkpoint dicom nifti png prompt seg; do
  dir=target/replay/$t
  n=$(ls "$dir" | wc -l)
  # -runs=0: run every input once, no fuzzing.
  "$bin/$t" -runs=0 -rss_limit_mb=2048 -timeout=30 "$dir" >"target/replay-$t.log" 2>&1 \
    || { tail -30 "target/replay-$t.log"; echo "fuzz replay: $t FAILED"; exit 1; }
  echo "fuzz replay: $t: $n inputs, no finding"
done
