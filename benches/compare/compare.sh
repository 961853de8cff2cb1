#!/usr/bin/env bash
# Side by side: the official PyTorch code and medseg, same inputs, same thread count, one run.
# Torch lives in the reference venv (tests/reference/make_golden.sh makes it); CI never runs this.
#   bash benches/compare/compare.sh [THREADS] [REPEATS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
threads=${1:-2}
reps=${2:-5}
venv=${MEDSEG_REF_VENV:-$root/.venv-ref}
[ -x "$venv/bin/python" ] || bash "$root/tests/reference/make_golden.sh" --resize-only >/dev/null
(cd "$root" && cargo build -q --release -p medseg-benches --example stage_times)
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads RAYON_NUM_THREADS=$threads
echo "threads=$threads repeats=$reps  $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
printf '%-10s %-10s %10s %10s %10s %10s\n' model stage torch medseg ratio unit
for m in lite vitb; do
  t=$("$venv/bin/python" "$root/benches/compare/torch_times.py" "$m" "$reps" "$threads" 2>/dev/null | tail -1)
  r=$("$root/target/release/examples/stage_times" "$m" "$reps" | tail -1)
  python3 - "$t" "$r" <<'PY'
import json, sys
t, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for k, unit in (("load_s", "s"), ("encoder_s", "s"), ("decoder_s", "s"), ("peak_rss_mb", "MB")):
    print(f"{t['model']:<10} {k:<10} {t[k]:>10} {r[k]:>10} {r[k] / t[k]:>10.2f} {unit:>10}")
PY
done
