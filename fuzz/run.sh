#!/usr/bin/env bash
# Fuzz every target for SECONDS each (default 60), one after the other, from the corpus laid
# out by corpus.sh; prints libFuzzer's final line (executions, coverage) per target.
# Findings land in fuzz/artifacts/<target>/: copy them into fuzz/regressions/<target>/ once
# fixed. Needs cargo-fuzz (`cargo install cargo-fuzz`); works on stable with --sanitizer none.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=${*:-checkpoint dicom nifti png prompt seg}
bash corpus.sh >/dev/null
cargo fuzz build --sanitizer none -O
for t in $targets; do
  log=artifacts/$t.log
  mkdir -p artifacts/$t
  start=$(date +%s)
  set +e
  cargo fuzz run "$t" --sanitizer none -O -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  echo "$t: rc=$rc $(( $(date +%s) - start )) s: $(grep -E '^Done [0-9]+ runs' "$log" || echo 'no Done line')"
  grep -E 'stat::number_of_executed_units|cov: ' "$log" | tail -1
done
