#!/usr/bin/env bash
# medseg against the official PyTorch code: same inputs, same thread count, one run, the two
# sides interleaved (torch, medseg, torch, medseg, ...), each run in a fresh process. Prints
# the machine (CPU model and the flags that decide the kernels), each run's times, and for each
# stage the min / median / max over the pairs of medseg ÷ PyTorch.
# Torch lives in the reference venv (tests/reference/make_golden.sh makes it); CI never runs this.
#   bash benches/compare/compare.sh [THREADS] [PAIRS] [REPEATS] [MODELS] [PRECISION]
#   e.g. bash benches/compare/compare.sh 2 5 5 "lite vitb"
# PRECISION bf16: PyTorch under torch.autocast("cpu", dtype=torch.bfloat16) against medseg's
# --precision bf16 (f32, the default: both in f32).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
threads=${1:-2}
pairs=${2:-3}
reps=${3:-5}
models=${4:-lite vitb}
precision=${5:-f32}
venv=${MEDSEG_REF_VENV:-$root/.venv-ref}
[ -x "$venv/bin/python" ] || bash "$root/tests/reference/make_golden.sh" --resize-only >/dev/null
(cd "$root" && cargo build -q --release -p medseg-benches --example stage_times)
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads RAYON_NUM_THREADS=$threads
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_bf16|avx512_vnni|amx_bf16|amx_tile)$' | tr '\n' ' ')
torch_version=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
echo "cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) | $(nproc) cores | flags: ${flags:-none of avx2/avx512}"
echo "threads: $threads each (torch.set_num_threads, RAYON_NUM_THREADS) | pairs: $pairs | repeats per run: $reps | precision: $precision | torch $torch_version"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for m in $models; do
  for p in $(seq 1 "$pairs"); do
    t=$("$venv/bin/python" "$root/benches/compare/torch_times.py" "$m" "$reps" "$threads" "$precision" 2>/dev/null | tail -1)
    r=$("$root/target/release/examples/stage_times" "$m" "$reps" --precision "$precision" | tail -1)
    echo "pair $p torch  $t"
    echo "pair $p medseg $r"
    printf '%s\t%s\n' "$t" "$r" >>"$log"
  done
done
python3 "$root/benches/compare/ratios.py" "$log"
