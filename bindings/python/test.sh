#!/usr/bin/env bash
# Build the wheel with maturin, install it into a fresh venv (numpy, pytest and dask for the
# cohort test, the optional extra medseg[dask]: no torch,
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
python3 -m venv --clear "$test_venv"
"$test_venv/bin/pip" install -q numpy pytest "dask[distributed]"
"$test_venv/bin/pip" install -q --no-deps "$root"/target/wheels/medseg-*.whl
cd "$here/tests"
"$test_venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
