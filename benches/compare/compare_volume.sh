#!/usr/bin/env bash
# One box → a whole volume: medseg's segment_volume against LiteMedSAM's official 3D loop in
# PyTorch, same 8-bit volume, same thread count, interleaved pairs (medseg, torch, ...), each
# run a fresh process; slices/s, peak RSS, and the Dice of the two masks. Then MedSAM2 the same
# way against the official sam2 video predictor (seeded random weights on both sides: the cost
# of MedSAM2_latest.pt; needs `SAM2_BUILD_CUDA=0 pip install sam2==1.1.0` in the venv), then
# medseg's ViT-B (seeded random weights, no PyTorch side: MedSAM has no official 3D script).
# Needs the reference venv (tests/reference/make_golden.sh) and tests/data/fetch.sh's files.
#   bash benches/compare/compare_volume.sh [THREADS] [PAIRS] [SLICES] [VITB_SLICES] [MEDSAM2_SLICES] [PRECISION]
# (a slice count of 0 skips that model; PRECISION bf16 runs medseg's --precision bf16 against
# the official code in fp32, as its 3D scripts run on the CPU)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
threads=${1:-2}
pairs=${2:-3}
slices=${3:-64}
vitb_slices=${4:-4}
medsam2_slices=${5:-64}
precision=${6:-f32}
venv=${MEDSEG_REF_VENV:-$root/.venv-ref}
[ -x "$venv/bin/python" ] || bash "$root/tests/reference/make_golden.sh" --resize-only >/dev/null
(cd "$root" && cargo build -q --release -p medseg-benches --example volume_times)
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads RAYON_NUM_THREADS=$threads
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_bf16|avx512_vnni|amx_bf16|amx_tile)$' | tr '\n' ' ')
echo "cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) | $(nproc) cores | flags: ${flags:-none of avx2/avx512}"
echo "threads: $threads each | medseg precision: $precision | pairs: $pairs | slices: $slices (LiteMedSAM), $medsam2_slices (MedSAM2), $vitb_slices (ViT-B)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# pairs MODEL SLICES TORCH_SCRIPT: interleaved medseg/torch runs, one JSON pair per line.
pairs() {
  for p in $(seq 1 "$pairs"); do
    r=$("$root/target/release/examples/volume_times" "$1" "$2" "$work/$1" --precision "$precision" | tail -1)
    t=$("$venv/bin/python" "$root/benches/compare/$3" "$work/$1" "$threads" 2>/dev/null | tail -1)
    echo "pair $p medseg $r"
    echo "pair $p torch  $t"
    printf '%s\t%s\n' "$t" "$r" >>"$work/$1.pairs"
  done
  python3 - "$work/$1.pairs" "$1" <<'PY'
import json, statistics, sys
rows = [tuple(json.loads(x) for x in line.rstrip("\n").split("\t")) for line in open(sys.argv[1])]
label = sys.argv[2]
def rng(v, d=2):
    return f"{min(v):.{d}f}–{max(v):.{d}f}"
for key, name in (("slices_per_s", "slices/s"), ("peak_rss_mb", "peak RSS MB")):
    t = [a[key] for a, _ in rows]; m = [b[key] for _, b in rows]
    r = [y / x for x, y in zip(t, m)]
    print(f"{label} {name:<12} torch {rng(t)}  medseg {rng(m)}  medseg/torch {min(r):.2f} / {statistics.median(r):.2f} / {max(r):.2f}")
print(f"{label} Dice(medseg, torch) per pair:", ", ".join(f"{a['dice_vs_medseg']:.5f}" for a, _ in rows))
PY
}
if [ "$slices" -gt 0 ]; then pairs lite "$slices" torch_volume.py; fi
if [ "$medsam2_slices" -gt 0 ]; then pairs medsam2 "$medsam2_slices" torch_medsam2.py; fi
if [ "$vitb_slices" -gt 0 ]; then echo "vitb $("$root/target/release/examples/volume_times" vitb "$vitb_slices" --precision "$precision" | tail -1)"; fi
