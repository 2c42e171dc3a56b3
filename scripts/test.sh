#!/usr/bin/env bash
# The whole test suite: install what is missing, configure, build, run ctest.
#
#   SANITIZE=address,undefined ./scripts/test.sh
#       builds with -fsanitize=<list> -fno-sanitize-recover=all -fno-omit-frame-pointer -g in its
#       own folder (build-san-address-undefined) and runs the suite with ASAN_OPTIONS /
#       UBSAN_OPTIONS / LSAN_OPTIONS set so that any report fails the test (docs/fuzzing.md).
#       The CUDA backend is off in sanitizer builds (nvcc objects are not instrumented).
#   TARGETS="test_npy test_mesh"   build only these targets (default: everything)
#   CTEST_ARGS="-R '^(npy|mesh)$'" extra ctest arguments, e.g. a subset (evaluated by the shell)
#   BUILD_DIR, JOBS, CMAKE_ARGS    as for scripts/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${SANITIZE:-}" ]; then
  case "$SANITIZE" in
    *[!a-z,_-]*) echo "test: SANITIZE must be a comma-separated list such as address,undefined" >&2; exit 2 ;;
  esac
  export BUILD_DIR=${BUILD_DIR:-build-san-${SANITIZE//,/-}}
  san="-fsanitize=$SANITIZE -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
  # CMake takes CXXFLAGS / LDFLAGS as the initial CMAKE_CXX_FLAGS / linker flags of a new build
  # folder; the folder name carries the sanitizer list, so its cache always matches it.
  export CXXFLAGS="${CXXFLAGS:-} $san"
  export LDFLAGS="${LDFLAGS:-} -fsanitize=$SANITIZE"
  export CMAKE_ARGS="${CMAKE_ARGS:-} -DBLENDFUSE_WITH_CUDA=OFF"
  supp="$(pwd)/tests/sanitizers"
  # halt_on_error + exitcode: the first report ends the test program with a failure.
  export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:exitcode=23:detect_leaks=1:print_stacktrace=1:strict_string_checks=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=24:suppressions=$supp/ubsan.supp${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
  export LSAN_OPTIONS="exitcode=25:suppressions=$supp/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
  echo "test: sanitizers $SANITIZE in $BUILD_DIR"
fi
./scripts/build.sh
cd "${BUILD_DIR:-build}"
eval "ctest --output-on-failure -j \"${JOBS:-$(nproc)}\" ${CTEST_ARGS:-}"
