#!/usr/bin/env bash
# Build the wheel with maturin, install it into a fresh venv (numpy, pytest, dask for the
# cohort test, highdicom for the DICOM SEG test, the optional extra medseg[dask]: no torch,
# no Rust toolchain needed there) and run the Python test suite, as a user gets it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build_venv=${MEDSEG_BUILD_VENV:-$root/target/py-build}
test_venv=$root/target/py-test
[ -x "$build_venv/bin/maturin" ] || { python3 -m venv "$build_venv"; "$build_venv/bin/pip" install -q "maturin>=1.9,<2"; }
rm -rf "$root/target/wheels"
# Same features as `cargo test --features medseg/wgpu`, so the release build is shared.
(cd "$root" && "$build_venv/bin/maturin" build --release -q -m bindings/python/Cargo.toml \
  --features wgpu -o target/wheels)
# The sdist builds too (a from-source install compiles it; here only its contents are checked).
(cd "$root" && "$build_venv/bin/maturin" sdist -m bindings/python/Cargo.toml -o target/wheels >/dev/null)
listing=$(tar tzf "$root"/target/wheels/medseg-*.tar.gz)
for f in crates/medseg/src/lib.rs bindings/python/src/lib.rs python/medseg/__init__.py pyproject.toml; do
  grep -qx "medseg-[^/]*/$f" <<<"$listing" || { echo "sdist lacks $f"; exit 1; }
done
python3 -m venv --clear "$test_venv"
# highdicom (and the pydicom it brings) reads the DICOM SEGs medseg writes, independently.
"$test_venv/bin/pip" install -q numpy pytest "dask[distributed]" "highdicom==0.28.2"
"$test_venv/bin/pip" install -q --no-deps "$root"/target/wheels/medseg-*.whl
cd "$here/tests"
# As a user of the prebuilt wheel has it: no cargo, no rustc on the PATH.
clean_path="$test_venv/bin:/usr/local/bin:/usr/bin:/bin"
if PATH=$clean_path command -v cargo >/dev/null || PATH=$clean_path command -v rustc >/dev/null; then
  echo "test.sh: cargo/rustc still on the clean PATH"; exit 1
fi
PATH=$clean_path "$test_venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
