#!/usr/bin/env bash
# Two builds of the medseg CLI against each other, whole process (loading, reading, the 3D
# propagation, writing), interleaved pairs (A, B, A, B, ...; each run a fresh process), on the
# same case: a slice of the MNI152 template around a SYNTHETIC lesion (examples/bench_case.rs),
# LiteMedSAM (official weights, cached: `medseg fetch-weights`) and MedSAM2 (seeded random
# weights: the cost of MedSAM2_latest.pt). Prints seconds and peak RSS per run, the ranges,
# B/A (min / median / max), and whether the two builds wrote the same mask bytes.
# Use: a change's before/after (build A at the old commit into another path first, e.g.
#   git worktree add /tmp/old REV && (cd /tmp/old && CARGO_TARGET_DIR=$PWD/target cargo build --release --features medseg/wgpu) && cp target/release/medseg /tmp/medseg-old
# then rebuild here).
#   bash benches/compare/compare_builds.sh A_BIN B_BIN [PAIRS] [SLICES] [MODELS] [PRECISION]
# MODELS: any of "lite-medsam medsam2" (default both); THREADS from RAYON_NUM_THREADS (default 2).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
a=$1 b=$2
pairs=${3:-3}
slices=${4:-24}
models=${5:-lite-medsam medsam2}
precision=${6:-f32}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
mni=$root/target/testdata/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz
[ -f "$mni" ] || bash "$root/tests/data/fetch.sh" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$root" && cargo build -q --release --features medseg/wgpu --example bench_case)
prompt=$("$root/target/release/examples/bench_case" "$mni" \
  "$root/tests/fixtures/golden/medsam2_layout.txt" "$slices" "$work")
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_bf16|amx_bf16|amx_tile)$' | tr '\n' ' ')
echo "cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) | $(nproc) cores | flags: ${flags:-none of avx2/avx512}"
echo "A: $a | B: $b | threads $RAYON_NUM_THREADS | $precision | $pairs pairs | $slices slices | $prompt"
# run BIN MODEL OUT: one whole process; prints "seconds peak_rss_mb".
run() {
  local weights=()
  [ "$2" = medsam2 ] && weights=(--weights "$work/medsam2_seeded.safetensors")
  # shellcheck disable=SC2086
  /usr/bin/time -f '%e %M' -o "$work/time" "$1" segment --model "$2" "${weights[@]}" \
    --input "$work/volume.nii.gz" $prompt --precision "$precision" --output "$3" \
    >/dev/null 2>"$work/stderr" || { echo "$1 failed:" >&2; cat "$work/stderr" >&2; exit 1; }
  awk '{printf "%s %.0f\n", $1, $2 / 1024}' "$work/time"
}
for model in $models; do
  : >"$work/$model.pairs"
  for p in $(seq 1 "$pairs"); do
    ta=$(run "$a" "$model" "$work/a.npy")
    tb=$(run "$b" "$model" "$work/b.npy")
    same=$(cmp -s "$work/a.npy" "$work/b.npy" && echo same || echo DIFFERENT)
    echo "$model pair $p: A $ta | B $tb | masks $same"
    echo "$ta $tb $same" >>"$work/$model.pairs"
  done
  python3 - "$work/$model.pairs" "$model" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for i, name in ((0, "seconds"), (1, "peak RSS MB")):
    a = [float(r[i]) for r in rows]; b = [float(r[2 + i]) for r in rows]
    q = [y / x for x, y in zip(a, b)]
    print(f"{sys.argv[2]} {name:<11} A {min(a):.2f}–{max(a):.2f}  B {min(b):.2f}–{max(b):.2f}"
          f"  B/A {min(q):.3f} / {statistics.median(q):.3f} / {max(q):.3f}")
print(f"{sys.argv[2]} masks: " + ", ".join(r[4] for r in rows))
PY
done
