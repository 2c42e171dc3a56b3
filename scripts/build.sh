#!/usr/bin/env bash
# Installs missing packages, configures and builds blendfuse into ./build (or $BUILD_DIR).
#   TARGETS="blendfuse_cli"  builds only those targets (the demo builds only what it runs);
#   default: everything (the library's tests, examples and tools).
#   JOBS (default: the number of cores), CMAKE_ARGS (extra configure options).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
start=$(date +%s)
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$BUILD_DIR" -j "$JOBS" "${targets[@]}"
echo "build: ${TARGETS:-all targets} in $(( $(date +%s) - start )) s ($BUILD_DIR, $JOBS jobs)"
