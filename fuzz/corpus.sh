#!/usr/bin/env bash
# Lay out fuzz/corpus/<target>/ from the committed seeds, the crafted hostile checkpoints,
# the committed regression inputs and the real files of tests/data/fetch.sh (pydicom's and
# nibabel's test files, fetched from PyPI).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
data=${MEDSEG_TESTDATA:-$root/target/testdata}
[ -f "$data/.complete" ] || bash "$root/tests/data/fetch.sh"
for t in checkpoint dicom nifti png prompt; do
  mkdir -p "$here/corpus/$t"
  for d in "$here/seeds/$t" "$here/regressions/$t"; do
    [ -d "$d" ] && find "$d" -type f ! -name .keep -exec cp -n {} "$here/corpus/$t/" \;
  done
done
cp -n "$root"/tests/fixtures/hostile/* "$here/corpus/checkpoint/"
cp -n "$data"/*.dcm "$here/corpus/dicom/"
cp -n "$data"/anatomical.nii "$data"/example4d.nii.gz "$data"/example_nifti2.nii.gz "$here/corpus/nifti/"
cp -n "$root"/tests/fixtures/images/mr_small.png "$root"/tests/fixtures/images/ct_small.png "$here/corpus/png/"
for t in checkpoint dicom nifti png prompt; do
  echo "corpus/$t: $(ls "$here/corpus/$t" | wc -l) inputs"
done
