#!/usr/bin/env bash
# The viewer (`medseg serve`) end to end in a real browser: Debian's Chromium
# (apt-get install chromium) driven by playwright-core from npm (no browser download), on the
# DICOM test series with the official LiteMedSAM weights (`medseg fetch-weights`).
#   bash tests/browser/run.sh [SCREENSHOT.png]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ -x /usr/bin/chromium ] || { echo "browser test: /usr/bin/chromium is missing (apt-get install chromium)"; exit 1; }
command -v node >/dev/null || { echo "browser test: node is missing"; exit 1; }
[ -x "$root/target/release/medseg" ] || { echo "browser test: build target/release/medseg first"; exit 1; }
(cd "$here" && npm ci --no-audit --no-fund --silent)
bash "$root/tests/data/fetch.sh" >/dev/null
"$root/target/release/medseg" fetch-weights >/dev/null
node "$here/viewer.mjs" "$root/target/release/medseg" "${MEDSEG_TESTDATA:-$root/target/testdata}/series/clean" \
  "${1:-$root/target/viewer.png}"
