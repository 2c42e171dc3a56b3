#!/usr/bin/env bash
# The whole test suite: install what is missing, configure, build, run ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "${JOBS:-$(nproc)}"
