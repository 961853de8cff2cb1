#!/usr/bin/env bash
# Lay out OUT/<target>/ (default fuzz/corpus) from the committed seeds, the crafted hostile
# checkpoints, the committed regression inputs and the real files of tests/data/fetch.sh
# (pydicom's and nibabel's test files, fetched from PyPI). run.sh fuzzes from it, replay.sh
# runs every input once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
data=${MEDSEG_TESTDATA:-$root/target/testdata}
out=$(mkdir -p "${1:-$here/corpus}" && cd "${1:-$here/corpus}" && pwd)
[ -f "$data/.complete-4" ] || bash "$root/tests/data/fetch.sh"
for t in checkpoint dicom nifti png prompt seg; do
  mkdir -p "$out/$t"
  for d in "$here/seeds/$t" "$here/regressions/$t"; do
    if [ -d "$d" ]; then find "$d" -type f -exec cp -n {} "$out/$t/" \;; fi
  done
done
cp -n "$root"/tests/fixtures/hostile/* "$out/checkpoint/"
cp -n "$data"/*.dcm "$out/dicom/"
# Series inputs (the dicom target's series mode) from the crafted series of make_series.py.
python3 - "$data/series" "$out/dicom" <<'PY'
import os, sys
src, out = sys.argv[1], sys.argv[2]
for case in sorted(os.listdir(src)):
    files = sorted(os.listdir(os.path.join(src, case)))[:16]
    parts = [open(os.path.join(src, case, f), "rb").read() for f in files]
    with open(os.path.join(out, f"series-{case}"), "wb") as f:
        f.write(b"MEDSEG-SERIES\0" + b"\0MEDSEG-NEXT\0".join(parts))
PY
cp -n "$data"/anatomical.nii "$data"/example4d.nii.gz "$data"/example_nifti2.nii.gz "$out/nifti/"
cp -n "$root"/tests/fixtures/images/mr_small.png "$root"/tests/fixtures/images/ct_small.png "$out/png/"
for t in checkpoint dicom nifti png prompt seg; do
  echo "$out/$t: $(ls "$out/$t" | wc -l) inputs"
done
