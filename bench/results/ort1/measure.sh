#!/usr/bin/env bash
# The ort1 measurement: ours (bench_models, oneDNN fusion, reference wav2vec2), the LibTorch peer
# and the ONNX Runtime peer, 1 thread, in ROUNDS interleaved rounds (program order rotated each
# round), one repetition per benchmark per round; the rounds are merged into one Google Benchmark
# JSON per program (models_t1.json, torch_t1.json, ort_t1.json) for bench/compare.py, so its
# "median (min)" is over the rounds. Binaries: the existing build-bench (not rebuilt here).
#   measure.sh [out-dir]   env: ROUNDS (5), THREADS (1), OURS_FILTER, TORCH_FILTER, ORT_FILTER
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
out="${1:-$(cd "$(dirname "$0")" && pwd)}"
mkdir -p "$out" && out="$(cd "$out" && pwd)"
ours_filter="${OURS_FILTER:-fusion/infer/b(1|32)/onednn|wav2vec2/base/(1|10)s/cpu}"
torch_filter="${TORCH_FILTER:-fusion/infer/b(1|32)/torch|wav2vec2/base/(1|10)s/torch}"
ort_filter="${ORT_FILTER:-.}"
rounds="${ROUNDS:-5}"
t="${THREADS:-1}"
build="${BUILD_DIR:-$root/build-bench}"
export OMP_NUM_THREADS=$t
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp
mkdir -p "$out/rounds"
{ lscpu; echo; uptime; } > "$out/machine.txt"
[ -f "$out/peak.json" ] || "$build/bench/bench_peak" --benchmark_out="$out/peak.json" --benchmark_out_format=json >/dev/null
gb=(--benchmark_repetitions=1 --benchmark_out_format=json)
run_ours() {
  "$build/bench/bench_models" "${gb[@]}" --benchmark_filter="$ours_filter" \
    --benchmark_out="$out/rounds/models_t${t}_r$1.json"
}
run_torch() {
  LD_LIBRARY_PATH="$openblas" "$build/bench/peers/bench_torch" "${gb[@]}" \
    --benchmark_filter="$torch_filter" --benchmark_out="$out/rounds/torch_t${t}_r$1.json"
}
run_ort() {
  node "$root/bench/peers/ort/bench_ort.js" --threads="$t" --reps=1 --filter="$ort_filter" --benchmark_out="$out/rounds/ort_t${t}_r$1.json"
}
progs=(ours torch ort)
for ((r = 0; r < rounds; ++r)); do
  for ((i = 0; i < 3; ++i)); do
    p=${progs[$(((i + r) % 3))]}
    before=$(cut -d' ' -f1-3 /proc/loadavg)
    "run_$p" "$r" >"$out/rounds/${p}_t${t}_r$r.log" 2>&1
    echo "round $r $p: load before $before, after $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt"
  done
done
python3 - "$out" "$t" <<'PY'
import json, sys
from pathlib import Path
out, t = Path(sys.argv[1]), sys.argv[2]
for prog, name in (("models", "models"), ("torch", "torch"), ("ort", "ort")):
    files = sorted((out / "rounds").glob(f"{prog}_t{t}_r*.json"))
    merged = None
    for r, f in enumerate(files):
        d = json.loads(f.read_text())
        if merged is None:
            merged = {"context": d["context"], "benchmarks": []}
            merged["context"]["rounds"] = len(files)
        for b in d["benchmarks"]:
            if b.get("run_type") == "aggregate":
                continue
            b["repetition_index"], b["repetitions"] = r, len(files)
            merged["benchmarks"].append(b)
    (out / f"{name}_t{t}.json").write_text(json.dumps(merged, indent=1))
PY
python3 "$root/bench/compare.py" "$out" > "$out/compare_t$t.md"
cat "$out/compare_t$t.md"
