#!/usr/bin/env bash
# Before/after benchmarks of issue #10, one sitting: base (e002889) vs new, interleaved.
set -euo pipefail
OUT=$1; NEW=$2; BASE=${BASE:-build-base}  # a Release build of e002889 with -DBLENDFUSE_BUILD_BENCHMARKS=ON
mkdir -p "$OUT"
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824
export OMP_NUM_THREADS=2
F='^(fusion/infer/b1|fusion/infer_unfrozen/b1|fusion/infer/b32|fusion/train/b32|wav2vec2/base/1s|wav2vec2/base/10s|pipeline/small/10s|pipeline/base/10s)/onednn|^faceformer/step/at:(0|600)/window:600|^audio/stream/10s'
{ lscpu | grep -E 'Model name|Flags' | cut -c1-200; uptime; } > "$OUT/machine.txt"
for r in 0 1; do
  for w in base new; do
    B=$BASE; [ $w = new ] && B=$NEW
    echo "== round $r $w: load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load.txt"
    "$B/bench/bench_models" --benchmark_filter="$F" --benchmark_repetitions=2 --benchmark_report_aggregates_only=false \
      --benchmark_out="$OUT/models_${w}_r$r.json" --benchmark_out_format=json > "$OUT/models_${w}_r$r.txt" 2>&1
  done
done
echo done
