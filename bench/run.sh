#!/usr/bin/env bash
# Builds the benchmarks (and the LibTorch peer where libtorch-dev is installed) and runs ours and
# the peer with the same thread counts, writing Google Benchmark JSON to a results folder, then
# prints the ours/LibTorch tables (bench/compare.py). Optional third column: the ONNX Runtime peer
# (bench/peers/ort: node + `npm ci --ignore-scripts` there; its models are exported once by
# export_onnx.py with Debian's python3-torch/python3-torchaudio into bench/peers/ort/models).
#
#   bench/run.sh [results-dir] [threads...]     defaults: bench/results/<date>-<host>, threads 1 2
# Environment: BUILD_DIR (default build-bench), JOBS (default 2), REPS (repetitions, default 3),
#   FILTER (a --benchmark_filter regex applied to every program, default all), ORT_FILTER (the
#   ORT peer's regex over its names fusion/infer/b1/ort ..., default FILTER), ORT=0 skips it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="${1:-$here/results/$(date +%Y%m%d-%H%M%S)-$(hostname)}"
shift || true
threads=("$@")
[ ${#threads[@]} -eq 0 ] && threads=(1 2)
build="${BUILD_DIR:-$root/build-bench}"
jobs="${JOBS:-2}"
reps="${REPS:-3}"
filter="${FILTER:-.}"

peer=OFF
[ -f /usr/lib/x86_64-linux-gnu/cmake/Torch/TorchConfig.cmake ] && peer=ON
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBLENDFUSE_BUILD_BENCHMARKS=ON \
      -DBLENDFUSE_BUILD_TORCH_PEER=$peer >/dev/null
targets=(bench_peak bench_ops bench_models)
[ "$peer" = ON ] && targets+=(bench_torch)
cmake --build "$build" -j"$jobs" --target "${targets[@]}"

# The ONNX Runtime peer runs where node and its node_modules are there; its .onnx files are
# exported on first use (a few minutes; needs python3-torch and python3-torchaudio).
ortdir="$here/peers/ort"
ort=OFF
if [ "${ORT:-1}" != 0 ] && command -v node >/dev/null && [ -d "$ortdir/node_modules/onnxruntime-node" ]; then
  if [ ! -f "$ortdir/models/manifest.json" ]; then
    OMP_NUM_THREADS=2 /usr/bin/python3 "$ortdir/export_onnx.py" "$ortdir/models" 2>&1 | grep -v -i warn || true
  fi
  if [ -f "$ortdir/models/manifest.json" ] && node "$ortdir/bench_ort.js" --verify --filter="${ORT_FILTER:-$filter}"; then
    ort=ON
  else
    echo "ONNX Runtime peer skipped: models missing or their outputs differ from PyTorch's" >&2
  fi
fi

mkdir -p "$out"
{ lscpu; echo; uptime; } > "$out/machine.txt"
# Large temporaries (the fusion batch, wav2vec2's activations) would otherwise be mmap'ed and
# unmapped on every call; both implementations run with the same allocator settings.
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824
# Debian's libtorch links the reference BLAS; the peer runs on OpenBLAS (libopenblas0-openmp).
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp
common=(--benchmark_repetitions="$reps" --benchmark_report_aggregates_only=false
        --benchmark_out_format=json --benchmark_filter="$filter")

"$build/bench/bench_peak" --benchmark_out="$out/peak.json" --benchmark_out_format=json
for t in "${threads[@]}"; do
  export OMP_NUM_THREADS=$t
  echo "== $t thread(s): load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"
  "$build/bench/bench_ops" "${common[@]}" --benchmark_out="$out/ops_t$t.json"
  "$build/bench/bench_models" "${common[@]}" --benchmark_out="$out/models_t$t.json"
  if [ "$peer" = ON ]; then
    LD_LIBRARY_PATH="$openblas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      "$build/bench/peers/bench_torch" "${common[@]}" --benchmark_out="$out/torch_t$t.json"
  fi
  if [ "$ort" = ON ]; then
    node "$ortdir/bench_ort.js" --threads="$t" --reps="$reps" --filter="${ORT_FILTER:-$filter}" \
      --benchmark_out="$out/ort_t$t.json"
  fi
  echo "   after: load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"
done
python3 "$here/compare.py" "$out" | tee "$out/summary.md"
