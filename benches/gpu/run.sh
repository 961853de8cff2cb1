#!/usr/bin/env bash
# GPU timings (wgpu) of the families' encoder and decoder, for a machine that can build
# nothing and reach nothing: everything it needs is packed here and carried along.
#
#   bash benches/gpu/run.sh pack   # here: build stage_times with wgpu, strip it, add the
#                                  # Vulkan loader, check that tree + pack fit the transfer
#   bash benches/gpu/run.sh run    # there (repository root): one table, CPU rows beside
#                                  # (MODELS="lite-random" for one family only; medsam2's
#                                  # "decoder 1st" is a tracked slice after its encoder —
#                                  # memory attention, heads, memory encoder — and "decoder
#                                  # next" its heads alone)
#
# With the device tool: run(command="bash benches/gpu/run.sh run", carry=["benches/gpu/bin"]).
# The weights are seeded random ones of the official layouts (tests/fixtures/golden/*_layout.txt,
# same shapes so the same work): no checkpoint travels. Timing is not a test: CI never runs this.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/benches/gpu/bin
limit_mib=64

pack() {
  (cd "$root" && cargo build -q --release -p medseg-benches --features wgpu --example stage_times)
  rm -rf "$bin" && mkdir -p "$bin/lib"
  # Stripped, the wgpu build is ~56 MB; xz makes it ~9 MB, so tree + pack fit the transfer.
  cp "$root/target/release/examples/stage_times" "$bin/stage_times"
  strip "$bin/stage_times"
  xz -T2 -6 -f "$bin/stage_times"
  # wgpu opens the Vulkan loader at run time; the GPU driver's own ICD must be on the device.
  loader=$(ldconfig -p | awk '/libvulkan\.so\.1 /{print $NF; exit}')
  if [ -n "$loader" ]; then cp -L "$loader" "$bin/lib/"; else echo "note: no libvulkan.so.1 here to carry"; fi
  tree_kib=$(cd "$root" && git ls-files -z | du -ck --files0-from=- | tail -1 | cut -f1)
  untracked_kib=$(cd "$root" && git ls-files -z --others --exclude-standard | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  pack_kib=$(du -sk "$bin" | cut -f1)
  total=$(( (tree_kib + ${untracked_kib:-0} + pack_kib) / 1024 ))
  echo "tracked tree ${tree_kib} KiB + untracked ${untracked_kib:-0} KiB + pack ${pack_kib} KiB = ${total} MiB (limit ${limit_mib} MiB)"
  [ "$total" -lt "$limit_mib" ] || { echo "too big to carry" >&2; exit 1; }
}

run() {
  [ -f "$bin/stage_times.xz" ] || { echo "no $bin/stage_times.xz: run 'pack' first and carry benches/gpu/bin" >&2; exit 1; }
  exe=$(mktemp -d)/stage_times
  if command -v xz >/dev/null; then
    xz -dc "$bin/stage_times.xz" >"$exe"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$bin/stage_times.xz" "$exe"
  fi
  chmod +x "$exe"
  export LD_LIBRARY_PATH=$bin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} MEDSEG_ROOT=$root
  echo "cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) | $(nproc) cores"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /'
  else
    echo "gpu: nvidia-smi not found"
  fi
  for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d; do
    [ -d "$d" ] && ls "$d" | sed "s|^|vulkan icd: $d/|"
  done
  out=$(mktemp)
  for m in ${MODELS:-lite-random vitb medsam2}; do
    reps=5; [ "$m" = lite-random ] || reps=3
    for dev in wgpu cpu; do
      line=$(MEDSEG_DEVICE=$dev RAYON_NUM_THREADS=$(nproc) timeout 240 "$exe" "$m" "$reps" 20 2>&1 | tail -1) || true
      echo "$m $dev $line"
      printf '%s\t%s\t%s\n' "$m" "$dev" "$line" >>"$out"
    done
  done
  python3 - "$out" <<'PY'
import json, sys
print(f"{'model':<12} {'device':<6} {'encoder':>10} {'decoder 1st':>12} {'decoder next':>13} {'peak RSS':>9}")
for line in open(sys.argv[1]):
    m, dev, js = line.rstrip("\n").split("\t", 2)
    try:
        r = json.loads(js)
    except ValueError:
        print(f"{m:<12} {dev:<6} failed: {js[:100]}")
        continue
    print(f"{m:<12} {dev:<6} {r['encoder_s']*1e3:>8.1f}ms {r['decoder_s']*1e3:>10.2f}ms "
          f"{r['decoder_next_s']*1e3:>11.2f}ms {r['peak_rss_mb']:>7.0f}MB")
PY
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: $0 pack|run" >&2; exit 2 ;;
esac
