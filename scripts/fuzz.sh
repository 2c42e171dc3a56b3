#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ with clang++ (-fsanitize=fuzzer,address,undefined)
# and runs each for a bounded time on its seed corpus (docs/fuzzing.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   run every target (or those named) SECONDS each (default 60)
#   scripts/fuzz.sh --make-corpus           rewrite tests/fuzz/corpus/ from tests/fuzz/make_corpus.cpp
#   scripts/fuzz.sh --list                  print the target names
#
# Environment: FUZZ_BUILD_DIR (default build-libfuzzer), CXX_FUZZ (default clang++), JOBS (parallel
# fuzzers, default: number of cores), FUZZ_MAX_LEN (default 65536 bytes).
# Findings (a crash, an uncaught exception other than blendfuse::Error, a sanitizer report, a
# timeout > 10 s on one input, more than 2048 MB of memory, a leak) make the script exit 1; the
# input that caused each is kept as FUZZ_BUILD_DIR/findings/<target>/crash-* (or timeout-*,
# oom-*, leak-*), with the fuzzer's log next to it. Copy it to tests/fuzz/regressions/<target>/
# once fixed. Exit 77 (ctest: skipped) when clang++ or libFuzzer is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${FUZZ_BUILD_DIR:-build-libfuzzer}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
CXX_FUZZ=${CXX_FUZZ:-clang++}
JOBS=${JOBS:-$(nproc)}
MAX_LEN=${FUZZ_MAX_LEN:-65536}
TARGETS_ALL=(safetensors safetensors_header model_config model_file npy obj ply wav dataset)

if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${TARGETS_ALL[@]}"
  exit 0
fi

if ! command -v "$CXX_FUZZ" >/dev/null 2>&1; then
  echo "fuzz: $CXX_FUZZ not found (apt-get install clang); skipped" >&2
  exit 77
fi
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long){return 0;}' |
     "$CXX_FUZZ" -x c++ -fsanitize=fuzzer - -o /dev/null >/dev/null 2>&1; then
  echo "fuzz: $CXX_FUZZ cannot link libFuzzer (-fsanitize=fuzzer); skipped" >&2
  exit 77
fi

mkdir -p "$BUILD"
INCLUDES=(-I"$ROOT/include" -I"$ROOT/backends" -I/usr/include/eigen3)
for pc in sndfile soxr; do
  # shellcheck disable=SC2207
  INCLUDES+=($(pkg-config --cflags "$pc"))
done
LIBS=$(pkg-config --libs sndfile soxr)
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

# ---- seed corpus generator (plain build, no sanitizers) ----
if [ "${1:-}" = "--make-corpus" ]; then
  echo "fuzz: building make_corpus"
  "$CXX_FUZZ" -std=c++20 -O1 "${INCLUDES[@]}" tests/fuzz/make_corpus.cpp -o "$BUILD/make_corpus" $LIBS
  rm -rf tests/fuzz/corpus
  "$BUILD/make_corpus" tests/fuzz/corpus
  du -sh tests/fuzz/corpus/* | sed 's/^/fuzz: /'
  exit 0
fi

SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${TARGETS_ALL[@]}")
for t in "${TARGETS[@]}"; do
  [ -d "tests/fuzz/corpus/$t" ] || { echo "fuzz: unknown target '$t' (see --list)" >&2; exit 2; }
done

# ---- build (one binary for every target; fuzz_<name> are links to it) ----
BIN="$BUILD/bf_fuzz"
newest_src=$(find include tests/fuzz/targets.hpp tests/fuzz/fuzz_main.cpp scripts/fuzz.sh -type f \
             -newer "$BIN" 2>/dev/null | head -1 || true)
if [ ! -x "$BIN" ] || [ -n "$newest_src" ]; then
  echo "fuzz: building $BIN with $CXX_FUZZ"
  start=$(date +%s)
  "$CXX_FUZZ" -std=c++20 -g -O1 -fsanitize=fuzzer "${SAN[@]}" "${INCLUDES[@]}" \
    tests/fuzz/fuzz_main.cpp -o "$BIN.tmp" $LIBS
  mv "$BIN.tmp" "$BIN"
  echo "fuzz: built in $(( $(date +%s) - start )) s"
fi
for t in "${TARGETS_ALL[@]}"; do ln -sf bf_fuzz "$BUILD/fuzz_$t"; done

# ---- run ----
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:print_stacktrace=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
run_one() {
  local t=$1
  local work="$BUILD/work/$t" found="$BUILD/findings/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$found"
  # the committed seeds and regressions are read-only inputs; new corpus entries go to work/
  local extra=()
  [ -d "tests/fuzz/regressions/$t" ] && extra+=("$ROOT/tests/fuzz/regressions/$t")
  set +e
  ( cd "$work" && "$BUILD/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=2048 -max_len="$MAX_LEN" -print_final_stats=1 \
      -artifact_prefix="$found/" "$work/corpus" "$ROOT/tests/fuzz/corpus/$t" "${extra[@]}" ) \
      >"$work/log.txt" 2>&1
  echo $? >"$work/rc"
  set -e
}
echo "fuzz: running ${#TARGETS[@]} targets, ${SECONDS_EACH} s each, $JOBS at a time"
start=$(date +%s)
running=0
for t in "${TARGETS[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then wait -n || true; running=$((running - 1)); fi
done
wait || true

# ---- summary ----
status=0
printf '\n%-20s %8s %10s %8s %7s  %s\n' target result execs exec/s corpus finding
for t in "${TARGETS[@]}"; do
  work="$BUILD/work/$t"
  rc=$(cat "$work/rc" 2>/dev/null || echo "?")
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log.txt" | grep -o '[0-9]*$' || echo "?")
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$work/log.txt" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "$work/corpus" -type f | wc -l)
  artifact=$(ls -t "$BUILD/findings/$t" 2>/dev/null | grep -E '^(crash|timeout|oom|leak|slow-unit)-' | head -1 || true)
  if [ "$rc" = "0" ]; then
    result=ok
    artifact=""
  else
    result=FINDING
    status=1
    cp "$work/log.txt" "$BUILD/findings/$t/log.txt"
    [ -n "$artifact" ] && artifact="$BUILD/findings/$t/$artifact" || artifact="(see $BUILD/findings/$t/log.txt)"
  fi
  printf '%-20s %8s %10s %8s %7s  %s\n' "$t" "$result" "${execs:-?}" "${eps:-?}" "$corpus" "$artifact"
done
echo "fuzz: $(( $(date +%s) - start )) s"
[ "$status" -eq 0 ] || { echo "fuzz: findings above; logs in $BUILD/findings/<target>/log.txt" >&2; }
exit $status
